//! The steps of the request path, as the README's "Request handling" reads:
//! route → token → body → decide → answer. Plain functions over a request's
//! head and body; the order they run in is the exchange's (`exchange`), the
//! only place that drives them.

use std::rc::Rc;

use crate::answer::{self, codes, Answer};
use crate::config::{Mode, Policy, TokenForwarding};
use crate::counters::Counter;
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
    /// The method as sent (HTTP/2 lets a client send `post`).
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A body (or trailers) follows the headers: they did not end the stream.
    pub has_body: bool,
}

/// The request methods the filter tells apart, whatever their case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Post,
    Get,
    Delete,
    Options,
    Head,
    Other,
}

impl RequestHead {
    /// Splits `:path` into path and query, and keeps the headers.
    pub fn new(method: &str, path_and_query: &str, headers: Vec<(String, String)>) -> RequestHead {
        let path = crate::uri::path_of(path_and_query).to_string();
        RequestHead {
            method: method.to_string(),
            path,
            headers,
            has_body: false,
        }
    }

    /// The method, recognised whatever its case: an upstream may read `post`
    /// as POST, so the filter must too.
    pub fn verb(&self) -> Verb {
        let m = self.method.as_str();
        if m.eq_ignore_ascii_case("POST") {
            Verb::Post
        } else if m.eq_ignore_ascii_case("GET") {
            Verb::Get
        } else if m.eq_ignore_ascii_case("DELETE") {
            Verb::Delete
        } else if m.eq_ignore_ascii_case("OPTIONS") {
            Verb::Options
        } else if m.eq_ignore_ascii_case("HEAD") {
            Verb::Head
        } else {
            Verb::Other
        }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header in any spelling an HTTP stack could read as
    /// `name` (case, `_` for `-`), in order.
    pub fn header_values_any_spelling(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| same_header(n, name))
            .map(|(_, v)| v.as_str())
            .collect()
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
    InvalidToken,
    KeysUnavailable,
    Forbidden,
    InsufficientScope,
    BadRequest,
    TooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    /// Introspection could not say whether the token is good (the
    /// authorization server down, slow or answering garbage): 503.
    IntrospectionUnavailable,
    /// No token for the upstream could be had by exchange: 502 or 503.
    UpstreamTokenUnavailable,
}

/// The classes of malformed request, each with its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequestKind {
    Parse,
    Invalid,
    HeaderMismatch,
    /// A body on a request that takes none (GET, DELETE, OPTIONS).
    UnexpectedBody,
}

impl BadRequestKind {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            BadRequestKind::Parse => "parse_error",
            BadRequestKind::Invalid => "invalid_request",
            BadRequestKind::HeaderMismatch => "header_mismatch",
            BadRequestKind::UnexpectedBody => "unexpected_body",
        }
    }
}

impl Reason {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::InvalidToken => "invalid_token",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::Forbidden => "forbidden",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::BadRequest => "bad_request",
            Reason::TooLarge => "too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
            Reason::UpstreamTokenUnavailable => "upstream_token_unavailable",
        }
    }
}

/// The finer class of a refusal, where its reason has classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Token(TokenErrorKind),
    Request(BadRequestKind),
}

impl Class {
    /// The class's stable name, as counters and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Token(kind) => kind.name(),
            Class::Request(kind) => kind.name(),
        }
    }
}

/// A refusal: the answer to send and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub answer: Answer,
    pub reason: Reason,
    pub class: Option<Class>,
    /// The deciding rule, when a rule decided.
    pub rule: Option<String>,
    /// The JSON-RPC method and name, once the body was parsed (for the log).
    pub method: Option<String>,
    pub name: Option<String>,
    /// What went wrong with a call to the authorization server (for the
    /// log; never a token or a secret).
    pub detail: Option<String>,
}

