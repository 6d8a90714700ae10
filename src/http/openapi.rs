//! The API contract: the OpenAPI 3.1 document of API v1, generated from the code.
//!
//! * **Schemas** are the `utoipa::ToSchema` derives on the wire types (`wire.rs`) and the
//!   problem document (`problem.rs`): a field added, renamed or bounded there changes the
//!   document. Tests below check the published bounds against the validators' constants, and
//!   [`refine`] adds the rules a derive cannot say (exactly one of `phone` and `email`, …).
//! * **Operations** are the rows of the route table ([`ROUTES`]): method, path, security, body, replies, and
//!   the problem codes each can answer, grouped by status with the codes as an `enum`. A test
//!   checks that every path the router matches has a row, and `tests/it/contract.rs` that
//!   every row is routed and every other method answers 405.
//! * **Problem codes** come from [`problem::CATALOGUE`] (status, meaning, headers).
//!
//! `GET /openapi.json` serves [`json`]; `docs/openapi.json` holds the same bytes, and a test
//! fails when they differ. Regenerate with `cargo run -- openapi > docs/openapi.json`.
//!
//! **Adding an endpoint**: a row in [`ROUTES`] and its handler (`super::table`); its schemas
//! derive `ToSchema` and are listed in [`schemas`]; then regenerate. **Adding a problem code**:
//! a row in [`problem::CATALOGUE`], its code in the rows (or the shared lists of
//! `super::table`) of the operations that can answer it, then regenerate.

use std::sync::OnceLock;

use bytes::Bytes;
use otpd_actors::rules::breaker::BreakerState;
use serde_json::{Map, Value, json};
use utoipa::OpenApi as _;

use super::problem::{self, ProblemKind};
use super::table::{Auth, Link, ROUTES, Reply, Route};
use super::wire;

const TAGS: &[(&str, &str)] = &[
    ("codes", "Sign-up and login by one-time code"),
    ("sessions", "The signed-in account, refresh-token rotation, logout"),
    ("devices", "Device keys and fingerprint (device-key) login"),
    ("passkeys", "Passkeys (WebAuthn): registration and discoverable sign-in for the web"),
    ("keys", "Keys that verify access tokens"),
    ("health", "Liveness and readiness"),
    ("admin", "Operator endpoints (admin token)"),
    ("meta", "This document"),
];

const DESCRIPTION: &str = "\
One-time-code authentication: sign-up and login by a code sent by SMS or e-mail, JWT access \
tokens, rotating refresh tokens, fingerprint (device-key) login, and passkeys.

* **Bodies** are JSON (`Content-Type: application/json`, at most `http.max_body_bytes`, 16 KiB \
by default). Unknown fields are refused. Identify an account with exactly one of `phone` and \
`email` (registration may carry both: then `email` is a contact address).
* **Errors** are RFC 9457 `application/problem+json` documents with a stable `code`; each \
response below lists the codes it can carry. `title` and `detail` are for humans and may \
change.
* **Every response** carries `X-Request-Id`: yours if you sent a sane one (1–128 of \
`[A-Za-z0-9._:-]`), else a new one. It is the trace id of the audit trail.
* **Any path** not listed answers `404 not_found`; any method an operation does not list answers \
`405 method_not_allowed` with an `Allow` header (`GET` operations also answer `HEAD`).
* **Limits** answer `429` with `Retry-After` (seconds). Unknown and known identifiers get the \
same answers, unless the operator turns on `otp.reveal_accounts`.
";

