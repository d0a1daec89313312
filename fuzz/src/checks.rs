//! What each fuzz target does with its input: drive one parser of the core
//! and assert the invariants that are cheap to check. The libFuzzer binaries
//! (`fuzz/fuzz_targets/`) call these, and `tests/fuzz_regressions.rs`
//! includes this file to replay `fuzz/regressions/<target>/` through the very
//! same code, so every crash found stays fixed.
//!
//! Input formats (the seed corpora in `fuzz/corpus/` follow them):
//! - `request_body`: `body [NUL mcp-method [NUL mcp-name]]`; a header part
//!   `=` stands for the body's own method / name.
//! - `token`: the input is both a compact JWT and the `Authorization` header
//!   values, one per line.
//! - `jwks`, `config`: JSON text.
//! - `list_answer`: three control bytes (keep predicate and pending ids;
//!   split offset; chunk size), then the answer body.
//! - `condition`: `expression NUL arguments [NUL claims]`: a CEL condition,
//!   then the call's `params.arguments` and the token's claims as JSON text.
//! - `dpop_proof`: the `DPoP` header values, one per line, of a `POST /mcp`
//!   to `https://mcp.example.com` with the token [`DPOP_TOKEN`], bound to
//!   [`DPOP_JKT`], at [`NOW`].

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mcp_authz::condition::{Condition, EvalError, Facts};
use mcp_authz::config::{JwksSource, Policy};
use mcp_authz::dpop::{self, htu, DpopPolicy};
use mcp_authz::gate::{self, RequestHead};
use mcp_authz::identity::Identity;
use mcp_authz::keys::jwks::{Algorithm, KeySet};
use mcp_authz::lists::{self, reference, Item, Keep, ListError, ListKind, PendingLists, SseFilter};
use mcp_authz::mcp::{self, Body, BodyError, Message};
use mcp_authz::policy;
use mcp_authz::token::{self, MAX_TOKEN_BYTES};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The fixed "now" of the token target (2025-10-09T08:53:20Z); the seed
/// tokens were minted around it.
pub const NOW: u64 = 1_760_000_000;
pub const ISSUER: &str = "https://idp.example.com/realms/mcp";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";
const SKEW: u64 = 60;

/// Public halves of throwaway RSA-2048, P-256 and Ed25519 keys that signed
/// the seed tokens (the private halves were not kept).
pub const JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"fuzz-rsa","use":"sig","n":"10fYvuqhYxoCXWggqIPkBBQSg4F0-6wPBIkQ9ejl3k-gmoLxAp_hU4bTkpbuipCBdRKBS0y4i5pjgulQFxb3aVmxjajGLmGDswm1us6yrhAbUbUF3JnKzPprBtUXi2b6Dns9CDgFZDxc14OBIB-6r1HmYcIN5mETc8BaWitJxN_48GDGHKeJQk3C9nY9dp_MORdkiFK0zCoBCfaMIKPZlTL-LjOTny_TueNQDiz-OinSDEy-J8suVukQPx5v4nzIOd_oHWCcrKLSQwy7K3LDIsuQWi_t6ubOdUOaLd1A2oRV7Z3-zMf29k_lslCBI1irs_xaMM-8_ZphITDwWyW0fQ","e":"AQAB"},{"kty":"EC","kid":"fuzz-ec","crv":"P-256","x":"s5eL2rA9V5F5H8lrTx3Kn87qL-Rx7B4syZeebhLCxhI","y":"mWHOCVYbCUrsU522V3DaC14fYc9dZTa02lraXRpVsj8"},{"kty":"OKP","kid":"fuzz-ed","crv":"Ed25519","x":"FASvoR_YvX7YxW8KcaLGJA1R-1cEjydnZAw0w9P7KDs"}]}"#;

// ---------------------------------------------------------------------------
// request_body

