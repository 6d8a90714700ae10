//! Criterion benchmarks of the hot path. Each group's first line says what it measures.
//!
//! Run: `cargo bench -p otpd-bench` (add `-- <filter>` for one group). Figures and how to
//! read them: docs/PERFORMANCE.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use otpd::config::Config;
use otpd::http::wire::LoginRequest;
use otpd::secrets::SigningKey;
use otpd::tokens::TokenService;
use otpd_actors::actors::shard::{ChallengeKey, ShardMsg};
use otpd_actors::rules::challenge::Purpose;
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::code::{Alphabet, CodePolicy, Sealed};
use otpd_actors::rules::identifier::Normalizer;
use otpd_actors::rules::ids::{SessionId, UserId};
use otpd_actors::rules::keys::{IdentHash, Keys};

/// Code generation + sealing: what every send pays to make a code and its keyed BLAKE3 digest.
fn code_generation(c: &mut Criterion) {
    let keys = Keys::from_master(&[1; 32]);
    let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
    c.bench_function("code/generate+seal (6 digits)", |b| {
        b.iter(|| {
            let code = policy.generate();
            black_box(Sealed::seal(&keys, &code))
        })
    });
}

/// Verification compare: recompute the digest of an attempt and compare in constant time.
fn code_compare(c: &mut Criterion) {
    let keys = Keys::from_master(&[1; 32]);
    let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
    let code = policy.generate();
    let sealed = Sealed::seal(&keys, &code);
    let attempt = policy.normalise_attempt("123456");
    c.bench_function("code/normalise+compare", |b| {
        b.iter(|| black_box(sealed.opens_with(&keys, &policy.normalise_attempt(black_box("123456")))))
    });
    c.bench_function("code/compare only", |b| b.iter(|| black_box(sealed.opens_with(&keys, black_box(&attempt)))));
}

/// JWT sign and verify with the node's own TokenService (jsonwebtoken, aws_lc_rs backend).
fn jwt(c: &mut Criterion) {
    let now = Timestamp::system_now();
    let (user, session) = (UserId(uuid_v7()), SessionId(uuid_v7()));
    let mut config = Config::default().tokens;
    let ed = TokenService::new(&SigningKey::Ed25519(otpd_bench::ed25519_pkcs8()), &config).unwrap();
    config.algorithm = "HS256".into();
    let hs = TokenService::new(&SigningKey::Hs256(vec![9; 32]), &config).unwrap();
    for (name, svc) in [("EdDSA", &ed), ("HS256", &hs)] {
        let token = svc.issue(user, session, now).unwrap();
        c.bench_function(&format!("jwt/{name} sign"), |b| b.iter(|| black_box(svc.issue(user, session, now).unwrap())));
        c.bench_function(&format!("jwt/{name} verify"), |b| {
            b.iter(|| black_box(svc.verify(black_box(&token), now).unwrap()))
        });
    }
}

fn uuid_v7() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}

/// A challenge round trip through the actor tree: router → shard actor (Issue, then Verify) →
/// reply port, on a multi-threaded tokio runtime like the node's.
fn challenge_round_trip(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let router = rt.block_on(otpd_bench::shard_tree(64));
    let keys = Keys::from_master(&[7; 32]);
    let policy = CodePolicy::new(6, Alphabet::Numeric).unwrap();
    let mut n: u64 = 0;
    c.bench_function("actors/issue+verify round trip", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let mut subject = [0u8; 16];
            subject[..8].copy_from_slice(&n.to_le_bytes());
            subject[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            let key = ChallengeKey { subject: IdentHash(subject), purpose: Purpose::Login };
            let code = policy.generate();
            let sealed = Sealed::seal(&keys, &code);
            let router = router.clone();
            async move {
                let index = router.index_for(key.subject.shard_bits());
                let now = Timestamp::system_now();
                router.call(index, |reply| ShardMsg::Issue { key, sealed, profile: None, now, reply }).await.unwrap();
                let outcome = router
                    .call(index, |reply| ShardMsg::Verify { key, attempt: code.clone(), now, reply })
                    .await
                    .unwrap();
                black_box(outcome)
            }
        })
    });
}

