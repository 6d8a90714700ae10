//! The connection's two clocks (`src/http/keepalive.rs`): a kept-alive connection may wait for
//! its next request longer than a request's head may take to arrive.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

const ASK: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: otpd\r\n\r\n";

/// Sends one request and reads its answer; `None` when the node closed the connection.
async fn ask(s: &mut TcpStream) -> Option<u16> {
    s.write_all(ASK).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("an answer or a close");
        match n {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
                .expect("a content-length")
                .unwrap();
            if got.len() >= end + 4 + length {
                return Some(text[9..12].parse().unwrap());
            }
        }
    }
}

/// A node whose request heads are due within `head` and whose idle connections end after `idle`.
async fn node_timing_out(head: Duration, idle: Duration) -> TestNode {
    start_node_with(|c| {
        c.http.header_read_timeout.0 = head;
        c.http.idle_timeout.0 = idle;
    })
    .await
}

/// Waits up to `limit` for the node to end the connection: `Some(true)` for a clean end of
/// stream, `Some(false)` for a reset, `None` when it stayed open.
async fn closed_within(s: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<bool> {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0)) => Some(true),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Ok(Err(_)) => Some(false),
    }
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout() {
    let t = node_timing_out(Duration::from_millis(200), Duration::from_secs(60)).await;
    let mut s = TcpStream::connect(t.node.addr).await.unwrap();
    assert_eq!(ask(&mut s).await, Some(200));
    // Five header timeouts of silence: a pooled connection, not a slow client.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ask(&mut s).await, Some(200), "the idle connection was closed");
    assert_eq!(ask(&mut s).await, Some(200));
}

#[tokio::test]
async fn an_idle_connection_ends_cleanly_after_the_idle_timeout() {
    let t = node_timing_out(Duration::from_secs(5), Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(t.node.addr).await.unwrap();
    assert_eq!(ask(&mut s).await, Some(200));
    assert_eq!(closed_within(&mut s, Duration::from_secs(20)).await, Some(true), "an end of stream, not a reset");
}

#[tokio::test]
async fn a_head_that_does_not_arrive_in_time_ends_the_connection() {
    let t = node_timing_out(Duration::from_millis(300), Duration::from_secs(60)).await;
    // A connection that says nothing: the first head is due from the accept.
    let mut silent = TcpStream::connect(t.node.addr).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await.is_some(), "a silent connection was kept");

    // A kept-alive connection whose next head trickles in a byte every 50 ms: each byte is
    // progress, yet the head as a whole is late.
    let mut s = TcpStream::connect(t.node.addr).await.unwrap();
    assert_eq!(ask(&mut s).await, Some(200));
    let (mut read, mut write) = s.into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET /health/live HTTP/1.1\r\nX-Slow: ").await.unwrap();
        for _ in 0..400 {
            if write.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(closed_within(&mut read, Duration::from_secs(20)).await.is_some(), "a trickled head was waited for");
    trickle.abort();
    // The node serves others meanwhile and after.
    let mut other = TcpStream::connect(t.node.addr).await.unwrap();
    assert_eq!(ask(&mut other).await, Some(200));
}

/// An HTTP/2 frame's header: payload length, type, flags, stream.
fn frame_header(bytes: &[u8]) -> (usize, u8, u8, u32) {
    let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
    let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
    (len, bytes[3], bytes[4], stream)
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    if !has_tools("an_idle_http2_connection_is_closed_after_the_idle_timeout", &["openssl"]) {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = test_ca(certs.path(), "ca");
    let (cert, key) = test_cert_days(certs.path(), "ca", "server", 2);
    let idle = Duration::from_secs(1);
    let t = start_node_with(move |c| {
        c.http.tls_cert_file = Some(cert.clone());
        c.http.tls_key_file = Some(key.clone());
        c.http.idle_timeout.0 = idle;
    })
    .await;

    let mut roots = rustls::RootCertStore::empty();
    for c in otpd::tls_files::certificates(&ca).unwrap() {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(t.node.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(t.node.addr.ip().into());
    let mut s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // The preface, empty settings, and GET /health/live on stream 1 (HPACK: :method GET,
    // :scheme https, :path and :authority as literals with indexed names).
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let mut block = vec![0x82, 0x87, 0x44, 12];
    block.extend_from_slice(b"/health/live");
    block.extend_from_slice(&[0x41, 9]);
    block.extend_from_slice(b"127.0.0.1");
    out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[1, 0x5, 0, 0, 0, 1]);
    out.extend_from_slice(&block);
    s.write_all(&out).await.unwrap();

    // Read frames until the node closes the connection: the answer's end on stream 1 first.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = None;
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            while got.len() >= 9 && got.len() >= 9 + frame_header(&got).0 {
                let (len, kind, flags, stream) = frame_header(&got);
                if kind == 4 && flags & 1 == 0 {
                    // The node's settings: acknowledged, as a client must.
                    s.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap();
                }
                if stream == 1 && flags & 1 == 1 && (kind == 0 || kind == 1) {
                    answered = Some(std::time::Instant::now());
                }
                got.drain(..9 + len);
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");
    let answered = answered.expect("the request on stream 1 was answered before the close");
    assert!(
        answered.elapsed() >= idle / 2,
        "closed {:?} after the answer, before the idle timeout",
        answered.elapsed()
    );
}