/// `body [NUL mcp-method [NUL mcp-name]]`. JSON cannot hold a raw NUL, so the
/// split loses nothing a body could carry.
pub fn request_body(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let bytes = parts.next().unwrap_or_default();
    let method_header = parts
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let name_header = parts
        .next()
        .map(|p| String::from_utf8_lossy(p).into_owned());

    let parsed = mcp::parse_body(bytes);
    let plain = serde_json::from_slice::<Value>(bytes);
    let body = match parsed {
        // Syntax is judged before meaning: valid JSON is never a parse error,
        // and what serde_json refuses is never accepted.
        Err(BodyError::Parse(_)) => {
            assert!(plain.is_err(), "valid JSON refused as malformed");
            return;
        }
        Err(BodyError::Invalid(_)) => {
            assert!(plain.is_ok(), "malformed JSON reported as invalid JSON-RPC");
            return;
        }
        Ok(body) => body,
    };
    let plain = plain.expect("parse_body accepted JSON that serde_json refuses");

    // The typed view agrees with a plain parse of the same bytes (duplicate
    // keys, where the two could differ, are refused).
    let raw: Vec<&Value> = match (&body, &plain) {
        (Body::Batch(messages), Value::Array(elements)) => {
            assert!(!messages.is_empty(), "empty batch accepted");
            assert_eq!(messages.len(), elements.len());
            elements.iter().collect()
        }
        (Body::Single(_), Value::Object(_)) => vec![&plain],
        _ => panic!("body shape differs from its plain parse"),
    };
    for (message, raw) in body.messages().iter().zip(raw) {
        match message {
            Message::Call(call) => {
                assert_eq!(raw["method"].as_str(), Some(call.method.as_str()));
                if let Some(id) = &call.id {
                    assert_eq!(raw.get("id"), Some(id));
                }
                if let Some(name) = &call.name {
                    let field = if call.method == "resources/read" {
                        "uri"
                    } else {
                        "name"
                    };
                    assert_eq!(raw["params"][field].as_str(), Some(name.as_str()));
                }
            }
            Message::Response { id } => assert_eq!(raw.get("id"), Some(id)),
        }
    }

    assert_eq!(mcp::check_mcp_headers(&body, None, None, false), Ok(()));
    if let [Message::Call(call)] = body.messages() {
        // Headers saying what the body says match, in either Mcp-Name form.
        assert_eq!(
            mcp::check_mcp_headers(&body, Some(&call.method), call.name.as_deref(), true),
            Ok(())
        );
        if let Some(name) = &call.name {
            let encoded = format!("=?base64?{}?=", STANDARD.encode(name));
            assert_eq!(
                mcp::check_mcp_headers(&body, None, Some(&encoded), false),
                Ok(())
            );
        }
        let other = format!("{}/x", call.method);
        assert!(mcp::check_mcp_headers(&body, Some(&other), None, false).is_err());
    }

    // Headers from the input ("=" copies the first call's own value).
    let first = body.messages().iter().find_map(|m| match m {
        Message::Call(call) => Some(call),
        Message::Response { .. } => None,
    });
    let method_header = match method_header.as_deref() {
        Some("=") => first.map(|c| c.method.clone()),
        other => other.map(str::to_string),
    };
    let name_header = match name_header.as_deref() {
        Some("=") => first.and_then(|c| c.name.clone()),
        other => other.map(str::to_string),
    };
    let checked = mcp::check_mcp_headers(
        &body,
        method_header.as_deref(),
        name_header.as_deref(),
        false,
    );
    if checked.is_ok() && (method_header.is_some() || name_header.is_some()) {
        for message in body.messages() {
            let Message::Call(call) = message else {
                panic!("headers accepted with a response body");
            };
            if let Some(method) = &method_header {
                assert_eq!(method, &call.method);
            }
        }
    }

    // The filter's own body check over the same bytes and headers.
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if let Some(method) = &method_header {
        headers.push(("mcp-method".to_string(), method.clone()));
    }
    if let Some(name) = &name_header {
        headers.push(("mcp-name".to_string(), name.clone()));
    }
    let head = RequestHead::new("POST", "/mcp", headers);
    let allowed = gate::check_body(policy(), &head, &reader(), bytes, NOW, &|_| None);
    if allowed.is_ok() {
        assert!(checked.is_ok(), "body allowed despite a header mismatch");
    }
}

// ---------------------------------------------------------------------------
// dpop_proof

