//! Rotating keys: the access-token signing key and the admin token, shared by every node.
//!
//! # Generations
//!
//! Each kind of key ([`KeyKind`]) has generations. Generation 0 is what the node has always
//! had: the configured key (`tokens.signing_key_file`, `secrets.admin_token`) or the one
//! generated into `<data_dir>/secrets/`. `otpd keys rotate` (or `tokens.rotate_every`) adds
//! generation *n + 1* to a [`KeyVault`], a claim that only one writer can win (the ScyllaDB
//! store's `keys` table with `IF NOT EXISTS`; on a single node, a file created with
//! `link(2)`, which refuses to replace one). Every node reads the vault every
//! `tokens.keys_poll_interval` and installs what it finds, so a rotation reaches the whole
//! cluster within one interval and needs no restart.
//!
//! * A signing generation is published (JWKS) at once and signs from its `activates_at`
//!   (`tokens.key_activation_delay` after the rotation, default the JWKS's cache lifetime),
//!   so verifiers that honour the cache header know it before any token carries it; its
//!   predecessor stays published until every token it signed has expired
//!   (`crate::tokens`).
//! * An admin generation is accepted at once; its predecessor too, for
//!   `secrets.admin_token_overlap`, then no longer. A node that generated its admin token
//!   (none configured) rewrites `<data_dir>/secrets/admin.token` with the newest, so
//!   `otpd audit` and `otpd keys` on that host keep working.
//!
//! # At rest
//!
//! Private material is sealed with ChaCha20-Poly1305 under a key derived (BLAKE3
//! `derive_key`, own context) from the node's master key (`secrets.hash_key`), which every
//! node of a cluster shares already and which never leaves the node's configuration. The
//! generation, kind and times are the associated data: a row moved to another slot, or a time
//! changed, does not open. Whoever reads the table or the files without the master key learns
//! no key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use otpd_actors::ports::StoreError;
use otpd_actors::rules::clock::Timestamp;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::secrets::SigningKey;
use crate::tokens::{SigningEntry, TokenService};

/// What a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// The access-token signing key (Ed25519, PKCS#8).
    Signing,
    /// The bearer token of the ops listener's admin API.
    Admin,
}

impl KeyKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::Signing => "signing",
            KeyKind::Admin => "admin",
        }
    }
}

/// One stored generation of a key (its material sealed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub kind: KeyKind,
    /// 1 and up (0 is the configured or generated key, never stored).
    pub generation: u32,
    pub created_at: Timestamp,
    /// When a signing key starts signing (an admin token: when it was made).
    pub activates_at: Timestamp,
    /// Nonce ‖ ciphertext ‖ tag.
    pub sealed: Vec<u8>,
}

/// Where the generations live: somewhere every node reads.
#[async_trait]
pub trait KeyVault: Send + Sync + 'static {
    /// Every stored generation of `kind`, any order.
    async fn keys(&self, kind: KeyKind) -> Result<Vec<StoredKey>, StoreError>;
    /// Stores `key` unless its generation of its kind exists (atomically, durably); whether
    /// this call stored it.
    async fn claim_key(&self, key: &StoredKey) -> Result<bool, StoreError>;
}

/// The single-node vault: one file per generation in `<data_dir>/secrets/keys/`, mode 0600.
pub struct FileVault {
    dir: PathBuf,
}

impl FileVault {
    pub fn new(dir: PathBuf) -> FileVault {
        FileVault { dir }
    }

    fn path(&self, kind: KeyKind, generation: u32) -> PathBuf {
        self.dir.join(format!("{}-{generation:08}.key", kind.as_str()))
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("key vault: {e}"))
}

