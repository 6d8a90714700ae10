//! Measures `otpd backup` and `otpd restore` (issue 20) on a store of many users. Not a test:
//! nothing here passes or fails; run it in release mode and read the figures.
//!
//! ```sh
//! cargo run --release --example backup_bench -- /var/tmp/otpd-bench 1000000
//! ```
//!
//! 1. Fill: an embedded store (`EmbeddedStore::open`, the node's default options) in
//!    `<dir>/data/store`, written through its own write path (the group-committing writer, every
//!    commit fsync'd): per user what a sign-up leaves, the account (`insert_user`: `users`,
//!    `users_by_ident`), a session (`insert_session`: `sessions`, `sessions_by_user`) and two
//!    audit events (`append`: `audit`, `audit_by_ident`, `audit_by_trace`), 1,024 writes in
//!    flight. Skipped when the store is already there (a second run measures again).
//! 2. Backup of the quiet store: `Backups::run` into a new directory, as
//!    `POST /v1/admin/backup` does, with the store open; then `restore` into a new data
//!    directory, as `otpd restore` does. Each with its steps' times.
//! 3. Backup under load: 64 writers insert accounts for 5 s, then keep inserting while a second
//!    backup runs; their rates before and during are compared (the backup's cost to the
//!    commit path, on this 2-core machine where the backup thread shares the cores).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otpd::store::embedded::backup::{Backups, restore};
use otpd::store::embedded::{EmbeddedOptions, EmbeddedStore};
use otpd_actors::ports::AuditLog;
use otpd_actors::ports::{AuditEvent, AuthMethod, Session, SessionStore, User, UserStore};
use otpd_actors::rules::audit::{Api, AuditOutcome, Step};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::identifier::Identifier;
use otpd_actors::rules::ids::{SessionId, UserId};
use otpd_actors::rules::keys::IdentHash;

fn ident(n: u64) -> IdentHash {
    IdentHash(blake3::hash(&n.to_le_bytes()).as_bytes()[..16].try_into().unwrap())
}

fn user(n: u64, at: Timestamp) -> User {
    User {
        id: UserId(uuid::Uuid::from_u128(u128::from(n) << 64 | 0x7000_8000_0000_0001)),
        identifier: Identifier::Phone { e164: format!("+1202{:07}", n % 10_000_000), country_code: 1 },
        ident_hash: ident(n),
        first_name: "Bench".into(),
        last_name: format!("User{n}"),
        email: None,
        verified: true,
        created_at: at,
        verified_at: Some(at),
        updated_at: at,
    }
}

fn event(n: u64, api: Api, at: Timestamp, user: Option<UserId>) -> AuditEvent {
    AuditEvent {
        at,
        trace_id: format!("{n:032x}{}", api.as_str()).into(),
        api,
        step: Step::Done,
        outcome: AuditOutcome::Ok,
        message: "ok".into(),
        client_ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("bench/1".into()),
        ident_hash: Some(ident(n)),
        user_id: user,
    }
}

/// What one sign-up leaves in the store.
async fn sign_up(store: &EmbeddedStore, n: u64, at: Timestamp) {
    let u = user(n, at);
    store.append(event(n, Api::Register, at, None)).await.unwrap();
    store.insert_user(&u).await.unwrap();
    let expires = Timestamp::from_millis(at.as_millis() + 30 * 24 * 3600 * 1000);
    let session =
        Session::new(SessionId(uuid::Uuid::from_u128(u128::from(n) + 1)), u.id, [7; 32], AuthMethod::Otp, at, expires);
    store.insert_session(&session).await.unwrap();
    store.append(event(n, Api::RegisterVerify, at, Some(u.id))).await.unwrap();
}

fn du(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let meta = e.metadata().unwrap();
            total += if meta.is_dir() { du(&e.path()) } else { meta.len() };
        }
    }
    total
}

/// Inserts accounts from `next` on 64 writers until `stop`; returns how many.
fn load(store: Arc<EmbeddedStore>, next: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let done = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..64)
            .map(|_| {
                let (store, next, stop, done) = (store.clone(), next.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let at = Timestamp::system_now();
                    while !stop.load(Ordering::Relaxed) {
                        store.insert_user(&user(next.fetch_add(1, Ordering::Relaxed), at)).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        done.load(Ordering::Relaxed)
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(args.get(1).map(String::as_str).unwrap_or("/var/tmp/otpd-backup-bench"));
    let users: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let data = root.join("data");
    let fresh = !data.join("store").exists();
    let store = EmbeddedStore::open(&data.join("store"), EmbeddedOptions::default()).unwrap();
    otpd::private_fs::create_dir(&data.join("secrets")).unwrap();
    std::fs::write(data.join("secrets/hash.key"), "ab".repeat(32)).unwrap();
    if fresh {
        let started = Instant::now();
        let at = Timestamp::system_now();
        let mut set = tokio::task::JoinSet::new();
        for n in 0..users {
            if set.len() >= 1024 {
                set.join_next().await.unwrap().unwrap();
            }
            let s = store.clone();
            set.spawn(async move { sign_up(&s, n, at).await });
            if n % 100_000 == 0 && n > 0 {
                eprintln!("  {n} sign-ups, {:.0} s", started.elapsed().as_secs_f64());
            }
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
        println!("fill: {users} sign-ups (4 writes each) in {:.1} s", started.elapsed().as_secs_f64());
    }
    println!("store on disk: {:.1} MB ({})", du(&data.join("store")) as f64 / 1e6, data.join("store").display());

    let backups = Arc::new(Backups::new(store.clone(), data.join("store"), data.join("secrets")));

    // 1. A backup of the quiet store, then its restore.
    let dir = root.join(format!("backup-{}", std::process::id()));
    let report = backups.run(dir.clone()).await.unwrap();
    print_report("backup (quiet)", &report);
    let target = root.join(format!("restored-{}", std::process::id()));
    let restored = restore(&dir, &target).unwrap();
    print_report("restore", &restored);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&target);

    // 2. The writers' rate without a backup, then during one.
    let next = Arc::new(AtomicU64::new(users * 10));
    let stop = Arc::new(AtomicBool::new(false));
    let base = load(store.clone(), next.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let base_rate = base.await.unwrap() as f64 / 5.0;
    let stop = Arc::new(AtomicBool::new(false));
    let during = load(store.clone(), next.clone(), stop.clone());
    let started = Instant::now();
    let report = backups.run(dir.clone()).await.unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let during_rate = during.await.unwrap() as f64 / took.as_secs_f64();
    print_report("backup (under load)", &report);
    println!(
        "writers (64, insert_user): {base_rate:.0}/s for 5 s before the backup, {during_rate:.0}/s during it ({:.2}×)",
        during_rate / base_rate
    );
    let _ = std::fs::remove_dir_all(&dir);
    store.close();
}

fn print_report(what: &str, r: &otpd::store::embedded::backup::Report) {
    let records: u64 = r.manifest.keyspaces.values().map(|k| k.count).sum();
    let mb = r.bytes as f64 / 1e6;
    let s = r.took.as_secs_f64();
    let steps: Vec<String> = r.steps.iter().map(|(n, d)| format!("{n} {:.2} s", d.as_secs_f64())).collect();
    println!(
        "{what}: {s:.2} s, {mb:.1} MB, {:.1} MB/s; {records} records in {} keyspaces, {} accounts; {}",
        mb / s,
        r.manifest.keyspaces.len(),
        r.manifest.keyspaces["users"].count,
        steps.join(", ")
    );
}
