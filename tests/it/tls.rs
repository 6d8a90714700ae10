//! HTTPS on the public and the ops listener: real clients (curl, Python's `ssl`, reqwest on
//! rustls) with TLS 1.3 and 1.2, HTTP/2 by ALPN, HSTS over TLS only, plain HTTP on the TLS
//! port refused with a close, and certificates replaced on disk served without a restart
//! (by the file poll, and by SIGHUP). Certificates come from openssl, as in the cluster's
//! mutual-TLS tests.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{has_tools, isolated, program, start_node_with, test_cert_days};

/// Python's `ssl` connecting with TLS `version` only ("1.3" or "1.2"), verifying against
/// `ca`: prints `version alpn cipher`, or `ERROR <reason>`.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
ca, port, version = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
v = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}[version]
ctx.minimum_version = v
ctx.maximum_version = v
ctx.set_alpn_protocols(["h2", "http/1.1"])
try:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") if t.selected_alpn_protocol() != "h2" else None
            print(t.version(), t.selected_alpn_protocol(), t.cipher()[0])
except Exception as e:
    print("ERROR", e)
"#;

async fn python_tls(ca: &Path, port: u16, version: &str) -> String {
    let out = tokio::process::Command::new("python3")
        .args(["-c", PY_CLIENT, &ca.display().to_string(), &port.to_string(), version])
        .output()
        .await
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The certificate `name` (signed by the test CA `ca` of `dir`) written over `cert`/`key`, each
/// by rename, cert first: for a moment the two files do not match, as in a real copy.
fn replace_pair(dir: &Path, ca: &str, name: &str, days: i32, cert: &Path, key: &Path) {
    let (new_cert, new_key) = test_cert_days(dir, ca, name, days);
    std::fs::rename(new_cert, cert).unwrap();
    std::fs::rename(new_key, key).unwrap();
}

fn tools(test: &str) -> bool {
    has_tools(test, &["openssl", "python3"])
}

fn rustls_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder().add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap()).build().unwrap()
}

#[tokio::test]
async fn https_with_tls13_h2_and_hsts_and_plain_http_refused() {
    if !tools("https_with_tls13_h2_and_hsts_and_plain_http_refused") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = crate::support::test_ca(certs.path(), "ca");
    let (cert, key) = test_cert_days(certs.path(), "ca", "server", 2);
    let (c2, k2) = (cert.clone(), key.clone());
    let node = start_node_with(move |c| {
        c.http.tls_cert_file = Some(cert.clone());
        c.http.tls_key_file = Some(key.clone());
        c.admin.tls_cert_file = Some(c2);
        c.admin.tls_key_file = Some(k2);
    })
    .await;
    assert!(node.base.starts_with("https://"), "{}", node.base);
    let port = node.node.addr.port();

    // Python's ssl, TLS 1.3 only: HTTP/2 chosen by ALPN, an AEAD suite.
    let v13 = python_tls(&ca, port, "1.3").await;
    assert!(v13.starts_with("TLSv1.3 h2 TLS_"), "{v13}");
    // TLS 1.2 still served, with an ECDHE AEAD suite only.
    let v12 = python_tls(&ca, port, "1.2").await;
    assert!(v12.starts_with("TLSv1.2 h2 ECDHE-"), "{v12}");
    assert!(v12.contains("GCM") || v12.contains("CHACHA20"), "{v12}");

    // reqwest on rustls (HTTP/1.1): the API answers, with HSTS.
    let client = rustls_client(&ca);
    let resp = client.get(node.url("/health/live")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    let resp = client.get(node.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=31536000");
    // The ops listener too, with its admin token.
    let ops = format!("https://{}/health/ready", node.node.admin_addr);
    let resp = client.get(&ops).bearer_auth(&node.node.admin_token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("strict-transport-security"));

    // curl, TLS 1.3, HTTP/2.
    if program("curl").is_some() {
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--tlsv1.3", "--http2", "--cacert"])
            .arg(&ca)
            .args(["-D", "-", "-o", "/dev/null", &node.url("/health/live")])
            .output()
            .await
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(head.starts_with("http/2 200"), "{head}{}", String::from_utf8_lossy(&out.stderr));
        assert!(head.contains("strict-transport-security: max-age=31536000"), "{head}");
    } else {
        println!("curl is not installed: the curl part of this test did not run");
    }

    // Plain HTTP on the TLS port: closed (after a TLS alert at most), never an HTTP answer,
    // never a hang; the listener serves on.
    for _ in 0..3 {
        let mut raw = tokio::net::TcpStream::connect(node.node.addr).await.unwrap();
        raw.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got)).await;
        assert!(read.is_ok(), "plain HTTP on the TLS port hung");
        assert!(!got.starts_with(b"HTTP/"), "answered in plain HTTP: {:?}", String::from_utf8_lossy(&got));
        // Whatever came back is a TLS record: an alert (content type 21).
        assert!(got.is_empty() || got[0] == 21, "{got:?}");
    }
    let resp = client.get(node.url("/health/live")).send().await.unwrap();
    assert_eq!(resp.status(), 200, "still serving");

    // The same node's answers over plain HTTP carry no HSTS: a node without TLS.
    let plain = start_node_with(|_| {}).await;
    let resp = plain.client.get(plain.url("/health/live")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("strict-transport-security"), "HSTS over plain HTTP");
    plain.node.shutdown().await;
    node.node.shutdown().await;
}

