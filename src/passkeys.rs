//! The WebAuthn relying party (the engine's `RelyingParty` port) on webauthn-rs.
//!
//! webauthn-rs keeps a ceremony's state (its challenge and policy) in a value the server must
//! hold until the answer comes. otpd holds the challenge in the engine's shards instead (sealed,
//! single use, on whichever node owns it), so this adapter rebuilds the state from the
//! challenge the client signed: it asks the library for a fresh state of the same ceremony
//! (same policy, same excluded credentials) and puts the challenge in. The state's other
//! fields are fixed by the ceremony, so the rebuilt state is the one the library made when the
//! options were sent (`state_from_challenge_is_the_librarys_own` checks it).
//!
//! Every check of an answer is the library's: client data type and challenge, origin against
//! `passkeys.origins`, the RP id hash, user presence *and verification* (passkeys require it),
//! the attestation (format `none` and self/packed attestation are accepted, unverifiable
//! formats refused), the signature, the backup-eligible flag (it may not change), and the
//! counter (it must grow when the authenticator counts).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use otpd_actors::ports::{
    CeremonyCredential, CeremonyError, CeremonyOptions, CeremonyResponse, Passkey as StoredPasskey, PasskeyHolder,
    RelyingParty,
};
use otpd_actors::rules::passkey::CredentialId;
use serde_json::Value;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Url,
    Webauthn, WebauthnBuilder, WebauthnError,
};

use crate::config::PasskeysConfig;

/// How long the browser lets the person take (the challenge itself lives
/// `devices.challenge_lifetime` in the shards).
const CEREMONY_TIMEOUT: Duration = Duration::from_secs(60);

/// The relying party.
pub struct WebauthnRp {
    webauthn: Webauthn,
    /// The record of a key nobody holds, checked instead of an unknown credential's (same
    /// work, refused): stored as a record is, so that it is read as one is.
    decoy: Vec<u8>,
}

impl std::fmt::Debug for WebauthnRp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebauthnRp").finish_non_exhaustive()
    }
}

