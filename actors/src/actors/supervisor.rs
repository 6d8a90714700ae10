//! The supervision tree and the router that finds a challenge's shard.
//!
//! ```text
//! EngineSupervisor (root; one per node)
//!  ├── ShardActor 0     ┐
//!  ├── ShardActor 1     │ challenges of the identifiers whose hash picks this shard
//!  ├── …                │ (IdentHash::shard_bits() % shard_count)
//!  ├── ShardActor N-1   ┘
//!  └── DispatcherActor    delivery: queue, batches, retries, breakers, failover
//!                         (when the notifier is the dispatcher; see crate::actors::dispatch)
//! ```
//!
//! A dispatcher that fails is restarted the same way; the new actor adopts every message the
//! old one held (they live in the dispatcher's shared ledger, not in the actor), so a crash
//! delays deliveries but loses none.
//!
//! A shard that fails (a panic in a handler, or an error returned from one) is restarted with
//! the same index by [`EngineSupervisor::handle_supervisor_evt`], which then points the
//! router's slot at the new actor. The challenges the failed shard held are lost (they live
//! only in memory; users ask for a new code); every other shard keeps serving throughout.
//! Calls that were waiting on the failed shard get `ShardError::Unavailable` and are retried
//! once on its successor.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::actors::dispatch::{DispatcherActor, DispatcherMsg};
use crate::actors::shard::{ShardActor, ShardAnswer, ShardCommand, ShardMsg, ShardStats};

/// The target of this module's log lines, kept as it was before the crate was split into
/// layers: operators filter and query logs by it, whatever folder the module lives in.
const LOG_TARGET: &str = "otpd_actors::supervisor";

/// Why a shard call did not produce an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("challenge shard did not answer in time")]
    Timeout,
    #[error("challenge shard is restarting")]
    Unavailable,
}

/// Maps an identifier hash to the current actor of its shard.
pub struct ShardRouter {
    slots: Vec<ArcSwapOption<ActorRef<ShardMsg>>>,
    timeout: Duration,
}

impl ShardRouter {
    pub fn new(count: usize, timeout: Duration) -> Self {
        ShardRouter { slots: (0..count.max(1)).map(|_| ArcSwapOption::empty()).collect(), timeout }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn index_for(&self, shard_bits: u64) -> usize {
        (shard_bits % self.slots.len() as u64) as usize
    }

    pub(crate) fn set(&self, index: usize, actor: ActorRef<ShardMsg>) {
        self.slots[index].store(Some(Arc::new(actor)));
    }

    pub fn actor(&self, index: usize) -> Option<ActorRef<ShardMsg>> {
        self.slots[index].load_full().map(|a| (*a).clone())
    }

    /// Sends a request to shard `index` and waits (at most the router's timeout) for the
    /// answer. If the shard died, waits briefly for its successor and tries once more.
    pub async fn call<T, F>(&self, index: usize, build: F) -> Result<T, ShardError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<T>) -> ShardMsg,
    {
        let first = self.actor(index).ok_or(ShardError::Unavailable)?;
        match self.call_once(&first, &build).await {
            Err(ShardError::Unavailable) => {}
            other => return other,
        }
        // The shard failed while we were talking to it; its restart takes well under a
        // millisecond, so poll briefly for a new actor in the slot.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if let Some(next) = self.actor(index).filter(|a| a.get_id() != first.get_id()) {
                return self.call_once(&next, &build).await;
            }
        }
        Err(ShardError::Unavailable)
    }

    async fn call_once<T, F>(&self, actor: &ActorRef<ShardMsg>, build: &F) -> Result<T, ShardError>
    where
        T: Send + 'static,
        F: Fn(RpcReplyPort<T>) -> ShardMsg,
    {
        match actor.call(build, Some(self.timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(ShardError::Timeout),
            Ok(CallResult::SenderError) | Err(_) => Err(ShardError::Unavailable),
        }
    }

    /// Runs a challenge command on the local shard of its key.
    pub async fn run(&self, cmd: ShardCommand) -> Result<ShardAnswer, ShardError> {
        let index = self.index_for(cmd.key().subject.shard_bits());
        match cmd {
            ShardCommand::Issue { key, sealed, profile, now } => self
                .call(index, |reply| ShardMsg::Issue { key, sealed, profile: profile.clone(), now, reply })
                .await
                .map(|(expires_at, registration)| ShardAnswer::Issued(expires_at, registration)),
            ShardCommand::Verify { key, attempt, now } => self
                .call(index, |reply| ShardMsg::Verify { key, attempt: attempt.clone(), now, reply })
                .await
                .map(|(outcome, profile)| ShardAnswer::Checked(outcome, profile)),
            ShardCommand::Redeem { key, nonce, signature_valid, now } => self
                .call(index, |reply| ShardMsg::Redeem { key, nonce, signature_valid, now, reply })
                .await
                .map(|outcome| ShardAnswer::Checked(outcome, None)),
        }
    }

    /// Stats of every shard (skipping any that is restarting).
    pub async fn stats(&self) -> Vec<ShardStats> {
        let mut out = Vec::with_capacity(self.slots.len());
        for i in 0..self.slots.len() {
            if let Ok(s) = self.call(i, |reply| ShardMsg::Stats { reply }).await {
                out.push(s);
            }
        }
        out
    }
}

