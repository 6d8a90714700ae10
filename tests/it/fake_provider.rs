//! A Twilio-shaped (and webhook-shaped) HTTP server on 127.0.0.1 for delivery tests.
//!
//! It speaks Twilio's Programmable Messaging REST shape: `POST
//! /2010-04-01/Accounts/{AccountSid}/Messages.json` answers `201` with a message resource, and
//! any other path answers Twilio's 404 error document. `POST /hook` answers a JSON webhook
//! batch with `200 {}`. Every request is recorded (arrival time, path, headers, body), and
//! faults are injected on command, one per request in order, or for every request:
//! an HTTP status with Twilio's error JSON and optional `Retry-After`, a slow answer, a held
//! answer (until the test releases it), or a connection reset.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the server does with a request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error answer: the status, Twilio's error code (in the JSON document), and
    /// `Retry-After` seconds.
    Status { status: u16, code: Option<u32>, retry_after: Option<u64> },
    /// Answers normally after this long.
    Slow(Duration),
    /// Answers normally once the test calls [`FakeProvider::release`].
    Hold,
    /// Drops the connection without an answer (SO_LINGER 0: the client sees a reset).
    Reset,
}

impl Fault {
    pub fn status(status: u16) -> Fault {
        Fault::Status { status, code: None, retry_after: None }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    /// The status answered; 0 while unanswered, or when reset.
    pub answered: u16,
}

impl Recorded {
    pub fn form(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.body.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A delivery receipt the fake reports for a Twilio message it took (with a
/// `StatusCallback`): `sent`, then this status, signed with the auth token as Twilio signs.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub status: &'static str,
    pub error_code: Option<u32>,
}

struct State {
    /// Receipts for the next Twilio messages, in order (`None`: report nothing), and the auth
    /// token they are signed with.
    receipts: Mutex<VecDeque<Option<Receipt>>>,
    auth_token: Mutex<String>,
    requests: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
    always: Mutex<Option<Fault>>,
    gate: Semaphore,
}

pub struct FakeProvider {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset on purpose")
    }
}

impl std::error::Error for Reset {}

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            receipts: Mutex::new(VecDeque::new()),
            auth_token: Mutex::new(String::new()),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(VecDeque::new()),
            always: Mutex::new(None),
            gate: Semaphore::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Every close is abortive, so dropping a connection from a handler resets it.
                let _ = stream.set_zero_linger();
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(state.clone(), req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        FakeProvider { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Faults for the next requests, in order (then normal answers, or `always`).
    pub fn then(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.faults.lock().extend(faults);
    }

    /// A fault for every request once the queued ones are used (None: answer normally).
    pub fn always(&self, fault: Option<Fault>) {
        *self.state.always.lock() = fault;
    }

    /// Receipts for the next Twilio messages that name a `StatusCallback`, signed with
    /// `auth_token` (Twilio calls back with form fields `MessageSid`, `MessageStatus`,
    /// `ErrorCode`, `AccountSid`, `To`, `From`, `ApiVersion`).
    pub fn receipts(&self, auth_token: &str, plan: impl IntoIterator<Item = Option<Receipt>>) {
        *self.state.auth_token.lock() = auth_token.to_owned();
        self.state.receipts.lock().extend(plan);
    }

    /// Lets `n` held requests answer.
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().clone()
    }

    /// Waits (at most 10 s) until at least `n` requests arrived.
    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        for _ in 0..1000 {
            let r = self.requests();
            if r.len() >= n {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the fake provider never received {n} request(s): {:?}", self.requests());
    }
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Reset> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let recorded = Recorded {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: 0,
    };
    // Recorded on arrival: a request the client gives up on (and so cancels) still counts.
    let index = {
        let mut requests = state.requests.lock();
        requests.push(recorded.clone());
        requests.len() - 1
    };
    let fault = state.faults.lock().pop_front().or_else(|| state.always.lock().clone());
    let twilio = recorded.path.starts_with("/2010-04-01/Accounts/")
        && (recorded.path.ends_with("/Messages.json") || recorded.path.ends_with("/Calls.json"));
    let hook = recorded.path == "/hook";
    let (status, doc, retry_after) = match fault {
        Some(Fault::Reset) => return Err(Reset),
        Some(Fault::Status { status, code, retry_after }) => {
            // Twilio's messages quote the number; otpd must not log them.
            let to = recorded.form("To").unwrap_or_default();
            let doc = json!({
                "code": code,
                "message": format!("The 'To' number {to} could not be used (injected fault)"),
                "more_info": code.map(|c| format!("https://www.twilio.com/docs/errors/{c}")),
                "status": status,
            });
            (status, doc, retry_after)
        }
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            ok_doc(twilio, hook, &recorded)
        }
        Some(Fault::Hold) => {
            state.gate.acquire().await.expect("the gate stays open").forget();
            ok_doc(twilio, hook, &recorded)
        }
        None => ok_doc(twilio, hook, &recorded),
    };
    state.requests.lock()[index].answered = status;
    if twilio && status == 201 {
        call_back(&state, &recorded, &doc);
    }
    let mut resp = Response::new(Full::new(Bytes::from(doc.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if let Some(secs) = retry_after {
        resp.headers_mut().insert("retry-after", secs.into());
    }
    Ok(resp)
}

/// Reports the planned receipt of a Twilio message, like Twilio: a signed form POST to its
/// `StatusCallback` for `sent`, then for the final status.
fn call_back(state: &State, r: &Recorded, doc: &Value) {
    let Some(url) = r.form("StatusCallback") else { return };
    let Some(Some(receipt)) = state.receipts.lock().pop_front() else { return };
    let token = state.auth_token.lock().clone();
    let sid = doc["sid"].as_str().unwrap_or_default().to_owned();
    let (to, from) = (r.form("To").unwrap_or_default(), r.form("From").unwrap_or_default());
    let call = r.path.ends_with("/Calls.json");
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        // A call reports only its end (Twilio's default StatusCallbackEvent).
        let statuses = if call { vec![receipt.status] } else { vec!["sent", receipt.status] };
        for status in statuses {
            let mut form = if call {
                vec![("CallSid".to_owned(), sid.clone()), ("CallStatus".to_owned(), status.to_owned())]
            } else {
                vec![
                    ("MessageSid".to_owned(), sid.clone()),
                    ("SmsSid".to_owned(), sid.clone()),
                    ("MessageStatus".to_owned(), status.to_owned()),
                    ("SmsStatus".to_owned(), status.to_owned()),
                ]
            };
            form.extend([
                ("AccountSid".to_owned(), format!("AC{}", "0".repeat(32))),
                ("To".to_owned(), to.clone()),
                ("From".to_owned(), from.clone()),
                ("ApiVersion".to_owned(), "2010-04-01".to_owned()),
            ]);
            if let (Some(code), true) = (receipt.error_code, status == receipt.status) {
                form.push(("ErrorCode".to_owned(), code.to_string()));
            }
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
            let _ = client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("x-twilio-signature", twilio_signature(&token, &url, &form))
                .body(body)
                .send()
                .await;
        }
    });
}

/// Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1 (keyed with the auth token) of the URL and
/// the form fields' names and values sorted by name (Twilio's security documentation).
pub fn twilio_signature(token: &str, url: &str, form: &[(String, String)]) -> String {
    use base64::Engine as _;
    let mut sorted: Vec<&(String, String)> = form.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::hmac::sign(&key, data.as_bytes()).as_ref())
}

fn ok_doc(twilio: bool, hook: bool, r: &Recorded) -> (u16, Value, Option<u64>) {
    if twilio {
        let prefix = if r.path.ends_with("/Calls.json") { "CA" } else { "SM" };
        let sid = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
        (201, json!({ "sid": sid, "status": "queued", "to": r.form("To"), "body": r.form("Body") }), None)
    } else if hook {
        (200, json!({}), None)
    } else {
        let doc = json!({ "code": 20404, "message": "The requested resource was not found",
                          "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404 });
        (404, doc, None)
    }
}
