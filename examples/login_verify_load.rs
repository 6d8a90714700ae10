//! Measures device-login verify against OTP login verify, in one run, against a running node.
//!
//! ```sh
//! cargo build --release --bin otpd --example login_verify_load
//! OTPD_NODE__DATA_DIR=/tmp/otpd-load OTPD_HTTP__LISTEN=127.0.0.1:18087 target/release/otpd &
//! target/release/examples/login_verify_load --base http://127.0.0.1:18087 \
//!     --outbox /tmp/otpd-load/outbox.jsonl --users 3000 --concurrency 32 --rounds 2
//! ```
//!
//! Setup (not measured): `users` accounts register and verify by code, each enrols a P-256
//! device key. Then, per round, two phases, each preceded by its own (unmeasured) setup:
//! * OTP: every user asks for a login code; then `users` successful `POST /v1/login/verify`;
//! * device: every user gets a challenge and signs it (client side, before the clock starts);
//!   then `users` successful `POST /v1/device-login/verify` (P-256, DER signature).
//!
//! Both phases do the same durable work on success (session insert + audit event, group
//! committed) and sign one access token; the device phase adds a device read and a P-256
//! signature check. Only loopback addresses are used; the run is bounded by `users × rounds`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use serde_json::{Value, json};

struct Args {
    base: String,
    outbox: String,
    users: usize,
    concurrency: usize,
    rounds: usize,
    first_phone: u32,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        base: "http://127.0.0.1:18087".into(),
        outbox: "/tmp/otpd-load/outbox.jsonl".into(),
        users: 2000,
        concurrency: 32,
        rounds: 2,
        first_phone: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--base" => a.base = v,
            "--outbox" => a.outbox = v,
            "--users" => a.users = v.parse()?,
            "--concurrency" => a.concurrency = v.parse()?,
            "--rounds" => a.rounds = v.parse()?,
            "--first-phone" => a.first_phone = v.parse()?,
            _ => bail!("unknown argument {k}"),
        }
    }
    if !(a.base.starts_with("http://127.") || a.base.starts_with("http://localhost")) {
        bail!("--base must be a loopback address");
    }
    Ok(a)
}

fn phone(n: u32) -> String {
    format!("+1202{:03}{:04}", 200 + (n / 10_000) % 700, n % 10_000)
}

struct User {
    phone: String,
    device_id: String,
    key: p256::ecdsa::SigningKey,
}

