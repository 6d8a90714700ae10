//! Measures the delivery dispatcher (issue 4): how many messages per second it hands to a fast
//! local provider, and what batching adds to the send path's latency. Not a test: nothing here
//! passes or fails; run it in release mode and read the table.
//!
//! ```sh
//! cargo run --release --example delivery_bench            # full run (~1 min)
//! cargo run --release --example delivery_bench -- quick   # smaller counts
//! cargo run --release --example delivery_bench -- receipts  # only the receipts comparison
//! ```
//!
//! 3. Receipts (issue 18): the same in-process provider with delivery receipts off and on,
//!    alternated. On, the dispatcher watches every message it hands over, and each gets two
//!    reports (`sent`, then `delivered`) through `DispatchHandle::receipt`, as the callback
//!    endpoint passes them on; a run ends when every message is final and none is watched.
//!
//! 1. Throughput: messages enqueued as fast as the queue takes them (capacity 10 000) until
//!    all are final, through (a) an in-process provider that accepts instantly (the
//!    dispatcher's own ceiling) and (b) a JSON webhook on a loopback hyper server answering
//!    `200 {}` at once, with batching on (100 per POST) and off (1 per POST).
//! 2. Send-path latency: a node (`server::start`, SystemClock, embedded store) with the
//!    webhook provider; `POST /v1/register` for fresh numbers, one at a time and 32 at a time.
//!    For each request: the HTTP answer's latency, and the time from sending the request to
//!    the webhook receiving the message. Batching on (`batch_max_size = 100`,
//!    `batch_max_age = 10ms`, the defaults) vs off (`batch_max_size = 1`), same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use otpd::config::{Config, Dur};
use otpd_actors::actors::dispatch::{
    DispatchConfig, DispatchHandle, Provider, ProviderSpec, Routes, SendResult, Templates,
};
use otpd_actors::ports::{AuditEvent, AuditLog, Notifier, NotifyError, OutboundMessage, StoreError};
use otpd_actors::rules::challenge::Purpose;
use otpd_actors::rules::clock::{Clock, SystemClock};
use otpd_actors::rules::code::{Alphabet, CodePolicy};
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::keys::IdentHash;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// Accepts everything at once.
struct Instant0;

#[async_trait]
impl Provider for Instant0 {
    fn name(&self) -> &str {
        "null"
    }
    fn max_batch(&self) -> usize {
        1000
    }
    async fn send(&self, batch: &[otpd_actors::actors::dispatch::Delivery]) -> Vec<SendResult> {
        vec![Ok(()); batch.len()]
    }
}

/// Accepts everything at once and says it reports receipts; hands each delivery id over.
struct Reporting(tokio::sync::mpsc::UnboundedSender<uuid::Uuid>);

#[async_trait]
impl Provider for Reporting {
    fn name(&self) -> &str {
        "null"
    }
    fn max_batch(&self) -> usize {
        1000
    }
    fn receipts(&self) -> bool {
        true
    }
    async fn send(&self, batch: &[otpd_actors::actors::dispatch::Delivery]) -> Vec<SendResult> {
        for d in batch {
            let _ = self.0.send(d.id);
        }
        vec![Ok(()); batch.len()]
    }
}

/// Drops audit events (the store's group commit is measured elsewhere).
struct NoAudit;

#[async_trait]
impl AuditLog for NoAudit {
    async fn append(&self, _: AuditEvent) -> Result<(), StoreError> {
        Ok(())
    }
    async fn by_identifier(&self, _: &IdentHash, _: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(Vec::new())
    }
    async fn by_trace(&self, _: &str, _: usize) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(Vec::new())
    }
}

/// A loopback webhook: answers `200 {}` at once, remembers when each trace id arrived.
struct Hook {
    addr: SocketAddr,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    posts: Arc<Mutex<u64>>,
}

