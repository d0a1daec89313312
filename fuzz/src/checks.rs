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

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mcp_authz::config::{JwksSource, Policy};
use mcp_authz::gate::{self, RequestHead};
use mcp_authz::identity::Identity;
use mcp_authz::jwks::{Algorithm, KeySet};
use mcp_authz::lists::{self, ListError, ListKind, PendingLists, SseFilter};
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

    assert_eq!(mcp::check_mcp_headers(&body, None, None), Ok(()));
    if let [Message::Call(call)] = body.messages() {
        // Headers saying what the body says match, in either Mcp-Name form.
        assert_eq!(
            mcp::check_mcp_headers(&body, Some(&call.method), call.name.as_deref()),
            Ok(())
        );
        if let Some(name) = &call.name {
            let encoded = format!("=?base64?{}?=", STANDARD.encode(name));
            assert_eq!(mcp::check_mcp_headers(&body, None, Some(&encoded)), Ok(()));
        }
        let other = format!("{}/x", call.method);
        assert!(mcp::check_mcp_headers(&body, Some(&other), None).is_err());
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
    let checked = mcp::check_mcp_headers(&body, method_header.as_deref(), name_header.as_deref());
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
    let allowed = gate::check_body(policy(), &head, &reader(), bytes);
    if allowed.is_ok() {
        assert!(checked.is_ok(), "body allowed despite a header mismatch");
    }
}

// ---------------------------------------------------------------------------
// token

/// The input is a compact JWT for `verify`, and the `Authorization` header
/// values (one per line) for `bearer_token`.
pub fn token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_verify(&text);
    let values: Vec<&str> = text.split('\n').collect();
    if let Ok(token) = token::bearer_token(&values) {
        assert_eq!(values.len(), 1);
        assert!(!token.is_empty());
        assert!(values[0].contains(token));
        assert!(!token.contains([' ', '\t']));
        check_verify(token);
    }
    // Several header values are never guessed at.
    let twice = [text.as_ref(), text.as_ref()];
    assert!(token::bearer_token(&twice).is_err());
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
            policy::decide(&policy.rules, glob.as_str(), Some("get_x"), &anonymous);
        }
    }
    for method in ["tools/call", "tools/list", "initialize", ""] {
        policy::decide(&policy.rules, method, Some("delete_all"), &anonymous);
        policy::decide(&policy.rules, method, None, &anonymous);
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
    let keep = move |kind: ListKind, item: &Value| keep(flags & 3, kind, item);

    match lists::filter_json(body, &pending, &keep) {
        Ok(filtered) => {
            assert_eq!(filtered.changed, filtered.removed > 0);
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
        // Nothing removed: every byte passes as it came.
        assert_eq!(out, body);
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

fn run_sse(
    chunks: &[&[u8]],
    pending: &PendingLists,
    max: usize,
    keep: &dyn Fn(ListKind, &Value) -> bool,
) -> SseOutcome {
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

fn keep(which: u8, kind: ListKind, item: &Value) -> bool {
    let key = match kind {
        ListKind::Tools | ListKind::Prompts => "name",
        ListKind::Resources => "uri",
        ListKind::ResourceTemplates => "uriTemplate",
    };
    let name = item[key].as_str();
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