/// The access token the seed proofs were made for (`ath`).
pub const DPOP_TOKEN: &str = "fuzz.access.token";
/// The thumbprint of the throwaway P-256 key that signed the valid seeds.
pub const DPOP_JKT: &str = "Vuy3veDxqLvrT23jbLwJxyETR31NcIZHLjOqaWwRSZo";

/// Checks the input's lines as the `DPoP` headers of one request. An
/// accepted proof came alone, is bound to the token's key, for this
/// request; `htu` normalisation is idempotent.
pub fn dpop_proof(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let values: Vec<&str> = text.split('\n').collect();
    for value in &values {
        if let Ok(parsed) = dpop::proof::parse(value) {
            assert!(value.len() <= dpop::proof::MAX_PROOF_BYTES);
            assert!(parsed.signing_input.len() < value.len());
        }
        if let Some(normal) = htu::normalize(value) {
            assert_eq!(htu::normalize(normal.as_str()), Some(normal.clone()));
        }
    }
    let policy = DpopPolicy {
        mode: dpop::Mode::Required,
        ..DpopPolicy::default()
    };
    let request = dpop::proof::Request {
        method: "POST",
        path: "/mcp",
        resource_origin: "https://mcp.example.com",
        token: DPOP_TOKEN,
        jkt: DPOP_JKT,
        now_s: NOW,
    };
    if let Ok(accepted) = dpop::proof::check(&values, &request, &policy) {
        assert_eq!(values.len(), 1);
        assert_eq!(accepted.jkt, DPOP_JKT);
        assert!(!accepted.jti.is_empty() && accepted.jti.len() <= dpop::proof::MAX_JTI_BYTES);
        assert!(accepted.remember_until > NOW);
        let parsed = dpop::proof::parse(values[0].trim_matches([' ', '\t'])).expect("accepted");
        assert_eq!(parsed.claims["htm"], "POST");
        assert_eq!(
            parsed.claims["ath"].as_str(),
            Some(dpop::proof::token_hash(DPOP_TOKEN).as_str())
        );
        // Another request, token or key is refused with the same proof.
        let other_path = dpop::proof::Request {
            path: "/mcp/",
            ..request
        };
        assert!(dpop::proof::check(&values, &other_path, &policy).is_err());
        let other_key = dpop::proof::Request {
            jkt: "another",
            ..request
        };
        assert!(dpop::proof::check(&values, &other_key, &policy).is_err());
    }
}

// ---------------------------------------------------------------------------
// token

/// The input is a compact JWT for `verify`, and the `Authorization` header
/// values (one per line) for `credentials`.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_verify(&text);
    let values: Vec<&str> = text.split('\n').collect();
    if let Ok((_, token)) = token::credentials(&values) {
        assert_eq!(values.len(), 1);
        assert!(!token.is_empty());
        assert!(values[0].contains(token));
        assert!(!token.contains([' ', '\t']));
        check_verify(token);
    }
    // Several header values are never guessed at.
    let twice = [text.as_ref(), text.as_ref()];
    assert!(token::credentials(&twice).is_err());
}

fn check_verify(token: &str) {
    let policy = policy();
    let keys: Vec<Option<&KeySet>> = policy
        .providers
        .iter()
        .map(|p| match &p.jwks {
            Some(JwksSource::Inline(keys)) => Some(keys),
            _ => None,
        })
        .collect();
    match token::verify(token, &policy.providers, &keys, NOW) {
        Ok(identity) => {
            assert!(token.len() <= MAX_TOKEN_BYTES);
            assert_eq!(identity.issuer, ISSUER, "identity of another issuer");
            assert!(identity.expires_at + SKEW > NOW, "expired token accepted");
            assert_eq!(identity.claims["iss"], ISSUER);
        }
        Err(e) => {
            if let Some(index) = e.provider {
                assert!(index < policy.providers.len());
            }
            assert!(!e.description().is_empty());
        }
    }
}

// ---------------------------------------------------------------------------
// jwks

