//! Metrics of the front end and the node, the whole catalogue, and the Prometheus recorder.
//!
//! * Names recorded by this crate are the `const`s below; [`CATALOGUE`] describes them and
//!   [`all`] adds the engine's ([`otpd_actors::metrics::CATALOGUE`]). docs/metrics.md is
//!   generated from [`all`] ([`reference_markdown`]); `deploy/`'s dashboard and alert rules are
//!   checked against it by tests.
//! * [`install`] builds the Prometheus recorder once per process (without its own HTTP
//!   listener: `GET /metrics` renders from the handle), with bucket bounds per histogram from
//!   the catalogue, and registers every `# HELP` text. It must run before any handle is
//!   created (handles taken earlier are no-ops); [`crate::server::assemble`] calls it first.
//! * [`HttpMetrics`]: per-request handles, created on first use per (route template, method,
//!   status class) and cached, so a request never builds a label set.
//! * The gauges that are sampled rather than counted (users, sessions, live challenges, breaker
//!   states, readiness) are set by the refresher in `crate::http::ops`, every
//!   `admin.refresh_interval`. This module knows nothing of HTTP routing: the route labels are
//!   given to [`HttpMetrics::new`] by the route table.
//!
//! Labels never carry an unbounded value: routes are templates (`/v1/devices/{id}`, and
//! `other` for any path that is not a route), methods one of eight, statuses a class.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use otpd_actors::metrics::{Kind, LATENCY_BUCKETS, MetricDef};
use otpd_actors::ports::CensusSource;
use otpd_actors::rules::clock::Timestamp;

/// HTTP requests answered.
pub const HTTP_REQUESTS: &str = "otpd_http_requests_total";
/// Time from a request's head to its response.
pub const HTTP_DURATION: &str = "otpd_http_request_duration_seconds";
/// Requests being handled.
pub const HTTP_IN_FLIGHT: &str = "otpd_http_requests_in_flight";
/// Requests refused for their body (too large, too slow).
pub const HTTP_BODY_REJECTIONS: &str = "otpd_http_body_rejections_total";
/// Open client connections.
pub const HTTP_CONNECTIONS: &str = "otpd_http_connections_open";
/// Records per durable commit of the embedded store.
pub const STORE_GROUP_COMMIT_BATCH: &str = "otpd_store_group_commit_batch_size";
/// Duration of the embedded store's durable commits.
pub const STORE_COMMIT_DURATION: &str = "otpd_store_commit_duration_seconds";
/// Accounts.
pub const USERS: &str = "otpd_users";
/// Accounts that finished registration.
pub const USERS_VERIFIED: &str = "otpd_users_verified";
/// Delivery-receipt callbacks refused for their signature.
pub const CALLBACKS_REFUSED: &str = "otpd_delivery_callbacks_refused_total";
/// Accounts never verified, deleted by the purge.
pub const UNVERIFIED_PURGED: &str = "otpd_unverified_accounts_purged_total";
/// Records past their lifetime, deleted by the retention sweep.
pub const RETENTION_REMOVED: &str = "otpd_retention_removed_total";
/// Accounts erased, by whom the erasure was asked.
pub const ACCOUNTS_ERASED: &str = "otpd_accounts_erased_total";
/// Rewrites of the embedded store's files after an erasure (journal sealed, tables compacted).
pub const ERASURE_PURGES: &str = "otpd_store_erasure_purges_total";
/// Backups asked of this node (`POST /v1/admin/backup`), by outcome.
pub const BACKUPS: &str = "otpd_backups_total";
/// How long the last successful backup took.
pub const BACKUP_DURATION: &str = "otpd_backup_last_duration_seconds";
/// How large the last successful backup was.
pub const BACKUP_BYTES: &str = "otpd_backup_last_bytes";
/// When the last successful backup finished.
pub const BACKUP_LAST_SUCCESS: &str = "otpd_backup_last_success_time_seconds";
/// Sessions neither revoked nor expired.
pub const SESSIONS_ACTIVE: &str = "otpd_sessions_active";
/// 1 when `GET /health/ready` would answer 200.
pub const READY: &str = "otpd_ready";
/// 1 per readiness check that passes.
pub const DEPENDENCY_UP: &str = "otpd_dependency_up";
/// Constant 1, labelled with the version.
pub const BUILD_INFO: &str = "otpd_build_info";
/// When the process started.
pub const START_TIME: &str = "otpd_start_time_seconds";

