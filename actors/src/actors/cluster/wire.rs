//! The bytes a forwarded request and its answer travel as between nodes, each authenticated.
//!
//! A fixed little-endian layout, versioned by its first byte, decoded without trusting a
//! single length: a bug (or a newer node) gets `Malformed` back, never a panic in the gateway.
//!
//! ```text
//! request: version(1)=3 nonce(16) sender_len(1) sender(≤64) kind(1) body tag(32)
//!   Issue(1)  body: subject(16) purpose(1) sent_ms(8) salt(16) digest(16) profile
//!   Verify(2) body: subject(16) purpose(1) sent_ms(8) len(1) attempt(len ≤ MAX_CODE_LENGTH)
//!   Redeem(3) body: subject(16) purpose(1) sent_ms(8) nonce(32) signature_valid(1)
//!   Peers(4)  body: none (who this node is connected to, for the dialer)
//!   tag = BLAKE3 keyed with the request key, over every byte before it
//! answer:  version(1)=3 kind(1) body tag(32)
//!   Issued(0): expires_ms(8) registration(1)     Checked(1): outcome(1) attempts_left(1) profile
//!   ShardTimeout(2), ShardUnavailable(3), Malformed(4), Refused(5): no body
//!   Peers(6): count(1), then count × (name_len(1) name address_len(2) address)
//!   tag = BLAKE3 keyed with the answer key, over the request's tag, then every byte before it
//! profile: 0 (none) | 1 first(text) last(text) email(0 | 1 text);  text: len(2, LE) UTF-8
//! ```
//!
//! What the owner believes of a request, and why:
//! * `sent_ms` is the command's `now` on the sender's clock. The owner does not run the command
//!   at it: the gateway runs every command at its own clock's `now` ([`super::gateway`]), so a
//!   sender cannot move a code's expiry or revive an expired one. `sent_ms` serves only the
//!   replay window ([`super::replay`]), which compares one sender's stamps with each other.
//! * The seal (`salt`, `digest`) and the profile come from the node that made the code and
//!   sends it to the user: the owner cannot make them itself, so it believes them because the
//!   tag proves a node of this cluster sent them.
//! * `signature_valid` is the sender's check of a device's signature against the device's key,
//!   read from the store by the node that took the call; the owner holds only the challenge,
//!   not the key, so the same holds: believed because the tag verifies, and only then.
//!
//! Why a MAC: the owner acts on what the frame says (the seal a code is checked against,
//! whether a device signature was valid) and the sender acts on the verdict (`Verified` signs
//! the user in). Whoever could write to the link could otherwise turn `Wrong` into `Verified`.
//! So every frame carries a keyed BLAKE3 tag, and a frame whose tag does not verify is refused
//! before a byte of it is read. The answer's tag covers the
//! request's tag, which covers a fresh random nonce: an answer is good for the one request it
//! answers, never for another. Requests and answers have keys of their own, so neither can
//! pass for the other. The replay of a whole request is the gateway's to refuse (`replay`).
//!
//! The keys ([`FrameKeys`]) are derived from the two secrets every node already shares: the
//! cluster cookie and `secrets.hash_key`. Both, because each covers a leak of the other: the
//! cookie alone (it sits in each node's environment, and ractor_cluster's handshake proves it)
//! lets a process join the cluster, but not forge a verdict; the hash key alone is not enough
//! either.
//!
//! The clear code never travels: `Issue` carries the seal (salt and keyed digest) made by the
//! node that sends the code. `Verify` carries what the user typed, which is why a link that
//! leaves the host must be TLS (`cluster.tls_*`).

use std::fmt;

use crate::actors::shard::{ChallengeKey, ShardAnswer, ShardCommand};
use crate::actors::supervisor::ShardError;
use crate::rules::challenge::{Profile, Purpose, VerifyOutcome};
use crate::rules::clock::Timestamp;
use crate::rules::code::{Code, Sealed};
use crate::rules::device_key::Nonce;
use crate::rules::keys::IdentHash;

/// The layout above. Versions 1 and 2 had no tags (2 added the profile); a node refuses the
/// frames of every other version.
pub const VERSION: u8 = 3;
/// Bytes of a frame's tag.
pub const TAG_LEN: usize = 32;
/// Bytes of a request's nonce.
pub const NONCE_LEN: usize = 16;
/// Longest sender name (node names are at most 64 characters).
pub const MAX_SENDER: usize = 64;

