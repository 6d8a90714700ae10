//! The bytes a forwarded shard command and its answer travel as between nodes.
//!
//! A fixed little-endian layout, versioned by its first byte, decoded without trusting a
//! single length: a peer passed the cookie handshake, but a bug (or a newer node) must get
//! `Malformed` back, never a panic in the gateway.
//!
//! ```text
//! command: version(1) kind(1) subject(16) purpose(1) now_ms(8) body
//!   Issue  body: salt(16) digest(16) profile
//!   Verify body: len(1) attempt(len ≤ MAX_CODE_LENGTH)
//!   Redeem body: nonce(32) signature_valid(1)
//! answer:  version(1) tag(1) body
//!   Issued(0):  expires_ms(8) registration(1)     Checked(1): outcome(1) attempts_left(1) profile
//!   ShardTimeout(2), ShardUnavailable(3), Malformed(4): no body
//! profile: 0 (none) | 1 first(text) last(text) email(0 | 1 text);  text: len(2, LE) UTF-8
//! ```
//!
//! The clear code never travels: `Issue` carries the seal (salt and keyed digest) made by the
//! node that sends the code; `Verify` carries what the user typed, which is why the link can
//! be TLS (`cluster.tls_*`).

use crate::actors::shard::{ChallengeKey, ShardAnswer, ShardCommand};
use crate::actors::supervisor::ShardError;
use crate::rules::challenge::{Profile, Purpose, VerifyOutcome};
use crate::rules::clock::Timestamp;
use crate::rules::code::{Code, Sealed};
use crate::rules::device_key::Nonce;
use crate::rules::keys::IdentHash;

const VERSION: u8 = 2;

/// Longest text of a profile field on the wire (the API bounds them far lower).
const MAX_TEXT: usize = 1024;

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

/// Why a remote node did not produce an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoteError {
    #[error("owner's shard: {0}")]
    Shard(ShardError),
    #[error("the owner could not read the forwarded request")]
    Malformed,
}

