//! E-mail codes through a real SMTP server: Python's `aiosmtpd` (from PyPI; `scripts/test.sh`
//! installs it) started as a child process on a free loopback port, storing what it receives
//! in a Maildir. Without python3 and aiosmtpd the test says it skipped and why.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use otpd::config::Dur;
use serde_json::json;
use tempfile::TempDir;

use crate::delivery::{code_in, delivery_events, wait_stats};
use crate::support::*;

struct SmtpServer {
    child: Child,
    port: u16,
    maildir: PathBuf,
    _dir: TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // Only the child this test started, by its handle (its PID).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl SmtpServer {
    async fn start() -> Result<SmtpServer, String> {
        let probe = Command::new("python3").args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status();
        if !probe.is_ok_and(|s| s.success()) {
            return Err("python3 with aiosmtpd is not installed (scripts/test.sh runs `pip install aiosmtpd`)".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let maildir = dir.path().join("maildir");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start aiosmtpd: {e}"))?;
        let mut server = SmtpServer { child, port, maildir, _dir: dir };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("aiosmtpd exited at start ({status})"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("aiosmtpd did not listen within 10 s".into())
    }

    /// Every message received so far (raw RFC 5322 text).
    fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else { return Vec::new() };
        entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
    }

    async fn wait_messages(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the SMTP server never received {n} message(s)");
    }
}

/// A header's value and the body of a message, with quoted-printable soft breaks undone.
fn parse(mail: &str) -> (impl Fn(&str) -> Option<String> + '_, String) {
    let (head, body) = mail.split_once("\n\n").or_else(|| mail.split_once("\r\n\r\n")).expect("headers and a body");
    let header = move |name: &str| {
        head.lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
            .map(|l| l[name.len() + 1..].trim().to_owned())
    };
    let body = body.replace("=\r\n", "").replace("=\n", "").replace("=3D", "=");
    (header, body)
}

#[tokio::test]
async fn e_mail_codes_go_through_a_real_smtp_server_and_verify() {
    let server = match SmtpServer::start().await {
        Ok(s) => s,
        Err(why) => {
            eprintln!("SKIPPED e_mail_codes_go_through_a_real_smtp_server_and_verify: {why}");
            return;
        }
    };
    let t = start_node_with(|c| {
        c.delivery.email_provider = "smtp".into();
        c.delivery.app_name = "Acme".into();
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = server.port;
        c.smtp.tls = "none".into();
        c.smtp.from = "Acme Codes <codes@acme.test>".into();
    })
    .await;
    let email = "ada@example.org";
    let r = t.post("/v1/register", json!({ "email": email, "first_name": "Ada", "last_name": "L" })).await;
    assert_eq!((r.status, r.body["channel"].as_str()), (202, Some("email")), "{}", r.raw);

    let mails = server.wait_messages(1).await;
    let (header, body) = parse(&mails[0]);
    assert_eq!(header("From").as_deref(), Some("\"Acme Codes\" <codes@acme.test>"));
    assert_eq!(header("To").as_deref(), Some(email));
    let subject = header("Subject").expect("a subject");
    let code = code_in(&subject);
    assert_eq!(subject, format!("Your Acme code: {code}"));
    assert!(body.contains(&format!("Your Acme verification code is {code}.")), "{body}");
    assert!(!body.contains("@login"), "no WebOTP line in e-mail");
    let r = t.post("/v1/register/verify", json!({ "email": email, "code": code })).await;
    assert_eq!(r.status, 200, "the e-mailed code verifies: {}", r.raw);

    // A phone number takes the SMS route (the outbox here), not the e-mail one.
    let p = phone(4601);
    assert_eq!(t.post("/v1/register", json!({ "phone": p, "first_name": "B", "last_name": "C" })).await.status, 202);
    t.wait_for_messages(&p, 1).await;
    let s = wait_stats(&t, |s| s.delivered == 2).await;
    assert_eq!(server.messages().len(), 1);
    let by_name = |n: &str| s.providers.iter().find(|p| p.name == n).unwrap().delivered;
    assert_eq!((by_name("smtp"), by_name("outbox")), (1, 1));
}

#[tokio::test]
async fn an_unreachable_smtp_relay_is_retried_then_given_up() {
    let port = free_port(); // nothing listens there
    let t = start_node_with(|c| {
        c.delivery.email_provider = "smtp".into();
        c.delivery.max_attempts = 2;
        c.delivery.backoff_base = Dur(Duration::from_millis(5));
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.tls = "none".into();
    })
    .await;
    let body = json!({ "email": "nobody@example.org", "first_name": "N", "last_name": "B" });
    let r = into_reply(
        t.client.post(t.url("/v1/register")).header("x-request-id", "smtp-down").json(&body).send().await.unwrap(),
    )
    .await;
    assert_eq!(r.status, 202);
    let s = wait_stats(&t, |s| s.given_up == 1).await;
    assert_eq!(s.attempts, 2);
    let e = &delivery_events(&t, "smtp-down").await[0];
    assert_eq!(e.message, "given up after 2 attempt(s): every attempt failed; the last: smtp: the connection failed");
}
