//! Scenarios: what a virtual user does, step by step, as a real app would.
//!
//! | scenario | steps |
//! | --- | --- |
//! | `signup` | register → code arrives → register/verify |
//! | `login` | login → code arrives → login/verify → me |
//! | `send-verify` | login → code arrives → login/verify (the code login alone: `login` without `me`) |
//! | `refresh` | token/refresh (rotates the user's refresh token) |
//! | `device-login` | device-login/challenge → sign (P-256, on the client) → device-login/verify |
//! | `passkey-login` | passkey-login/options → a WebAuthn assertion (P-256, on the client) → passkey-login/verify |
//! | `send` | login (the send path alone, for signed-up users) |
//! | `send-unknown` | login for numbers without an account (enumeration-safe decoys) |
//! | `verify` | login/verify with a code issued in the preparation phase (the verify path alone) |
//! | `ping` | one POST to the bare hyper baseline server |
//!
//! `login`, `send-verify`, `send`, `refresh` and `device-login` need signed-up users: `--users N` signs them up
//! before the measured phase (and, for `device-login` and `passkey-login`, enrols a P-256 device
//! key for each, as a phone's secure hardware would hold it, and registers it as a passkey too). A node with its default limits allows one code per number and purpose every
//! 30 s and five per 10 minutes, so a pool of N users sustains about N/30 logins per second; for
//! capacity runs, relax the node's limits (see docs/PERFORMANCE.md) or use a larger pool.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::ValueEnum;
use hyper::Method;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::client::{Answer, Pool};
use crate::codes::Codes;
use crate::stats::{CODE_DELIVERY, Outcome, Recorder};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Signup,
    Login,
    SendVerify,
    Refresh,
    DeviceLogin,
    PasskeyLogin,
    Send,
    SendUnknown,
    Verify,
    Ping,
}

/// A weighted choice of scenarios (`mixed`), or a single one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Mix(pub Vec<(Kind, u32)>);

impl Mix {
    pub fn single(kind: Kind) -> Self {
        Mix(vec![(kind, 1)])
    }

    /// `login=70,signup=20,refresh=10`
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut out = Vec::new();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| anyhow::anyhow!("expected name=weight, got {part:?}"))?;
            let kind = Kind::from_str(name.trim(), true).map_err(|e| anyhow::anyhow!("{e}"))?;
            out.push((kind, weight.trim().parse()?));
        }
        anyhow::ensure!(out.iter().any(|(_, w)| *w > 0), "a mix needs at least one positive weight");
        Ok(Mix(out))
    }

    pub fn pick(&self, n: u64) -> Kind {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut x = n % total.max(1);
        for (kind, w) in &self.0 {
            if x < u64::from(*w) {
                return *kind;
            }
            x -= u64::from(*w);
        }
        self.0[0].0
    }

    /// The most requests one scenario of this mix records (code deliveries count as a step).
    pub fn max_requests_per_scenario(&self) -> u32 {
        let of = |k: Kind| match k {
            Kind::Login => 4,
            Kind::Signup | Kind::SendVerify => 3,
            Kind::DeviceLogin | Kind::PasskeyLogin => 2,
            Kind::Refresh | Kind::Send | Kind::SendUnknown | Kind::Verify | Kind::Ping => 1,
        };
        self.0.iter().filter(|(_, w)| *w > 0).map(|(k, _)| of(*k)).max().unwrap_or(1)
    }

    pub fn needs_users(&self) -> bool {
        self.0.iter().any(|(k, w)| {
            *w > 0
                && matches!(
                    k,
                    Kind::Login
                        | Kind::SendVerify
                        | Kind::Send
                        | Kind::Refresh
                        | Kind::DeviceLogin
                        | Kind::PasskeyLogin
                )
        })
    }

    pub fn needs_devices(&self) -> bool {
        self.0.iter().any(|(k, w)| *w > 0 && matches!(k, Kind::DeviceLogin | Kind::PasskeyLogin))
    }

    pub fn needs_codes(&self) -> bool {
        self.0.iter().any(|(k, w)| *w > 0 && matches!(k, Kind::Signup | Kind::Login | Kind::SendVerify))
    }
}

/// Area codes whose numbers libphonenumber accepts as valid US numbers.
const AREAS: [u16; 16] = [202, 212, 213, 305, 312, 404, 415, 512, 617, 646, 702, 713, 718, 773, 805, 917];