/// Polls until Python's ssl verifies the served certificate (or 15 s pass).
async fn until_verified(ca: &Path, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = python_tls(ca, port, "1.3").await;
        if seen.starts_with("TLSv1.3") || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn expired_node(dir: &Path, reload: Duration) -> (crate::support::TestNode, PathBuf, PathBuf, PathBuf) {
    let ca = crate::support::test_ca(dir, "ca");
    let (cert, key) = test_cert_days(dir, "ca", "served", -1);
    let (c, k) = (cert.clone(), key.clone());
    let node = start_node_with(move |config| {
        config.http.tls_cert_file = Some(c);
        config.http.tls_key_file = Some(k);
        config.http.tls_reload_interval = otpd::config::Dur(reload);
    })
    .await;
    (node, ca, cert, key)
}

#[tokio::test]
async fn an_expired_certificate_replaced_on_disk_is_served_without_restart() {
    if !tools("an_expired_certificate_replaced_on_disk_is_served_without_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, ca, cert, key) = expired_node(dir.path(), Duration::from_millis(100)).await;
    let port = node.node.addr.port();
    let before = python_tls(&ca, port, "1.3").await;
    assert!(before.starts_with("ERROR") && before.contains("expired"), "{before}");

    // A file that is not a certificate is refused; the old pair is still served.
    std::fs::write(&cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let still = python_tls(&ca, port, "1.3").await;
    assert!(still.contains("expired"), "{still}");

    replace_pair(dir.path(), "ca", "renewed", 2, &cert, &key);
    let after = until_verified(&ca, port).await;
    assert!(after.starts_with("TLSv1.3 h2"), "the renewed certificate was not served: {after}");
    node.node.shutdown().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate() {
    if !isolated("tls::sighup_reloads_the_certificate") || !tools("sighup_reloads_the_certificate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The poll is an hour away: only the signal can load the new pair in time.
    let (node, ca, cert, key) = expired_node(dir.path(), Duration::from_secs(3600)).await;
    let port = node.node.addr.port();
    replace_pair(dir.path(), "ca", "renewed", 2, &cert, &key);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let unsignalled = python_tls(&ca, port, "1.3").await;
    assert!(unsignalled.contains("expired"), "reloaded without a signal: {unsignalled}");
    // SAFETY: sends a signal to this (isolated) process, whose node handles SIGHUP.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let after = until_verified(&ca, port).await;
    assert!(after.starts_with("TLSv1.3 h2"), "SIGHUP did not load the renewed certificate: {after}");
    node.node.shutdown().await;
}

#[tokio::test]
async fn a_bad_or_exposed_key_stops_the_start() {
    if !tools("a_bad_or_exposed_key_stops_the_start") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = test_cert_days(dir.path(), "ca", "server", 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut config = crate::support::test_config(dir.path());
    config.http.tls_cert_file = Some(cert.clone());
    config.http.tls_key_file = Some(key.clone());
    let clock = std::sync::Arc::new(otpd_actors::rules::clock::ManualClock::new(
        otpd_actors::rules::clock::Timestamp::system_now(),
    ));
    let e = otpd::server::start(config, clock).await.err().expect("refused");
    assert!(e.to_string().starts_with("http TLS:") && e.to_string().contains("server.key"), "{e}");
}