impl WebauthnRp {
    /// The relying party of `[passkeys]` (already validated).
    pub fn new(config: &PasskeysConfig) -> Result<Self, String> {
        let origins: Vec<Url> = config
            .origins
            .iter()
            .map(|o| Url::parse(o).map_err(|e| format!("passkeys.origins: {o:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let first = origins.first().ok_or("passkeys.origins is empty")?;
        let mut builder = WebauthnBuilder::new(&config.rp_id, first)
            .map_err(|e| format!("passkeys: {e}"))?
            .rp_name(&config.rp_name)
            .timeout(CEREMONY_TIMEOUT)
            .allow_any_port(config.any_port);
        for origin in &origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder.build().map_err(|e| format!("passkeys: {e}"))?;
        let decoy = serde_json::to_vec(&decoy_passkey()).map_err(|e| format!("passkeys: the decoy: {e}"))?;
        Ok(WebauthnRp { webauthn, decoy })
    }

    fn registration_state(
        &self,
        challenge: &[u8; 32],
        holder: &PasskeyHolder,
        exclude: &[CredentialId],
    ) -> Result<(Value, PasskeyRegistration), CeremonyError> {
        let exclude = (!exclude.is_empty()).then(|| exclude.iter().map(|c| c.0.clone()).collect());
        let (options, state) = self
            .webauthn
            .start_passkey_registration(holder.user.0, &holder.name, &holder.display_name, exclude)
            .map_err(|e| CeremonyError::Malformed(format!("registration options: {e}")))?;
        let mut options = serde_json::to_value(&options).map_err(internal)?;
        let mut state = serde_json::to_value(&state).map_err(internal)?;
        let text = Value::String(URL_SAFE_NO_PAD.encode(challenge));
        *pointer(&mut options, "/publicKey/challenge")? = text.clone();
        *pointer(&mut state, "/rs/challenge")? = text;
        // Discoverable credentials: "sign in with a passkey" asks for no identifier.
        *pointer(&mut options, "/publicKey/authenticatorSelection/residentKey")? = "required".into();
        *pointer(&mut options, "/publicKey/authenticatorSelection/requireResidentKey")? = true.into();
        let state = serde_json::from_value(state).map_err(internal)?;
        Ok((options, state))
    }

    fn login_state(&self, challenge: &[u8; 32]) -> Result<(Value, DiscoverableAuthentication), CeremonyError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(|e| CeremonyError::Malformed(format!("login options: {e}")))?;
        let mut options = serde_json::to_value(&options).map_err(internal)?;
        let mut state = serde_json::to_value(&state).map_err(internal)?;
        let text = Value::String(URL_SAFE_NO_PAD.encode(challenge));
        *pointer(&mut options, "/publicKey/challenge")? = text.clone();
        *pointer(&mut state, "/ast/challenge")? = text;
        let state = serde_json::from_value(state).map_err(internal)?;
        Ok((options, state))
    }
}

impl RelyingParty for WebauthnRp {
    fn registration_options(
        &self,
        challenge: &[u8; 32],
        holder: &PasskeyHolder,
        exclude: &[CredentialId],
    ) -> Result<CeremonyOptions, CeremonyError> {
        let (options, _) = self.registration_state(challenge, holder, exclude)?;
        Ok(CeremonyOptions(options.to_string()))
    }

    fn read_registration(&self, json: &str) -> Result<CeremonyResponse, CeremonyError> {
        let parsed: RegisterPublicKeyCredential = serde_json::from_str(json).map_err(malformed)?;
        let challenge = client_challenge(&parsed.response.client_data_json)?;
        let credential_id = credential_id(parsed.raw_id.to_vec())?;
        Ok(CeremonyResponse { challenge, credential_id, user_handle: None, parsed: Box::new(parsed) })
    }

    fn finish_registration(
        &self,
        response: &CeremonyResponse,
        challenge: &[u8; 32],
        holder: &PasskeyHolder,
        exclude: &[CredentialId],
    ) -> Result<CeremonyCredential, CeremonyError> {
        let parsed = response.parsed.downcast_ref::<RegisterPublicKeyCredential>().ok_or_else(not_ours)?;
        let (_, state) = self.registration_state(challenge, holder, exclude)?;
        let passkey = self.webauthn.finish_passkey_registration(parsed, &state).map_err(refusal)?;
        ceremony_credential(&passkey)
    }

    fn login_options(&self, challenge: &[u8; 32]) -> Result<CeremonyOptions, CeremonyError> {
        let (options, _) = self.login_state(challenge)?;
        Ok(CeremonyOptions(options.to_string()))
    }

    fn read_assertion(&self, json: &str) -> Result<CeremonyResponse, CeremonyError> {
        let parsed: PublicKeyCredential = serde_json::from_str(json).map_err(malformed)?;
        let challenge = client_challenge(&parsed.response.client_data_json)?;
        let credential_id = credential_id(parsed.raw_id.to_vec())?;
        let user_handle = parsed.response.user_handle.as_ref().map(|h| h.to_vec());
        Ok(CeremonyResponse { challenge, credential_id, user_handle, parsed: Box::new(parsed) })
    }

    fn finish_assertion(
        &self,
        response: &CeremonyResponse,
        challenge: &[u8; 32],
        passkey: Option<&StoredPasskey>,
    ) -> Result<CeremonyCredential, CeremonyError> {
        let parsed = response.parsed.downcast_ref::<PublicKeyCredential>().ok_or_else(not_ours)?;
        let (_, state) = self.login_state(challenge)?;
        // An unknown credential costs what a known one does: the decoy's record is read like a
        // stored one, and it answers to the id the client sent, so that the library goes on to
        // check the signature (under a key nobody holds) instead of refusing the id at once.
        let record = passkey.map_or(self.decoy.as_slice(), |p| p.credential.as_slice());
        let mut key: Passkey = serde_json::from_slice(record).map_err(internal)?;
        if passkey.is_none() {
            let mut decoy = webauthn_rs_core::proto::Credential::from(key);
            decoy.cred_id = parsed.raw_id.to_vec();
            key = Passkey::from(decoy);
        }
        let result = self.webauthn.finish_discoverable_authentication_v2(parsed, state, &key);
        let result = result.map_err(refusal)?;
        if passkey.is_none() {
            return Err(CeremonyError::Invalid("unknown credential"));
        }
        key.update_credential(&result);
        ceremony_credential(&key)
    }
}

/// What the engine keeps of a library credential: the record itself and its flags.
fn ceremony_credential(passkey: &Passkey) -> Result<CeremonyCredential, CeremonyError> {
    let record = serde_json::to_vec(passkey).map_err(internal)?;
    let value = serde_json::to_value(passkey).map_err(internal)?;
    let cred = value.get("cred").ok_or_else(|| internal("credential record without cred"))?;
    let flag = |name: &str| cred.get(name).and_then(Value::as_bool).unwrap_or(false);
    let counter = cred.get("counter").and_then(Value::as_u64).unwrap_or(0);
    Ok(CeremonyCredential {
        id: credential_id(passkey.cred_id().to_vec())?,
        credential: record,
        sign_count: u32::try_from(counter).unwrap_or(u32::MAX),
        backup_eligible: flag("backup_eligible"),
        backup_state: flag("backup_state"),
    })
}

/// The challenge in the client data the authenticator signed (base64url, 32 bytes).
fn client_challenge(client_data: &[u8]) -> Result<[u8; 32], CeremonyError> {
    #[derive(serde::Deserialize)]
    struct ClientData<'a> {
        #[serde(borrow)]
        challenge: std::borrow::Cow<'a, str>,
    }
    let data: ClientData = serde_json::from_slice(client_data).map_err(|_| malformed("clientDataJSON is not JSON"))?;
    let bytes =
        URL_SAFE_NO_PAD.decode(data.challenge.as_bytes()).map_err(|_| malformed("the challenge is not base64url"))?;
    bytes.try_into().map_err(|_| CeremonyError::Invalid("the challenge is not one of this relying party's"))
}

fn credential_id(bytes: Vec<u8>) -> Result<CredentialId, CeremonyError> {
    CredentialId::new(bytes).ok_or_else(|| malformed("rawId must be 1..=1023 bytes"))
}

fn pointer<'a>(value: &'a mut Value, path: &str) -> Result<&'a mut Value, CeremonyError> {
    value.pointer_mut(path).ok_or_else(|| internal(format!("webauthn-rs state has no {path}")))
}

