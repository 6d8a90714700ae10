//! The audit trail's vocabulary: which API a call was, how far it got, and how it ended.
//!
//! These live with the rules, below the ports and the metrics, so that the audit record
//! (`ports::AuditEvent`) and the metric labels can name them without importing the flows
//! that produce them.
//!
//! # Stored as text
//!
//! [`Api`] and [`Step`] are stored as their [`as_str`](Api::as_str) text: the embedded store
//! writes `AuditEvent` with postcard through serde, and a string serialises there exactly as
//! the `String` fields did before these enums existed; ScyllaDB keeps them in text columns.
//! So data written by older nodes reads unchanged, and a new node writes the same bytes.
//!
//! Reading a text that names no variant is an error ([`UnknownWord`]), not a fallback
//! variant: the enums are `Copy` and cost nothing per request, and a fallback would either
//! drop the text (rewriting a stored event would change it) or carry an owned string (an
//! allocation per event again). Every text any version wrote is a variant (the tests list
//! them), so the error means data that is not an audit trail's. Adding a variant is a
//! format change: every node that reads the trail must know it before any node writes it.
//! [`AuditOutcome`] is stored by serde's derive (its variant index), as it always was.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A text read from storage that names no value of the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown audit {kind} {text:?}")]
pub struct UnknownWord {
    kind: &'static str,
    text: String,
}

/// Declares a vocabulary enum: its variants and their stored text, `as_str`, `ALL`,
/// `FromStr`, comparison with a `&str`, and serde as the text.
macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The text the audit trail stores and shows.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(text: &str) -> Result<Self, UnknownWord> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownWord { kind: $kind, text: text.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(WordVisitor(PhantomData))
            }
        }
    };
}

/// Reads a vocabulary word from a string, borrowed or not.
struct WordVisitor<T>(PhantomData<T>);

impl<T: FromStr<Err = UnknownWord>> Visitor<'_> for WordVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an audit vocabulary word")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

vocabulary! {
    /// The API names written to the audit trail.
    Api, "api" {
        Register => "register",
        RegisterVerify => "register_verify",
        Login => "login",
        LoginVerify => "login_verify",
        OtpResend => "otp_resend",
        Me => "me",
        TokenRefresh => "token_refresh",
        Logout => "logout",
        LogoutAll => "logout_all",
        Sessions => "sessions",
        DeviceEnrol => "device_enrol",
        DeviceList => "device_list",
        DeviceRevoke => "device_revoke",
        DeviceChallenge => "device_challenge",
        DeviceVerify => "device_verify",
        /// A code's delivery, audited by the dispatcher once per final outcome (after the call
        /// that issued the code has answered), with that call's trace id.
        Delivery => "delivery",
        /// An operator pinned or lifted a destination of the conversion guard.
        AdminDestination => "admin_destination",
        /// A person downloaded what the store holds for their account.
        AccountExport => "account_export",
        /// A person erased their account.
        AccountErase => "account_erase",
        /// An operator exported an account (a request that came by another channel).
        AdminAccountExport => "admin_account_export",
        /// An operator erased an account.
        AdminAccountErase => "admin_account_erase",
        /// An operator took a backup of the node's store (`otpd backup`).
        AdminBackup => "admin_backup",
        /// A key rotated: the access-token signing key or the admin token, by an operator or
        /// on schedule (which key is the message; nothing of the key is written).
        KeyRotation => "key_rotation",
        PasskeyRegisterOptions => "passkey_register_options",
        PasskeyRegister => "passkey_register",
        PasskeyList => "passkey_list",
        PasskeyDelete => "passkey_delete",
        PasskeyLoginOptions => "passkey_login_options",
        PasskeyLogin => "passkey_login",
    }
}

