//! What forwarding a challenge command to its owner costs, seen by a client: sequential
//! requests to one node of a running cluster, for identifiers that node owns itself (local)
//! and for identifiers another node owns (forwarded), interleaved one by one so both classes
//! see the same machine conditions. Not a test: nothing passes or fails; read the table
//! (`scripts/cluster-bench.sh` runs it).
//!
//! ```sh
//! cargo run --release --example cluster_latency -- --node http://127.0.0.1:8080 \
//!     --hash-key <the nodes' OTPD_SECRETS__HASH_KEY> --admin-token <OTPD_SECRETS__ADMIN_TOKEN> \
//!     --requests 3000 --members 3 --out cluster-latency.json
//! ```
//!
//! Ownership comes from the definition, not from the node: members from the node's
//! `/health/ready` (`cluster.members`), each phone's partition from the shared hash key
//! (`Keys::identifier_hash`, `partition_of`) and its owner from `Ring`. The run checks the
//! result against the node itself afterwards: its live challenges grew by the local sends
//! and its `otpd_cluster_forwarded_total{outcome="ok"}` by the forwarded commands.
//!
//! Two requests, each for phones without an account (so nothing is delivered and nothing is
//! created but the challenge; the answers are the enumeration-safe ones):
//!
//! * send: `POST /v1/login` to a distinct phone each time (limiter, account lookup in the
//!   store, issue on the owner, audit event);
//! * verify: `POST /v1/login/verify` with a wrong code for each phone sent to above (limiter,
//!   check on the owner, audit event), answered 400 `invalid_code`.
//!
//! The node's limits must be out of reach (per-identifier, IP and prefix rules, resend
//! cooldown), as `scripts/cluster-bench.sh` sets them.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use otpd_actors::actors::cluster::ring::{Ring, partition_of};
use otpd_actors::rules::keys::Keys;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
#[command(about = "Latency of local vs forwarded challenge commands through one cluster node")]
struct Args {
    /// Base URL of the node all requests go to (node A).
    #[arg(long)]
    node: String,
    /// The cluster's shared `secrets.hash_key` (64 hex digits).
    #[arg(long)]
    hash_key: String,
    /// The node's admin token (reads `/v1/admin/stats` for the cross-check).
    #[arg(long)]
    admin_token: String,
    /// Measured requests per class (local, forwarded) and per request kind (send, verify).
    #[arg(long, default_value_t = 3000)]
    requests: usize,
    /// Unmeasured requests per class and kind first (connections, caches, allocators).
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Wait (at most 60 s) until the node sees this many members.
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// First index into the phone space (distinct runs against one store: distinct offsets).
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// The code sent with every verify (wrong for all but one in a million phones).
    #[arg(long, default_value = "000000")]
    wrong_code: String,
    /// Also write the figures as JSON here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// Central-office codes: 200–999 without N11 and the special 555/950/958/959/976.
static EXCHANGES: LazyLock<Vec<u64>> =
    LazyLock::new(|| (200..1000u64).filter(|e| e % 100 != 11 && ![555, 950, 958, 959, 976].contains(e)).collect());

/// The `i`-th phone +1 202 EEE LLLL (distinct for every `i` below 7 950 000).
fn phone(i: u64) -> String {
    let ex = EXCHANGES[((i / 10_000) % EXCHANGES.len() as u64) as usize];
    format!("+1202{ex:03}{:04}", i % 10_000)
}

fn parse_key(hex: &str) -> anyhow::Result<[u8; 32]> {
    let hex = hex.trim();
    anyhow::ensure!(hex.len() == 64 && hex.is_ascii(), "--hash-key: 64 hex digits");
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    Local,
    Forwarded,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Local => "local",
            Class::Forwarded => "forwarded",
        }
    }
}

/// Latencies and answers of one (kind, class).
struct Series {
    hist: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
}

