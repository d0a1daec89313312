//! The steps of the request path, as the README's "Request handling" reads:
//! route → token → body → decide → answer. Plain functions over a request's
//! head and body; the order they run in is the exchange's (`exchange`), the
//! only place that drives them.
//!
//! Routing, the header edits on the way upstream and the list answers to
//! filter are here; a request's head is `request_head`, the token step
//! `access_token`, the body step (with the decision) `body`, and what a
//! refusal is `refusal`.

use crate::answer::{self, codes, Answer};
use crate::config::{Mode, Policy, TokenForwarding};
use crate::identity::{HeaderValueError, Identity};
use crate::lists::{ListKind, PendingLists};
use crate::mcp::{self, Body};
use crate::policy;

mod access_token;
mod body;
mod refusal;
mod request_head;

pub use access_token::{
    check_token, introspected, introspection_unavailable, keys_unavailable, proof_refusal,
    token_refused, KeyRing, TokenVerdict,
};
pub use body::{check_body, check_content_type, first_call, too_large, Allowed, ToolHeaders};
pub use refusal::{BadRequestKind, Class, Reason, Refusal};
pub use request_head::{same_header, RequestHead, Verb};

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
        return Route::Metadata(metadata_route(policy, verb));
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

/// The answer on a metadata path: the document for `GET` and `HEAD`, a
/// CORS preflight answer for `OPTIONS`, 405 for anything else.
pub fn metadata_route(policy: &Policy, verb: Verb) -> Answer {
    match verb {
        Verb::Get | Verb::Head => answer::metadata_document(policy),
        Verb::Options => answer::metadata_preflight(),
        _ => answer::metadata_method_not_allowed(),
    }
}

/// 404 for a request no configured server takes.
pub fn no_server() -> Refusal {
    Refusal::new(answer::no_server(), Reason::NoServer)
}

/// 400 for a request whose path or host reads as another server's in a
/// lenient form than as sent.
pub fn ambiguous_path() -> Refusal {
    Refusal::new(
        answer::bad_request(
            codes::INVALID_REQUEST,
            "The request path is not in normal form: another component could read it as another server's",
            None,
        ),
        Reason::BadRequest,
    )
    .with_class(Class::Request(BadRequestKind::AmbiguousPath))
}

/// What a request that matches no server goes on without (`unmatched:
/// "pass"`): every client header any HTTP stack could read as an identity
/// header of some server, and a DPoP proof. Its token stays: the route is
/// not the filter's.
pub fn unmatched_headers(gateway: &crate::config::Gateway, head: &RequestHead) -> UpstreamHeaders {
    let mut edits = UpstreamHeaders::default();
    for (name, _) in &head.headers {
        if kept_from_unmatched(gateway, name) && !edits.remove.contains(name) {
            edits.remove.push(name.clone());
        }
    }
    edits
}

/// The request trailers of a request that matches no server that may not
/// go on: the same headers as [`unmatched_headers`].
pub fn trailers_to_remove_unmatched(
    gateway: &crate::config::Gateway,
    names: &[String],
) -> Vec<String> {
    names
        .iter()
        .filter(|name| kept_from_unmatched(gateway, name))
        .cloned()
        .collect()
}

/// A DPoP proof, or a header some server's upstream would read as its
/// identity header.
fn kept_from_unmatched(gateway: &crate::config::Gateway, name: &str) -> bool {
    name.eq_ignore_ascii_case("dpop")
        || gateway.servers.iter().any(|s| {
            s.policy
                .identity_headers
                .iter()
                .any(|h| same_header(&h.name, name))
        })
}

/// How many calls (requests and notifications) a body holds.
pub fn calls_in(body: &Body) -> usize {
    body.messages()
        .iter()
        .filter(|m| matches!(m, mcp::Message::Call(_)))
        .count()
}

/// 400 for a batch of several calls where the call is published (`publish`):
/// a rate limit keyed on the published call would count it once.
pub fn published_batch(body: &Body) -> Refusal {
    let (method, name) = first_call(body);
    let mut refusal = Refusal::new(
        answer::bad_request(
            codes::INVALID_REQUEST,
            "A batch of several calls is not taken here: send each call on its own",
            None,
        ),
        Reason::BadRequest,
    )
    .with_class(Class::Request(BadRequestKind::Batch));
    refusal.method = method;
    refusal.name = name;
    refusal
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
    if head.header("dpop").is_some() {
        edits.remove.push("dpop".into());
    }
    let Some(identity) = identity else {
        return edits;
    };
    // Answers are read uncompressed (a compressed one that must be read is
    // refused, never passed): the upstream is not asked to compress. Only
    // when the client asked, like DPoP above: no host call for a header
    // that is not there.
    if head.header("accept-encoding").is_some() {
        edits.remove.push("accept-encoding".into());
    }
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
    // A `resources/read` of a URI not in normal form is refused whatever the
    // rules say (`mcp::resource_uri`): such an item is one the caller may not
    // read, and the rules cannot judge it (`SECRET://keys` is not matched by
    // a deny on `secret://*`, yet a server may read it as that).
    if matches!(kind, ListKind::Resources | ListKind::ResourceTemplates)
        && crate::mcp::resource_uri::not_normal(name).is_some()
    {
        return false;
    }
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

    /// A listed resource whose URI is not in normal form is one the caller
    /// could not read (the read is refused): removed whatever the rules say.
    #[test]
    fn resources_not_in_normal_form_are_never_listed() {
        let policy = crate::config::Policy::from_value(&serde_json::json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example", "jwks": {"remote": {"cluster": "idp"}}}],
            "rules": [{"effect": "allow", "methods": ["*"], "names": ["*"]},
                      {"effect": "deny", "methods": ["resources/read"], "names": ["secret://*"]}]
        }))
        .expect("policy");
        let who = Identity::anonymous("https://idp.example");
        let listed = |kind, name| may_use(&policy, &who, &[], 0, kind, name, &mut Vec::new());
        for kind in [ListKind::Resources, ListKind::ResourceTemplates] {
            assert!(listed(kind, "docs://a"), "{kind:?}");
            assert!(!listed(kind, "secret://keys"), "{kind:?}: the deny rule");
            for uri in [
                "SECRET://keys",
                "docs://a/../secret",
                " secret://keys",
                "docs://%73ecret",
                "secret:\\keys",
            ] {
                assert!(!listed(kind, uri), "{kind:?}: {uri}");
            }
        }
        // Tool and prompt names are names, not URIs.
        assert!(listed(ListKind::Tools, "Get_X"));
        assert!(listed(ListKind::Prompts, "a b"));
    }

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
    use crate::dpop::{Mode as DpopMode, ProofErrorKind};
    use crate::token::tests::{claims, key_sets, provider, sign, Signer, ISS, NOW};
    use crate::token::TokenErrorKind;
    use crate::token_cache::VerifiedTokenCache;
    use serde_json::json;
    use std::rc::Rc;

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
