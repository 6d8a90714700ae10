//! The actor other nodes send requests to: challenge commands for this node's shards, and the
//! question "whom are you connected to?" that other nodes' dialers ask.
//!
//! Every request is checked before anything in it is believed: its tag ([`wire`]), then, for a
//! challenge command, that it is not a replay ([`super::replay`]). A refused request is
//! answered `Refused` (bound to the request, so its sender can believe the refusal), counted
//! in `otpd_cluster_refused_total`, and logged at most every [`WARN_EVERY`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{Counter, counter};
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::NodeServerMessage;

use super::replay::{ReplayGuard, Verdict};
use super::wire::{self, FrameKeys, Peer, RemoteError, Reply, Request, RequestError};
use super::{GROUP, LOG_TARGET, Shared, node_name};
use crate::actors::shard::ShardCommand;
use crate::actors::supervisor::ShardRouter;
use crate::metrics::{CLUSTER_REFUSED, CLUSTER_SERVED};
use crate::rules::clock::{Clock, Timestamp};

/// What crosses the wire: an encoded [`wire::Request`], answered with an encoded
/// [`wire::Reply`] (see [`wire`]).
pub enum GatewayMsg {
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

const FORWARD: &str = "forward";

/// Refusals are logged at most this often; the counter has every one.
const WARN_EVERY: Duration = Duration::from_secs(10);

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
/// shard never holds up commands for the others; the checks run in the actor, in order.
pub struct GatewayActor;

/// What the gateway is started with.
pub struct GatewayArgs {
    pub(crate) router: Arc<ShardRouter>,
    /// This node's clock: every command runs at its `now`, never at the sender's.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keys: FrameKeys,
    pub(crate) server: ActorRef<NodeServerMessage>,
    pub(crate) shared: Arc<Shared>,
}

pub struct GatewayState {
    args: Arc<GatewayArgs>,
    replays: ReplayGuard,
    served: Counter,
    refused: Counter,
    warned_at: Option<Instant>,
}

impl GatewayState {
    /// Counts a refusal and logs it, at most every [`WARN_EVERY`]. Nothing from the request
    /// is logged: it is not believed.
    fn refuse(&mut self, why: &'static str) {
        self.refused.increment(1);
        if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            self.warned_at = Some(Instant::now());
            tracing::warn!(target: LOG_TARGET, reason = why, "refused a request from the cluster link");
        }
    }
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(GatewayState {
            args: Arc::new(args),
            replays: ReplayGuard::default(),
            served: counter!(CLUSTER_SERVED),
            refused: counter!(CLUSTER_REFUSED),
            warned_at: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let GatewayMsg::Forward(bytes, reply) = message;
        let tag = wire::request_tag(&bytes);
        let args = state.args.clone();
        let answer = |r: Reply| wire::encode_answer(&args.keys, &tag, &r);
        let received = match wire::decode_request(&args.keys, &bytes) {
            Ok(received) => received,
            Err(RequestError::Unauthentic) => {
                state.refuse("its tag did not verify (another cluster key, or altered on the way)");
                let _ = reply.send(answer(Reply::Shard(Err(RemoteError::Refused))));
                return Ok(());
            }
            Err(RequestError::Malformed) => {
                let _ = reply.send(answer(Reply::Shard(Err(RemoteError::Malformed))));
                return Ok(());
            }
        };
        match received.request {
            Request::Shard(cmd) => match state.replays.accept(&received.sender, received.nonce, now_of(&cmd)) {
                Verdict::Fresh => {
                    state.served.increment(1);
                    let cmd = at_our_now(cmd, args.clock.now());
                    tokio::spawn(async move {
                        let result = args.router.run(cmd).await.map_err(RemoteError::Shard);
                        let _ = reply.send(wire::encode_answer(&args.keys, &tag, &Reply::Shard(result)));
                    });
                }
                verdict => {
                    state.refuse(if verdict == Verdict::Replayed { "a replay" } else { "stale (a late replay)" });
                    let _ = reply.send(answer(Reply::Shard(Err(RemoteError::Refused))));
                }
            },
            Request::Peers => {
                tokio::spawn(async move {
                    let peers = connected_members(&args).await;
                    let _ = reply.send(wire::encode_answer(&args.keys, &tag, &Reply::Peers(peers)));
                });
            }
        }
        Ok(())
    }
}

/// When the sender says it sent `cmd` (its own clock): for the replay window only.
fn now_of(cmd: &ShardCommand) -> Timestamp {
    match cmd {
        ShardCommand::Issue { now, .. } | ShardCommand::Verify { now, .. } | ShardCommand::Redeem { now, .. } => *now,
    }
}

/// `cmd` to run at this node's `now`. The owner decides when a code expires and whether it
/// has: a sender's `now`, even an authentic one, would let a node with a wrong clock (or a
/// stolen key) issue codes that never expire or verify codes that have.
fn at_our_now(cmd: ShardCommand, ours: Timestamp) -> ShardCommand {
    match cmd {
        ShardCommand::Issue { key, sealed, profile, .. } => ShardCommand::Issue { key, sealed, profile, now: ours },
        ShardCommand::Verify { key, attempt, .. } => ShardCommand::Verify { key, attempt, now: ours },
        ShardCommand::Redeem { key, nonce, signature_valid, .. } => {
            ShardCommand::Redeem { key, nonce, signature_valid, now: ours }
        }
    }
}

/// The members this node has a connection to, where each says it can be dialed. Only names
/// in the current view count: a connection that has not passed the handshake (or whose
/// gateway has not joined) names nobody another node should dial.
async fn connected_members(args: &GatewayArgs) -> Vec<Peer> {
    let Ok(sessions) = ractor::call_t!(args.server, NodeServerMessage::GetSessions, 1000) else {
        return Vec::new();
    };
    let view = args.shared.view.load();
    let members = view.ring.members();
    let mut peers: Vec<Peer> = sessions
        .into_values()
        .filter_map(|s| s.peer_name)
        .map(|p| Peer { name: node_name(&p.name).to_owned(), address: p.connection_string })
        .filter(|p| p.name != args.shared.name && members.contains(&p.name))
        .collect();
    peers.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
    peers.dedup();
    peers
}

#[cfg(test)]
mod tests {
    use arc_swap::ArcSwap;
    use metrics::{gauge, histogram};

