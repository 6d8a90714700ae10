//! Several nodes sharing one population: membership, ownership and forwarding.
//!
//! ```text
//!            node A                                   node B
//!  HTTP → Engine::on_owner(cmd) ── owner is B? ──→ GatewayActor(B) ──→ local shard
//!            │ owner is A                           (cmd as bytes, over ractor_cluster)
//!            └────────→ local shard
//! ```
//!
//! * Nodes connect with `ractor_cluster` (cookie handshake, optional TLS) through the seeds;
//!   connections are transitive, so one live seed is enough. A task re-dials seeds that are
//!   not connected every `reconnect_interval`.
//! * Each node runs one [`gateway::GatewayActor`], named `otpd-gateway:<node name>` and
//!   joined to the process group [`GROUP`]; the group, kept in step by ractor_cluster, is the
//!   membership. The `membership::MembershipActor` watches it and publishes a new
//!   [`View`] (a [`ring::Ring`] of the member names plus a handle on each gateway) whenever
//!   it changes; requests read the view without a lock.
//! * A challenge command for an identifier whose partition another node owns is encoded
//!   ([`wire`]) and sent to that node's gateway, which runs it on its local shard. The
//!   gateway serves whatever it is sent, even if it no longer thinks it owns the partition:
//!   during a membership change nodes can disagree for a moment, and bouncing requests
//!   between them would be worse than serving them once.
//! * A node that dies closes its connections; ractor_cluster removes its gateway from the
//!   group on every survivor, and the survivors' rings give its partitions to the next
//!   highest weights. Challenges it held are gone (see docs/decisions/2026-11-21-one-owner-per-identifier.md).

pub mod gateway;
mod membership;
pub mod ring;
pub mod wire;

/// The TLS types [`ClusterTls`] is made of, for callers that build them.
pub use tokio_rustls;

use std::collections::HashSet;
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
use crate::rules::keys::IdentHash;

use gateway::{GatewayActor, GatewayMsg};
use membership::MembershipActor;
use ring::Ring;
use wire::RemoteError;

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
    forward_timeout: Duration,
    members_gauge: Gauge,
    owned_gauge: Gauge,
    forwarded: [Counter; 3],
    forward_duration: Histogram,
}

impl Shared {
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

/// Label values of [`CLUSTER_FORWARDED`], indexed by `OK`, `UNREACHABLE`, `ERROR`.
const FORWARD_OUTCOMES: [&str; 3] = ["ok", "unreachable", "error"];
const OK: usize = 0;
const UNREACHABLE: usize = 1;
const ERROR: usize = 2;

impl Cluster {
    /// Starts the node server, this node's gateway and the membership watcher, and begins
    /// dialing the seeds. Returns once the listener is bound (peers may join later).
    pub async fn start(settings: ClusterSettings, router: Arc<ShardRouter>) -> Result<Cluster, ClusterError> {
        let shared = Arc::new(Shared {
            name: settings.node_name.clone(),
            view: ArcSwap::from_pointee(View::alone(&settings.node_name)),
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
            Some(ractor_cluster::node::NodeConnectionMode::Transitive),
        )
        .with_listen_addr(settings.listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| ClusterError(format!("cannot start the node server: {e}")))?;
        let (gateway, _) = Actor::spawn(Some(format!("{GATEWAY_PREFIX}{}", settings.node_name)), GatewayActor, router)
            .await
            .map_err(|e| ClusterError(format!("cannot start the gateway: {e}")))?;
        let (membership, _) = Actor::spawn(None, MembershipActor, shared.clone())
            .await
            .map_err(|e| ClusterError(format!("cannot start the membership watcher: {e}")))?;
        wait_listening(settings.listen).await?;

        let own = format!("{advertise}:{}", settings.listen.port());
        let dialer = tokio::spawn(dial_seeds(server.clone(), settings, own));
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
        let bytes = wire::encode_command(cmd);
        let result =
            match gateway.call(|reply| GatewayMsg::Forward(bytes, reply), Some(self.shared.forward_timeout)).await {
                Ok(CallResult::Success(answer)) => match wire::decode_answer(&answer) {
                    Some(Ok(a)) => Ok(a),
                    Some(Err(error)) => Err(ForwardError::Remote { owner: owner.to_owned(), error }),
                    None => Err(ForwardError::Remote { owner: owner.to_owned(), error: RemoteError::Malformed }),
                },
                Ok(CallResult::Timeout) => Err(ForwardError::Timeout { owner: owner.to_owned() }),
                Ok(CallResult::SenderError) | Err(_) => Err(ForwardError::OwnerLeft { owner: owner.to_owned() }),
            };
        self.shared.forward_duration.record(started.elapsed());
        let outcome = match &result {
            Ok(_) => OK,
            Err(e) if e.is_unreachable() => UNREACHABLE,
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

/// Dials every seed that is not connected, every `reconnect_interval`, for as long as the
/// node runs: a seed that was down at start, or a peer that restarted, is joined when it
/// comes back.
async fn dial_seeds(server: ActorRef<NodeServerMessage>, settings: ClusterSettings, own: String) {
    let seeds: Vec<String> = settings.seeds.iter().filter(|s| **s != own).cloned().collect();
    let mut interval = tokio::time::interval(settings.reconnect_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let connected: HashSet<String> = match ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) {
            Ok(sessions) => sessions.into_values().filter_map(|s| s.peer_name.map(|n| n.connection_string)).collect(),
            Err(_) => continue,
        };
        for seed in seeds.iter().filter(|s| !connected.contains(*s)) {
            let dialed = match &settings.tls {
                None => ractor_cluster::client_connect(&server, seed.as_str()).await.map_err(|e| e.to_string()),
                Some(tls) => {
                    let host = seed.rsplit_once(':').map_or(seed.as_str(), |(h, _)| h).to_owned();
                    match rustls_pki_types::ServerName::try_from(host) {
                        Ok(name) => {
                            ractor_cluster::client_connect_enc(&server, seed.as_str(), tls.connector.clone(), name)
                                .await
                                .map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            };
            match dialed {
                Ok(()) => tracing::info!(target: LOG_TARGET, seed = %seed, "dialed cluster seed"),
                Err(e) => tracing::debug!(target: LOG_TARGET, seed = %seed, error = %e, "cluster seed not reachable"),
            }
        }
    }
}
