//! `POST /v1/admin/backup`: a backup of the node's embedded store, taken while it serves
//! (what `otpd backup` asks for; how it is made: `crate::store::embedded::backup`), audited
//! as `admin_backup` and counted in the backup metrics.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use otpd_actors::rules::audit::Step;
use otpd_actors::{Api, EngineError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::app::{App, Call, Resp, json};
use super::problem::{self, ApiError};
use crate::store::embedded::backup::{BackupError, Report};

/// The longest directory name taken (Linux's `PATH_MAX`).
const MAX_DIR: usize = 4096;

/// `POST /v1/admin/backup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// An absolute path on the node's host that does not exist yet; the node creates it
    /// (and missing parents, `0700`).
    #[schema(examples("/var/backups/otpd/2026-12-05"))]
    pub dir: String,
}

/// A backup written and verified.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupResponse {
    pub dir: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    pub otpd_version: String,
    /// Every keyspace of the store, with its record count and BLAKE3 digest (as the manifest).
    pub keyspaces: Vec<BackupKeyspace>,
    /// Files of `<data_dir>/secrets/` copied (the hash key among them: a backup without it is
    /// useless).
    pub secret_files: usize,
    /// Bytes written (store and secrets).
    pub bytes: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackupKeyspace {
    pub name: String,
    pub count: u64,
    pub blake3: String,
}

impl From<&Report> for BackupResponse {
    fn from(r: &Report) -> Self {
        BackupResponse {
            dir: r.dir.display().to_string(),
            created_at: r.manifest.created_at.clone(),
            otpd_version: r.manifest.otpd_version.clone(),
            keyspaces: r
                .manifest
                .keyspaces
                .iter()
                .map(|(name, k)| BackupKeyspace { name: name.clone(), count: k.count, blake3: k.blake3.clone() })
                .collect(),
            secret_files: r.manifest.files.keys().filter(|f| f.starts_with("secrets/")).count(),
            bytes: r.bytes,
            duration_ms: r.took.as_millis() as u64,
        }
    }
}

/// Registers the backup metrics at zero, so that they are exported before the first backup.
pub fn register_metrics() {
    for outcome in ["ok", "refused", "failed"] {
        metrics::counter!(crate::metrics::BACKUPS, "outcome" => outcome).increment(0);
    }
    for name in [crate::metrics::BACKUP_DURATION, crate::metrics::BACKUP_BYTES, crate::metrics::BACKUP_LAST_SUCCESS] {
        metrics::gauge!(name).set(0.0);
    }
}

/// `POST /v1/admin/backup`.
pub(super) async fn admin_backup(app: &App, call: &Call<'_>) -> Result<Resp, ApiError> {
    let req: BackupRequest = call.json(app)?;
    let started = Instant::now();
    let result = match (&app.backups, check_dir(&req.dir)) {
        (None, _) => Err(Refusal::NotSupported),
        (_, Err(why)) => Err(Refusal::Dir(why)),
        (Some(backups), Ok(dir)) => backups.run(dir).await.map_err(Refusal::Backup),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(Refusal::Backup(e)) if !e.is_caller_side() => "failed",
        Err(_) => "refused",
    };
    metrics::counter!(crate::metrics::BACKUPS, "outcome" => outcome).increment(1);
    if let Ok(report) = &result {
        metrics::gauge!(crate::metrics::BACKUP_DURATION).set(started.elapsed().as_secs_f64());
        metrics::gauge!(crate::metrics::BACKUP_BYTES).set(report.bytes as f64);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        metrics::gauge!(crate::metrics::BACKUP_LAST_SUCCESS).set(now.as_secs_f64());
    }
    // The audit event says how it went; the answer is the refusal's own problem.
    let (step, audited) = match &result {
        Ok(_) => (Step::Done, Ok(())),
        Err(Refusal::Backup(e)) if !e.is_caller_side() => (Step::Store, Err(EngineError::Unavailable(e.to_string()))),
        Err(e) => (Step::Validate, Err(EngineError::InvalidInput(e.to_string()))),
    };
    let audit =
        app.engine.audit_operation(call.ctx, Api::AdminBackup, step, "backup written and verified", audited).await;
    match result {
        Ok(report) => {
            audit?;
            tracing::info!(
                dir = %report.dir.display(),
                bytes = report.bytes,
                took_ms = report.took.as_millis() as u64,
                "backup written and verified"
            );
            Ok(json(StatusCode::OK, &BackupResponse::from(&report)))
        }
        Err(refusal) => {
            if matches!(&refusal, Refusal::Backup(e) if !e.is_caller_side()) {
                tracing::error!(error = %refusal, "backup failed");
            }
            Err(refusal.into())
        }
    }
}

/// Why `POST /v1/admin/backup` wrote no backup.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("this node's store is ScyllaDB: back it up with nodetool snapshot (docs/OPERATIONS.md)")]
    NotSupported,
    #[error("{0}")]
    Dir(&'static str),
    #[error("{0}")]
    Backup(BackupError),
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let detail = r.to_string();
        match r {
            Refusal::NotSupported => ApiError::of(&problem::BACKUP_NOT_SUPPORTED, detail),
            Refusal::Dir(_) => ApiError::invalid_request(detail),
            Refusal::Backup(BackupError::TargetExists(_) | BackupError::TargetNotEmpty(_)) => {
                ApiError::of(&problem::BACKUP_TARGET_EXISTS, detail)
            }
            Refusal::Backup(BackupError::Busy) => ApiError::of(&problem::BACKUP_RUNNING, detail),
            Refusal::Backup(BackupError::Target { .. }) => ApiError::invalid_request(detail),
            // The node could not write or verify it (disk full, I/O error): a server-side
            // failure, whose text goes to the log, not to the caller.
            Refusal::Backup(_) => ApiError::from(EngineError::Unavailable(detail)),
        }
    }
}

/// The directory as a path: absolute, at most [`MAX_DIR`] bytes, no NUL, no `..`.
fn check_dir(raw: &str) -> Result<PathBuf, &'static str> {
    if raw.is_empty() || raw.len() > MAX_DIR || raw.contains('\0') {
        return Err("dir must be an absolute path of 1 to 4096 bytes");
    }
    let path = PathBuf::from(raw);
    if !path.is_absolute() {
        return Err("dir must be an absolute path (otpd backup makes a relative one absolute)");
    }
    if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err("dir must not contain `..`");
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_checked_before_anything_is_created() {
        assert!(check_dir("/var/backups/x").is_ok());
        for bad in ["", "relative/dir", "/a/../b", "/a\0b", &format!("/{}", "a".repeat(MAX_DIR))] {
            assert!(check_dir(bad).is_err(), "{bad:?}");
        }
    }
}