    use super::*;
    use crate::actors::cluster::View;
    use crate::actors::shard::{ChallengeKey, ShardActor, ShardAnswer, ShardConfig};
    use crate::actors::supervisor::ShardError;
    use crate::rules::challenge::{Purpose, VerifyOutcome};
    use crate::rules::clock::ManualClock;
    use crate::rules::code::{Alphabet, CodePolicy, Sealed};
    use crate::rules::keys::{IdentHash, Keys};

    fn keys(cookie: &[u8]) -> FrameKeys {
        FrameKeys::derive(&[3; 32], cookie)
    }

    const COOKIE: &[u8] = b"the-cookie-of-this-test-cluster-0123456789";

    /// A gateway on a router with no shard running, so a request it runs is answered
    /// `ShardUnavailable`: enough to tell "ran" from "refused".
    async fn gateway() -> (ActorRef<GatewayMsg>, ractor::ActorCell) {
        let router = Arc::new(ShardRouter::new(1, Duration::from_millis(100)));
        gateway_on(router, Arc::new(ManualClock::new(Timestamp::from_millis(0)))).await
    }

    async fn gateway_on(router: Arc<ShardRouter>, clock: Arc<dyn Clock>) -> (ActorRef<GatewayMsg>, ractor::ActorCell) {
        let server =
            ractor_cluster::NodeServer::new(0, "c".repeat(40), "gw-test".into(), "127.0.0.1".into(), None, None)
                .with_listen_addr([127, 0, 0, 1].into());
        let (server, _) = Actor::spawn(None, server, ()).await.unwrap();
        let shared = Arc::new(Shared {
            name: "gw-test".into(),
            view: ArcSwap::from_pointee(View::alone("gw-test")),
            keys: keys(COOKIE),
            forward_timeout: Duration::from_secs(1),
            members_gauge: gauge!("test_members"),
            owned_gauge: gauge!("test_owned"),
            forwarded: ["a", "b", "c", "d"].map(|o| counter!("test_forwarded", "outcome" => o)),
            forward_duration: histogram!("test_forward_duration"),
        });
        let args = GatewayArgs { router, clock, keys: keys(COOKIE), server: server.clone(), shared };
        let (gateway, _) = Actor::spawn(None, GatewayActor, args).await.unwrap();
        (gateway, server.get_cell())
    }

    async fn send(gateway: &ActorRef<GatewayMsg>, bytes: Vec<u8>) -> Vec<u8> {
        match gateway.call(|reply| GatewayMsg::Forward(bytes, reply), Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            other => panic!("no answer: {other:?}"),
        }
    }

    fn issue(now: u64) -> Request {
        Request::Shard(ShardCommand::Issue {
            key: ChallengeKey { subject: IdentHash([1; 16]), purpose: Purpose::Login },
            sealed: Sealed { salt: [2; 16], digest: [3; 16] },
            profile: None,
            now: Timestamp::from_millis(now),
        })
    }

