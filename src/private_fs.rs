//! Files and directories only this node's user may read: the data directory, the store, the
//! outbox and the secrets are created `0700` / `0600` whatever the process umask, and secret
//! files that others can read are refused at start.
//!
//! The umask is the operator's, and a permissive one (`000` in some container images) would
//! leave codes (the development outbox), accounts (the store) and keys readable by every local
//! user; the modes are therefore given explicitly at creation. Existing files keep their modes
//! (an operator may have reasons), except that a secret readable by group or others stops the
//! node: that is a leak, not a preference.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::path::Path;

/// Makes every file and directory this process creates from now on private to its user
/// (umask `077`), including those the storage library creates inside the store's directory,
/// which this crate does not open itself. Called first thing by the binary.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) only sets the process's file mode creation mask; it cannot fail and
    // touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` and its missing parents, each `0700`.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Opens `path` for appending, creating it `0600` (and its directory `0700`).
pub fn append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// A secret file that group or others may read, with its mode.
#[derive(Debug, thiserror::Error)]
#[error("{path}: mode {mode:04o} lets group or others read a secret; run `chmod 600 {path}`")]
pub struct ExposedSecret {
    pub path: String,
    pub mode: u32,
}

/// Refuses a secret file whose mode gives group or others any access.
pub fn check_secret_mode(path: &Path) -> Result<(), ExposedSecret> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                return Err(ExposedSecret { path: path.display().to_string(), mode });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private_and_open_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a/b/outbox.jsonl");
        append(&file).unwrap();
        assert_eq!((mode(&dir.path().join("a")), mode(&dir.path().join("a/b")), mode(&file)), (0o700, 0o700, 0o600));
        assert!(check_secret_mode(&file).is_ok());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let refused = check_secret_mode(&file).unwrap_err().to_string();
        assert!(refused.contains("mode 0640") && refused.contains("chmod 600"), "{refused}");
        assert!(check_secret_mode(&dir.path().join("missing")).is_ok(), "a missing file is another error's business");
    }
}
