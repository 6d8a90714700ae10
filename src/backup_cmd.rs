//! `otpd backup` and `otpd restore`.
//!
//! `otpd backup <dir>` asks the running node, whose process holds the store's lock, to write a
//! backup (`POST /v1/admin/backup` on its ops listener, `admin.listen`, with the admin token
//! from the configuration or the data directory, as `otpd audit` does). The directory is made
//! absolute here, and written by the node, on its host, as its user. With `store.kind =
//! "scylla"` there is nothing for otpd to copy: ScyllaDB is backed up with `nodetool snapshot`
//! (docs/OPERATIONS.md), and the command says so and fails.
//!
//! `otpd restore <backup> <data-dir>` is offline: it checks the backup against its manifest,
//! builds the data directory and checks it again (`crate::store::embedded::backup::restore`).

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::http::backup::BackupResponse;
use crate::secrets;
use crate::store::embedded::backup::{self as store_backup, BackupError};

/// Why `otpd backup` wrote no backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupCmdError {
    #[error(
        "the store is ScyllaDB (store.kind = \"scylla\"): otpd backs up only its embedded store. Back ScyllaDB up \
         with `nodetool snapshot` on every ScyllaDB node, and keep its schema and the node secrets \
         (docs/OPERATIONS.md, \"Backups\")"
    )]
    Scylla,
    #[error("cannot make {path} absolute: {source}")]
    Path { path: PathBuf, source: std::io::Error },
    #[error("the admin token cannot be read (secrets.admin_token, or admin.token in the data directory)")]
    NoAdminToken,
    #[error(
        "no node answered at {addr} ({source}); otpd backup asks the running node. With the node stopped, a copy \
         of its data directory (store/ and secrets/) is a backup"
    )]
    NodeSilent { addr: std::net::SocketAddr, source: reqwest::Error },
    #[error("{0}")]
    NodeBody(reqwest::Error),
    #[error("the node refused ({status}): {detail}")]
    NodeRefused { status: reqwest::StatusCode, detail: String },
    #[error("unexpected answer from the node: {0}")]
    NodeAnswer(serde_json::Error),
}

/// Asks the node to back up into `dir`; returns what to print.
pub async fn backup(config: &Config, dir: &Path) -> Result<String, BackupCmdError> {
    if config.store.kind == "scylla" {
        return Err(BackupCmdError::Scylla);
    }
    let dir = std::path::absolute(dir).map_err(|source| BackupCmdError::Path { path: dir.to_owned(), source })?;
    let token =
        secrets::admin_token(&config.secrets, &config.node.secrets_dir()).ok_or(BackupCmdError::NoAdminToken)?;
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let body = serde_json::json!({ "dir": dir.display().to_string() });
    // No timeout: a large store takes minutes, and the node finishes a backup it started anyway.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/admin/backup"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|source| BackupCmdError::NodeSilent { addr, source })?;
    let status = resp.status();
    let text = resp.text().await.map_err(BackupCmdError::NodeBody)?;
    if !status.is_success() {
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| Some(format!("{} ({})", v["detail"].as_str()?, v["code"].as_str()?)))
            .unwrap_or(text);
        return Err(BackupCmdError::NodeRefused { status, detail });
    }
    let r: BackupResponse = serde_json::from_str(&text).map_err(BackupCmdError::NodeAnswer)?;
    let records: u64 = r.keyspaces.iter().map(|k| k.count).sum();
    let mb = r.bytes as f64 / 1e6;
    let s = r.duration_ms as f64 / 1000.0;
    Ok(format!(
        "backed up into {} ({} keyspaces, {records} records, {} secret files, {mb:.1} MB) in {s:.2} s ({:.1} MB/s), verified\n",
        r.dir,
        r.keyspaces.len(),
        r.secret_files,
        if s > 0.0 { mb / s } else { 0.0 },
    ))
}

/// Checks `backup`, builds `data_dir` from it, and checks that; returns what to print.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<String, BackupError> {
    let report = store_backup::restore(backup, data_dir)?;
    Ok(format!(
        "{}\nstart a node with node.data_dir = {:?} (the secrets come from the backup; any given in the \
         configuration file must be the same as when the backup was taken)\n",
        report.summary("restored into"),
        data_dir.display().to_string()
    ))
}
