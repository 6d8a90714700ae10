//! Structured logs with `tracing`: JSON lines by default, plain text for humans.
//!
//! Every request is handled inside [`with_trace_id`], which keeps its trace id (the
//! `X-Request-Id` it is answered with) in a task-local; the event formatter adds it to every
//! line written while the request is handled: `"trace_id":"…"` first in a JSON line,
//! `trace_id=… ` in front of a text line. Delivery runs after the request and logs the trace
//! id as a field of its own, so a request and its delivery share one `trace_id` key. Lines
//! never hold an identifier, a code, a token or a secret (see ARCHITECTURE.md).
//!
//! Why a task-local and not a span per request: a `tracing` span costs its creation, an enter
//! and an exit per poll and its close, whether or not a line is ever logged; measured with
//! callgrind on the send path that was ~10 000 instructions per request (+8.6 % on a send), where
//! the task-local costs a copy of the id and a thread-local swap per poll, and the formatter
//! pays only when a line is actually written.

use std::fmt;
use std::future::Future;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::NodeConfig;
use otpd_actors::rules::ids::TraceId;

tokio::task_local! {
    static TRACE_ID: TraceId;
}

/// Runs `fut` (a request's handling) with `trace_id` on every log line it writes.
pub async fn with_trace_id<F: Future>(trace_id: TraceId, fut: F) -> F::Output {
    TRACE_ID.scope(trace_id, fut).await
}

/// The trace id of the request being handled on this task, if any.
pub fn current_trace_id() -> Option<TraceId> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `node.log_level`.
pub fn init(node: &NodeConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&node.log_level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if node.log_format == "text" {
        builder.map_event_format(|f| WithTraceId { inner: f, json: false }).try_init()
    } else {
        builder.json().flatten_event(true).map_event_format(|f| WithTraceId { inner: f, json: true }).try_init()
    };
    if result.is_err() {
        eprintln!("a log subscriber was already installed; keeping it");
    }
}

/// An event format that adds the current request's trace id to the line `inner` writes.
pub struct WithTraceId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        // An event that names its trace id itself (delivery, a few errors) keeps its own.
        let own = event.metadata().fields().field("trace_id").is_some();
        let Some(trace_id) = current_trace_id().filter(|_| !own) else {
            return self.inner.format_event(ctx, writer, event);
        };
        // Trace ids are `[A-Za-z0-9._:-]{1,128}` (checked when the request arrives), so they
        // need no quoting or escaping.
        if !self.json {
            // In front, so the inner format keeps writing (and colouring) the line directly.
            write!(writer, "trace_id={trace_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"trace_id\":\"{trace_id}\",{rest}"),
            None => writer.write_str(&line),
        }
    }
}
