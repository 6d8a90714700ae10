//! `otpd keys rotate`: asks the node on this host (its ops listener, `admin.listen`, with the
//! admin token it reads the way `otpd audit` does) to rotate a key. The node stores the new
//! generation where every node of the cluster reads it (`crate::keyring`).

use crate::config::Config;
use crate::secrets;

#[derive(Debug, thiserror::Error)]
pub enum KeysCmdError {
    #[error("the admin token cannot be read (secrets.admin_token, or <data_dir>/secrets/admin.token)")]
    NoAdminToken,
    #[error("{0}")]
    Tls(String),
    #[error("the node at {addr} did not answer: {source}")]
    NodeSilent { addr: std::net::SocketAddr, source: reqwest::Error },
    #[error("{0}")]
    NodeBody(reqwest::Error),
    #[error("the node answered {status}: {body}")]
    NodeRefused { status: reqwest::StatusCode, body: String },
}

/// Rotates the signing key, or the admin token with `admin`; returns what to print.
pub async fn rotate(config: &Config, admin: bool) -> Result<String, KeysCmdError> {
    let token = secrets::admin_token(&config.secrets, &config.node.secrets_dir()).ok_or(KeysCmdError::NoAdminToken)?;
    let (client, base, addr) = ops_client(config)?;
    let body = serde_json::json!({ "key": if admin { "admin" } else { "signing" } });
    let resp = client
        .post(format!("{base}/v1/admin/keys/rotate"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .map_err(|source| KeysCmdError::NodeSilent { addr, source })?;
    let status = resp.status();
    let text = resp.text().await.map_err(KeysCmdError::NodeBody)?;
    if !status.is_success() {
        return Err(KeysCmdError::NodeRefused { status, body: text });
    }
    let r: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Ok(match admin {
        false => format!(
            "signing key generation {} (kid {}) is in the JWKS now and signs from {}\n",
            r["generation"],
            r["kid"].as_str().unwrap_or("?"),
            r["activates_at"].as_str().unwrap_or("?")
        ),
        true => format!(
            "admin token generation {}: {}\nthe previous token is accepted until {}\n",
            r["generation"],
            r["admin_token"].as_str().unwrap_or("?"),
            r["previous_admin_token_until"].as_str().unwrap_or("?")
        ),
    })
}

/// A client of this host's ops listener (`admin.listen`, loopback when it listens on every
/// address), its base URL and address. Over HTTPS when the listener has a certificate: the
/// listener's own chain is trusted besides the system's roots, so a private CA that ships in
/// the chain file, or a self-signed certificate, is enough.
pub fn ops_client(config: &Config) -> Result<(reqwest::Client, String, std::net::SocketAddr), KeysCmdError> {
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut client = reqwest::Client::builder();
    let scheme = match &config.admin.tls_cert_file {
        Some(chain) => {
            let pem = std::fs::read(chain).map_err(|e| KeysCmdError::Tls(format!("{}: {e}", chain.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| KeysCmdError::Tls(e.to_string()))? {
                client = client.add_root_certificate(cert);
            }
            "https"
        }
        None => "http",
    };
    let client = client.build().map_err(|e| KeysCmdError::Tls(e.to_string()))?;
    Ok((client, format!("{scheme}://{addr}"), addr))
}