    #[tokio::test]
    async fn a_forwarded_command_runs_at_the_owners_clock_never_at_the_senders() {
        let owner_now = Timestamp::from_millis(1_790_000_000_000);
        let clock = Arc::new(ManualClock::new(owner_now));
        let router = Arc::new(ShardRouter::new(1, Duration::from_secs(1)));
        let shard_keys = Arc::new(Keys::from_master(&[5; 32]));
        let shard = ShardActor { config: ShardConfig::default(), keys: shard_keys.clone(), clock: clock.clone() };
        let (shard, _) = Actor::spawn(None, shard, 0).await.unwrap();
        router.set(0, shard.clone());
        let (gateway, server) = gateway_on(router, clock).await;
        let ours = keys(COOKIE);
        let key = ChallengeKey { subject: IdentHash([1; 16]), purpose: Purpose::Login };
        let code = CodePolicy::new(6, Alphabet::Numeric).unwrap().generate();

        // The sender stamps its request an hour back: issued then, the code would be dead.
        let an_hour_ago = Timestamp::from_millis(owner_now.as_millis() - 3_600_000);
        let sealed = Sealed::seal(&shard_keys, &code);
        let issue = Request::Shard(ShardCommand::Issue { key, sealed, profile: None, now: an_hour_ago });
        let framed = wire::encode_request(&ours, "otpd-1", [1; 16], &issue);
        let answer = wire::decode_answer(&ours, &framed.tag, &send(&gateway, framed.bytes).await);
        let expected = owner_now.plus(ShardConfig::DEFAULT.lifetime);
        assert_eq!(answer, Ok(Reply::Shard(Ok(ShardAnswer::Issued(expected, false)))), "expiry from the owner's now");

        // Then a day ahead: checked then, the code would have expired. The owner's clock says
        // it has not, and that is what counts.
        let tomorrow = owner_now.plus(Duration::from_secs(86_400));
        let verify = Request::Shard(ShardCommand::Verify { key, attempt: code, now: tomorrow });
        let framed = wire::encode_request(&ours, "otpd-1", [2; 16], &verify);
        let answer = wire::decode_answer(&ours, &framed.tag, &send(&gateway, framed.bytes).await);
        assert_eq!(answer, Ok(Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Verified, None)))));

        gateway.stop(None);
        shard.stop(None);
        server.stop(None);
    }

    #[tokio::test]
    async fn the_gateway_runs_an_authentic_request_once_and_refuses_the_rest() {
        let (gateway, server) = gateway().await;
        let ours = keys(COOKIE);
        let ran = Reply::Shard(Err(RemoteError::Shard(ShardError::Unavailable)));
        let refused = Reply::Shard(Err(RemoteError::Refused));

        let first = wire::encode_request(&ours, "otpd-1", [1; 16], &issue(1_000_000));
        assert_eq!(wire::decode_answer(&ours, &first.tag, &send(&gateway, first.bytes.clone()).await), Ok(ran.clone()));
        // The same bytes again, as someone on the link would replay them.
        assert_eq!(
            wire::decode_answer(&ours, &first.tag, &send(&gateway, first.bytes.clone()).await),
            Ok(refused.clone())
        );
        // A fresh nonce but far older than what otpd-1 sent last: stale.
        let old = wire::encode_request(&ours, "otpd-1", [2; 16], &issue(1_000_000 - 61_000));
        assert_eq!(wire::decode_answer(&ours, &old.tag, &send(&gateway, old.bytes).await), Ok(refused.clone()));
        // One bit flipped (in the `now`): refused, and the refusal is bound to the request.
        let fresh = wire::encode_request(&ours, "otpd-1", [3; 16], &issue(1_000_001));
        let mut altered = fresh.bytes.clone();
        altered[45] ^= 0x10;
        assert_eq!(wire::decode_answer(&ours, &fresh.tag, &send(&gateway, altered).await), Ok(refused.clone()));
        // The untouched request still runs: the altered copy was not remembered.
        assert_eq!(wire::decode_answer(&ours, &fresh.tag, &send(&gateway, fresh.bytes).await), Ok(ran.clone()));
        // A node with the right cookie but another hash key: refused.
        let theirs = FrameKeys::derive(&[4; 32], COOKIE);
        let foreign = wire::encode_request(&theirs, "otpd-9", [4; 16], &issue(1_000_002));
        let answer = send(&gateway, foreign.bytes).await;
        assert_eq!(wire::decode_answer(&ours, &foreign.tag, &answer), Ok(refused));
        assert_eq!(wire::decode_answer(&theirs, &foreign.tag, &answer), Err(wire::AnswerError::Unauthentic));
        // Garbage shorter than a tag: refused, no panic.
        let answer = send(&gateway, vec![2, 0, 1]).await;
        assert!(wire::decode_answer(&ours, &[0; 32], &answer).is_ok());
        // Who it is connected to: nobody yet.
        let peers = wire::encode_request(&ours, "otpd-1", [5; 16], &Request::Peers);
        assert_eq!(
            wire::decode_answer(&ours, &peers.tag, &send(&gateway, peers.bytes).await),
            Ok(Reply::Peers(vec![]))
        );

        gateway.stop(None);
        server.stop(None);
    }
}