pub fn jwks(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((keys, warnings)) = KeySet::parse(text) else {
        return;
    };
    // Every entry is either a usable key or a warning, never both or neither.
    let value: Value = serde_json::from_str(text).expect("parsed JWKS is JSON");
    let entries = value["keys"]
        .as_array()
        .expect("parsed JWKS has keys")
        .len();
    assert_eq!(keys.len() + warnings.len(), entries);
    for alg in Algorithm::ALL {
        for kid in [None, Some("fuzz-rsa"), Some("")] {
            if let Ok(key) = keys.find(kid, alg) {
                assert_eq!(key.algorithm(), alg);
            }
        }
        if let Some(kid) = value["keys"][0]["kid"].as_str() {
            if let Ok(key) = keys.find(Some(kid), alg) {
                assert_eq!(key.algorithm(), alg);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// config

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::from_json(text) {
        Ok(policy) => policy,
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!policy.providers.is_empty());
    assert!(!policy.rules.is_empty());
    assert!(policy.max_body_bytes as u64 <= 64 * 1024 * 1024);
    assert!(policy.metadata_paths.iter().all(|p| p.starts_with('/')));
    for provider in &policy.providers {
        assert!(provider.clock_skew_seconds <= 600);
        assert!(!provider.algorithms.is_empty());
    }
    let anonymous = Identity::anonymous(&policy.providers[0].issuer);
    for rule in &policy.rules {
        // A glob always matches its own text.
        for glob in rule.methods.iter().chain(rule.names.iter().flatten()) {
            assert!(glob.matches(glob.as_str()), "glob {:?}", glob.as_str());
        }
        for glob in &rule.methods {
            policy::decide(
                &policy.rules,
                &policy::Call::plain(glob.as_str(), Some("get_x")),
                &anonymous,
                &mut Vec::new(),
            );
        }
    }
    for method in ["tools/call", "tools/list", "initialize", ""] {
        policy::decide(
            &policy.rules,
            &policy::Call::plain(method, Some("delete_all")),
            &anonymous,
            &mut Vec::new(),
        );
        policy::decide(
            &policy.rules,
            &policy::Call::plain(method, None),
            &anonymous,
            &mut Vec::new(),
        );
    }
}

// ---------------------------------------------------------------------------
// list_answer

/// Control bytes: `[flags, split, chunk]`, then the answer. `flags` bits 0-1
/// pick the keep predicate, bits 2-4 the pending ids, bit 5 a small SSE event
/// limit (so `TooLarge` is reached).
pub fn list_answer(data: &[u8]) {
    let [flags, split, chunk, ref body @ ..] = *data else {
        return;
    };
    let pending = pending_lists(flags >> 2);
    let keep = move |item: &Item| keep(flags & 3, item);

    match lists::filter_json(body, &pending, &keep) {
        Ok(filtered) => {
            // A change removes items or makes a `cacheScope` private (which
            // may be the only change).
            assert!(filtered.changed || filtered.removed == 0);
            if !filtered.changed {
                assert_eq!(filtered.body, body);
            } else {
                // Still JSON; only items went (each list a subsequence of the
                // original, `removed` of them in all) and `cacheScope` may
                // have become private; and filtering again removes nothing.
                let before: Value = serde_json::from_slice(body).expect("filtered input is JSON");
                let after: Value =
                    serde_json::from_slice(&filtered.body).expect("filtered JSON is JSON");
                let (before_rest, before_items) = split_items(&before);
                let (after_rest, after_items) = split_items(&after);
                assert_eq!(before_rest, after_rest, "more than items changed");
                assert_eq!(before_items.len(), after_items.len());
                let mut gone = 0;
                for (old, new) in before_items.iter().zip(&after_items) {
                    let mut rest = old.iter();
                    for item in new {
                        assert!(rest.any(|o| o == item), "kept items reordered or altered");
                    }
                    gone += old.len() - new.len();
                }
                assert_eq!(gone, filtered.removed);
                let again = lists::filter_json(&filtered.body, &pending, &keep)
                    .expect("a filtered answer filters again");
                assert_eq!(again.removed, 0, "filtering is not idempotent");
                assert!(!again.changed);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    // The filter agrees with the same filter written on a tree
    // (`lists::reference`, after `json::parse_strict`): both refuse, for the
    // same reason, or the output parses to the reference's tree with as many
    // items removed; and so through the SSE framing, the answer sent as one
    // event.
    if let Some(why) = reference::json_disagreement(body, &pending, &keep) {
        panic!("the filter and the tree reference disagree:\n{why}");
    }
    if let Some(why) = reference::event_disagreement(body, &pending, &keep) {
        panic!("the SSE filter and the tree reference disagree:\n{why}");
    }

    // However the stream is chunked, the outcome is the same.
    let max = if flags & 32 != 0 {
        64 + usize::from(chunk)
    } else {
        1 << 20
    };
    let whole = run_sse(&[body], &pending, max, &keep);
    let at = usize::from(split) * body.len() / 255;
    let (head, tail) = body.split_at(at);
    assert_eq!(
        run_sse(&[head, tail], &pending, max, &keep),
        whole,
        "split at {at}"
    );
    let size = usize::from(chunk % 17) + 1;
    let chunks: Vec<&[u8]> = body.chunks(size).collect();
    assert_eq!(
        run_sse(&chunks, &pending, max, &keep),
        whole,
        "chunks of {size}"
    );
    if let Ok((out, 0)) = &whole {
        // Nothing removed: every byte passes as it came, unless a list's
        // `cacheScope` became private (its key may be written with escapes).
        let may_scope = |b: &[u8]| b.windows(10).any(|w| w == b"cacheScope") || b.contains(&b'\\');
        assert!(out == body || may_scope(body), "changed without removing");
    }
}

/// A JSON-RPC answer (or batch) with every list result's item arrays taken
/// out and its `cacheScope` blanked, and those item arrays in order.
fn split_items(answer: &Value) -> (Value, Vec<Vec<Value>>) {
    let mut rest = answer.clone();
    let mut items = Vec::new();
    let messages: Vec<&mut Value> = match &mut rest {
        Value::Array(messages) => messages.iter_mut().collect(),
        message => vec![message],
    };
    for message in messages {
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            continue;
        };
        for key in ["tools", "prompts", "resources", "resourceTemplates"] {
            if let Some(Value::Array(list)) = result.get_mut(key) {
                items.push(std::mem::take(list));
            }
        }
        if let Some(scope) = result.get_mut("cacheScope") {
            *scope = Value::Null;
        }
    }
    (rest, items)
}

type SseOutcome = Result<(Vec<u8>, usize), ListError>;

fn run_sse(chunks: &[&[u8]], pending: &PendingLists, max: usize, keep: &Keep) -> SseOutcome {
    let mut filter = SseFilter::new(pending.clone(), max);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(filter.push(chunk, keep)?);
    }
    out.extend(filter.finish(keep)?);
    Ok((out, filter.removed()))
}

fn pending_lists(selector: u8) -> PendingLists {
    let mut pending = PendingLists::new();
    if selector & 1 != 0 {
        pending.add(&json!(1), ListKind::Tools);
    }
    if selector & 2 != 0 {
        pending.add(&json!("a"), ListKind::Prompts);
        pending.add(&json!("a"), ListKind::Resources);
    }
    if selector & 4 != 0 {
        pending.add(&json!(2), ListKind::ResourceTemplates);
        pending.add(&json!(1.0), ListKind::Resources);
    }
    pending
}

fn keep(which: u8, item: &Item) -> bool {
    let name = item.key();
    match which {
        0 => true,
        1 => false,
        2 => name.is_some_and(|n| n.starts_with("get_") || n.starts_with("file:")),
        _ => name.is_some_and(|n| n.len() % 2 == 0),
    }
}

// ---------------------------------------------------------------------------
// Fixed context

/// A policy with one provider holding the inline keys, and rules enough for
/// `gate::check_body` to allow, deny and challenge.
pub fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let jwks: Value = serde_json::from_str(JWKS).expect("fixture JWKS");
        let config = json!({
            "resource": RESOURCE,
            "providers": [
                {"issuer": ISSUER, "jwks": {"inline": jwks}, "clock_skew_seconds": SKEW,
                 "roles_claims": ["realm_access.roles"]},
                {"issuer": "https://other.example.com", "jwks": {"remote": {"cluster": "idp"}}}
            ],
            "rules": [
                {"effect": "allow", "methods": ["initialize", "tools/list", "notifications/*"]},
                {"effect": "allow", "methods": ["tools/call"], "names": ["get_*"], "roles": ["reader"]},
                {"effect": "allow", "methods": ["tools/call"], "names": ["search"], "scopes": ["mcp:read"]},
                {"effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]}
            ]
        });
        Policy::from_value(&config).expect("fixture configuration")
    })
}

fn reader() -> Identity {
    let mut identity = Identity::anonymous(ISSUER);
    identity.roles = vec!["reader".to_string()];
    identity.expires_at = NOW + 3600;
    identity
}

// ---------------------------------------------------------------------------
// condition

pub fn condition(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let Some(Ok(source)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let arguments: Option<Value> = parts.next().and_then(|a| serde_json::from_slice(a).ok());
    let claims = parts
        .next()
        .and_then(|c| serde_json::from_slice::<Value>(c).ok())
        .and_then(|c| c.as_object().cloned())
        .unwrap_or_default();

    let condition = match Condition::compile(source) {
        Ok(condition) => condition,
        Err(reason) => {
            assert!(!reason.is_empty());
            return;
        }
    };
    assert_eq!(condition.source(), source);

    let mut identity = reader();
    identity.subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .map(str::to_string);
    identity.scopes = vec!["mcp:read".to_string()];
    identity.claims = claims;
    let headers = [("x-tenant".to_string(), "acme".to_string())];
    let facts = Facts {
        method: "tools/call",
        name: Some("get_x"),
        arguments: arguments.as_ref(),
        headers: &headers,
        identity: &identity,
        now_s: NOW,
    };
    let value = condition.eval(&facts);
    assert_eq!(condition.eval(&facts), value, "evaluation is deterministic");

    // The negation decides the other way, and fails where the condition fails.
    if let Ok(negated) = Condition::compile(&format!("!({source})")) {
        match (&value, negated.eval(&facts)) {
            (Ok(b), Ok(n)) => assert_eq!(n, !b, "!({source})"),
            (Ok(_), Err(e)) => panic!("{source} is a boolean but its negation failed: {e:?}"),
            (Err(_), _) => {}
        }
    }

    // In rules: an allow rule lets the call through only when the condition
    // is true; a deny rule refuses it unless the condition is false.
    let Some(rules) = rules_with(source) else {
        return;
    };
    let call = policy::Call {
        method: "tools/call",
        name: Some("get_x"),
        arguments: policy::Arguments::Known(arguments.as_ref()),
        headers: &headers,
        now_s: NOW,
    };
    let mut errors = Vec::new();
    let allowed = policy::decide(&rules.allow, &call, &identity, &mut errors).is_allow();
    assert_eq!(
        allowed,
        value == Ok(true),
        "allow rule, condition {value:?}"
    );
    assert_eq!(errors.is_empty(), value.is_ok(), "errors are reported");
    let mut errors = Vec::new();
    let allowed = policy::decide(&rules.deny, &call, &identity, &mut errors).is_allow();
    assert_eq!(
        allowed,
        value == Ok(false),
        "deny rule, condition {value:?}"
    );
    if value == Err(EvalError::NotBoolean) {
        assert!(!errors.is_empty());
    }
}

struct ConditionRules {
    /// `allow tools/call when <condition>`.
    allow: Vec<mcp_authz::config::Rule>,
    /// `deny tools/call when <condition>`, then `allow tools/call`.
    deny: Vec<mcp_authz::config::Rule>,
}

fn rules_with(when: &str) -> Option<ConditionRules> {
    let jwks: Value = serde_json::from_str(JWKS).expect("fixture JWKS");
    let policy = |rules: Value| {
        Policy::from_value(&json!({
            "resource": RESOURCE,
            "providers": [{"issuer": ISSUER, "jwks": {"inline": jwks.clone()}}],
            "rules": rules,
        }))
        .map(|p| p.rules)
    };
    let allow = policy(json!([{"effect": "allow", "methods": ["tools/call"], "when": when}]));
    let deny = policy(json!([
        {"effect": "deny", "methods": ["tools/call"], "when": when},
        {"effect": "allow", "methods": ["tools/call"]}
    ]));
    // The configuration compiles the condition the same way.
    assert_eq!(allow.is_ok(), deny.is_ok());
    Some(ConditionRules {
        allow: allow.ok()?,
        deny: deny.ok()?,
    })
}