/// Hands out distinct valid phone numbers, starting at a per-run offset so that runs against
/// the same node do not reuse each other's numbers.
pub struct Identities {
    next: AtomicU64,
}

impl Identities {
    pub fn new(offset: u64) -> Self {
        Identities { next: AtomicU64::new(offset) }
    }

    pub fn next_phone(&self) -> String {
        phone(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Central-office codes used: 200–999 without the N11 service codes, 555 and the 950/958/959/976
/// special ranges.
static EXCHANGES: std::sync::LazyLock<Vec<u16>> = std::sync::LazyLock::new(|| {
    (200..1000u16).filter(|e| e % 100 != 11 && ![555, 950, 958, 959, 976].contains(e)).collect()
});

/// The `i`-th number of the space: area × exchange × line, distinct for every `i` below
/// 16 × 795 × 10 000 (≈ 127 million), then wrapping.
pub fn phone(i: u64) -> String {
    let area = AREAS[(i % AREAS.len() as u64) as usize];
    let rest = i / AREAS.len() as u64;
    let line = rest % 10_000;
    let exchange = EXCHANGES[((rest / 10_000) % EXCHANGES.len() as u64) as usize];
    format!("+1{area}{exchange:03}{line:04}")
}

/// A signed-up virtual user.
#[derive(Clone, Debug)]
pub struct User {
    pub phone: String,
    pub access: String,
    pub refresh: String,
    /// When this user may be sent another code (the node's resend cooldown).
    pub free_at: Instant,
    /// An enrolled device key, when the run logs in with devices.
    pub device: Option<Arc<Device>>,
}

/// A device key as a phone keeps it, and the id the node gave it; the same key is registered
/// as a passkey (credential id, the account's user handle, its signature counter).
pub struct Device {
    pub id: String,
    pub key: p256::ecdsa::SigningKey,
    pub passkey: Option<(Vec<u8>, Vec<u8>)>,
    pub counter: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({})", self.id)
    }
}

/// Everything the virtual users share.
pub struct World {
    pub pool: Pool,
    pub codes: Arc<Codes>,
    pub ids: Identities,
    pub users: Mutex<VecDeque<User>>,
    pub prepared: Mutex<VecDeque<(String, String)>>,
    pub code_timeout: Duration,
    /// How long a user rests after a code was sent to them (match the node's cooldown).
    pub user_cooldown: Duration,
    /// Enrol a device key for every user signed up (for `device-login`).
    pub enrol_devices: bool,
    /// The node's `tokens.audience` (part of the signed device-login message).
    pub audience: String,
    /// Set when a `verify` found no prepared code left: the run ends there (see `exhausted`).
    pub out_of_codes: AtomicBool,
}

impl World {
    /// True once the prepared codes are used up: a `verify` run ends there, its rate taken
    /// over the time it really ran (`--prepare` sets how many codes there are).
    pub fn exhausted(&self) -> bool {
        self.out_of_codes.load(Ordering::Relaxed)
    }

    /// Runs one instance of `kind` meant to start at `intended`; true if every step succeeded.
    pub async fn run(&self, rec: &Recorder, kind: Kind, intended: Instant) -> bool {
        let ok = match kind {
            Kind::Signup => self.signup(rec, intended).await.is_some(),
            Kind::Login => self.login(rec, intended, true).await,
            Kind::SendVerify => self.login(rec, intended, false).await,
            Kind::Refresh => self.refresh(rec, intended).await,
            Kind::DeviceLogin => self.device_login(rec, intended).await,
            Kind::PasskeyLogin => self.passkey_login(rec, intended).await,
            Kind::Send => self.send(rec, intended).await,
            Kind::SendUnknown => {
                let phone = self.ids.next_phone();
                let t = self.pool.pick();
                self.step(rec, "login", t, intended, Method::POST, "/v1/login", Some(json!({ "phone": phone })), None)
                    .await
                    .is_some()
            }
            Kind::Verify => match self.verify(rec, intended).await {
                // No code was left to try: no scenario ran, so none failed.
                None => return false,
                Some(ok) => ok,
            },
            Kind::Ping => {
                // The same bytes every time: the generator's cheapest request, to measure the ceiling.
                const PING: &[u8] = br#"{"phone":"+12022000000"}"#;
                let t = self.pool.pick();
                let body = Some(Bytes::from_static(PING));
                self.send_step(rec, "ping", t, intended, Method::POST, "/v1/login", body, None).await.is_some()
            }
        };
        rec.scenario(ok);
        ok
    }

    /// One request, recorded under `name`. Returns the answer if it was a success.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        rec: &Recorder,
        name: &'static str,
        target: usize,
        intended: Instant,
        method: Method,
        path: &str,
        body: Option<Value>,
        bearer: Option<&str>,
    ) -> Option<Answer> {
        let bytes = body.map(|b| Bytes::from(b.to_string()));
        self.send_step(rec, name, target, intended, method, path, bytes, bearer).await
    }

    /// [`World::step`] with the body already encoded.
    #[allow(clippy::too_many_arguments)]
    async fn send_step(
        &self,
        rec: &Recorder,
        name: &'static str,
        target: usize,
        intended: Instant,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        bearer: Option<&str>,
    ) -> Option<Answer> {
        let result = self.pool.send(target, method, path, body, bearer).await;
        let done = Instant::now();
        match result {
            Ok(answer) => {
                let outcome = answer.outcome();
                rec.record(name, intended, done, &outcome);
                matches!(outcome, Outcome::Ok).then_some(answer)
            }
            Err(outcome) => {
                rec.record(name, intended, done, &outcome);
                None
            }
        }
    }

    /// Waits for the code sent to `phone`, recording the delivery time as its own step.
    async fn await_code(
        &self,
        rec: &Recorder,
        phone: &str,
        rx: tokio::sync::oneshot::Receiver<String>,
        since: Instant,
    ) -> Option<String> {
        match tokio::time::timeout(self.code_timeout, rx).await {
            Ok(Ok(code)) => {
                rec.record(CODE_DELIVERY, since, Instant::now(), &Outcome::Ok);
                Some(code)
            }
            _ => {
                self.codes.forget(phone);
                rec.record(CODE_DELIVERY, since, Instant::now(), &Outcome::Transport("code never arrived"));
                None
            }
        }
    }

    pub async fn signup(&self, rec: &Recorder, intended: Instant) -> Option<User> {
        let phone = self.ids.next_phone();
        let t = self.pool.pick();
        let rx = self.codes.expect(&phone);
        let body = json!({ "phone": phone, "first_name": "Load", "last_name": "Test" });
        if self.step(rec, "register", t, intended, Method::POST, "/v1/register", Some(body), None).await.is_none() {
            self.codes.forget(&phone);
            return None;
        }
        let sent = Instant::now();
        let code = self.await_code(rec, &phone, rx, sent).await?;
        let body = json!({ "phone": phone, "code": code });
        let answer = self
            .step(rec, "register_verify", t, Instant::now(), Method::POST, "/v1/register/verify", Some(body), None)
            .await?;
        // The registration code does not count against the login cooldown (another purpose).
        let mut user = user_from_tokens(&phone, &answer, Instant::now(), None)?;
        if self.enrol_devices {
            user.device = Some(Arc::new(self.enrol(rec, t, &user.access).await?));
        }
        self.users.lock().push_back(user.clone());
        Some(user)
    }

    /// A login by code; `me` reads the account with the new access token as an app would.
    async fn login(&self, rec: &Recorder, intended: Instant, me: bool) -> bool {
        let Some(mut user) = self.take_user(rec, intended, "login", true) else { return false };
        let t = self.pool.pick();
        let rx = self.codes.expect(&user.phone);
        let sent = self
            .step(rec, "login", t, intended, Method::POST, "/v1/login", Some(json!({ "phone": user.phone })), None)
            .await;
        let ok = async {
            if sent.is_none() {
                self.codes.forget(&user.phone);
                return false;
            }
            let Some(code) = self.await_code(rec, &user.phone, rx, Instant::now()).await else { return false };
            let body = json!({ "phone": user.phone, "code": code });
            let Some(answer) = self
                .step(rec, "login_verify", t, Instant::now(), Method::POST, "/v1/login/verify", Some(body), None)
                .await
            else {
                return false;
            };
            let Some(fresh) = user_from_tokens(&user.phone, &answer, user.free_at, user.device.clone()) else {
                return false;
            };
            user = fresh;
            !me || self
                .step(rec, "me", t, Instant::now(), Method::GET, "/v1/me", None, Some(&user.access))
                .await
                .is_some()
        }
        .await;
        self.users.lock().push_back(user);
        ok
    }

    async fn send(&self, rec: &Recorder, intended: Instant) -> bool {
        let Some(user) = self.take_user(rec, intended, "login", true) else { return false };
        let t = self.pool.pick();
        let ok = self
            .step(rec, "login", t, intended, Method::POST, "/v1/login", Some(json!({ "phone": user.phone })), None)
            .await;
        self.users.lock().push_back(user);
        ok.is_some()
    }

    async fn refresh(&self, rec: &Recorder, intended: Instant) -> bool {
        let Some(mut user) = self.take_user(rec, intended, "refresh", false) else { return false };
        let t = self.pool.pick();
        let body = json!({ "refresh_token": user.refresh });
        let answer = self.step(rec, "refresh", t, intended, Method::POST, "/v1/token/refresh", Some(body), None).await;
        let ok = match answer.as_ref().and_then(|a| user_from_tokens(&user.phone, a, user.free_at, user.device.clone()))
        {
            Some(fresh) => {
                user = fresh;
                true
            }
            None => false,
        };
        self.users.lock().push_back(user);
        ok
    }

    /// Enrols a fresh P-256 key (SPKI DER, base64) with the access token of a login by code.
    async fn enrol(&self, rec: &Recorder, t: usize, access: &str) -> Option<Device> {
        use p256::pkcs8::EncodePublicKey as _;
        // 32 random bytes are a valid scalar but with probability ~2^-128; try again if not.
        let key = std::iter::repeat_with(|| p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()))
            .find_map(Result::ok)?;
        let spki = key.verifying_key().to_public_key_der().ok()?;
        let body = json!({ "name": "load test phone", "platform": "ios", "public_key": base64(spki.as_bytes()) });
        let answer = self
            .step(rec, "device_enrol", t, Instant::now(), Method::POST, "/v1/devices", Some(body), Some(access))
            .await?;
        let id = answer.json()?["id"].as_str()?.to_owned();
        let passkey = self.register_passkey(rec, t, access, &key).await?;
        Some(Device { id, key, passkey: Some(passkey), counter: Default::default() })
    }