pub enum SupervisorMsg {
    /// How many shard restarts the supervisor has performed.
    Restarts { reply: RpcReplyPort<u64> },
}

// Local only: the cluster feature of ractor asks every message type to say whether it
// can cross nodes; this one never does.
impl ractor::Message for SupervisorMsg {}

/// The root of the tree.
pub struct EngineSupervisor;

pub struct SupervisorArgs {
    pub shard: ShardActor,
    pub router: Arc<ShardRouter>,
    /// The delivery dispatcher to run beside the shards, if the notifier has one.
    pub dispatcher: Option<DispatcherActor>,
}

pub struct SupervisorState {
    shard: ShardActor,
    router: Arc<ShardRouter>,
    restarts: u64,
    dispatcher: Option<(DispatcherActor, ActorRef<DispatcherMsg>)>,
}

impl Actor for EngineSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        for index in 0..args.router.len() {
            let (actor, _) = Actor::spawn_linked(None, args.shard.clone(), index, myself.get_cell()).await?;
            args.router.set(index, actor);
        }
        let dispatcher = match args.dispatcher {
            Some(d) => {
                let (actor, _) = Actor::spawn_linked(None, d.clone(), (), myself.get_cell()).await?;
                Some((d, actor))
            }
            None => None,
        };
        Ok(SupervisorState { shard: args.shard, router: args.router, restarts: 0, dispatcher })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restarts { reply } => {
                let _ = reply.send(state.restarts);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                tracing::error!(target: LOG_TARGET, actor = %cell.get_id(), %reason, "engine actor failed; restarting it");
                self.restart(&myself, cell, state).await?;
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // Shards only stop on their own when the node shuts down, which stops the
                // supervisor first; anything else is a failure to repair.
                tracing::warn!(target: LOG_TARGET, actor = %cell.get_id(), ?reason, "engine actor stopped; restarting it");
                self.restart(&myself, cell, state).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

impl EngineSupervisor {
    async fn restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        cell: ActorCell,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((dispatcher, current)) = &mut state.dispatcher
            && current.get_id() == cell.get_id()
        {
            let (actor, _) = Actor::spawn_linked(None, dispatcher.clone(), (), myself.get_cell()).await?;
            *current = actor;
            crate::metrics::actor_restarted("dispatcher");
            tracing::info!(target: LOG_TARGET, "delivery dispatcher restarted");
            return Ok(());
        }
        let index =
            (0..state.router.len()).find(|&i| state.router.actor(i).is_some_and(|a| a.get_id() == cell.get_id()));
        let Some(index) = index else {
            return Ok(());
        };
        let (actor, _) = Actor::spawn_linked(None, state.shard.clone(), index, myself.get_cell()).await?;
        state.router.set(index, actor);
        state.restarts += 1;
        crate::metrics::actor_restarted("shard");
        tracing::info!(target: LOG_TARGET, shard = index, restarts = state.restarts, "challenge shard restarted");
        Ok(())
    }
}
