//! The `otpd` command: parse the command line, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use otpd::audit_cmd::{self, AuditQuery};
use otpd::config::Config;

#[derive(Parser)]
#[command(name = "otpd", version, about = "One-time-code authentication engine")]
struct Cli {
    /// TOML configuration file (every key is optional; see docs/configuration.md).
    #[arg(long, short, env = "OTPD_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (the default).
    Run,
    /// List audit events of one identifier or one trace id, newest first.
    Audit {
        /// A phone number or e-mail address.
        #[arg(long, conflicts_with = "trace_id", required_unless_present = "trace_id")]
        identifier: Option<String>,
        /// A trace id (the X-Request-Id of a response).
        #[arg(long)]
        trace_id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the configuration and print the effective values (secrets redacted).
    CheckConfig,
    /// Print the OpenAPI 3.1 document of the API (what `GET /openapi.json` serves).
    Openapi {
        /// The API reference in Markdown (docs/api-reference.md) instead.
        #[arg(long)]
        markdown: bool,
    },
    /// Rotate a key: asks this host's node (ops listener) to make a new generation, which
    /// every node of the cluster picks up.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Create or upgrade the ScyllaDB schema (`store.kind = "scylla"`), then exit.
    Migrate,
    /// Back up the running node's embedded store into a new directory, verified (the node
    /// writes it; see docs/OPERATIONS.md). ScyllaDB is backed up with `nodetool snapshot`.
    Backup {
        /// A directory that does not exist yet, on the node's host.
        dir: PathBuf,
    },
    /// Build a data directory from a backup, verified against its manifest (offline).
    Restore {
        /// A directory `otpd backup` wrote.
        backup: PathBuf,
        /// The new data directory (must not exist, or be empty); start a node on it after.
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// A new access-token signing key (or, with --admin-token, a new admin token).
    Rotate {
        /// Rotate the admin token instead; the new one is printed once.
        #[arg(long)]
        admin_token: bool,
    },
}

/// jemalloc, not glibc's malloc: on the request path glibc's slow path (`_int_malloc`,
/// `_int_free`, consolidation) was ~10 % of a send's CPU, because the answer's header map and
/// other per-request blocks are larger than its per-thread cache holds (1 KiB). 1 M live
/// challenges take about as much memory as with glibc (384–399 MiB against 385–392 MiB).
/// Measurements: docs/PERFORMANCE.md, "jemalloc".
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its first allocation (`_RJEM_MALLOC_CONF` in the environment
/// overrides them). By default jemalloc returns freed pages to the kernel only while the
/// process allocates, ten seconds after they were freed: a node that grew a hash table and
/// then went quiet kept the old table resident. A background thread returns them, a second
/// after they were freed. Measurements: docs/PERFORMANCE.md, "jemalloc".
#[cfg(unix)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000\0"[0];

fn main() -> ExitCode {
    otpd::private_fs::private_umask();
    let cli = Cli::parse();
    if let Some(Command::Openapi { markdown }) = cli.command {
        // Needs no configuration: the document is the same for every node.
        match markdown {
            true => print!("{}", otpd::http::openapi::markdown()),
            false => print!("{}", String::from_utf8_lossy(&otpd::http::openapi::json())),
        }
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Restore { backup, data_dir }) = &cli.command {
        // Offline, and needs no configuration: everything comes from the backup.
        return match otpd::backup_cmd::restore(backup, data_dir) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("otpd restore: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime can be built");
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            otpd::logging::init(&config.node);
            match runtime.block_on(otpd::server::run(config, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "could not start");
                    eprintln!("otpd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit { identifier, trace_id, limit, json } => {
            let query = AuditQuery { identifier, trace_id, limit, json };
            match runtime.block_on(audit_cmd::run(&config, &query)) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("otpd audit: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig => {
            println!("{config:#?}");
            ExitCode::SUCCESS
        }
        Command::Openapi { .. } | Command::Restore { .. } => {
            unreachable!("handled before the configuration is loaded")
        }
        Command::Backup { dir } => match runtime.block_on(otpd::backup_cmd::backup(&config, &dir)) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("otpd backup: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Keys { action: KeysAction::Rotate { admin_token } } => {
            match runtime.block_on(otpd::keys_cmd::rotate(&config, admin_token)) {
                Ok(out) => {
                    print!("{out}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("otpd keys rotate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Migrate => match runtime.block_on(otpd::store::scylla::migrate_command(&config.store, &config.scylla))
        {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("otpd migrate: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
