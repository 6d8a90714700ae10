//! A lean HTTP/1.1 client for load: raw hyper connections kept in a pool, one request per
//! connection at a time, bounded in number.
//!
//! reqwest would do, but its per-request overhead is several times hyper's, and the generator
//! shares a 2-core machine with the node it measures: every microsecond it spends is one the
//! node does not get.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::stats::Outcome;

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

/// One node (or the baseline server) to send to.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
}

impl Target {
    /// Parses `http://host:port` (loopback or any resolvable address).
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// targets are supported: {url}"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
        Ok(Target { addr, host: HeaderValue::from_str(authority)? })
    }
}

/// What came back.
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    pub fn outcome(&self) -> Outcome {
        if self.status.is_success() {
            return Outcome::Ok;
        }
        let code = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Outcome::Status(self.status.as_u16(), code)
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Connections to a set of targets, at most `max` open at once.
pub struct Pool {
    targets: Vec<Target>,
    idle: Vec<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
    permits: Arc<Semaphore>,
    next: AtomicUsize,
    timeout: Duration,
}

impl Pool {
    pub fn new(targets: Vec<Target>, max: usize, timeout: Duration) -> Self {
        let idle = targets.iter().map(|_| Mutex::new(Vec::new())).collect();
        Pool { targets, idle, permits: Arc::new(Semaphore::new(max.max(1))), next: AtomicUsize::new(0), timeout }
    }

    /// Opens up to `per_target` connections to every target and keeps them idle, so that an
    /// open-loop run does not start with a burst of TCP handshakes (what it measures is the
    /// steady state; a connection the node closed later is replaced as usual).
    pub async fn warm(&self, per_target: usize) {
        let per_target = per_target.min(self.permits.available_permits() / self.targets.len().max(1));
        for t in 0..self.targets.len() {
            let missing = per_target.saturating_sub(self.idle[t].lock().len());
            let opened = futures_util::future::join_all((0..missing).map(|_| self.connect(t))).await;
            self.idle[t].lock().extend(opened.into_iter().flatten());
        }
    }

    /// Round-robin over the targets (a list of nodes behaves like a naive load balancer).
    pub fn pick(&self) -> usize {
        self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len()
    }

    /// Sends one request on a pooled connection to target `t` and reads the whole answer.
    pub async fn send(
        &self,
        t: usize,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        bearer: Option<&str>,
    ) -> Result<Answer, Outcome> {
        let _permit = self.permits.acquire().await.map_err(|_| Outcome::Transport("pool closed"))?;
        let target = &self.targets[t];
        let mut req = Request::builder().method(method).uri(path).header(HOST, target.host.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, APPLICATION_JSON.clone());
        }
        if let Some(token) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body.unwrap_or_default())).map_err(|_| Outcome::Transport("bad request"))?;
        // One timer for the whole exchange (connection, request, answer): a timer per stage
        // costs the generator a timer-wheel entry each.
        let exchange = async {
            let mut conn = self.checkout(t).await?;
            let resp = conn.send_request(req).await.map_err(|_| Outcome::Transport("connection reset"))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|_| Outcome::Transport("body reset"))?.to_bytes();
            if !conn.is_closed() {
                self.idle[t].lock().push(conn);
            }
            Ok::<_, Outcome>(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| Outcome::Transport("timeout"))?
    }

    /// A connection ready to send on: a pooled one if the node has kept it open, else a new one.
    ///
    /// A node closes keep-alive connections that stay idle (otpd: `http.header_read_timeout`);
    /// a pooled connection found closed before anything was written to it is dropped, never
    /// counted as a failed request, as an HTTP client library does with its pool.
    async fn checkout(&self, t: usize) -> Result<SendRequest<Full<Bytes>>, Outcome> {
        loop {
            let Some(mut conn) = self.idle[t].lock().pop() else { break };
            if conn.is_closed() {
                continue;
            }
            if conn.ready().await.is_ok() {
                return Ok(conn);
            }
        }
        let mut conn = self.connect(t).await?;
        conn.ready().await.map_err(|_| Outcome::Transport("connection closed"))?;
        Ok(conn)
    }

    async fn connect(&self, t: usize) -> Result<SendRequest<Full<Bytes>>, Outcome> {
        let stream =
            TcpStream::connect(self.targets[t].addr).await.map_err(|_| Outcome::Transport("connect refused"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|_| Outcome::Transport("handshake failed"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
