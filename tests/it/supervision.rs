//! The supervision tree: a shard that panics is restarted and the node keeps serving.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn a_panicking_shard_is_restarted_and_the_node_keeps_serving() {
    let t = start_node_with(|c| c.engine.shards = 4).await;
    let engine = &t.node.engine;
    let victim = phone(700);
    let victim_id = engine.normalizer().phone(&victim).unwrap();

    // A pending code in the shard that is about to fail, and one in another shard.
    assert_eq!(t.post("/v1/login", json!({ "phone": victim })).await.status, 202);
    let victim_shard = engine.inject_shard_panic(&victim_id);
    let bystander = (701..800)
        .map(phone)
        .find(|p| {
            let id = engine.normalizer().phone(p).unwrap();
            (engine.identifier_hash(&id).shard_bits() % 4) as usize != victim_shard
        })
        .unwrap();

    let mut restarts = 0;
    for _ in 0..500 {
        restarts = engine.shard_restarts().await.unwrap();
        if restarts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(restarts, 1, "the supervisor restarted the shard once");

    // The node serves both shards; the failed shard's challenges were in memory and are gone.
    assert_eq!(t.post("/v1/login", json!({ "phone": bystander })).await.status, 202);
    let r = t.post("/v1/login/verify", json!({ "phone": victim, "code": "123456" })).await;
    assert_eq!((r.status, r.code()), (400, "no_pending_code"), "{}", r.raw);
    t.advance(Duration::from_secs(31));
    assert_eq!(t.post("/v1/login", json!({ "phone": victim })).await.status, 202, "the restarted shard issues codes");
    assert_eq!(t.get("/health/ready", None).await.status, 200);
    let stats = engine.shard_stats().await;
    assert_eq!(stats.len(), 4, "every shard answers");
}
