//! The development outbox: instead of sending an SMS or an e-mail, append the message as one
//! JSON line to a file that a developer (or a test, or the load-test harness) reads.
//!
//! This is the only place in otpd where a code is written in clear outside a message to its
//! recipient, which is why it is a development provider only.
//!
//! It is a [`Provider`] like the others, so the dispatcher's batching applies: each batch is
//! appended and flushed by a dedicated thread (file I/O stays off the async workers) before
//! the call returns, so a line is in the file once the message counts as delivered.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use async_trait::async_trait;
use otpd_actors::actors::dispatch::{Delivery, Provider, SendError, SendResult};
use otpd_actors::rules::clock::Clock;
use serde::Serialize;
use tokio::sync::oneshot;

type Job = (Vec<Delivery>, oneshot::Sender<std::io::Result<()>>);

pub struct Outbox {
    jobs: mpsc::Sender<Job>,
}

/// One line of the outbox file.
#[derive(Serialize)]
struct Line<'a> {
    at: u64,
    channel: &'a str,
    to: &'a str,
    purpose: &'a str,
    resend: bool,
    code: &'a str,
    expires_at: u64,
    trace_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    subject: &'a str,
    body: &'a str,
}

impl Outbox {
    /// Opens (creating) the file for appending and starts the writer thread.
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> std::io::Result<Arc<Self>> {
        // Codes in clear: created 0600 in a 0700 directory whatever the umask.
        let file = crate::private_fs::append(path)?;
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new().name("otpd-outbox".into()).spawn(move || {
            let mut out = BufWriter::new(file);
            let mut written_back = 0;
            // Ends when the provider (and with it the sender) is dropped.
            while let Ok((batch, done)) = rx.recv() {
                let _ = done.send(write_batch(&mut out, &batch, clock.as_ref()));
                // A step at a time, rather than the kernel's tens of megabytes at once under
                // load (crate::writeback).
                let end = out.get_mut().stream_position().unwrap_or(written_back);
                if end.saturating_sub(written_back) >= crate::writeback::STEP as u64 {
                    crate::writeback::start(out.get_ref());
                    written_back = end;
                }
            }
        })?;
        Ok(Arc::new(Outbox { jobs }))
    }
}

fn write_batch(out: &mut BufWriter<File>, batch: &[Delivery], clock: &dyn Clock) -> std::io::Result<()> {
    for d in batch {
        let m = &d.message;
        let line = Line {
            at: clock.now().as_millis(),
            channel: m.to.channel().as_str(),
            to: m.to.as_str(),
            purpose: m.purpose.as_str(),
            resend: m.resend,
            code: m.code.expose(),
            expires_at: m.expires_at.as_millis(),
            trace_id: &m.trace_id,
            subject: &d.subject,
            body: &d.body,
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[async_trait]
impl Provider for Outbox {
    fn name(&self) -> &str {
        "outbox"
    }

    fn max_batch(&self) -> usize {
        1024
    }

    async fn send(&self, batch: &[Delivery]) -> Vec<SendResult> {
        let (done, written) = oneshot::channel();
        let outcome = match self.jobs.send((batch.to_vec(), done)) {
            Ok(()) => written.await.unwrap_or_else(|_| Err(std::io::Error::other("writer thread gone"))),
            Err(_) => Err(std::io::Error::other("writer thread gone")),
        };
        match outcome {
            Ok(()) => vec![Ok(()); batch.len()],
            Err(e) => {
                tracing::error!(error = %e, "outbox write failed");
                vec![Err(SendError::retryable("outbox: write failed")); batch.len()]
            }
        }
    }
}
