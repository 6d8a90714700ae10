//! The Docker Compose cluster (`docker-compose.yml`, `Dockerfile`, `deploy/`), checked by
//! reading the files: no container engine runs in the test suite.
//!
//! Every path the compose file names exists (or is a secret that git ignores and
//! `.env.example` documents), every `${VAR}` it interpolates is in `.env.example`, each otpd
//! service's environment is a configuration otpd accepts (with `.env.example`'s placeholders),
//! and every port agrees between the nodes' listeners, nginx, the seeds, the health check
//! and Prometheus. `promtool check config` runs on the compose Prometheus config when the
//! machine has promtool. The link between the nodes is mutual TLS with certificates that
//! `deploy/cluster-tls.sh` makes (run, and the result loaded by otpd, when the machine has
//! openssl), and `.env.example` asks for a cookie of at least 32 random bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::config::Config;
use serde_yaml_ng::Value;

use crate::support::program;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const COMPOSE: &str = "docker-compose.yml";
const ENV_EXAMPLE: &str = ".env.example";

fn repo(rel: &str) -> PathBuf {
    Path::new(REPO).join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A YAML file with its merge keys (`<<`) applied, as Compose reads it.
fn yaml(path: &Path) -> Value {
    let mut value: Value =
        serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    value.apply_merge().unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    assert!(
        !has_merge_key(&value),
        "{}: a `<<` is left after merging: an anchor that merges another anchor is not resolved by every \
         YAML reader; merge a list (`<<: [*a, *b]`) instead",
        path.display()
    );
    value
}

fn has_merge_key(value: &Value) -> bool {
    match value {
        Value::Mapping(m) => m.iter().any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        _ => false,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The strings of a Compose "string or list" field (`command`, `healthcheck.test`, …).
fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().filter_map(text).collect(),
        other => text(other).into_iter().collect(),
    }
}

/// `KEY=value` lines of `.env.example`.
fn env_example() -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for (n, line) in read(&repo(ENV_EXAMPLE)).lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) =
            line.split_once('=').unwrap_or_else(|| panic!("{ENV_EXAMPLE}:{}: not KEY=value: {line:?}", n + 1));
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        vars.insert(key.trim().to_owned(), value.to_owned());
    }
    vars
}

/// Compose's interpolation: `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?error}`,
/// `${NAME?error}`, `${NAME:+alt}`, `${NAME+alt}` and `$NAME`; `$$` is a literal `$`. Every
/// name read goes to `used`; a name `vars` lacks is an error.
fn interpolate(text: &str, vars: &BTreeMap<String, String>, used: &mut BTreeSet<String>) -> Result<String, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let (name, op, arg, tail) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let body = &inner[..end];
            let name_end = body.find(|c: char| !is_name(c)).unwrap_or(body.len());
            let (name, modifier) = body.split_at(name_end);
            let op_len = if modifier.starts_with(':') { 2 } else { 1 }.min(modifier.len());
            let (op, arg) = modifier.split_at(op_len);
            if !matches!(op, "" | ":-" | "-" | ":?" | "?" | ":+" | "+") {
                return Err(format!("unknown interpolation ${{{body}}} in {text:?}"));
            }
            (name, op, arg, &inner[end + 1..])
        } else {
            let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            (&after[..end], "", "", &after[end..])
        };
        if name.is_empty() {
            return Err(format!("a `$` that names no variable in {text:?} (write `$$` for a literal `$`)"));
        }
        used.insert(name.to_owned());
        let value = vars.get(name).ok_or_else(|| format!("${{{name}}} is not in {ENV_EXAMPLE}"))?;
        out.push_str(match op {
            ":-" if value.is_empty() => arg,
            ":+" if value.is_empty() => "",
            ":+" | "+" => arg,
            ":?" if value.is_empty() => return Err(format!("{name} is empty in {ENV_EXAMPLE}")),
            _ => value,
        });
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every string value in `value`, with where it is.
fn string_values<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(s) => out.push((at, s)),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                string_values(item, format!("{at}[{i}]"), out);
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                string_values(v, format!("{at}.{}", text(k).unwrap_or_default()), out);
            }
        }
        Value::Tagged(t) => string_values(&t.value, at, out),
        _ => {}
    }
}

/// A bind mount of a service: host path (absolute) and container path.
struct Mount {
    host: PathBuf,
    container: String,
}

/// The final stage of the Dockerfile, as instructions (`("USER", "otpd")`).
struct Dockerfile {
    path: PathBuf,
    stages: usize,
    /// Every stage's instructions, then the final stage's.
    every: Vec<(String, String)>,
    last: Vec<(String, String)>,
}

impl Dockerfile {
    fn read(path: &Path) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in read(path).lines() {
            let trimmed = line.trim();
            if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
                continue;
            }
            match trimmed.strip_suffix('\\') {
                Some(part) => {
                    current.push_str(part);
                    current.push(' ');
                }
                None => {
                    current.push_str(trimmed);
                    logical.push(std::mem::take(&mut current));
                }
            }
        }
        let (mut stages, mut every, mut last) = (0, Vec::new(), Vec::new());
        for line in logical {
            let (instr, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
            let instr = instr.to_ascii_uppercase();
            if instr == "FROM" {
                stages += 1;
                last.clear();
            }
            every.push((instr.clone(), args.trim().to_owned()));
            last.push((instr, args.trim().to_owned()));
        }
        Dockerfile { path: path.to_owned(), stages, every, last }
    }

    /// An instruction's arguments in the final stage.
    fn all(&self, instr: &str) -> impl Iterator<Item = &str> {
        self.last.iter().filter(move |(i, _)| i == instr).map(|(_, a)| a.as_str())
    }

    /// An instruction's arguments in any stage.
    fn anywhere(&self, instr: &str) -> impl Iterator<Item = &str> {
        self.every.iter().filter(move |(i, _)| i == instr).map(|(_, a)| a.as_str())
    }

    /// `ENV` of the final stage (`KEY=value` pairs, or the old `KEY value` form).
    fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for args in self.all("ENV") {
            if args.split_whitespace().next().is_some_and(|w| w.contains('=')) {
                for pair in args.split_whitespace() {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    out.push((k.to_owned(), v.trim_matches('"').to_owned()));
                }
            } else if let Some((k, v)) = args.split_once(char::is_whitespace) {
                out.push((k.to_owned(), v.trim().to_owned()));
            }
        }
        out
    }
}