/// Every metric this crate records.
pub const CATALOGUE: &[MetricDef] = &[
    MetricDef {
        name: HTTP_REQUESTS,
        kind: Kind::Counter,
        labels: &["route", "method", "status"],
        buckets: &[],
        help: "HTTP requests answered, by route template (other for unknown paths), method and status class (2xx, 4xx, ...)",
    },
    MetricDef {
        name: HTTP_DURATION,
        kind: Kind::Histogram,
        labels: &["route"],
        buckets: LATENCY_BUCKETS,
        help: "Time from a request's head to its response, in seconds, by route template",
    },
    MetricDef {
        name: HTTP_IN_FLIGHT,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "HTTP requests being handled now",
    },
    MetricDef {
        name: HTTP_BODY_REJECTIONS,
        kind: Kind::Counter,
        labels: &["route", "reason"],
        buckets: &[],
        help: "Requests refused for their body, by route and reason: too_large (413, over http.max_body_bytes), too_slow (408)",
    },
    MetricDef {
        name: HTTP_CONNECTIONS,
        kind: Kind::Gauge,
        labels: &["listener"],
        buckets: &[],
        help: "Open client connections, by listener (main, admin); the main listener holds at most http.max_connections",
    },
    MetricDef {
        name: STORE_GROUP_COMMIT_BATCH,
        kind: Kind::Histogram,
        labels: &[],
        buckets: otpd_actors::metrics::BATCH_BUCKETS,
        help: "Writes committed together in one fsync by the embedded store's writer",
    },
    MetricDef {
        name: STORE_COMMIT_DURATION,
        kind: Kind::Histogram,
        labels: &[],
        buckets: LATENCY_BUCKETS,
        help: "Duration of the embedded store's durable commits (apply a batch, fsync), in seconds",
    },
    MetricDef {
        name: USERS,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Accounts in the store, verified or not (refreshed every admin.refresh_interval)",
    },
    MetricDef {
        name: CALLBACKS_REFUSED,
        kind: Kind::Counter,
        labels: &["provider", "reason"],
        buckets: &[],
        help: "Delivery-receipt callbacks refused with 403 invalid_callback_signature: the signature header was missing or did not match",
    },
    MetricDef {
        name: UNVERIFIED_PURGED,
        kind: Kind::Counter,
        labels: &[],
        buckets: &[],
        help: "Accounts never verified that the purge deleted, older than otp.unverified_account_ttl",
    },
    MetricDef {
        name: RETENTION_REMOVED,
        kind: Kind::Counter,
        labels: &["kind"],
        buckets: &[],
        help: "Records past their [retention] lifetime that the embedded store's hourly sweep deleted: audit_event, session, device, audit_key",
    },
    MetricDef {
        name: ACCOUNTS_ERASED,
        kind: Kind::Counter,
        labels: &["by"],
        buckets: &[],
        help: "Accounts erased (DELETE /v1/me: by=user; the admin API: by=admin)",
    },
    MetricDef {
        name: ERASURE_PURGES,
        kind: Kind::Counter,
        labels: &["outcome"],
        buckets: &[],
        help: "Rewrites of the embedded store's files after erasures (journal sealed, memtables flushed, tables holding personal data compacted): ok or failed",
    },
    MetricDef {
        name: BACKUPS,
        kind: Kind::Counter,
        labels: &["outcome"],
        buckets: &[],
        help: "Backups of the embedded store asked of this node (otpd backup), by outcome: ok (written and verified), refused (the request: directory exists, another backup running, ScyllaDB store), failed (the node could not write or verify it)",
    },
    MetricDef {
        name: BACKUP_DURATION,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Seconds the last successful backup took, snapshot to verified manifest (0 before the first since start)",
    },
    MetricDef {
        name: BACKUP_BYTES,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Bytes the last successful backup wrote, store and secrets (0 before the first since start)",
    },
    MetricDef {
        name: BACKUP_LAST_SUCCESS,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Unix time the last successful backup finished (0 before the first since this node started)",
    },
    MetricDef {
        name: USERS_VERIFIED,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Accounts that finished registration (refreshed every admin.refresh_interval)",
    },
    MetricDef {
        name: SESSIONS_ACTIVE,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "Sessions neither revoked nor expired (refreshed every admin.refresh_interval)",
    },
    MetricDef {
        name: READY,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "1 when GET /health/ready answers 200, 0 when it answers 503 (refreshed every admin.refresh_interval and on each readiness request)",
    },
    MetricDef {
        name: DEPENDENCY_UP,
        kind: Kind::Gauge,
        labels: &["dependency"],
        buckets: &[],
        help: "1 per readiness check that passes, 0 per check that fails: store, limiter, delivery",
    },
    MetricDef {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        labels: &["version"],
        buckets: &[],
        help: "Always 1; the version label says which otpd runs",
    },
    MetricDef {
        name: START_TIME,
        kind: Kind::Gauge,
        labels: &[],
        buckets: &[],
        help: "When the process started, in seconds since the Unix epoch",
    },
];

