//! Passkey answers as clients send them: the JSON text of a registration (attestation) or a
//! login (assertion), read and then checked by the relying party (webauthn-rs behind
//! `otpd::passkeys::WebauthnRp`) against a fixed challenge; and passkey ids from a path. Never a
//! panic; a credential id read is 1..=1023 bytes; an assertion checked against no stored
//! passkey (the decoy key) is never accepted.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use otpd::config::PasskeysConfig;
use otpd::http::wire;
use otpd::passkeys::WebauthnRp;
use otpd_actors::ports::{PasskeyHolder, RelyingParty};
use otpd_actors::rules::ids::UserId;

fn rp() -> &'static WebauthnRp {
    static RP: OnceLock<WebauthnRp> = OnceLock::new();
    RP.get_or_init(|| WebauthnRp::new(&PasskeysConfig::default()).expect("the default relying party"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let rp = rp();
    match mode % 3 {
        0 => {
            let Ok(read) = rp.read_assertion(text) else { return };
            assert!((1..=1023).contains(&read.credential_id.0.len()));
            let verdict = rp.finish_assertion(&read, &read.challenge, None);
            assert!(verdict.is_err(), "an unknown credential is never accepted");
        }
        1 => {
            let Ok(read) = rp.read_registration(text) else { return };
            assert!((1..=1023).contains(&read.credential_id.0.len()));
            let holder = PasskeyHolder { user: UserId(uuid::Uuid::nil()), name: "+12025550100".into(), display_name: "Ada".into() };
            if let Ok(made) = rp.finish_registration(&read, &read.challenge, &holder, &[]) {
                assert!(!made.credential.is_empty());
            }
        }
        _ => {
            if let Ok(id) = wire::passkey_id(text) {
                assert!((1..=1023).contains(&id.0.len()));
            }
        }
    }
});
