//! Several nodes sharing one population: membership, ownership and forwarding.
//!
//! ```text
//!            node A                                   node B
//!  HTTP → Engine::on_owner(cmd) ── owner is B? ──→ GatewayActor(B) ──→ local shard
//!            │ owner is A                           (cmd as bytes, over ractor_cluster)
//!            └────────→ local shard
//! ```
//!
//! * Nodes connect with `ractor_cluster` (cookie handshake; mutual TLS whenever the link
//!   leaves the host, which the configuration enforces) through the seeds. Every connection
//!   this node opens is opened by its own dialer, over TLS when TLS is configured: ractor_cluster's
//!   transitive mode would dial the peers it hears of in plaintext whatever the listener's
//!   encryption (`node_session.rs`, `NodeSessions`, calls `client::connect`), so the node server
//!   runs `Isolated`, and every `reconnect_interval` the dialer asks each member's gateway whom
//!   it is connected to ([`wire::Request::Peers`]) and dials the seeds and members it is not
//!   connected to. One live seed is enough to meet every member.
//! * Each node runs one [`gateway::GatewayActor`], named `otpd-gateway:<node name>` and
//!   joined to the process group [`GROUP`]; the group, kept in step by ractor_cluster, is the
//!   membership. The `membership::MembershipActor` watches it and publishes a new
//!   [`View`] (a [`ring::Ring`] of the member names plus a handle on each gateway) whenever
//!   it changes; requests read the view without a lock.
//! * A challenge command for an identifier whose partition another node owns is encoded and
//!   authenticated ([`wire`]: a keyed BLAKE3 tag over the request, another over the answer and
//!   the request's tag) and sent to that node's gateway, which refuses what does not verify or
//!   replays an earlier request ([`replay`]), and runs the rest on its local shard. The
//!   gateway serves whatever it is sent, even if it no longer thinks it owns the partition:
//!   during a membership change nodes can disagree for a moment, and bouncing requests
//!   between them would be worse than serving them once.
//! * A node that dies closes its connections; ractor_cluster removes its gateway from the
//!   group on every survivor, and the survivors' rings give its partitions to the next
//!   highest weights. Challenges it held are gone (see docs/decisions/2026-11-21-one-owner-per-identifier.md).

pub mod gateway;
mod membership;
pub mod replay;
pub mod ring;
pub mod wire;

/// The node library itself, for tests that talk to a node as a peer would.
pub use ractor_cluster;
/// The TLS types [`ClusterTls`] is made of, for callers that build them.
pub use tokio_rustls;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use parking_lot::Mutex;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};

use crate::actors::shard::{ShardAnswer, ShardCommand};
use crate::actors::supervisor::ShardRouter;
use crate::metrics::{CLUSTER_FORWARD_DURATION, CLUSTER_FORWARDED, CLUSTER_MEMBERS, CLUSTER_PARTITIONS_OWNED};
use crate::rules::clock::Clock;
use crate::rules::keys::IdentHash;

use gateway::{GatewayActor, GatewayArgs, GatewayMsg};
use membership::MembershipActor;
use ring::Ring;
use wire::{AnswerError, FrameKeys, Peer, RemoteError, Reply, Request};

/// The target of this module's log lines, kept as it was before the crate was split into
/// layers: operators filter and query logs by it, whatever folder the module lives in.
const LOG_TARGET: &str = "otpd_actors::cluster";

/// The process group every node's gateway joins.
pub const GROUP: &str = "otpd.gateways";
/// Gateway actors are named this plus the node name.
pub const GATEWAY_PREFIX: &str = "otpd-gateway:";

/// TLS between nodes: what accepts peers and what dials them.
#[derive(Clone)]
pub struct ClusterTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

/// How this node joins its cluster (from `[cluster]` of the configuration).
#[derive(Clone)]
pub struct ClusterSettings {
    pub node_name: String,
    pub listen: SocketAddr,
    /// Host the other nodes dial this one at.
    pub advertise_host: String,
    pub seeds: Vec<String>,
    pub cookie: String,
    /// What every forwarded request and answer is authenticated with (from the cookie and
    /// `secrets.hash_key`: [`FrameKeys::derive`]).
    pub keys: FrameKeys,
    pub forward_timeout: Duration,
    pub reconnect_interval: Duration,
    pub tls: Option<ClusterTls>,
}

/// Why the node could not join.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(String);

impl ClusterError {
    pub(crate) fn already_joined() -> Self {
        ClusterError("this engine already joined a cluster".into())
    }
}

