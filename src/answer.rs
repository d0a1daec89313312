//! The words on the wire: statuses, `WWW-Authenticate` challenges, JSON-RPC
//! error bodies and the RFC 9728 metadata document. Nothing here ever sees a
//! token, so no answer can echo one; claim values never reach it either.

use crate::config::Policy;
use crate::dpop::{self, Scheme};
use serde_json::{json, Value};

/// JSON-RPC error codes used in answers. The -32000..-32019 range is the
/// implementation-defined one; -32020 is MCP's `HeaderMismatch`.
pub mod codes {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const HEADER_MISMATCH: i64 = -32020;
    pub const UNAUTHORIZED: i64 = -32001;
    pub const KEYS_UNAVAILABLE: i64 = -32002;
    pub const FORBIDDEN: i64 = -32003;
    pub const INSUFFICIENT_SCOPE: i64 = -32004;
    pub const LIST_UNFILTERABLE: i64 = -32005;
    pub const AUTHORIZATION_SERVER_UNAVAILABLE: i64 = -32006;
    pub const UPSTREAM_TOKEN_UNAVAILABLE: i64 = -32007;
}

/// How long a client should wait before retrying a 503, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// A complete local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn json_rpc_error(status: u32, code: i64, message: &str, id: Option<&Value>) -> Answer {
        let body = json!({
            "jsonrpc": "2.0",
            "id": id.cloned().unwrap_or(Value::Null),
            "error": { "code": code, "message": message },
        });
        Answer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    fn with_header(mut self, name: &str, value: String) -> Answer {
        self.headers.push((name.to_string(), value));
        self
    }
}

/// A `WWW-Authenticate` challenge of `scheme` with these auth-params, in
/// order (RFC 6750 §3, RFC 9449 §7.1). Every value is built by the filter
/// from its configuration or a fixed text, never from the request.
fn challenge(scheme: Scheme, params: &[(&str, &str)]) -> String {
    let params: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    format!("{} {}", scheme.name(), params.join(", "))
}

/// The `scope` hint of a 401: `scopes_supported`, when configured.
fn scope_hint(policy: &Policy) -> Option<String> {
    (!policy.scopes_supported.is_empty()).then(|| policy.scopes_supported.join(" "))
}

/// The `algs` of a DPoP challenge: the proof algorithms some provider takes.
fn dpop_algs(policy: &Policy) -> String {
    let names: Vec<&str> = dpop::algorithms(&policy.providers)
        .iter()
        .map(|a| a.name())
        .collect();
    names.join(" ")
}

/// What went wrong, for a 401's challenge: the OAuth error code and a
/// fixed, class-level description (never token, proof or claim data).
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    pub error: &'a str,
    pub description: &'a str,
}

/// The challenges of a 401: one per scheme the filter takes (`Bearer` when
/// some provider takes bearer tokens, `DPoP` with its `algs` when some takes
/// DPoP), each with `resource_metadata` and the `scope` hint. `problem`
/// goes on the challenge of the scheme the request `used` (or the first
/// taken), which comes first.
fn unauthorized_challenges(
    policy: &Policy,
    used: Option<Scheme>,
    problem: Option<Problem>,
) -> Vec<String> {
    let mut schemes = Vec::new();
    if dpop::bearer_accepted(&policy.providers) {
        schemes.push(Scheme::Bearer);
    }
    if dpop::dpop_accepted(&policy.providers) {
        schemes.push(Scheme::DPoP);
    }
    if let Some(i) = used.and_then(|u| schemes.iter().position(|s| *s == u)) {
        schemes.swap(0, i);
    }
    let hint = scope_hint(policy);
    let algs = dpop_algs(policy);
    schemes
        .iter()
        .enumerate()
        .map(|(i, scheme)| {
            let mut params = Vec::new();
            if let (0, Some(problem)) = (i, problem) {
                params.push(("error", problem.error));
                params.push(("error_description", problem.description));
            }
            if *scheme == Scheme::DPoP {
                params.push(("algs", algs.as_str()));
            }
            params.push(("resource_metadata", policy.metadata_url.as_str()));
            params.extend(hint.as_deref().map(|scope| ("scope", scope)));
            challenge(*scheme, &params)
        })
        .collect()
}

