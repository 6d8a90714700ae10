//! The thin hyper 1.x front end: accept loop, connection cap, graceful shutdown.
//!
//! HTTP/1.1 with keep-alive only: otpd sits behind a load balancer or is called by app
//! backends, where HTTP/1.1 is universal and the cheapest to serve.
//!
//! The modules form layers, each using only those below it: `problem` and `wire` (errors and
//! JSON types) ← `app` (the node's `App`, one request as a `Call`, shared helpers) ← the
//! handlers (`codes`, `account`, `ops`) ← `table` (the route table) ← `routes` (the request
//! path) and `openapi` (the document) ← this module's accept loops.

pub mod account;
pub mod app;
pub mod codes;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod receipts;
pub mod routes;
pub mod signin;
pub mod table;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use app::{App, Listener};

/// Serves `listener` until `shutdown` completes, then lets open requests finish (up to
/// `drain`) before returning. At most `max_connections` connections are served at once; the
/// rest wait in the kernel's accept queue.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    max_connections: usize,
    header_read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    serve_on(listener, Listener::Main, app, max_connections, header_read_timeout, drain, shutdown).await
}

/// [`serve`] for the admin listener: only `/metrics`, `/health/*` and `/v1/admin/*`.
pub async fn serve_admin(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    // A handful of scrapers and operators: a small cap, short timeouts.
    serve_on(listener, Listener::Admin, app, 64, Duration::from_secs(5), Duration::from_secs(2), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    kind: Listener,
    app: Arc<App>,
    max_connections: usize,
    header_read_timeout: Duration,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
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
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move {
                Ok::<_, Infallible>(match kind {
                    Listener::Main => routes::handle(app, req, peer).await,
                    Listener::Admin => routes::handle_admin(app, req, peer).await,
                })
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop((permit, open));
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => tracing::warn!("connections still open after the drain period; closing them"),
    }
}