/// The schemas that derive `ToSchema` (their dependencies come along).
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    wire::RegisterRequest,
    wire::LoginRequest,
    wire::VerifyRequest,
    wire::RegisterVerifyRequest,
    wire::ResendRequest,
    wire::RefreshRequest,
    wire::EnrolRequest,
    wire::DeviceChallengeRequest,
    wire::DeviceVerifyRequest,
    wire::SendResponse,
    wire::TokenResponse,
    wire::MeResponse,
    wire::LogoutAllResponse,
    wire::SessionListResponse,
    wire::DeviceView,
    wire::DeviceListResponse,
    wire::DeviceChallengeResponse,
    wire::PasskeyRegisterRequest,
    wire::PasskeyLoginRequest,
    wire::PasskeyOptionsResponse,
    wire::PasskeyView,
    wire::PasskeyListResponse,
    wire::AuditListResponse,
    wire::AdminStatsResponse,
    wire::DestinationListResponse,
    super::receipts::WebhookReceipt,
    wire::PinDestinationRequest,
    wire::AccountExportResponse,
    wire::EraseResponse,
    super::backup::BackupRequest,
    super::backup::BackupResponse,
    wire::RotateKeyRequest,
    wire::RotateKeyResponse,
    problem::ProblemBody,
)))]
struct Derived;

/// Every schema of the document.
fn schemas() -> Map<String, Value> {
    let components = Derived::openapi().components.expect("the derive lists schemas");
    let mut schemas: Map<String, Value> = components
        .schemas
        .into_iter()
        .map(|(name, s)| (name, serde_json::to_value(s).expect("schemas serialise")))
        .collect();
    refine(&mut schemas);
    // Replies that are not wire types (built with `json!` in `routes.rs`).
    schemas.insert(
        "PrometheusExposition".into(),
        json!({ "type": "string", "description": "Prometheus text exposition format, version 0.0.4." }),
    );
    schemas.insert(
        "TwilioStatusCallback".into(),
        json!({
            "type": "object",
            "description": "Twilio's status callback form (every field Twilio sends is kept for the signature; these are read).",
            "required": ["MessageSid", "MessageStatus"],
            "properties": {
                "MessageSid": { "type": "string" },
                "MessageStatus": { "type": "string", "examples": ["delivered"] },
                "ErrorCode": { "type": "string", "examples": ["30003"] },
            },
            "additionalProperties": { "type": "string" },
        }),
    );
    schemas.insert(
        "Live".into(),
        json!({
            "type": "object",
            "required": ["status"],
            "properties": { "status": { "type": "string", "enum": ["live"] } },
        }),
    );
    let breakers = [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen].map(BreakerState::as_str);
    schemas.insert(
        "Readiness".into(),
        json!({
            "type": "object",
            "required": ["status"],
            "description": "On the public listener only `status` (`ready` or `not_ready`); the details are for the ops listener.",
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["ready", "degraded", "not_ready"],
                    "description": "`degraded` (ops listener only): serving, with a fallback for a shared dependency (e.g. the in-process limiter while Redis is unreachable).",
                },
                "checks": {
                    "type": "object",
                    "description": "Ops listener only: one entry per dependency (`store`, `delivery`, …).",
                    "additionalProperties": { "$ref": "#/components/schemas/ReadinessCheck" },
                },
                "providers": {
                    "type": "object",
                    "description": "One entry per delivery provider, with its circuit breaker.",
                    "additionalProperties": { "$ref": "#/components/schemas/ProviderHealth" },
                },
                "cluster": {
                    "type": "object",
                    "description": "Only when `cluster.enabled`: the members this node sees and the identifier partitions it owns.",
                    "required": ["node", "members", "partitions", "partitions_owned"],
                    "properties": {
                        "node": { "type": "string" },
                        "members": { "type": "array", "items": { "type": "string" } },
                        "partitions": { "type": "integer", "minimum": 1 },
                        "partitions_owned": { "type": "integer", "minimum": 0 },
                    },
                },
            },
        }),
    );
    schemas.insert(
        "ReadinessCheck".into(),
        json!({
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": { "type": "string", "enum": ["up", "down", "degraded"] },
                "latency_ms": { "type": "number", "minimum": 0 },
                "error": { "type": "string" },
            },
        }),
    );
    schemas.insert(
        "ProviderHealth".into(),
        json!({
            "type": "object",
            "required": ["breaker", "routes", "consecutive_failures", "in_flight"],
            "properties": {
                "breaker": { "type": "string", "enum": breakers },
                "routes": {
                    "type": "array",
                    "items": { "type": "string", "pattern": "^(sms|email):(primary|secondary)$" },
                },
                "consecutive_failures": { "type": "integer", "minimum": 0 },
                "in_flight": { "type": "integer", "minimum": 0 },
                "retry_in_ms": { "type": "integer", "minimum": 0, "description": "While the breaker is open." },
            },
        }),
    );
    schemas.insert(
        "Jwks".into(),
        json!({
            "type": "object",
            "required": ["keys"],
            "properties": { "keys": { "type": "array", "items": { "$ref": "#/components/schemas/SigningKey" } } },
        }),
    );
    schemas.insert(
        "SigningKey".into(),
        json!({
            "type": "object",
            "description": "An Ed25519 public key (RFC 8037); `kid` is its RFC 7638 thumbprint.",
            "required": ["kty", "crv", "x", "kid", "alg", "use"],
            "properties": {
                "kty": { "type": "string", "enum": ["OKP"] },
                "crv": { "type": "string", "enum": ["Ed25519"] },
                "x": { "type": "string", "pattern": "^[A-Za-z0-9_-]{43}$" },
                "kid": { "type": "string" },
                "alg": { "type": "string", "enum": ["EdDSA"] },
                "use": { "type": "string", "enum": ["sig"] },
            },
        }),
    );
    schemas.insert(
        "OpenApiDocument".into(),
        json!({ "type": "object", "required": ["openapi", "paths"], "description": "An OpenAPI 3.1 document." }),
    );
    schemas
}