impl Refusal {
    fn new(answer: Answer, reason: Reason) -> Refusal {
        Refusal {
            answer,
            reason,
            class: None,
            rule: None,
            method: None,
            name: None,
            detail: None,
        }
    }

    fn with_class(mut self, class: Class) -> Refusal {
        self.class = Some(class);
        self
    }

    /// The counters this refusal moves.
    pub fn counters(&self) -> Vec<Counter> {
        let mut counters = vec![Counter::Denied(self.reason)];
        match self.class {
            Some(Class::Token(kind)) => counters.push(Counter::InvalidToken(kind)),
            Some(Class::Request(kind)) => counters.push(Counter::BadRequest(kind)),
            None => {}
        }
        counters
    }
}

/// What a request is, from its head alone.
#[derive(Debug)]
pub enum Route {
    /// A metadata path: the filter answers it for every method, and nothing
    /// of it is ever forwarded.
    Metadata(Answer),
    /// Needs no token: a public path, or a CORS preflight (browsers send
    /// those without credentials).
    Open,
    /// Refused from the head alone, before any token is looked at.
    Refuse(Refusal),
    /// The MCP endpoint: a token is needed, then the body is read to its end.
    Endpoint(Expect),
}

/// What the body of a request to the MCP endpoint must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A POST: one JSON-RPC message or a batch, checked against the rules.
    JsonRpc,
    /// A GET (stream) or DELETE (session end): no body at all.
    Nothing,
}

/// Sorts a request by its head. Every path but the metadata paths and the
/// public paths is the MCP endpoint: a route that rewrites paths cannot move
/// a request out of the filter's sight.
pub fn route(policy: &Policy, head: &RequestHead) -> Route {
    let verb = head.verb();
    if policy.metadata_paths.contains(&head.path) {
        return Route::Metadata(match verb {
            Verb::Get | Verb::Head => answer::metadata_document(policy),
            Verb::Options => answer::metadata_preflight(),
            _ => answer::metadata_method_not_allowed(),
        });
    }
    if policy.public_paths.contains(&head.path) || is_cors_preflight(head) {
        return Route::Open;
    }
    match verb {
        Verb::Post => Route::Endpoint(Expect::JsonRpc),
        Verb::Get | Verb::Delete => Route::Endpoint(Expect::Nothing),
        // An OPTIONS that is no preflight: with a body it smuggles one past
        // the rules; without, the MCP transport has no use for it.
        Verb::Options if head.has_body => Route::Refuse(unexpected_body()),
        Verb::Options | Verb::Head | Verb::Other => Route::Refuse(Refusal::new(
            answer::method_not_allowed(),
            Reason::MethodNotAllowed,
        )),
    }
}

/// 400 for a body on a request that takes none.
pub fn unexpected_body() -> Refusal {
    Refusal::new(
        answer::bad_request(codes::INVALID_REQUEST, "This request takes no body", None),
        Reason::BadRequest,
    )
    .with_class(Class::Request(BadRequestKind::UnexpectedBody))
}

/// An `OPTIONS` with `Origin` and `Access-Control-Request-Method` and no
/// body. One with a body is not a preflight, whatever its headers say.
fn is_cors_preflight(head: &RequestHead) -> bool {
    head.verb() == Verb::Options
        && !head.has_body
        && head.header("origin").is_some()
        && head.header("access-control-request-method").is_some()
}

/// The keys the host holds now, per provider, and their generations (a
/// generation changes whenever a provider's key set changes).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pub sets: Vec<Option<Rc<KeySet>>>,
    pub generations: Vec<u64>,
}

/// The outcome of checking a request's token.
#[derive(Debug)]
pub enum TokenVerdict {
    /// The token is good.
    Verified {
        identity: Identity,
        /// It was found in the verified-token cache.
        cached: bool,
    },
    /// Refuse the request.
    Refuse(Refusal),
    /// The token named a key the provider's current set lacks: its keys may
    /// be refetched once, then the token is checked again.
    UnknownKey { provider: usize, refusal: Refusal },
    /// The provider's remote keys have never been fetched: wait for them,
    /// then check again or answer 503.
    KeysPending { provider: usize },
    /// The token is the provider's to introspect: an opaque token (the one
    /// provider with `introspection`), or a JWT of an issuer without keys.
    Introspect { provider: usize },
}

