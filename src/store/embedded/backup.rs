//! Online backups of the embedded store, and restores from them (`otpd backup`, `otpd restore`).
//!
//! A backup is a directory:
//!
//! | path | what |
//! | --- | --- |
//! | `store/` | a new fjall database holding every keyspace of one snapshot of the node's store |
//! | `store/audit/` | the audit trail's segments (and index files) as far as they were published before the snapshot |
//! | `secrets/` | the files of `<data_dir>/secrets/` (hash key, signing key, admin token), `0600` |
//! | `manifest.json` | format, otpd version, time; per keyspace its count and digest; per file its size and digest |
//! | `manifest.json.blake3` | BLAKE3 of `manifest.json`'s bytes, so no byte of the manifest can change unseen |
//!
//! **Consistent**: every keyspace is read from one snapshot (`read_tx`), which holds exactly the
//! writes committed before it was taken, across keyspaces; so every write acknowledged before
//! the backup began is in it. Keyspaces are listed by name, so one added later is copied without
//! a change here. **Off the commit path**: the copy runs on its own thread (the caller's
//! `spawn_blocking`) and reads the snapshot; the writer never waits for it. Each keyspace is
//! bulk-loaded into the new database in key order (`start_ingestion`), which writes sorted
//! tables directly instead of going through a journal and memtables.
//!
//! **Verified twice**: after writing, the new database is reopened and every keyspace counted
//! and digested again (a keyspace's digest is BLAKE3 over its ordered pairs, each as
//! `u32 LE key length ‖ key ‖ u32 LE value length ‖ value`) and compared with what was read
//! from the snapshot; then every file is digested into the manifest. A restore checks every
//! file against the manifest before copying anything, copies, opens the copy, and checks the
//! keyspaces again. So a flipped byte anywhere, in a data file, a secret or the manifest, is
//! refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable, Snapshot};
use serde::{Deserialize, Serialize};

use super::handle::EmbeddedStore;

/// The manifest's format; a restore refuses any other.
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const MANIFEST_DIGEST: &str = "manifest.json.blake3";
const STORE_DIR: &str = "store";
const SECRETS_DIR: &str = "secrets";

/// What a backup holds, written last (`manifest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub otpd_version: String,
    /// RFC 3339, UTC: when the snapshot was taken.
    pub created_at: String,
    /// Every keyspace of the store, by name.
    pub keyspaces: BTreeMap<String, KeyspaceSum>,
    /// Every file of the backup but the manifest's own two, by path relative to the backup.
    pub files: BTreeMap<String, FileSum>,
}

/// A keyspace's pairs: how many, and their digest (module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyspaceSum {
    pub count: u64,
    pub blake3: String,
}

/// A file's size and BLAKE3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSum {
    pub bytes: u64,
    pub blake3: String,
}

/// What a finished (and verified) backup or restore did.
#[derive(Clone, Debug)]
pub struct Report {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Bytes of every file written (store and secrets).
    pub bytes: u64,
    pub took: Duration,
    /// Time per step, in order (for `examples/backup_bench.rs` and the log).
    pub steps: Vec<(&'static str, Duration)>,
}

impl Report {
    /// One line for the command line: keyspaces, records, size, time, rate.
    pub fn summary(&self, verb: &str) -> String {
        let records: u64 = self.manifest.keyspaces.values().map(|k| k.count).sum();
        let mb = self.bytes as f64 / 1e6;
        let s = self.took.as_secs_f64();
        format!(
            "{verb} {} ({} keyspaces, {records} records, {} secret files, {mb:.1} MB) in {s:.2} s ({:.1} MB/s), verified",
            self.dir.display(),
            self.manifest.keyspaces.len(),
            self.manifest.files.keys().filter(|f| f.starts_with("secrets/")).count(),
            if s > 0.0 { mb / s } else { 0.0 },
        )
    }
}

/// Why a backup or a restore did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A backup is only ever written into a new directory.
    #[error("{0}: already exists; a backup is written into a new directory only")]
    TargetExists(PathBuf),
    /// A restore builds a data directory from nothing.
    #[error("{0}: exists and is not empty; restore into a new or empty directory")]
    TargetNotEmpty(PathBuf),
    /// The target cannot be used (not absolute, cannot be created).
    #[error("{path}: {message}")]
    Target { path: PathBuf, message: String },
    #[error("another backup is running on this node; try again when it has finished")]
    Busy,
    /// Reading or writing failed on the way.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("the store: {0}")]
    Store(String),
    /// What was written does not read back as what was read (a backup), or a backup does not
    /// match its manifest (a restore).
    #[error("verification failed: {0}")]
    Mismatch(String),
    #[error("{path}: not a backup this otpd can restore: {message}")]
    Manifest { path: PathBuf, message: String },
}

