//! The request path, as the contract reads: extract → verify → parse →
//! decide → answer. Plain functions over a request's head and body; the host
//! shell only moves bytes in and out and carries out the verdict.

use crate::answer::{self, codes, Answer};
use crate::config::{Mode, Policy, TokenForwarding};
use crate::identity::{HeaderValueError, Identity};
use crate::jwks::KeySet;
use crate::lists::{ListKind, PendingLists};
use crate::mcp::{self, Body, BodyError};
use crate::policy::{self, Decision};
use crate::token::{self, BearerError, TokenError, TokenErrorKind};
use crate::token_cache::VerifiedTokenCache;

/// What the filter knows of a request before its body: method, path without
/// query, and the headers (names lower-case, as Envoy gives them).
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A body follows the headers (the headers did not end the stream).
    pub has_body: bool,
}

impl RequestHead {
    /// Splits `:path` into path and query, and keeps the headers.
    pub fn new(method: &str, path_and_query: &str, headers: Vec<(String, String)>) -> RequestHead {
        let path = path_and_query
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        RequestHead {
            method: method.to_string(),
            path,
            headers,
            has_body: false,
        }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Why a request was refused; names the counter and the log's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoToken,
    InvalidToken(TokenErrorKind),
    KeysUnavailable,
    Forbidden,
    InsufficientScope,
    BadRequest(BadRequestKind),
    TooLarge,
    UnsupportedMediaType,
}

/// The classes of malformed request, each with its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequestKind {
    Parse,
    Invalid,
    HeaderMismatch,
}

impl Reason {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::InvalidToken(_) => "invalid_token",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::Forbidden => "forbidden",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::BadRequest(_) => "bad_request",
            Reason::TooLarge => "too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
        }
    }
}

/// A refusal: the answer to send and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub answer: Answer,
    pub reason: Reason,
    /// The deciding rule, when a rule decided.
    pub rule: Option<String>,
    /// The JSON-RPC method and name, once the body was parsed (for the log).
    pub method: Option<String>,
    pub name: Option<String>,
}

impl Refusal {
    fn new(answer: Answer, reason: Reason) -> Refusal {
        Refusal {
            answer,
            reason,
            rule: None,
            method: None,
            name: None,
        }
    }
}

/// The outcome of looking at the request head.
#[derive(Debug)]
pub enum HeadVerdict {
    /// Answer locally and stop (metadata document, method not allowed).
    Respond(Answer),
    /// Let the request through untouched (public path, CORS preflight).
    PassUntouched,
    /// Refuse it.
    Refuse(Refusal),
    /// The token named a key the provider's current set lacks: the host may
    /// refetch that provider's keys once and ask again.
    UnknownKey { provider: usize, refusal: Refusal },
    /// Remote keys have not been fetched yet: the host waits for the fetch in
    /// flight, then asks again or answers 503.
    KeysPending { provider: usize },
    /// The token is good. `needs_body`: the rules must see the JSON-RPC body.
    Verified {
        identity: Identity,
        needs_body: bool,
        /// The token was found in the verified-token cache.
        cached: bool,
    },
}

/// The keys the host holds now, per provider, and their generations (a
/// generation changes whenever a provider's key set changes).
pub struct Keys<'a> {
    pub sets: Vec<Option<&'a KeySet>>,
    pub generations: &'a [u64],
}