vocabulary! {
    /// How far an audited call got: the step it was at when it ended (`Done` if it ran to
    /// the end), or, for a delivery, its final outcome.
    Step, "step" {
        /// Nothing was done yet.
        Start => "start",
        /// The front end could not read the request (content type, size, JSON).
        Parse => "parse",
        /// The front end refused the access token.
        Token => "token",
        /// The front end refused a field (identifier, code, key, name).
        Validate => "validate",
        /// The limiter was asked.
        Limit => "limit",
        /// The account was read or written.
        Account => "account",
        /// A challenge was issued or answered on its shard.
        Challenge => "challenge",
        /// The code was handed to delivery.
        Dispatch => "dispatch",
        /// A session was opened or checked.
        Session => "session",
        /// A refresh token was rotated.
        Rotate => "rotate",
        /// Sessions (or a device) were revoked.
        Revoke => "revoke",
        /// Sessions or devices were listed.
        List => "list",
        /// Enrolment checked that the login by code was recent.
        Freshness => "freshness",
        /// A device public key was read.
        Key => "key",
        /// A device was stored (or a backup written).
        Store => "store",
        /// A device revocation ended the device's sessions.
        Sessions => "sessions",
        /// A device was looked up.
        Device => "device",
        /// A device-login signature was checked.
        Signature => "signature",
        /// The call ran to its end.
        Done => "done",
        /// Delivery: a provider took the message.
        Delivered => "delivered",
        /// Delivery: given up (refused for good, out of attempts, or shut down).
        GivenUp => "given_up",
        /// Delivery: the code expired before it could be sent.
        Expired => "expired",
        /// Delivery: the provider reports the handset has it.
        ReceiptDelivered => "receipt_delivered",
        /// Delivery: the provider reports it undelivered or failed, or no receipt came in time.
        ReceiptFailed => "receipt_failed",
        /// Delivery: the code was sent again on another route (or could not be).
        Failover => "failover",
        /// A passkey was looked up (or a decoy in its place).
        Passkey => "passkey",
        /// A passkey's use was recorded (its counter and backup state).
        Counter => "counter",
    }
}

/// How an audited call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Did what was asked.
    Ok,
    /// Refused because of the request (bad input, wrong code, no account).
    Rejected,
    /// Refused by a cooldown or rate limit.
    Limited,
    /// Could not be served because of the service (a dependency down, a queue full).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Rejected => "rejected",
            AuditOutcome::Limited => "limited",
            AuditOutcome::Failed => "failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text an older version wrote reads back as the variant that writes it now.
    #[test]
    fn every_stored_text_round_trips() {
        let apis = [
            "register",
            "register_verify",
            "login",
            "login_verify",
            "otp_resend",
            "me",
            "token_refresh",
            "logout",
            "logout_all",
            "sessions",
            "device_enrol",
            "device_list",
            "device_revoke",
            "device_challenge",
            "device_verify",
            "delivery",
            "admin_destination",
            "account_export",
            "account_erase",
            "admin_account_export",
            "admin_account_erase",
            "admin_backup",
            "key_rotation",
            "passkey_register_options",
            "passkey_register",
            "passkey_list",
            "passkey_delete",
            "passkey_login_options",
            "passkey_login",
        ];
        let steps = [
            "start",
            "parse",
            "token",
            "validate",
            "limit",
            "account",
            "challenge",
            "dispatch",
            "session",
            "rotate",
            "revoke",
            "list",
            "freshness",
            "key",
            "store",
            "sessions",
            "device",
            "signature",
            "done",
            "delivered",
            "given_up",
            "expired",
            "receipt_delivered",
            "receipt_failed",
            "failover",
            "passkey",
            "counter",
        ];
        assert_eq!(Api::ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>(), apis);
        assert_eq!(Step::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(), steps);
        for text in apis {
            assert_eq!(text.parse::<Api>().unwrap().as_str(), text);
        }
        for text in steps {
            assert_eq!(text.parse::<Step>().unwrap().as_str(), text);
        }
        assert!("nope".parse::<Step>().is_err());
        assert_eq!("Login".parse::<Api>().unwrap_err().to_string(), "unknown audit api \"Login\"");
    }
}