#[async_trait]
impl KeyVault for FileVault {
    async fn keys(&self, kind: KeyKind) -> Result<Vec<StoredKey>, StoreError> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io(e)),
            };
            let prefix = format!("{}-", kind.as_str());
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io)?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if !name.starts_with(&prefix) || !name.ends_with(".key") {
                    continue;
                }
                let bytes = std::fs::read(entry.path()).map_err(io)?;
                let key: StoredKey = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", entry.path().display())))?;
                out.push(key);
            }
            Ok(out)
        })
        .await
        .map_err(io)?
    }

    async fn claim_key(&self, key: &StoredKey) -> Result<bool, StoreError> {
        let (dir, path, key) = (self.dir.clone(), self.path(key.kind, key.generation), key.clone());
        tokio::task::spawn_blocking(move || {
            crate::secrets::create_private_dir(&dir).map_err(io)?;
            let tmp = dir.join(format!(".claim-{}.tmp", uuid::Uuid::new_v4().simple()));
            write_private(&tmp, &serde_json::to_vec(&key).map_err(io)?)?;
            // link(2) never replaces: of two claims of one generation, one wins.
            let won = match std::fs::hard_link(&tmp, &path) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(io(e));
                }
            };
            let _ = std::fs::remove_file(&tmp);
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(won)
        })
        .await
        .map_err(io)?
    }
}

/// Writes `bytes` to a new file of mode 0600 and fsyncs it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Seals and opens key material under a key derived from the master key.
pub struct Sealer {
    key: aws_lc_rs::aead::LessSafeKey,
}

impl Sealer {
    pub fn new(master: &[u8; 32]) -> Sealer {
        let derived = blake3::derive_key("otpd 2026-12-05 key ring sealing key", master);
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::CHACHA20_POLY1305, &derived)
            .expect("a 32-byte key is a ChaCha20-Poly1305 key");
        Sealer { key: aws_lc_rs::aead::LessSafeKey::new(unbound) }
    }

    fn aad(kind: KeyKind, generation: u32, created_at: Timestamp, activates_at: Timestamp) -> Vec<u8> {
        let mut aad = kind.as_str().as_bytes().to_vec();
        aad.extend(generation.to_be_bytes());
        aad.extend(created_at.as_millis().to_be_bytes());
        aad.extend(activates_at.as_millis().to_be_bytes());
        aad
    }

    pub fn seal(
        &self,
        kind: KeyKind,
        generation: u32,
        created_at: Timestamp,
        activates_at: Timestamp,
        material: &[u8],
    ) -> StoredKey {
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).expect("the operating system's random source is available");
        let mut buf = material.to_vec();
        self.key
            .seal_in_place_append_tag(
                aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce),
                aws_lc_rs::aead::Aad::from(Self::aad(kind, generation, created_at, activates_at)),
                &mut buf,
            )
            .expect("sealing a small buffer cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend(buf);
        StoredKey { kind, generation, created_at, activates_at, sealed }
    }

    /// The material, if `key` opens under this node's master key.
    pub fn open(&self, key: &StoredKey) -> Option<Vec<u8>> {
        let (nonce, body) = key.sealed.split_at_checked(12)?;
        let mut buf = body.to_vec();
        let plain = self
            .key
            .open_in_place(
                aws_lc_rs::aead::Nonce::try_assume_unique_for_key(nonce).ok()?,
                aws_lc_rs::aead::Aad::from(Self::aad(key.kind, key.generation, key.created_at, key.activates_at)),
                &mut buf,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

/// One accepted admin token.
struct AdminEntry {
    generation: u32,
    created_at: Timestamp,
    token: String,
}

/// The admin tokens accepted now: the newest, and its predecessor for an overlap.
pub struct AdminTokens {
    entries: ArcSwap<Vec<AdminEntry>>,
    overlap: Duration,
}

impl AdminTokens {
    pub fn new(base: String, overlap: Duration) -> AdminTokens {
        let base = AdminEntry { generation: 0, created_at: Timestamp::from_millis(0), token: base };
        AdminTokens { entries: ArcSwap::from_pointee(vec![base]), overlap }
    }

    /// Whether `presented` is accepted at `now`, compared in constant time with each.
    pub fn accepts(&self, presented: &str, now: Timestamp) -> bool {
        let entries = self.entries.load();
        let newest = entries.last().expect("generation 0 is always there");
        let mut ok = bool::from(presented.as_bytes().ct_eq(newest.token.as_bytes()));
        if entries.len() > 1 && now < newest.created_at.plus(self.overlap) {
            let previous = &entries[entries.len() - 2];
            ok |= bool::from(presented.as_bytes().ct_eq(previous.token.as_bytes()));
        }
        ok
    }

    /// The newest token.
    pub fn newest(&self) -> String {
        self.entries.load().last().expect("generation 0 is always there").token.clone()
    }

    fn generations(&self) -> Vec<u32> {
        self.entries.load().iter().map(|e| e.generation).collect()
    }

    fn install(&self, rotated: Vec<AdminEntry>) {
        let current = self.entries.load();
        let base = AdminEntry { generation: 0, created_at: current[0].created_at, token: current[0].token.clone() };
        let mut entries = vec![base];
        entries.extend(rotated.into_iter().filter(|e| e.generation > 0));
        entries.sort_by_key(|e| e.generation);
        entries.dedup_by_key(|e| e.generation);
        self.entries.store(Arc::new(entries));
    }
}

/// Why a rotation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error(
        "tokens.algorithm is HS256: the shared secret is held by every verifier too; change it in the configuration"
    )]
    NotRotatable,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("another node rotated the same key at the same moment, several times; try again")]
    Contended,
}

