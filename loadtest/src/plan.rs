//! `otpd-loadtest plan`: from a workload and per-core figures to nodes, Redis, ScyllaDB, SMS
//! and audit storage. The model, its constants and its limits are documented once, in
//! docs/PERFORMANCE.md ("Sizing a deployment"); this file is that model as code.
//!
//! Each sign-in (login) and each sign-up is one send and one verify. At the peak (average ×
//! peak factor) a node core is busy `sends / send_per_core + verifies / verify_per_core`;
//! cores are that load divided by the headroom (plan for at most 60 % of measured capacity),
//! rounded up; nodes are those cores in nodes of `cores_per_node`, plus one (N+1: the
//! deployment keeps its SLO with one node down). Shared services grow with the total rate.

use std::fmt::Write as _;

use otpd_actors::rules::sms::{MONEY_UNITS, SpendPolicy, format_money};
use serde::{Deserialize, Serialize};

use crate::report::Report;
use crate::scenario::Kind;
use crate::svg::esc;

/// Per-core figures shipped with the harness: docs/PERFORMANCE.md, "Results (2026-11-21)",
/// harness table, closed loop, 64 connections, the node on one core of the reference machine.
/// `POST /v1/login` (send), requests/s per node core.
pub const SEND_PER_CORE: f64 = 22_059.0;
/// `POST /v1/login/verify`, requests/s per node core (same table).
pub const VERIFY_PER_CORE: f64 = 12_348.0;
/// p99 (ms) of the mixed run at about half the send peak (same table): the SLO these
/// figures are known to meet with the headroom below.
pub const P99_AT_HEADROOM_MS: f64 = 45.9;

/// Plan for at most this share of measured capacity.
pub const HEADROOM: f64 = 0.6;

/// Redis commands per request on one server (src/limits/redis.rs module doc): a send is one
/// `EVALSHA`; a verify with the right code is one `EVALSHA` and one `HDEL` of the guess budget.
pub const REDIS_PER_SEND: f64 = 1.0;
pub const REDIS_PER_VERIFY: f64 = 2.0;

/// ScyllaDB statements per flow (docs/decisions/2026-11-21-scylla-data-model.md, "Statements
/// per request", the upper bound of each range), plus the key row each audit event writes
/// (docs/decisions/2026-12-05-crypto-shredding.md). A login: send 1 read + 5 writes, its
/// delivery event 3 writes, verify 1 read + 6 writes.
pub const SCYLLA_LOGIN_READS: f64 = 2.0;
pub const SCYLLA_LOGIN_WRITES: f64 = 14.0;
/// A sign-up: register 1 read + 7 writes (one an LWT claim), delivery 3 writes,
/// register/verify 1 read + 8 writes (one an LWT `UPDATE … IF EXISTS`).
pub const SCYLLA_SIGNUP_READS: f64 = 2.0;
pub const SCYLLA_SIGNUP_WRITES: f64 = 18.0;
pub const SCYLLA_SIGNUP_LWTS: f64 = 2.0;

/// Audit events per flow: the send, the verify, and the code's delivery.
pub const AUDIT_EVENTS_PER_FLOW: f64 = 3.0;
/// Bytes one audit event takes on one ScyllaDB replica before compression: an estimate from
/// the schema (src/store/scylla/schema.rs: the event is stored twice, by identifier and by
/// trace id, ~400 B a row with per-cell overhead), not a measurement.
pub const AUDIT_BYTES_PER_EVENT: f64 = 800.0;

/// What the deployment must serve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Workload {
    pub users: f64,
    pub logins_per_user_per_day: f64,
    pub signups_per_day: f64,
    /// Peak rate ÷ average rate.
    pub peak_factor: f64,
    /// Share of codes sent by SMS (the rest by e-mail).
    pub sms_share: f64,
    /// Country calling code the SMS go to (for the price).
    pub sms_country: u16,
    pub slo_p99_ms: f64,
    pub retention_days: f64,
}

/// What one node core serves, and where that figure comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PerCore {
    pub send_rps: f64,
    pub verify_rps: f64,
    /// The p99 the figures were measured to meet at the planned load, when known.
    pub p99_ms: Option<f64>,
    pub source: String,
}

