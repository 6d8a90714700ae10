//! The actor other nodes send challenge commands to.

use std::sync::Arc;

use metrics::counter;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::GROUP;
use super::wire::{self, RemoteError};
use crate::actors::supervisor::ShardRouter;
use crate::metrics::CLUSTER_SERVED;

/// What crosses the wire: an encoded [`crate::actors::shard::ShardCommand`], answered with an encoded
/// `Result<ShardAnswer, RemoteError>` (see [`wire`]).
pub enum GatewayMsg {
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

const FORWARD: &str = "forward";

impl ractor::Message for GatewayMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            GatewayMsg::Forward(args, reply) => {
                Ok(SerializedMessage::Call { variant: FORWARD.to_owned(), args, reply, metadata: None })
            }
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Call { variant, args, reply, .. } if variant == FORWARD => {
                Ok(GatewayMsg::Forward(args, reply))
            }
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// Runs forwarded commands on this node's shards. It hands each one to a task, so a slow
/// shard never holds up commands for the others.
pub struct GatewayActor;

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = Arc<ShardRouter>;
    type Arguments = Arc<ShardRouter>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        router: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(router)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        router: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Forward(bytes, reply) = message;
        counter!(CLUSTER_SERVED).increment(1);
        let router = router.clone();
        tokio::spawn(async move {
            let answer = match wire::decode_command(&bytes) {
                Some(cmd) => router.run(cmd).await.map_err(RemoteError::Shard),
                None => Err(RemoteError::Malformed),
            };
            let _ = reply.send(wire::encode_answer(&answer));
        });
        Ok(())
    }
}