/// What the derives cannot say: which combinations of optional fields a request needs.
fn refine(schemas: &mut Map<String, Value>) {
    let present = |field: &str, kind: &str| json!({ "required": [field], "properties": { field: { "type": kind } } });
    // `wire::raw_identifier`: exactly one of them (a `null` counts as absent).
    let exactly_one_identifier = json!([present("phone", "string"), present("email", "string")]);
    for name in ["LoginRequest", "VerifyRequest", "RegisterVerifyRequest", "ResendRequest"] {
        schemas[name]["oneOf"] = exactly_one_identifier.clone();
    }
    // Registration: a phone number (with an optional contact address) or an e-mail address.
    schemas["RegisterRequest"]["anyOf"] = exactly_one_identifier;
    // `wire::key_input`: exactly one of `public_key` and `jwk`.
    schemas["EnrolRequest"]["oneOf"] = json!([present("public_key", "string"), present("jwk", "object")]);
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema, "required": true })
}

fn components_headers() -> Value {
    json!({
        "X-Request-Id": header(
            "The trace id of the request: the caller's `X-Request-Id` if it was 1–128 of `[A-Za-z0-9._:-]`, \
             else a new one.",
            json!({ "type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$" }),
        ),
        "Retry-After": header("Seconds to wait before trying again.", json!({ "type": "integer", "minimum": 1 })),
        "WWW-Authenticate": header("The Bearer challenge (RFC 6750).", json!({ "type": "string", "pattern": "^Bearer " })),
        "Location": header("The new resource.", json!({ "type": "string", "format": "uri-reference" })),
        "Allow": header("The methods the endpoint takes.", json!({ "type": "string" })),
        "Cache-Control": header("How long the keys may be cached.", json!({ "type": "string" })),
    })
}

/// A response header: a reference when the response always carries it (the components say
/// `required`), else spelled out as optional (a `$ref` sibling cannot change `required`).
fn header_ref(name: &str, required: bool) -> Value {
    if required {
        return json!({ "$ref": format!("#/components/headers/{name}") });
    }
    let mut h = components_headers()[name].clone();
    h["required"] = Value::Bool(false);
    h
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Replies that are not JSON, by their schema's name; every other reply is `application/json`.
const NON_JSON: &[(&str, &str)] = &[
    ("PrometheusExposition", "text/plain; version=0.0.4"),
    ("TwilioStatusCallback", "application/x-www-form-urlencoded"),
];

fn media_type(schema: &str) -> &'static str {
    NON_JSON.iter().find(|(name, _)| *name == schema).map_or("application/json", |(_, media)| media)
}