impl PerCore {
    pub fn shipped() -> PerCore {
        PerCore {
            send_rps: SEND_PER_CORE,
            verify_rps: VERIFY_PER_CORE,
            p99_ms: Some(P99_AT_HEADROOM_MS),
            source: "shipped defaults (docs/PERFORMANCE.md, 2026-11-21)".into(),
        }
    }

    /// Takes the send and verify figures from reports (a `send`/`send-unknown` run, a
    /// `verify` run, or a find-capacity search of either); what none has stays shipped.
    pub fn from_reports(reports: &[Report], node_cores: f64) -> PerCore {
        let mut pc = PerCore::shipped();
        let mut sources = Vec::new();
        // The p99 each figure is known to meet: the plan can promise no better than the worse.
        let (mut send_p99, mut verify_p99) = (pc.p99_ms, pc.p99_ms);
        for r in reports {
            let [(kind, _)] = r.mix.0.as_slice() else { continue };
            // A capacity search gives the rate that met the SLO; a plain run its throughput.
            let (rps, p99) = match &r.capacity {
                Some(c) => match c
                    .steps
                    .iter()
                    .filter(|s| s.meets_slo)
                    .max_by(|a, b| a.achieved_rps.total_cmp(&b.achieved_rps))
                {
                    Some(s) => (s.achieved_rps, Some(s.p99_ms)),
                    None => continue,
                },
                None => match crate::html::main_run(r) {
                    Some(run) => (run.requests_per_s, None),
                    None => continue,
                },
            };
            let per_core = rps / node_cores.max(1e-9);
            // A saturated run says nothing about latency with headroom (p99 None); a search does.
            match kind {
                Kind::Send | Kind::SendUnknown => (pc.send_rps, send_p99) = (per_core, p99),
                Kind::Verify => (pc.verify_rps, verify_p99) = (per_core, p99),
                _ => continue,
            }
            sources.push(format!("{kind:?} {per_core:.0}/s per core from the run of {}", r.started_at));
        }
        pc.p99_ms = send_p99.zip(verify_p99).map(|(a, b)| a.max(b));
        if !sources.is_empty() {
            pc.source = format!("{} (node cores in those runs: {node_cores}); the rest shipped", sources.join("; "));
        }
        pc
    }
}

/// How to size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sizing {
    pub headroom: f64,
    pub cores_per_node: u32,
    pub replication_factor: u32,
    pub audit_bytes_per_event: f64,
}

impl Default for Sizing {
    fn default() -> Self {
        Sizing {
            headroom: HEADROOM,
            cores_per_node: 4,
            replication_factor: 3,
            audit_bytes_per_event: AUDIT_BYTES_PER_EVENT,
        }
    }
}

/// The answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    pub flows_per_day: f64,
    pub flows_per_s_avg: f64,
    pub flows_per_s_peak: f64,
    /// Requests/s at the peak (each flow is a send and a verify).
    pub requests_per_s_peak: f64,
    /// Node cores busy at the peak, before headroom.
    pub core_load: f64,
    pub cores: u32,
    /// Nodes for the load, and with one spare (N+1).
    pub nodes_for_load: u32,
    pub nodes: u32,
    pub redis_ops_per_s_peak: f64,
    pub scylla_reads_per_s_peak: f64,
    pub scylla_writes_per_s_peak: f64,
    pub scylla_lwts_per_s_peak: f64,
    /// Share of challenge commands a node forwards to the owner, and those commands/s.
    pub forwarded_share: f64,
    pub forwarded_per_s_peak: f64,
    pub sms_per_day: f64,
    pub emails_per_day: f64,
    /// Money units (1/10 000 of the price list's currency) per SMS segment and per day.
    pub sms_price: u64,
    pub sms_cost_per_day: u64,
    pub audit_events_per_day: f64,
    pub audit_bytes_per_day: f64,
    pub audit_bytes_retained: f64,
}

/// A workload sized.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub workload: Workload,
    pub per_core: PerCore,
    pub sizing: Sizing,
    pub figures: Figures,
    /// Warnings: where the figures do not support the plan.
    pub warnings: Vec<String>,
}

const DAY_S: f64 = 86_400.0;