/// Looks at the head: metadata, public paths, token.
pub fn check_head(
    policy: &Policy,
    head: &RequestHead,
    keys: &Keys,
    cache: &mut VerifiedTokenCache,
    now: u64,
) -> HeadVerdict {
    if policy.metadata_paths.contains(&head.path) {
        return match head.method.as_str() {
            "GET" | "HEAD" => HeadVerdict::Respond(answer::metadata_document(policy)),
            "OPTIONS" => HeadVerdict::PassUntouched,
            _ => HeadVerdict::Respond(answer::metadata_method_not_allowed()),
        };
    }
    if policy.public_paths.contains(&head.path) || is_cors_preflight(head) {
        return HeadVerdict::PassUntouched;
    }
    let token = match token::bearer_token(&head.header_values("authorization")) {
        Ok(token) => token,
        Err(BearerError::Missing) => {
            return HeadVerdict::Refuse(Refusal::new(
                answer::token_required(policy),
                Reason::NoToken,
            ))
        }
        Err(BearerError::Malformed) => {
            return HeadVerdict::Refuse(invalid_token(policy, TokenErrorKind::Malformed))
        }
    };
    let cached = cache.get(token, now, keys.generations);
    let from_cache = cached.is_some();
    let identity = match cached {
        Some(identity) => identity,
        None => match token::verify(token, &policy.providers, &keys.sets, now) {
            Ok(identity) => {
                if let Some(provider) = policy
                    .providers
                    .iter()
                    .position(|p| p.issuer == identity.issuer)
                {
                    let generation = keys.generations.get(provider).copied().unwrap_or(0);
                    cache.insert(token, provider, generation, identity.clone());
                }
                identity
            }
            Err(TokenError {
                kind: TokenErrorKind::KeysUnavailable,
                provider: Some(provider),
            }) => return HeadVerdict::KeysPending { provider },
            Err(TokenError {
                kind: TokenErrorKind::UnknownKey,
                provider: Some(provider),
            }) => {
                return HeadVerdict::UnknownKey {
                    provider,
                    refusal: invalid_token(policy, TokenErrorKind::UnknownKey),
                }
            }
            Err(e) => return HeadVerdict::Refuse(invalid_token(policy, e.kind)),
        },
    };
    HeadVerdict::Verified {
        identity,
        needs_body: head.method == "POST",
        cached: from_cache,
    }
}

/// 503 once the wait for keys is over and none arrived.
pub fn keys_unavailable() -> Refusal {
    Refusal::new(answer::keys_unavailable(5), Reason::KeysUnavailable)
}

fn invalid_token(policy: &Policy, kind: TokenErrorKind) -> Refusal {
    let description = TokenError {
        kind,
        provider: None,
    }
    .description();
    Refusal::new(
        answer::invalid_token(policy, description),
        Reason::InvalidToken(kind),
    )
}

/// An `OPTIONS` with `Origin` and `Access-Control-Request-Method` and no
/// body: browsers send these without credentials, so they cannot carry a
/// token. One with a body is not a preflight, whatever its headers say.
fn is_cors_preflight(head: &RequestHead) -> bool {
    head.method == "OPTIONS"
        && !head.has_body
        && head.header("origin").is_some()
        && head.header("access-control-request-method").is_some()
}

/// Before reading a POST body: is it declared JSON?
pub fn check_content_type(head: &RequestHead) -> Option<Refusal> {
    if mcp::is_json_content_type(head.header("content-type")) {
        None
    } else {
        Some(Refusal::new(
            answer::unsupported_media_type(),
            Reason::UnsupportedMediaType,
        ))
    }
}

/// A body over `max_body_bytes`.
pub fn too_large(policy: &Policy) -> Refusal {
    Refusal::new(answer::too_large(policy.max_body_bytes), Reason::TooLarge)
}

/// The verdict on a POSTed JSON-RPC body.
#[derive(Debug)]
pub struct Allowed {
    /// The parsed body, for logging and list filtering.
    pub body: Body,
    /// The deciding rule (None for a JSON-RPC response, which needs none).
    pub rule: Option<String>,
}