/// Longest text of a profile field on the wire (the API bounds them far lower).
const MAX_TEXT: usize = 1024;

const ISSUE: u8 = 1;
const VERIFY: u8 = 2;
const REDEEM: u8 = 3;
const PEERS: u8 = 4;

/// A request's tag: what its answer is bound to.
pub type Tag = [u8; TAG_LEN];

/// The keys every frame is authenticated with; the same on every node of one cluster.
#[derive(Clone)]
pub struct FrameKeys {
    request: [u8; 32],
    answer: [u8; 32],
}

impl FrameKeys {
    /// Derives both keys from `secrets.hash_key` and the cluster cookie.
    pub fn derive(hash_key: &[u8; 32], cookie: &[u8]) -> FrameKeys {
        // The hash key has a fixed length, so the concatenation is unambiguous.
        let mut material = Vec::with_capacity(32 + cookie.len());
        material.extend_from_slice(hash_key);
        material.extend_from_slice(cookie);
        FrameKeys {
            request: blake3::derive_key("otpd cluster request frame v2", &material),
            answer: blake3::derive_key("otpd cluster answer frame v2", &material),
        }
    }

    fn request_tag(&self, signed: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.request, signed)
    }

    fn answer_tag(&self, request: &Tag, signed: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.answer);
        hasher.update(request);
        hasher.update(signed);
        hasher.finalize()
    }
}

impl fmt::Debug for FrameKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameKeys(..)")
    }
}

/// Why a remote node did not produce an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("owner's shard: {0}")]
    Shard(ShardError),
    #[error("the owner could not read the forwarded request")]
    Malformed,
    /// The owner refused the request: its tag did not verify (the nodes do not share the same
    /// cookie and hash key, or it was altered on the way), or it was a replay.
    #[error("the owner refused the forwarded request (not authentic, or a replay)")]
    Refused,
}

/// Another member, as a node that is connected to it knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node name.
    pub name: String,
    /// `host:port` it advertises: where to dial it.
    pub address: String,
}

/// What a request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Run a command on the owner's shard.
    Shard(ShardCommand),
    /// List the members this node is connected to.
    Peers,
}

/// A request as the gateway reads it.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// The node name the request says it comes from (authenticated with the rest).
    pub sender: String,
    pub nonce: [u8; NONCE_LEN],
    pub request: Request,
}

/// An answer as the requester reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Shard(Result<ShardAnswer, RemoteError>),
    Peers(Vec<Peer>),
}

/// Why the gateway does not run a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Its tag does not verify: answered `Refused`, and nothing in it is believed.
    Unauthentic,
    /// Authentic, but not a request this node understands: answered `Malformed`.
    Malformed,
}

/// Why the requester does not believe an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Its tag does not verify for the request it claims to answer.
    Unauthentic,
    /// Authentic, but not an answer this node understands.
    Malformed,
}

/// A request's bytes and the tag its answer must be bound to.
pub struct Framed {
    pub bytes: Vec<u8>,
    pub tag: Tag,
}

/// Encodes and authenticates a request; `nonce` must be fresh and random for each request.
pub fn encode_request(keys: &FrameKeys, sender: &str, nonce: [u8; NONCE_LEN], request: &Request) -> Framed {
    let sender = &sender.as_bytes()[..sender.len().min(MAX_SENDER)];
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.push(sender.len() as u8);
    out.extend_from_slice(sender);
    match request {
        Request::Peers => out.push(PEERS),
        Request::Shard(cmd) => encode_command(cmd, &mut out),
    }
    let tag = *keys.request_tag(&out).as_bytes();
    out.extend_from_slice(&tag);
    Framed { bytes: out, tag }
}