/// What a rotation made.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub kind: KeyKind,
    pub generation: u32,
    pub activates_at: Timestamp,
    /// The signing key's `kid`.
    pub kid: Option<String>,
    /// The new admin token (shown once, to whoever rotated it).
    pub admin_token: Option<String>,
    /// Until when the previous admin token is still accepted.
    pub previous_until: Option<Timestamp>,
}

/// The rotation settings of a node.
#[derive(Clone, Debug)]
pub struct RingSettings {
    pub activation_delay: Duration,
    pub admin_overlap: Duration,
    /// `None`: no scheduled rotation.
    pub rotate_every: Option<Duration>,
    /// The generated admin token's file, rewritten with the newest token; `None` when the
    /// token is configured.
    pub admin_token_file: Option<PathBuf>,
}

/// The node's view of its rotating keys.
pub struct KeyRing {
    vault: Arc<dyn KeyVault>,
    sealer: Sealer,
    settings: RingSettings,
}

/// Stored generations that would not open (another master key, or tampered): skipped, and
/// said once per poll.
fn unopened(kind: KeyKind, generation: u32) {
    tracing::error!(
        kind = kind.as_str(),
        generation,
        "a stored key does not open with this node's master key; skipped"
    );
}

impl KeyRing {
    pub fn new(vault: Arc<dyn KeyVault>, master: &[u8; 32], settings: RingSettings) -> KeyRing {
        KeyRing { vault, sealer: Sealer::new(master), settings }
    }

    pub fn settings(&self) -> &RingSettings {
        &self.settings
    }