/// Why a forwarded command got no answer. The engine matches on the variant (it retries
/// only `OwnerLeft`, on the key's next owner) and maps each to its error in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// The owner did not answer within `forward_timeout`.
    #[error("owner {owner} did not answer: timed out")]
    Timeout { owner: String },
    /// The owner's gateway went away while we waited: it left the cluster (or its connection
    /// closed). Its partitions go to other members, so the command can be sent again.
    #[error("owner {owner} did not answer: left the cluster")]
    OwnerLeft { owner: String },
    /// The owner answered with a failure of its own shard, or with bytes we could not read.
    #[error("owner {owner}: {error}")]
    Remote { owner: String, error: RemoteError },
    /// The owner's answer did not authenticate (for this request, under this cluster's keys),
    /// or the owner refused our request as not authentic or a replay: nothing it said is
    /// believed.
    #[error("owner {owner}: {why}")]
    Refused { owner: String, why: &'static str },
}

impl ForwardError {
    /// Whether the owner could not be reached at all (as opposed to answering with a failure).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ForwardError::Timeout { .. } | ForwardError::OwnerLeft { .. })
    }
}

/// The members as one node sees them, and how to reach each.
pub struct View {
    pub ring: Ring,
    /// The gateway of each member, by index; `None` for this node.
    gateways: Vec<Option<ActorRef<GatewayMsg>>>,
}

impl View {
    fn alone(name: &str) -> View {
        View { ring: Ring::new([name]), gateways: vec![None] }
    }
}

/// Where a command runs.
pub enum Route {
    Local,
    Remote { owner: String, gateway: ActorRef<GatewayMsg> },
}

/// What `/health/ready` and the admin API show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node: String,
    pub members: Vec<String>,
    pub partitions_owned: usize,
}

pub(crate) struct Shared {
    name: String,
    view: ArcSwap<View>,
    keys: FrameKeys,
    forward_timeout: Duration,
    members_gauge: Gauge,
    owned_gauge: Gauge,
    forwarded: [Counter; 4],
    forward_duration: Histogram,
}

/// Why [`Shared::ask`] got no answer it believes.
enum Asked {
    Timeout,
    /// The gateway went away while we waited.
    Gone,
    Answer(AnswerError),
}

impl Shared {
    /// Sends one authenticated request to `gateway` (with a fresh random nonce) and reads the
    /// answer bound to it.
    async fn ask(&self, gateway: &ActorRef<GatewayMsg>, request: &Request) -> Result<Reply, Asked> {
        let framed = wire::encode_request(&self.keys, &self.name, rand::random(), request);
        let tag = framed.tag;
        match gateway.call(|reply| GatewayMsg::Forward(framed.bytes, reply), Some(self.forward_timeout)).await {
            Ok(CallResult::Success(answer)) => wire::decode_answer(&self.keys, &tag, &answer).map_err(Asked::Answer),
            Ok(CallResult::Timeout) => Err(Asked::Timeout),
            Ok(CallResult::SenderError) | Err(_) => Err(Asked::Gone),
        }
    }

    /// Publishes a new view and its gauges; returns how many partitions changed owner.
    fn publish(&self, view: View) -> usize {
        let moved = self.view.load().ring.moved_to(&view.ring);
        self.members_gauge.set(view.ring.members().len() as f64);
        self.owned_gauge.set(view.ring.owned_by(&self.name) as f64);
        self.view.store(Arc::new(view));
        moved
    }
}

/// A running cluster membership: the handle the engine routes through.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    actors: Arc<Mutex<Vec<ActorCell>>>,
    dialer: Arc<tokio::task::JoinHandle<()>>,
}

/// Label values of [`CLUSTER_FORWARDED`], indexed by `OK`, `UNREACHABLE`, `ERROR`, `REFUSED`.
const FORWARD_OUTCOMES: [&str; 4] = ["ok", "unreachable", "error", "refused"];
const OK: usize = 0;
const UNREACHABLE: usize = 1;
const ERROR: usize = 2;
const REFUSED: usize = 3;

