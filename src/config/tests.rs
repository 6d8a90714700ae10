//! Loading, overrides and validation of the whole tree.

use std::path::PathBuf;
use std::time::Duration;

use otpd_actors::rules::code::Alphabet;
use otpd_actors::rules::limits::Preset;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn empty_config_is_the_documented_default() {
    let c = Config::from_sources("", env(&[])).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.otp.lifetime.0, Duration::from_secs(300));
    assert_eq!(c.outbox_path(), PathBuf::from("data/outbox.jsonl"));
}

#[test]
fn file_values_and_env_overrides_combine() {
    let text = "[otp]\ncode_length = 8\nlifetime = \"2m\"\n[http]\nlisten = \"127.0.0.1:9000\"\n";
    let c = Config::from_sources(
        text,
        env(&[
            ("OTPD_HTTP__LISTEN", "127.0.0.1:9100"),
            ("OTPD_OTP__ALPHABET", "alphanumeric"),
            ("OTPD_TEST_SCYLLA", "x"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(c.otp.code_length, 8);
    assert_eq!(c.otp.lifetime.0, Duration::from_secs(120));
    assert_eq!(c.otp.alphabet, Alphabet::Alphanumeric);
    assert_eq!(c.http.listen.port(), 9100);
}

#[test]
fn every_problem_is_reported_at_once_with_its_name() {
    let text = r#"
        colour = "blue"
        [otp]
        code_length = 3
        lifetime = "forever"
        max_attempts = "five"
        surprise = 1
        [http]
        listen = "nowhere"
        [tokens]
        algorithm = "RS256"
    "#;
    let err =
        Config::from_sources(text, env(&[("OTPD_ENGINE__SHARDS", "0"), ("OTPD_NODE__COLOR", "red")])).unwrap_err();
    let all = err.0.join("\n");
    for needle in [
        "colour: unknown section",
        "otp.code_length: numeric codes must be 6..=10 characters long (at least 10^6 possible codes), got 3",
        "otp.lifetime:",
        "otp.max_attempts:",
        "otp.surprise: unknown key",
        "http.listen:",
        "tokens.algorithm: must be",
        "engine.shards: must be 1..=4096, got 0",
        "node.color (from OTPD_NODE__COLOR): unknown key",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.0.len(), 9, "{all}");
}

#[test]
fn device_rules_are_bounded() {
    let c = Config::from_sources("[devices]\nmax_per_user = 3\nchallenge_lifetime = \"30s\"", env(&[])).unwrap();
    assert_eq!((c.devices.max_per_user, c.devices.challenge_lifetime.0), (3, Duration::from_secs(30)));
    let text = "[devices]\nmax_per_user = 0\nenrol_max_auth_age = \"2h\"\nchallenge_lifetime = \"1s\"\nx = 1";
    let err = Config::from_sources(text, env(&[])).unwrap_err();
    let all = err.0.join("\n");
    for needle in ["devices.max_per_user", "devices.enrol_max_auth_age", "devices.challenge_lifetime", "devices.x"] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn the_ops_listener_is_on_loopback_by_default_and_apart_from_the_public_one() {
    let c = Config::from_sources("", env(&[])).unwrap();
    assert_eq!((c.admin.listen, c.admin.ops_on_public_listener), ("127.0.0.1:9464".parse().unwrap(), false));
    let c = Config::from_sources(
        "[admin]\nops_on_public_listener = true",
        env(&[("OTPD_ADMIN__LISTEN", "10.0.0.5:9100"), ("OTPD_ADMIN__REFRESH_INTERVAL", "250ms")]),
    )
    .unwrap();
    assert_eq!(c.admin.listen, "10.0.0.5:9100".parse().unwrap());
    assert_eq!((c.admin.ops_on_public_listener, c.admin.refresh_interval.0), (true, Duration::from_millis(250)));
    let text = "[http]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\nrefresh_interval = \"0s\"";
    let all = Config::from_sources(text, env(&[])).unwrap_err().0.join("\n");
    for needle in ["admin.listen: must differ from http.listen", "admin.refresh_interval: must be at least 10ms"] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn lifetime_is_capped_at_ten_minutes() {
    let err = Config::from_sources("[otp]\nlifetime = \"11m\"", env(&[])).unwrap_err();
    assert!(err.0[0].contains("otp.lifetime"));
}

#[test]
fn secrets_never_print() {
    let c = Config::from_sources("[secrets]\nadmin_token = \"super-secret-admin-token\"", env(&[])).unwrap();
    assert!(!format!("{c:?}").contains("super-secret"));
}

#[test]
fn redis_and_limits_sections_load_merge_and_validate() {
    let text = r#"
        [redis]
        url = "redis://:hunter2@127.0.0.1:6379"
        timeout = "100ms"
        [limits]
        preset = "high"
        ip_send = { limit = 50 }
        country_send = { limit = 1000, window = "1h", block = "6h" }
        sms_allow = ["+1", "+44"]
        sms_deny = ["+1 876"]
    "#;
    let c = Config::from_sources(text, env(&[("OTPD_LIMITS__PREFIX_SEND", "{ limit = 0 }")])).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"), "the Redis password never prints");
    let p = c.limits.policy(&c.otp);
    let high = otpd_actors::rules::limits::LimitPolicy::preset(Preset::High);
    assert_eq!(p.identifier_logins, high.identifier_logins);
    assert_eq!(
        (p.ip_sends.limit, p.ip_sends.window, p.ip_sends.block),
        (50, high.ip_sends.window, high.ip_sends.block)
    );
    assert_eq!(p.country_sends.limit, 1000);
    assert!(!p.prefix_sends.is_on(), "limit = 0 turns a rule off");
    assert_eq!((p.sms_allow.len(), p.sms_deny.len()), (2, 1));
    assert_eq!(p.resend_cooldown, Duration::from_secs(30), "the cooldown comes from [otp]");

    let bad = r#"
        [redis]
        url = "http://example.com"
        cluster_nodes = ["127.0.0.1"]
        key_prefix = "a{b}"
        [limits]
        preset = "extreme"
        country_send = { limit = 5 }
        ip_send = { limt = 5 }
        sms_deny = ["+0"]
        prefix_digits = 1
    "#;
    let all = Config::from_sources(bad, env(&[])).unwrap_err().0.join("\n");
    for needle in [
        "redis.url: must start with",
        "give either redis.url or redis.cluster_nodes",
        "redis.cluster_nodes: \"127.0.0.1\" is not host:port",
        "redis.key_prefix:",
        "limits.preset: unknown variant `extreme`",
        "limits.country_send.window: must be set",
        "limits.ip_send: unknown field `limt`",
        "limits.sms_deny:",
        "limits.prefix_digits: must be 2..=15",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn redis_over_tls_is_a_url_scheme_and_its_files_go_with_it() {
    for url in ["rediss://:pw@redis.internal:6380/2", "rediss-cluster://h:7000?node=h:7001", "valkeys://h:6380"] {
        let text = format!("[redis]\nurl = {url:?}\ntls_ca_file = \"/etc/otpd/redis-ca.pem\"");
        let c = Config::from_sources(&text, env(&[])).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(c.redis.tls(), "{url}");
    }
    let c = Config::from_sources("[redis]\nurl = \"redis://h:6379\"", env(&[])).unwrap();
    assert!(!c.redis.tls());

    let bad = r#"
        [redis]
        url = "redis://h:6379"
        tls_ca_file = "/etc/otpd/redis-ca.pem"
        tls_cert_file = "/etc/otpd/redis-client.pem"
    "#;
    let all = Config::from_sources(bad, env(&[])).unwrap_err().0.join("\n");
    for needle in [
        "redis: set both redis.tls_cert_file and redis.tls_key_file, or neither",
        "redis: tls_* keys are set but redis.url is not a rediss:// (or rediss-cluster://) URL",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn codes_have_at_least_a_million_values() {
    let problems = |text: &str| Config::from_sources(text, env(&[])).err().map(|e| e.0.join("\n"));
    for short in [4, 5] {
        let all = problems(&format!("[otp]\ncode_length = {short}")).expect("refused");
        assert!(all.contains("otp.code_length: numeric codes must be 6..=10"), "{all}");
    }
    assert_eq!(problems("[otp]\ncode_length = 5\nalphabet = \"alphanumeric\""), None, "31^5 > 10^6");
    let all = problems("[otp]\ncode_length = 4\nalphabet = \"alphanumeric\"").expect("31^4 < 10^6");
    assert!(all.contains("otp.code_length: alphanumeric codes must be 5..=10"), "{all}");
}

#[test]
fn the_guess_budget_comes_from_the_preset_and_is_overridden_in_part() {
    use otpd_actors::rules::limits::{GUESS_BUDGET, GuessBudget, LimitPolicy};
    let c = Config::from_sources("", env(&[])).unwrap();
    assert_eq!(c.limits.policy(&c.otp).identifier_guesses, GUESS_BUDGET, "on by default");
    let text = "[limits]\npreset = \"high\"\nidentifier_guess = { free = 4 }";
    let c = Config::from_sources(text, env(&[])).unwrap();
    let high = LimitPolicy::preset(Preset::High).identifier_guesses;
    assert_eq!(c.limits.policy(&c.otp).identifier_guesses, GuessBudget { free: 4, ..high });
    let all = Config::from_sources(&text.replace("4", "8"), env(&[])).unwrap_err().0.join("\n");
    assert!(all.contains("must be at least 16days 5h 25m"), "more free checks give more back when forgotten: {all}");
    let c = Config::from_sources("[limits]\nidentifier_guess = { first_block = \"0s\" }", env(&[])).unwrap();
    assert!(!c.limits.policy(&c.otp).identifier_guesses.is_on(), "a zero first block turns it off");

    let bad = r#"
        [limits]
        identifier_guess = { first_block = "1h", max_block = "1m", forget_after = "1d" }
    "#;
    let all = Config::from_sources(bad, env(&[])).unwrap_err().0.join("\n");
    assert!(all.contains("limits.identifier_guess: first_block must not be longer than max_block"), "{all}");
    let all = Config::from_sources("[limits]\nidentifier_guess = { forget_after = \"1d\" }", env(&[]))
        .unwrap_err()
        .0
        .join("\n");
    assert!(all.contains("limits.identifier_guess.forget_after: must be at least 2days 3h 45m"), "{all}");
    let all = Config::from_sources("[limits]\nidentifier_guess = { fre = 1 }", env(&[])).unwrap_err().0.join("\n");
    assert!(all.contains("limits.identifier_guess: unknown field `fre`"), "{all}");
}

#[test]
fn delivery_defaults_to_the_outbox_for_both_channels() {
    let c = Config::from_sources("", env(&[])).unwrap();
    assert_eq!(c.delivery.providers_in_use(), ["outbox"]);
    assert_eq!(c.delivery.batch_max_age.0, Duration::from_millis(10));
    assert!(c.delivery.templates().is_ok());
}

#[test]
fn providers_in_use_are_checked_and_their_secrets_come_from_the_environment() {
    let sid = format!("AC{}", "a".repeat(32));
    let c = Config::from_sources(
        &format!(
            "[delivery]\nprovider = \"twilio\"\nsecondary = \"webhook\"\nemail_provider = \"smtp\"\n\
             [twilio]\naccount_sid = \"{sid}\"\nfrom = \"+15005550006\"\n\
             [webhook]\nurl = \"http://127.0.0.1:9/hook\"\n[smtp]\nfrom = \"Acme <codes@acme.test>\"\n"
        ),
        env(&[("OTPD_TWILIO__AUTH_TOKEN", "env-only-auth-token"), ("OTPD_SMTP__TLS", "none")]),
    )
    .unwrap();
    assert_eq!(c.delivery.providers_in_use(), ["twilio", "webhook", "smtp"]);
    assert_eq!(c.twilio.auth_token.as_ref().unwrap().0, "env-only-auth-token");
    assert!(!format!("{c:?}").contains("env-only-auth-token"), "check-config never prints a secret");
    let c = Config::from_sources(
        "",
        env(&[
            ("OTPD_TWILIO__FROM", "+15005550006"),
            ("OTPD_DELIVERY__APP_NAME", "1234"),
            ("OTPD_OTP__CODE_LENGTH", "8"),
        ]),
    )
    .unwrap();
    assert_eq!(c.twilio.from, "+15005550006", "a number meant as text keeps its text");
    assert_eq!(c.delivery.app_name, "1234");
    assert_eq!(c.otp.code_length, 8);
}

#[test]
fn every_delivery_problem_is_named() {
    let text = r#"
        [delivery]
        provider = "pigeon"
        email_provider = "smtp"
        email_secondary = "smtp"
        batch_max_size = 0
        template_login = "no code"
        origin = "https://example.com"
        [twilio]
        account_sid = "nope"
        [smtp]
        tls = "maybe"
        from = "not an address"
        username = "u"
    "#;
    let err = Config::from_sources(text, env(&[("OTPD_DELIVERY__SECONDARY", "twilio")])).unwrap_err();
    let all = err.0.join("\n");
    for needle in [
        "delivery.provider: must be one of \"outbox\", \"twilio\", \"twilio_whatsapp\", \"twilio_voice\", \"webhook\", got \"pigeon\"",
        "delivery.email_secondary: must differ from delivery.email_provider",
        "delivery.batch_max_size: must be 1..=10000, got 0",
        "delivery.template_login: must contain {code}",
        "twilio.account_sid: must be the account SID",
        "twilio.auth_token: required",
        "twilio: set exactly one of twilio.from and twilio.messaging_service_sid",
        "smtp.tls: must be",
        "smtp.from: not an address",
        "smtp: set both smtp.username and smtp.password, or neither",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let err = Config::from_sources("[delivery]\norigin = \"https://example.com\"", env(&[])).unwrap_err();
    assert!(err.0[0].starts_with("delivery.origin:"), "{:?}", err.0);
    let err = Config::from_sources("[delivery]\nprovider = \"webhook\"", env(&[])).unwrap_err();
    assert_eq!(err.0, ["webhook.url: required, an http(s) URL; got \"\""]);
}

#[test]
fn scylla_is_selected_by_store_kind_and_every_problem_is_named() {
    let c = Config::from_sources(
        "[store]\nkind = \"scylla\"\n[scylla]\ncontact_points = [\"10.0.0.7:9042\", \"scylla-2:9042\"]\n\
         local_datacenter = \"eu-west\"\nusername = \"otpd\"\n",
        env(&[("OTPD_SCYLLA__PASSWORD", "env-only-scylla-password")]),
    )
    .unwrap();
    assert_eq!(c.store.kind, "scylla");
    assert_eq!(c.scylla.keyspace, "otpd");
    assert_eq!(c.scylla.consistency, "LOCAL_QUORUM", "writes that must not be lost");
    assert_eq!(c.retention.audit.0, Duration::from_secs(365 * 86_400), "a year, on either store");
    assert_eq!(c.scylla.password.as_ref().unwrap().0, "env-only-scylla-password");
    assert!(!format!("{c:?}").contains("env-only-scylla-password"), "check-config never prints it");

    // With the embedded store the section's values are not checked (its keys still are).
    assert!(Config::from_sources("[scylla]\nconsistency = \"MAYBE\"", env(&[])).is_ok());
    let text = r#"
        [store]
        kind = "scylla"
        [scylla]
        contact_points = ["nohost"]
        keyspace = "Bad-Name"
        consistency = "MAYBE"
        serial_consistency = "QUORUM"
        username = "otpd"
        tls_ca_file = "/etc/ca.pem"
        replication_factor = 0
    "#;
    let err = Config::from_sources(text, env(&[])).unwrap_err();
    let all = err.0.join("\n");
    for needle in [
        "scylla.contact_points: \"nohost\" is not host:port",
        "scylla.keyspace: must be lower-case",
        "scylla.consistency: must be one of",
        "scylla.serial_consistency: must be LOCAL_SERIAL or SERIAL",
        "scylla: set both scylla.username and scylla.password",
        "scylla: tls_* keys are set but scylla.tls is false",
        "scylla.replication_factor: must be 1..=10, got 0",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.0.len(), 7, "{all}");
    let err = Config::from_sources("[retention]\naudit = \"1h\"\nended_sessions = \"30y\"", env(&[])).unwrap_err();
    let all = err.0.join("\n");
    assert!(all.contains("retention.audit: must be between 1 day and 20 years"), "{all}");
    assert!(all.contains("retention.ended_sessions: must be at most 20 years"), "{all}");
    let err = Config::from_sources("[store]\nkind = \"cassandra\"", env(&[])).unwrap_err();
    assert_eq!(err.0, ["store.kind: must be \"embedded\" or \"scylla\", got \"cassandra\""]);
}

#[test]
fn a_cluster_node_needs_shared_secrets_store_and_limits() {
    // Everything a node would otherwise keep for itself is refused, all at once.
    let err = Config::from_sources(
        "[cluster]\nenabled = true\nseeds = [\"otpd-2\"]\ntls_cert_file = \"/etc/otpd/node.pem\"\n",
        env(&[]),
    )
    .unwrap_err();
    let all = err.0.join("\n");
    for needle in [
        "cluster.node_name: required",
        "cluster.cookie: required",
        "cluster.seeds: \"otpd-2\" is not host:port",
        "give all three or none",
        "cluster.tls_cert_file, tls_key_file, tls_ca_file: required, because the link between nodes would cross a \
         network (seed \"otpd-2\" is not a loopback address)",
        "secrets.hash_key: required in a cluster",
        "tokens.signing_key_file (or tokens.hs256_secret with HS256): required in a cluster",
        "store.kind: a cluster needs the shared store",
        "redis.url: a cluster needs shared limits",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert_eq!(err.0.len(), 9, "{all}");

    // The same node, complete, from the environment as the compose file sets it.
    let c = Config::from_sources("", env(&cluster_node(&[]))).unwrap();
    assert!(c.cluster.enabled);
    assert_eq!(c.cluster.seeds, ["otpd-2:4370", "otpd-3:4370"]);
    assert_eq!(format!("{:?}", c.cluster.cookie), "Some(Secret(..))");
    assert!(!c.cluster.plaintext_by_opt_out());
}

/// A complete cluster node as the compose file configures one (mutual TLS, reachable by the
/// other containers), with `changes` on top (an empty value removes the variable).
fn cluster_node<'a>(changes: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut vars = vec![
        ("OTPD_CLUSTER__ENABLED", "true"),
        ("OTPD_CLUSTER__NODE_NAME", "otpd-1"),
        ("OTPD_CLUSTER__LISTEN", "0.0.0.0:4370"),
        ("OTPD_CLUSTER__SEEDS", "[\"otpd-2:4370\", \"otpd-3:4370\"]"),
        ("OTPD_CLUSTER__COOKIE", "5f0c3a9e71d24b8a96e0f1c2d3b4a5968778695a4b3c2d1e0f9e8d7c6b5a4938"),
        ("OTPD_CLUSTER__TLS_CERT_FILE", "/run/secrets/cluster-node.pem"),
        ("OTPD_CLUSTER__TLS_KEY_FILE", "/run/secrets/cluster-node.key"),
        ("OTPD_CLUSTER__TLS_CA_FILE", "/run/secrets/cluster-ca.pem"),
        ("OTPD_SECRETS__HASH_KEY", "abababababababababababababababababababababababababababababababab"),
        ("OTPD_TOKENS__SIGNING_KEY_FILE", "/run/secrets/jwt.pem"),
        ("OTPD_STORE__KIND", "scylla"),
        ("OTPD_SCYLLA__CONTACT_POINTS", "[\"scylla-1:9042\"]"),
        ("OTPD_REDIS__URL", "redis://redis:6379"),
    ];
    for (key, value) in changes {
        vars.retain(|(k, _)| k != key);
        if !value.is_empty() {
            vars.push((key, value));
        }
    }
    vars
}

#[test]
fn a_cluster_link_that_leaves_the_host_needs_mutual_tls_unless_loudly_opted_out() {
    let no_tls =
        [("OTPD_CLUSTER__TLS_CERT_FILE", ""), ("OTPD_CLUSTER__TLS_KEY_FILE", ""), ("OTPD_CLUSTER__TLS_CA_FILE", "")];
    // Listening on every address, seeds by name, no TLS: refused, saying why and what to do.
    let err = Config::from_sources("", env(&cluster_node(&no_tls))).unwrap_err();
    assert_eq!(err.0.len(), 1, "{:?}", err.0);
    for needle in [
        "cluster.tls_cert_file, tls_key_file, tls_ca_file: required",
        "listen = 0.0.0.0:4370 is not a loopback address",
        "seed \"otpd-2:4370\" is not a loopback address",
        "seed \"otpd-3:4370\" is not a loopback address",
        "mutual TLS",
        "Cluster link security",
        "cluster.insecure_plaintext_on_private_network = true",
    ] {
        assert!(err.0[0].contains(needle), "missing {needle:?} in {}", err.0[0]);
    }
    // A listener on loopback is not enough when a seed is elsewhere: the dial crosses the network.
    let mut remote_seed = no_tls.to_vec();
    remote_seed.extend([("OTPD_CLUSTER__LISTEN", "127.0.0.1:4370"), ("OTPD_CLUSTER__SEEDS", "[\"10.0.0.2:4370\"]")]);
    let err = Config::from_sources("", env(&cluster_node(&remote_seed))).unwrap_err();
    assert_eq!(err.0.len(), 1, "{:?}", err.0);
    assert!(err.0[0].contains("(seed \"10.0.0.2:4370\" is not a loopback address)"), "{}", err.0[0]);
    // Everything on this host (loopback addresses, `localhost`): plaintext is allowed, silently.
    let mut local = no_tls.to_vec();
    local.extend([
        ("OTPD_CLUSTER__LISTEN", "127.0.0.1:4370"),
        ("OTPD_CLUSTER__SEEDS", "[\"127.0.0.1:4371\", \"localhost:4372\", \"[::1]:4373\"]"),
    ]);
    let c = Config::from_sources("", env(&cluster_node(&local))).unwrap();
    assert!(c.cluster.exposed().is_empty() && !c.cluster.plaintext_by_opt_out());
    // The opt-out: accepted, and marked for the start-up warning.
    let mut opted_out = no_tls.to_vec();
    opted_out.push(("OTPD_CLUSTER__INSECURE_PLAINTEXT_ON_PRIVATE_NETWORK", "true"));
    let c = Config::from_sources("", env(&cluster_node(&opted_out))).unwrap();
    assert!(c.cluster.plaintext_by_opt_out());
    // The opt-out with TLS configured contradicts itself.
    let err = Config::from_sources(
        "",
        env(&cluster_node(&[("OTPD_CLUSTER__INSECURE_PLAINTEXT_ON_PRIVATE_NETWORK", "true")])),
    )
    .unwrap_err();
    assert_eq!(err.0.len(), 1, "{:?}", err.0);
    assert!(err.0[0].contains("cluster.insecure_plaintext_on_private_network: set, but TLS is configured"));
}

#[test]
fn a_cluster_cookie_is_at_least_32_random_bytes() {
    let refused = |cookie: &str| {
        Config::from_sources("", env(&cluster_node(&[("OTPD_CLUSTER__COOKIE", cookie)]))).unwrap_err().0.join("\n")
    };
    // 31 bytes of good randomness: too short, and the message says how to make one.
    let short = refused("5f0c3a9e71d24b8a96e0f1c2d3b4a59");
    assert!(short.contains("cluster.cookie: too short (31 bytes)"), "{short}");
    assert!(short.contains("openssl rand -hex 32"), "{short}");
    // Long but obviously weak.
    for weak in ["a".repeat(64), "ab".repeat(32), "password".repeat(8)] {
        let err = refused(&weak);
        assert!(err.contains("too weak"), "{weak}: {err}");
        assert!(!err.contains("too short"), "{weak}: {err}");
    }
    // What `openssl rand -hex 32` and `openssl rand -base64 32` print are accepted.
    for good in [
        "5f0c3a9e71d24b8a96e0f1c2d3b4a5968778695a4b3c2d1e0f9e8d7c6b5a4938",
        "q0FJ8vN2Zr7+Yx1bT4kLm9Wc3Hs5Pd6Ge8uAiOo/VjE=",
    ] {
        assert!(Config::from_sources("", env(&cluster_node(&[("OTPD_CLUSTER__COOKIE", good)]))).is_ok(), "{good}");
    }
}

#[test]
fn invalid_toml_is_one_clear_error() {
    let err = Config::from_sources("[otp\n", env(&[])).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].contains("not valid TOML"));
}

#[test]
fn the_sms_budget_is_on_by_default_and_configured_in_currency() {
    use otpd_actors::rules::sms::{DEFAULT_DAILY_BUDGET, DEFAULT_PRICE, SpendPolicy};
    let c = Config::from_sources("", env(&[])).unwrap();
    let default = c.limits.policy(&c.otp).sms_budget;
    assert_eq!(default, SpendPolicy { daily: DEFAULT_DAILY_BUDGET, ..SpendPolicy::OFF });
    assert_eq!(default.default_price, DEFAULT_PRICE);

    let text = "[limits.sms_budget]\ndaily = 250.5\ncountry_daily = 20\ncountries = { \"+44\" = 5, \"1\" = 0 }\n\
                prices = { \"44\" = 0.0375 }\ndefault_price = 0.2";
    let c = Config::from_sources(text, env(&[])).unwrap();
    let p = c.limits.policy(&c.otp).sms_budget;
    assert_eq!((p.daily, p.country_daily, p.default_price), (2_505_000, 200_000, 2_000));
    assert_eq!((p.country_budget(44), p.country_budget(1), p.country_budget(33)), (50_000, 0, 200_000));
    assert_eq!((p.price(44), p.price(1), p.price(998)), (375, 100, 2_000));
    let off = Config::from_sources("", env(&[("OTPD_LIMITS__SMS_BUDGET", "{ daily = 0 }")])).unwrap();
    assert_eq!(off.limits.policy(&off.otp).sms_budget.daily, 0, "an override from the environment");

    let bad = "[limits.sms_budget]\ndaily = -1\ncountries = { \"044\" = 1, \"1000\" = 1 }\nprices = { \"44\" = 1e12 }";
    let all = Config::from_sources(bad, env(&[])).unwrap_err().0.join("\n");
    for expected in [
        "limits.sms_budget.daily: must be a non-negative amount",
        "\"044\" is not a country calling code",
        "\"1000\" is not a country calling code",
        "limits.sms_budget.prices.44: must be a non-negative amount",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    let typo = Config::from_sources("[limits.sms_budget]\ndayly = 5", env(&[])).unwrap_err().0.join("\n");
    assert!(typo.contains("unknown field `dayly`"), "{typo}");
}

#[test]
fn locales_and_the_app_hash_are_checked_at_start() {
    let text = r#"
        [delivery]
        default_locale = "it"
        android_app_hash = "FA+9qCX9VS"
    "#;
    let all = Config::from_sources(text, env(&[])).unwrap_err().0.join("\n");
    for needle in [
        "delivery.default_locale: no templates for it (there are: en, es, fr, de, pt, hi, ar, zh)",
        "delivery.android_app_hash: must be the 11 characters",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    let e = Config::from_sources("[delivery]\ndefault_locale = \"en_US\"\n", env(&[])).unwrap_err().0.join("\n");
    assert!(e.contains("delivery.default_locale: must be a BCP 47 language tag"), "{e}");
    let e = Config::from_sources("[delivery]\nlocales_dir = \"/nonexistent/otpd-locales\"\n", env(&[])).unwrap_err();
    assert!(e.0.join("\n").contains("delivery.locales_dir: cannot read /nonexistent/otpd-locales"), "{e:?}");
    let text = "[delivery]\ndefault_locale = \"pt-BR\"\nandroid_app_hash = \"FA+9qCX9VSu\"\norigin = \"example.com\"\n";
    let c = Config::from_sources(text, env(&[])).unwrap_err().0.join("\n");
    assert!(c.contains("no templates for pt-BR"), "a default is a locale with templates, not a fallback: {c}");
    let text = "[delivery]\ndefault_locale = \"PT\"\nandroid_app_hash = \"FA+9qCX9VSu\"\norigin = \"example.com\"\n";
    let templates = Config::from_sources(text, env(&[])).unwrap().delivery.templates().unwrap();
    assert_eq!(templates.locales().tag(templates.locales().default_locale()).as_str(), "pt");
}