fn reply(r: &Reply, links: &[Link]) -> Value {
    let mut headers = Map::new();
    headers.insert("X-Request-Id".into(), header_ref("X-Request-Id", true));
    for h in r.headers {
        headers.insert((*h).into(), header_ref(h, true));
    }
    let mut out = json!({ "description": r.description, "headers": headers });
    if let Some(schema) = r.schema {
        out["content"] = json!({ media_type(schema): { "schema": schema_ref(schema) } });
    }
    if !links.is_empty() {
        let mut l = Map::new();
        for (name, op, param, expr) in links {
            l.insert((*name).into(), json!({ "operationId": op, "parameters": { *param: expr } }));
        }
        out["links"] = Value::Object(l);
    }
    out
}

/// The response of one status: every code of `kinds`, as an `enum`.
fn problem_reply(status: u16, kinds: &[&ProblemKind]) -> Value {
    let codes: Vec<&str> = kinds.iter().map(|k| k.code).collect();
    let description = kinds.iter().map(|k| format!("`{}`: {}.", k.code, k.meaning)).collect::<Vec<_>>().join(" ");
    let mut headers = Map::new();
    headers.insert("X-Request-Id".into(), header_ref("X-Request-Id", true));
    // A header is listed when some code of the group carries it, required when all do.
    let retry: Vec<bool> = kinds.iter().map(|k| k.retry_after).collect();
    let challenge: Vec<bool> = kinds.iter().map(|k| k.www_authenticate.is_some()).collect();
    for (name, carries) in [("Retry-After", retry), ("WWW-Authenticate", challenge)] {
        if carries.contains(&true) {
            headers.insert(name.into(), header_ref(name, !carries.contains(&false)));
        }
    }
    json!({
        "description": description,
        "headers": headers,
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        schema_ref("Problem"),
                        {
                            "properties": {
                                "status": { "const": status },
                                "code": { "enum": codes },
                            },
                        },
                    ],
                },
            },
        },
    })
}

fn operation(op: &Route) -> Value {
    let mut params = vec![json!({ "$ref": "#/components/parameters/X-Request-Id" })];
    for p in op.params {
        params.push(json!({
            "name": p.name,
            "in": p.location,
            "required": p.required,
            "description": p.description,
            "schema": (p.schema)(),
        }));
    }
    let mut responses = Map::new();
    for r in op.replies {
        let links = if r.status / 100 == 2 { op.links } else { &[] };
        responses.insert(r.status.to_string(), reply(r, links));
    }
    let codes = op.problem_codes();
    let kinds: Vec<&ProblemKind> = codes.iter().filter_map(|c| problem::kind_of(c)).collect();
    let mut statuses: Vec<u16> = kinds.iter().map(|k| k.status).collect();
    statuses.dedup();
    for status in statuses {
        let group: Vec<&ProblemKind> = kinds.iter().copied().filter(|k| k.status == status).collect();
        responses.insert(status.to_string(), problem_reply(status, &group));
    }
    let mut out = json!({
        "operationId": op.id,
        "tags": [op.tag],
        "summary": op.summary,
        "parameters": params,
        "responses": responses,
    });
    if !op.description.is_empty() {
        out["description"] = Value::String(op.description.to_owned());
    }
    match op.auth {
        Auth::None => {}
        Auth::Bearer => out["security"] = json!([{ "bearer": [] }]),
        Auth::Admin => out["security"] = json!([{ "admin": [] }]),
    }
    if let Some(body) = op.body {
        out["requestBody"] =
            json!({ "required": true, "content": { media_type(body): { "schema": schema_ref(body) } } });
    }
    out
}