/// A 401 with its challenges and the JSON-RPC error -32001.
fn unauthorized(
    policy: &Policy,
    used: Option<Scheme>,
    problem: Option<Problem>,
    message: &str,
) -> Answer {
    let mut answer = Answer::json_rpc_error(401, codes::UNAUTHORIZED, message, None);
    for value in unauthorized_challenges(policy, used, problem) {
        answer = answer.with_header("www-authenticate", value);
    }
    answer
}

/// 401 for a request that carried no token: the discovery challenge(s).
pub fn token_required(policy: &Policy) -> Answer {
    unauthorized(policy, None, None, "Authorization required")
}

/// 401 for a token that failed verification (or came with a scheme it
/// may not). `description` is a fixed, class-level text (it never holds
/// token or claim data).
pub fn invalid_token(policy: &Policy, used: Scheme, description: &str) -> Answer {
    let problem = Problem {
        error: "invalid_token",
        description,
    };
    unauthorized(
        policy,
        Some(used),
        Some(problem),
        &format!("Invalid access token: {description}"),
    )
}

/// 401 for a DPoP proof that failed its checks (`invalid_dpop_proof`).
pub fn invalid_dpop_proof(policy: &Policy, description: &str) -> Answer {
    let problem = Problem {
        error: "invalid_dpop_proof",
        description,
    };
    unauthorized(
        policy,
        Some(Scheme::DPoP),
        Some(problem),
        &format!("Invalid DPoP proof: {description}"),
    )
}

/// 401 asking for a proof with the server's nonce (`use_dpop_nonce`,
/// RFC 9449 §9), which comes in the `DPoP-Nonce` header.
pub fn use_dpop_nonce(policy: &Policy, nonce: &str) -> Answer {
    let problem = Problem {
        error: "use_dpop_nonce",
        description: "DPoP proof needs a fresh server nonce",
    };
    unauthorized(
        policy,
        Some(Scheme::DPoP),
        Some(problem),
        "DPoP nonce required: retry with the nonce in DPoP-Nonce",
    )
    .with_header("dpop-nonce", nonce.to_string())
}

/// 403 step-up challenge: the caller's role fits but it lacks `scopes`.
/// The challenge is in the scheme the token came with.
pub fn insufficient_scope(
    policy: &Policy,
    used: Scheme,
    scopes: &[String],
    id: Option<&Value>,
) -> Answer {
    let needed = scopes.join(" ");
    let algs = dpop_algs(policy);
    let mut params = vec![
        ("error", "insufficient_scope"),
        ("scope", needed.as_str()),
        ("resource_metadata", policy.metadata_url.as_str()),
    ];
    if used == Scheme::DPoP {
        params.push(("algs", algs.as_str()));
    }
    Answer::json_rpc_error(
        403,
        codes::INSUFFICIENT_SCOPE,
        &format!("Insufficient scope: this call needs {}", scopes.join(" ")),
        id,
    )
    .with_header("www-authenticate", challenge(used, &params))
}

/// 403: the rules deny this call.
pub fn forbidden(id: Option<&Value>) -> Answer {
    Answer::json_rpc_error(
        403,
        codes::FORBIDDEN,
        "Forbidden: not allowed by policy",
        id,
    )
}

/// 400 with a JSON-RPC error (-32700, -32600 or -32020).
pub fn bad_request(code: i64, message: &str, id: Option<&Value>) -> Answer {
    Answer::json_rpc_error(400, code, message, id)
}

/// 413: the body is larger than `max_body_bytes`.
pub fn too_large(max_body_bytes: usize) -> Answer {
    Answer::json_rpc_error(
        413,
        codes::INVALID_REQUEST,
        &format!("Request body larger than {max_body_bytes} bytes"),
        None,
    )
}

/// 415: a POST whose body is not declared `application/json`.
pub fn unsupported_media_type() -> Answer {
    Answer::json_rpc_error(
        415,
        codes::INVALID_REQUEST,
        "Content-Type must be application/json",
        None,
    )
}

/// 503: remote keys were never fetched successfully yet.
pub fn keys_unavailable(retry_after_seconds: u64) -> Answer {
    Answer::json_rpc_error(
        503,
        codes::KEYS_UNAVAILABLE,
        "Signing keys not available yet; retry later",
        None,
    )
    .with_header("retry-after", retry_after_seconds.to_string())
}