    /// Reads the vault and installs what changed into `tokens` and `admin`.
    pub async fn refresh(&self, tokens: &TokenService, admin: &AdminTokens) -> Result<(), StoreError> {
        let signing = self.vault.keys(KeyKind::Signing).await?;
        let mut generations: Vec<u32> = signing.iter().map(|k| k.generation).collect();
        generations.push(0);
        generations.sort_unstable();
        if tokens.rotatable() && generations != tokens.generations() {
            let mut entries = Vec::new();
            for key in &signing {
                let Some(pkcs8) = self.sealer.open(key) else {
                    unopened(key.kind, key.generation);
                    continue;
                };
                match SigningEntry::new(key.generation, key.activates_at, &SigningKey::Ed25519(pkcs8)) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => {
                        tracing::error!(generation = key.generation, error = %e, "a stored signing key is not Ed25519 PKCS#8; skipped")
                    }
                }
            }
            tokens.install(entries);
            tracing::info!(generations = ?tokens.generations(), "signing keys installed");
        }
        let stored = self.vault.keys(KeyKind::Admin).await?;
        let mut generations: Vec<u32> = stored.iter().map(|k| k.generation).collect();
        generations.push(0);
        generations.sort_unstable();
        if generations != admin.generations() {
            let mut entries = Vec::new();
            for key in &stored {
                match self.sealer.open(key).and_then(|t| String::from_utf8(t).ok()) {
                    Some(token) => {
                        entries.push(AdminEntry { generation: key.generation, created_at: key.created_at, token })
                    }
                    None => unopened(key.kind, key.generation),
                }
            }
            admin.install(entries);
            tracing::info!(generation = admin.generations().last().copied().unwrap_or(0), "admin tokens installed");
            if let Some(path) = &self.settings.admin_token_file {
                self.write_admin_file(path, &admin.newest()).await;
            }
        }
        Ok(())
    }

    async fn write_admin_file(&self, path: &Path, token: &str) {
        let (path, token) = (path.to_owned(), token.to_owned());
        let written = tokio::task::spawn_blocking(move || {
            let tmp = path.with_extension("rotating.tmp");
            let _ = std::fs::remove_file(&tmp);
            write_private(&tmp, token.as_bytes())?;
            std::fs::rename(&tmp, &path).map_err(io)
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            tracing::warn!("could not write the rotated admin token to the data directory's admin.token");
        }
    }

    /// Makes generation *newest + 1* of `kind` and stores it; then installs it here.
    pub async fn rotate(
        &self,
        kind: KeyKind,
        now: Timestamp,
        tokens: &TokenService,
        admin: &AdminTokens,
    ) -> Result<Rotated, RotateError> {
        if kind == KeyKind::Signing && !tokens.rotatable() {
            return Err(RotateError::NotRotatable);
        }
        for _ in 0..5 {
            let newest = self.vault.keys(kind).await?.iter().map(|k| k.generation).max().unwrap_or(0);
            let generation = newest + 1;
            let (material, activates_at) = match kind {
                KeyKind::Signing => (new_ed25519(), now.plus(self.settings.activation_delay)),
                KeyKind::Admin => (URL_SAFE_NO_PAD.encode(random32()).into_bytes(), now),
            };
            let stored = self.sealer.seal(kind, generation, now, activates_at, &material);
            if !self.vault.claim_key(&stored).await? {
                continue;
            }
            self.refresh(tokens, admin).await?;
            let rotated = match kind {
                KeyKind::Signing => Rotated {
                    kind,
                    generation,
                    activates_at,
                    kid: Some(
                        SigningEntry::new(generation, activates_at, &SigningKey::Ed25519(material))
                            .map(|e| e.kid().to_owned())
                            .unwrap_or_default(),
                    ),
                    admin_token: None,
                    previous_until: None,
                },
                KeyKind::Admin => Rotated {
                    kind,
                    generation,
                    activates_at,
                    kid: None,
                    admin_token: Some(String::from_utf8(material).expect("base64 is UTF-8")),
                    previous_until: Some(now.plus(self.settings.admin_overlap)),
                },
            };
            return Ok(rotated);
        }
        Err(RotateError::Contended)
    }

    /// Whether the schedule asks for a new signing key at `now`: no rotated key yet, or the
    /// newest made `rotate_every` ago or more. (Generation 0's age is not known: the first
    /// check after the schedule is turned on rotates.)
    pub async fn due(&self, now: Timestamp) -> Result<bool, StoreError> {
        let Some(every) = self.settings.rotate_every else { return Ok(false) };
        let newest = self.vault.keys(KeyKind::Signing).await?.into_iter().max_by_key(|k| k.generation);
        Ok(newest.is_none_or(|k| now >= k.created_at.plus(every)))
    }
}

fn random32() -> [u8; 32] {
    let mut out = [0u8; 32];
    aws_lc_rs::rand::fill(&mut out).expect("the operating system's random source is available");
    out
}

fn new_ed25519() -> Vec<u8> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("Ed25519 key generation cannot fail with a working random source")
        .as_ref()
        .to_vec()
}

