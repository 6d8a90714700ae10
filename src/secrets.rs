//! Node secrets: taken from config when given, otherwise generated once into
//! `<data_dir>/secrets/` (directory 0700, files 0600) and reused on every later start.
//!
//! | file | holds |
//! | --- | --- |
//! | `hash.key` | 32-byte master hashing key (hex): identifiers, codes, refresh tokens |
//! | `jwt-ed25519.pk8` | Ed25519 signing key, PKCS#8 DER (EdDSA access tokens) |
//! | `jwt-hs256.key` | 32-byte HMAC secret (hex), only when `tokens.algorithm = "HS256"` |
//! | `admin.token` | bearer token of `/v1/admin/*` |
//!
//! Nothing here is ever logged; `Debug` of these types prints no key material.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::config::{SecretsConfig, TokensConfig};

/// Material for signing access tokens.
pub enum SigningKey {
    /// PKCS#8 DER of an Ed25519 key.
    Ed25519(Vec<u8>),
    Hs256(Vec<u8>),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Ed25519(_) => f.write_str("SigningKey::Ed25519(..)"),
            SigningKey::Hs256(_) => f.write_str("SigningKey::Hs256(..)"),
        }
    }
}

pub struct NodeSecrets {
    pub master: [u8; 32],
    pub signing: SigningKey,
    pub admin_token: String,
}

impl std::fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSecrets(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> SecretsError {
    SecretsError::File { path: path.to_owned(), message: e.to_string() }
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).expect("the operating system's random source is available");
    out
}

pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn hex_decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.trim();
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Loads the node's secrets, creating the missing ones.
pub fn load_or_create(secrets: &SecretsConfig, tokens: &TokensConfig, dir: &Path) -> Result<NodeSecrets, SecretsError> {
    let master = match &secrets.hash_key {
        Some(s) => hex_decode::<32>(&s.0)
            .ok_or_else(|| SecretsError::Invalid("secrets.hash_key is not 64 hex characters".into()))?,
        None => {
            let text = read_or_create(&dir.join("hash.key"), || hex_encode(&random::<32>()).into_bytes())?;
            hex_decode::<32>(&String::from_utf8_lossy(&text))
                .ok_or_else(|| file_err(&dir.join("hash.key"), "not 64 hex characters"))?
        }
    };
    let signing = match tokens.algorithm.as_str() {
        "HS256" => match &tokens.hs256_secret {
            Some(s) => SigningKey::Hs256(s.0.as_bytes().to_vec()),
            None => {
                let path = dir.join("jwt-hs256.key");
                let text = read_or_create(&path, || hex_encode(&random::<32>()).into_bytes())?;
                SigningKey::Hs256(
                    hex_decode::<32>(&String::from_utf8_lossy(&text))
                        .ok_or_else(|| file_err(&path, "not 64 hex characters"))?
                        .to_vec(),
                )
            }
        },
        _ => {
            let der = match &tokens.signing_key_file {
                Some(path) => pkcs8_from_file(path)?,
                None => read_or_create(&dir.join("jwt-ed25519.pk8"), || {
                    let rng = aws_lc_rs::rand::SystemRandom::new();
                    aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                        .expect("Ed25519 key generation cannot fail with a working random source")
                        .as_ref()
                        .to_vec()
                })?,
            };
            aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|e| SecretsError::Invalid(format!("Ed25519 signing key is not valid PKCS#8: {e}")))?;
            SigningKey::Ed25519(der)
        }
    };
    let admin_token = match &secrets.admin_token {
        Some(s) => s.0.clone(),
        None => {
            let bytes =
                read_or_create(&dir.join("admin.token"), || URL_SAFE_NO_PAD.encode(random::<32>()).into_bytes())?;
            String::from_utf8_lossy(&bytes).trim().to_owned()
        }
    };
    Ok(NodeSecrets { master, signing, admin_token })
}

