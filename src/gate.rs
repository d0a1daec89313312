//! The steps of the request path, as the README's "Request handling" reads:
//! route → token → body → decide → answer. Plain functions over a request's
//! head and body; the order they run in is the exchange's (`exchange`), the
//! only place that drives them.

use std::rc::Rc;

use crate::answer::{self, codes, Answer};
use crate::authorization_server::introspection;
use crate::config::{Mode, Policy, Provider, TokenForwarding};
use crate::counters::Counter;
use crate::dpop::{self, Mode as DpopMode, ProofError, ProofErrorKind, Scheme};
use crate::identity::{HeaderValueError, Identity};
use crate::jwks::KeySet;
use crate::lists::{ListKind, PendingLists};
use crate::mcp::param_headers::{self, ParamHeader};
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
    /// Splits `:path` into path and query, and keeps the headers, their
    /// values without leading or trailing spaces and tabs: they are no part
    /// of a field value (RFC 9110, section 5.5), and an HTTP/1.1 hop drops
    /// them, so a server reads `MCP-Protocol-Version: " 2026-07-28"` (which
    /// HTTP/2 carries as it is) as `2026-07-28`; the filter must too.
    pub fn new(
        method: &str,
        path_and_query: &str,
        mut headers: Vec<(String, String)>,
    ) -> RequestHead {
        for (_, value) in &mut headers {
            let trimmed = value.trim_matches([' ', '\t']);
            if trimmed.len() != value.len() {
                *value = trimmed.to_string();
            }
        }
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
    /// A DPoP proof that failed its checks.
    InvalidDpopProof,
    /// A DPoP proof without a fresh server nonce.
    UseDpopNonce,
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
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// The finer class of a refusal, where its reason has classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Token(TokenErrorKind),
    Request(BadRequestKind),
    Proof(ProofErrorKind),
}