pub fn plan(workload: Workload, per_core: PerCore, sizing: Sizing) -> Plan {
    let w = &workload;
    let logins_per_day = w.users * w.logins_per_user_per_day;
    let flows_per_day = logins_per_day + w.signups_per_day;
    let flows_per_s_avg = flows_per_day / DAY_S;
    let peak = flows_per_s_avg * w.peak_factor;
    let login_share = if flows_per_day > 0.0 { logins_per_day / flows_per_day } else { 1.0 };
    let (sends, verifies) = (peak, peak);
    let core_load = sends / per_core.send_rps + verifies / per_core.verify_rps;
    let cores = (core_load / sizing.headroom).ceil().max(1.0) as u32;
    let nodes_for_load = cores.div_ceil(sizing.cores_per_node.max(1));
    let nodes = nodes_for_load + 1;
    let forwarded_share = f64::from(nodes - 1) / f64::from(nodes);
    let price = SpendPolicy::OFF.price(w.sms_country);
    let sms_per_day = flows_per_day * w.sms_share;
    let audit_events_per_day = flows_per_day * AUDIT_EVENTS_PER_FLOW;
    let audit_bytes_per_day =
        audit_events_per_day * sizing.audit_bytes_per_event * f64::from(sizing.replication_factor);
    let figures = Figures {
        flows_per_day,
        flows_per_s_avg,
        flows_per_s_peak: peak,
        requests_per_s_peak: sends + verifies,
        core_load,
        cores,
        nodes_for_load,
        nodes,
        redis_ops_per_s_peak: sends * REDIS_PER_SEND + verifies * REDIS_PER_VERIFY,
        scylla_reads_per_s_peak: peak * (login_share * SCYLLA_LOGIN_READS + (1.0 - login_share) * SCYLLA_SIGNUP_READS),
        scylla_writes_per_s_peak: peak
            * (login_share * SCYLLA_LOGIN_WRITES + (1.0 - login_share) * SCYLLA_SIGNUP_WRITES),
        scylla_lwts_per_s_peak: peak * (1.0 - login_share) * SCYLLA_SIGNUP_LWTS,
        forwarded_share,
        forwarded_per_s_peak: (sends + verifies) * forwarded_share,
        sms_per_day,
        emails_per_day: flows_per_day - sms_per_day,
        sms_price: price,
        sms_cost_per_day: (sms_per_day * price as f64).round() as u64,
        audit_events_per_day,
        audit_bytes_per_day,
        audit_bytes_retained: audit_bytes_per_day * w.retention_days,
    };
    let mut warnings = Vec::new();
    match per_core.p99_ms {
        Some(p) if p > w.slo_p99_ms => warnings.push(format!(
            "the per-core figures were measured at p99 {p} ms, above the SLO's {} ms: measure with \
             `find-capacity --slo-p99 {}ms` and plan from that report",
            w.slo_p99_ms, w.slo_p99_ms
        )),
        None => warnings.push(
            "the per-core figures come from a saturated run, which says nothing about p99 below saturation: \
             plan from a find-capacity report at the SLO"
                .into(),
        ),
        Some(_) => {}
    }
    Plan { workload, per_core, sizing, figures, warnings }
}

