//! Wiring: from a [`Config`] to a running node, and back down again.
//!
//! [`start`] builds every piece in dependency order (secrets → store → limiter → delivery
//! (providers + dispatcher) → engine (which starts the dispatcher actor) → tokens → listener)
//! and returns a [`Node`] handle; [`run`] is what `otpd run` calls.
//! Tests call [`start`] with a manual clock and port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use otpd_actors::clock::{Clock, SystemClock};
use otpd_actors::code::CodePolicy;
use otpd_actors::devices::DevicePolicy;
use otpd_actors::dispatch::DispatchHandle;
use otpd_actors::identifier::Normalizer;
use otpd_actors::keys::Keys;
use otpd_actors::limiter::{LimitPolicy, LocalLimiter, WindowLimit};
use otpd_actors::shard::ShardConfig;
use otpd_actors::{Engine, EngineConfig, EnginePorts};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::http::App;
use crate::http::routes::ReadinessCheck;
use crate::secrets;
use crate::store::Store;
use crate::tokens::TokenService;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("secrets: {0}")]
    Secrets(#[from] secrets::SecretsError),
    #[error("store: {0}")]
    Store(String),
    #[error("outbox {path}: {error}")]
    Outbox { path: PathBuf, error: std::io::Error },
    #[error("delivery: {0}")]
    Delivery(String),
    #[error("{0}")]
    Config(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("cannot listen on {addr}: {error}")]
    Listen { addr: SocketAddr, error: std::io::Error },
}

/// A running node.
pub struct Node {
    pub addr: SocketAddr,
    pub engine: Engine,
    pub outbox_path: PathBuf,
    /// The delivery dispatcher: stats, provider health.
    pub delivery: DispatchHandle,
    pub admin_token: String,
    store: Store,
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
        self.store.close();
        tracing::info!("node stopped");
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The store the node runs on.
    pub fn store(&self) -> &Store {
        &self.store
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
        devices: DevicePolicy {
            max_per_user: config.devices.max_per_user,
            enrol_max_auth_age: config.devices.enrol_max_auth_age.0,
            audience: config.tokens.audience.clone(),
        },
    })
}

pub fn limit_policy(config: &Config) -> LimitPolicy {
    LimitPolicy {
        resend_cooldown: config.otp.resend_cooldown.0,
        identifier_sends: WindowLimit { limit: config.otp.max_sends_per_window, window: config.otp.send_window.0 },
    }
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
}

impl Assembly {
    /// Stops the actor tree and closes the store.
    pub async fn shutdown(self) {
        self.engine.stop().await;
        self.store.close();
    }
}

/// Builds every piece of a node in dependency order: secrets → store → limiter → delivery
/// (providers + dispatcher) → engine (which starts the dispatcher actor) → tokens → the HTTP
/// application.
pub async fn assemble(config: &Config, clock: Arc<dyn Clock>) -> Result<Assembly, StartupError> {
    let secrets = secrets::load_or_create(config)?;

    let store = Store::open(config).await.map_err(StartupError::Store)?;

    let limiter = Arc::new(LocalLimiter::new(limit_policy(config)));
    limiter.spawn_sweeper(clock.clone(), Duration::from_secs(64));

    let outbox_path = config.outbox_path();
    let delivery = crate::delivery::start(config, clock.clone(), store.audit()).map_err(|e| match e {
        crate::delivery::DeliveryError::Outbox { path, error } => StartupError::Outbox { path, error },
        crate::delivery::DeliveryError::Setup(e) => StartupError::Delivery(e),
    })?;

    let normalizer =
        Normalizer::new(config.default_region(), config.identifiers.verdict_cache).map_err(StartupError::Config)?;
    let normalizer = Arc::new(normalizer);
    {
        let n = normalizer.clone();
        tokio::task::spawn_blocking(move || n.warm()).await.map_err(|e| StartupError::Engine(e.to_string()))?;
    }

    let ports = EnginePorts {
        users: store.users(),
        sessions: store.sessions(),
        devices: store.devices(),
        audit: store.audit(),
        limiter,
        notifier: Arc::new(delivery.clone()),
    };
    let engine = Engine::start(engine_config(config)?, Keys::from_master(&secrets.master), clock, normalizer, ports)
        .await
        .map_err(|e| StartupError::Engine(e.to_string()))?;
    let tokens = TokenService::new(&secrets.signing, &config.tokens).map_err(StartupError::Config)?;

    let store_check = store.clone();
    let delivery_check = delivery.clone();
    let readiness: Vec<ReadinessCheck> =
        vec![("store", Arc::new(move || store_check.check())), ("delivery", Arc::new(move || delivery_check.check()))];
    let app = Arc::new(App {
        engine: engine.clone(),
        tokens,
        max_body_bytes: config.http.max_body_bytes,
        request_timeout: config.http.request_timeout.0,
        trusted_proxies: config.http.trusted_proxies.clone(),
        admin_token: secrets.admin_token.clone(),
        readiness,
        delivery: Some(delivery.clone()),
    });
    Ok(Assembly { app, engine, store, outbox_path, delivery, admin_token: secrets.admin_token })
}

/// Builds and starts a node. The listener is bound before this returns, so `addr` is live.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> Result<Node, StartupError> {
    let assembly = assemble(&config, clock).await?;
    let listener = match TcpListener::bind(config.http.listen).await {
        Ok(l) => l,
        Err(error) => {
            assembly.shutdown().await;
            return Err(StartupError::Listen { addr: config.http.listen, error });
        }
    };
    let addr = listener.local_addr().map_err(|error| StartupError::Listen { addr: config.http.listen, error })?;

    let Assembly { app, engine, store, outbox_path, delivery, admin_token } = assembly;
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
        store = %store.describe(&config),
        "otpd node listening"
    );
    crate::delivery::log_routes(&config);
    Ok(Node { addr, engine, outbox_path, delivery, admin_token, store, stop: Some(stop), serving })
}

/// Runs a node with the system clock until `signal` completes.
pub async fn run(config: Config, signal: impl Future<Output = ()>) -> Result<(), StartupError> {
    let node = start(config, Arc::new(SystemClock)).await?;
    signal.await;
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}
