//! The actors: the supervised tree that holds live challenges, the delivery dispatcher, and
//! the cluster that forwards challenge commands between nodes.
//!
//! * [`supervisor`]: the root actor and the router that finds a challenge's shard;
//! * [`shard`]: a shard of live challenges;
//! * [`dispatch`]: the delivery dispatcher and the provider port its adapters implement;
//! * [`cluster`]: membership, ownership and forwarding across nodes.
//!
//! They run the rules (`crate::rules`) and call the ports (`crate::ports`); they never call
//! the flows above them.

pub mod cluster;
pub mod dispatch;
pub mod shard;
pub mod supervisor;
