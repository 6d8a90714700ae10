//! Export and erasure of an account on a real node (embedded store): what the export holds is
//! what the store holds; after `DELETE /v1/me` nothing the store keeps — read through the node
//! or searched byte by byte in its files — yields the person's number, e-mail, names, address
//! or user agent; the admin's erasure does the same for a request that came another way.

use std::path::Path;
use std::time::Duration;

use otpd::server::Node;
use otpd_actors::rules::ids::UserId;
use serde_json::{Value, json};

use crate::support::*;

/// What the person sent that the store could keep: each must be findable before erasure and
/// nowhere after.
const PHONE: &str = "+12025550177";
const EMAIL: &str = "erasure.probe.7731@example.org";
const FIRST: &str = "Zebulon";
const LAST: &str = "Quillfeather";
const AGENT: &str = "ErasureProbe/7.7 (unique-ua-5521)";
/// An address as text and as the 16 bytes a record holds.
const ADDRESS: &str = "2001:db8:77:5521::77";

/// What to search for, and whether the store's files hold it before erasure (an address is
/// kept as its 16 bytes, not as text).
fn needles() -> Vec<(&'static str, Vec<u8>, bool)> {
    let ip: std::net::Ipv6Addr = ADDRESS.parse().unwrap();
    vec![
        ("phone", PHONE.as_bytes().to_vec(), true),
        ("phone digits", PHONE.as_bytes()[1..].to_vec(), true),
        ("e-mail", EMAIL.as_bytes().to_vec(), true),
        ("first name", FIRST.as_bytes().to_vec(), true),
        ("last name", LAST.as_bytes().to_vec(), true),
        ("user agent", AGENT.as_bytes().to_vec(), true),
        ("address as text", ADDRESS.as_bytes().to_vec(), false),
        ("address", ip.octets().to_vec(), true),
    ]
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

async fn send(t: &TestNode, method: reqwest::Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> Reply {
    let mut req = t.client.request(method, t.url(path)).header("user-agent", AGENT).header("x-forwarded-for", ADDRESS);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    into_reply(req.send().await.unwrap()).await
}

async fn admin(t: &TestNode, method: reqwest::Method, path: &str) -> Reply {
    let req = t.client.request(method, t.ops_url(path)).bearer_auth(&t.node.admin_token);
    into_reply(req.send().await.unwrap()).await
}

/// Signs the person up (with an e-mail and names), and logs in once more: two sessions.
async fn sign_up(t: &TestNode, phone: &str) -> (String, String) {
    use reqwest::Method;
    let body = json!({ "phone": phone, "email": EMAIL, "first_name": FIRST, "last_name": LAST });
    assert_eq!(send(t, Method::POST, "/v1/register", None, Some(body)).await.status, 202);
    let code = t.code_for(phone).await;
    let r = send(t, Method::POST, "/v1/register/verify", None, Some(json!({ "phone": phone, "code": code }))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let user_id = r.body["user"]["id"].as_str().unwrap().to_owned();
    t.advance(Duration::from_secs(61));
    assert_eq!(send(t, Method::POST, "/v1/login", None, Some(json!({ "phone": phone }))).await.status, 202);
    t.wait_for_messages(phone, 2).await;
    let code = t.code_for(phone).await;
    let r = send(t, Method::POST, "/v1/login/verify", None, Some(json!({ "phone": phone, "code": code }))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    (user_id, r.body["access_token"].as_str().unwrap().to_owned())
}

/// How many erasure rewrites of the store's files have finished.
async fn purges(t: &TestNode) -> f64 {
    scrape(&t.client, &t.ops_url("/metrics")).await.sum("otpd_store_erasure_purges_total", &[("outcome", "ok")])
}

async fn wait_for_purges(t: &TestNode, n: f64) {
    for _ in 0..600 {
        if purges(t).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the store's files were not rewritten after the erasure (30 s)");
}

fn store_dir(t: &TestNode) -> std::path::PathBuf {
    t.dir.path().join("store")
}

/// The export is exactly what the store's ports return for the account.
async fn export_matches_store(node: &Node, export: &Value, id: UserId) {
    let ports = node.store().ports();
    let user = ports.users.user_by_id(id).await.unwrap().expect("the account");
    assert_eq!(export["user"]["id"], json!(id.to_string()));
    assert_eq!(export["user"]["phone"], json!(PHONE));
    assert_eq!(export["user"]["email"], json!(EMAIL));
    assert_eq!(
        (export["user"]["first_name"].as_str(), export["user"]["last_name"].as_str()),
        (Some(FIRST), Some(LAST))
    );
    let sessions = ports.sessions.sessions_of_user(id).await.unwrap();
    let ids =
        |v: &Value| v.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&export["sessions"]), sessions.iter().map(|s| s.id.to_string()).collect::<Vec<_>>());
    for s in export["sessions"].as_array().unwrap() {
        assert_eq!((s["client_ip"].as_str(), s["user_agent"].as_str()), (Some(ADDRESS), Some(AGENT)), "{s}");
    }
    let devices = ports.devices.devices_of_user(id).await.unwrap();
    assert_eq!(export["devices"].as_array().unwrap().len(), devices.len());
    let events = ports.audit.by_identifier(&user.ident_hash, 10_000).await.unwrap();
    let traces = |v: &Value| {
        v.as_array().unwrap().iter().map(|e| e["trace_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    // The export's own call is audited after it was built: the store has that one event more.
    let (own, before) = events.split_first().expect("events");
    assert!(own.api.as_str().ends_with("account_export"), "{own:?}");
    assert_eq!(traces(&export["audit_events"]), before.iter().map(|e| e.trace_id.to_string()).collect::<Vec<_>>());
    assert!(events.len() >= 4, "register, its verify, login, its verify: {}", events.len());
    let requests = before.iter().filter(|e| e.api.as_str() != "delivery");
    for e in requests {
        assert_eq!(e.client_ip.map(|ip| ip.to_string()).as_deref(), Some(ADDRESS), "{e:?}");
        assert_eq!(e.user_agent.as_deref(), Some(AGENT), "{e:?}");
    }
    assert_eq!(export["audit_events_complete"], json!(true));
    assert_eq!(export["retention"]["audit_days"], json!(365));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_account_leaves_nothing_personal_in_the_store_or_its_files() {
    use reqwest::Method;
    let t = start_node_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let (user_id, token) = sign_up(&t, PHONE).await;
    let id = UserId(user_id.parse().unwrap());
    let someone_else = t.signed_up("+12025550178").await;

    let r = send(&t, Method::GET, "/v1/me/export", Some(&token), None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    export_matches_store(&t.node, &r.body, id).await;
    assert!(r.body["sessions"].as_array().unwrap().len() == 2);

    // The search can see them: before erasure every value is somewhere in the files.
    for (what, needle, _) in needles().into_iter().filter(|n| n.2) {
        assert!(!files_holding(&store_dir(&t), &needle).is_empty(), "{what} is not in the store's files yet");
    }

    // Erasure needs a fresh login by code: a token older than 5 minutes is refused.
    t.advance(Duration::from_secs(6 * 60));
    let r = send(&t, Method::DELETE, "/v1/me", Some(&token), None).await;
    assert_eq!((r.status, r.code()), (403, "fresh_login_required"), "{}", r.raw);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = send(&t, Method::DELETE, "/v1/me", None, None).await;
    assert_eq!((r.status, r.code()), (401, "missing_token"), "{}", r.raw);

    // A fresh login, then the erasure.
    assert_eq!(send(&t, Method::POST, "/v1/login", None, Some(json!({ "phone": PHONE }))).await.status, 202);
    t.wait_for_messages(PHONE, 3).await;
    let code = t.code_for(PHONE).await;
    let r = send(&t, Method::POST, "/v1/login/verify", None, Some(json!({ "phone": PHONE, "code": code }))).await;
    let fresh = r.body["access_token"].as_str().unwrap().to_owned();
    let purged_before = purges(&t).await;
    let r = send(&t, Method::DELETE, "/v1/me", Some(&fresh), None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body, json!({ "erased": true, "sessions": 3, "devices": 0, "passkeys": 0 }));

    // Its tokens stop at once, and the number is free.
    for token in [&token, &fresh] {
        assert_eq!(send(&t, Method::GET, "/v1/me", Some(token), None).await.status, 401);
    }
    let ports = t.node.store().ports();
    assert_eq!(ports.users.user_by_id(id).await.unwrap(), None);

    // The trail keeps its events, nothing personal readable in them.
    let path = format!("/v1/admin/audit?identifier=%2B{}&limit=1000", &PHONE[1..]);
    let audit = t.ops_get(&path, Some(&t.node.admin_token)).await;
    assert_eq!(audit.status, 200, "{}", audit.raw);
    let events = audit.body["events"].as_array().unwrap();
    assert!(events.len() >= 7, "the account's events stay in the trail: {}", events.len());
    assert!(events.iter().any(|e| e["api"] == "account_erase" && e["outcome"] == "ok"), "the erasure is audited");
    for e in events {
        assert_eq!((&e["client_ip"], &e["user_agent"]), (&Value::Null, &Value::Null), "{e}");
    }
    for (what, needle, _) in needles() {
        let text = String::from_utf8_lossy(&needle).into_owned();
        assert!(!audit.raw.contains(&text), "{what} in the admin's audit view");
    }

    // And nothing in the store's files, once they are rewritten.
    wait_for_purges(&t, purged_before + 1.0).await;
    for (what, needle, _) in needles() {
        let holding = files_holding(&store_dir(&t), &needle);
        assert!(holding.is_empty(), "{what} is still in {holding:?}");
    }

    // Someone else's account is untouched.
    let other = someone_else["access_token"].as_str().unwrap();
    assert_eq!(t.get("/v1/me", Some(other)).await.status, 200);
    t.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_exports_and_erases_an_account_asked_for_by_another_channel() {
    use reqwest::Method;
    let t = start_node_with(|c| c.http.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]).await;
    let (user_id, token) = sign_up(&t, PHONE).await;
    let r = admin(&t, Method::GET, &format!("/v1/admin/users/{user_id}")).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    export_matches_store(&t.node, &r.body, UserId(user_id.parse().unwrap())).await;

    // Bad input: problem documents, never a 5xx.
    for path in ["/v1/admin/users/not-a-uuid", "/v1/admin/users/0192f0c4-1c7e-7f00-8000-000000000000"] {
        for method in [Method::GET, Method::DELETE] {
            let r = admin(&t, method.clone(), path).await;
            assert_eq!((r.status, r.code()), (404, "account_not_found"), "{method} {path}: {}", r.raw);
        }
    }
    let r = into_reply(t.client.get(t.ops_url(&format!("/v1/admin/users/{user_id}"))).send().await.unwrap()).await;
    assert_eq!(r.status, 401, "the admin token is needed: {}", r.raw);
    assert_eq!(
        t.get(&format!("/v1/admin/users/{user_id}"), Some(&token)).await.status,
        404,
        "not on the public listener"
    );

    let r = admin(&t, Method::DELETE, &format!("/v1/admin/users/{user_id}")).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["erased"], json!(true));
    assert_eq!(send(&t, Method::GET, "/v1/me", Some(&token), None).await.status, 401);
    let r = admin(&t, Method::GET, &format!("/v1/admin/users/{user_id}")).await;
    assert_eq!((r.status, r.code()), (404, "account_not_found"));
    let path = format!("/v1/admin/audit?identifier=%2B{}&limit=1000", &PHONE[1..]);
    let audit = t.ops_get(&path, Some(&t.node.admin_token)).await;
    let events = audit.body["events"].as_array().unwrap();
    for api in ["admin_account_export", "admin_account_erase"] {
        assert!(events.iter().any(|e| e["api"] == api), "{api} is audited");
    }
    assert!(!audit.raw.contains(AGENT) && !audit.raw.contains(ADDRESS), "{}", audit.raw);
    t.node.shutdown().await;
}