/// The whole catalogue: this crate's metrics, then the engine's.
pub fn all() -> impl Iterator<Item = &'static MetricDef> {
    CATALOGUE.iter().chain(otpd_actors::metrics::CATALOGUE)
}

/// `docs/metrics.md`: every metric with its type, labels, buckets and meaning.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# Metrics\n\n<!-- Generated from the metric catalogues (src/metrics.rs, actors/src/metrics.rs) by \
         `OTPD_BLESS=1 cargo test --test it reference`; do not edit. -->\n\n\
         `GET /metrics` (Prometheus text format) on the ops listener (`admin.listen`), and on the public one only while \
         `admin.metrics_on_main`. Every name has the `otpd_` prefix, base units (seconds) and `_total` on \
         counters. Labels take values from fixed sets only: route *templates* (`/v1/devices/{id}`; any \
         unknown path is `other`), eight methods, status classes, enum outcomes, configured provider \
         names, shard indexes; never an identifier, code, IP, trace id or other id. Counters of fixed \
         label sets are registered at zero when the node starts. The shipped dashboard and alert rules \
         are in `deploy/`.\n",
    );
    let sections = [("The front end and the node", CATALOGUE), ("The engine", otpd_actors::metrics::CATALOGUE)];
    for (title, defs) in sections {
        out.push_str(&format!("\n## {title}\n\n| name | type | labels | meaning |\n| --- | --- | --- | --- |\n"));
        for def in defs {
            let labels = if def.labels.is_empty() {
                "—".to_owned()
            } else {
                def.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", ")
            };
            let mut meaning = def.help.replace('|', "\\|");
            if let (Some(first), Some(last)) = (def.buckets.first(), def.buckets.last()) {
                meaning.push_str(&format!(" (buckets {first} to {last})"));
            }
            out.push_str(&format!("| `{}` | {} | {labels} | {meaning} |\n", def.name, def.kind.as_str()));
        }
    }
    out
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are drained into their buckets (`PrometheusHandle::run_upkeep`,
/// on the request runtime).
///
/// Why this short: the recorder keeps every sample until a drain, and a drain is one burst on
/// the thread that runs it. Drained with the gauges every 5 s, a node taking 14 000 sends/s
/// stopped answering for 7–8 ms each time, long enough to lift that second's p99 over 10 ms
/// (docs/PERFORMANCE.md, "A pause every five seconds"). Every 250 ms the same work comes in
/// pieces of ~0.4 ms.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(250);

/// Installs the Prometheus recorder as the process's `metrics` recorder (once; later calls
/// return the same handle). `None` if another recorder was installed first (by a program
/// embedding otpd): then `/metrics` answers 503.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for def in all().filter(|d| d.kind == Kind::Histogram) {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(def.name.to_owned()), def.buckets)
                    .expect("the catalogue gives every histogram its buckets");
            }
            match builder.install_recorder() {
                Ok(handle) => {
                    otpd_actors::metrics::describe(CATALOGUE);
                    otpd_actors::metrics::describe(otpd_actors::metrics::CATALOGUE);
                    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
                    gauge!(START_TIME).set(Timestamp::system_now().as_millis() as f64 / 1000.0);
                    // Present (0) from the start, so alerts on it see a series.
                    otpd_actors::metrics::set_redis_fallback_active(false);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will answer 503");
                    None
                }
            }
        })
        .clone()
}

const METHODS: [&str; 8] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

fn class_index(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// The front end's handles. Counters and histograms of a label combination are registered
/// the first time it occurs, then read from a `OnceLock` (one atomic load).
pub struct HttpMetrics {
    /// The values of the `route` label, `other` first (the route table's `route_labels`).
    routes: &'static [&'static str],
    requests: Vec<OnceLock<Counter>>,
    durations: Vec<OnceLock<Histogram>>,
    in_flight: Gauge,
    connections: [Gauge; 2],
}