/// The conformance suite every [`KeyVault`] passes: claims are exclusive per generation and
/// kind, what is stored reads back whole, kinds do not mix.
pub async fn vault_conformance(vault: &dyn KeyVault) {
    assert!(vault.keys(KeyKind::Signing).await.unwrap().is_empty(), "a new vault is empty");
    let t = Timestamp::from_millis(1_700_000_000_000);
    let key = |kind, generation, byte| StoredKey {
        kind,
        generation,
        created_at: t,
        activates_at: t.plus(Duration::from_secs(5)),
        sealed: vec![byte; 60],
    };
    assert!(vault.claim_key(&key(KeyKind::Signing, 1, 1)).await.unwrap(), "the first claim wins");
    assert!(!vault.claim_key(&key(KeyKind::Signing, 1, 2)).await.unwrap(), "the second claim of a generation loses");
    assert!(vault.claim_key(&key(KeyKind::Admin, 1, 3)).await.unwrap(), "kinds have their own generations");
    assert!(vault.claim_key(&key(KeyKind::Signing, 2, 4)).await.unwrap());
    let mut signing = vault.keys(KeyKind::Signing).await.unwrap();
    signing.sort_by_key(|k| k.generation);
    assert_eq!(signing, vec![key(KeyKind::Signing, 1, 1), key(KeyKind::Signing, 2, 4)]);
    assert_eq!(vault.keys(KeyKind::Admin).await.unwrap(), vec![key(KeyKind::Admin, 1, 3)]);
    // Claims racing for one generation: exactly one wins.
    let claims = (0..8u8).map(|i| {
        let k = key(KeyKind::Signing, 3, 10 + i);
        async move { vault.claim_key(&k).await }
    });
    let won = futures::future::join_all(claims).await.into_iter().filter(|r| *r.as_ref().unwrap()).count();
    assert_eq!(won, 1, "of concurrent claims of one generation exactly one wins");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_material_opens_only_with_its_master_key_and_its_own_slot() {
        let (a, b) = (Sealer::new(&[1; 32]), Sealer::new(&[2; 32]));
        let t = Timestamp::from_millis(1_700_000_000_000);
        let stored = a.seal(KeyKind::Admin, 3, t, t, b"the token");
        assert!(!stored.sealed.windows(9).any(|w| w == b"the token"), "sealed, not in clear");
        assert_eq!(a.open(&stored).as_deref(), Some(&b"the token"[..]));
        assert_eq!(b.open(&stored), None, "another master key");
        for moved in [
            StoredKey { generation: 4, ..stored.clone() },
            StoredKey { kind: KeyKind::Signing, ..stored.clone() },
            StoredKey { activates_at: t.plus(Duration::from_secs(1)), ..stored.clone() },
        ] {
            assert_eq!(a.open(&moved), None, "{moved:?}");
        }
    }

    #[test]
    fn the_previous_admin_token_is_accepted_for_the_overlap_only() {
        let admin = AdminTokens::new("old-token-0123456789".into(), Duration::from_secs(3600));
        let t = Timestamp::from_millis(1_700_000_000_000);
        assert!(admin.accepts("old-token-0123456789", t));
        admin.install(vec![AdminEntry { generation: 1, created_at: t, token: "new-token-0123456789".into() }]);
        assert!(admin.accepts("new-token-0123456789", t));
        assert!(admin.accepts("old-token-0123456789", t.plus(Duration::from_secs(3599))));
        assert!(!admin.accepts("old-token-0123456789", t.plus(Duration::from_secs(3600))));
        assert!(admin.accepts("new-token-0123456789", t.plus(Duration::from_secs(3600))));
        assert!(!admin.accepts("", t));
        assert_eq!(admin.newest(), "new-token-0123456789");
    }

    #[tokio::test]
    async fn the_file_vault_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let vault = FileVault::new(dir.path().join("keys"));
        vault_conformance(&vault).await;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join("keys/signing-00000001.key");
            assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