    /// Registers `key` as a passkey (attestation `none`, built here as an authenticator does);
    /// returns its credential id and the account's user handle.
    async fn register_passkey(
        &self,
        rec: &Recorder,
        t: usize,
        access: &str,
        key: &p256::ecdsa::SigningKey,
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let options = self
            .step(rec, "passkey_options", t, Instant::now(), Method::POST, "/v1/passkeys/options", None, Some(access))
            .await?;
        let options = options.json()?;
        let challenge = options["options"]["publicKey"]["challenge"].as_str()?.to_owned();
        let user_handle = b64url_decode(options["options"]["publicKey"]["user"]["id"].as_str()?)?;
        let id: Vec<u8> = rand::random::<[u8; 32]>().to_vec();
        let point = key.verifying_key().to_sec1_point(false);
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
        cose.extend_from_slice(point.x()?);
        cose.extend_from_slice(&[0x22, 0x58, 0x20]);
        cose.extend_from_slice(point.y()?);
        let mut auth = sha256(PASSKEY_RP_ID.as_bytes()).to_vec();
        auth.push(0x45);
        auth.extend_from_slice(&[0; 4 + 16]);
        auth.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth.extend_from_slice(&id);
        auth.extend_from_slice(&cose);
        let mut att = vec![0xa3, 0x63];
        att.extend_from_slice(b"fmt");
        att.push(0x64);
        att.extend_from_slice(b"none");
        att.push(0x67);
        att.extend_from_slice(b"attStmt");
        att.push(0xa0);
        att.push(0x68);
        att.extend_from_slice(b"authData");
        att.extend_from_slice(&[0x59]);
        att.extend_from_slice(&(auth.len() as u16).to_be_bytes());
        att.extend_from_slice(&auth);
        let credential = json!({
            "id": b64url(&id), "rawId": b64url(&id), "type": "public-key",
            "response": { "clientDataJSON": b64url(&client_data("webauthn.create", &challenge)),
                          "attestationObject": b64url(&att) },
        });
        let body = json!({ "name": "load test passkey", "credential": credential });
        self.step(rec, "passkey_register", t, Instant::now(), Method::POST, "/v1/passkeys", Some(body), Some(access))
            .await?;
        Some((id, user_handle))
    }