/// The port and path of the first `http://host:port/path` in a health-check command.
fn probe_url(command: &str) -> Option<(u16, String)> {
    let at = command.find("http://")?;
    let url = command[at + "http://".len()..].split(|c: char| c.is_whitespace() || c == '"' || c == '\'').next()?;
    let (authority, path) = url.split_once('/').unwrap_or((url, ""));
    let port = authority.rsplit_once(':').map_or(Some(80), |(_, p)| p.parse().ok())?;
    Some((port, format!("/{path}")))
}

/// `host:port` split, the port parsed.
fn host_port(address: &str) -> (String, u16) {
    let (host, port) = address.rsplit_once(':').unwrap_or_else(|| panic!("{address:?} is not host:port"));
    (host.to_owned(), port.parse().unwrap_or_else(|_| panic!("{address:?}: bad port")))
}

/// The compose file and what it points at.
struct Stack {
    compose: Value,
    vars: BTreeMap<String, String>,
    dockerfile: Dockerfile,
}

impl Stack {
    fn load() -> Stack {
        let compose = yaml(&repo(COMPOSE));
        let vars = env_example();
        let dockerfile = Dockerfile::read(&repo("Dockerfile"));
        Stack { compose, vars, dockerfile }
    }

    fn services(&self) -> impl Iterator<Item = (&str, &Value)> {
        let services = self.compose.get("services").and_then(Value::as_mapping).expect("a services: mapping");
        services.iter().map(|(k, v)| (k.as_str().expect("service names are strings"), v))
    }

    fn service(&self, name: &str) -> &Value {
        self.compose["services"].get(name).unwrap_or_else(|| panic!("{COMPOSE}: no service {name}"))
    }

    /// Services that run the image built from the repository's Dockerfile.
    fn otpd_services(&self) -> Vec<&str> {
        let built: BTreeSet<&str> = self
            .services()
            .filter(|(_, s)| s.get("build").is_some())
            .filter_map(|(_, s)| s.get("image").and_then(Value::as_str))
            .collect();
        self.services()
            .filter(|(_, s)| {
                s.get("build").is_some() || s.get("image").and_then(Value::as_str).is_some_and(|i| built.contains(i))
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// `otpd` run as a node (`run`, the default command), not a one-shot like `migrate`.
    fn nodes(&self) -> Vec<&str> {
        let nodes: Vec<&str> = self
            .otpd_services()
            .into_iter()
            .filter(|n| self.service(n).get("command").map(strings).is_none_or(|c| c.is_empty() || c == ["run"]))
            .collect();
        assert_eq!(nodes.len(), 3, "{COMPOSE}: three otpd nodes, found {nodes:?}");
        nodes
    }

    fn interpolated(&self, text: &str, at: &str) -> String {
        interpolate(text, &self.vars, &mut BTreeSet::new()).unwrap_or_else(|e| panic!("{COMPOSE}: {at}: {e}"))
    }

    /// A service's environment as its container sees it: the image's `ENV`, then the compose
    /// file's `environment`, interpolated with `.env.example`.
    fn environment(&self, name: &str) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.dockerfile.env().into_iter().collect();
        match self.service(name).get("environment") {
            None => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let key = k.as_str().expect("variable names are strings");
                    let value = text(v).unwrap_or_else(|| {
                        panic!("{COMPOSE}: {name}: {key} has no value (it would come from the host's environment)")
                    });
                    env.insert(key.to_owned(), self.interpolated(&value, &format!("{name}: {key}")));
                }
            }
            Some(Value::Sequence(items)) => {
                for item in items.iter().filter_map(text) {
                    let (k, v) = item.split_once('=').unwrap_or_else(|| panic!("{COMPOSE}: {name}: {item:?}"));
                    env.insert(k.to_owned(), self.interpolated(v, &format!("{name}: {k}")));
                }
            }
            Some(other) => panic!("{COMPOSE}: {name}: environment must be a mapping or a list, got {other:?}"),
        }
        env
    }

    /// otpd's configuration of one service, as `Config::load` would read it in the container.
    fn config(&self, name: &str) -> Config {
        let env = self.environment(name);
        // Every problem names its variable ("cluster.cookie (from OTPD_CLUSTER__COOKIE): …").
        Config::from_sources("", env)
            .unwrap_or_else(|e| panic!("{COMPOSE}: otpd refuses the environment of {name} (and the image's ENV): {e}"))
    }

    /// A service's bind mounts (volumes whose source is a path).
    fn mounts(&self, name: &str) -> Vec<Mount> {
        let volumes = self.service(name).get("volumes").and_then(Value::as_sequence).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for volume in &volumes {
            let (source, target) = match volume {
                Value::String(short) => {
                    let mut parts = short.split(':');
                    let source = parts.next().unwrap_or_default().to_owned();
                    let target = parts.next().unwrap_or_else(|| panic!("{COMPOSE}: {name}: volume {short:?}"));
                    (source, target.to_owned())
                }
                long => {
                    if long.get("type").and_then(Value::as_str) != Some("bind") {
                        continue;
                    }
                    let field = |f: &str| {
                        long.get(f)
                            .and_then(Value::as_str)
                            .unwrap_or_else(|| panic!("{COMPOSE}: {name}: a bind mount without {f}"))
                            .to_owned()
                    };
                    (field("source"), field("target"))
                }
            };
            if source.starts_with('.') || source.starts_with('/') {
                let source = self.interpolated(&source, &format!("{name}: volumes"));
                out.push(Mount { host: Path::new(REPO).join(source), container: target });
            }
        }
        out
    }