impl BackupError {
    /// Whether the caller's request is at fault (a 4xx), rather than the node.
    pub fn is_caller_side(&self) -> bool {
        matches!(
            self,
            BackupError::TargetExists(_)
                | BackupError::TargetNotEmpty(_)
                | BackupError::Target { .. }
                | BackupError::Busy
        )
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> BackupError {
    BackupError::Io { path: path.to_owned(), message: e.to_string() }
}

fn store_err(e: impl std::fmt::Display) -> BackupError {
    BackupError::Store(e.to_string())
}

/// Backups of one node's embedded store, one at a time.
pub struct Backups {
    store: Arc<EmbeddedStore>,
    store_dir: PathBuf,
    secrets_dir: PathBuf,
    /// Backups are written inside it only (`admin.backup_root`), when set.
    root: Option<PathBuf>,
    running: AtomicBool,
}

impl Backups {
    /// Backups of `store` (open in `store_dir`) with the secrets of `secrets_dir`.
    pub fn new(store: Arc<EmbeddedStore>, store_dir: PathBuf, secrets_dir: PathBuf) -> Self {
        Backups { store, store_dir, secrets_dir, root: None, running: AtomicBool::new(false) }
    }

    /// Only directories inside `root` are taken (none set: any); an empty path sets none.
    pub fn confined_to(mut self, root: PathBuf) -> Self {
        self.root = Some(root).filter(|r| !r.as_os_str().is_empty());
        self
    }

    /// Writes and verifies a backup into `dir` (absolute, not existing yet) on a blocking
    /// thread; a second backup while one runs is refused ([`BackupError::Busy`]).
    pub async fn run(self: &Arc<Self>, dir: PathBuf) -> Result<Report, BackupError> {
        if !dir.is_absolute() {
            return Err(BackupError::Target { path: dir, message: "the directory must be an absolute path".into() });
        }
        if let Some(root) = &self.root
            && inside_of(&dir, &[root]).is_none_or(|_| dir == *root)
        {
            return Err(BackupError::Target {
                path: dir,
                message: format!("outside admin.backup_root ({}); backups are written inside it", root.display()),
            });
        }
        if let Some(inside) = inside_of(&dir, &[&self.secrets_dir, &self.store_dir]) {
            return Err(BackupError::Target {
                path: dir,
                message: format!("inside the node's own {}; choose a directory outside it", inside.display()),
            });
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(BackupError::Busy);
        }
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = backup(&this.store, &this.secrets_dir, &dir);
            this.running.store(false, Ordering::Release);
            result
        })
        .await;
        match result {
            Ok(r) => r,
            Err(e) => {
                self.running.store(false, Ordering::Release);
                Err(BackupError::Store(format!("the backup thread failed: {e}")))
            }
        }
    }
}

/// The first of `dirs` that `path` would be inside (symbolic links of the part that exists
/// resolved): a backup written into the live store's directory could be taken for part of it.
fn inside_of<'a>(path: &Path, dirs: &[&'a Path]) -> Option<&'a Path> {
    let mut existing = path;
    let mut rest = Vec::new();
    while fs::symlink_metadata(existing).is_err() {
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
    let mut resolved = fs::canonicalize(existing).ok()?;
    resolved.extend(rest.iter().rev());
    dirs.iter().copied().find(|d| fs::canonicalize(d).is_ok_and(|d| resolved.starts_with(d)))
}

