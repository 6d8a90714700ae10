//! Measures what retention does to the embedded store's size (issue 20): the records of N
//! sign-ups and N logins written through the store's ports as a node writes them (an account,
//! a session per sign-in, three audit events per flow: the send, its delivery, the verify, each
//! with its key row), then the store compacted and measured; then one retention sweep at a time
//! when every audit event and every session is past its lifetime (the accounts stay), compacted
//! and measured again. Not a test: nothing passes or fails; run it in release mode.
//!
//! ```sh
//! cargo run --release --example retention_growth            # 100 000 of each
//! cargo run --release --example retention_growth -- 20000   # fewer
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otpd::config::RetentionConfig;
use otpd::store::embedded::{EmbeddedOptions, EmbeddedStore};
use otpd_actors::ports::{AuditEvent, AuditLog, AuthMethod, InsertUser, Session, SessionStore, User, UserStore};
use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::{SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;
use uuid::Uuid;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn event(at: Timestamp, n: u64, api: Api, user: Option<UserId>) -> AuditEvent {
    AuditEvent {
        at,
        trace_id: format!("{n:032x}").into(),
        api,
        step: Step::Done,
        outcome: AuditOutcome::Ok,
        message: "ok".into(),
        client_ip: (api != Api::Delivery).then_some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, (n % 250) as u8))),
        user_agent: (api != Api::Delivery).then(|| "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)".into()),
        ident_hash: Some(IdentHash(*blake3::hash(&n.to_be_bytes()).as_bytes().first_chunk().unwrap())),
        user_id: user,
    }
}

/// One flow: an account (sign-up only), a session, and its three audit events.
async fn flow(store: &Arc<EmbeddedStore>, n: u64, t: Timestamp, signup: bool) {
    let id = UserId(Uuid::now_v7());
    let ident = IdentHash(*blake3::hash(&n.to_be_bytes()).as_bytes().first_chunk().unwrap());
    if signup {
        let user = User {
            id,
            identifier: Identifier::Phone { e164: format!("+1202{n:07}"), country_code: 1 },
            ident_hash: ident,
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: None,
            verified: true,
            created_at: t,
            verified_at: Some(t),
            updated_at: t,
        };
        assert_eq!(store.insert_user(&user).await.unwrap(), InsertUser::Inserted);
    }
    let (send, verify) = if signup { (Api::Register, Api::RegisterVerify) } else { (Api::Login, Api::LoginVerify) };
    let mut s = Session::new(SessionId(Uuid::now_v7()), id, [7; 32], AuthMethod::Otp, t, t.plus(DAY * 30));
    s.client_ip = Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
    s.user_agent = Some("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)".into());
    let (a, b, c, d) = tokio::join!(
        store.append(event(t, n, send, None)),
        store.append(event(t, n, Api::Delivery, None)),
        store.append(event(t, n, verify, Some(id))),
        store.insert_session(&s),
    );
    a.and(b).and(c).and(d).unwrap();
}

/// Bytes per top-level entry of the store's directory (keyspaces are numbered directories).
fn walk(path: &std::path::Path) -> Vec<(String, u64)> {
    fn size(p: &std::path::Path) -> u64 {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => std::fs::read_dir(p).unwrap().flatten().map(|e| size(&e.path())).sum(),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let mut out: Vec<(String, u64)> = std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| (e.path().strip_prefix(path).unwrap().display().to_string(), size(&e.path())))
        .collect();
    out.sort();
    out
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = EmbeddedStore::open(&path, EmbeddedOptions::default()).unwrap();
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let started = Instant::now();
    for chunk in 0..n.div_ceil(500) {
        let tasks = (chunk * 500..((chunk + 1) * 500).min(n)).flat_map(|i| {
            let s = store.clone();
            let s2 = store.clone();
            [
                tokio::spawn(async move { flow(&s, i, t0, true).await }),
                tokio::spawn(async move { flow(&s2, i, t0.plus(Duration::from_secs(60)), false).await }),
            ]
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
    }
    let wrote = started.elapsed();
    let before = store.compact_and_measure(&path).unwrap();
    let retention = RetentionConfig::default();
    let after_year = t0.plus(DAY * 400);
    let swept_at = Instant::now();
    let swept = otpd::store::retention::sweep(&store, after_year, &retention).await;
    let sweep_took = swept_at.elapsed();
    let after = store.compact_and_measure(&path).unwrap();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let per_million = |b: u64| b as f64 * 1_000_000.0 / n as f64 / 1e9;
    println!("{n} sign-ups and {n} logins written in {:.1} s", wrote.as_secs_f64());
    println!("before retention: {:.1} MiB = {:.2} GB per million sign-ups + logins", mib(before), per_million(before));
    println!("sweep at +400 days: {swept:?} in {:.1} s", sweep_took.as_secs_f64());
    println!("after retention:  {:.1} MiB = {:.2} GB per million (the accounts)", mib(after), per_million(after));
    for entry in walk(&path) {
        println!("  {:>10.1} KiB  {}", entry.1 as f64 / 1024.0, entry.0);
    }
    store.close();
}