impl Cluster {
    /// Starts the node server, this node's gateway and the membership watcher, and begins
    /// dialing the seeds. Returns once the listener is bound (peers may join later).
    /// `clock` is the engine's: the gateway runs the commands other nodes send at its `now`.
    pub async fn start(
        settings: ClusterSettings,
        router: Arc<ShardRouter>,
        clock: Arc<dyn Clock>,
    ) -> Result<Cluster, ClusterError> {
        let shared = Arc::new(Shared {
            name: settings.node_name.clone(),
            view: ArcSwap::from_pointee(View::alone(&settings.node_name)),
            keys: settings.keys.clone(),
            forward_timeout: settings.forward_timeout,
            members_gauge: gauge!(CLUSTER_MEMBERS),
            owned_gauge: gauge!(CLUSTER_PARTITIONS_OWNED),
            forwarded: FORWARD_OUTCOMES.map(|o| counter!(CLUSTER_FORWARDED, "outcome" => o)),
            forward_duration: histogram!(CLUSTER_FORWARD_DURATION),
        });
        shared.publish(View::alone(&settings.node_name));

        // The listener must be bound before we return, so that a bind failure stops the node
        // and tests know the port is live.
        let probe = std::net::TcpListener::bind(settings.listen)
            .map_err(|e| ClusterError(format!("cannot listen on {}: {e}", settings.listen)))?;
        drop(probe);
        let advertise = if settings.advertise_host.is_empty() {
            settings.listen.ip().to_string()
        } else {
            settings.advertise_host.clone()
        };
        let encryption = settings.tls.as_ref().map(|t| ractor_cluster::IncomingEncryptionMode::Tls(t.acceptor.clone()));
        let server = NodeServer::new(
            settings.listen.port(),
            settings.cookie.clone(),
            settings.node_name.clone(),
            advertise.clone(),
            encryption,
            // Not `Transitive`: its dials are plaintext (see the module doc); `dial` does it.
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(settings.listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| ClusterError(format!("cannot start the node server: {e}")))?;
        let gateway_args =
            GatewayArgs { router, clock, keys: settings.keys.clone(), server: server.clone(), shared: shared.clone() };
        let (gateway, _) =
            Actor::spawn(Some(format!("{GATEWAY_PREFIX}{}", settings.node_name)), GatewayActor, gateway_args)
                .await
                .map_err(|e| ClusterError(format!("cannot start the gateway: {e}")))?;
        let (membership, _) = Actor::spawn(None, MembershipActor, shared.clone())
            .await
            .map_err(|e| ClusterError(format!("cannot start the membership watcher: {e}")))?;
        wait_listening(settings.listen).await?;

        let own = format!("{advertise}:{}", settings.listen.port());
        let dialer = tokio::spawn(dial(server.clone(), shared.clone(), settings, own));
        tracing::info!(target: LOG_TARGET, node = %shared.name, "cluster node started");
        Ok(Cluster {
            shared,
            actors: Arc::new(Mutex::new(vec![membership.get_cell(), gateway.get_cell(), server.get_cell()])),
            dialer: Arc::new(dialer),
        })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.name
    }

    /// Where the challenge of `subject` lives now.
    pub fn route(&self, subject: &IdentHash) -> Route {
        let view = self.shared.view.load();
        let owner = view.ring.owner_index(ring::partition_of(subject));
        match &view.gateways[owner] {
            None => Route::Local,
            Some(gateway) => Route::Remote { owner: view.ring.members()[owner].clone(), gateway: gateway.clone() },
        }
    }

    /// Runs `cmd` on `owner`'s gateway.
    pub async fn forward(
        &self,
        owner: &str,
        gateway: &ActorRef<GatewayMsg>,
        cmd: &ShardCommand,
    ) -> Result<ShardAnswer, ForwardError> {
        let started = Instant::now();
        let owner_name = || owner.to_owned();
        let result = match self.shared.ask(gateway, &Request::Shard(cmd.clone())).await {
            Ok(Reply::Shard(Ok(answer))) => Ok(answer),
            Ok(Reply::Shard(Err(RemoteError::Refused))) => {
                Err(ForwardError::Refused { owner: owner_name(), why: "it refused our request as not authentic" })
            }
            Ok(Reply::Shard(Err(error))) => Err(ForwardError::Remote { owner: owner_name(), error }),
            Ok(Reply::Peers(_)) | Err(Asked::Answer(AnswerError::Malformed)) => {
                Err(ForwardError::Remote { owner: owner_name(), error: RemoteError::Malformed })
            }
            Err(Asked::Answer(AnswerError::Unauthentic)) => {
                Err(ForwardError::Refused { owner: owner_name(), why: "its answer did not authenticate" })
            }
            Err(Asked::Timeout) => Err(ForwardError::Timeout { owner: owner_name() }),
            Err(Asked::Gone) => Err(ForwardError::OwnerLeft { owner: owner_name() }),
        };
        self.shared.forward_duration.record(started.elapsed());
        let outcome = match &result {
            Ok(_) => OK,
            Err(e) if e.is_unreachable() => UNREACHABLE,
            Err(ForwardError::Refused { .. }) => REFUSED,
            Err(_) => ERROR,
        };
        self.shared.forwarded[outcome].increment(1);
        result
    }

    /// Waits (at most `limit`) for the owner of `subject` to be someone other than `owner`.
    pub async fn wait_for_new_owner(&self, subject: &IdentHash, owner: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let view = self.shared.view.load();
            if view.ring.owner(ring::partition_of(subject)) != owner {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let view = self.shared.view.load();
        ClusterStatus {
            node: self.shared.name.clone(),
            members: view.ring.members().to_vec(),
            partitions_owned: view.ring.owned_by(&self.shared.name),
        }
    }

    /// Leaves the cluster: stops dialing, then the membership watcher, the gateway and the
    /// node server (which closes every connection, so peers see this node leave at once).
    pub async fn stop(&self) {
        self.dialer.abort();
        let actors = std::mem::take(&mut *self.actors.lock());
        for actor in actors {
            let _ = actor.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        }
    }
}

/// Registers the cluster metrics of a node that runs alone: one member, every partition
/// (and nothing forwarded), so dashboards read the same series with or without a cluster.
pub fn record_standalone() {
    gauge!(CLUSTER_MEMBERS).set(1.0);
    gauge!(CLUSTER_PARTITIONS_OWNED).set(ring::PARTITIONS as f64);
    for outcome in FORWARD_OUTCOMES {
        counter!(CLUSTER_FORWARDED, "outcome" => outcome).increment(0);
    }
    counter!(crate::metrics::CLUSTER_SERVED).increment(0);
    counter!(crate::metrics::CLUSTER_REFUSED).increment(0);
    let _ = histogram!(CLUSTER_FORWARD_DURATION);
}

/// Waits until the node server's listener accepts connections.
async fn wait_listening(listen: SocketAddr) -> Result<(), ClusterError> {
    let target = if listen.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(target).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(ClusterError(format!("the node server did not listen on {listen}")))
}

/// Dials, every `reconnect_interval` for as long as the node runs, every seed and every member
/// it is not connected to: a seed that was down at start, a peer that restarted, and members
/// it has only heard of (from the gateways of the members it is connected to) are joined when
/// they can be. Every dial is TLS when TLS is configured.
async fn dial(server: ActorRef<NodeServerMessage>, shared: Arc<Shared>, settings: ClusterSettings, own: String) {
    let seeds: Vec<String> = settings.seeds.iter().filter(|s| **s != own).cloned().collect();
    let mut interval = tokio::time::interval(settings.reconnect_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else { continue };
        let (mut names, mut addresses) = (HashSet::new(), HashSet::new());
        for peer in sessions.into_values().filter_map(|s| s.peer_name) {
            names.insert(node_name(&peer.name).to_owned());
            addresses.insert(peer.connection_string);
        }
        let mut targets: BTreeSet<String> = seeds.iter().filter(|s| !addresses.contains(*s)).cloned().collect();
        for peer in heard_of(&shared).await {
            if peer.name != shared.name && peer.address != own && !names.contains(&peer.name) {
                targets.insert(peer.address);
            }
        }
        for target in targets {
            match connect(&server, &target, settings.tls.as_ref()).await {
                Ok(()) => tracing::info!(target: LOG_TARGET, peer = %target, "dialed cluster peer"),
                Err(e) => tracing::debug!(target: LOG_TARGET, peer = %target, error = %e, "cluster peer not reachable"),
            }
        }
    }
}

/// A node's name as otpd knows it, from the name ractor_cluster gives its session
/// (`<node name>@<advertised host>`; node names hold no `@`).
pub(crate) fn node_name(session_name: &str) -> &str {
    session_name.split_once('@').map_or(session_name, |(name, _)| name)
}

/// The members that the members this node sees are connected to, asked of all at once.
async fn heard_of(shared: &Arc<Shared>) -> Vec<Peer> {
    let mut asks = tokio::task::JoinSet::new();
    for gateway in shared.view.load().gateways.iter().flatten() {
        let (shared, gateway) = (shared.clone(), gateway.clone());
        asks.spawn(async move { shared.ask(&gateway, &Request::Peers).await });
    }
    let mut out = Vec::new();
    while let Some(answer) = asks.join_next().await {
        if let Ok(Ok(Reply::Peers(peers))) = answer {
            out.extend(peers);
        }
    }
    out
}

/// Opens one connection to `address` (`host:port`): TLS with the host as the server name when
/// `tls` is set, plaintext otherwise.
async fn connect(server: &ActorRef<NodeServerMessage>, address: &str, tls: Option<&ClusterTls>) -> Result<(), String> {
    let Some(tls) = tls else {
        return ractor_cluster::client_connect(server, address).await.map_err(|e| e.to_string());
    };
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = rustls_pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
    ractor_cluster::client_connect_enc(server, address, tls.connector.clone(), name).await.map_err(|e| e.to_string())
}