/// The backup itself (module doc), on the calling thread.
pub fn backup(store: &EmbeddedStore, secrets_dir: &Path, dir: &Path) -> Result<Report, BackupError> {
    let started = Instant::now();
    if fs::symlink_metadata(dir).is_ok() {
        return Err(BackupError::TargetExists(dir.to_owned()));
    }
    crate::private_fs::create_dir(dir)
        .map_err(|e| BackupError::Target { path: dir.to_owned(), message: format!("cannot create it: {e}") })?;
    let result = write_backup(store, secrets_dir, dir, started);
    if result.is_err() {
        // Nothing half-written stays behind to be mistaken for a backup.
        let _ = fs::remove_dir_all(dir);
    }
    result
}

fn write_backup(
    store: &EmbeddedStore,
    secrets_dir: &Path,
    dir: &Path,
    started: Instant,
) -> Result<Report, BackupError> {
    let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    // The audit trail's published events first: each one's subject key was committed before
    // it was published, so the snapshot below has it.
    let trail = store.trail.view();
    // One snapshot for every keyspace: the consistency of the backup.
    let snapshot = store.db.read_tx();
    let mut names: Vec<String> = store.db.list_keyspace_names().iter().map(|n| n.to_string()).collect();
    names.sort();
    let mut sources = Vec::with_capacity(names.len());
    for name in &names {
        let ks = store.db.keyspace(name, KeyspaceCreateOptions::default).map_err(store_err)?;
        sources.push((name.clone(), ks.inner().clone()));
    }
    let mut steps = Vec::new();
    let mut lap = Instant::now();
    let mut step = |name: &'static str| steps.push((name, std::mem::replace(&mut lap, Instant::now()).elapsed()));
    let keyspaces = copy_snapshot(&snapshot, &sources, &dir.join(STORE_DIR), store.memtable_bytes)?;
    drop((snapshot, sources));
    super::trail::copy_view(&trail, &dir.join(STORE_DIR).join("audit")).map_err(store_err)?;
    drop(trail);
    copy_secrets(secrets_dir, &dir.join(SECRETS_DIR))?;
    step("copy");
    let reread = sum_database(&dir.join(STORE_DIR))?;
    compare_keyspaces(&keyspaces, &reread, "the backup read back")?;
    step("read back");
    private_modes(dir)?;
    let files = sum_files(dir)?;
    let manifest =
        Manifest { format: FORMAT, otpd_version: env!("CARGO_PKG_VERSION").into(), created_at, keyspaces, files };
    write_manifest(dir, &manifest)?;
    // What is on disk now is what a restore will check.
    let again = read_manifest(dir)?;
    check_files(dir, &again)?;
    step("manifest");
    let bytes = manifest.files.values().map(|f| f.bytes).sum();
    Ok(Report { dir: dir.to_owned(), manifest, bytes, took: started.elapsed(), steps })
}

/// Copies every keyspace of `snapshot` into a new database at `path`; returns each keyspace's
/// count and digest as read.
fn copy_snapshot(
    snapshot: &Snapshot,
    sources: &[(String, Keyspace)],
    path: &Path,
    memtable_bytes: usize,
) -> Result<BTreeMap<String, KeyspaceSum>, BackupError> {
    let db = open_plain(path)?;
    let mut sums = BTreeMap::new();
    for (name, source) in sources {
        // The node opens its keyspaces with this memtable size; fjall keeps it per keyspace.
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable_bytes.max(1 << 20) as u64);
        let target = db.keyspace(name, options).map_err(store_err)?;
        let mut digest = PairDigest::default();
        let mut pairs = snapshot.iter(source).peekable();
        // An empty keyspace is created and left empty: an ingestion of nothing writes no table.
        if pairs.peek().is_some() {
            let mut ingestion = target.start_ingestion().map_err(store_err)?;
            for guard in pairs {
                let (key, value) = guard.into_inner().map_err(store_err)?;
                digest.add(&key, &value);
                ingestion.write(key, value).map_err(store_err)?;
            }
            ingestion.finish().map_err(store_err)?;
        }
        sums.insert(name.clone(), digest.finish());
    }
    db.persist(PersistMode::SyncAll).map_err(store_err)?;
    Ok(sums)
}