/// 503: token introspection could not tell whether the token is good (the
/// authorization server down, slow, or answering garbage).
pub fn authorization_server_unavailable(retry_after_seconds: u64) -> Answer {
    Answer::json_rpc_error(
        503,
        codes::AUTHORIZATION_SERVER_UNAVAILABLE,
        "Authorization server unavailable; retry later",
        None,
    )
    .with_header("retry-after", retry_after_seconds.to_string())
}

/// No token for the upstream could be had by exchange: 503 with
/// `Retry-After` when the authorization server could not be reached, else
/// 502 (it refused, or issued a token the filter must not forward).
pub fn upstream_token_unavailable(retry_after_seconds: Option<u64>) -> Answer {
    match retry_after_seconds {
        Some(seconds) => Answer::json_rpc_error(
            503,
            codes::UPSTREAM_TOKEN_UNAVAILABLE,
            "Upstream token unavailable; retry later",
            None,
        )
        .with_header("retry-after", seconds.to_string()),
        None => Answer::json_rpc_error(
            502,
            codes::UPSTREAM_TOKEN_UNAVAILABLE,
            "Upstream token could not be obtained",
            None,
        ),
    }
}

/// 405 on a metadata path for anything but GET, HEAD and OPTIONS.
pub fn metadata_method_not_allowed() -> Answer {
    Answer {
        status: 405,
        headers: vec![("allow".into(), "GET, HEAD, OPTIONS".into())],
        body: Vec::new(),
    }
}

/// The CORS preflight answer on a metadata path: browser-based clients read
/// the document cross-origin. It is public, so any origin may.
pub fn metadata_preflight() -> Answer {
    Answer {
        status: 204,
        headers: vec![
            ("access-control-allow-origin".into(), "*".into()),
            (
                "access-control-allow-methods".into(),
                "GET, HEAD, OPTIONS".into(),
            ),
            (
                "access-control-allow-headers".into(),
                "mcp-protocol-version".into(),
            ),
            ("access-control-max-age".into(), "86400".into()),
        ],
        body: Vec::new(),
    }
}

/// 405 on the MCP endpoint for a method the MCP transport does not use.
pub fn method_not_allowed() -> Answer {
    Answer::json_rpc_error(
        405,
        codes::INVALID_REQUEST,
        "Method not allowed: the MCP endpoint takes POST, GET and DELETE",
        None,
    )
    .with_header("allow", "POST, GET, DELETE, OPTIONS".into())
}

/// The JSON-RPC error that replaces an answer the filter could not read
/// (compressed, another media type, malformed, too large): never passed
/// through unfiltered.
pub fn list_unfilterable_body() -> Vec<u8> {
    json!({
        "jsonrpc": "2.0",
        "id": Value::Null,
        "error": { "code": codes::LIST_UNFILTERABLE, "message": "List answer could not be filtered for this caller" },
    })
    .to_string()
    .into_bytes()
}

/// The same error as one server-sent event, for a stream whose headers have
/// already gone out.
pub fn list_unfilterable_event() -> Vec<u8> {
    let mut event = b"event: message\ndata: ".to_vec();
    event.extend(list_unfilterable_body());
    event.extend(b"\n\n");
    event
}

/// The RFC 9728 protected resource metadata document.
pub fn metadata_document(policy: &Policy) -> Answer {
    let mut doc = serde_json::Map::new();
    doc.insert("resource".into(), json!(policy.resource));
    doc.insert(
        "authorization_servers".into(),
        json!(policy.authorization_servers),
    );
    if !policy.scopes_supported.is_empty() {
        doc.insert("scopes_supported".into(), json!(policy.scopes_supported));
    }
    doc.insert("bearer_methods_supported".into(), json!(["header"]));
    if dpop::dpop_accepted(&policy.providers) {
        let algs: Vec<&str> = dpop::algorithms(&policy.providers)
            .iter()
            .map(|a| a.name())
            .collect();
        doc.insert("dpop_signing_alg_values_supported".into(), json!(algs));
        doc.insert(
            "dpop_bound_access_tokens_required".into(),
            json!(!dpop::bearer_accepted(&policy.providers)),
        );
    }
    if let Some(name) = &policy.resource_name {
        doc.insert("resource_name".into(), json!(name));
    }
    if let Some(url) = &policy.resource_documentation {
        doc.insert("resource_documentation".into(), json!(url));
    }
    Answer {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "max-age=300".into()),
            ("access-control-allow-origin".into(), "*".into()),
        ],
        body: Value::Object(doc).to_string().into_bytes(),
    }
}
