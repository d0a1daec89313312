//! The words on the wire: statuses, `WWW-Authenticate` challenges, JSON-RPC
//! error bodies and the RFC 9728 metadata document. Nothing here ever sees a
//! token, so no answer can echo one; claim values never reach it either.

use crate::config::Policy;
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

/// A `WWW-Authenticate: Bearer` challenge with these auth-params, in order
/// (RFC 6750 section 3). Every value is built by the filter from its
/// configuration or a fixed text, never from the request.
fn bearer_challenge(params: &[(&str, &str)]) -> String {
    let params: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}=\"{value}\""))
        .collect();
    format!("Bearer {}", params.join(", "))
}

/// The `scope` hint of a 401: `scopes_supported`, when configured.
fn scope_hint(policy: &Policy) -> Option<String> {
    (!policy.scopes_supported.is_empty()).then(|| policy.scopes_supported.join(" "))
}

/// 401 for a request that carried no token: the discovery challenge.
pub fn token_required(policy: &Policy) -> Answer {
    let hint = scope_hint(policy);
    let mut params = vec![("resource_metadata", policy.metadata_url.as_str())];
    params.extend(hint.as_deref().map(|scope| ("scope", scope)));
    Answer::json_rpc_error(401, codes::UNAUTHORIZED, "Authorization required", None)
        .with_header("www-authenticate", bearer_challenge(&params))
}

/// 401 for a token that failed verification. `description` is a fixed,
/// class-level text (it never holds token or claim data).
pub fn invalid_token(policy: &Policy, description: &str) -> Answer {
    let hint = scope_hint(policy);
    let mut params = vec![
        ("error", "invalid_token"),
        ("error_description", description),
        ("resource_metadata", policy.metadata_url.as_str()),
    ];
    params.extend(hint.as_deref().map(|scope| ("scope", scope)));
    Answer::json_rpc_error(
        401,
        codes::UNAUTHORIZED,
        &format!("Invalid access token: {description}"),
        None,
    )
    .with_header("www-authenticate", bearer_challenge(&params))
}

/// 403 step-up challenge: the caller's role fits but it lacks `scopes`.
pub fn insufficient_scope(policy: &Policy, scopes: &[String], id: Option<&Value>) -> Answer {
    let needed = scopes.join(" ");
    let challenge = bearer_challenge(&[
        ("error", "insufficient_scope"),
        ("scope", &needed),
        ("resource_metadata", &policy.metadata_url),
    ]);
    Answer::json_rpc_error(
        403,
        codes::INSUFFICIENT_SCOPE,
        &format!("Insufficient scope: this call needs {}", scopes.join(" ")),
        id,
    )
    .with_header("www-authenticate", challenge)
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
