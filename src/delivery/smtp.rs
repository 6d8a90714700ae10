//! E-mail over SMTP with `lettre` (rustls; no OpenSSL), for e-mail identifiers.
//!
//! One call sends its batch one message after another over a pooled connection (the pool
//! holds up to `smtp.concurrency` connections, one per concurrent call). `smtp.tls`:
//! `starttls` (the default: the session must upgrade), `tls` (implicit TLS, port 465) or
//! `none` (plain text, for a relay on the same host; otpd warns when the host is not a
//! loopback name).
//!
//! How failures map: a transient SMTP reply (4xx), a timeout, a lost connection or a TLS
//! failure is retryable; an authentication refusal (530, 534, 535, 538) is retryable too (the
//! relay is misconfigured, not the message: it counts against the breaker); any other
//! permanent reply (5xx, e.g. 550 no such mailbox) refuses the message for good. Reasons carry
//! the reply code only, never the server's text (which can quote the address).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::Tls;
use lettre::transport::smtp::{AsyncSmtpTransport, PoolConfig};
use lettre::{AsyncTransport, Tokio1Executor};
use otpd_actors::actors::dispatch::{Delivery, Provider, SendError, SendResult};

use super::SetupError;
use crate::config::SmtpConfig;

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    max_batch: usize,
    relay: String,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp").field("relay", &self.relay).field("from", &self.from.email).finish_non_exhaustive()
    }
}

/// Replies that refuse the client's credentials.
const AUTH_REPLIES: &[&str] = &["530", "534", "535", "538"];

impl Smtp {
    pub fn new(config: &SmtpConfig, timeout: Duration) -> Result<Smtp, SetupError> {
        let from: Mailbox = config.from.parse().map_err(SetupError::SmtpFrom)?;
        let builder = match config.tls.as_str() {
            "none" => {
                if !matches!(config.host.as_str(), "localhost" | "127.0.0.1" | "::1") {
                    tracing::warn!(host = %config.host, "smtp.tls = \"none\": codes cross the network in clear text");
                }
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host).tls(Tls::None)
            }
            "tls" => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host).map_err(SetupError::SmtpRelay)?,
            _ => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host).map_err(SetupError::SmtpRelay)?,
        };
        let mut builder = builder
            .port(config.port)
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(config.concurrency.max(1) as u32));
        if let Some(password) = &config.password {
            builder = builder.credentials(Credentials::new(config.username.clone(), password.0.clone()));
        }
        Ok(Smtp {
            transport: builder.build(),
            from,
            max_batch: config.max_batch.max(1),
            relay: format!("{}:{}", config.host, config.port),
        })
    }

    async fn send_one(&self, d: &Delivery) -> SendResult {
        let to: Mailbox = d
            .message
            .to
            .as_str()
            .parse()
            .map_err(|_| SendError::permanent("smtp: the address cannot be written as a mailbox"))?;
        let email = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(d.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(d.body.clone())
            .map_err(|e| SendError::permanent(format!("smtp: message not built ({})", kind_of(&e))))?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| classify(&e))
    }
}

fn kind_of(e: &lettre::error::Error) -> &'static str {
    match e {
        lettre::error::Error::MissingFrom => "no sender",
        lettre::error::Error::MissingTo => "no recipient",
        _ => "invalid header",
    }
}

/// Maps a lettre error (see the module doc).
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let code = e.status().map(|c| c.to_string());
    match code {
        Some(code) if e.is_permanent() && AUTH_REPLIES.contains(&code.as_str()) => {
            SendError::retryable(format!("smtp: reply {code} (credentials refused)"))
        }
        Some(code) if e.is_permanent() => SendError::permanent(format!("smtp: reply {code}")),
        Some(code) => SendError::retryable(format!("smtp: reply {code}")),
        None if e.is_timeout() => SendError::retryable("smtp: timed out"),
        None if e.is_tls() => SendError::retryable("smtp: TLS failed"),
        None => SendError::retryable("smtp: the connection failed"),
    }
}

#[async_trait]
impl Provider for Smtp {
    fn name(&self) -> &str {
        "smtp"
    }

    fn max_batch(&self) -> usize {
        self.max_batch
    }

    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        let mut out = Vec::with_capacity(batch.len());
        for d in batch {
            out.push(self.send_one(d).await);
        }
        out
    }
}