    /// The host path behind a path inside a service's container, through its bind mounts.
    fn host_path(&self, name: &str, container: &str) -> PathBuf {
        self.mounts(name)
            .into_iter()
            .filter_map(|m| {
                let rest = container.strip_prefix(m.container.trim_end_matches('/'))?;
                let host = match rest.trim_start_matches('/') {
                    "" => m.host.clone(),
                    rest => m.host.join(rest),
                };
                (rest.is_empty() || rest.starts_with('/')).then_some((m.container.len(), host))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, host)| host)
            .unwrap_or_else(|| panic!("{COMPOSE}: {name}: no bind mount holds {container}"))
    }

    /// The files with extension `ext` a service's container sees in the folder `container`:
    /// those of a mounted host folder, and files mounted into it one by one.
    fn files_in(&self, name: &str, container: &str, ext: &str) -> Vec<PathBuf> {
        let dir = container.trim_end_matches('/');
        let mut files = Vec::new();
        for m in self.mounts(name) {
            let mounted = m.container.trim_end_matches('/');
            if m.host.is_dir() && (dir == mounted || dir.starts_with(&format!("{mounted}/"))) {
                let host = m.host.join(dir[mounted.len()..].trim_start_matches('/'));
                let entries = std::fs::read_dir(&host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
                files.extend(entries.map(|e| e.expect("a folder entry").path()));
            } else if mounted.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/')) && m.host.is_file() {
                files.push(m.host);
            }
        }
        files.retain(|f| f.extension().is_some_and(|x| x == ext));
        files.sort();
        files
    }

    /// The secrets a service mounts: (top-level secret name, path in the container).
    fn secret_mounts(&self, name: &str) -> Vec<(String, String)> {
        self.service(name)
            .get("secrets")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let source = text(s).or_else(|| s.get("source").and_then(text))?;
                let target = s.get("target").and_then(text).unwrap_or_else(|| source.clone());
                assert!(
                    self.compose["secrets"].get(source.as_str()).is_some(),
                    "{COMPOSE}: {name} mounts the secret {source}, which the top-level secrets: lacks"
                );
                let target = if target.starts_with('/') { target } else { format!("/run/secrets/{target}") };
                Some((source, target))
            })
            .collect()
    }

    /// The host file of a top-level secret.
    fn secret_file(&self, secret: &str) -> PathBuf {
        let file = self.compose["secrets"][secret]["file"]
            .as_str()
            .unwrap_or_else(|| panic!("{COMPOSE}: secrets.{secret} has no file"));
        repo(file)
    }

    fn published(&self, name: &str) -> Vec<String> {
        self.service(name).get("ports").map(strings).unwrap_or_default()
    }

    fn depends_on(&self, name: &str) -> BTreeMap<String, String> {
        match self.service(name).get("depends_on") {
            None => BTreeMap::new(),
            Some(Value::Sequence(list)) => {
                list.iter().filter_map(text).map(|d| (d, "service_started".to_owned())).collect()
            }
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| {
                    let condition = v.get("condition").and_then(Value::as_str).unwrap_or("service_started");
                    (text(k).expect("service names are strings"), condition.to_owned())
                })
                .collect(),
            Some(other) => panic!("{COMPOSE}: {name}: depends_on must be a list or a mapping, got {other:?}"),
        }
    }

    /// The command of a service's health check: its own, or its image's `HEALTHCHECK`.
    fn health_check(&self, name: &str) -> Option<String> {
        let service = self.service(name);
        if let Some(check) = service.get("healthcheck") {
            if check.get("disable").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            if let Some(test) = check.get("test") {
                let test = strings(test);
                return match test.first().map(String::as_str) {
                    Some("NONE") => None,
                    Some("CMD" | "CMD-SHELL") => Some(test[1..].join(" ")),
                    _ => Some(test.join(" ")),
                };
            }
        }
        if self.otpd_services().contains(&name) {
            return self.dockerfile.all("HEALTHCHECK").last().filter(|h| !h.starts_with("NONE")).map(str::to_owned);
        }
        None
    }
}

/// Whether `.gitignore` ignores `rel` (a path from the repository's top): a simplified reading
/// of its anchored patterns (`/dir/*`, `/dir/`, `/file`, `!/exception`), last match wins.
fn git_ignores(rel: &str) -> bool {
    let mut ignored = false;
    for line in read(&repo(".gitignore")).lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negate, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches('/');
        let matches = if let Some(dir) = pattern.strip_suffix("/*") {
            rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/') && r.len() > 1)
        } else {
            let dir = pattern.trim_end_matches('/');
            rel == dir || rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
        };
        if matches {
            ignored = !negate;
        }
    }
    ignored
}

fn relative(path: &Path) -> String {
    let clean: PathBuf =
        path.strip_prefix(REPO).unwrap_or(path).components().filter(|c| c.as_os_str() != ".").collect();
    clean.to_string_lossy().into_owned()
}