/// Checks the bearer token: exactly one `Authorization: Bearer` header, a JWT
/// that verifies with the provider's keys (the verified-token cache first).
pub fn check_token(
    policy: &Policy,
    head: &RequestHead,
    keys: &KeyRing,
    cache: &mut VerifiedTokenCache,
    now_s: u64,
) -> TokenVerdict {
    let token = match token::bearer_token(&head.header_values("authorization")) {
        Ok(token) => token,
        Err(BearerError::Missing) => {
            return TokenVerdict::Refuse(Refusal::new(
                answer::token_required(policy),
                Reason::NoToken,
            ))
        }
        Err(BearerError::Malformed) => {
            return TokenVerdict::Refuse(invalid_token(policy, TokenErrorKind::Malformed))
        }
    };
    if let Some(provider) = introspecting_provider(policy, token) {
        return TokenVerdict::Introspect { provider };
    }
    if let Some(identity) = cache.get(token, now_s, &keys.generations) {
        return TokenVerdict::Verified {
            identity,
            cached: true,
        };
    }
    let sets: Vec<Option<&KeySet>> = keys.sets.iter().map(Option::as_deref).collect();
    match token::verify(token, &policy.providers, &sets, now_s) {
        Ok(identity) => {
            if let Some(provider) = policy
                .providers
                .iter()
                .position(|p| p.issuer == identity.issuer)
            {
                let generation = keys.generations.get(provider).copied().unwrap_or(0);
                cache.insert(token, provider, generation, identity.clone());
            }
            TokenVerdict::Verified {
                identity,
                cached: false,
            }
        }
        Err(TokenError {
            kind: TokenErrorKind::KeysUnavailable,
            provider: Some(provider),
        }) => TokenVerdict::KeysPending { provider },
        Err(TokenError {
            kind: TokenErrorKind::UnknownKey,
            provider: Some(provider),
        }) => TokenVerdict::UnknownKey {
            provider,
            refusal: invalid_token(policy, TokenErrorKind::UnknownKey),
        },
        Err(e) => TokenVerdict::Refuse(invalid_token(policy, e.kind)),
    }
}

/// The provider that introspects `token`, if it is one to introspect. A
/// JWT of an issuer with keys keeps the local path; a JWT of an unknown
/// issuer is refused locally, never sent to an authorization server.
fn introspecting_provider(policy: &Policy, token: &str) -> Option<usize> {
    // An oversized token is refused as malformed by verification, before
    // any authorization server sees it.
    if token.len() > token::MAX_TOKEN_BYTES
        || !policy.providers.iter().any(|p| p.introspection.is_some())
    {
        return None;
    }
    match token::shape(token) {
        token::Shape::Opaque => policy
            .providers
            .iter()
            .position(|p| p.introspection.is_some()),
        token::Shape::Jwt { issuer } => {
            let index = policy
                .providers
                .iter()
                .position(|p| Some(p.issuer.as_str()) == issuer.as_deref())?;
            let provider = &policy.providers[index];
            (provider.introspection.is_some() && provider.jwks.is_none()).then_some(index)
        }
    }
}

/// 503: introspection could not tell whether the token is good.
pub fn introspection_unavailable(detail: String) -> Refusal {
    let mut refusal = Refusal::new(
        answer::authorization_server_unavailable(answer::RETRY_AFTER_SECONDS),
        Reason::IntrospectionUnavailable,
    );
    refusal.detail = Some(detail);
    refusal
}