/// Counts and digests every keyspace of the database at `path` (opened, then closed).
fn sum_database(path: &Path) -> Result<BTreeMap<String, KeyspaceSum>, BackupError> {
    if !path.is_dir() {
        return Err(BackupError::Mismatch(format!("{}: no store", path.display())));
    }
    let db = open_plain(path)?;
    let mut sums = BTreeMap::new();
    for name in db.list_keyspace_names() {
        let ks = db.keyspace(&name, KeyspaceCreateOptions::default).map_err(store_err)?;
        let mut digest = PairDigest::default();
        for guard in ks.iter() {
            let (key, value) =
                guard.into_inner().map_err(|e| BackupError::Mismatch(format!("keyspace {name}: {e}")))?;
            digest.add(&key, &value);
        }
        sums.insert(name.to_string(), digest.finish());
    }
    Ok(sums)
}

fn open_plain(path: &Path) -> Result<Database, BackupError> {
    crate::private_fs::create_dir(path).map_err(|e| io(path, e))?;
    Database::builder(path)
        .cache_size(16 * 1024 * 1024)
        .worker_threads(1)
        .open()
        .map_err(|e| BackupError::Store(format!("{}: {e}", path.display())))
}

/// BLAKE3 over a keyspace's ordered pairs, each length-prefixed (so pairs cannot run into
/// each other), and their count.
#[derive(Default)]
struct PairDigest {
    hasher: blake3::Hasher,
    count: u64,
}

impl PairDigest {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        self.hasher.update(&(key.len() as u32).to_le_bytes());
        self.hasher.update(key);
        self.hasher.update(&(value.len() as u32).to_le_bytes());
        self.hasher.update(value);
        self.count += 1;
    }

    fn finish(self) -> KeyspaceSum {
        KeyspaceSum { count: self.count, blake3: self.hasher.finalize().to_hex().to_string() }
    }
}