/// Generic answers that belong to no operation: unknown paths and methods.
fn components_responses() -> Value {
    let generic = |code: &str, extra: Value| {
        let kind = problem::kind_of(code).expect("catalogued");
        let mut r = problem_reply(kind.status, &[kind]);
        if let (Value::Object(h), Value::Object(more)) = (&mut r["headers"], extra) {
            h.extend(more);
        }
        r
    };
    json!({
        "NotFound": generic("not_found", json!({})),
        "MethodNotAllowed": generic("method_not_allowed", json!({ "Allow": header_ref("Allow", true) })),
    })
}

/// The document, as a JSON value with its keys sorted.
pub fn document() -> Value {
    let mut paths = Map::new();
    for op in ROUTES {
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method] = operation(op);
    }
    let tags: Vec<Value> = TAGS.iter().map(|(name, d)| json!({ "name": name, "description": d })).collect();
    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "otpd",
            "summary": "One-time-code authentication engine: API v1",
            "description": DESCRIPTION,
            "version": env!("CARGO_PKG_VERSION"),
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "headers": components_headers(),
            "responses": components_responses(),
            "parameters": {
                "X-Request-Id": {
                    "name": "X-Request-Id",
                    "in": "header",
                    "required": false,
                    "description": "Your trace id for this request, kept when it is 1–128 of `[A-Za-z0-9._:-]` \
                        (any other value is replaced by a new one, never refused).",
                    "schema": { "type": "string" },
                },
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The `access_token` of a token response (15 minutes). A revoked session's \
                        tokens are refused at once.",
                },
                "admin": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The node's admin token (`secrets.admin_token`, or generated into \
                        `<data_dir>/secrets/admin.token`).",
                },
            },
        },
    });
    sorted(doc)
}

/// Sorts object keys recursively, so that the bytes do not depend on serde_json's features.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn json() -> Bytes {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
        text.push('\n');
        Bytes::from(text)
    })
    .clone()
}

/// The API reference in Markdown (`docs/api-reference.md`), rendered from [`document`].
pub fn markdown() -> String {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let mut out = String::new();
    let mut w = |line: &str| {
        out.push_str(line);
        out.push('\n');
    };
    w("# otpd API v1 reference");
    w("");
    w("Generated from the OpenAPI 3.1 document ([`openapi.json`](openapi.json), served at `GET /openapi.json`) by");
    w("`cargo run -- openapi --markdown > docs/api-reference.md`; a test fails when it is out of date.");
    w("");
    w(DESCRIPTION.trim_end());
    for (tag, about) in TAGS {
        w("");
        w(&format!("## {about}"));
        for op in ROUTES.iter().filter(|o| o.tag == *tag) {
            let o = &doc["paths"][op.path][op.method];
            w("");
            w(&format!("### `{} {}`", op.method.to_uppercase(), op.path));
            w("");
            w(&format!("{} (`{}`).", op.summary, op.id));
            if !op.description.is_empty() {
                w("");
                w(op.description);
            }
            w("");
            w(match op.auth {
                Auth::None => "**Auth**: none.",
                Auth::Bearer => "**Auth**: `Authorization: Bearer <access token>`.",
                Auth::Admin => "**Auth**: `Authorization: Bearer <admin token>`.",
            });
            for p in op.params {
                w(&format!("**{} parameter** `{}`: {}", p.location, p.name, p.description));
            }
            if let Some(body) = op.body {
                w("");
                w(&format!("**Body** (`{}`, `{body}`):", media_type(body)));
                w("");
                fields(&mut w, schemas, body);
            }
            w("");
            w("| status | body | meaning |");
            w("| --- | --- | --- |");
            let responses = o["responses"].as_object().expect("responses");
            for (status, r) in responses {
                let body =
                    if let Some(name) = r.pointer("/content/application~1json/schema/$ref").and_then(Value::as_str) {
                        format!("`{}`", name.rsplit('/').next().unwrap_or(name))
                    } else if r["content"]["application/problem+json"].is_object() {
                        "problem".to_owned()
                    } else {
                        "empty".to_owned()
                    };
                let mut meaning = r["description"].as_str().unwrap_or("").to_owned();
                let headers: Vec<&str> = r["headers"]
                    .as_object()
                    .map(|h| h.keys().map(String::as_str).filter(|h| *h != "X-Request-Id").collect())
                    .unwrap_or_default();
                if !headers.is_empty() {
                    meaning.push_str(&format!(" Headers: {}.", headers.join(", ")));
                }
                w(&format!("| {status} | {body} | {} |", meaning.replace('|', "\\|")));
            }
        }
    }
    w("");
    w("## Response bodies");
    let replies: Vec<&str> = schemas
        .as_object()
        .expect("schemas")
        .keys()
        .map(String::as_str)
        .filter(|name| !name.ends_with("Request") && *name != "Jwk")
        .collect();
    for name in replies {
        w("");
        w(&format!("### `{name}`"));
        w("");
        fields(&mut w, schemas, name);
    }
    out
}