#[test]
fn every_path_the_compose_file_names_exists_or_is_an_ignored_secret() {
    let stack = Stack::load();
    let env_text = read(&repo(ENV_EXAMPLE));
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    for (name, service) in stack.services() {
        if let Some(build) = service.get("build") {
            let (context, dockerfile) = match build {
                Value::String(context) => (context.clone(), "Dockerfile".to_owned()),
                b => (
                    b.get("context").and_then(Value::as_str).unwrap_or(".").to_owned(),
                    b.get("dockerfile").and_then(Value::as_str).unwrap_or("Dockerfile").to_owned(),
                ),
            };
            let context = repo(&context);
            paths.push((format!("{name}: build.dockerfile"), context.join(&dockerfile)));
            paths.push((format!("{name}: build.context"), context));
        }
        for mount in stack.mounts(name) {
            paths.push((format!("{name}: volume {}", mount.container), mount.host));
        }
        let env_files = match service.get("env_file") {
            Some(Value::Sequence(items)) => {
                items.iter().filter_map(|i| text(i).or_else(|| i.get("path").and_then(text))).collect()
            }
            Some(other) => strings(other),
            None => Vec::new(),
        };
        for file in env_files {
            paths.push((format!("{name}: env_file"), repo(&file)));
        }
    }
    let mut secrets = Vec::new();
    for top in ["secrets", "configs"] {
        for (key, entry) in stack.compose.get(top).and_then(Value::as_mapping).into_iter().flatten() {
            if let Some(file) = entry.get("file").and_then(Value::as_str) {
                let at = format!("{top}.{}", text(key).unwrap_or_default());
                if top == "secrets" {
                    secrets.push((at, repo(file)));
                } else {
                    paths.push((at, repo(file)));
                }
            }
        }
    }

    let mut problems = Vec::new();
    for (at, path) in &paths {
        let rel = relative(path);
        if git_ignores(&rel) {
            if !env_text.contains(&rel) {
                problems.push(format!("{at}: {rel} is ignored by git, so {ENV_EXAMPLE} must say how to make it"));
            }
        } else if !path.exists() {
            problems.push(format!("{at}: {rel} does not exist in the repository"));
        }
    }
    for (at, path) in &secrets {
        let rel = relative(path);
        if !git_ignores(&rel) {
            problems.push(format!("{at}: the secret file {rel} must be ignored by git (.gitignore)"));
        }
        if !env_text.contains(&rel) {
            problems.push(format!("{at}: {ENV_EXAMPLE} must say how to make the secret file {rel}"));
        }
    }
    assert!(problems.is_empty(), "{COMPOSE}:\n  {}", problems.join("\n  "));
    assert!(git_ignores(".env"), ".gitignore must ignore .env (the stack's secrets)");
    let dockerignore = read(&repo(".dockerignore"));
    for entry in ["target/", ".git", ".env", "deploy/secrets/"] {
        assert!(dockerignore.lines().any(|l| l.trim() == entry), ".dockerignore must list {entry}");
    }
}

#[test]
fn every_interpolated_variable_is_in_env_example() {
    let stack = Stack::load();
    let mut values = Vec::new();
    string_values(&stack.compose, String::new(), &mut values);
    let mut used = BTreeSet::new();
    let problems: Vec<String> = values
        .iter()
        .filter_map(|(at, value)| interpolate(value, &stack.vars, &mut used).err().map(|e| format!("{at}: {e}")))
        .collect();
    assert!(problems.is_empty(), "{COMPOSE}:\n  {}", problems.join("\n  "));
    for required in ["HASH_KEY", "CLUSTER_COOKIE", "ADMIN_TOKEN"] {
        assert!(used.contains(required), "{COMPOSE} never interpolates ${{{required}}}: the secret is written in it?");
    }
    for (name, value) in &stack.vars {
        assert!(!value.is_empty(), "{ENV_EXAMPLE}: {name} needs a placeholder value of the right shape");
    }
}

#[test]
fn the_compose_nodes_are_a_valid_otpd_cluster() {
    let stack = Stack::load();
    let nodes = stack.nodes();
    let configs: Vec<Config> = nodes.iter().map(|n| stack.config(n)).collect();
    let names: BTreeSet<&str> = configs.iter().map(|c| c.cluster.node_name.as_str()).collect();
    assert_eq!(names.len(), 3, "{COMPOSE}: the nodes need three different cluster.node_name, got {names:?}");
    for (name, c) in nodes.iter().zip(&configs) {
        assert!(c.cluster.enabled, "{COMPOSE}: {name}: OTPD_CLUSTER__ENABLED must be true");
        assert_eq!(c.store.kind, "scylla", "{COMPOSE}: {name}");
        let first = &configs[0];
        for (what, same) in [
            ("cluster.cookie", c.cluster.cookie == first.cluster.cookie),
            ("secrets.hash_key", c.secrets.hash_key == first.secrets.hash_key),
            ("tokens.signing_key_file", c.tokens.signing_key_file == first.tokens.signing_key_file),
            ("tokens.algorithm", c.tokens.algorithm == first.tokens.algorithm),
            ("scylla.keyspace", c.scylla.keyspace == first.scylla.keyspace),
            ("scylla.contact_points", c.scylla.contact_points == first.scylla.contact_points),
            ("redis.url", c.redis.url == first.redis.url),
        ] {
            assert!(same, "{COMPOSE}: {name} and {} need the same {what}", nodes[0]);
        }
        // The signing key is a file every container has: a secret the service mounts.
        let key = c.tokens.signing_key_file.as_ref().expect("checked by the cluster rules").to_string_lossy();
        let mounted: Vec<String> = stack.secret_mounts(name).into_iter().map(|(_, target)| target).collect();
        assert!(
            mounted.iter().any(|m| *m == key),
            "{COMPOSE}: {name}: tokens.signing_key_file = {key}, but its secrets are mounted at {mounted:?}"
        );
    }

    // `otpd migrate` runs once, on the nodes' store, before they start.
    let migrate: Vec<&str> = stack
        .otpd_services()
        .into_iter()
        .filter(|n| stack.service(n).get("command").map(strings).is_some_and(|c| c == ["migrate"]))
        .collect();
    assert_eq!(migrate.len(), 1, "{COMPOSE}: one service runs `otpd migrate`, found {migrate:?}");
    let m = stack.config(migrate[0]);
    assert_eq!(m.store.kind, "scylla", "{COMPOSE}: {}", migrate[0]);
    assert_eq!(
        (&m.scylla.keyspace, &m.scylla.contact_points, m.scylla.replication_factor),
        (&configs[0].scylla.keyspace, &configs[0].scylla.contact_points, configs[0].scylla.replication_factor),
        "{COMPOSE}: {} migrates another keyspace than the nodes use",
        migrate[0]
    );
    for (name, c) in nodes.iter().zip(&configs) {
        assert!(
            !c.scylla.migrate_on_start,
            "{COMPOSE}: {name}: leave migrations to {} (MIGRATE_ON_START=false)",
            migrate[0]
        );
        assert_eq!(
            stack.depends_on(name).get(migrate[0]).map(String::as_str),
            Some("service_completed_successfully"),
            "{COMPOSE}: {name} must wait for {} to complete successfully",
            migrate[0]
        );
    }
}