    async fn passkey_login(&self, rec: &Recorder, intended: Instant) -> bool {
        use p256::ecdsa::signature::Signer as _;
        let Some(mut user) = self.take_user(rec, intended, "passkey_options", false) else { return false };
        let Some((device, (id, handle))) = user.device.clone().and_then(|d| d.passkey.clone().map(|p| (d, p))) else {
            rec.record("passkey_options", intended, Instant::now(), &Outcome::Transport("user has no passkey (setup)"));
            self.users.lock().push_back(user);
            return false;
        };
        let t = self.pool.pick();
        let ok = async {
            let options = self
                .step(rec, "passkey_options", t, intended, Method::POST, "/v1/passkey-login/options", None, None)
                .await?;
            let challenge = options.json()?["options"]["publicKey"]["challenge"].as_str()?.to_owned();
            let client = client_data("webauthn.get", &challenge);
            let counter = device.counter.fetch_add(1, Ordering::Relaxed) + 1;
            let mut auth = sha256(PASSKEY_RP_ID.as_bytes()).to_vec();
            auth.push(0x05);
            auth.extend_from_slice(&counter.to_be_bytes());
            let mut signed = auth.clone();
            signed.extend_from_slice(&sha256(&client));
            let signature: p256::ecdsa::Signature = device.key.sign(&signed);
            let credential = json!({
                "id": b64url(&id), "rawId": b64url(&id), "type": "public-key",
                "response": { "clientDataJSON": b64url(&client), "authenticatorData": b64url(&auth),
                              "signature": b64url(signature.to_der().as_bytes()), "userHandle": b64url(&handle) },
            });
            let body = json!({ "credential": credential });
            let answer = self
                .step(
                    rec,
                    "passkey_verify",
                    t,
                    Instant::now(),
                    Method::POST,
                    "/v1/passkey-login/verify",
                    Some(body),
                    None,
                )
                .await?;
            user_from_tokens(&user.phone, &answer, user.free_at, Some(device.clone()))
        }
        .await;
        let success = ok.is_some();
        if let Some(fresh) = ok {
            user = fresh;
        }
        self.users.lock().push_back(user);
        success
    }

