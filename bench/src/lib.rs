//! Shared set-up for the criterion benchmarks in `benches/`: the pieces of the hot path,
//! assembled the way a node assembles them.

use std::sync::Arc;
use std::time::Duration;

use otpd_actors::clock::SystemClock;
use otpd_actors::keys::Keys;
use otpd_actors::shard::{ShardActor, ShardConfig};
use otpd_actors::supervisor::{EngineSupervisor, ShardRouter, SupervisorArgs};

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
) -> (ractor::ActorRef<otpd_actors::supervisor::SupervisorMsg>, tokio::task::JoinHandle<()>) {
    ractor::Actor::spawn(None, EngineSupervisor, SupervisorArgs { shard, router }).await.expect("the tree starts")
}

/// An Ed25519 PKCS#8 signing key, generated fresh.
pub fn ed25519_pkcs8() -> Vec<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("key generation").as_ref().to_vec()
}