impl Series {
    fn new() -> Series {
        Series { hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"), statuses: BTreeMap::new() }
    }

    fn us(&self, q: f64) -> u64 {
        self.hist.value_at_quantile(q)
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.hist.len(),
            "p50_us": self.us(0.50),
            "p90_us": self.us(0.90),
            "p99_us": self.us(0.99),
            "max_us": self.hist.max(),
            "mean_us": (self.hist.mean() * 10.0).round() / 10.0,
            "statuses": self.statuses.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }
}

struct Node {
    base: String,
    http: reqwest::Client,
    admin: String,
}

impl Node {
    async fn get(&self, path: &str, bearer: bool) -> anyhow::Result<String> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if bearer {
            req = req.bearer_auth(&self.admin);
        }
        Ok(req.send().await?.text().await?)
    }

    /// One POST, timed from before sending to the last byte of the answer.
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Duration)> {
        let started = Instant::now();
        let resp = self.http.post(format!("{}{path}", self.base)).json(body).send().await?;
        let status = resp.status().as_u16();
        resp.bytes().await?;
        Ok((status, started.elapsed()))
    }

    /// (this node's name, the members it sees) from `/health/ready`.
    async fn cluster(&self) -> anyhow::Result<(String, Vec<String>)> {
        let ready: Value = serde_json::from_str(&self.get("/health/ready", false).await?)?;
        let c = &ready["cluster"];
        let name = c["node"].as_str().ok_or_else(|| anyhow::anyhow!("no cluster in /health/ready: {ready}"))?;
        let members = c["members"].as_array().map(|m| m.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect());
        Ok((name.to_owned(), members.unwrap_or_default()))
    }

    /// The value of a sample (`name{labels}` as exposed) in `/metrics`, 0 when absent.
    async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = self.get("/metrics", false).await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0))
    }

    async fn live_challenges(&self) -> anyhow::Result<u64> {
        let stats: Value = serde_json::from_str(&self.get("/v1/admin/stats", true).await?)?;
        stats["challenges"]["live"].as_u64().ok_or_else(|| anyhow::anyhow!("no challenges.live in {stats}"))
    }

    /// Forwarded-ok count, and the sum and count of the forward round-trip histogram.
    async fn forward_counters(&self) -> anyhow::Result<(f64, f64, f64)> {
        Ok((
            self.metric("otpd_cluster_forwarded_total{outcome=\"ok\"}").await?,
            self.metric("otpd_cluster_forward_duration_seconds_sum").await?,
            self.metric("otpd_cluster_forward_duration_seconds_count").await?,
        ))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let keys = Keys::from_master(&parse_key(&args.hash_key)?);
    let node = Node {
        base: args.node.trim_end_matches('/').to_owned(),
        // One keep-alive connection: the requests are sequential.
        http: reqwest::Client::builder().pool_max_idle_per_host(1).timeout(Duration::from_secs(10)).build()?,
        admin: args.admin_token.clone(),
    };

    let waited = Instant::now();
    let (me, members) = loop {
        let (me, members) = node.cluster().await?;
        if members.len() == args.members {
            break (me, members);
        }
        anyhow::ensure!(
            waited.elapsed() < Duration::from_secs(60),
            "{me} sees {members:?}, not {} members, after 60 s",
            args.members
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ring = Ring::new(members.iter().map(String::as_str));
    eprintln!("cluster_latency: {me} among {members:?}, owns {} of 1024 partitions", ring.owned_by(&me));

    // Phones for each class, and which node owns each forwarded one.
    let per_class = args.warmup + args.requests;
    let mut local = Vec::with_capacity(per_class);
    let mut forwarded = Vec::with_capacity(per_class);
    let mut forwarded_to: BTreeMap<String, u64> = BTreeMap::new();
    let mut i = args.offset;
    while local.len() < per_class || forwarded.len() < per_class {
        let p = phone(i);
        i += 1;
        let owner = ring.owner(partition_of(&keys.identifier_hash(&p)));
        if owner == me {
            if local.len() < per_class {
                local.push(p);
            }
        } else if forwarded.len() < per_class {
            *forwarded_to.entry(owner.to_owned()).or_default() += 1;
            forwarded.push(p);
        }
    }

    let live_before = node.live_challenges().await?;
    let (fwd_before, sum_before, count_before) = node.forward_counters().await?;

    let mut results: BTreeMap<(&str, Class), Series> = BTreeMap::new();
    let started = Instant::now();
    for (kind, path) in [("send", "/v1/login"), ("verify", "/v1/login/verify")] {
        for n in 0..per_class {
            // Alternate which class goes first, so neither always follows the other.
            let order = if n % 2 == 0 { [Class::Local, Class::Forwarded] } else { [Class::Forwarded, Class::Local] };
            for class in order {
                let p = if class == Class::Local { &local[n] } else { &forwarded[n] };
                let body =
                    if kind == "send" { json!({ "phone": p }) } else { json!({ "phone": p, "code": args.wrong_code }) };
                let (status, took) = node.post(path, &body).await?;
                if n < args.warmup {
                    continue;
                }
                let s = results.entry((kind, class)).or_insert_with(Series::new);
                s.hist.record((took.as_micros() as u64).max(1))?;
                *s.statuses.entry(status).or_default() += 1;
            }
        }
    }
    let elapsed = started.elapsed();

    let live_after = node.live_challenges().await?;
    let (fwd_after, sum_after, count_after) = node.forward_counters().await?;
    let forwarded_cmds = fwd_after - fwd_before;
    let forward_mean_us =
        if count_after > count_before { (sum_after - sum_before) / (count_after - count_before) * 1e6 } else { 0.0 };

    // The table.
    println!(
        "cluster_latency: {} sequential requests per class and kind through {me} ({} warm-up), {:.1} s",
        args.requests,
        args.warmup,
        elapsed.as_secs_f64()
    );
    println!();
    println!("| request | class | p50 µs | p90 µs | p99 µs | max µs | mean µs | answers |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let mut report = serde_json::Map::new();
    for kind in ["send", "verify"] {
        let mut per_kind = serde_json::Map::new();
        for class in [Class::Local, Class::Forwarded] {
            let s = &results[&(kind, class)];
            let answers: Vec<String> = s.statuses.iter().map(|(st, n)| format!("{n}× {st}")).collect();
            println!(
                "| {kind} | {} | {} | {} | {} | {} | {:.0} | {} |",
                class.name(),
                s.us(0.50),
                s.us(0.90),
                s.us(0.99),
                s.hist.max(),
                s.hist.mean(),
                answers.join(", ")
            );
            per_kind.insert(class.name().into(), s.json());
        }
        let (l, f) = (&results[&(kind, Class::Local)], &results[&(kind, Class::Forwarded)]);
        let diff = |q: f64| f.us(q) as i64 - l.us(q) as i64;
        per_kind.insert(
            "forwarded_minus_local_us".into(),
            json!({ "p50": diff(0.50), "p90": diff(0.90), "p99": diff(0.99), "mean": (f.hist.mean() - l.hist.mean()).round() }),
        );
        println!(
            "| {kind} | forwarded − local | {:+} | {:+} | {:+} | | {:+.0} | |",
            diff(0.50),
            diff(0.90),
            diff(0.99),
            f.hist.mean() - l.hist.mean()
        );
        report.insert(kind.into(), Value::Object(per_kind));
    }
    println!();
    let expected_fwd = 2 * per_class;
    let expected_live = per_class as u64;
    println!(
        "cross-check on {me}: forwarded commands {forwarded_cmds:.0} (expected {expected_fwd}); live challenges +{} \
         (expected +{expected_live}); forwarded phones by owner {forwarded_to:?}; the node's own mean forward round \
         trip {forward_mean_us:.0} µs",
        live_after.saturating_sub(live_before),
    );
    if forwarded_cmds as usize != expected_fwd || live_after.saturating_sub(live_before) != expected_live {
        eprintln!("cluster_latency: WARNING: the node's counts differ from the ring's ownership");
    }

    report.insert("node".into(), json!(me));
    report.insert("members".into(), json!(members));
    report.insert("requests_per_class".into(), json!(args.requests));
    report.insert("warmup_per_class".into(), json!(args.warmup));
    report.insert("elapsed_s".into(), json!(elapsed.as_secs_f64()));
    report.insert(
        "cross_check".into(),
        json!({
            "forwarded_commands": forwarded_cmds,
            "expected_forwarded_commands": expected_fwd,
            "live_challenges_added": live_after.saturating_sub(live_before),
            "expected_live_challenges_added": expected_live,
            "forwarded_phones_by_owner": forwarded_to,
            "node_mean_forward_round_trip_us": forward_mean_us.round(),
        }),
    );
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&Value::Object(report))?)?;
    }
    Ok(())
}