/// Reads the admin token the way a running node would, for `otpd audit`'s fallback.
pub fn admin_token(secrets: &SecretsConfig, dir: &Path) -> Option<String> {
    match &secrets.admin_token {
        Some(s) => Some(s.0.clone()),
        None => fs::read_to_string(dir.join("admin.token")).ok().map(|s| s.trim().to_owned()),
    }
}

/// Reads the master hashing key without creating anything (for `otpd audit`).
pub fn master_key(secrets: &SecretsConfig, dir: &Path) -> Result<[u8; 32], SecretsError> {
    if let Some(s) = &secrets.hash_key {
        return hex_decode::<32>(&s.0)
            .ok_or_else(|| SecretsError::Invalid("secrets.hash_key is not 64 hex characters".into()));
    }
    let path = dir.join("hash.key");
    let text = fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    hex_decode::<32>(&text).ok_or_else(|| file_err(&path, "not 64 hex characters"))
}

fn pkcs8_from_file(path: &Path) -> Result<Vec<u8>, SecretsError> {
    crate::private_fs::check_secret_mode(path).map_err(|e| file_err(path, e))?;
    let bytes = fs::read(path).map_err(|e| file_err(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    if !text.contains("-----BEGIN") {
        return Ok(bytes);
    }
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect::<Vec<_>>().concat();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| file_err(path, format!("PEM body is not base64: {e}")))
}

/// Returns the file's content, writing `make()` first if the file does not exist. The write
/// is atomic (temporary file, fsync, rename, fsync of the directory) so a crash never leaves a
/// half-written key behind.
fn read_or_create(path: &Path, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, SecretsError> {
    crate::private_fs::check_secret_mode(path).map_err(|e| file_err(path, e))?;
    match fs::read(path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(file_err(path, e)),
    }
    let dir = path.parent().expect("secret files live in a directory");
    create_private_dir(dir)?;
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("secret")));
    let content = make();
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(|e| file_err(&tmp, e))?;
        f.write_all(&content).map_err(|e| file_err(&tmp, e))?;
        f.sync_all().map_err(|e| file_err(&tmp, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| file_err(path, e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(content)
}

pub fn create_private_dir(dir: &Path) -> Result<(), SecretsError> {
    crate::private_fs::create_dir(dir).map_err(|e| file_err(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config_in(dir: &Path) -> Config {
        let mut c = Config::default();
        c.node.data_dir = dir.to_owned();
        c
    }

    fn load(c: &Config) -> Result<NodeSecrets, SecretsError> {
        load_or_create(&c.secrets, &c.tokens, &c.node.secrets_dir())
    }

    #[test]
    fn generated_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config_in(tmp.path());
        let a = load(&c).unwrap();
        let b = load(&c).unwrap();
        assert_eq!(a.master, b.master);
        assert_eq!(a.admin_token, b.admin_token);
        assert!(matches!((&a.signing, &b.signing), (SigningKey::Ed25519(x), SigningKey::Ed25519(y)) if x == y));
        assert_eq!(master_key(&c.secrets, &c.node.secrets_dir()).unwrap(), a.master);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(c.node.secrets_dir().join("hash.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(c.node.secrets_dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn configured_secrets_win() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config_in(tmp.path());
        c.secrets.hash_key = Some(crate::config::Secret("ab".repeat(32)));
        c.tokens.algorithm = "HS256".into();
        c.tokens.hs256_secret = Some(crate::config::Secret("x".repeat(40)));
        let s = load(&c).unwrap();
        assert_eq!(s.master, [0xab; 32]);
        assert!(matches!(s.signing, SigningKey::Hs256(ref k) if k.len() == 40));
        assert!(!c.node.secrets_dir().join("hash.key").exists());
    }

    #[test]
    fn hex_round_trip() {
        let b = random::<32>();
        assert_eq!(hex_decode::<32>(&hex_encode(&b)), Some(b));
        assert_eq!(hex_decode::<32>("zz"), None);
    }
}
