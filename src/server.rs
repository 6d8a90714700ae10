//! Wiring: from a [`Config`] to a running node, and back down again.
//!
//! [`start`] builds every piece in dependency order (secrets → store → limiter (in-process or
//! Redis) → notifier → engine → tokens → listener) and returns a [`Node`] handle; [`run`] is
//! what `otpd run` calls.
//! Tests call [`start`] with a manual clock and port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::clock::{Clock, SystemClock};
use otpd_actors::code::CodePolicy;
use otpd_actors::identifier::Normalizer;
use otpd_actors::keys::Keys;
use otpd_actors::limits::LimitPolicy;
use otpd_actors::shard::ShardConfig;
use otpd_actors::{Engine, EngineConfig, EnginePorts};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::delivery::outbox::Outbox;
use crate::http::App;
use crate::http::routes::{DegradationCheck, ReadinessCheck};
use crate::limits::{LimiterHealth, Limits};
use crate::secrets;
use crate::store::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::tokens::TokenService;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("secrets: {0}")]
    Secrets(#[from] secrets::SecretsError),
    #[error("store: {0}")]
    Store(String),
    #[error("outbox {path}: {error}")]
    Outbox { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Config(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("limiter: {0}")]
    Limits(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
}

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub outbox_path: PathBuf,
    pub admin_token: String,
    store: Arc<EmbeddedStore>,
    limits: Limits,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
}

impl Node {
    /// Stops accepting, drains open requests, stops the actor tree, closes the store.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.serving).await;
        self.engine.stop().await;
        self.limits.stop().await;
        self.store.close();
        tracing::info!("node stopped");
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared limiter's health, when Redis is configured.
    pub fn limiter_health(&self) -> Option<Arc<LimiterHealth>> {
        self.limits.health()
    }
}

/// The engine's view of the configuration.
pub fn engine_config(config: &Config) -> Result<EngineConfig, StartupError> {
    let otp = &config.otp;
    let code = CodePolicy::new(otp.code_length, otp.alphabet).map_err(StartupError::Config)?;
    Ok(EngineConfig {
        code,
        shard: ShardConfig {
            lifetime: otp.lifetime.0,
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
    })
}

pub fn limit_policy(config: &Config) -> LimitPolicy {
    crate::limits::policy(config)
}

/// Builds and starts a node. The listener is bound before this returns, so `addr` is live.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Node, StartupError> {
    let secrets = secrets::load_or_create(&config)?;

    let store_path = config.store_path();
    let store = EmbeddedStore::open(
        &store_path,
        EmbeddedOptions {
            group_commit_max: config.store.group_commit_max,
            queue_capacity: config.store.queue_capacity,
        },
    )
    .map_err(|e| StartupError::Store(e.to_string()))?;

    let limits = Limits::start(&config, &secrets.master, clock.clone()).await.map_err(StartupError::Limits)?;
    let limiter = limits.limiter.clone();

    let outbox_path = config.outbox_path();
    let outbox =
        Outbox::open(&outbox_path, config.delivery.queue_capacity, config.delivery.app_name.clone(), clock.clone())
            .map_err(|error| StartupError::Outbox { path: outbox_path.clone(), error })?;

    let normalizer =
        Normalizer::new(config.default_region(), config.identifiers.verdict_cache).map_err(StartupError::Config)?;
    let normalizer = Arc::new(normalizer);
    {
        let n = normalizer.clone();
        tokio::task::spawn_blocking(move || n.warm()).await.map_err(|e| StartupError::Engine(e.to_string()))?;
    }

    let ports =
        EnginePorts { users: store.clone(), sessions: store.clone(), audit: store.clone(), limiter, notifier: outbox };
    let engine = Engine::start(engine_config(&config)?, Keys::from_master(&secrets.master), clock, normalizer, ports)
        .await
        .map_err(|e| StartupError::Engine(e.to_string()))?;
    let tokens = TokenService::new(&secrets.signing, &config.tokens).map_err(StartupError::Config)?;

    let listener = TcpListener::bind(config.http.listen)
        .await
        .map_err(|error| StartupError::Listen { addr: config.http.listen, error })?;
    let addr = listener.local_addr().map_err(|error| StartupError::Listen { addr: config.http.listen, error })?;

    let store_check = store.clone();
    let readiness: Vec<ReadinessCheck> =
        vec![("store", Arc::new(move || store_check.check().map_err(|e| e.to_string())))];
    let mut degradations: Vec<DegradationCheck> = Vec::new();
    if let Some(health) = limits.health() {
        degradations.push(("limiter", Arc::new(move || health.reason())));
    }
    let app = Arc::new(App {
        engine: engine.clone(),
        tokens,
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: config.http.request_timeout.0,
        trusted_proxies: config.http.trusted_proxies.clone(),
        admin_token: secrets.admin_token.clone(),
        readiness,
        degradations,
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let http = config.http.clone();
    let serving = tokio::spawn(async move {
        crate::http::serve(
            listener,
            app,
            http.max_connections,
            http.header_read_timeout.0,
            Duration::from_secs(10),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });

    tracing::info!(
        addr = %addr,
        data_dir = %config.node.data_dir.display(),
        store = %store_path.display(),
        "otpd node listening"
    );
    tracing::info!(outbox = %outbox_path.display(), "development outbox: codes are appended to this file as JSON lines");
    Ok(Node { addr, engine, outbox_path, admin_token: secrets.admin_token, store, limits, stop: Some(stop), serving })
}

/// Runs a node with the system clock until `signal` completes.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartupError> {
    let node = start(config, Arc::new(SystemClock)).await?;
    signal.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
