//! Shared test helpers: a node on 127.0.0.1:0 with a manual clock, an HTTP client, and the
//! outbox as a phone would see it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use otpd::config::Config;
use otpd::server::{self, Node};
use otpd_actors::rules::clock::{ManualClock, Timestamp};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A node started for one test, with its data directory and clock.
pub struct TestNode {
    pub node: Node,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub base: String,
    pub dir: TempDir,
}

/// The configuration every in-process test node starts from: port 0 for both listeners and a
/// temporary data directory; everything else is the shipped default.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::default();
    config.node.data_dir = dir.to_owned();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    config
}

pub async fn start_node() -> TestNode {
    start_node_with(|_| {}).await
}

pub async fn start_node_with(adjust: impl FnOnce(&mut Config)) -> TestNode {
    start_node_on(Arc::new(ManualClock::new(Timestamp::system_now())), adjust).await
}

/// A node on a given clock, so that several nodes of one test share one time.
pub async fn start_node_on(clock: Arc<ManualClock>, adjust: impl FnOnce(&mut Config)) -> TestNode {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = test_config(dir.path());
    adjust(&mut config);
    let node = server::start(config, clock.clone()).await.expect("the node starts");
    let base = node.base_url();
    TestNode { node, clock, client: reqwest::Client::new(), base, dir }
}

/// `GET url`, with a bearer token when given.
pub async fn get_with(client: &reqwest::Client, url: String, bearer: Option<&str>) -> Reply {
    let mut req = client.get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    into_reply(req.send().await.expect("request sent")).await
}

/// A response, reduced to what tests look at.
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub raw: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn into_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let raw = resp.text().await.expect("a body");
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Reply { status, headers, body, raw }
}

impl TestNode {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        into_reply(self.client.post(self.url(path)).json(&body).send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Reply {
        get_with(&self.client, self.url(path), bearer).await
    }

    /// `path` on the ops listener (`admin.listen`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.node.admin_addr)
    }

    /// `GET path` on the ops listener: metrics, readiness details, the admin API.
    pub async fn ops_get(&self, path: &str, bearer: Option<&str>) -> Reply {
        get_with(&self.client, self.ops_url(path), bearer).await
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The node's time.
    pub fn now(&self) -> Timestamp {
        otpd_actors::rules::clock::Clock::now(&*self.clock)
    }

    pub fn outbox_path(&self) -> PathBuf {
        self.node.outbox_path.clone()
    }

    /// Every message the outbox holds for `to`, oldest first.
    pub fn messages_for(&self, to: &str) -> Vec<Value> {
        outbox_messages(&self.outbox_path(), to)
    }

    /// The newest code sent to `to` (waits for the outbox writer, at most 5 s).
    pub async fn code_for(&self, to: &str) -> String {
        self.wait_for_messages(to, 1).await;
        self.messages_for(to).last().expect("a message")["code"].as_str().expect("a code").to_owned()
    }

    /// Waits until the outbox holds at least `n` messages for `to`.
    pub async fn wait_for_messages(&self, to: &str, n: usize) -> Vec<Value> {
        wait_for_outbox(&self.outbox_path(), to, n).await
    }

    /// Registers and verifies `phone`; returns the token response.
    pub async fn signed_up(&self, phone: &str) -> Value {
        let r = self.post("/v1/register", json!({ "phone": phone, "first_name": "Test", "last_name": "User" })).await;
        assert_eq!(r.status, 202, "{}", r.raw);
        let code = self.code_for(phone).await;
        let r = self.post("/v1/register/verify", json!({ "phone": phone, "code": code })).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        r.body
    }
}

pub fn outbox_messages(path: &Path, to: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|m| m["to"] == to).collect()
}

