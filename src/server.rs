//! Wiring: from a [`Config`] to a running node, and back down again.
//!
//! [`start`] builds every piece in dependency order (secrets → store → limiter (in-process or
//! Redis) → delivery (providers + dispatcher) → engine (which starts the dispatcher actor) →
//! tokens → listener) and returns a [`Node`] handle; [`run`] is what `otpd run` calls.
//! Tests call [`start`] with a manual clock and port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::actors::cluster::ClusterError;
use otpd_actors::actors::dispatch::{DispatchHandle, Templates};
use otpd_actors::actors::shard::ShardConfig;
use otpd_actors::flows::engine::StartError;
use otpd_actors::rules::clock::{Clock, SystemClock};
use otpd_actors::rules::code::{CodeLengthError, CodePolicy};
use otpd_actors::rules::device_key::DevicePolicy;
use otpd_actors::rules::identifier::{Normalizer, UnknownRegion};
use otpd_actors::rules::keys::Keys;
use otpd_actors::rules::limits::LimitPolicy;
use otpd_actors::{Engine, EngineConfig, EnginePorts};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cluster::ClusterTlsError;
use crate::config::Config;
use crate::delivery::{DeliveryError, ProviderSections};
use crate::http::app::{DegradationCheck, ReadinessCheck};
use crate::http::tls::ReloadingCert;
use crate::http::{App, Https, Serving};
use crate::keyring::{AdminTokens, FileVault, KeyRing, KeyVault, RingSettings};
use crate::limits::redis::RedisStartError;
use crate::limits::{LimiterHealth, Limits};
use crate::secrets;
use crate::store::Store;
use crate::tokens::{SigningKeyError, TokenService};

