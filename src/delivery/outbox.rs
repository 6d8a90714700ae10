//! The development outbox: instead of sending an SMS or an e-mail, append the message as one
//! JSON line to a file that a developer (or a test, or the load-test harness) reads.
//!
//! This is the only place in otpd where a code is written in clear outside a message to its
//! recipient, which is why it is a development provider only.
//!
//! `enqueue` hands the message to a dedicated thread through a bounded queue (full → the
//! engine answers 503, nothing is dropped silently); the thread appends and flushes as soon as
//! the queue is empty, so a line appears within a millisecond of the API's answer.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use otpd_actors::clock::Clock;
use otpd_actors::ports::{Notifier, NotifyError, OutboundMessage};
use serde::Serialize;
use tokio::sync::mpsc;

pub struct Outbox {
    queue: mpsc::Sender<OutboundMessage>,
    path: PathBuf,
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
    body: String,
}

impl Outbox {
    /// Opens (creating) the file for appending and starts the writer thread.
    pub fn open(path: &Path, capacity: usize, app_name: String, clock: Arc<dyn Clock>) -> std::io::Result<Arc<Self>> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, mut rx) = mpsc::channel::<OutboundMessage>(capacity.max(1));
        let shown = path.display().to_string();
        std::thread::Builder::new().name("otpd-outbox".into()).spawn(move || {
            let mut out = BufWriter::new(file);
            while let Some(first) = rx.blocking_recv() {
                let mut next = Some(first);
                while let Some(m) = next {
                    let line = Line {
                        at: clock.now().as_millis(),
                        channel: m.to.channel().as_str(),
                        to: m.to.as_str(),
                        purpose: m.purpose.as_str(),
                        resend: m.resend,
                        code: m.code.expose(),
                        expires_at: m.expires_at.as_millis(),
                        trace_id: &m.trace_id,
                        body: super::render(&m, &app_name, clock.now()),
                    };
                    let written = serde_json::to_writer(&mut out, &line)
                        .map_err(std::io::Error::other)
                        .and_then(|_| out.write_all(b"\n"));
                    if let Err(e) = written {
                        tracing::error!(path = %shown, error = %e, "outbox write failed");
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(e) = out.flush() {
                    tracing::error!(path = %shown, error = %e, "outbox flush failed");
                }
            }
        })?;
        Ok(Arc::new(Outbox { queue: tx, path: path.to_owned() }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Notifier for Outbox {
    fn enqueue(&self, message: OutboundMessage) -> Result<(), NotifyError> {
        self.queue.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotifyError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => NotifyError::Closed,
        })
    }
}