pub async fn wait_for_outbox(path: &Path, to: &str, n: usize) -> Vec<Value> {
    for _ in 0..500 {
        let messages = outbox_messages(path, to);
        if messages.len() >= n {
            return messages;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the outbox never held {n} message(s) for {to}");
}

/// A code that differs from `code` in every position.
pub fn wrong_code(code: &str) -> String {
    code.chars().map(|c| if c == '9' { '0' } else { char::from(c as u8 + 1) }).collect()
}

/// Distinct valid US numbers (the 202 area code, exchange 555, lines 0100–0199 are not
/// assigned by libphonenumber, so use 2xx exchanges that are).
pub fn phone(n: u32) -> String {
    format!("+1202{:03}{:04}", 200 + (n / 10_000) % 700, n % 10_000)
}

/// Runs the test `name` (as libtest names it, `module::function`) alone in a child process
/// of this test binary and returns `false` once it passed there; in that child it returns
/// `true`, and the test's body runs. Tests that read the process-wide metrics recorder use
/// it, so the numbers they read are their own node's and no other test's.
pub fn isolated(name: &str) -> bool {
    isolated_stderr(name).is_none()
}

/// [`isolated`], returning the child's standard error (its log lines) to the parent:
/// `None` in the child, which runs the test's body; `Some(stderr)` in the parent once the
/// child passed.
pub fn isolated_stderr(name: &str) -> Option<String> {
    const VAR: &str = "OTPD_TEST_ISOLATED";
    if std::env::var(VAR).is_ok_and(|v| v == name) {
        return None;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, name)
        .env_remove("RUST_LOG")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{name} failed in its own process:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run in its own process:\n{stdout}");
    // What the child skipped (a tool the machine lacks) is said here too.
    // (libtest may print it after "test <name> ... " on the same line.)
    for line in stdout.lines().filter_map(|l| l.find("SKIPPED").map(|at| &l[at..])) {
        println!("{line}");
    }
    Some(stderr)
}

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A parsed `GET /metrics` answer.
pub struct Exposition {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Exposition {
    pub fn parse(text: String) -> Exposition {
        let samples = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(parse_sample).collect();
        Exposition { text, samples }
    }

    /// The samples named `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    /// The sum of the matching samples (0 when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample is named `name` (histograms: `name_bucket`, `name_count`, …).
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (head, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|_| panic!("a number in {line}")),
    };
    let Some((name, rest)) = head.split_once('{') else {
        return Sample { name: head.to_owned(), labels: Vec::new(), value };
    };
    let mut labels = Vec::new();
    let mut chars = rest.strip_suffix('}').unwrap_or_else(|| panic!("closed labels: {line}")).chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "a quoted label value in {line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Sample { name: name.to_owned(), labels, value }
}

/// `GET url` (a node's `/metrics`), parsed.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Exposition {
    let resp = client.get(url).send().await.expect("the metrics endpoint answers");
    assert_eq!(resp.status(), 200, "GET {url}");
    Exposition::parse(resp.text().await.expect("a body"))
}

/// Whether the machine has every program of `tools` on the `PATH`; if not, prints that `test`
/// skipped and which program it lacks.
pub fn has_tools(test: &str, tools: &[&str]) -> bool {
    match tools.iter().find(|tool| program(tool).is_none()) {
        Some(tool) => {
            println!("SKIPPED {test}: {tool} is not installed");
            false
        }
        None => true,
    }
}

/// A program on the `PATH`, if the machine has it.
pub fn program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|dir| Path::new(dir).join(name)).find(|p| p.is_file())
}

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA named `ca` in `dir` (`<ca>.pem`, `<ca>.key`; ECDSA P-256, two days), made once;
/// returns its certificate's path. Needs `openssl` (check with [`program`]).
pub fn test_ca(dir: &Path, ca: &str) -> PathBuf {
    let pem = dir.join(format!("{ca}.pem"));
    if !pem.exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ],
        );
    }
    pem
}

/// A certificate for 127.0.0.1, usable by a server and a client, signed by the CA `ca` of
/// `dir` (made first if needed): `(<name>.pem, <name>.key)`. openssl writes the key 0600.
pub fn test_cert(dir: &Path, ca: &str, name: &str) -> (PathBuf, PathBuf) {
    test_cert_days(dir, ca, name, 2)
}

/// [`test_cert`] valid for `days` from now; `-1` makes one that expired yesterday.
pub fn test_cert_days(dir: &Path, ca: &str, name: &str, days: i32) -> (PathBuf, PathBuf) {
    test_ca(dir, ca);
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let (csr, ext) = (format!("{name}.csr"), format!("{name}.ext"));
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &csr,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            &days.to_string(),
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// A loopback port for a server another process will open later, below the kernel's
/// ephemeral range (32768 and up on Linux): a port taken with `bind(0)` and released is handed
/// out again to the next `bind(0)` of any test, which then answers in the place of the server
/// the port was meant for. Ports here are never handed out that way; each process walks them
/// from its own offset, and each is checked free when taken.
pub fn reserved_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(2_654_435_761) % COUNT;
    loop {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % COUNT) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