fn malformed(e: impl std::fmt::Display) -> CeremonyError {
    CeremonyError::Malformed(e.to_string())
}

/// A library value that does not (de)serialise as this release does: a bug, never input.
fn internal(e: impl std::fmt::Display) -> CeremonyError {
    CeremonyError::Malformed(format!("internal: {e}"))
}

fn not_ours() -> CeremonyError {
    internal("a response parsed by another relying party")
}

/// The library's refusal in the engine's words.
fn refusal(e: WebauthnError) -> CeremonyError {
    use WebauthnError as W;
    match e {
        W::InvalidClientDataType => CeremonyError::Invalid("made for another ceremony"),
        W::MismatchedChallenge | W::ChallengeNotFound => CeremonyError::Invalid("made for another challenge"),
        W::InvalidRPOrigin | W::CredentialCrossOrigin => CeremonyError::Invalid("made on an origin not allowed"),
        W::InvalidRPIDHash => CeremonyError::Invalid("made for another relying party id"),
        W::UserNotPresent | W::UserNotVerified => CeremonyError::UserNotVerified,
        W::CredentialPossibleCompromise => CeremonyError::CounterRegressed,
        W::CredentialBackupEligibilityInconsistent => CeremonyError::Invalid("its backup eligibility changed"),
        W::CredentialExcludedFromRequest | W::CredentialAlreadyExists => {
            CeremonyError::Invalid("the credential is registered already")
        }
        W::AttestationNotSupported | W::AttestationStatementVerUnsupported | W::AttestationNotVerifiable => {
            CeremonyError::Unsupported("attestation format")
        }
        W::COSEKeyInvalidType
        | W::COSEKeyEDUnsupported
        | W::COSEKeyInvalidAlgorithm
        | W::CredentialAlteredAlgFromRequest
        | W::CredentialInsecureCryptography => CeremonyError::Unsupported("key algorithm"),
        W::ParseBase64Failure(_)
        | W::ParseCBORFailure(_)
        | W::ParseJSONFailure(_)
        | W::ParseNOMFailure
        | W::ParseInsufficientBytesAvailable
        | W::COSEKeyInvalidCBORValue
        | W::MissingAttestationCredentialData
        | W::AttestationStatementMapInvalid => CeremonyError::Malformed(e.to_string()),
        _ => CeremonyError::Invalid("the signature or authenticator data does not verify"),
    }
}