/// Runs `f(i)` for `i in 0..n` on `concurrency` tasks.
async fn each<F, Fut>(n: usize, concurrency: usize, f: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (f, next) = (f.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                f(i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Fires `bodies` at `path` with `concurrency` tasks; every answer must be 200. Returns
/// (req/s, p50 ms, p99 ms).
async fn measure(
    client: &reqwest::Client,
    url: String,
    bodies: Vec<Value>,
    concurrency: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let n = bodies.len();
    let bodies = Arc::new(bodies);
    let latencies = Arc::new(parking_lot::Mutex::new(Vec::with_capacity(n)));
    let started = Instant::now();
    {
        let (client, url, bodies, latencies) = (client.clone(), url.clone(), bodies.clone(), latencies.clone());
        each(n, concurrency, move |i| {
            let (client, url, bodies, latencies) = (client.clone(), url.clone(), bodies.clone(), latencies.clone());
            async move {
                let t = Instant::now();
                let r = client.post(&url).json(&bodies[i]).send().await?;
                let status = r.status();
                let text = r.text().await?;
                if status != 200 {
                    bail!("{url}: {status} {text}");
                }
                latencies.lock().push(t.elapsed());
                Ok(())
            }
        })
        .await?;
    }
    let elapsed = started.elapsed();
    let mut l = latencies.lock().clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    Ok((n as f64 / elapsed.as_secs_f64(), pct(0.50), pct(0.99)))
}

/// The newest code in the outbox for each of `phones` (waits until all are there).
async fn codes(outbox: &str, phones: &[String], nth: usize) -> anyhow::Result<Vec<String>> {
    for _ in 0..600 {
        let text = std::fs::read_to_string(outbox).unwrap_or_default();
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines() {
            if let Ok(m) = serde_json::from_str::<Value>(line)
                && let (Some(to), Some(code)) = (m["to"].as_str(), m["code"].as_str())
            {
                seen.entry(to.to_owned()).or_default().push(code.to_owned());
            }
        }
        if phones.iter().all(|p| seen.get(p).is_some_and(|c| c.len() > nth)) {
            return Ok(phones.iter().map(|p| seen[p][nth].clone()).collect());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the outbox never held every code (is --outbox the node's outbox?)")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency * 2).build()?;
    let base = a.base.clone();
    let phones: Vec<String> = (0..a.users as u32).map(|i| phone(a.first_phone + i)).collect();

    eprintln!("setup: {} accounts with a P-256 device each", a.users);
    let p = Arc::new(phones.clone());
    let (c, b) = (client.clone(), base.clone());
    each(a.users, a.concurrency, move |i| {
        let (c, b, p) = (c.clone(), b.clone(), p.clone());
        async move {
            let body = json!({ "phone": p[i], "first_name": "Load", "last_name": "Test" });
            let r = c.post(format!("{b}/v1/register")).json(&body).send().await?;
            if r.status() != 202 {
                bail!("register: {}", r.text().await?);
            }
            Ok(())
        }
    })
    .await?;
    let register_codes = codes(&a.outbox, &phones, 0).await?;
    let users = Arc::new(parking_lot::Mutex::new(Vec::<(usize, User)>::new()));
    let (c, b, p, rc, u) =
        (client.clone(), base.clone(), Arc::new(phones.clone()), Arc::new(register_codes), users.clone());
    each(a.users, a.concurrency, move |i| {
        let (c, b, p, rc, u) = (c.clone(), b.clone(), p.clone(), rc.clone(), u.clone());
        async move {
            let r =
                c.post(format!("{b}/v1/register/verify")).json(&json!({ "phone": p[i], "code": rc[i] })).send().await?;
            let tokens: Value = r.json().await?;
            let access = tokens["access_token"].as_str().context("verify gave no token")?.to_owned();
            let key = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>())?;
            let spki = STANDARD.encode(key.verifying_key().to_public_key_der()?.as_bytes());
            let r = c
                .post(format!("{b}/v1/devices"))
                .bearer_auth(access)
                .json(&json!({ "name": "load", "platform": "ios", "public_key": spki }))
                .send()
                .await?;
            let device: Value = r.json().await?;
            let device_id = device["id"].as_str().context("enrol gave no id")?.to_owned();
            u.lock().push((i, User { phone: p[i].clone(), device_id, key }));
            Ok(())
        }
    })
    .await?;
    let mut users = std::mem::take(&mut *users.lock());
    users.sort_by_key(|(i, _)| *i);
    let users: Arc<Vec<User>> = Arc::new(users.into_iter().map(|(_, u)| u).collect());

    println!("users={} concurrency={} rounds={}", a.users, a.concurrency, a.rounds);
    let mut otp_rates = Vec::new();
    let mut device_rates = Vec::new();
    for round in 0..a.rounds {
        // OTP: one login code per user, then the verifies.
        let (c, b, us) = (client.clone(), base.clone(), users.clone());
        each(a.users, a.concurrency, move |i| {
            let (c, b, us) = (c.clone(), b.clone(), us.clone());
            async move {
                let r = c.post(format!("{b}/v1/login")).json(&json!({ "phone": us[i].phone })).send().await?;
                if r.status() != 202 {
                    bail!("login: {}", r.text().await?);
                }
                Ok(())
            }
        })
        .await?;
        let login_codes = codes(&a.outbox, &phones, round + 1).await?;
        let bodies =
            users.iter().zip(&login_codes).map(|(u, code)| json!({ "phone": u.phone, "code": code })).collect();
        let (rate, p50, p99) = measure(&client, format!("{base}/v1/login/verify"), bodies, a.concurrency).await?;
        println!("round {round}: OTP login verify     {rate:8.0} req/s  p50 {p50:6.2} ms  p99 {p99:6.2} ms");
        otp_rates.push(rate);

        // Device: one challenge per user, signed before the clock starts.
        let challenges = Arc::new(parking_lot::Mutex::new(vec![String::new(); a.users]));
        let (c, b, us, ch) = (client.clone(), base.clone(), users.clone(), challenges.clone());
        each(a.users, a.concurrency, move |i| {
            let (c, b, us, ch) = (c.clone(), b.clone(), us.clone(), ch.clone());
            async move {
                let r = c
                    .post(format!("{b}/v1/device-login/challenge"))
                    .json(&json!({ "device_id": us[i].device_id }))
                    .send()
                    .await?;
                let v: Value = r.json().await?;
                ch.lock()[i] = v["nonce"].as_str().context("no nonce")?.to_owned();
                Ok(())
            }
        })
        .await?;
        let nonces = challenges.lock().clone();
        let bodies = users
            .iter()
            .zip(&nonces)
            .map(|(u, nonce)| {
                let msg = format!("otpd-device-login-v1\notpd\n{}\n{nonce}", u.device_id);
                let sig: p256::ecdsa::Signature = u.key.sign(msg.as_bytes());
                json!({ "device_id": u.device_id, "nonce": nonce, "signature": STANDARD.encode(sig.to_der().as_bytes()) })
            })
            .collect();
        let (rate, p50, p99) =
            measure(&client, format!("{base}/v1/device-login/verify"), bodies, a.concurrency).await?;
        println!("round {round}: device login verify  {rate:8.0} req/s  p50 {p50:6.2} ms  p99 {p99:6.2} ms");
        device_rates.push(rate);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (o, d) = (mean(&otp_rates), mean(&device_rates));
    println!("mean: OTP {o:.0} req/s, device {d:.0} req/s, device/OTP = {:.2}", d / o);

    // In-process cost of the signature check itself, for the same key type.
    let key = &users[0].key;
    let vk = *key.verifying_key();
    let msg = b"otpd-device-login-v1\notpd\n00000000-0000-0000-0000-000000000000\n00";
    let sig: p256::ecdsa::Signature = key.sign(msg);
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        use p256::ecdsa::signature::Verifier as _;
        assert!(vk.verify(std::hint::black_box(msg), std::hint::black_box(&sig)).is_ok());
    }
    println!("p256 verify (RustCrypto, this process): {:.1} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    Ok(())
}