/// Request parse + validation: JSON into the wire type (unknown fields refused), then phone
/// normalisation (a verdict-cache hit, the common case) and the keyed identifier hash.
fn parse_and_validate(c: &mut Criterion) {
    let normalizer = Normalizer::new(Some("US"), 1024).unwrap();
    normalizer.warm();
    let keys = Keys::from_master(&[1; 32]);
    let body = br#"{"phone":"+1 202 555 0123"}"#;
    let _ = normalizer.phone("+1 202 555 0123");
    c.bench_function("request/parse+normalise+hash", |b| {
        b.iter(|| {
            let req: LoginRequest = serde_json::from_slice(black_box(body)).unwrap();
            let id = normalizer.phone(req.phone.as_deref().unwrap()).unwrap();
            black_box(keys.identifier_hash(id.as_str()))
        })
    });
    c.bench_function("request/normalise (verdict cache miss)", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            let fresh = Normalizer::new(Some("US"), 16).unwrap();
            black_box(fresh.phone(&format!("+1202{:03}{:04}", 200 + (i / 10_000) % 700, i % 10_000)))
        })
    });
}

/// The full send and verify handlers in-process (no network): routing, body limits, JSON,
/// normalisation, limiter, shard, outbox enqueue, group-committed audit (and session) writes,
/// JWT signing — next to a bare handler that only builds a tiny JSON answer (the ceiling).
fn handlers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let node = rt.block_on(otpd_bench::in_process_node());
    let app = node.assembly.app.clone();
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let phones: Vec<String> = (0..2000u32).map(|i| format!("+1202{:03}{:04}", 200 + i / 10_000, i % 10_000)).collect();

    // Sign the users up once (not measured).
    rt.block_on(async {
        for p in &phones {
            let body = format!(r#"{{"phone":"{p}","first_name":"Bench","last_name":"User"}}"#);
            otpd::http::routes::handle(app.clone(), otpd_bench::post("/v1/register", &body), peer).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let codes = otpd_bench::outbox_codes(&node.assembly.outbox_path);
        for p in &phones {
            let body = format!(r#"{{"phone":"{p}","code":"{}"}}"#, codes[p]);
            otpd::http::routes::handle(app.clone(), otpd_bench::post("/v1/register/verify", &body), peer).await;
        }
    });

    c.bench_function("handler/bare hyper-style handler (ceiling)", |b| {
        b.to_async(&rt).iter(|| async {
            let req = otpd_bench::post("/v1/login", r#"{"phone":"+12022000000"}"#);
            black_box(bare_handler(req).await)
        })
    });

    let mut i = 0usize;
    c.bench_function("handler/POST /v1/login (known user)", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let body = format!(r#"{{"phone":"{}"}}"#, phones[i % phones.len()]);
            let app = app.clone();
            async move {
                let resp = otpd::http::routes::handle(app, otpd_bench::post("/v1/login", &body), peer).await;
                assert_eq!(resp.status(), 202);
                black_box(resp)
            }
        })
    });

    let mut u = 0u32;
    c.bench_function("handler/POST /v1/login (unknown identifier)", |b| {
        b.to_async(&rt).iter(|| {
            u += 1;
            let body = format!(r#"{{"phone":"+1415{:03}{:04}"}}"#, 200 + (u / 10_000) % 700, u % 10_000);
            let app = app.clone();
            async move {
                let resp = otpd::http::routes::handle(app, otpd_bench::post("/v1/login", &body), peer).await;
                black_box(resp)
            }
        })
    });

    // Verify: each batch first sends a code to each user (not timed), then times the verifies.
    c.bench_function("handler/POST /v1/login/verify (right code)", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(phones.len());
                    for p in &phones[..n] {
                        let body = format!(r#"{{"phone":"{p}"}}"#);
                        otpd::http::routes::handle(app.clone(), otpd_bench::post("/v1/login", &body), peer).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let codes = otpd_bench::outbox_codes(&node.assembly.outbox_path);
                    let bodies: Vec<String> =
                        phones[..n].iter().map(|p| format!(r#"{{"phone":"{p}","code":"{}"}}"#, codes[p])).collect();
                    let start = std::time::Instant::now();
                    for body in &bodies {
                        let resp =
                            otpd::http::routes::handle(app.clone(), otpd_bench::post("/v1/login/verify", body), peer)
                                .await;
                        debug_assert_eq!(resp.status(), 200);
                        black_box(resp);
                    }
                    total += start.elapsed();
                    left -= n;
                }
                total
            })
        })
    });
}

async fn bare_handler(
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    use http_body_util::BodyExt;
    let _ = req.into_body().collect().await;
    let mut resp =
        hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(br#"{"status":"pending"}"#)));
    *resp.status_mut() = hyper::StatusCode::ACCEPTED;
    resp
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = code_generation, code_compare, jwt, challenge_round_trip, parse_and_validate, handlers
}
criterion_main!(benches);