/// Parses the body, checks the MCP headers against it, and decides.
pub fn check_body(
    policy: &Policy,
    head: &RequestHead,
    identity: &Identity,
    bytes: &[u8],
) -> Result<Allowed, Box<Refusal>> {
    let body = mcp::parse_body(bytes).map_err(|e| {
        let kind = match e {
            BodyError::Parse(_) => BadRequestKind::Parse,
            BodyError::Invalid(_) => BadRequestKind::Invalid,
        };
        Box::new(Refusal::new(
            answer::bad_request(e.code(), e.message(), None),
            Reason::BadRequest(kind),
        ))
    })?;
    let id = body.answer_id().cloned();
    let (method, name) = first_call(&body);
    let refusal = |answer: Answer, reason: Reason, rule: Option<String>| {
        Box::new(Refusal {
            answer,
            reason,
            rule,
            method: method.clone(),
            name: name.clone(),
        })
    };
    let (mcp_method, mcp_name) = (
        head.header_values("mcp-method"),
        head.header_values("mcp-name"),
    );
    let checked = if mcp_method.len() > 1 || mcp_name.len() > 1 {
        // Every copy must equal the body, and a component reading another
        // copy (or the joined value) would act on a call never checked:
        // refuse repeats outright.
        Err(mcp::HeaderMismatch {
            reason: "Mcp-Method or Mcp-Name header appears more than once",
        })
    } else {
        mcp::check_mcp_headers(
            &body,
            mcp_method.first().copied(),
            mcp_name.first().copied(),
        )
    };
    if let Err(mismatch) = checked {
        return Err(refusal(
            answer::bad_request(
                codes::HEADER_MISMATCH,
                &format!("HeaderMismatch: {}", mismatch.reason),
                id.as_ref(),
            ),
            Reason::BadRequest(BadRequestKind::HeaderMismatch),
            None,
        ));
    }
    match policy::decide_body(&policy.rules, &body, identity) {
        Decision::Allow { rule } => Ok(Allowed { body, rule }),
        Decision::Forbidden { rule } => Err(refusal(
            answer::forbidden(id.as_ref()),
            Reason::Forbidden,
            rule,
        )),
        Decision::NeedScopes { rule, scopes } => Err(refusal(
            answer::insufficient_scope(policy, &scopes, id.as_ref()),
            Reason::InsufficientScope,
            Some(rule),
        )),
    }
}

/// The method and name of a body's first call, for logs.
pub fn first_call(body: &Body) -> (Option<String>, Option<String>) {
    body.messages()
        .iter()
        .find_map(|m| match m {
            mcp::Message::Call(call) => Some((Some(call.method.clone()), call.name.clone())),
            mcp::Message::Response { .. } => None,
        })
        .unwrap_or_default()
}

/// Header edits for an allowed request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// Removed first: client-sent identity headers, and the token if stripped.
    pub remove: Vec<String>,
    /// Then set from the verified identity.
    pub set: Vec<(String, String)>,
    /// Identity headers left out, with why, for the log.
    pub skipped: Vec<(String, &'static str)>,
}

/// What goes upstream with an allowed request.
pub fn upstream_headers(policy: &Policy, identity: &Identity) -> UpstreamHeaders {
    let mut edits = UpstreamHeaders::default();
    for header in &policy.identity_headers {
        edits.remove.push(header.name.clone());
        match identity.header_value(&header.source) {
            Ok(value) => edits.set.push((header.name.clone(), value)),
            Err(HeaderValueError::Absent) => {}
            Err(HeaderValueError::Unsafe) => edits.skipped.push((
                header.name.clone(),
                "claim is an object or not safe header text",
            )),
        }
    }
    if policy.token_forwarding == TokenForwarding::Strip {
        edits.remove.push("authorization".into());
    }
    edits
}

/// In audit mode a refusal is logged and counted but not enforced.
pub fn enforces(policy: &Policy) -> bool {
    policy.mode == Mode::Enforce
}

/// The list requests in an allowed body whose answers must be filtered
/// (empty when `filter_lists` is off).
pub fn pending_lists(policy: &Policy, body: &Body) -> PendingLists {
    if !policy.filter_lists {
        return PendingLists::new();
    }
    body.messages()
        .iter()
        .filter_map(|m| match m {
            mcp::Message::Call(call) => {
                let kind = ListKind::from_method(&call.method)?;
                Some((call.id.clone()?, kind))
            }
            mcp::Message::Response { .. } => None,
        })
        .collect()
}

/// Whether the caller may use a listed item: the same rule engine, asked
/// about the call the item stands for. A resource template is kept when its
/// `uriTemplate` text itself is allowed for `resources/read` (so `docs://*`
/// keeps `docs://{path}`); an item without the expected string is removed.
pub fn may_use(
    policy: &Policy,
    identity: &Identity,
    kind: ListKind,
    item: &serde_json::Value,
) -> bool {
    let (method, field) = match kind {
        ListKind::Tools => ("tools/call", "name"),
        ListKind::Prompts => ("prompts/get", "name"),
        ListKind::Resources => ("resources/read", "uri"),
        ListKind::ResourceTemplates => ("resources/read", "uriTemplate"),
    };
    match item.get(field).and_then(|v| v.as_str()) {
        Some(name) => policy::may_call(&policy.rules, method, name, identity),
        None => false,
    }
}