#[test]
fn the_compose_services_start_in_order_and_wait_for_health() {
    let stack = Stack::load();
    let scylla: Vec<&str> = stack
        .services()
        .filter(|(_, s)| s.get("image").and_then(Value::as_str).is_some_and(|i| i.starts_with("scylladb/scylla")))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(scylla.len(), 3, "{COMPOSE}: a three-node ScyllaDB cluster, found {scylla:?}");
    for name in stack.nodes() {
        let deps = stack.depends_on(name);
        for needed in scylla.iter().copied().chain(["redis"]) {
            assert_eq!(
                deps.get(needed).map(String::as_str),
                Some("service_healthy"),
                "{COMPOSE}: {name} must wait for {needed} to be healthy"
            );
        }
    }
    // Whatever is waited for as healthy has a health check.
    for (name, _) in stack.services() {
        for (dep, condition) in stack.depends_on(name) {
            stack.service(&dep);
            if condition == "service_healthy" {
                assert!(
                    stack.health_check(&dep).is_some(),
                    "{COMPOSE}: {name} waits for {dep} to be healthy; it has no health check"
                );
            }
        }
    }
    for name in &scylla {
        let check = stack.health_check(name).unwrap_or_default();
        assert!(check.contains("cqlsh") || check.contains("nodetool"), "{COMPOSE}: {name}: health check {check:?}");
        let command = stack.service(name).get("command").map(strings).unwrap_or_default().join(" ");
        assert!(
            command.contains(&format!("--seeds={}", scylla[0])),
            "{COMPOSE}: {name} must seed from {}: {command}",
            scylla[0]
        );
    }
}