/// 1 234 567 → "1 234 567" (thin grouping for tables).
fn grouped(v: f64) -> String {
    let n = v.round() as i128;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Bytes in the largest unit that keeps the number ≥ 1 (powers of 1000: disks are sold so).
fn bytes(b: f64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

impl Plan {
    /// (quantity, value, how it was derived) rows, shared by the terminal, Markdown and HTML.
    pub fn rows(&self) -> Vec<[String; 3]> {
        let (w, f, s, pc) = (&self.workload, &self.figures, &self.sizing, &self.per_core);
        // The shipped price table is in USD (otpd_actors::rules::sms::SHIPPED_PRICES).
        let money = |m: u64| {
            if m.is_multiple_of(MONEY_UNITS) {
                format!("{} USD", grouped((m / MONEY_UNITS) as f64))
            } else {
                format!("{} USD", format_money(m))
            }
        };
        vec![
            [
                "sign-ins + sign-ups per day".into(),
                grouped(f.flows_per_day),
                format!(
                    "{} users × {} + {} sign-ups",
                    grouped(w.users),
                    w.logins_per_user_per_day,
                    grouped(w.signups_per_day)
                ),
            ],
            [
                "flows/s, average → peak".into(),
                format!("{:.1} → {:.1}", f.flows_per_s_avg, f.flows_per_s_peak),
                format!("÷ 86 400, × peak factor {}", w.peak_factor),
            ],
            [
                "node requests/s at peak".into(),
                grouped(f.requests_per_s_peak),
                "each flow: one send + one verify".into(),
            ],
            [
                "node cores busy at peak".into(),
                format!("{:.2}", f.core_load),
                format!("sends ÷ {:.0} + verifies ÷ {:.0} per core", pc.send_rps, pc.verify_rps),
            ],
            [
                "cores, with headroom".into(),
                f.cores.to_string(),
                format!(
                    "busy cores ÷ {:.0} % (plan for ≤ {:.0} % of measured capacity), rounded up",
                    s.headroom * 100.0,
                    s.headroom * 100.0
                ),
            ],
            [
                "nodes".into(),
                format!("{} (= {} + 1 spare)", f.nodes, f.nodes_for_load),
                format!("{} cores per node; N+1: the SLO holds with one node down", s.cores_per_node),
            ],
            [
                "Redis commands/s at peak".into(),
                grouped(f.redis_ops_per_s_peak),
                "one server: 1 per send, 2 per verify".into(),
            ],
            [
                "ScyllaDB reads/s at peak".into(),
                grouped(f.scylla_reads_per_s_peak),
                "2 per flow (account read on send and on verify)".into(),
            ],
            [
                "ScyllaDB writes/s at peak".into(),
                grouped(f.scylla_writes_per_s_peak),
                format!(
                    "{SCYLLA_LOGIN_WRITES} per login, {SCYLLA_SIGNUP_WRITES} per sign-up (audit, session, account); ×{} replicas on disk",
                    s.replication_factor
                ),
            ],
            [
                "ScyllaDB LWTs/s at peak".into(),
                grouped(f.scylla_lwts_per_s_peak),
                "2 per sign-up, none per login".into(),
            ],
            [
                "forwarded commands/s at peak".into(),
                grouped(f.forwarded_per_s_peak),
                format!(
                    "(N−1)/N = {:.0} % of sends and verifies, with N = {} nodes behind a plain load balancer",
                    f.forwarded_share * 100.0,
                    f.nodes
                ),
            ],
            [
                "SMS per day / e-mails per day".into(),
                format!("{} / {}", grouped(f.sms_per_day), grouped(f.emails_per_day)),
                format!("{:.0} % by SMS, one segment each, resends not counted", w.sms_share * 100.0),
            ],
            [
                "SMS cost per day".into(),
                money(f.sms_cost_per_day),
                format!(
                    "{} USD per segment to +{} (otpd_actors::rules::sms shipped prices)",
                    format_money(f.sms_price),
                    w.sms_country
                ),
            ],
            [
                "SMS cost per 30 days".into(),
                money(f.sms_cost_per_day.saturating_mul(30)),
                "30 × the cost per day".into(),
            ],
            [
                "audit events per day".into(),
                grouped(f.audit_events_per_day),
                "3 per flow: send, verify, delivery".into(),
            ],
            [
                "audit storage per day".into(),
                bytes(f.audit_bytes_per_day),
                format!(
                    "{:.0} B per event per replica (estimate) × {} replicas, before compression",
                    s.audit_bytes_per_event, s.replication_factor
                ),
            ],
            [
                format!("audit storage for {} days", w.retention_days),
                bytes(f.audit_bytes_retained),
                "per day × retention (retention.audit)".into(),
            ],
        ]
    }

    fn header(&self) -> String {
        format!(
            "Sizing for an SLO of p99 ≤ {} ms; per-core figures: {}",
            self.workload.slo_p99_ms, self.per_core.source
        )
    }

    /// The plan as a terminal table.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
        let mut out = format!("{}\n\n", self.header());
        for r in &rows {
            let pad0 = w0 - r[0].chars().count();
            let pad1 = w1 - r[1].chars().count();
            let _ = writeln!(out, "{}{}  {}{}  {}", r[0], " ".repeat(pad0), " ".repeat(pad1), r[1], r[2]);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "\nwarning: {warning}");
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out =
            format!("## Sizing plan\n\n{}\n\n| quantity | value | how |\n| --- | ---: | --- |\n", self.header());
        for r in self.rows() {
            let _ = writeln!(out, "| {} | {} | {} |", r[0], r[1], r[2]);
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "\n**Warning:** {warning}");
        }
        out.push('\n');
        out
    }

    /// The plan as a section of the HTML report.
    pub fn html(&self) -> String {
        let mut out = format!(
            "<h2 id=\"plan\">Sizing plan</h2>\n<p>{}</p>\n<table><tr><th class=\"l\">quantity</th><th>value</th><th class=\"l\">how</th></tr>",
            esc(&self.header())
        );
        for r in self.rows() {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td></tr>",
                esc(&r[0]),
                esc(&r[1]),
                esc(&r[2])
            );
        }
        out.push_str("</table>\n");
        for warning in &self.warnings {
            let _ = writeln!(out, "<p class=\"warn\">Warning: {}</p>", esc(warning));
        }
        out.push_str("<p class=\"note\">The model and its limits: docs/PERFORMANCE.md, \u{201c}Sizing a deployment\u{201d}.</p>\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    /// 10 million users, two sign-ins a day each, no sign-ups, peak factor 10, all by SMS to
    /// +1, SLO p99 ≤ 100 ms, 90 days of audit, shipped per-core figures and sizing:
    ///
    /// * flows/day = 10 000 000 × 2 = 20 000 000; average = 20e6 / 86 400 = 231.481 481/s;
    ///   peak = 2 314.814 815/s, so 2 314.81 sends/s and 2 314.81 verifies/s.
    /// * busy cores = 2 314.814 815 / 22 059 + 2 314.814 815 / 12 348
    ///   = 0.104 937 + 0.187 465 = 0.292 402; ÷ 0.6 = 0.487 → 1 core → 1 node of 4, +1 = 2.
    /// * Redis = 2 314.81 × 1 + 2 314.81 × 2 = 6 944.444/s.
    /// * ScyllaDB reads = 2 × 2 314.81 = 4 629.63/s; writes = 14 × 2 314.81 = 32 407.41/s; LWT 0.
    /// * forwarded = 4 629.63 × 1/2 = 2 314.81/s.
    /// * SMS = 20 000 000/day at 100 units (0.01) = 2 000 000 000 units = 200 000 a day.
    /// * audit = 60 000 000 events/day × 800 B × 3 = 144 GB/day; × 90 = 12.96 TB.
    #[test]
    fn ten_million_users_twice_a_day() {
        let w = Workload {
            users: 10_000_000.0,
            logins_per_user_per_day: 2.0,
            signups_per_day: 0.0,
            peak_factor: 10.0,
            sms_share: 1.0,
            sms_country: 1,
            slo_p99_ms: 100.0,
            retention_days: 90.0,
        };
        let p = plan(w, PerCore::shipped(), Sizing::default());
        let f = &p.figures;
        assert!(close(f.flows_per_day, 20_000_000.0));
        assert!(close(f.flows_per_s_peak, 2_314.814_814_8), "{}", f.flows_per_s_peak);
        assert!((f.core_load - 0.292_402).abs() < 1e-5, "{}", f.core_load);
        assert_eq!((f.cores, f.nodes_for_load, f.nodes), (1, 1, 2));
        assert!(close(f.redis_ops_per_s_peak, 6_944.444_444_4));
        assert!(close(f.scylla_reads_per_s_peak, 4_629.629_629_6));
        assert!(close(f.scylla_writes_per_s_peak, 32_407.407_407));
        assert_eq!(f.scylla_lwts_per_s_peak, 0.0);
        assert!(close(f.forwarded_per_s_peak, 2_314.814_814_8));
        assert_eq!(f.sms_cost_per_day, 2_000_000_000);
        assert!(close(f.audit_bytes_per_day, 144e9) && close(f.audit_bytes_retained, 12.96e12));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
        assert!(p.table().contains("2 (= 1 + 1 spare)"), "{}", p.table());
    }

    /// 50 million users, 4 sign-ins a day, 1 000 000 sign-ups a day, peak factor 5, 30 % by SMS
    /// to +44 (500 units a segment), SLO p99 ≤ 20 ms, 30 days, 8-core nodes, headroom 0.7,
    /// replication 3, and per-core figures of 10 000 sends and 5 000 verifies (p99 unknown):
    ///
    /// * flows/day = 200 000 000 + 1 000 000 = 201 000 000; average 2 326.388 889/s;
    ///   peak 11 631.944 444/s; login share = 200/201.
    /// * busy cores = 11 631.944 / 10 000 + 11 631.944 / 5 000 = 1.163 194 + 2.326 389 = 3.489 583;
    ///   ÷ 0.7 = 4.985 → 5 cores → 1 node of 8, + 1 = 2 nodes.
    /// * Redis = 11 631.944 × 3 = 34 895.833/s.
    /// * ScyllaDB reads = 2 × 11 631.944 = 23 263.889/s; writes = 11 631.944 × (200/201 × 14 +
    ///   1/201 × 18) = 11 631.944 × 14.019 900 = 163 078.7/s; LWT = 11 631.944 × 2/201 = 115.741/s.
    /// * SMS = 0.3 × 201e6 = 60 300 000/day × 500 = 30 150 000 000 units (3 015 000 a day);
    ///   e-mails 140 700 000.
    /// * audit = 603 000 000 events × 800 × 3 = 1.4472 TB/day; × 30 = 43.416 TB.
    /// * warning: the figures' p99 is unknown (a saturated run).
    #[test]
    fn a_larger_mixed_workload_with_measured_figures() {
        let w = Workload {
            users: 50_000_000.0,
            logins_per_user_per_day: 4.0,
            signups_per_day: 1_000_000.0,
            peak_factor: 5.0,
            sms_share: 0.3,
            sms_country: 44,
            slo_p99_ms: 20.0,
            retention_days: 30.0,
        };
        let pc = PerCore { send_rps: 10_000.0, verify_rps: 5_000.0, p99_ms: None, source: "test".into() };
        let sizing = Sizing { headroom: 0.7, cores_per_node: 8, ..Sizing::default() };
        let p = plan(w, pc, sizing);
        let f = &p.figures;
        assert!(close(f.flows_per_s_peak, 11_631.944_444), "{}", f.flows_per_s_peak);
        assert!((f.core_load - 3.489_583).abs() < 1e-5, "{}", f.core_load);
        assert_eq!((f.cores, f.nodes_for_load, f.nodes), (5, 1, 2));
        assert!(close(f.redis_ops_per_s_peak, 34_895.833_333));
        assert!(close(f.scylla_reads_per_s_peak, 23_263.888_889));
        assert!((f.scylla_writes_per_s_peak - 163_078.7).abs() < 0.1, "{}", f.scylla_writes_per_s_peak);
        assert!((f.scylla_lwts_per_s_peak - 115.741).abs() < 1e-3, "{}", f.scylla_lwts_per_s_peak);
        assert!(close(f.sms_per_day, 60_300_000.0) && close(f.emails_per_day, 140_700_000.0));
        assert_eq!(f.sms_cost_per_day, 30_150_000_000);
        assert!(close(f.audit_bytes_per_day, 1.4472e12) && close(f.audit_bytes_retained, 43.416e12));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn per_core_figures_come_from_a_search_and_keep_the_worse_p99() {
        use crate::driver::{Bounds, Load};
        use crate::report::{CapacityReport, CapacityStep};
        use crate::scenario::Mix;
        let step = |rate: f64, p99: f64, meets: bool| CapacityStep {
            offered_rate: rate,
            achieved_rps: rate,
            p50_ms: 1.0,
            p99_ms: p99,
            p999_ms: p99,
            error_rate: 0.0,
            meets_slo: meets,
            beyond_generator: false,
            pause_max_ms: 0.0,
        };
        let bounds = Bounds { duration_s: 1.0, max_scenarios: 1, warmup_s: 0.0 };
        let mut search =
            Report::new(vec![], Mix::single(Kind::Send), Load::Open { rate: 1.0, ramp_s: 0.0 }, bounds, None);
        search.capacity = Some(CapacityReport {
            slo_p99_ms: 100.0,
            slo_max_error_rate: 0.001,
            // 9 000/s met the SLO at p99 80 ms; 12 000/s did not.
            steps: vec![step(4_000.0, 20.0, true), step(9_000.0, 80.0, true), step(12_000.0, 300.0, false)],
            capacity_rate: Some(9_000.0),
            generator: None,
            generator_limited: false,
        });
        let pc = PerCore::from_reports(&[search], 2.0);
        assert_eq!((pc.send_rps, pc.verify_rps), (4_500.0, VERIFY_PER_CORE));
        // The send figure meets 80 ms, the shipped verify figure 45.9 ms: the plan can promise 80.
        assert_eq!(pc.p99_ms, Some(80.0));
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(grouped(1_234_567.4), "1 234 567");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(bytes(144e9), "144.0 GB");
        assert_eq!(bytes(512.0), "512.0 B");
    }
}