/// 502 (the authorization server refused, or issued something unusable)
/// or 503 with `Retry-After` (it could not be reached): no token for the
/// upstream, so nothing is forwarded.
pub fn upstream_token_unavailable(unreachable: bool, detail: String) -> Refusal {
    let mut refusal = Refusal::new(
        answer::upstream_token_unavailable(unreachable.then_some(answer::RETRY_AFTER_SECONDS)),
        Reason::UpstreamTokenUnavailable,
    );
    refusal.detail = Some(detail);
    refusal
}

/// 401 for a token introspection refused.
pub fn token_refused(policy: &Policy, kind: TokenErrorKind) -> Refusal {
    invalid_token(policy, kind)
}

/// 503 once the wait for keys is over and none arrived.
pub fn keys_unavailable() -> Refusal {
    Refusal::new(
        answer::keys_unavailable(answer::RETRY_AFTER_SECONDS),
        Reason::KeysUnavailable,
    )
}

fn invalid_token(policy: &Policy, kind: TokenErrorKind) -> Refusal {
    Refusal::new(
        answer::invalid_token(policy, kind.description()),
        Reason::InvalidToken,
    )
    .with_class(Class::Token(kind))
}

/// Before reading a POST body: is it declared JSON?
pub fn check_content_type(head: &RequestHead) -> Option<Refusal> {
    let types = head.header_values("content-type");
    // Two Content-Type headers: a server may read either; refuse both.
    if types.len() == 1 && mcp::is_json_content_type(types.first().copied()) {
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
        Box::new(
            Refusal::new(
                answer::bad_request(e.code(), e.message(), None),
                Reason::BadRequest,
            )
            .with_class(Class::Request(kind)),
        )
    })?;
    let id = body.answer_id().cloned();
    let (method, name) = first_call(&body);
    let refusal = |answer: Answer, reason: Reason, rule: Option<String>| Refusal {
        answer,
        reason,
        class: None,
        rule,
        method: method.clone(),
        name: name.clone(),
        detail: None,
    };
    // `Mcp_Name` is `Mcp-Name` to a CGI-style server: every spelling counts.
    let (mcp_method, mcp_name) = (
        head.header_values_any_spelling("mcp-method"),
        head.header_values_any_spelling("mcp-name"),
    );
    let checked = if mcp_method.len() > 1 || mcp_name.len() > 1 {
        // Every copy must equal the body, and a component reading another
        // copy (or the joined value) would act on a call never checked:
        // refuse repeats (in any spelling) outright.
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
        return Err(Box::new(
            refusal(
                answer::bad_request(
                    codes::HEADER_MISMATCH,
                    &format!("HeaderMismatch: {}", mismatch.reason),
                    id.as_ref(),
                ),
                Reason::BadRequest,
                None,
            )
            .with_class(Class::Request(BadRequestKind::HeaderMismatch)),
        ));
    }
    match policy::decide_body(&policy.rules, &body, identity) {
        Decision::Allow { rule } => Ok(Allowed { body, rule }),
        Decision::Forbidden { rule } => Err(Box::new(refusal(
            answer::forbidden(id.as_ref()),
            Reason::Forbidden,
            rule,
        ))),
        Decision::NeedScopes { rule, scopes } => Err(Box::new(refusal(
            answer::insufficient_scope(policy, &scopes, id.as_ref()),
            Reason::InsufficientScope,
            Some(rule),
        ))),
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

/// Header edits on the way upstream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UpstreamHeaders {
    /// Removed first: every client header an HTTP stack could read as an
    /// identity header, the token if stripped, `accept-encoding`.
    pub remove: Vec<String>,
    /// Then set from the verified identity.
    pub set: Vec<(String, String)>,
    /// Identity headers left out, with why, for the log.
    pub skipped: Vec<(String, &'static str)>,
}

/// What goes upstream with a request: the client's copies of identity
/// headers removed (in any spelling: case, `_` for `-`), the token unless
/// forwarded, and — with a verified identity — the identity headers set and
/// `accept-encoding` removed, so the upstream answers in plain bytes the
/// filter can read.
pub fn upstream_headers(
    policy: &Policy,
    head: &RequestHead,
    identity: Option<&Identity>,
) -> UpstreamHeaders {
    let mut edits = UpstreamHeaders::default();
    let spoofed = |name: &str| {
        policy
            .identity_headers
            .iter()
            .any(|h| same_header(&h.name, name))
    };
    for header in &policy.identity_headers {
        edits.remove.push(header.name.clone());
    }
    for (name, _) in &head.headers {
        if spoofed(name) && !edits.remove.contains(name) {
            edits.remove.push(name.clone());
        }
    }
    if policy.token_forwarding == TokenForwarding::Strip {
        edits.remove.push("authorization".into());
    }
    // The header the exchanged token goes in: never the client's copy, in
    // any spelling.
    if let Some(upstream) = &policy.upstream_token {
        for (name, _) in &head.headers {
            if same_header(&upstream.header, name) && !edits.remove.contains(name) {
                edits.remove.push(name.clone());
            }
        }
    }
    let Some(identity) = identity else {
        return edits;
    };
    edits.remove.push("accept-encoding".into());
    for header in &policy.identity_headers {
        match identity.header_value(&header.source) {
            Ok(value) => {
                if value.dropped > 0 {
                    edits.skipped.push((
                        header.name.clone(),
                        "list values holding a space, comma, quote or backslash left out",
                    ));
                }
                edits.set.push((header.name.clone(), value.text));
            }
            Err(HeaderValueError::Absent) => {}
            Err(HeaderValueError::Unsafe) => edits.skipped.push((
                header.name.clone(),
                "claim is an object or not safe header text",
            )),
        }
    }
    edits
}

/// The request trailers that may not go upstream. The MCP endpoint takes
/// none (MCP carries nothing in trailers, so none can smuggle a token, an
/// identity or a routing header past the checks); elsewhere the token (unless
/// forwarded) and every spelling of an identity header are removed, as from
/// the headers.
pub fn trailers_to_remove(policy: &Policy, endpoint: bool, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            endpoint
                || policy
                    .identity_headers
                    .iter()
                    .any(|h| same_header(&h.name, name))
                || (policy.token_forwarding == TokenForwarding::Strip
                    && name.eq_ignore_ascii_case("authorization"))
                || policy
                    .upstream_token
                    .as_ref()
                    .is_some_and(|u| same_header(&u.header, name))
        })
        .cloned()
        .collect()
}