impl Class {
    /// The class's stable name, as counters and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Token(kind) => kind.name(),
            Class::Request(kind) => kind.name(),
            Class::Proof(kind) => kind.name(),
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
    /// Rules whose condition could not be evaluated on the way.
    pub condition_errors: Vec<String>,
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
            condition_errors: Vec::new(),
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
            Some(Class::Proof(kind)) => counters.push(Counter::InvalidDpopProof(kind)),
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
    /// The token is good (and so is its DPoP proof, when it is bound).
    Verified {
        identity: Rc<Identity>,
        /// It was found in the verified-token cache.
        cached: bool,
        /// The DPoP proof that came with a bound token: its `jti` is still
        /// to be checked against replay.
        proof: Option<dpop::Accepted>,
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

/// Checks the access token: exactly one `Authorization: Bearer` or `DPoP`
/// header, a JWT that verifies with the provider's keys (the verified-token
/// cache first), presented with a scheme its provider takes; and for a
/// token bound to a key, the request's DPoP proof, on every request (a
/// cached token needs a proof as much as a new one).
pub fn check_token(
    policy: &Policy,
    head: &RequestHead,
    keys: &KeyRing,
    cache: &mut VerifiedTokenCache,
    now_s: u64,
) -> TokenVerdict {
    let malformed = || {
        TokenVerdict::Refuse(invalid_token(
            policy,
            Scheme::Bearer,
            TokenErrorKind::Malformed,
        ))
    };
    let (scheme, token) = match token::presented(&head.header_values("authorization")) {
        Ok(credentials) => credentials,
        Err(BearerError::Missing) => {
            return TokenVerdict::Refuse(Refusal::new(
                answer::token_required(policy),
                Reason::NoToken,
            ))
        }
        Err(BearerError::Malformed) => return malformed(),
    };
    if let Some(provider) = introspecting_provider(policy, token) {
        if !token::is_b64token(token) {
            return malformed();
        }
        // The scheme is checked before any call: whether the token is bound
        // to a key is only known from the answer (`introspected`).
        return match (scheme, policy.providers[provider].dpop.mode) {
            (Scheme::DPoP, DpopMode::Off) | (Scheme::Bearer, DpopMode::Required) => {
                TokenVerdict::Refuse(invalid_token(policy, scheme, TokenErrorKind::Scheme))
            }
            _ => TokenVerdict::Introspect { provider },
        };
    }
    let (identity, cached) = match cache.get(token, now_s, &keys.generations) {
        Some(identity) => (identity, true),
        // Only a token that verified is cached, and none verifies outside
        // the b64token alphabet: the alphabet is checked on a miss only.
        None if !token::is_b64token(token) => return malformed(),
        None => match verify(policy, token, scheme, keys, cache, now_s) {
            Ok(identity) => (identity, false),
            Err(verdict) => return *verdict,
        },
    };
    let Some(provider) = policy
        .providers
        .iter()
        .find(|p| p.issuer == identity.issuer)
    else {
        return TokenVerdict::Refuse(invalid_token(policy, scheme, TokenErrorKind::Issuer));
    };
    match check_binding(policy, head, (scheme, token), provider, &identity, now_s) {
        Ok(proof) => TokenVerdict::Verified {
            identity,
            cached,
            proof,
        },
        Err(refusal) => TokenVerdict::Refuse(*refusal),
    }
}

/// The scheme a token came with against its binding and its provider's
/// DPoP mode; for a token bound to a key (`cnf.jkt`, from the JWT or the
/// introspection answer), the request's DPoP proof.
fn check_binding(
    policy: &Policy,
    head: &RequestHead,
    (scheme, token): (Scheme, &str),
    provider: &Provider,
    identity: &Identity,
    now_s: u64,
) -> Result<Option<dpop::Accepted>, Box<Refusal>> {
    let refuse = |kind| Err(Box::new(invalid_token(policy, scheme, kind)));
    let config = &provider.dpop;
    match (scheme, identity.jkt.as_deref(), config.mode) {
        // A bound token without its proof: refused, whatever the mode.
        (Scheme::Bearer, Some(_), _) => refuse(TokenErrorKind::DpopBound),
        (Scheme::Bearer, None, DpopMode::Required) => refuse(TokenErrorKind::Scheme),
        (Scheme::Bearer, None, _) => Ok(None),
        (Scheme::DPoP, _, DpopMode::Off) => refuse(TokenErrorKind::Scheme),
        (Scheme::DPoP, None, _) => refuse(TokenErrorKind::KeyBinding),
        (Scheme::DPoP, Some(jkt), _) => {
            let origin = crate::uri::HttpUri::parse(&policy.resource)
                .map(|u| u.origin())
                .unwrap_or_default();
            let request = dpop::proof::Request {
                method: &head.method,
                path: &head.path,
                resource_origin: &origin,
                token,
                jkt,
                now_s,
            };
            dpop::proof::check(&head.header_values("dpop"), &request, config)
                .map(Some)
                .map_err(|e| Box::new(proof_refusal(policy, e)))
        }
    }
}

/// The caller, from claims introspection accepted (checked again at
/// `now_s`: a shared answer is checked each time it is used), with the
/// scopes its scopes imply; and, for a token bound to a key, the request's
/// DPoP proof, as for a JWT.
pub fn introspected(
    policy: &Policy,
    head: &RequestHead,
    provider: usize,
    claims: &serde_json::Map<String, serde_json::Value>,
    now_s: u64,
) -> Result<(Identity, Option<dpop::Accepted>), Box<Refusal>> {
    // The token was taken from this very header before the call was made.
    let credentials = token::credentials(&head.header_values("authorization")).map_err(|_| {
        Box::new(invalid_token(
            policy,
            Scheme::Bearer,
            TokenErrorKind::Malformed,
        ))
    })?;
    let provider = &policy.providers[provider];
    let mut identity = introspection::identity(claims, provider, now_s)
        .map_err(|kind| Box::new(invalid_token(policy, credentials.0, kind)))?;
    identity.implied_scopes = policy.scope_implies.implied_by(&identity.scopes);
    let proof = check_binding(policy, head, credentials, provider, &identity, now_s)?;
    Ok((identity, proof))
}

/// Verifies a token the cache did not hold, and caches it.
fn verify(
    policy: &Policy,
    token: &str,
    scheme: Scheme,
    keys: &KeyRing,
    cache: &mut VerifiedTokenCache,
    now_s: u64,
) -> Result<Rc<Identity>, Box<TokenVerdict>> {
    let sets: Vec<Option<&KeySet>> = keys.sets.iter().map(Option::as_deref).collect();
    match token::verify(token, &policy.providers, &sets, now_s) {
        Ok(mut identity) => {
            identity.implied_scopes = policy.scope_implies.implied_by(&identity.scopes);
            let identity = Rc::new(identity);
            if let Some(provider) = policy
                .providers
                .iter()
                .position(|p| p.issuer == identity.issuer)
            {
                let generation = keys.generations.get(provider).copied().unwrap_or(0);
                cache.insert(token, provider, generation, Rc::clone(&identity));
            }
            Ok(identity)
        }
        Err(TokenError {
            kind: TokenErrorKind::KeysUnavailable,
            provider: Some(provider),
        }) => Err(Box::new(TokenVerdict::KeysPending { provider })),
        Err(TokenError {
            kind: TokenErrorKind::UnknownKey,
            provider: Some(provider),
        }) => Err(Box::new(TokenVerdict::UnknownKey {
            provider,
            refusal: invalid_token(policy, scheme, TokenErrorKind::UnknownKey),
        })),
        Err(e) => Err(Box::new(TokenVerdict::Refuse(invalid_token(
            policy, scheme, e.kind,
        )))),
    }
}

/// The refusal of a DPoP proof: `invalid_dpop_proof`, `invalid_token` when
/// the proof's key is not the token's, `use_dpop_nonce` with a new nonce.
pub fn proof_refusal(policy: &Policy, error: ProofError) -> Refusal {
    match (error.kind, error.nonce) {
        (ProofErrorKind::KeyBinding, _) => {
            invalid_token(policy, Scheme::DPoP, TokenErrorKind::KeyBinding)
        }
        (ProofErrorKind::Nonce, Some(nonce)) => {
            Refusal::new(answer::use_dpop_nonce(policy, &nonce), Reason::UseDpopNonce)
        }
        (kind, _) => Refusal::new(
            answer::invalid_dpop_proof(policy, kind.description()),
            Reason::InvalidDpopProof,
        )
        .with_class(Class::Proof(kind)),
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

/// 401 for a token introspection refused (the challenge on the scheme the
/// token came with).
pub fn token_refused(policy: &Policy, head: &RequestHead, kind: TokenErrorKind) -> Refusal {
    let scheme = token::credentials(&head.header_values("authorization"))
        .map_or(Scheme::Bearer, |(scheme, _)| scheme);
    invalid_token(policy, scheme, kind)
}

/// 503 once the wait for keys is over and none arrived.
pub fn keys_unavailable() -> Refusal {
    Refusal::new(
        answer::keys_unavailable(answer::RETRY_AFTER_SECONDS),
        Reason::KeysUnavailable,
    )
}

fn invalid_token(policy: &Policy, scheme: Scheme, kind: TokenErrorKind) -> Refusal {
    Refusal::new(
        answer::invalid_token(policy, scheme, kind.description()),
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
    /// Rules whose condition could not be evaluated on the way.
    pub condition_errors: Vec<String>,
}

/// What a tool's `Mcp-Param-*` headers stand for, as far as the filter
/// learned it from `tools/list` answers (`None`: never seen).
pub type ToolHeaders<'a> = &'a dyn Fn(&str) -> Option<Vec<ParamHeader>>;

/// Parses the body, checks the MCP headers against it, and decides.
pub fn check_body(
    policy: &Policy,
    head: &RequestHead,
    identity: &Identity,
    bytes: &[u8],
    now_s: u64,
    tool_headers: ToolHeaders,
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
        condition_errors: Vec::new(),
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
        let modern = head
            .header_values_any_spelling("mcp-protocol-version")
            .contains(&MODERN_PROTOCOL);
        mcp::check_mcp_headers(
            &body,
            mcp_method.first().copied(),
            mcp_name.first().copied(),
            modern,
        )
        .and_then(|()| check_param_headers(&body, head, modern, tool_headers))
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
    let mut condition_errors = Vec::new();
    let decision = policy::decide_body(
        &policy.rules,
        &body,
        identity,
        &head.headers,
        now_s,
        &mut condition_errors,
    );
    let refused = |answer, reason, rule| {
        let mut refused = refusal(answer, reason, rule);
        refused.condition_errors = condition_errors.clone();
        Err(Box::new(refused))
    };
    match decision {
        Decision::Allow { rule } => Ok(Allowed {
            body,
            rule,
            condition_errors,
        }),
        Decision::Forbidden { rule } => {
            refused(answer::forbidden(id.as_ref()), Reason::Forbidden, rule)
        }
        Decision::NeedScopes { rule, scopes } => refused(
            // A token bound to a key only ever comes with the DPoP scheme.
            answer::insufficient_scope(
                policy,
                if identity.jkt.is_some() {
                    Scheme::DPoP
                } else {
                    Scheme::Bearer
                },
                &scopes,
                id.as_ref(),
            ),
            Reason::InsufficientScope,
            Some(rule),
        ),
    }
}

/// The protocol revision whose requests must carry their routing headers.
const MODERN_PROTOCOL: &str = "2026-07-28";

/// Each `tools/call`'s `Mcp-Param-*` headers, for tools whose declarations
/// are known.
fn check_param_headers(
    body: &Body,
    head: &RequestHead,
    modern: bool,
    tool_headers: ToolHeaders,
) -> Result<(), mcp::HeaderMismatch> {
    for message in body.messages() {
        let mcp::Message::Call(call) = message else {
            continue;
        };
        let (true, Some(tool)) = (call.method == "tools/call", &call.name) else {
            continue;
        };
        if let Some(declared) = tool_headers(tool) {
            param_headers::check(&declared, call.arguments.as_ref(), &head.headers, modern)?;
        }
    }
    Ok(())
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
    // A DPoP proof is for this hop alone: never forwarded.
    if head
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("dpop"))
    {
        edits.remove.push("dpop".into());
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
/// forwarded), a DPoP proof and every spelling of an identity header are
/// removed, as from the headers.
pub fn trailers_to_remove(policy: &Policy, endpoint: bool, names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            endpoint
                || name.eq_ignore_ascii_case("dpop")
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

/// Whether the caller may use a listed item, named `name` (its `name`,
/// `uri` or `uriTemplate`, per [`ListKind::item_key`]): the same rule
/// engine, asked about the call the item stands for. A resource template is
/// kept when its `uriTemplate` text itself is allowed for `resources/read`
/// (so `docs://*` keeps `docs://{path}`). The rules whose condition could
/// not be evaluated go to `errors`.
pub fn may_use(
    policy: &Policy,
    identity: &Identity,
    headers: &[(String, String)],
    now_s: u64,
    kind: ListKind,
    name: &str,
    errors: &mut Vec<String>,
) -> bool {
    let method = match kind {
        ListKind::Tools => "tools/call",
        ListKind::Prompts => "prompts/get",
        ListKind::Resources | ListKind::ResourceTemplates => "resources/read",
    };
    policy::may_call(
        &policy.rules,
        method,
        name,
        identity,
        headers,
        now_s,
        errors,
    )
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
    fn header_values_are_read_without_surrounding_whitespace() {
        let head = RequestHead::new(
            "POST",
            "/mcp",
            vec![
                ("mcp-protocol-version".into(), " 2026-07-28\t".into()),
                ("mcp-name".into(), "a b".into()),
                ("x-empty".into(), " \t ".into()),
            ],
        );
        assert_eq!(head.header("mcp-protocol-version"), Some("2026-07-28"));
        assert_eq!(head.header("mcp-name"), Some("a b"));
        assert_eq!(head.header("x-empty"), Some(""));
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

    // --- the token step with DPoP ---

    use crate::dpop::proof::tests::{claims as proof_claims, ClientKey};
    use crate::dpop::proof::token_hash;
    use crate::token::tests::{claims, key_sets, provider, sign, Signer, ISS, NOW};
    use serde_json::json;

    fn policy_with(mode: DpopMode) -> Policy {
        let mut policy = Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "scopes_supported": ["mcp:read"],
            "providers": [{"issuer": ISS, "jwks": {"remote": {"cluster": "idp"}}}],
            "rules": [{"effect": "allow", "methods": ["*"]}]
        }))
        .expect("policy");
        let mut p = provider(ISS);
        p.dpop.mode = mode;
        policy.providers = vec![p];
        policy
    }

    fn ring() -> KeyRing {
        KeyRing {
            sets: vec![Some(Rc::new(key_sets().remove(0)))],
            generations: vec![1],
        }
    }

    fn bound_token(key: &ClientKey) -> String {
        let mut c = claims();
        c["cnf"] = json!({"jkt": key.jkt()});
        sign(Signer::RS256, Some("rsa1"), c)
    }

    fn proof(key: &ClientKey, token: &str, jti: &str) -> String {
        let mut c = proof_claims(jti);
        c["ath"] = json!(token_hash(token));
        key.sign(&key.header(), &c)
    }

    fn head(authorization: &str, proofs: &[&str]) -> RequestHead {
        let mut headers = vec![("authorization".to_string(), authorization.to_string())];
        headers.extend(proofs.iter().map(|p| ("dpop".to_string(), p.to_string())));
        RequestHead::new("POST", "/mcp", headers)
    }

    fn outcome(
        policy: &Policy,
        head: &RequestHead,
        cache: &mut VerifiedTokenCache,
    ) -> Result<bool, Box<Refusal>> {
        match check_token(policy, head, &ring(), cache, NOW) {
            TokenVerdict::Verified { proof, .. } => Ok(proof.is_some()),
            TokenVerdict::Refuse(refusal) => Err(Box::new(refusal)),
            other => panic!("{other:?}"),
        }
    }

    fn challenges(refusal: &Refusal) -> Vec<&str> {
        refusal
            .answer
            .headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn a_token_outside_the_b64token_alphabet_is_malformed_cached_token_or_not() {
        let policy = policy_with(DpopMode::Off);
        let mut cache = VerifiedTokenCache::new(8);
        let token = sign(Signer::RS256, Some("rsa1"), claims());
        let auth = format!("Bearer {token}");
        assert!(matches!(
            outcome(&policy, &head(&auth, &[]), &mut cache),
            Ok(false)
        ));
        assert_eq!(cache.len(), 1);
        // The good token is cached; the same bytes with one character
        // outside the alphabet are another token, and malformed.
        for bad in [
            format!("{token}!"),
            format!("{token}\u{e9}"),
            format!("!{token}"),
            format!("{token}=="),
            format!("{token}=a"),
        ] {
            let refused =
                outcome(&policy, &head(&format!("Bearer {bad}"), &[]), &mut cache).expect_err(&bad);
            assert_eq!(
                refused.class,
                Some(Class::Token(TokenErrorKind::Malformed)),
                "{bad}"
            );
        }
        assert!(matches!(
            outcome(&policy, &head(&auth, &[]), &mut cache),
            Ok(false)
        ));
    }

    #[test]
    fn a_bound_token_needs_its_proof_on_every_request_cached_or_not() {
        let key = ClientKey::es256(21);
        let token = bound_token(&key);
        let policy = policy_with(DpopMode::Allowed);
        let mut cache = VerifiedTokenCache::new(8);
        let auth = format!("DPoP {token}");
        assert!(matches!(
            outcome(
                &policy,
                &head(&auth, &[&proof(&key, &token, "a")]),
                &mut cache
            ),
            Ok(true)
        ));
        // Now cached: still no entry without a proof, nor with a bad one.
        let refused = outcome(&policy, &head(&auth, &[]), &mut cache).expect_err("no proof");
        assert_eq!(refused.class, Some(Class::Proof(ProofErrorKind::Missing)));
        assert_eq!(
            challenges(&refused),
            vec![
                "DPoP error=\"invalid_dpop_proof\", error_description=\"DPoP proof missing\", algs=\"RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 EdDSA\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\"",
                "Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\"",
            ]
        );
        let other = ClientKey::es256(22);
        let refused = outcome(
            &policy,
            &head(&auth, &[&proof(&other, &token, "b")]),
            &mut cache,
        )
        .expect_err("another key");
        assert_eq!(
            refused.class,
            Some(Class::Token(TokenErrorKind::KeyBinding))
        );
        assert!(challenges(&refused)[0].starts_with("DPoP error=\"invalid_token\""));
        assert!(matches!(
            outcome(
                &policy,
                &head(&auth, &[&proof(&key, &token, "c")]),
                &mut cache
            ),
            Ok(true)
        ));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_bound_token_as_bearer_is_refused_in_every_mode() {
        let key = ClientKey::es256(23);
        let token = bound_token(&key);
        for mode in [DpopMode::Off, DpopMode::Allowed, DpopMode::Required] {
            let policy = policy_with(mode);
            let mut cache = VerifiedTokenCache::new(8);
            // Even with a valid proof alongside.
            let h = head(&format!("Bearer {token}"), &[&proof(&key, &token, "a")]);
            let refused = outcome(&policy, &h, &mut cache).expect_err("downgrade");
            assert_eq!(
                refused.class,
                Some(Class::Token(TokenErrorKind::DpopBound)),
                "{mode:?}"
            );
            // The error goes on the scheme the client used, where it is
            // taken; `required` takes only DPoP.
            let expected = if mode == DpopMode::Required {
                "DPoP"
            } else {
                "Bearer"
            };
            let first = challenges(&refused)[0];
            assert!(
                first.starts_with(&format!("{expected} error=\"invalid_token\"")),
                "{first}"
            );
        }
    }

    #[test]
    fn each_mode_takes_its_schemes() {
        let key = ClientKey::es256(24);
        let bound = bound_token(&key);
        let plain = sign(Signer::RS256, Some("rsa1"), claims());
        let dpop = |token: &str| head(&format!("DPoP {token}"), &[&proof(&key, token, "x")]);
        let bearer = |token: &str| head(&format!("Bearer {token}"), &[]);
        let class = |mode, h: &RequestHead| {
            outcome(&policy_with(mode), h, &mut VerifiedTokenCache::new(8)).map_err(|r| r.class)
        };
        let scheme = Err(Some(Class::Token(TokenErrorKind::Scheme)));
        assert_eq!(class(DpopMode::Off, &bearer(&plain)), Ok(false));
        assert_eq!(class(DpopMode::Off, &dpop(&bound)), scheme);
        assert_eq!(class(DpopMode::Allowed, &bearer(&plain)), Ok(false));
        assert_eq!(class(DpopMode::Allowed, &dpop(&bound)), Ok(true));
        assert_eq!(class(DpopMode::Required, &bearer(&plain)), scheme);
        assert_eq!(class(DpopMode::Required, &dpop(&bound)), Ok(true));
        // The DPoP scheme with a token bound to no key.
        assert_eq!(
            class(DpopMode::Required, &dpop(&plain)),
            Err(Some(Class::Token(TokenErrorKind::KeyBinding)))
        );
        // `required`: the challenges name DPoP alone.
        let refused = outcome(
            &policy_with(DpopMode::Required),
            &bearer(&plain),
            &mut VerifiedTokenCache::new(8),
        )
        .expect_err("bearer");
        let c = challenges(&refused);
        assert_eq!(c.len(), 1);
        assert!(c[0].starts_with("DPoP error=\"invalid_token\""), "{c:?}");
    }

    // --- introspected tokens with DPoP ---

    fn introspecting_policy(mode: DpopMode) -> Policy {
        let mut policy = Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "scopes_supported": ["mcp:read"],
            "providers": [{"issuer": ISS, "introspection": {"cluster": "idp",
                "url": "https://idp/introspect", "client_id": "gw", "client_secret": "s"}}],
            "scope_implies": {"mcp:write": ["mcp:read"]},
            "rules": [{"effect": "allow", "methods": ["*"]}]
        }))
        .expect("policy");
        policy.providers[0].dpop.mode = mode;
        policy.providers[0].audiences = vec![crate::token::tests::AUD.to_string()];
        policy
    }

    /// An introspection answer's claims, bound to `key` when given.
    fn answer(key: Option<&ClientKey>) -> serde_json::Map<String, serde_json::Value> {
        let mut c = claims();
        c["active"] = json!(true);
        c["scope"] = json!("mcp:write");
        if let Some(key) = key {
            c["cnf"] = json!({"jkt": key.jkt()});
            c["token_type"] = json!("DPoP");
        }
        c.as_object().cloned().expect("object")
    }

    const OPAQUE: &str = "opaque-token-7";

    fn introspect(
        policy: &Policy,
        head: &RequestHead,
        key: Option<&ClientKey>,
    ) -> Result<(Identity, bool), Option<Class>> {
        introspected(policy, head, 0, &answer(key), NOW)
            .map(|(identity, proof)| (identity, proof.is_some()))
            .map_err(|r| r.class)
    }

    #[test]
    fn the_scheme_of_an_opaque_token_is_checked_before_any_call() {
        let verdict = |mode, auth: &str| {
            let policy = introspecting_policy(mode);
            check_token(
                &policy,
                &head(auth, &[]),
                &KeyRing::default(),
                &mut VerifiedTokenCache::new(8),
                NOW,
            )
        };
        let refused_for_scheme = |v: TokenVerdict| match v {
            TokenVerdict::Refuse(r) => r.class == Some(Class::Token(TokenErrorKind::Scheme)),
            _ => false,
        };
        let dpop = format!("DPoP {OPAQUE}");
        let bearer = format!("Bearer {OPAQUE}");
        assert!(refused_for_scheme(verdict(DpopMode::Off, &dpop)));
        assert!(refused_for_scheme(verdict(DpopMode::Required, &bearer)));
        for (mode, auth) in [
            (DpopMode::Off, &bearer),
            (DpopMode::Allowed, &bearer),
            (DpopMode::Allowed, &dpop),
            (DpopMode::Required, &dpop),
        ] {
            assert!(
                matches!(
                    verdict(mode, auth),
                    TokenVerdict::Introspect { provider: 0 }
                ),
                "{mode:?} {auth}"
            );
        }
    }

    #[test]
    fn an_introspected_bound_token_needs_the_dpop_scheme_and_its_proof() {
        let key = ClientKey::es256(31);
        let other = ClientKey::es256(32);
        let auth = format!("DPoP {OPAQUE}");
        let good = head(&auth, &[&proof(&key, OPAQUE, "a")]);
        for mode in [DpopMode::Allowed, DpopMode::Required] {
            let policy = introspecting_policy(mode);
            let refused = |head: &RequestHead, key: Option<&ClientKey>| {
                introspect(&policy, head, key).map(|_| ())
            };
            let (identity, proved) =
                introspect(&policy, &good, Some(&key)).expect("bound and proved");
            assert!(proved, "{mode:?}");
            assert_eq!(identity.jkt, Some(key.jkt()));
            // The scope hierarchy holds for introspected tokens as for JWTs.
            assert_eq!(identity.implied_scopes, vec!["mcp:read".to_string()]);
            // Without a proof, with another key's, or as a bearer token (a
            // good proof alongside): refused.
            assert_eq!(
                refused(&head(&auth, &[]), Some(&key)),
                Err(Some(Class::Proof(ProofErrorKind::Missing)))
            );
            assert_eq!(
                refused(&head(&auth, &[&proof(&other, OPAQUE, "b")]), Some(&key)),
                Err(Some(Class::Token(TokenErrorKind::KeyBinding)))
            );
            let bearer = head(&format!("Bearer {OPAQUE}"), &[&proof(&key, OPAQUE, "c")]);
            assert_eq!(
                refused(&bearer, Some(&key)),
                Err(Some(Class::Token(TokenErrorKind::DpopBound)))
            );
            // An answer without `cnf`: the proof binds nothing.
            assert_eq!(
                refused(&good, None),
                Err(Some(Class::Token(TokenErrorKind::KeyBinding)))
            );
        }
        // An unbound token as a bearer token: taken where DPoP is allowed,
        // not where it is required.
        let bearer = head(&format!("Bearer {OPAQUE}"), &[]);
        let (identity, proved) =
            introspect(&introspecting_policy(DpopMode::Allowed), &bearer, None).expect("bearer");
        assert!(!proved);
        assert_eq!(identity.implied_scopes, vec!["mcp:read".to_string()]);
        assert_eq!(
            introspect(&introspecting_policy(DpopMode::Required), &bearer, None).map(|_| ()),
            Err(Some(Class::Token(TokenErrorKind::Scheme)))
        );
    }

    #[test]
    fn no_dpop_header_goes_upstream_on_any_path() {
        let policy = policy_with(DpopMode::Allowed);
        let h = head("Bearer x", &["proof"]);
        assert!(upstream_headers(&policy, &h, None)
            .remove
            .contains(&"dpop".to_string()));
        let names = vec!["DPoP".to_string(), "x-other".to_string()];
        assert_eq!(
            trailers_to_remove(&policy, false, &names),
            vec!["DPoP".to_string()]
        );
    }
}