/// Why a node did not start; each adapter's own error inside.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("secrets: {0}")]
    Secrets(#[from] secrets::SecretsError),
    #[error("store: {0}")]
    Store(#[from] crate::store::OpenError),
    #[error("outbox {path}: {error}")]
    Outbox { path: PathBuf, error: std::io::Error },
    #[error("delivery: {0}")]
    Delivery(DeliveryError),
    #[error("{0}")]
    Code(#[from] CodeLengthError),
    #[error("{0}")]
    Region(#[from] UnknownRegion),
    #[error("{0}")]
    SigningKey(#[from] SigningKeyError),
    #[error("engine: {0}")]
    Engine(#[from] StartError),
    #[error("engine: {0}")]
    Warmup(#[from] tokio::task::JoinError),
    #[error("limiter: {0}")]
    Limits(#[from] RedisStartError),
    #[error("{0}")]
    ClusterTls(#[from] ClusterTlsError),
    #[error("{0}")]
    Cluster(#[from] ClusterError),
    #[error("rotated keys: {0}")]
    Keys(otpd_actors::ports::StoreError),
    #[error("{listener} TLS: {error}")]
    Tls { listener: &'static str, error: crate::tls_files::TlsFileError },
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
    #[error("{0}")]
    Passkeys(String),
}

impl From<DeliveryError> for StartupError {
    /// An outbox that cannot be opened is named as such; every other delivery problem is
    /// a `delivery:` one.
    fn from(e: DeliveryError) -> StartupError {
        match e {
            DeliveryError::Outbox { path, error } => StartupError::Outbox { path, error },
            other => StartupError::Delivery(other),
        }
    }
}

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    /// The ops listener's address (`admin.listen`).
    pub admin_addr: SocketAddr,
    pub engine: Engine,
    pub outbox_path: PathBuf,
    /// The delivery dispatcher: stats, provider health.
    pub delivery: DispatchHandle,
    pub admin_token: String,
    /// Whether the public listener serves HTTPS.
    pub tls: bool,
    store: Store,
    limits: Limits,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
    admin: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Node {
    /// Runs the retention sweep now, at the engine's clock (the embedded store; ScyllaDB
    /// expires by TTL and has nothing to sweep): what the hourly sweep does.
    pub async fn sweep_retention(&self, retention: &crate::config::RetentionConfig) -> crate::store::retention::Swept {
        match &self.store {
            Store::Embedded(s) => crate::store::retention::sweep(s, self.engine.now(), retention).await,
            Store::Scylla(_) => crate::store::retention::Swept::default(),
        }
    }

    /// Stops accepting, drains open requests, stops the actor tree, closes the store.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some((stop, serving)) = self.admin.take() {
            let _ = stop.send(());
            let _ = serving.await;
        }
        let _ = (&mut self.serving).await;
        self.engine.stop().await;
        self.limits.stop().await;
        self.store.close();
        tracing::info!("node stopped");
    }

    /// `http://` or, when `http.tls_cert_file` is set, `https://` and the listener's address.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// The store the node runs on (closing it makes the node unready and its writes fail).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shared limiter's health, when Redis is configured.
    pub fn limiter_health(&self) -> Option<Arc<LimiterHealth>> {
        self.limits.health()
    }
}

/// The engine's view of the configuration; `templates` are the dispatcher's, whose locales
/// and segments the engine chooses and prices sends by.
pub fn engine_config(config: &Config, templates: &Templates) -> Result<EngineConfig, CodeLengthError> {
    let otp = &config.otp;
    let code = CodePolicy::new(otp.code_length, otp.alphabet)?;
    Ok(EngineConfig {
        code,
        shard: ShardConfig {
            lifetime: otp.lifetime.0,
            device_lifetime: config.devices.challenge_lifetime.0,
            max_attempts: otp.max_attempts,
            grace: config.engine.expired_grace.0,
            reclaim_every: config.engine.reclaim_interval.0,
            ..ShardConfig::default()
        },
        shard_count: config.engine.shards,
        call_timeout: config.engine.call_timeout.0,
        resend_cooldown: otp.resend_cooldown.0,
        session_ttl: config.tokens.session_ttl.0,
        reveal_accounts: otp.reveal_accounts,
        refusal_window: config.engine.audit_refusal_window.0,
        locales: templates.locales().clone(),
        sms_segments: templates.sms_segments(usize::from(otp.code_length), otp.lifetime.0),
        devices: DevicePolicy {
            max_per_user: config.devices.max_per_user,
            enrol_max_auth_age: config.devices.enrol_max_auth_age.0,
            audience: config.tokens.audience.clone(),
        },
        passkeys: config.passkeys.policy(),
    })
}

/// The limiter's rules: `[limits]` with `[otp]`'s cooldown and send cap.
pub fn limit_policy(config: &Config) -> LimitPolicy {
    config.limits.policy(&config.otp)
}

/// Everything a node is made of except its listener: what benchmarks drive in-process.
pub struct Assembly {
    pub app: Arc<App>,
    pub engine: Engine,
    pub store: Store,
    pub outbox_path: PathBuf,
    /// The delivery dispatcher: stats, provider health.
    pub delivery: DispatchHandle,
    pub admin_token: String,
    /// The limiter (in-process or Redis) and its health.
    pub limits: Limits,
}

impl Assembly {
    /// Stops the actor tree, the limiter's background work and closes the store.
    pub async fn shutdown(self) {
        self.engine.stop().await;
        self.limits.stop().await;
        self.store.close();
    }
}

/// Builds every piece of a node in dependency order: secrets → store → limiter (in-process or
/// Redis) → delivery (providers + dispatcher) → engine (which starts the dispatcher actor) →
/// tokens → the HTTP application.
pub async fn assemble(config: &Config, clock: Arc<dyn Clock>) -> Result<Assembly, StartupError> {
    // First: every metrics handle created from here on records into it.
    let prometheus = crate::metrics::install();
    let secrets = secrets::load_or_create(&config.secrets, &config.tokens, &config.node.secrets_dir())?;
    // The cluster's files (TLS certificates and key) are read before anything is opened, so a
    // bad or exposed one stops the node at once.
    let cluster = crate::cluster::settings(&config.cluster, &secrets.master)?;

    let store = Store::open(
        &config.store,
        &config.scylla,
        &config.node.store_path(),
        config.tokens.session_ttl.0,
        config.retention.audit.0,
    )
    .await?;
    // Every port call timed and its failures counted, whatever the store.
    let ports = store.ports();

    let limits = Limits::start(&config.redis, limit_policy(config), &secrets.master, clock.clone()).await?;
    let limiter = limits.limiter.clone();

    let outbox_path = config.outbox_path();
    let sections = ProviderSections { twilio: &config.twilio, webhook: &config.webhook, smtp: &config.smtp };
    let delivery =
        crate::delivery::start(&config.delivery, sections, &outbox_path, clock.clone(), ports.audit.clone())?;

    let normalizer = Arc::new(Normalizer::new(config.identifiers.default_region(), config.identifiers.verdict_cache)?);
    {
        let n = normalizer.clone();
        tokio::task::spawn_blocking(move || n.warm()).await?;
    }

    let census = ports.census.clone();
    let users = ports.users.clone();
    let ports = EnginePorts {
        users: ports.users,
        sessions: ports.sessions,
        devices: ports.devices,
        passkeys: ports.passkeys,
        relying_party: Arc::new(crate::passkeys::WebauthnRp::new(&config.passkeys).map_err(StartupError::Passkeys)?),
        audit: ports.audit,
        limiter,
        notifier: Arc::new(delivery.clone()),
        dispatcher: Some(delivery.actor()),
    };
    let started_at = clock.now();
    let engine = Engine::start(
        engine_config(config, delivery.templates())?,
        Keys::from_master(&secrets.master),
        clock,
        normalizer,
        ports,
    )
    .await?;
    delivery.set_failover_gate(engine.failover_gate());
    let tokens = TokenService::new(&secrets.signing, &config.tokens)?;
    if let Some(settings) = cluster
        && let Err(e) = engine.join_cluster(settings).await
    {
        engine.stop().await;
        limits.stop().await;
        store.close();
        return Err(e.into());
    }

    let store_check = store.clone();
    let delivery_check = delivery.clone();
    let mut readiness: Vec<ReadinessCheck> = vec![("store", Arc::new(move || store_check.check()))];
    let mut degradations: Vec<DegradationCheck> = Vec::new();
    match limits.health() {
        // Redis unreachable degrades the node (the in-process limiter stands in) but never
        // makes it unready: docs/decisions/2026-11-21-redis-fallback.md.
        Some(health) => degradations.push(("limiter", Arc::new(move || health.reason()))),
        // The in-process limiter is memory in this process: it cannot be unreachable.
        None => readiness.push(("limiter", Arc::new(|| Ok(())))),
    }
    readiness.push(("delivery", Arc::new(move || delivery_check.check())));
    // A spent SMS budget degrades the node: SMS sends are refused, everything else works.
    let budget_engine = engine.clone();
    degradations.push((
        "sms_budget",
        Arc::new(move || {
            budget_engine.sms_budget_spent_until().map(|until| {
                let left = budget_engine.now().until(until);
                format!(
                    "an SMS budget (limits.sms_budget: the total, or a country's) is spent; SMS sends are refused \
                     (sms_budget_exhausted) for {}, until midnight UTC",
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                )
            })
        }),
    ));
    let vault: Arc<dyn KeyVault> = match &store {
        Store::Scylla(s) => s.clone(),
        Store::Embedded(_) => Arc::new(FileVault::new(config.node.secrets_dir().join("keys"))),
    };
    let keyring = KeyRing::new(
        vault,
        &secrets.master,
        RingSettings {
            activation_delay: config.tokens.key_activation_delay.0,
            admin_overlap: config.secrets.admin_token_overlap.0,
            rotate_every: Some(config.tokens.rotate_every.0).filter(|d| !d.is_zero()),
            admin_token_file: config
                .secrets
                .admin_token
                .is_none()
                .then(|| config.node.secrets_dir().join("admin.token")),
        },
    );
    let admin = AdminTokens::new(secrets.admin_token.clone(), config.secrets.admin_token_overlap.0);
    // Rotated keys are in use before the first request: a node started after a rotation
    // verifies every token the cluster signs.
    if let Err(e) = keyring.refresh(&tokens, &admin).await {
        engine.stop().await;
        limits.stop().await;
        store.close();
        return Err(StartupError::Keys(e));
    }
    let admin_token = admin.newest();
    let app = Arc::new(App {
        engine: engine.clone(),
        tokens,
        admin,
        keyring,
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: config.http.request_timeout.0,
        trusted_proxies: config.http.trusted_proxies.clone(),
        readiness,
        degradations,
        delivery: Some(delivery.clone()),
        document: crate::http::openapi::json(),
        signin_page: config.passkeys.serves_signin_page(&config.delivery.provider),
        receipt_keys: crate::http::receipts::ReceiptKeys {
            twilio: config
                .twilio
                .auth_token
                .as_ref()
                .filter(|_| !config.twilio.status_callback_url.is_empty())
                .map(|token| (config.twilio.status_callback_url.clone(), token.0.clone())),
            webhook: config.webhook.receipt_secret.as_ref().map(|s| s.0.clone()),
        },
        backups: match &store {
            Store::Embedded(s) => Some(Arc::new(
                crate::store::embedded::backup::Backups::new(
                    s.clone(),
                    config.node.store_path(),
                    config.node.secrets_dir(),
                )
                .confined_to(config.admin.backup_root.clone()),
            )),
            Store::Scylla(_) => None,
        },
        observe: crate::metrics::Observe {
            prometheus,
            http: crate::metrics::HttpMetrics::new(crate::http::table::route_labels()),
            census,
            ops_on_public_listener: config.admin.ops_on_public_listener,
            started_at,
            prefix_digits: config.limits.prefix_digits,
            retention: config.retention.clone(),
        },
    });
    app.receipt_keys.register_metrics();
    crate::http::backup::register_metrics();
    // Ends by itself once the app is dropped (the node stopped).
    crate::http::ops::spawn_refresher(&app, config.admin.refresh_interval.0);
    crate::http::ops::spawn_key_poller(&app, config.tokens.keys_poll_interval.0);
    if !config.otp.unverified_account_ttl.0.is_zero() {
        crate::store::spawn_purger(&app, users, config.otp.unverified_account_ttl.0);
    }
    // ScyllaDB expires audit events by TTL; the embedded store sweeps.
    if let Store::Embedded(embedded) = &store {
        crate::store::retention::spawn_sweeper(&app, embedded.clone(), config.retention.clone());
    }
    Ok(Assembly { app, engine, store, outbox_path, delivery, admin_token, limits })
}

/// Builds and starts a node. The listener is bound before this returns, so `addr` is live.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Node, StartupError> {
    // Certificates first: a bad or exposed one stops the node before anything is opened.
    let (https, admin_https, certs) = listeners_tls(&config)?;
    let assembly = assemble(&config, clock).await?;
    let listener = match TcpListener::bind(config.http.listen).await {
        Ok(l) => l,
        Err(error) => {
            assembly.shutdown().await;
            return Err(StartupError::Listen { addr: config.http.listen, error });
        }
    };
    let addr = listener.local_addr().map_err(|error| StartupError::Listen { addr: config.http.listen, error })?;

    let admin_listener = match TcpListener::bind(config.admin.listen).await {
        Ok(l) => l,
        Err(error) => {
            assembly.shutdown().await;
            return Err(StartupError::Listen { addr: config.admin.listen, error });
        }
    };
    let admin_addr =
        admin_listener.local_addr().map_err(|error| StartupError::Listen { addr: config.admin.listen, error })?;

    let Assembly { app, engine, store, outbox_path, delivery, admin_token, limits } = assembly;
    crate::http::tls::spawn_reloader(certs, config.http.tls_reload_interval.0);
    let admin = {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = app.clone();
        let serving = tokio::spawn(async move {
            crate::http::serve_admin(admin_listener, app, admin_https, async {
                let _ = stopped.await;
            })
            .await
        });
        (stop, serving)
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let http = config.http.clone();
    let serving = tokio::spawn(async move {
        let serving = Serving {
            max_connections: http.max_connections,
            header_read_timeout: http.header_read_timeout.0,
            idle_timeout: http.idle_timeout.0,
            drain: Duration::from_secs(10),
            https,
        };
        crate::http::serve(listener, app, serving, async {
            let _ = stopped.await;
        })
        .await
    });

    tracing::info!(
        addr = %addr,
        tls = config.http.tls_files().is_some(),
        data_dir = %config.node.data_dir.display(),
        store = %store.describe(&config.node.store_path(), &config.scylla),
        "otpd node listening"
    );
    tracing::info!(addr = %admin_addr, tls = config.admin.tls_files().is_some(), "ops listener (metrics, readiness details, admin API)");
    crate::delivery::log_routes(&config.delivery, &outbox_path);
    Ok(Node {
        addr,
        admin_addr,
        engine,
        outbox_path,
        delivery,
        admin_token,
        tls: config.http.tls_files().is_some(),
        store,
        limits,
        stop: Some(stop),
        serving,
        admin: Some(admin),
    })
}

/// The public listener's HTTPS, the ops listener's, and the certificates to watch.
type ListenersTls = (Option<Https>, Option<Https>, Vec<Arc<ReloadingCert>>);

/// The HTTPS of the public and the ops listener, each when configured, and the certificates
/// the reloader watches. A pair that does not load stops the node here.
fn listeners_tls(config: &Config) -> Result<ListenersTls, StartupError> {
    let mut certs = Vec::new();
    let mut https =
        |files: Option<(PathBuf, PathBuf)>, listener: &'static str| -> Result<Option<Https>, StartupError> {
            let Some((cert, key)) = files else { return Ok(None) };
            let tls = |e| StartupError::Tls { listener, error: e };
            let reloading = ReloadingCert::open(&cert, &key).map_err(tls)?;
            let server = crate::http::tls::server_config(reloading.clone()).map_err(tls)?;
            certs.push(reloading);
            Ok(Some(Https::new(server, config.http.hsts_max_age.0)))
        };
    let main = https(config.http.tls_files(), "http")?;
    let admin = https(config.admin.tls_files(), "admin")?;
    Ok((main, admin, certs))
}

/// Runs a node with the system clock until `signal` completes.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartupError> {
    let node = start(config, Arc::new(SystemClock)).await?;
    signal.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
