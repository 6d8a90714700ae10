//! Shared set-up for the criterion benchmarks in `benches/`: the pieces of the hot path,
//! assembled the way a node assembles them.

use std::sync::Arc;
use std::time::Duration;

use otpd_actors::actors::shard::{ShardActor, ShardConfig};
use otpd_actors::actors::supervisor::{EngineSupervisor, ShardRouter, SupervisorArgs};
use otpd_actors::rules::clock::SystemClock;
use otpd_actors::rules::keys::Keys;

/// A supervision tree of `shards` challenge shards, as the engine starts it.
pub async fn shard_tree(shards: usize) -> Arc<ShardRouter> {
    let router = Arc::new(ShardRouter::new(shards, Duration::from_secs(2)));
    let shard = ShardActor {
        config: ShardConfig::default(),
        keys: Arc::new(Keys::from_master(&[7; 32])),
        clock: Arc::new(SystemClock),
    };
    let (_supervisor, _) = ractor_spawn(shard, router.clone()).await;
    router
}

async fn ractor_spawn(
    shard: ShardActor,
    router: Arc<ShardRouter>,
) -> (ractor::ActorRef<otpd_actors::actors::supervisor::SupervisorMsg>, tokio::task::JoinHandle<()>) {
    ractor::Actor::spawn(None, EngineSupervisor, SupervisorArgs { shard, router, dispatcher: None })
        .await
        .expect("the tree starts")
}

/// An Ed25519 PKCS#8 signing key, generated fresh.
pub fn ed25519_pkcs8() -> Vec<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key generation").as_ref().to_vec()
}

/// A whole node minus its listener, on a temporary data directory, with limits relaxed so a
/// benchmark can send to the same numbers over and over.
pub struct InProcessNode {
    pub assembly: otpd::server::Assembly,
    pub dir: tempfile::TempDir,
}

pub async fn in_process_node() -> InProcessNode {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = otpd::config::Config::default();
    config.node.data_dir = dir.path().to_owned();
    config.otp.resend_cooldown = otpd::config::Dur(Duration::from_millis(0));
    config.otp.max_sends_per_window = u32::MAX;
    // One peer address and a few thousand numbers of one prefix send everything here, many
    // times each: every rate limit stays on (its cost is measured) with a limit never reached.
    let unreachable = otpd::config::RuleConfig { limit: Some(u32::MAX), ..Default::default() };
    let l = &mut config.limits;
    l.sms_budget.daily = Some(1e8);
    // Counted, never refusing: these codes are rarely typed.
    l.conversion_guard.mode = Some(otpd_actors::rules::limits::GuardMode::Record);
    for rule in [
        &mut l.identifier_login,
        &mut l.identifier_register,
        &mut l.identifier_resend,
        &mut l.identifier_verify,
        &mut l.ip_send,
        &mut l.ip_verify,
        &mut l.prefix_send,
    ] {
        *rule = unreachable;
    }
    let assembly = otpd::server::assemble(&config, Arc::new(SystemClock)).await.expect("the node assembles");
    InProcessNode { assembly, dir }
}

/// A request as the front end receives it, with a JSON body.
pub fn post(path: &str, body: &str) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(body.as_bytes())))
        .expect("a valid request")
}

/// The newest code per recipient in an outbox file.
pub fn outbox_codes(path: &std::path::Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let (Some(to), Some(code)) = (v["to"].as_str(), v["code"].as_str())
        {
            out.insert(to.to_owned(), code.to_owned());
        }
    }
    out
}
