//! The thin hyper 1.x front end: accept loop, connection cap, graceful shutdown.
//!
//! Plain HTTP is HTTP/1.1 with keep-alive: otpd sits behind a load balancer or is called by
//! app backends, where HTTP/1.1 is universal and the cheapest to serve. A listener given a
//! certificate serves HTTPS only ([`tls`]): HTTP/2 when the client's ALPN asks for it,
//! HTTP/1.1 otherwise, and `Strict-Transport-Security` on every answer. A handshake that does
//! not finish within the header read timeout, or bytes that are not TLS, close the connection.
//!
//! The modules form layers, each using only those below it: `problem` and `wire` (errors and
//! JSON types) ← `app` (the node's `App`, one request as a `Call`, shared helpers) ← the
//! handlers (`codes`, `account`, `ops`) ← `table` (the route table) ← `routes` (the request
//! path) and `openapi` (the document) ← this module's accept loops (and `tls`, their HTTPS;
//! `keepalive`, their HTTP/1.1 timeouts).

pub mod account;
pub mod app;
pub mod backup;
pub mod codes;
pub mod keepalive;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod receipts;
pub mod routes;
pub mod signin;
pub mod table;
pub mod tls;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::server::conn::{http1, http2};
use hyper::service::{Service as _, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub use app::{App, Listener};

/// A listener's HTTPS: the acceptor and the HSTS header its answers carry.
#[derive(Clone)]
pub struct Https {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `Strict-Transport-Security`, unless `http.hsts_max_age` is zero.
    pub hsts: Option<HeaderValue>,
}

impl Https {
    pub fn new(config: Arc<rustls::ServerConfig>, hsts_max_age: Duration) -> Https {
        let hsts = (!hsts_max_age.is_zero()).then(|| {
            HeaderValue::from_str(&format!("max-age={}", hsts_max_age.as_secs()))
                .expect("a number is a valid header value")
        });
        Https { acceptor: tokio_rustls::TlsAcceptor::from(config), hsts }
    }
}

const HSTS: HeaderName = HeaderName::from_static("strict-transport-security");

/// The request handler of a connection; over TLS every answer carries the HSTS header.
/// (A macro, not a function: the closure's type is what hyper's builders are generic over.)
macro_rules! service {
    ($conn:expr, $hsts:expr) => {{
        let (app, kind, peer, hsts) = ($conn.app.clone(), $conn.kind, $conn.peer, $hsts);
        service_fn(move |req| {
            let (app, hsts) = (app.clone(), hsts.clone());
            async move {
                let mut resp = match kind {
                    Listener::Main => routes::handle(app, req, peer).await,
                    Listener::Admin => routes::handle_admin(app, req, peer).await,
                };
                if let Some(value) = hsts {
                    resp.headers_mut().insert(HSTS, value);
                }
                Ok::<_, Infallible>(resp)
            }
        })
    }};
}

/// How a listener serves its connections.
#[derive(Clone)]
pub struct Serving {
    pub max_connections: usize,
    /// How long a request's head may take to arrive ([`keepalive`]).
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request ([`keepalive`]).
    pub idle_timeout: Duration,
    /// How long open requests may finish after shutdown begins.
    pub drain: Duration,
    /// HTTPS only, when given.
    pub https: Option<Https>,
}

/// Serves `listener` until `shutdown` completes, then lets open requests finish (up to
/// `drain`) before returning. At most `max_connections` connections are served at once; the
/// rest wait in the kernel's accept queue.
pub async fn serve(listener: TcpListener, app: Arc<App>, serving: Serving, shutdown: impl Future<Output = ()>) {
    serve_on(listener, Listener::Main, app, serving, shutdown).await
}

/// [`serve`] for the admin listener: only `/metrics`, `/health/*` and `/v1/admin/*`.
pub async fn serve_admin(
    listener: TcpListener,
    app: Arc<App>,
    https: Option<Https>,
    shutdown: impl Future<Output = ()>,
) {
    // A handful of scrapers and operators: a small cap, short timeouts, and connections kept
    // across a scrape interval.
    let serving = Serving {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
        drain: Duration::from_secs(2),
        https,
    };
    serve_on(listener, Listener::Admin, app, serving, shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    kind: Listener,
    app: Arc<App>,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(serving.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let open = app.observe.http.connection(kind == Listener::Admin);
        let conn = Conn {
            kind,
            app: app.clone(),
            peer,
            header_read_timeout: serving.header_read_timeout,
            idle_timeout: serving.idle_timeout,
        };
        match &serving.https {
            None => {
                let served = graceful.watch(
                    conn.http1_builder()
                        .serve_connection(TokioIo::new(conn.clocked(stream)), service!(conn, None::<HeaderValue>)),
                );
                tokio::spawn(async move {
                    let _ = served.await;
                    drop((permit, open));
                });
            }
            Some(https) => {
                let (https, watcher) = (https.clone(), graceful.watcher());
                tokio::spawn(async move {
                    conn.https(stream, https, watcher).await;
                    drop((permit, open));
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(serving.drain) => tracing::warn!("connections still open after the drain period; closing them"),
    }
}

/// One accepted connection, before its protocol is known.
struct Conn {
    kind: Listener,
    app: Arc<App>,
    peer: std::net::SocketAddr,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Conn {
    /// HTTP/1.1 without hyper's header timer: [`keepalive::Clocked`] keeps both clocks.
    fn http1_builder(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(64 * 1024);
        builder
    }

    fn clocked<S>(&self, stream: S) -> keepalive::Clocked<S> {
        keepalive::Clocked::new(stream, self.header_read_timeout, self.idle_timeout)
    }

    /// The TLS handshake (bounded by the header read timeout), then HTTP/2 or HTTP/1.1 as
    /// ALPN chose. Anything that is not a TLS client hello ends in an alert and a close.
    async fn https(self, stream: TcpStream, https: Https, watcher: Watcher) {
        let handshake = tokio::time::timeout(self.header_read_timeout, https.acceptor.accept(stream)).await;
        let tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        if h2 {
            // Each request counts while it runs; none for the idle timeout, and the connection
            // is dropped ([`keepalive::Streams`]).
            let streams = keepalive::Streams::new();
            let (inner, counted) = (service!(self, https.hsts.clone()), streams.clone());
            let service = service_fn(move |req| {
                let busy = counted.begin();
                let answer = inner.call(req);
                async move {
                    let answer = answer.await;
                    drop(busy);
                    answer
                }
            });
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = watcher.watch(conn) => {}
                () = streams.idle(self.idle_timeout) => {
                    tracing::debug!(peer = %self.peer, "closing an idle HTTP/2 connection");
                }
            }
        } else {
            let io = TokioIo::new(self.clocked(tls));
            let conn = self.http1_builder().serve_connection(io, service!(self, https.hsts.clone()));
            let _ = watcher.watch(conn).await;
        }
    }
}