    async fn device_login(&self, rec: &Recorder, intended: Instant) -> bool {
        use p256::ecdsa::signature::Signer as _;
        let Some(mut user) = self.take_user(rec, intended, "device_challenge", false) else { return false };
        let Some(device) = user.device.clone() else {
            rec.record("device_challenge", intended, Instant::now(), &Outcome::Transport("user has no device (setup)"));
            self.users.lock().push_back(user);
            return false;
        };
        let t = self.pool.pick();
        let ok = async {
            let body = json!({ "device_id": device.id });
            let challenge = self
                .step(
                    rec,
                    "device_challenge",
                    t,
                    intended,
                    Method::POST,
                    "/v1/device-login/challenge",
                    Some(body),
                    None,
                )
                .await?;
            let nonce = challenge.json()?["nonce"].as_str()?.to_owned();
            let message = format!("otpd-device-login-v1\n{}\n{}\n{nonce}", self.audience, device.id);
            let signature: p256::ecdsa::Signature = device.key.sign(message.as_bytes());
            let body =
                json!({ "device_id": device.id, "nonce": nonce, "signature": base64(signature.to_der().as_bytes()) });
            let answer = self
                .step(
                    rec,
                    "device_verify",
                    t,
                    Instant::now(),
                    Method::POST,
                    "/v1/device-login/verify",
                    Some(body),
                    None,
                )
                .await?;
            user_from_tokens(&user.phone, &answer, user.free_at, Some(device.clone()))
        }
        .await;
        let success = ok.is_some();
        if let Some(fresh) = ok {
            user = fresh;
        }
        self.users.lock().push_back(user);
        success
    }

    /// One verify with a prepared code; `None` once none is left (the driver then stops).
    async fn verify(&self, rec: &Recorder, intended: Instant) -> Option<bool> {
        let Some((phone, code)) = self.prepared.lock().pop_front() else {
            self.out_of_codes.store(true, Ordering::Relaxed);
            return None;
        };
        let t = self.pool.pick();
        let body = json!({ "phone": phone, "code": code });
        let answer = self.step(rec, "login_verify", t, intended, Method::POST, "/v1/login/verify", Some(body), None);
        Some(answer.await.is_some())
    }