/// A P-256 passkey whose private key is a public constant: nothing it could sign is ever
/// believed (an unknown credential is refused whatever the check says).
fn decoy_passkey() -> Passkey {
    use webauthn_rs_core::proto::{
        AttestationFormat, AttestationMetadata, COSEAlgorithm, COSEEC2Key, COSEKey, COSEKeyType, Credential,
        ECDSACurve, ParsedAttestation, ParsedAttestationData, RegisteredExtensions, UserVerificationPolicy,
    };
    let key = p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).expect("a valid P-256 scalar");
    let point = key.verifying_key().to_sec1_point(false);
    let credential = Credential {
        cred_id: vec![0xdc; 32],
        cred: COSEKey {
            type_: COSEAlgorithm::ES256,
            key: COSEKeyType::EC_EC2(COSEEC2Key {
                curve: ECDSACurve::SECP256R1,
                x: point.x().expect("an uncompressed point has x").to_vec(),
                y: point.y().expect("an uncompressed point has y").to_vec(),
            }),
        },
        counter: 0,
        transports: None,
        user_verified: true,
        backup_eligible: false,
        backup_state: false,
        registration_policy: UserVerificationPolicy::Required,
        extensions: RegisteredExtensions::none(),
        attestation: ParsedAttestation { data: ParsedAttestationData::None, metadata: AttestationMetadata::None },
        attestation_format: AttestationFormat::None,
    };
    Passkey::from(credential)
}

#[cfg(test)]
mod tests {
    use otpd_actors::rules::ids::UserId;
    use webauthn_rs::prelude::Uuid;

    use super::*;

    fn rp() -> WebauthnRp {
        WebauthnRp::new(&PasskeysConfig::default()).unwrap()
    }

    /// The state rebuilt from a challenge equals the library's own for that ceremony, but for
    /// the challenge: nothing else of it depends on the call.
    #[test]
    fn state_from_challenge_is_the_librarys_own() {
        let rp = rp();
        let holder =
            PasskeyHolder { user: UserId(Uuid::nil()), name: "+12025550100".into(), display_name: "Ada".into() };
        let (options, state) = rp.registration_state(&[7; 32], &holder, &[]).unwrap();
        let (_, theirs) = rp.webauthn.start_passkey_registration(Uuid::nil(), "+12025550100", "Ada", None).unwrap();
        let (mut ours, mut theirs) = (serde_json::to_value(&state).unwrap(), serde_json::to_value(&theirs).unwrap());
        assert_eq!(ours["rs"]["challenge"], URL_SAFE_NO_PAD.encode([7; 32]));
        assert_eq!(options["publicKey"]["challenge"], URL_SAFE_NO_PAD.encode([7; 32]));
        assert_eq!(options["publicKey"]["authenticatorSelection"]["userVerification"], "required");
        assert_eq!(options["publicKey"]["authenticatorSelection"]["residentKey"], "required");
        ours["rs"]["challenge"] = Value::Null;
        theirs["rs"]["challenge"] = Value::Null;
        assert_eq!(ours, theirs);

        let (options, state) = rp.login_state(&[9; 32]).unwrap();
        let (_, theirs) = rp.webauthn.start_discoverable_authentication().unwrap();
        let (mut ours, mut theirs) = (serde_json::to_value(&state).unwrap(), serde_json::to_value(&theirs).unwrap());
        assert_eq!(options["publicKey"]["challenge"], URL_SAFE_NO_PAD.encode([9; 32]));
        assert_eq!(options["publicKey"]["userVerification"], "required");
        assert!(
            options["publicKey"].get("allowCredentials").is_none_or(|a| a.as_array().is_some_and(|a| a.is_empty()))
        );
        ours["ast"]["challenge"] = Value::Null;
        theirs["ast"]["challenge"] = Value::Null;
        assert_eq!(ours, theirs);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let rp = rp();
        for input in ["", "{}", "null", r#"{"id":"x","rawId":"","response":{},"type":"public-key"}"#] {
            assert!(matches!(rp.read_assertion(input), Err(CeremonyError::Malformed(_))), "{input}");
            assert!(matches!(rp.read_registration(input), Err(CeremonyError::Malformed(_))), "{input}");
        }
        assert!(matches!(client_challenge(br#"{"challenge":"AAAA"}"#), Err(CeremonyError::Invalid(_))));
        assert!(matches!(client_challenge(br#"{"challenge":"!!"}"#), Err(CeremonyError::Malformed(_))));
    }
}