fn encode_command(cmd: &ShardCommand, out: &mut Vec<u8>) {
    let (kind, key, now) = match cmd {
        ShardCommand::Issue { key, now, .. } => (ISSUE, key, now),
        ShardCommand::Verify { key, now, .. } => (VERIFY, key, now),
        ShardCommand::Redeem { key, now, .. } => (REDEEM, key, now),
    };
    out.push(kind);
    out.extend_from_slice(&key.subject.0);
    out.push(key.purpose as u8);
    out.extend_from_slice(&now.as_millis().to_le_bytes());
    match cmd {
        ShardCommand::Issue { sealed, profile, .. } => {
            out.extend_from_slice(&sealed.salt);
            out.extend_from_slice(&sealed.digest);
            put_profile(out, profile.as_deref());
        }
        ShardCommand::Verify { attempt, .. } => {
            let bytes = attempt.as_bytes();
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
        ShardCommand::Redeem { nonce, signature_valid, .. } => {
            out.extend_from_slice(nonce.as_bytes());
            out.push(u8::from(*signature_valid));
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(MAX_TEXT)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_profile(out: &mut Vec<u8>, profile: Option<&Profile>) {
    let Some(p) = profile else {
        out.push(0);
        return;
    };
    out.push(1);
    put_text(out, &p.first_name);
    put_text(out, &p.last_name);
    match &p.email {
        Some(email) => {
            out.push(1);
            put_text(out, email);
        }
        None => out.push(0),
    }
}

/// Splits a frame into what its tag covers and the tag. `None`: too short to hold a tag.
fn split_tag(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    bytes.len().checked_sub(TAG_LEN).map(|at| bytes.split_at(at))
}

/// The tag a request carries (zeros when it is too short to carry one): what the gateway binds
/// its answer to, even when it refuses the request.
pub fn request_tag(bytes: &[u8]) -> Tag {
    split_tag(bytes).and_then(|(_, tag)| tag.try_into().ok()).unwrap_or([0; TAG_LEN])
}

/// Reads a request, after checking its tag (in constant time; `blake3::Hash`'s `==` is).
pub fn decode_request(keys: &FrameKeys, bytes: &[u8]) -> Result<Received, RequestError> {
    let (signed, tag) = split_tag(bytes).ok_or(RequestError::Unauthentic)?;
    let tag: Tag = tag.try_into().map_err(|_| RequestError::Unauthentic)?;
    if keys.request_tag(signed) != blake3::Hash::from(tag) {
        return Err(RequestError::Unauthentic);
    }
    read_request(signed).ok_or(RequestError::Malformed)
}

fn read_request(signed: &[u8]) -> Option<Received> {
    let mut r = Reader(signed);
    if r.byte()? != VERSION {
        return None;
    }
    let nonce = r.array()?;
    let len = usize::from(r.byte()?);
    if len > MAX_SENDER {
        return None;
    }
    let sender = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
    let request = match r.byte()? {
        PEERS => Request::Peers,
        kind => Request::Shard(read_command(kind, &mut r)?),
    };
    r.0.is_empty().then_some(Received { sender, nonce, request })
}

fn read_command(kind: u8, r: &mut Reader<'_>) -> Option<ShardCommand> {
    let key = ChallengeKey { subject: IdentHash(r.array()?), purpose: purpose(r.byte()?)? };
    let now = r.millis()?;
    Some(match kind {
        ISSUE => {
            let sealed = Sealed { salt: r.array()?, digest: r.array()? };
            ShardCommand::Issue { key, sealed, profile: r.profile()?, now }
        }
        VERIFY => {
            let len = usize::from(r.byte()?);
            ShardCommand::Verify { key, attempt: Code::from_bytes(r.take(len)?)?, now }
        }
        REDEEM => {
            let nonce = Nonce::from_bytes(r.array()?);
            ShardCommand::Redeem { key, nonce, signature_valid: r.flag()?, now }
        }
        _ => return None,
    })
}

/// Reads fixed-size pieces off the front of a buffer.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("length checked"))
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn millis(&mut self) -> Option<Timestamp> {
        self.array::<8>().map(|b| Timestamp::from_millis(u64::from_le_bytes(b)))
    }

    fn text(&mut self) -> Option<String> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        if len > MAX_TEXT {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    fn profile(&mut self) -> Option<Option<Box<Profile>>> {
        if !self.flag()? {
            return Some(None);
        }
        let (first_name, last_name) = (self.text()?, self.text()?);
        let email = if self.flag()? { Some(self.text()?) } else { None };
        Some(Some(Box::new(Profile { first_name, last_name, email })))
    }
}

fn purpose(byte: u8) -> Option<Purpose> {
    [Purpose::Register, Purpose::Login, Purpose::DeviceLogin].into_iter().find(|p| *p as u8 == byte)
}

fn outcome_bytes(o: VerifyOutcome) -> [u8; 2] {
    match o {
        VerifyOutcome::Verified => [0, 0],
        VerifyOutcome::Wrong { attempts_left } => [1, attempts_left],
        VerifyOutcome::Blocked => [2, 0],
        VerifyOutcome::Expired => [3, 0],
        VerifyOutcome::AlreadyUsed => [4, 0],
        VerifyOutcome::NoChallenge => [5, 0],
    }
}

fn outcome(tag: u8, attempts_left: u8) -> Option<VerifyOutcome> {
    Some(match tag {
        0 => VerifyOutcome::Verified,
        1 => VerifyOutcome::Wrong { attempts_left },
        2 => VerifyOutcome::Blocked,
        3 => VerifyOutcome::Expired,
        4 => VerifyOutcome::AlreadyUsed,
        5 => VerifyOutcome::NoChallenge,
        _ => return None,
    })
}

const ISSUED: u8 = 0;
const CHECKED: u8 = 1;
const SHARD_TIMEOUT: u8 = 2;
const SHARD_UNAVAILABLE: u8 = 3;
const MALFORMED: u8 = 4;
const REFUSED: u8 = 5;
const PEER_LIST: u8 = 6;

/// Encodes `reply` as the answer to the request whose tag is `request`.
pub fn encode_answer(keys: &FrameKeys, request: &Tag, reply: &Reply) -> Vec<u8> {
    let mut out = vec![VERSION];
    match reply {
        Reply::Shard(Ok(ShardAnswer::Issued(at, registration))) => {
            out.push(ISSUED);
            out.extend_from_slice(&at.as_millis().to_le_bytes());
            out.push(u8::from(*registration));
        }
        Reply::Shard(Ok(ShardAnswer::Checked(o, profile))) => {
            out.push(CHECKED);
            out.extend_from_slice(&outcome_bytes(*o));
            put_profile(&mut out, profile.as_deref());
        }
        Reply::Shard(Err(RemoteError::Shard(ShardError::Timeout))) => out.push(SHARD_TIMEOUT),
        Reply::Shard(Err(RemoteError::Shard(ShardError::Unavailable))) => out.push(SHARD_UNAVAILABLE),
        Reply::Shard(Err(RemoteError::Malformed)) => out.push(MALFORMED),
        Reply::Shard(Err(RemoteError::Refused)) => out.push(REFUSED),
        Reply::Peers(peers) => {
            out.push(PEER_LIST);
            // What does not fit the layout is left out: a node name is at most 64 bytes and
            // an address far shorter than 64 KiB, and a cluster of 255 nodes is not one otpd
            // runs (its dialer learns the rest from any other member).
            let fits: Vec<&Peer> = peers
                .iter()
                .filter(|p| p.name.len() <= MAX_SENDER && p.address.len() <= usize::from(u16::MAX))
                .take(255)
                .collect();
            out.push(fits.len() as u8);
            for p in fits {
                out.push(p.name.len() as u8);
                out.extend_from_slice(p.name.as_bytes());
                out.extend_from_slice(&(p.address.len() as u16).to_le_bytes());
                out.extend_from_slice(p.address.as_bytes());
            }
        }
    }
    let tag = keys.answer_tag(request, &out);
    out.extend_from_slice(tag.as_bytes());
    out
}

/// Reads the answer to the request whose tag is `request`, after checking its tag.
pub fn decode_answer(keys: &FrameKeys, request: &Tag, bytes: &[u8]) -> Result<Reply, AnswerError> {
    let (signed, tag) = split_tag(bytes).ok_or(AnswerError::Unauthentic)?;
    let tag: Tag = tag.try_into().map_err(|_| AnswerError::Unauthentic)?;
    if keys.answer_tag(request, signed) != blake3::Hash::from(tag) {
        return Err(AnswerError::Unauthentic);
    }
    read_answer(signed).ok_or(AnswerError::Malformed)
}

fn read_answer(signed: &[u8]) -> Option<Reply> {
    let mut r = Reader(signed);
    if r.byte()? != VERSION {
        return None;
    }
    let reply = match r.byte()? {
        ISSUED => Reply::Shard(Ok(ShardAnswer::Issued(r.millis()?, r.flag()?))),
        CHECKED => {
            let [tag, left] = r.array()?;
            Reply::Shard(Ok(ShardAnswer::Checked(outcome(tag, left)?, r.profile()?)))
        }
        SHARD_TIMEOUT => Reply::Shard(Err(RemoteError::Shard(ShardError::Timeout))),
        SHARD_UNAVAILABLE => Reply::Shard(Err(RemoteError::Shard(ShardError::Unavailable))),
        MALFORMED => Reply::Shard(Err(RemoteError::Malformed)),
        REFUSED => Reply::Shard(Err(RemoteError::Refused)),
        PEER_LIST => {
            let count = r.byte()?;
            let mut peers = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let len = usize::from(r.byte()?);
                let name = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
                let len = usize::from(u16::from_le_bytes(r.array()?));
                let address = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
                peers.push(Peer { name, address });
            }
            Reply::Peers(peers)
        }
        _ => return None,
    };
    r.0.is_empty().then_some(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> FrameKeys {
        FrameKeys::derive(&[3; 32], b"a-cluster-cookie-of-at-least-32-bytes")
    }

    fn key(purpose: Purpose) -> ChallengeKey {
        ChallengeKey { subject: IdentHash([7; 16]), purpose }
    }

    fn requests() -> Vec<Request> {
        let now = Timestamp::from_millis(1_790_000_000_123);
        vec![
            Request::Shard(ShardCommand::Issue {
                key: key(Purpose::Register),
                sealed: Sealed { salt: [1; 16], digest: [2; 16] },
                profile: Some(Box::new(Profile {
                    first_name: "Zoë".into(),
                    last_name: "O'Brien".into(),
                    email: Some("zoe@example.com".into()),
                })),
                now,
            }),
            Request::Shard(ShardCommand::Verify {
                key: key(Purpose::Login),
                attempt: Code::from_bytes(b"12A4Z6").unwrap(),
                now,
            }),
            Request::Shard(ShardCommand::Verify {
                key: key(Purpose::Login),
                attempt: Code::from_bytes(b"").unwrap(),
                now,
            }),
            Request::Shard(ShardCommand::Redeem {
                key: key(Purpose::DeviceLogin),
                nonce: Nonce::from_bytes([9; 32]),
                signature_valid: true,
                now,
            }),
            Request::Peers,
            Request::Shard(ShardCommand::Issue {
                key: key(Purpose::Login),
                sealed: Sealed { salt: [1; 16], digest: [2; 16] },
                profile: None,
                now,
            }),
        ]
    }

    fn replies() -> Vec<Reply> {
        vec![
            Reply::Shard(Ok(ShardAnswer::Issued(Timestamp::from_millis(42), false))),
            Reply::Shard(Ok(ShardAnswer::Issued(Timestamp::from_millis(43), true))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Verified, None))),
            Reply::Shard(Ok(ShardAnswer::Checked(
                VerifyOutcome::Verified,
                Some(Box::new(Profile { first_name: "A".into(), last_name: "B".into(), email: None })),
            ))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Wrong { attempts_left: 3 }, None))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Blocked, None))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Expired, None))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::AlreadyUsed, None))),
            Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::NoChallenge, None))),
            Reply::Shard(Err(RemoteError::Shard(ShardError::Timeout))),
            Reply::Shard(Err(RemoteError::Shard(ShardError::Unavailable))),
            Reply::Shard(Err(RemoteError::Malformed)),
            Reply::Shard(Err(RemoteError::Refused)),
            Reply::Peers(vec![]),
            Reply::Peers(vec![
                Peer { name: "otpd-2".into(), address: "otpd-2:4370".into() },
                Peer { name: "otpd-3".into(), address: "[::1]:4370".into() },
            ]),
        ]
    }

    fn frame(request: &Request) -> Framed {
        encode_request(&keys(), "otpd-1", [5; NONCE_LEN], request)
    }

    /// `signed` with a valid tag appended: how a node holding the keys (a bug, or a newer
    /// version) could send bytes the parser must still refuse.
    fn retag_request(signed: &[u8]) -> Vec<u8> {
        let mut out = signed.to_vec();
        out.extend_from_slice(keys().request_tag(signed).as_bytes());
        out
    }

    fn retag_answer(request: &Tag, signed: &[u8]) -> Vec<u8> {
        let mut out = signed.to_vec();
        out.extend_from_slice(keys().answer_tag(request, signed).as_bytes());
        out
    }

    #[test]
    fn requests_round_trip() {
        for request in requests() {
            let framed = frame(&request);
            assert_eq!(request_tag(&framed.bytes), framed.tag);
            let got = decode_request(&keys(), &framed.bytes).unwrap();
            assert_eq!(got, Received { sender: "otpd-1".into(), nonce: [5; NONCE_LEN], request: request.clone() });
        }
    }

    #[test]
    fn answers_round_trip_bound_to_their_request() {
        let request = frame(&requests()[0]).tag;
        for reply in replies() {
            let bytes = encode_answer(&keys(), &request, &reply);
            assert_eq!(decode_answer(&keys(), &request, &bytes), Ok(reply));
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_request_is_refused() {
        for request in requests() {
            let bytes = frame(&request).bytes;
            for byte in 0..bytes.len() {
                for bit in 0..8 {
                    let mut altered = bytes.clone();
                    altered[byte] ^= 1 << bit;
                    assert_eq!(
                        decode_request(&keys(), &altered),
                        Err(RequestError::Unauthentic),
                        "{request:?}: bit {bit} of byte {byte}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_anywhere_in_an_answer_is_refused() {
        let request = frame(&requests()[1]).tag;
        for reply in replies() {
            let bytes = encode_answer(&keys(), &request, &reply);
            for byte in 0..bytes.len() {
                for bit in 0..8 {
                    let mut altered = bytes.clone();
                    altered[byte] ^= 1 << bit;
                    assert_eq!(
                        decode_answer(&keys(), &request, &altered),
                        Err(AnswerError::Unauthentic),
                        "{reply:?}: bit {bit} of byte {byte}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_answer_to_another_request_is_refused() {
        // The same command sent twice: only the nonce differs, and an answer to the first
        // (say `Verified`, replayed by someone on the link) is no answer to the second.
        let verify = &requests()[1];
        let first = encode_request(&keys(), "otpd-1", [1; NONCE_LEN], verify);
        let second = encode_request(&keys(), "otpd-1", [2; NONCE_LEN], verify);
        let verified =
            encode_answer(&keys(), &first.tag, &Reply::Shard(Ok(ShardAnswer::Checked(VerifyOutcome::Verified, None))));
        assert!(decode_answer(&keys(), &first.tag, &verified).is_ok());
        assert_eq!(decode_answer(&keys(), &second.tag, &verified), Err(AnswerError::Unauthentic));
        // Nor is a request's own frame an answer, or an answer a request: their keys differ.
        let tagged_like_answer = retag_answer(&first.tag, &first.bytes[..first.bytes.len() - TAG_LEN]);
        assert_eq!(decode_request(&keys(), &tagged_like_answer), Err(RequestError::Unauthentic));
        let tagged_like_request = retag_request(&verified[..verified.len() - TAG_LEN]);
        assert_eq!(decode_answer(&keys(), &first.tag, &tagged_like_request), Err(AnswerError::Unauthentic));
    }

    #[test]
    fn frames_under_another_key_are_refused() {
        let other_cookie = FrameKeys::derive(&[3; 32], b"another-cluster-cookie-of-32-bytes!");
        let other_hash_key = FrameKeys::derive(&[4; 32], b"a-cluster-cookie-of-at-least-32-bytes");
        for other in [other_cookie, other_hash_key] {
            for request in requests() {
                let framed = encode_request(&other, "otpd-1", [5; NONCE_LEN], &request);
                assert_eq!(decode_request(&keys(), &framed.bytes), Err(RequestError::Unauthentic));
                let bytes = encode_answer(&other, &framed.tag, &Reply::Shard(Err(RemoteError::Malformed)));
                assert_eq!(decode_answer(&keys(), &framed.tag, &bytes), Err(AnswerError::Unauthentic));
            }
        }
        assert_eq!(format!("{:?}", keys()), "FrameKeys(..)");
    }

    #[test]
    fn every_truncation_and_every_extension_is_refused_without_a_panic() {
        for request in requests() {
            let bytes = frame(&request).bytes;
            let signed = &bytes[..bytes.len() - TAG_LEN];
            for n in 0..bytes.len() {
                assert_eq!(
                    decode_request(&keys(), &bytes[..n]),
                    Err(RequestError::Unauthentic),
                    "{request:?} cut at {n}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode_request(&keys(), &longer), Err(RequestError::Unauthentic));
            // The same cuts and additions with a valid tag: the parser refuses them too.
            for n in 0..signed.len() {
                assert_eq!(decode_request(&keys(), &retag_request(&signed[..n])), Err(RequestError::Malformed));
            }
            let mut longer = signed.to_vec();
            longer.push(0);
            assert_eq!(decode_request(&keys(), &retag_request(&longer)), Err(RequestError::Malformed));
        }
        let request = frame(&requests()[0]).tag;
        for reply in replies() {
            let bytes = encode_answer(&keys(), &request, &reply);
            let signed = &bytes[..bytes.len() - TAG_LEN];
            for n in 0..bytes.len() {
                assert_eq!(decode_answer(&keys(), &request, &bytes[..n]), Err(AnswerError::Unauthentic));
            }
            for n in 0..signed.len() {
                let cut = retag_answer(&request, &signed[..n]);
                assert_eq!(decode_answer(&keys(), &request, &cut), Err(AnswerError::Malformed), "{reply:?} cut at {n}");
            }
            let mut longer = signed.to_vec();
            longer.push(0);
            assert_eq!(decode_answer(&keys(), &request, &retag_answer(&request, &longer)), Err(AnswerError::Malformed));
        }
    }

    #[test]
    fn unknown_versions_kinds_and_purposes_are_refused_even_when_authentic() {
        let signed = |r: &Request| {
            let bytes = frame(r).bytes;
            bytes[..bytes.len() - TAG_LEN].to_vec()
        };
        // Offsets: version 0, nonce 1..17, sender length 17, "otpd-1" 18..24, kind 24,
        // subject 25..41, purpose 41, now 42..50, then the body.
        for version in [VERSION - 1, VERSION + 1] {
            let mut bytes = signed(&requests()[0]);
            bytes[0] = version;
            assert_eq!(decode_request(&keys(), &retag_request(&bytes)), Err(RequestError::Malformed), "{version}");
        }
        let mut bytes = signed(&requests()[0]);
        bytes[24] = 9;
        assert_eq!(decode_request(&keys(), &retag_request(&bytes)), Err(RequestError::Malformed));
        let mut bytes = signed(&requests()[0]);
        bytes[41] = 0;
        assert_eq!(decode_request(&keys(), &retag_request(&bytes)), Err(RequestError::Malformed));
        // An attempt longer than any code.
        let mut bytes = signed(&requests()[1]);
        bytes[50] = 200;
        assert_eq!(decode_request(&keys(), &retag_request(&bytes)), Err(RequestError::Malformed));
        // A sender name longer than any node name.
        let mut bytes = signed(&requests()[4]);
        bytes[17] = 65;
        bytes.splice(18..18, [b'x'; 59]);
        assert_eq!(decode_request(&keys(), &retag_request(&bytes)), Err(RequestError::Malformed));
        // An answer of an unknown kind, and an outcome no node sends.
        let request = frame(&requests()[0]).tag;
        assert_eq!(
            decode_answer(&keys(), &request, &retag_answer(&request, &[VERSION, 9])),
            Err(AnswerError::Malformed)
        );
        assert_eq!(
            decode_answer(&keys(), &request, &retag_answer(&request, &[VERSION, CHECKED, 6, 0, 0])),
            Err(AnswerError::Malformed)
        );
        assert_eq!(
            decode_answer(&keys(), &request, &retag_answer(&request, &[VERSION - 1, CHECKED, 0, 0, 0])),
            Err(AnswerError::Malformed)
        );
    }
}
