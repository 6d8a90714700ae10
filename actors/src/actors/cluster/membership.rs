//! Watches the gateway group and publishes the [`super::View`] requests route by.

use std::sync::Arc;
use std::time::Duration;

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::gateway::GatewayMsg;
use super::ring::Ring;
use super::{GATEWAY_PREFIX, GROUP, Shared, View};

/// The target of this module's log lines, kept as it was before the crate was split into
/// layers: operators filter and query logs by it, whatever folder the module lives in.
const LOG_TARGET: &str = "otpd_actors::cluster::membership";

pub(crate) struct MembershipActor;

/// A departure is acted on after this long, so that a connection ractor_cluster replaces
/// (a duplicate closed while its twin carries on: the peer's actors leave and rejoin within
/// a millisecond) does not flap ownership. A dead node is dropped this much later.
const LEAVE_SETTLE: Duration = Duration::from_millis(100);

/// Group changes arrive as supervision events; a departure schedules a `Refresh`.
pub(crate) enum MembershipMsg {
    Refresh,
}

impl ractor::Message for MembershipMsg {}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::monitor(GROUP.to_owned(), myself.get_cell());
        refresh(&shared);
        Ok(shared)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor(GROUP.to_owned(), myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let MembershipMsg::Refresh = message;
        refresh(shared);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            match &change {
                GroupChangeMessage::Join(_, group, _) if group == GROUP => refresh(shared),
                GroupChangeMessage::Leave(_, group, _) if group == GROUP => {
                    myself.send_after(LEAVE_SETTLE, || MembershipMsg::Refresh);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads the group's members and publishes the view they make.
fn refresh(shared: &Shared) {
    let mut found: Vec<(String, Option<ActorRef<GatewayMsg>>)> = vec![(shared.name.clone(), None)];
    for cell in ractor::pg::get_members(&GROUP.to_owned()) {
        let Some(name) = cell.get_name().and_then(|n| n.strip_prefix(GATEWAY_PREFIX).map(str::to_owned)) else {
            continue;
        };
        if cell.get_id().is_local() {
            continue;
        }
        if found.iter().any(|(n, _)| *n == name) {
            tracing::error!(target: LOG_TARGET, node = %name, "two cluster members share one node name; ignoring the second");
            continue;
        }
        found.push((name, Some(ActorRef::from(cell))));
    }
    let ring = Ring::new(found.iter().map(|(n, _)| n.clone()));
    let gateways =
        ring.members().iter().map(|m| found.iter().find(|(n, _)| n == m).and_then(|(_, g)| g.clone())).collect();
    let members = ring.members().join(",");
    let moved = shared.publish(View { ring, gateways });
    if moved > 0 {
        tracing::info!(target: LOG_TARGET, members = %members, partitions_moved = moved, "cluster membership changed");
    }
}