fn compare_keyspaces(
    expected: &BTreeMap<String, KeyspaceSum>,
    found: &BTreeMap<String, KeyspaceSum>,
    what: &str,
) -> Result<(), BackupError> {
    for (name, want) in expected {
        match found.get(name) {
            None => return Err(BackupError::Mismatch(format!("{what} has no keyspace {name}"))),
            Some(got) if got.count != want.count => {
                return Err(BackupError::Mismatch(format!(
                    "{what}: keyspace {name} holds {} records, the manifest says {}",
                    got.count, want.count
                )));
            }
            Some(got) if got.blake3 != want.blake3 => {
                return Err(BackupError::Mismatch(format!(
                    "{what}: keyspace {name}'s records differ from the manifest"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|n| !expected.contains_key(*n)) {
        return Err(BackupError::Mismatch(format!("{what} has a keyspace {extra} the manifest does not list")));
    }
    Ok(())
}

/// Copies the regular files of `from` (if it exists) into `to`, each `0600` and synced.
fn copy_secrets(from: &Path, to: &Path) -> Result<(), BackupError> {
    crate::private_fs::create_dir(to).map_err(|e| io(to, e))?;
    let entries = match fs::read_dir(from) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(from, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(from, e))?;
        let name = entry.file_name();
        // Left-over temporary files of an interrupted key generation are not secrets.
        if name.to_string_lossy().starts_with('.') || !entry.file_type().map_err(|e| io(from, e))?.is_file() {
            continue;
        }
        copy_private(&entry.path(), &to.join(name))?;
    }
    sync_dir(to)
}

/// Copies one file, created `0600`, and syncs it.
fn copy_private(from: &Path, to: &Path) -> Result<u64, BackupError> {
    let mut src = fs::File::open(from).map_err(|e| io(from, e))?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut dst = options.open(to).map_err(|e| io(to, e))?;
    let n = std::io::copy(&mut src, &mut dst).map_err(|e| io(to, e))?;
    dst.sync_all().map_err(|e| io(to, e))?;
    Ok(n)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

/// Every regular file under `root`, as paths relative to it with `/`, sorted; symbolic links
/// and other special files are refused (a backup holds none).
fn files_under(root: &Path) -> Result<Vec<String>, BackupError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BackupError> {
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            if kind.is_dir() {
                walk(root, &entry.path(), out)?;
            } else if kind.is_file() {
                let rel = entry.path().strip_prefix(root).expect("under the root").to_owned();
                let parts: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.push(parts.join("/"));
            } else {
                return Err(BackupError::Mismatch(format!("{}: not a regular file", entry.path().display())));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

fn sum_file(path: &Path) -> Result<FileSum, BackupError> {
    let mut hasher = blake3::Hasher::new();
    let file = fs::File::open(path).map_err(|e| io(path, e))?;
    let bytes =
        std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, file), &mut hasher).map_err(|e| io(path, e))?;
    Ok(FileSum { bytes, blake3: hasher.finalize().to_hex().to_string() })
}

/// Digests every file of the backup but the manifest's own.
fn sum_files(dir: &Path) -> Result<BTreeMap<String, FileSum>, BackupError> {
    let mut out = BTreeMap::new();
    for rel in files_under(dir)? {
        if rel == MANIFEST || rel == MANIFEST_DIGEST {
            continue;
        }
        out.insert(rel.clone(), sum_file(&dir.join(&rel))?);
    }
    Ok(out)
}

/// Sets `0700` on every directory and `0600` on every file under `dir` (and `dir`): the files
/// the storage library created follow the process umask, which need not be private.
fn private_modes(dir: &Path) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io(dir, e))?;
        for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let kind = entry.file_type().map_err(|e| io(&entry.path(), e))?;
            if kind.is_dir() {
                private_modes(&entry.path())?;
            } else if kind.is_file() {
                fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600))
                    .map_err(|e| io(&entry.path(), e))?;
            }
        }
    }
    Ok(())
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let mut text = serde_json::to_vec_pretty(manifest).expect("a manifest serialises");
    text.push(b'\n');
    let digest = format!("{}\n", blake3::hash(&text).to_hex());
    for (name, content) in [(MANIFEST, text.as_slice()), (MANIFEST_DIGEST, digest.as_bytes())] {
        let path = dir.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&path).map_err(|e| io(&path, e))?;
        f.write_all(content).and_then(|_| f.sync_all()).map_err(|e| io(&path, e))?;
    }
    sync_dir(dir)
}

/// Reads the manifest and checks it against its digest file.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BackupError> {
    let bad = |message: String| BackupError::Manifest { path: dir.to_owned(), message };
    let text = fs::read(dir.join(MANIFEST)).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    let recorded = fs::read_to_string(dir.join(MANIFEST_DIGEST)).map_err(|e| bad(format!("{MANIFEST_DIGEST}: {e}")))?;
    if blake3::hash(&text).to_hex().as_str() != recorded.trim() {
        return Err(BackupError::Mismatch(format!(
            "{MANIFEST} does not match {MANIFEST_DIGEST}: the manifest (or its digest) was changed or damaged"
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!("manifest format {} (this otpd reads format {FORMAT})", manifest.format)));
    }
    Ok(manifest)
}