#[test]
fn every_port_agrees_between_the_nodes_nginx_the_seeds_the_health_check_and_prometheus() {
    let stack = Stack::load();
    let nodes = stack.nodes();
    let configs: BTreeMap<&str, Config> = nodes.iter().map(|n| (*n, stack.config(n))).collect();
    let metrics_port = |c: &Config| {
        assert!(!c.admin.ops_on_public_listener, "{COMPOSE}: the metrics must not be served where nginx proxies");
        assert_ne!(c.admin.listen.port(), c.http.listen.port());
        c.admin.listen.port()
    };
    for (name, c) in &configs {
        for (what, addr) in
            [("http.listen", c.http.listen), ("cluster.listen", c.cluster.listen), ("admin.listen", c.admin.listen)]
        {
            assert!(
                addr.ip().is_unspecified(),
                "{COMPOSE}: {name}: {what} = {addr}: the other containers cannot reach it"
            );
        }
        assert_eq!(&c.cluster.advertise_host, name, "{COMPOSE}: {name}: the other nodes reach it by its service name");
        // Seeds: exactly the other nodes, at their cluster ports.
        let want: BTreeSet<String> = configs
            .iter()
            .filter(|(other, _)| *other != name)
            .map(|(other, oc)| format!("{other}:{}", oc.cluster.listen.port()))
            .collect();
        let seeds: BTreeSet<String> = c.cluster.seeds.iter().cloned().collect();
        assert_eq!(
            seeds, want,
            "{COMPOSE}: {name}: cluster.seeds must name the other nodes at their cluster.listen ports"
        );
        // The health check asks this node's HTTP port for readiness.
        let check = stack.health_check(name).unwrap_or_else(|| panic!("{COMPOSE}: {name} has no health check"));
        let (port, path) =
            probe_url(&check).unwrap_or_else(|| panic!("{name}: no http:// URL in its health check {check:?}"));
        assert_eq!(
            (port, path.as_str()),
            (c.http.listen.port(), "/health/ready"),
            "{name}: the health check ({check}) must ask /health/ready on http.listen's port {}",
            c.http.listen.port()
        );
    }

    // nginx: round robin over every node's HTTP port, X-Forwarded-For passed and believed.
    let nginx_conf_path = stack.host_path("nginx", "/etc/nginx/nginx.conf");
    let conf = read(&nginx_conf_path);
    let conf: String = conf.lines().map(|l| l.split('#').next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    let upstream_at = conf.find("upstream ").expect("nginx.conf: an upstream block");
    let (upstream_name, block) =
        conf[upstream_at + "upstream ".len()..].split_once('{').expect("nginx.conf: upstream {");
    let block = block.split('}').next().unwrap_or_default();
    let servers: BTreeSet<String> = block
        .split([';', '{', '}'])
        .filter_map(|d| d.trim().strip_prefix("server "))
        .filter_map(|d| d.split_whitespace().next().map(str::to_owned))
        .collect();
    let want: BTreeSet<String> = configs.iter().map(|(n, c)| format!("{n}:{}", c.http.listen.port())).collect();
    assert_eq!(
        servers,
        want,
        "{}: the upstream must list every node at its http.listen port",
        nginx_conf_path.display()
    );
    assert!(
        conf.contains(&format!("proxy_pass http://{};", upstream_name.trim())),
        "nginx.conf: proxy_pass to the upstream {upstream_name}"
    );
    assert!(
        conf.contains("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for"),
        "nginx.conf: pass X-Forwarded-For"
    );
    let nginx_ip: IpAddr = stack.compose["services"]["nginx"]["networks"]
        .as_mapping()
        .and_then(|m| m.values().find_map(|n| n.get("ipv4_address").and_then(Value::as_str)))
        .and_then(|ip| ip.parse().ok())
        .expect("nginx has a fixed ipv4_address, which the nodes trust as a proxy");
    for (name, c) in &configs {
        assert!(
            c.http.trusted_proxies.iter().any(|r| r.contains(nginx_ip)),
            "{COMPOSE}: {name}: http.trusted_proxies must hold nginx's address {nginx_ip}, or every client is nginx"
        );
    }
    let listen: u16 = conf
        .split([';', '{', '}'])
        .find_map(|d| d.trim().strip_prefix("listen "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .expect("nginx.conf: listen <port>");

    // Only the entry points are published on the host.
    let mut published = BTreeSet::new();
    for (name, _) in stack.services() {
        for port in stack.published(name) {
            let container: u16 = port
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next()?.parse().ok())
                .unwrap_or_else(|| panic!("{COMPOSE}: {name}: ports: {port:?}"));
            published.insert((name.to_owned(), container));
        }
    }
    let want: BTreeSet<(String, u16)> =
        [("grafana".to_owned(), 3000), ("nginx".to_owned(), listen), ("prometheus".to_owned(), 9090)].into();
    assert_eq!(published, want, "{COMPOSE}: only nginx (the API), Prometheus and Grafana are published");

    // Prometheus scrapes every node where it serves /metrics.
    let prometheus = prometheus_config(&stack);
    let jobs = prometheus["scrape_configs"].as_sequence().expect("scrape_configs");
    let job = jobs
        .iter()
        .find(|j| j["job_name"] == "otpd")
        .expect("a scrape job named otpd (the alerts select job=\"otpd\")");
    assert_eq!(job.get("metrics_path").and_then(Value::as_str).unwrap_or("/metrics"), "/metrics");
    let targets: BTreeSet<String> =
        job["static_configs"].as_sequence().into_iter().flatten().flat_map(|s| strings(&s["targets"])).collect();
    let want: BTreeSet<String> = configs.iter().map(|(n, c)| format!("{n}:{}", metrics_port(c))).collect();
    assert_eq!(targets, want, "the otpd scrape job must list every node at the port of its /metrics");

    // The store and Redis the nodes name are services of the file.
    for (name, c) in &configs {
        for point in &c.scylla.contact_points {
            let (host, port) = host_port(point);
            let image = stack.service(&host).get("image").and_then(Value::as_str).unwrap_or_default();
            assert!(image.starts_with("scylladb/scylla") && port == 9042, "{COMPOSE}: {name}: contact point {point}");
        }
        let url = &c.redis.url.0;
        let host = url.trim_start_matches("redis://").split(['/', ':']).next().unwrap_or_default();
        stack.service(host);
    }
}

/// The Prometheus configuration the prometheus service runs with, and where it is.
fn prometheus_config_path(stack: &Stack) -> PathBuf {
    let command = stack.service("prometheus").get("command").map(strings).unwrap_or_default();
    let container =
        command.iter().find_map(|a| a.strip_prefix("--config.file=")).unwrap_or("/etc/prometheus/prometheus.yml");
    stack.host_path("prometheus", container)
}

fn prometheus_config(stack: &Stack) -> Value {
    yaml(&prometheus_config_path(stack))
}

#[test]
fn the_compose_prometheus_loads_the_shipped_rules() {
    let stack = Stack::load();
    let path = prometheus_config_path(&stack);
    let config = yaml(&path);
    let dir = path.parent().expect("a folder");
    let rules = config.get("rule_files").map(strings).unwrap_or_default();
    assert!(rules.iter().any(|r| r == "alerts.yml"), "{}: rule_files must load the shipped alerts.yml", path.display());
    for rule in &rules {
        assert!(dir.join(rule).is_file(), "{}: rule file {rule} does not exist", path.display());
    }
    let Some(promtool) = program("promtool") else {
        println!("SKIPPED: promtool not installed, so `promtool check config` did not run on {}", relative(&path));
        return;
    };
    let out =
        Command::new(promtool).arg("check").arg("config").arg(&path).current_dir(dir).output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check config {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn grafana_is_provisioned_with_prometheus_and_the_dashboard() {
    let stack = Stack::load();
    let provisioning = stack.host_path("grafana", "/etc/grafana/provisioning");
    let yamls = |sub: &str| -> Vec<(PathBuf, Value)> {
        let dir = provisioning.join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no provisioning file", dir.display());
        files.into_iter().map(|p| (p.clone(), yaml(&p))).collect()
    };

    let sources: Vec<Value> = yamls("datasources").into_iter().flat_map(|(_, v)| seq(&v["datasources"])).collect();
    let prometheus = sources
        .iter()
        .find(|d| d["type"] == "prometheus")
        .expect("a Prometheus data source in deploy/grafana/provisioning/datasources");
    assert_eq!(prometheus["url"], "http://prometheus:9090", "the data source is the prometheus service");
    assert_eq!(prometheus["isDefault"], true, "the dashboard's datasource variable picks the default one");

    let mut dashboards = Vec::new();
    for (file, value) in yamls("dashboards") {
        for provider in seq(&value["providers"]) {
            let container = provider["options"]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a provider without options.path", file.display()));
            let jsons = stack.files_in("grafana", container, "json");
            assert!(!jsons.is_empty(), "{}: {container} holds no dashboard", file.display());
            dashboards.extend(jsons);
        }
    }
    for dashboard in &dashboards {
        let json: serde_json::Value = serde_json::from_str(&read(dashboard))
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", dashboard.display()));
        assert!(json["panels"].as_array().is_some_and(|p| !p.is_empty()), "{}: no panels", dashboard.display());
    }
    assert!(
        dashboards.iter().any(|d| d.ends_with("deploy/grafana/otpd-dashboard.json")),
        "Grafana must be provisioned with deploy/grafana/otpd-dashboard.json, got {dashboards:?}"
    );
    if let Some(home) = stack.environment("grafana").get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH") {
        assert!(
            stack.host_path("grafana", home).is_file(),
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH={home}: no such file"
        );
    }
}

fn seq(value: &Value) -> Vec<Value> {
    value.as_sequence().cloned().unwrap_or_default()
}

#[test]
fn the_dockerfile_runs_unprivileged_with_a_health_check_and_exposes_the_ports() {
    let stack = Stack::load();
    let file = &stack.dockerfile;
    let at = file.path.display();
    assert!(file.stages >= 2, "{at}: a multi-stage build (a builder, then a slim runtime)");
    let user = file.all("USER").last().unwrap_or_else(|| panic!("{at}: the final stage needs a USER"));
    let name = user.split(':').next().unwrap_or_default();
    assert!(!matches!(name, "root" | "0" | ""), "{at}: USER {user} is root");
    let created = file.all("RUN").any(|r| r.contains("useradd") && r.contains("--uid") && r.contains(name));
    assert!(created, "{at}: the final stage creates the user {name} with a fixed uid (useradd --uid)");
    let check = file.all("HEALTHCHECK").last().unwrap_or_else(|| panic!("{at}: the final stage needs a HEALTHCHECK"));
    assert!(check.contains("CMD") && check.contains("/health/ready"), "{at}: HEALTHCHECK {check}");
    let exposed: BTreeSet<u16> = file
        .all("EXPOSE")
        .flat_map(str::split_whitespace)
        .map(|p| p.trim_end_matches("/tcp").parse().unwrap_or_else(|_| panic!("{at}: EXPOSE {p}")))
        .collect();
    for node in stack.nodes() {
        let c = stack.config(node);
        for (what, port) in [("http.listen", c.http.listen.port()), ("cluster.listen", c.cluster.listen.port())] {
            assert!(exposed.contains(&port), "{at}: EXPOSE {port} ({what} of {node}); exposed: {exposed:?}");
        }
    }
    assert!(
        file.anywhere("RUN").any(|r| r.contains("cargo build") && r.contains("--release") && r.contains("--locked")),
        "{at}: the builder runs cargo build --release --locked"
    );
}

#[test]
fn the_interpolation_reader_follows_compose() {
    let vars: BTreeMap<String, String> = [("A".to_owned(), "1".to_owned()), ("E".to_owned(), String::new())].into();
    let mut used = BTreeSet::new();
    let mut sub = |t: &str| interpolate(t, &vars, &mut used);
    assert_eq!(sub("x${A}y$A-$$A").unwrap(), "x1y1-$A");
    assert_eq!(sub("${A:?gone} ${E:-d} ${E-d} ${A:+alt} ${E:+alt}").unwrap(), "1 d  alt ");
    assert!(sub("${B}").unwrap_err().contains("${B} is not in .env.example"));
    assert!(sub("${E:?must be set}").is_err());
    assert!(sub("${A").is_err());
    assert_eq!(used, ["A", "B", "E"].map(str::to_owned).into());
    assert_eq!(
        probe_url("curl -fsS http://127.0.0.1:8080/health/ready || exit 1"),
        Some((8080, "/health/ready".into()))
    );
}

/// The image's configuration (its `ENV`, with the data directory and both ports moved to a
/// temporary directory and loopback), started in-process: what the internet sees of it.
#[tokio::test]
async fn the_images_public_listener_tells_no_account_from_another() {
    use crate::support::{Reply, phone, start_node_with};
    use serde_json::json;

    let image = Config::from_sources("", Dockerfile::read(&repo("Dockerfile")).env())
        .unwrap_or_else(|e| panic!("otpd refuses the image's ENV: {e}"));
    assert_ne!(image.http.listen.port(), image.admin.listen.port(), "the image has an ops listener of its own");
    assert!(!image.admin.ops_on_public_listener);
    let t = start_node_with(|c| {
        let (data_dir, http, admin) = (c.node.data_dir.clone(), c.http.listen, c.admin.listen);
        *c = image.clone();
        (c.node.data_dir, c.http.listen, c.admin.listen) = (data_dir, http, admin);
    })
    .await;
    let (known, unknown) = (phone(9801), phone(9802));
    t.signed_up(&known).await;
    t.advance(std::time::Duration::from_secs(3600));

    // Everything a response carries except what differs by request anyway.
    let seen = |r: &Reply| {
        let mut headers: Vec<String> = r
            .headers
            .iter()
            .filter(|(k, _)| !["x-request-id", "date"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        headers.sort();
        let mut body = r.body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("trace_id");
        }
        (r.status, headers, body)
    };
    type Body = fn(&str) -> serde_json::Value;
    let calls: Vec<(&str, Body)> = vec![
        ("/v1/login", |p| json!({ "phone": p })),
        ("/v1/login", |p| json!({ "phone": p })),
        ("/v1/otp/resend", |p| json!({ "phone": p, "purpose": "login" })),
        ("/v1/login/verify", |p| json!({ "phone": p, "code": "000000" })),
        ("/v1/register", |p| json!({ "phone": p, "first_name": "Ada", "last_name": "L" })),
    ];
    let before = t.get("/health/ready", None).await;
    for (path, body) in calls {
        let a = t.post(path, body(&known)).await;
        let b = t.post(path, body(&unknown)).await;
        assert_eq!(seen(&a), seen(&b), "POST {path}: the answers differ");
    }
    for path in ["/metrics", "/v1/admin/stats", "/v1/admin/audit?trace_id=x"] {
        let r = t.get(path, Some(&t.node.admin_token)).await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path} on the public listener");
    }
    let after = t.get("/health/ready", None).await;
    assert_eq!((after.status, &after.body), (200, &json!({ "status": "ready" })));
    assert_eq!(seen(&before), seen(&after), "readiness says nothing of the traffic");
    // The ops listener still has everything.
    assert_eq!(t.ops_get("/metrics", None).await.status, 200);
    assert!(t.ops_get("/health/ready", None).await.body["checks"].is_object());
}

#[test]
fn the_compose_nodes_talk_over_mutual_tls_with_a_long_cookie() {
    let stack = Stack::load();
    let nodes = stack.nodes();
    // Each node: all three TLS files, each a secret the service mounts; its own certificate
    // and key, one CA for all; and no plaintext opt-out.
    let mut cas = BTreeSet::new();
    let mut own = BTreeMap::new();
    for name in &nodes {
        let c = stack.config(name);
        assert!(c.cluster.tls_configured(), "{COMPOSE}: {name}: the cluster link needs cluster.tls_* (mutual TLS)");
        assert!(
            !c.cluster.insecure_plaintext_on_private_network,
            "{COMPOSE}: {name}: insecure_plaintext_on_private_network must stay off"
        );
        let mounts = stack.secret_mounts(name);
        let source_of = |what: &str, path: &Option<PathBuf>| {
            let path = path.as_ref().expect("configured").to_string_lossy().into_owned();
            let (source, _) = mounts.iter().find(|(_, target)| *target == path).unwrap_or_else(|| {
                panic!("{COMPOSE}: {name}: cluster.{what} = {path}, but its secrets are mounted at {mounts:?}")
            });
            stack.secret_file(source)
        };
        let cert = source_of("tls_cert_file", &c.cluster.tls_cert_file);
        let key = source_of("tls_key_file", &c.cluster.tls_key_file);
        cas.insert(source_of("tls_ca_file", &c.cluster.tls_ca_file));
        own.insert(c.cluster.advertise_host.clone(), (cert, key));
    }
    assert_eq!(cas.len(), 1, "{COMPOSE}: one cluster CA for every node, got {cas:?}");
    let files: BTreeSet<&PathBuf> = own.values().flat_map(|(c, k)| [c, k]).collect();
    assert_eq!(files.len(), 2 * nodes.len(), "{COMPOSE}: each node has a certificate and key of its own: {own:?}");

    // .env.example asks for a cookie of at least 32 random bytes, and says how to make one.
    let text = read(&repo(ENV_EXAMPLE));
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with("CLUSTER_COOKIE=")).expect(".env.example: CLUSTER_COOKIE");
    let comment: String =
        lines[..at].iter().rev().take_while(|l| l.starts_with('#')).copied().collect::<Vec<_>>().join(" ");
    assert!(
        comment.contains("at least 32 random bytes") && comment.contains("openssl rand -hex 32"),
        "{ENV_EXAMPLE}: the comment above CLUSTER_COOKIE must ask for at least 32 random bytes (openssl rand -hex \
         32): {comment:?}"
    );

    // The script makes exactly the files the compose file mounts, and otpd accepts them: each
    // pair of nodes completes a mutual TLS handshake under the name the other dials it by.
    if program("openssl").is_none() {
        println!("SKIPPED: openssl not installed, so deploy/cluster-tls.sh did not run");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let script = repo("deploy/cluster-tls.sh");
    let run = Command::new("sh").arg(&script).arg("-o").arg(out.path()).output().expect("sh runs");
    assert!(run.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&run.stderr));
    let made = |compose_file: &PathBuf| {
        let base = compose_file.file_name().expect("a file name");
        let made = out.path().join(base);
        assert!(
            made.is_file(),
            "deploy/cluster-tls.sh did not make {} (mounted as {})",
            made.display(),
            relative(compose_file)
        );
        assert_eq!(
            compose_file.parent(),
            Some(repo("deploy/secrets/cluster").as_path()),
            "{COMPOSE}: the cluster secrets are read from the script's folder"
        );
        made
    };
    let ca = made(cas.first().expect("one CA"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let tls_of = |host: &str| {
        let (cert, key) = &own[host];
        let c = stack.config(nodes[0]);
        let mut cluster = c.cluster.clone();
        (cluster.tls_cert_file, cluster.tls_key_file, cluster.tls_ca_file) =
            (Some(made(cert)), Some(made(key)), Some(ca.clone()));
        let settings = otpd::cluster::settings(&cluster, &[7; 32])
            .unwrap_or_else(|e| panic!("otpd refuses the certificate of {host}: {e}"))
            .expect("a cluster");
        settings.tls.expect("TLS")
    };
    for (client, server) in [("otpd-1", "otpd-2"), ("otpd-2", "otpd-3"), ("otpd-3", "otpd-1")] {
        let (client_tls, server_tls) = (tls_of(client), tls_of(server));
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accept = async {
                let (tcp, _) = listener.accept().await.unwrap();
                server_tls.acceptor.accept(tcp).await
            };
            let name = rustls::pki_types::ServerName::try_from(server.to_owned()).unwrap();
            let connect = async {
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                client_tls.connector.connect(name, tcp).await
            };
            let (accepted, connected) = tokio::join!(accept, connect);
            let accepted = accepted.unwrap_or_else(|e| panic!("{server} refused {client}: {e}"));
            connected.unwrap_or_else(|e| panic!("{client} refused {server}: {e}"));
            assert!(
                accepted.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()),
                "{client} presented a certificate"
            );
        });
    }
}
