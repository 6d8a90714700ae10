//! Where virtual users get their codes, the way a phone would.
//!
//! * `twilio`: the harness serves Twilio's Messages API shape
//!   (`POST /2010-04-01/Accounts/{sid}/Messages.json`, form body `To`, `Body`) on a loopback
//!   port; the node under test is configured with that base URL as its SMS provider, so every
//!   code travels the node's real dispatcher path.
//! * `outbox`: the harness tails the development outbox file of a node in its default
//!   configuration.
//!
//! A virtual user registers interest in its number *before* sending the request that triggers
//! the code, so a fast delivery can never be missed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Routes delivered codes to the virtual users waiting for them.
#[derive(Default)]
pub struct Codes {
    waiters: Mutex<HashMap<String, oneshot::Sender<String>>>,
    delivered: AtomicU64,
}

impl Codes {
    /// Waits for the next code sent to `to` (call before triggering the send).
    pub fn expect(&self, to: &str) -> oneshot::Receiver<String> {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().insert(to.to_owned(), tx);
        rx
    }

    /// Stops waiting for `to` (the send failed).
    pub fn forget(&self, to: &str) {
        self.waiters.lock().remove(to);
    }

    fn deliver(&self, to: &str, code: String) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = self.waiters.lock().remove(to) {
            let _ = tx.send(code);
        }
    }

    /// Messages seen so far (for the report).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Follows the outbox file from its current end, as `tail -f` would.
    pub fn tail_outbox(self: &Arc<Self>, path: PathBuf) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        let mut file = std::fs::OpenOptions::new().read(true).open(&path)?;
        let mut offset = file.seek(SeekFrom::End(0))?;
        let codes = self.clone();
        Ok(tokio::task::spawn_blocking(move || {
            let mut pending = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                if Arc::strong_count(&codes) == 1 {
                    return;
                }
                let n = match file.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        std::thread::sleep(Duration::from_millis(1));
                        // The file may have been truncated or replaced; follow the path.
                        if let Ok(meta) = std::fs::metadata(&path)
                            && meta.len() < offset
                            && let Ok(f) = std::fs::File::open(&path)
                        {
                            file = f;
                            offset = 0;
                        }
                        continue;
                    }
                    Ok(n) => n,
                };
                offset += n as u64;
                pending.extend_from_slice(&buf[..n]);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&line)
                        && let (Some(to), Some(code)) = (v["to"].as_str(), v["code"].as_str())
                    {
                        codes.deliver(to, code.to_owned());
                    }
                }
            }
        }))
    }

    /// Serves a Twilio-shaped Messages endpoint on `listen`; returns its address.
    pub async fn twilio_sink(self: &Arc<Self>, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let codes = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let codes = codes.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let codes = codes.clone();
                        async move { Ok::<_, Infallible>(twilio_message(codes.upgrade(), req).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(addr)
    }
}

static SID: AtomicU64 = AtomicU64::new(1);

async fn twilio_message(codes: Option<Arc<Codes>>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let path_ok = req.uri().path().starts_with("/2010-04-01/Accounts/") && req.uri().path().ends_with("/Messages.json");
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (mut to, mut text) = (String::new(), String::new());
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "To" => to = v.into_owned(),
            "Body" => text = v.into_owned(),
            _ => {}
        }
    }
    if !path_ok || to.is_empty() || text.is_empty() {
        let mut r = Response::new(Full::new(Bytes::from_static(
            br#"{"code":21604,"message":"A 'To' phone number and a 'Body' are required.","more_info":"https://www.twilio.com/docs/errors/21604","status":400}"#,
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    }
    if let (Some(codes), Some(code)) = (codes, extract_code(&text)) {
        codes.deliver(&to, code);
    }
    let sid = format!("SM{:032x}", SID.fetch_add(1, Ordering::Relaxed));
    let json = serde_json::json!({ "sid": sid, "status": "queued", "to": to, "num_segments": "1" });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

/// The code in a message body: the WebOTP line (`@origin #CODE`) when present, else the
/// word after "code is", else the first run of 4–10 digits.
pub fn extract_code(body: &str) -> Option<String> {
    let clean = |s: &str| s.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned();
    if let Some(last) = body.lines().last()
        && last.starts_with('@')
        && let Some((_, code)) = last.split_once(" #")
    {
        return Some(clean(code));
    }
    if let Some((_, rest)) = body.split_once("code is ") {
        let word = clean(rest.split_whitespace().next().unwrap_or(""));
        if (4..=10).contains(&word.len()) {
            return Some(word);
        }
    }
    body.split(|c: char| !c.is_ascii_digit()).find(|run| (4..=10).contains(&run.len())).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_found_in_message_bodies() {
        assert_eq!(extract_code("Your otpd login code is 123456. It expires in 5 minutes.").as_deref(), Some("123456"));
        assert_eq!(extract_code("Your code is AB23CD.\n\n@example.com #AB23CD").as_deref(), Some("AB23CD"));
        assert_eq!(extract_code("Use 4821 to sign in").as_deref(), Some("4821"));
        assert_eq!(extract_code("no code here"), None);
    }
}