/// Every file the manifest lists is there with its size and digest, and there is no other.
fn check_files(dir: &Path, manifest: &Manifest) -> Result<(), BackupError> {
    let present: Vec<String> =
        files_under(dir)?.into_iter().filter(|f| f != MANIFEST && f != MANIFEST_DIGEST).collect();
    if let Some(extra) = present.iter().find(|f| !manifest.files.contains_key(*f)) {
        return Err(BackupError::Mismatch(format!("{extra} is not in the manifest")));
    }
    for (rel, want) in &manifest.files {
        if !present.contains(rel) {
            return Err(BackupError::Mismatch(format!("{rel} is missing")));
        }
        let got = sum_file(&dir.join(rel))?;
        if got != *want {
            return Err(BackupError::Mismatch(format!("{rel} differs from the manifest (size or digest)")));
        }
    }
    Ok(())
}

/// Checks a backup against its manifest (every file, then the keyspaces of a copy), and
/// builds `data_dir` from it: `store/` and `secrets/` (`0700`, files `0600`). `data_dir` must
/// not exist or be empty; on any failure what was created is removed again.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Report, BackupError> {
    let started = Instant::now();
    let manifest = read_manifest(backup)?;
    check_files(backup, &manifest)?;
    let checked = started.elapsed();
    let created = match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::TargetNotEmpty(data_dir.to_owned()));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::private_fs::create_dir(data_dir).map_err(|e| BackupError::Target {
                path: data_dir.to_owned(),
                message: format!("cannot create it: {e}"),
            })?;
            true
        }
        Err(e) => return Err(BackupError::Target { path: data_dir.to_owned(), message: e.to_string() }),
    };
    let result = build(backup, data_dir, &manifest, started, checked);
    if result.is_err() {
        match created {
            true => {
                let _ = fs::remove_dir_all(data_dir);
            }
            false => {
                let _ = fs::remove_dir_all(data_dir.join(STORE_DIR));
                let _ = fs::remove_dir_all(data_dir.join(SECRETS_DIR));
            }
        }
    }
    result
}

fn build(
    backup: &Path,
    data_dir: &Path,
    manifest: &Manifest,
    started: Instant,
    checked: Duration,
) -> Result<Report, BackupError> {
    let mut steps = vec![("check the backup", checked)];
    let mut lap = Instant::now();
    let mut step = |name: &'static str| steps.push((name, std::mem::replace(&mut lap, Instant::now()).elapsed()));
    let mut bytes = 0;
    for rel in manifest.files.keys() {
        let (from, to) = (backup.join(rel), data_dir.join(rel));
        if let Some(parent) = to.parent() {
            crate::private_fs::create_dir(parent).map_err(|e| io(parent, e))?;
        }
        bytes += copy_private(&from, &to)?;
    }
    for sub in [STORE_DIR, SECRETS_DIR] {
        let d = data_dir.join(sub);
        crate::private_fs::create_dir(&d).map_err(|e| io(&d, e))?;
    }
    private_modes(data_dir)?;
    sync_dir(data_dir)?;
    step("copy");
    // The copy, not the backup, is opened: the backup stays as it was, for the next restore.
    let found = sum_database(&data_dir.join(STORE_DIR))?;
    compare_keyspaces(&manifest.keyspaces, &found, "the restored store")?;
    for (rel, want) in manifest.files.iter().filter(|(rel, _)| rel.starts_with("secrets/")) {
        if sum_file(&data_dir.join(rel))? != *want {
            return Err(BackupError::Mismatch(format!("the restored {rel} differs from the backup")));
        }
    }
    private_modes(data_dir)?;
    step("check the copy");
    Ok(Report { dir: data_dir.to_owned(), manifest: manifest.clone(), bytes, took: started.elapsed(), steps })
}

#[cfg(test)]
mod tests {
    use otpd_actors::ports::{AuditLog, InsertUser, User, UserStore};
    use otpd_actors::rules::clock::Timestamp;
    use otpd_actors::rules::identifier::Identifier;
    use otpd_actors::rules::ids::UserId;
    use otpd_actors::rules::keys::IdentHash;

    use super::super::handle::EmbeddedOptions;
    use super::*;