async fn start_hook() -> Hook {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let posts = Arc::new(Mutex::new(0u64));
    let (a, p) = (arrivals.clone(), posts.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (a, p) = (a.clone(), p.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (a, p) = (a.clone(), p.clone());
                    async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let now = Instant::now();
                        *p.lock() += 1;
                        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                            let mut a = a.lock();
                            for m in v["messages"].as_array().into_iter().flatten() {
                                if let Some(t) = m["trace_id"].as_str() {
                                    a.insert(t.to_owned(), now);
                                }
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Hook { addr, arrivals, posts }
}

fn message(i: u64, clock: &dyn Clock) -> OutboundMessage {
    OutboundMessage {
        to: Identifier::Phone { e164: format!("+1202{:07}", i % 10_000_000), country_code: 1 },
        purpose: Purpose::Login,
        resend: false,
        code: CodePolicy::new(6, Alphabet::Numeric).unwrap().generate(),
        expires_at: clock.now().plus(Duration::from_secs(300)),
        trace_id: i.to_string().into(),
        ident_hash: IdentHash([1; 16]),
        via: None,
        locale: None,
    }
}

/// Enqueues `n` messages as fast as the queue accepts them; returns messages per second until
/// the last is final, and the calls made.
async fn throughput(provider: Arc<dyn Provider>, batch: usize, concurrency: usize, n: u64) -> (f64, u64) {
    throughput_with(provider, batch, concurrency, n, None).await
}

/// Receipts off (`Instant0`) or on (`Reporting`, its ids reported `sent` then `delivered`).
async fn receipts_round(on: bool, n: u64) -> f64 {
    if !on {
        return throughput(Arc::new(Instant0), 100, 4, n).await.0;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    throughput_with(Arc::new(Reporting(tx)), 100, 4, n, Some(rx)).await.0
}

async fn throughput_with(
    provider: Arc<dyn Provider>,
    batch: usize,
    concurrency: usize,
    n: u64,
    receipts: Option<tokio::sync::mpsc::UnboundedReceiver<uuid::Uuid>>,
) -> (f64, u64) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = DispatchConfig { batch_max_size: batch, ..DispatchConfig::default() };
    let name = provider.name().to_owned();
    let handle = DispatchHandle::new(
        config,
        vec![ProviderSpec { provider, concurrency }],
        &Routes { sms: vec![name.clone()], email: vec![name] },
        Templates::defaults("bench"),
        Arc::new(NoAudit),
        clock.clone(),
    )
    .unwrap();
    let (actor, _) = ractor::Actor::spawn(None, handle.actor(), ()).await.unwrap();
    let reporter = receipts.map(|mut rx| {
        let handle = handle.clone();
        tokio::spawn(async move {
            use otpd_actors::actors::dispatch::ReceiptStatus;
            while let Some(id) = rx.recv().await {
                handle.receipt("null", id, ReceiptStatus::Sent, None).await;
                handle.receipt("null", id, ReceiptStatus::Delivered, None).await;
            }
        })
    });
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        match handle.enqueue(message(i, clock.as_ref())) {
            Ok(held) => {
                handle.start(vec![held]);
                i += 1;
            }
            Err(NotifyError::QueueFull) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    while handle.stats().delivered < n || (reporter.is_some() && handle.watched() > 0) {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(r) = reporter {
        r.abort();
    }
    let calls = handle.stats().providers[0].calls;
    actor.stop(None);
    (n as f64 / secs, calls)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

struct Latency {
    http: Vec<Duration>,
    path: Vec<Duration>,
    posts: u64,
}

/// Registers `n` fresh numbers through a node, `parallel` at a time.
async fn send_path(batch: usize, parallel: usize, n: usize, offset: u64) -> Latency {
    let hook = start_hook().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.node.data_dir = dir.path().to_owned();
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.delivery.provider = "webhook".into();
    config.webhook.url = format!("http://{}/hook", hook.addr);
    config.delivery.batch_max_size = batch;
    config.delivery.batch_max_age = Dur(Duration::from_millis(10));
    let node = otpd::server::start(config, Arc::new(SystemClock)).await.unwrap();
    let url = format!("{}/v1/register", node.base_url());
    let client = reqwest::Client::new();
    // Warm up: connections, phone-number metadata.
    for i in 0..20u64 {
        let body = json!({ "phone": format!("+1202555{:04}", i), "first_name": "W", "last_name": "U" });
        client.post(&url).json(&body).send().await.unwrap();
    }
    let posts_before = *hook.posts.lock();
    let mut starts = Vec::new();
    let mut http = Vec::new();
    let mut next = 0usize;
    while next < n {
        let mut tasks = Vec::new();
        for _ in 0..parallel.min(n - next) {
            let (client, url) = (client.clone(), url.clone());
            let number = offset + next as u64;
            let trace = format!("lat-{number}");
            next += 1;
            tasks.push(tokio::spawn(async move {
                let body =
                    json!({ "phone": format!("+1{}", 2022000000 + number), "first_name": "L", "last_name": "T" });
                let t0 = Instant::now();
                let r = client.post(&url).header("x-request-id", &trace).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 202);
                (trace, t0, t0.elapsed())
            }));
        }
        for t in tasks {
            let (trace, t0, d) = t.await.unwrap();
            starts.push((trace, t0));
            http.push(d);
        }
    }
    while node.delivery.stats().delivered < (n + 20) as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let arrivals = hook.arrivals.lock().clone();
    let mut path: Vec<Duration> = starts.iter().map(|(t, t0)| arrivals[t].duration_since(*t0)).collect();
    let posts = *hook.posts.lock() - posts_before;
    node.shutdown().await;
    http.sort();
    path.sort();
    Latency { http, path, posts }
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "quick");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!("delivery_bench: {cores} cores, {} build", if cfg!(debug_assertions) { "debug" } else { "release" });

        if std::env::args().any(|a| a == "receipts") {
            println!("\n## Receipts off and on: in-process provider, batch 100, 4 calls (messages per second)\n");
            println!("| round | receipts off | receipts on | on / off |");
            println!("| --- | --- | --- | --- |");
            let n = 200_000;
            for round in 1..=3 {
                let off = receipts_round(false, n).await;
                let on = receipts_round(true, n).await;
                println!("| {round} | {off:.0} | {on:.0} | {:.2} |", on / off);
            }
            return Ok(());
        }
        println!("\n## Throughput: messages handed to a fast local provider (per second)\n");
        println!("| provider | batch | concurrency | messages | msg/s | provider calls |");
        println!("| --- | --- | --- | --- | --- | --- |");
        let n = if quick { 50_000 } else { 300_000 };
        let (rate, calls) = throughput(Arc::new(Instant0), 100, 4, n).await;
        println!("| in-process, instant | 100 | 4 | {n} | {rate:.0} | {calls} |");
        let (rate, calls) = throughput(Arc::new(Instant0), 1, 4, n / 3).await;
        println!("| in-process, instant | 1 | 4 | {} | {rate:.0} | {calls} |", n / 3);
        let hook = start_hook().await;
        let webhook = |max_batch: usize| {
            let mut c = otpd::config::WebhookConfig { url: format!("http://{}/hook", hook.addr), ..Default::default() };
            c.max_batch = max_batch;
            Arc::new(otpd::delivery::webhook::Webhook::new(&c).unwrap()) as Arc<dyn Provider>
        };
        let n = if quick { 20_000 } else { 100_000 };
        let (rate, calls) = throughput(webhook(100), 100, 4, n).await;
        println!("| loopback JSON webhook | 100 | 4 | {n} | {rate:.0} | {calls} |");
        let n = if quick { 3_000 } else { 10_000 };
        let (rate, calls) = throughput(webhook(1), 1, 4, n).await;
        println!("| loopback JSON webhook | 1 | 4 | {n} | {rate:.0} | {calls} |");

        println!("\n## Send path: POST /v1/register → webhook receives the message (ms)\n");
        println!("| in flight | batching | requests | webhook POSTs | HTTP p50 | HTTP p99 | to provider p50 | to provider p99 |");
        println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
        let n = if quick { 300 } else { 2000 };
        let mut offset = 0;
        for parallel in [1usize, 32] {
            let mut rows = Vec::new();
            for (label, batch) in [("on (100, 10 ms)", 100usize), ("off (1)", 1)] {
                let l = send_path(batch, parallel, n, offset).await;
                offset += n as u64 + 100;
                println!(
                    "| {parallel} | {label} | {n} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    l.posts,
                    pct(&l.http, 0.5),
                    pct(&l.http, 0.99),
                    pct(&l.path, 0.5),
                    pct(&l.path, 0.99)
                );
                rows.push(l);
            }
            let (on, off) = (&rows[0], &rows[1]);
            println!(
                "| {parallel} | on / off | | {:.2}× POSTs | {:.2}× | | {:.2}× (+{:.2} ms) | |",
                on.posts as f64 / off.posts as f64,
                pct(&on.http, 0.5) / pct(&off.http, 0.5),
                pct(&on.path, 0.5) / pct(&off.path, 0.5),
                pct(&on.path, 0.5) - pct(&off.path, 0.5)
            );
        }
        Ok(())
    })
}