/// Whether two header names are the same to some HTTP stack: case and `_`
/// for `-` aside (CGI-style servers fold `x_mcp_roles` into `X-Mcp-Roles`).
fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}

/// In audit mode a refusal is logged and counted but not enforced.
pub fn enforces(policy: &Policy) -> bool {
    policy.mode == Mode::Enforce
}

/// The list requests in an allowed body whose answers must be filtered.
pub fn pending_lists(body: &Body) -> PendingLists {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_match_across_case_and_underscores() {
        assert!(same_header("x-mcp-roles", "X_MCP_ROLES"));
        assert!(same_header("x-mcp-roles", "x_mcp-roles"));
        assert!(!same_header("x-mcp-roles", "x-mcp-role"));
        assert!(!same_header("x-mcp-roles", "x.mcp.roles"));
    }

    #[test]
    fn methods_are_recognised_whatever_their_case() {
        let verb = |m: &str| RequestHead::new(m, "/mcp", Vec::new()).verb();
        assert_eq!(verb("post"), Verb::Post);
        assert_eq!(verb("Post"), Verb::Post);
        assert_eq!(verb("gEt"), Verb::Get);
        assert_eq!(verb("delete"), Verb::Delete);
        assert_eq!(verb("options"), Verb::Options);
        assert_eq!(verb("PUT"), Verb::Other);
        assert_eq!(verb("POSTX"), Verb::Other);
    }
}
