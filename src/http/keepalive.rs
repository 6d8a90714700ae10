//! The two clocks of an HTTP/1.1 connection: how long a request's head may take to arrive, and
//! how long a kept-alive connection may sit idle between requests.
//!
//! hyper 1.x has one timer for both (`header_read_timeout`): it starts when the connection
//! waits for its next request, so a connection idle for longer than the header timeout is
//! closed. With the 5 s a header timeout should be, that closes pooled connections that a
//! client or load balancer still believes open: the next request it sends on one races the
//! close and fails ("connection reset"; a 502 behind AWS's ALB, which keeps idle backend
//! connections 60 s). With the 60+ s an idle timeout should be, a slow client could hold a
//! connection for a minute by trickling its head a byte at a time.
//!
//! [`Clocked`] wraps the connection's stream (under hyper, which gets no timer of its own) and
//! tells the phases apart by the bytes going past, as Go's `net/http` and Envoy do:
//! * **head**: from the accept, or from the first byte after an answer, until the blank line
//!   that ends the head. Bounded by `head`; past it, the read fails with `TimedOut`.
//! * **busy**: the body and the handler; `http.request_timeout` bounds them, not this.
//! * **idle**: from the first byte of an answer until the next request's first byte.
//!   Bounded by `idle`; past it, the read ends (EOF), and hyper closes the connection as if
//!   the client had.
//!
//! Bytes read while busy (a body, or a pipelined request hyper has not parsed yet) are not
//! scanned: the phase after them is decided by the answer that follows. A head's deadline is
//! read from the clock only when a read of it would wait, so a head that arrives in one read
//! costs nothing; an answer costs one clock read, and the timer moves about once per idle
//! timeout, not once per request.
//!
//! HTTP/2 (over TLS) carries many requests at once and frames of its own between them (pings,
//! settings, window updates), so its bytes do not tell the phases apart; its requests do.
//! [`Streams`] counts the requests in flight, and [`Streams::idle`] ends once none has been for
//! the idle timeout, counted from the connection's start or the last answer. The connection is
//! then dropped, closed as an idle HTTP/1.1 connection is, without a GOAWAY (hyper-util's
//! graceful shutdown owns the connection). A head trickled a byte at a time is not a request
//! yet, so it does not keep the connection open either.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The blank line that ends a request's head.
const HEAD_END: &[u8; 4] = b"\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
}

/// A stream whose reads end when a head or an idle wait takes too long (see the module doc).
pub struct Clocked<S> {
    inner: S,
    phase: Phase,
    /// How many bytes of [`HEAD_END`] the bytes read so far end with.
    matched: usize,
    /// When the current phase must end; set when a read of the phase first has to wait.
    deadline: Option<Instant>,
    /// Armed at `deadline` while a read waits; allocated once per connection, on first need.
    timer: Option<Pin<Box<Sleep>>>,
    head: Duration,
    idle: Duration,
}

impl<S> Clocked<S> {
    /// A freshly accepted connection: its first head is due within `head` from now.
    pub fn new(inner: S, head: Duration, idle: Duration) -> Clocked<S> {
        let deadline = Some(Instant::now() + head);
        Clocked { inner, phase: Phase::Head, matched: 0, deadline, timer: None, head, idle }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.deadline = None;
    }

    /// Follows the bytes just read: a new head starts, or the current one ends.
    fn saw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.enter(Phase::Head);
            self.matched = 0;
        }
        if self.phase == Phase::Head && scan(&mut self.matched, bytes) {
            self.enter(Phase::Busy);
        }
    }

    /// A read would wait: `Ready` with how it ends when the phase's deadline has passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = match self.phase {
            Phase::Busy => return Poll::Pending,
            Phase::Head => self.head,
            Phase::Idle => self.idle,
        };
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + limit);
        ready!(self.arm(deadline, cx));
        Poll::Ready(match self.phase {
            Phase::Head => Err(io::Error::new(io::ErrorKind::TimedOut, "request head not received in time")),
            // The end of the stream: hyper closes an idle connection as if the client had.
            _ => Ok(()),
        })
    }

    /// Makes sure this task wakes by `deadline`; `Ready` when it has passed. A timer armed
    /// earlier for an earlier deadline is left to fire: the wake-up finds the phase's real
    /// deadline ahead and arms again. That saves moving the timer on every request.
    fn arm(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline || (timer.deadline() < deadline && timer.is_elapsed()) {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// An answer is going out: the wait for the next request starts. hyper may not read again
    /// until bytes arrive, so the idle timer is armed here, not when a read waits.
    fn answered(&mut self, cx: &mut Context<'_>) {
        if self.phase != Phase::Idle {
            self.phase = Phase::Idle;
            let deadline = Instant::now() + self.idle;
            self.deadline = Some(deadline);
            let _ = self.arm(deadline, cx);
        }
    }
}

/// Advances `matched` over `bytes`; true when [`HEAD_END`] was completed.
fn scan(matched: &mut usize, bytes: &[u8]) -> bool {
    for &b in bytes {
        *matched = match b {
            _ if b == HEAD_END[*matched] => *matched + 1,
            b'\r' => 1,
            _ => 0,
        };
        if *matched == HEAD_END.len() {
            *matched = 0;
            return true;
        }
    }
    false
}

impl<S: AsyncRead + Unpin> AsyncRead for Clocked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.expired(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Clocked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, bytes));
        if matches!(written, Ok(n) if n > 0) {
            self.answered(cx);
        }
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            self.answered(cx);
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The requests in flight on an HTTP/2 connection, and when the last one ended (see the module
/// doc).
pub struct Streams {
    busy: AtomicUsize,
    born: Instant,
    /// When the last request ended, in milliseconds since `born`.
    ended_ms: AtomicU64,
}

/// One request in flight on a connection's [`Streams`]; its end when dropped.
pub struct Busy(Arc<Streams>);

impl Streams {
    pub fn new() -> Arc<Streams> {
        Arc::new(Streams { busy: AtomicUsize::new(0), born: Instant::now(), ended_ms: AtomicU64::new(0) })
    }

    /// A request starts; it ends when the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Ends once no request has been in flight for `idle`. The timer moves about once per
    /// `idle`, not once per request.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let now = Instant::now();
            let deadline = if self.busy.load(Ordering::Acquire) > 0 {
                now + idle
            } else {
                self.born + Duration::from_millis(self.ended_ms.load(Ordering::Acquire)) + idle
            };
            if deadline <= now {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let streams = &self.0;
        // Before the count: whoever sees the count at zero also sees this end.
        streams.ended_ms.store(streams.born.elapsed().as_millis() as u64, Ordering::Release);
        streams.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(chunks: &[&[u8]]) -> Vec<bool> {
        let mut matched = 0;
        chunks.iter().map(|c| scan(&mut matched, c)).collect()
    }

    #[test]
    fn a_head_ends_at_its_blank_line_however_the_reads_split_it() {
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]), [true]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n"]), [false, true]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"]), [false, false, true]);
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r", b"\r\n\r\n"]), [false, true]);
        assert_eq!(ends(&[b"\r\r\n\r\n"]), [true]);
    }

    #[test]
    fn a_line_break_alone_does_not_end_a_head() {
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"X: \r\n"]), [false, false, false]);
        assert_eq!(ends(&[b"\n\n", b"\r\n\n", b"\r\r\n"]), [false, false, false]);
    }
}