    fn user(n: u32) -> User {
        let at = Timestamp::from_millis(1_700_000_000_000);
        User {
            id: UserId(uuid::Uuid::from_u128(u128::from(n) + 1)),
            identifier: Identifier::Phone { e164: format!("+1202555{n:04}"), country_code: 1 },
            ident_hash: IdentHash(blake3::hash(&n.to_le_bytes()).as_bytes()[..16].try_into().unwrap()),
            first_name: "A".into(),
            last_name: "B".into(),
            email: None,
            verified: true,
            created_at: at,
            verified_at: Some(at),
            updated_at: at,
        }
    }

    /// A store with `n` users and a secrets directory with one key; returns (data dir, store).
    async fn store_with(n: u32) -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let data = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&data.path().join("store"), EmbeddedOptions::default()).unwrap();
        for i in 0..n {
            assert_eq!(store.insert_user(&user(i)).await.unwrap(), InsertUser::Inserted);
        }
        crate::private_fs::create_dir(&data.path().join("secrets")).unwrap();
        fs::write(data.path().join("secrets/hash.key"), "ab".repeat(32)).unwrap();
        (data, store)
    }

    fn audit_event(user: &User, n: u32) -> otpd_actors::ports::AuditEvent {
        otpd_actors::ports::AuditEvent {
            at: user.created_at,
            trace_id: format!("backup-{n}").into(),
            api: otpd_actors::rules::audit::Api::Login,
            step: otpd_actors::rules::audit::Step::Done,
            outcome: otpd_actors::rules::audit::AuditOutcome::Ok,
            message: format!("event {n}").into(),
            client_ip: Some("192.0.2.7".parse().unwrap()),
            user_agent: Some("Backup/1".into()),
            ident_hash: Some(user.ident_hash),
            user_id: Some(user.id),
        }
    }

    #[tokio::test]
    async fn a_backup_restores_into_the_same_records_and_refuses_what_it_should() {
        let (data, store) = store_with(50).await;
        for n in 0..5 {
            store.append(audit_event(&user(0), n)).await.unwrap();
        }
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("b1");
        let backups = Arc::new(Backups::new(store.clone(), data.path().join("store"), data.path().join("secrets")));
        let report = backups.run(dir.clone()).await.unwrap();
        assert_eq!(report.manifest.keyspaces["users"].count, 50);
        assert_eq!(report.manifest.keyspaces["users_by_ident"].count, 50);
        assert_eq!(report.manifest.keyspaces.len(), store.db.list_keyspace_names().len());
        assert!(report.manifest.files.contains_key("secrets/hash.key"));
        // A write after the backup is not in it.
        store.insert_user(&user(999)).await.unwrap();
        store.append(audit_event(&user(0), 5)).await.unwrap();
        assert!(matches!(backups.run(dir.clone()).await, Err(BackupError::TargetExists(_))));
        assert!(matches!(backups.run("relative".into()).await, Err(BackupError::Target { .. })));
        for inside in ["store/b", "secrets/b", "store/../store/new/b"] {
            let refused = backups.run(data.path().join(inside)).await;
            assert!(matches!(refused, Err(BackupError::Target { .. })), "{inside}: {refused:?}");
        }
        assert!(!data.path().join("store/b").exists() && !data.path().join("store/new").exists());
        let confined = Arc::new(
            Backups::new(store.clone(), data.path().join("store"), data.path().join("secrets"))
                .confined_to(out.path().join("only")),
        );
        // The root must exist (an operator makes it), and is not itself a backup's directory.
        assert!(matches!(confined.run(out.path().join("only/b3")).await, Err(BackupError::Target { .. })));
        fs::create_dir(out.path().join("only")).unwrap();
        assert!(matches!(confined.run(out.path().join("only")).await, Err(BackupError::Target { .. })));
        for outside in [out.path().join("b2"), out.path().join("only-not/b"), out.path().join("only/../b4")] {
            let refused = confined.run(outside.clone()).await;
            assert!(matches!(refused, Err(BackupError::Target { .. })), "{outside:?}: {refused:?}");
            assert!(!outside.exists());
        }
        let inside = confined.run(out.path().join("only/b3")).await.unwrap();
        assert_eq!(inside.manifest.keyspaces["users"].count, 51, "the account written after the first backup too");

        let restored = out.path().join("data");
        let r = restore(&dir, &restored).unwrap();
        assert_eq!(r.manifest, report.manifest);
        assert!(matches!(restore(&dir, &restored), Err(BackupError::TargetNotEmpty(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&restored.join("secrets")), 0o700);
            assert_eq!(mode(&restored.join("secrets/hash.key")), 0o600);
            assert_eq!(mode(&dir.join("manifest.json")), 0o600);
        }
        let again = EmbeddedStore::open(&restored.join("store"), EmbeddedOptions::default()).unwrap();
        for i in 0..50 {
            assert_eq!(again.user_by_identifier(&user(i).ident_hash).await.unwrap().as_deref(), Some(&user(i)));
        }
        assert_eq!(again.user_by_identifier(&user(999).ident_hash).await.unwrap(), None);
        // The restored store takes writes after what it holds.
        again.insert_user(&user(1000)).await.unwrap();
        let events = again.by_identifier(&user(0).ident_hash, 10).await.unwrap();
        let want: Vec<_> = (0..5).rev().map(|n| audit_event(&user(0), n)).collect();
        assert_eq!(events, want, "the trail as it was, personal fields readable (their keys came along)");
        again.append(audit_event(&user(0), 6)).await.unwrap();
        assert_eq!(again.by_identifier(&user(0).ident_hash, 10).await.unwrap().len(), 6);
        again.close();
        store.close();
    }

    /// Flips one byte of `path` at `at` (from the end when negative).
    fn flip(path: &Path, at: i64) {
        let mut bytes = fs::read(path).unwrap();
        let i = if at < 0 { bytes.len() - at.unsigned_abs() as usize } else { at as usize };
        bytes[i] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn a_damaged_backup_is_refused_and_leaves_nothing_behind() {
        let (data, store) = store_with(20).await;
        let out = tempfile::tempdir().unwrap();
        let clean = out.path().join("clean");
        backup(&store, &data.path().join("secrets"), &clean).unwrap();
        store.close();
        let manifest = read_manifest(&clean).unwrap();
        let table = manifest.files.keys().filter(|f| f.starts_with("store/")).max_by_key(|f| manifest.files[*f].bytes);
        let cases: Vec<(&str, String, i64)> = vec![
            ("a data file", table.unwrap().clone(), 100),
            ("a secret", "secrets/hash.key".into(), 0),
            ("the manifest", "manifest.json".into(), 30),
            ("the manifest's digest", "manifest.json.blake3".into(), 0),
        ];
        for (what, file, at) in cases {
            let copy = out.path().join(format!("copy-{}", file.replace('/', "_")));
            copy_tree(&clean, &copy);
            flip(&copy.join(&file), at);
            let target = out.path().join(format!("restored-{}", file.replace('/', "_")));
            let refused = restore(&copy, &target).unwrap_err();
            assert!(matches!(refused, BackupError::Mismatch(_) | BackupError::Manifest { .. }), "{what}: {refused}");
            assert!(!target.exists(), "{what}: nothing is left of a refused restore");
        }
        // A file added to a backup is refused too.
        let copy = out.path().join("extra");
        copy_tree(&clean, &copy);
        fs::write(copy.join("store/extra"), b"x").unwrap();
        assert!(matches!(restore(&copy, &out.path().join("r-extra")), Err(BackupError::Mismatch(_))));
        // The clean one restores.
        restore(&clean, &out.path().join("ok")).unwrap();
    }

    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for rel in files_under(from).unwrap() {
            let dst = to.join(&rel);
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(from.join(&rel), dst).unwrap();
        }
    }
}