pub fn encode_command(cmd: &ShardCommand) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let (kind, key, now) = match cmd {
        ShardCommand::Issue { key, now, .. } => (1u8, key, now),
        ShardCommand::Verify { key, now, .. } => (2, key, now),
        ShardCommand::Redeem { key, now, .. } => (3, key, now),
    };
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&key.subject.0);
    out.push(key.purpose as u8);
    out.extend_from_slice(&now.as_millis().to_le_bytes());
    match cmd {
        ShardCommand::Issue { sealed, profile, .. } => {
            out.extend_from_slice(&sealed.salt);
            out.extend_from_slice(&sealed.digest);
            put_profile(&mut out, profile.as_deref());
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
    out
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

pub fn decode_command(bytes: &[u8]) -> Option<ShardCommand> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let kind = r.byte()?;
    let key = ChallengeKey { subject: IdentHash(r.array()?), purpose: purpose(r.byte()?)? };
    let now = r.millis()?;
    let cmd = match kind {
        1 => {
            let sealed = Sealed { salt: r.array()?, digest: r.array()? };
            ShardCommand::Issue { key, sealed, profile: r.profile()?, now }
        }
        2 => {
            let len = usize::from(r.byte()?);
            ShardCommand::Verify { key, attempt: Code::from_bytes(r.take(len)?)?, now }
        }
        3 => {
            let nonce = Nonce::from_bytes(r.array()?);
            let signature_valid = match r.byte()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            ShardCommand::Redeem { key, nonce, signature_valid, now }
        }
        _ => return None,
    };
    r.0.is_empty().then_some(cmd)
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

pub fn encode_answer(answer: &Result<ShardAnswer, RemoteError>) -> Vec<u8> {
    let mut out = vec![VERSION];
    match answer {
        Ok(ShardAnswer::Issued(at, registration)) => {
            out.push(0);
            out.extend_from_slice(&at.as_millis().to_le_bytes());
            out.push(u8::from(*registration));
        }
        Ok(ShardAnswer::Checked(o, profile)) => {
            out.push(1);
            out.extend_from_slice(&outcome_bytes(*o));
            put_profile(&mut out, profile.as_deref());
        }
        Err(RemoteError::Shard(ShardError::Timeout)) => out.push(2),
        Err(RemoteError::Shard(ShardError::Unavailable)) => out.push(3),
        Err(RemoteError::Malformed) => out.push(4),
    }
    out
}

/// `None`: the bytes are not an answer this node understands.
pub fn decode_answer(bytes: &[u8]) -> Option<Result<ShardAnswer, RemoteError>> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let answer = match r.byte()? {
        0 => Ok(ShardAnswer::Issued(r.millis()?, r.flag()?)),
        1 => {
            let [tag, left] = r.array()?;
            Ok(ShardAnswer::Checked(outcome(tag, left)?, r.profile()?))
        }
        2 => Err(RemoteError::Shard(ShardError::Timeout)),
        3 => Err(RemoteError::Shard(ShardError::Unavailable)),
        4 => Err(RemoteError::Malformed),
        _ => return None,
    };
    r.0.is_empty().then_some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(purpose: Purpose) -> ChallengeKey {
        ChallengeKey { subject: IdentHash([7; 16]), purpose }
    }

    fn commands() -> Vec<ShardCommand> {
        let now = Timestamp::from_millis(1_790_000_000_123);
        vec![
            ShardCommand::Issue {
                key: key(Purpose::Register),
                sealed: Sealed { salt: [1; 16], digest: [2; 16] },
                profile: Some(Box::new(Profile {
                    first_name: "Zoë".into(),
                    last_name: "O'Brien".into(),
                    email: Some("zoe@example.com".into()),
                })),
                now,
            },
            ShardCommand::Issue {
                key: key(Purpose::Login),
                sealed: Sealed { salt: [1; 16], digest: [2; 16] },
                profile: None,
                now,
            },
            ShardCommand::Verify { key: key(Purpose::Login), attempt: Code::from_bytes(b"12A4Z6").unwrap(), now },
            ShardCommand::Verify { key: key(Purpose::Login), attempt: Code::from_bytes(b"").unwrap(), now },
            ShardCommand::Redeem {
                key: key(Purpose::DeviceLogin),
                nonce: Nonce::from_bytes([9; 32]),
                signature_valid: true,
                now,
            },
        ]
    }

    #[test]
    fn commands_round_trip() {
        for cmd in commands() {
            assert_eq!(decode_command(&encode_command(&cmd)), Some(cmd.clone()), "{cmd:?}");
        }
    }

    #[test]
    fn answers_round_trip() {
        let answers = [
            Ok(ShardAnswer::Issued(Timestamp::from_millis(42), false)),
            Ok(ShardAnswer::Issued(Timestamp::from_millis(43), true)),
            Ok(ShardAnswer::Checked(VerifyOutcome::Verified, None)),
            Ok(ShardAnswer::Checked(
                VerifyOutcome::Verified,
                Some(Box::new(Profile { first_name: "A".into(), last_name: "B".into(), email: None })),
            )),
            Ok(ShardAnswer::Checked(VerifyOutcome::Wrong { attempts_left: 3 }, None)),
            Ok(ShardAnswer::Checked(VerifyOutcome::Blocked, None)),
            Ok(ShardAnswer::Checked(VerifyOutcome::Expired, None)),
            Ok(ShardAnswer::Checked(VerifyOutcome::AlreadyUsed, None)),
            Ok(ShardAnswer::Checked(VerifyOutcome::NoChallenge, None)),
            Err(RemoteError::Shard(ShardError::Timeout)),
            Err(RemoteError::Shard(ShardError::Unavailable)),
            Err(RemoteError::Malformed),
        ];
        for a in answers {
            assert_eq!(decode_answer(&encode_answer(&a)), Some(a));
        }
    }

    #[test]
    fn every_truncation_and_every_extension_is_refused_without_a_panic() {
        for cmd in commands() {
            let bytes = encode_command(&cmd);
            for n in 0..bytes.len() {
                assert_eq!(decode_command(&bytes[..n]), None, "{cmd:?} cut at {n}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode_command(&longer), None);
        }
        let bytes = encode_answer(&Ok(ShardAnswer::Issued(Timestamp::from_millis(1), true)));
        for n in 0..bytes.len() {
            assert_eq!(decode_answer(&bytes[..n]), None);
        }
    }

    #[test]
    fn unknown_versions_kinds_and_purposes_are_refused() {
        for version in [VERSION - 1, VERSION + 1] {
            let mut bytes = encode_command(&commands()[0]);
            bytes[0] = version;
            assert_eq!(decode_command(&bytes), None, "version {version}");
        }
        let mut bytes = encode_command(&commands()[0]);
        bytes[1] = 9;
        assert_eq!(decode_command(&bytes), None);
        let mut bytes = encode_command(&commands()[0]);
        bytes[18] = 0;
        assert_eq!(decode_command(&bytes), None);
        assert_eq!(decode_answer(&[VERSION, 1, 6, 0, 0]), None);
        // An attempt longer than any code.
        let mut bytes = encode_command(&commands()[2]);
        bytes[27] = 200;
        assert_eq!(decode_command(&bytes), None);
    }
}