impl HttpMetrics {
    /// Handles for the route labels `routes` (index 0 counts any other path).
    pub fn new(routes: &'static [&'static str]) -> Self {
        HttpMetrics {
            routes,
            requests: (0..routes.len() * METHODS.len() * CLASSES.len()).map(|_| OnceLock::new()).collect(),
            durations: (0..routes.len()).map(|_| OnceLock::new()).collect(),
            in_flight: gauge!(HTTP_IN_FLIGHT),
            connections: ["main", "admin"].map(|l| gauge!(HTTP_CONNECTIONS, "listener" => l)),
        }
    }

    /// A request for the route label `route` (an index into [`routes`], from the route
    /// table's lookup) arrived: counts it in flight until the returned guard is dropped.
    pub fn begin(&self, method: &Method, route: usize) -> InFlight<'_> {
        self.in_flight.increment(1.0);
        InFlight { metrics: self, route, method: method_index(method), started: Instant::now() }
    }

    /// A connection opened on the main (`admin = false`) or admin listener; closed when the
    /// guard is dropped.
    pub fn connection(&self, admin: bool) -> ConnectionGuard {
        let gauge = self.connections[usize::from(admin)].clone();
        gauge.increment(1.0);
        ConnectionGuard(gauge)
    }
}

/// A request being handled (see [`HttpMetrics::begin`]).
pub struct InFlight<'a> {
    metrics: &'a HttpMetrics,
    route: usize,
    method: usize,
    started: Instant,
}

impl InFlight<'_> {
    /// The request's route template.
    pub fn route(&self) -> &'static str {
        self.metrics.routes[self.route]
    }

    /// The request's method as the `method` label names it.
    pub fn method(&self) -> &'static str {
        METHODS[self.method]
    }

    /// Counts the answer and its latency; returns the latency.
    pub fn finish(self, status: StatusCode) -> Duration {
        let took = self.started.elapsed();
        let m = self.metrics;
        let routes = m.routes;
        let (route, method, class) = (self.route, self.method, class_index(status));
        let i = (route * METHODS.len() + method) * CLASSES.len() + class;
        m.requests[i]
            .get_or_init(|| {
                counter!(HTTP_REQUESTS, "route" => routes[route], "method" => METHODS[method], "status" => CLASSES[class])
            })
            .increment(1);
        m.durations[route]
            .get_or_init(|| histogram!(HTTP_DURATION, "route" => routes[route]))
            .record(took.as_secs_f64());
        let reason = match status {
            StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
            StatusCode::REQUEST_TIMEOUT => Some("too_slow"),
            _ => None,
        };
        if let Some(reason) = reason {
            // Rare: a body the node refused. No cache needed.
            counter!(HTTP_BODY_REJECTIONS, "route" => routes[route], "reason" => reason).increment(1);
        }
        took
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
    }
}

/// An open connection (see [`HttpMetrics::connection`]).
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What the operations endpoints need beside the engine: the recorder's handle, the HTTP
/// handles, the store's census.
pub struct Observe {
    /// Renders `GET /metrics`; `None` when another recorder was installed.
    pub prometheus: Option<PrometheusHandle>,
    pub http: HttpMetrics,
    /// Users and sessions for the gauges and `GET /v1/admin/stats`.
    pub census: Option<Arc<dyn CensusSource>>,
    /// Whether the public listener also serves the ops routes (the ops listener always does).
    pub ops_on_public_listener: bool,
    /// When the node started (uptime in the admin stats).
    pub started_at: Timestamp,
    /// `limits.prefix_digits`: how long a destination of `/v1/admin/destinations` is when it
    /// names a number prefix.
    pub prefix_digits: u8,
    /// `[retention]`: what exports and the audit view say the store keeps.
    pub retention: crate::config::RetentionConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classes() {
        assert_eq!(CLASSES[class_index(StatusCode::OK)], "2xx");
        assert_eq!(CLASSES[class_index(StatusCode::SERVICE_UNAVAILABLE)], "5xx");
        assert_eq!(CLASSES[class_index(StatusCode::CONTINUE)], "1xx");
        assert_eq!(METHODS[method_index(&Method::from_bytes(b"BREW").unwrap())], "other");
    }

    #[test]
    fn the_catalogue_names_each_metric_once() {
        let mut names: Vec<&str> = all().map(|d| d.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
