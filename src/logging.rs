//! Structured logs with `tracing`: JSON lines by default, plain text for humans.

use tracing_subscriber::EnvFilter;

use crate::config::NodeConfig;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `node.log_level`.
pub fn init(node: &NodeConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&node.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result =
        if node.log_format == "text" { builder.try_init() } else { builder.json().flatten_event(true).try_init() };
    if result.is_err() {
        eprintln!("a log subscriber was already installed; keeping it");
    }
}
