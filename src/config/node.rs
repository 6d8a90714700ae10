//! `[node]`: where the node keeps its data, and how it logs.

use std::path::PathBuf;

use super::value::{check, section};

section! {
    /// Where the node keeps its data, and how it logs.
    pub struct NodeConfig {
        /// Directory of the embedded store, the outbox and generated secrets.
        data_dir: PathBuf = PathBuf::from("data"),
        /// `tracing` filter (`RUST_LOG` syntax; `RUST_LOG` itself wins when set). The default
        /// logs otpd's own events at info and its dependencies' at warn; name a target to
        /// raise it: `"warn,otpd=debug"`, `"warn,otpd=info,otpd_actors=info,fjall=debug"`, or
        /// `"info"` for everything at info.
        log_level: String = "warn,otpd=info,otpd_actors=info".into(),
        /// `json` (one object per line) or `text`.
        log_format: String = "json".into(),
    }
}

impl NodeConfig {
    pub(super) fn validate(&self, errors: &mut Vec<String>) {
        check(errors, matches!(self.log_format.as_str(), "json" | "text"), || {
            format!("node.log_format: must be \"json\" or \"text\", got {:?}", self.log_format)
        });
        check(errors, tracing_subscriber::EnvFilter::try_new(&self.log_level).is_ok(), || {
            format!("node.log_level: not a valid filter: {:?}", self.log_level)
        });
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("store")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.data_dir.join("secrets")
    }
}