    /// The user who rested longest, if their cooldown is over. A code-sending step calls
    /// this with `sends = true`, which starts the user's next rest.
    fn take_user(&self, rec: &Recorder, intended: Instant, step: &'static str, sends: bool) -> Option<User> {
        let now = Instant::now();
        let user = {
            let mut users = self.users.lock();
            match users.front() {
                Some(u) if !sends || u.free_at <= now => users.pop_front(),
                _ => None,
            }
        };
        match user {
            Some(mut u) => {
                if sends {
                    u.free_at = now + self.user_cooldown;
                }
                Some(u)
            }
            None => {
                rec.record(step, intended, now, &Outcome::Transport("no signed-up user free (raise --users)"));
                None
            }
        }
    }

    /// Issues one login code to each of up to `n` users and keeps (phone, code) for `verify`.
    pub async fn prepare_codes(self: &Arc<Self>, rec: &Recorder, n: usize, concurrency: usize) {
        let users: Vec<User> = {
            let mut pool = self.users.lock();
            let k = n.min(pool.len());
            pool.drain(..k).collect()
        };
        let queue = Arc::new(Mutex::new(users));
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let world = self.clone();
            let queue = queue.clone();
            tasks.push(async move {
                loop {
                    let Some(mut user) = queue.lock().pop() else { break };
                    user.free_at = Instant::now() + world.user_cooldown;
                    let t = world.pool.pick();
                    let rx = world.codes.expect(&user.phone);
                    let body = json!({ "phone": user.phone });
                    if world
                        .step(rec, "prepare_login", t, Instant::now(), Method::POST, "/v1/login", Some(body), None)
                        .await
                        .is_some()
                        && let Some(code) = world.await_code(rec, &user.phone, rx, Instant::now()).await
                    {
                        world.prepared.lock().push_back((user.phone.clone(), code));
                    }
                    world.users.lock().push_back(user);
                }
            });
        }
        futures_join_all(tasks).await;
    }

    /// Signs up `n` users with `concurrency` requests in flight.
    pub async fn sign_up_users(self: &Arc<Self>, rec: &Recorder, n: usize, concurrency: usize) {
        let remaining = Arc::new(AtomicU64::new(n as u64));
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let world = self.clone();
            let remaining = remaining.clone();
            tasks.push(async move {
                while remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1)).is_ok() {
                    world.signup(rec, Instant::now()).await;
                }
            });
        }
        futures_join_all(tasks).await;
    }
}

fn user_from_tokens(phone: &str, answer: &Answer, free_at: Instant, device: Option<Arc<Device>>) -> Option<User> {
    let v = answer.json()?;
    Some(User {
        phone: phone.to_owned(),
        access: v["access_token"].as_str()?.to_owned(),
        refresh: v["refresh_token"].as_str()?.to_owned(),
        free_at,
        device,
    })
}

/// The relying party and origin of the node's default `[passkeys]` section.
const PASSKEY_RP_ID: &str = "localhost";
const PASSKEY_ORIGIN: &str = "http://localhost:8080";

fn client_data(kind: &str, challenge: &str) -> Vec<u8> {
    json!({ "type": kind, "challenge": challenge, "origin": PASSKEY_ORIGIN, "crossOrigin": false })
        .to_string()
        .into_bytes()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Runs futures concurrently on the current task (they borrow the recorder).
pub async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: Vec<F>) {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        futs.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futs.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_area_and_exchange_is_a_valid_number() {
        for (i, area) in AREAS.iter().enumerate() {
            for (j, exchange) in EXCHANGES.iter().enumerate() {
                let text = format!("+1{area}{exchange:03}{:04}", (i * 31 + j * 7) % 10_000);
                let n = phonenumber::parse(None, &text).unwrap();
                assert!(phonenumber::is_valid(&n), "{text} is not valid for libphonenumber");
            }
        }
    }

    #[test]
    fn phones_are_distinct_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for i in (0..2_000_000u64).step_by(997) {
            let p = phone(i);
            assert_eq!(p.len(), 12, "{p}");
            assert!(p.starts_with("+1"));
            let exchange = &p[5..8];
            assert!(!exchange.ends_with("11"), "{p}");
            assert!(seen.insert(p));
        }
    }

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let m = Mix::parse("login=3,signup=1").unwrap();
        let picks: Vec<Kind> = (0..4).map(|i| m.pick(i)).collect();
        assert_eq!(picks, vec![Kind::Login, Kind::Login, Kind::Login, Kind::Signup]);
        assert!(Mix::parse("login=0").is_err());
        assert!(Mix::parse("nothing=1").is_err());
    }
}