/// A table of a schema's properties: name, type, required, rules, description.
fn fields(w: &mut impl FnMut(&str), schemas: &Value, name: &str) {
    let schema = &schemas[name];
    if let Some(d) = schema["description"].as_str() {
        w(&d.replace('\n', " "));
        w("");
    }
    let Some(props) = schema["properties"].as_object() else {
        let kind = schema["type"].as_str().or(schema["enum"].as_array().map(|_| "string")).unwrap_or("object");
        let values = schema["enum"].as_array().map(|v| format!(": one of {}", inline_values(v))).unwrap_or_default();
        w(&format!("A {kind}{values}."));
        return;
    };
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    w("| field | type | required | rules | description |");
    w("| --- | --- | --- | --- | --- |");
    for (field, p) in props {
        let kind = match (&p["type"], p["$ref"].as_str(), p.pointer("/items/$ref").and_then(Value::as_str)) {
            (_, Some(r), _) => format!("`{}`", r.rsplit('/').next().unwrap_or(r)),
            (Value::String(t), _, Some(r)) if t == "array" => {
                format!("array of `{}`", r.rsplit('/').next().unwrap_or(r))
            }
            (Value::String(t), ..) => t.clone(),
            (Value::Array(ts), ..) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
            _ => "object".to_owned(),
        };
        let mut rules = Vec::new();
        for (key, label) in [
            ("format", "format"),
            ("minLength", "min length"),
            ("maxLength", "max length"),
            ("minimum", "min"),
            ("pattern", "pattern"),
        ] {
            if let Some(v) = p.get(key) {
                let v = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                rules.push(format!("{label} `{v}`"));
            }
        }
        if let Some(values) = p["enum"].as_array() {
            rules.push(format!("one of {}", inline_values(values)));
        }
        let description = p["description"].as_str().unwrap_or("").replace('\n', " ");
        let required = if required.contains(&field.as_str()) { "yes" } else { "no" };
        let cell = |text: String| text.replace('|', "\\|");
        w(&format!("| `{field}` | {kind} | {required} | {} | {} |", cell(rules.join(", ")), cell(description)));
    }
    for (key, what) in [("oneOf", "exactly one of"), ("anyOf", "at least one of")] {
        if let Some(options) = schema[key].as_array() {
            let names: Vec<String> =
                options.iter().filter_map(|o| o["required"][0].as_str()).map(|n| format!("`{n}`")).collect();
            w("");
            w(&format!("Give {what} {}.", names.join(", ")));
        }
    }
}

