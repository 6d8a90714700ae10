//! `otpd audit`: list audit events by identifier or by trace id.
//!
//! With `store.kind = "scylla"` the command reads the cluster directly (every node writes
//! there). With the embedded store, when no node holds it, the command opens it read-only
//! itself; while a node runs, the store's lock file keeps other processes out, so the command
//! asks the node instead, over `GET /v1/admin/audit` on its ops listener (`admin.listen`) with the admin
//! token from the data directory. Either way the output is the same.

use otpd_actors::ports::StoreError;
use otpd_actors::rules::identifier::{Identifier, IdentifierError, Normalizer, UnknownRegion};
use otpd_actors::rules::keys::Keys;

use crate::config::Config;
use crate::http::wire::{AuditListResponse, AuditView};
use crate::secrets::{self, SecretsError};
use crate::store::embedded::{AuditReader, OpenReadOnlyError};
use crate::store::scylla::{ConnectError, ScyllaOptions, ScyllaStore};

/// Why `otpd audit` printed no events.
#[derive(Debug, thiserror::Error)]
pub enum AuditCmdError {
    #[error("give exactly one of --identifier and --trace-id")]
    Query,
    #[error("{0}")]
    Region(#[from] UnknownRegion),
    #[error("{0}")]
    Identifier(#[from] IdentifierError),
    #[error("{0}")]
    Secrets(#[from] SecretsError),
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Scylla(#[from] ConnectError),
    #[error("a node holds the store, but its admin token cannot be read")]
    NoAdminToken,
    #[error("the store is in use by a node, and the node at {addr} did not answer: {source}")]
    NodeSilent { addr: std::net::SocketAddr, source: reqwest::Error },
    #[error("{0}")]
    NodeBody(reqwest::Error),
    #[error("the node answered {status}: {body}")]
    NodeRefused { status: reqwest::StatusCode, body: String },
    #[error("unexpected answer from the node: {0}")]
    NodeAnswer(serde_json::Error),
}

pub struct AuditQuery {
    pub identifier: Option<String>,
    pub trace_id: Option<String>,
    pub limit: usize,
    pub json: bool,
}

/// Runs the query and returns what to print.
pub async fn run(config: &Config, query: &AuditQuery) -> Result<String, AuditCmdError> {
    let events = if config.store.kind == "scylla" {
        scylla(config, query).await?
    } else {
        match AuditReader::open(&config.node.store_path()) {
            Ok(reader) => local(config, &reader, query)?,
            Err(OpenReadOnlyError::InUse) => remote(config, query).await?,
            Err(OpenReadOnlyError::Other(e)) => return Err(AuditCmdError::Open(e)),
        }
    };
    let mut out = render(&events, query.json);
    if !query.json {
        // What the trail no longer holds, said where a reader looks for it.
        let retention = crate::http::wire::RetentionView::from(&config.retention);
        out.push_str(&format!("# retention: {}\n", retention.note));
    }
    Ok(out)
}

/// The identifier's hash, with the node's key.
fn identifier_hash(config: &Config, raw: &str) -> Result<otpd_actors::rules::keys::IdentHash, AuditCmdError> {
    let n = Normalizer::new(config.identifiers.default_region(), 16)?;
    let id: Identifier = if raw.contains('@') { n.email(raw) } else { n.phone(raw) }?;
    let keys = Keys::from_master(&secrets::master_key(&config.secrets, &config.node.secrets_dir())?);
    Ok(keys.identifier_hash(id.as_str()))
}

fn local(config: &Config, reader: &AuditReader, q: &AuditQuery) -> Result<Vec<AuditView>, AuditCmdError> {
    let events = match (&q.identifier, &q.trace_id) {
        (Some(raw), None) => reader.by_identifier(&identifier_hash(config, raw)?, q.limit),
        (None, Some(trace)) => reader.by_trace(trace, q.limit),
        _ => return Err(AuditCmdError::Query),
    }?;
    Ok(events.iter().map(AuditView::from).collect())
}

/// With ScyllaDB every node and this command read the same cluster: no node is asked.
async fn scylla(config: &Config, q: &AuditQuery) -> Result<Vec<AuditView>, AuditCmdError> {
    use otpd_actors::ports::AuditLog as _;
    let mut c = config.scylla.clone();
    // A reader changes nothing: no keyspace creation, no migration.
    c.create_keyspace = false;
    c.migrate_on_start = false;
    let options = ScyllaOptions {
        config: c,
        session_ttl: config.tokens.session_ttl.0,
        audit_retention: config.retention.audit.0,
    };
    let store = ScyllaStore::connect(&options).await?;
    let events = match (&q.identifier, &q.trace_id) {
        (Some(raw), None) => store.by_identifier(&identifier_hash(config, raw)?, q.limit).await,
        (None, Some(trace)) => store.by_trace(trace, q.limit).await,
        _ => return Err(AuditCmdError::Query),
    }?;
    store.close();
    Ok(events.iter().map(AuditView::from).collect())
}

async fn remote(config: &Config, q: &AuditQuery) -> Result<Vec<AuditView>, AuditCmdError> {
    let token = secrets::admin_token(&config.secrets, &config.node.secrets_dir()).ok_or(AuditCmdError::NoAdminToken)?;
    let (client, base, addr) = crate::keys_cmd::ops_client(config).map_err(|e| AuditCmdError::Open(e.to_string()))?;
    let mut params = form_urlencoded::Serializer::new(String::new());
    if let Some(i) = &q.identifier {
        params.append_pair("identifier", i);
    }
    if let Some(t) = &q.trace_id {
        params.append_pair("trace_id", t);
    }
    params.append_pair("limit", &q.limit.to_string());
    let url = format!("{base}/v1/admin/audit?{}", params.finish());
    let resp = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|source| AuditCmdError::NodeSilent { addr, source })?;
    let status = resp.status();
    let body = resp.text().await.map_err(AuditCmdError::NodeBody)?;
    if !status.is_success() {
        return Err(AuditCmdError::NodeRefused { status, body });
    }
    let list: AuditListResponse = serde_json::from_str(&body).map_err(AuditCmdError::NodeAnswer)?;
    Ok(list.events)
}

fn render(events: &[AuditView], json: bool) -> String {
    let mut out = String::new();
    for e in events {
        if json {
            out.push_str(&serde_json::to_string(e).expect("audit views serialise"));
        } else {
            out.push_str(&format!(
                "{}  {:<32}  {:<16} {:<10} {:<8} {:<15} {}",
                e.at,
                e.trace_id,
                e.api,
                e.step,
                e.outcome,
                e.client_ip.as_deref().unwrap_or("-"),
                e.message
            ));
        }
        out.push('\n');
    }
    if events.is_empty() && !json {
        out.push_str("no events\n");
    }
    out
}
