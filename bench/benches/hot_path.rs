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
use otpd_actors::challenge::Purpose;
use otpd_actors::clock::Timestamp;
use otpd_actors::code::{Alphabet, CodePolicy, Sealed};
use otpd_actors::identifier::Normalizer;
use otpd_actors::keys::{IdentHash, Keys};
use otpd_actors::ports::{SessionId, UserId};
use otpd_actors::shard::{ChallengeKey, ShardMsg};

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
                router.call(index, |reply| ShardMsg::Issue { key, sealed, now, reply }).await.unwrap();
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

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = code_generation, code_compare, jwt, challenge_round_trip, parse_and_validate
}
criterion_main!(benches);