fn inline_values(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| format!("`{}`", v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `docs/errors.md` (from the problem catalogue and the route table): every problem code with its status, headers and meaning, and the
/// operations that can answer it.
pub fn errors_markdown() -> String {
    let mut out = String::from(
        "# Errors\n\n<!-- Generated from src/http/problem.rs and the route table by \
         `OTPD_BLESS=1 cargo test --test it reference`; do not edit. -->\n\n\
         Every error is an RFC 9457 `application/problem+json` document with a stable `code`, which \
         clients branch on; `title` and `detail` are for humans and may change. `type` is \
         `urn:otpd:problem:<code>`, and `trace_id` is the request's `X-Request-Id`:\n\n\
         ```json\n{\"type\":\"urn:otpd:problem:invalid_code\",\"title\":\"Invalid code\",\"status\":400,\n \
         \"detail\":\"the code is not correct\",\"code\":\"invalid_code\",\"trace_id\":\"…\",\"attempts_left\":4}\n```\n\n\
         | status | code | meaning | headers | answered by |\n| --- | --- | --- | --- | --- |\n",
    );
    for kind in problem::CATALOGUE {
        let mut headers = Vec::new();
        if kind.retry_after {
            headers.push("`Retry-After`");
        }
        if kind.www_authenticate.is_some() {
            headers.push("`WWW-Authenticate`");
        }
        let ops: Vec<String> = ROUTES
            .iter()
            .filter(|r| r.problem_codes().contains(&kind.code))
            .map(|r| format!("`{} {}`", r.method.to_ascii_uppercase(), r.path))
            .collect();
        let ops = match kind.code {
            "not_found" | "method_not_allowed" => "any path".to_owned(),
            _ if ops.is_empty() => "—".to_owned(),
            _ => ops.join(", "),
        };
        let headers = if headers.is_empty() { "—".to_owned() } else { headers.join(", ") };
        out.push_str(&format!("| {} | `{}` | {} | {headers} | {ops} |\n", kind.status, kind.code, kind.meaning));
    }
    out
}

#[cfg(test)]
mod tests {
    use otpd_actors::rules::identifier::{MAX_EMAIL, MAX_RAW_PHONE};

    use super::*;

    fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
        doc.pointer(reference.strip_prefix('#')?)
    }

    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_resolves_and_every_operation_is_unique() {
        let doc = document();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(refs.len() > 50);
        for r in refs {
            assert!(resolve(&doc, r).is_some(), "{r} does not resolve");
        }
        let mut ids: Vec<&str> = ROUTES.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operationIds are unique");
        let mut routes: Vec<(&str, &str)> = ROUTES.iter().map(|o| (o.path, o.method)).collect();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), ROUTES.len(), "one row per method and path");
    }

    #[test]
    fn operations_name_only_catalogued_codes_and_every_code_is_used() {
        for op in ROUTES {
            for code in op.problems.iter().flat_map(|l| l.iter()) {
                assert!(problem::kind_of(code).is_some(), "{}: {code} is not in problem::CATALOGUE", op.id);
            }
        }
        // Codes no operation lists: generic answers (components.responses) and the one bug.
        let generic = ["not_found", "method_not_allowed", "internal"];
        for kind in problem::CATALOGUE {
            let used = ROUTES.iter().any(|op| op.problem_codes().contains(&kind.code));
            assert!(used || generic.contains(&kind.code), "no operation can answer {}", kind.code);
        }
    }

    #[test]
    fn problem_replies_carry_their_codes_and_headers() {
        let doc = document();
        let r = &doc["paths"]["/v1/login"]["post"]["responses"]["429"];
        let codes = &r["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]["code"]["enum"];
        assert_eq!(
            codes,
            &json!([
                "resend_cooldown",
                "identifier_send_limit",
                "identifier_login_limit",
                "ip_send_limit",
                "prefix_send_limit",
                "country_send_limit",
                "destination_throttled"
            ])
        );
        assert_eq!(r["headers"]["Retry-After"]["$ref"], "#/components/headers/Retry-After");
        let r = &doc["paths"]["/v1/login/verify"]["post"]["responses"]["429"];
        // too_many_attempts has no Retry-After, the verify limits do: documented, not required.
        assert_eq!(r["headers"]["Retry-After"]["required"], false);
        let r = &doc["paths"]["/v1/me"]["get"]["responses"]["401"];
        assert_eq!(r["headers"]["WWW-Authenticate"]["$ref"], "#/components/headers/WWW-Authenticate");
        let r = &doc["paths"]["/v1/token/refresh"]["post"]["responses"]["401"];
        assert!(r["headers"]["WWW-Authenticate"].is_null());
        let r = &doc["paths"]["/v1/devices"]["post"]["responses"]["201"];
        assert_eq!(r["headers"]["Location"]["$ref"], "#/components/headers/Location");
    }

    /// The `#[schema(...)]` literals of `wire.rs` are the validators' constants.
    #[test]
    fn published_bounds_are_the_validators_bounds() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        let max = |schema: &str, field: &str| s[schema]["properties"][field]["maxLength"].as_u64();
        for name in ["RegisterRequest", "LoginRequest", "VerifyRequest", "ResendRequest"] {
            assert_eq!(max(name, "phone"), Some(MAX_RAW_PHONE as u64), "{name}");
            assert_eq!(max(name, "email"), Some(MAX_EMAIL as u64), "{name}");
        }
        assert_eq!(max("RegisterRequest", "first_name"), Some(wire::MAX_NAME_CHARS as u64));
        assert_eq!(max("RegisterRequest", "last_name"), Some(wire::MAX_NAME_CHARS as u64));
        assert_eq!(max("VerifyRequest", "code"), Some(wire::MAX_CODE_CHARS as u64));
        for name in ["RegisterRequest", "LoginRequest", "ResendRequest"] {
            let max_locale = otpd_actors::rules::locale::MAX_LOCALE_LEN as u64;
            assert_eq!(max(name, "locale"), Some(max_locale), "{name}");
            assert_eq!(s[name]["properties"]["locale"]["pattern"], wire::LOCALE_PATTERN, "{name}");
        }
        assert_eq!(max("EnrolRequest", "name"), Some(wire::MAX_DEVICE_NAME_CHARS as u64));
        assert_eq!(max("EnrolRequest", "public_key"), Some(wire::MAX_PUBLIC_KEY_CHARS as u64));
        assert_eq!(max("DeviceVerifyRequest", "signature"), Some(wire::MAX_SIGNATURE_CHARS as u64));
        assert_eq!(
            s["DeviceVerifyRequest"]["properties"]["nonce"]["pattern"],
            format!("^[0-9a-fA-F]{{{}}}$", otpd_actors::rules::device_key::NONCE_HEX_LEN)
        );
        assert_eq!(
            s["DeviceChallengeRequest"]["properties"]["device_id"]["pattern"],
            super::super::table::UUID_PATTERN
        );
        for k in ["RegisterRequest", "LoginRequest", "VerifyRequest", "ResendRequest", "EnrolRequest"] {
            assert_eq!(s[k]["additionalProperties"], false, "{k} refuses unknown fields");
        }
    }

    #[test]
    fn published_enums_are_what_the_requests_accept() {
        let doc = document();
        let s = &doc["components"]["schemas"];
        for p in wire::PLATFORMS {
            let body = format!(r#"{{"name":"x","platform":"{}","public_key":"AA"}}"#, p.as_str());
            assert!(serde_json::from_str::<wire::EnrolRequest>(&body).is_ok(), "{body}");
            assert!(s["Platform"]["enum"].as_array().unwrap().contains(&json!(p.as_str())));
        }
        for purpose in s["Purpose"]["enum"].as_array().unwrap() {
            let body = json!({ "phone": "+12025550123", "purpose": purpose });
            assert!(serde_json::from_value::<wire::ResendRequest>(body).is_ok(), "{purpose}");
        }
        assert!(
            wire::key_input(&Some(wire::schema::EXAMPLE_SPKI.into()), &None)
                .ok()
                .and_then(|k| otpd_actors::rules::device_key::DeviceKey::parse(&k).ok())
                .is_some(),
            "the example public key is a real key"
        );
    }

    #[test]
    fn the_document_is_stable_json() {
        let a = json();
        let b = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        assert_eq!(&a[..], b.as_bytes());
        let parsed: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(parsed["openapi"], "3.1.0");
        assert_eq!(parsed["paths"].as_object().unwrap().len(), 34);
    }
}
