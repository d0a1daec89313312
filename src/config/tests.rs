//! Configuration parsing: defaults, every error class, the README example.

use super::parse::metadata_locations;
use super::*;
use serde_json::{json, Value};

const JWK: &str = r#"{"kty": "RSA", "kid": "t1", "use": "sig", "alg": "RS256", "n": "yVl4Lykd8qS97tw03v1Sd41Oz2vaTdX7Fb7JL-EX0fvdhLmKsTD-Ktt_EAzVQWb2R-mvcAQ2vFpavwUNZG8HQo-xsPOiZrMoBUJMWHkI4g0v8Zpw7NuPgHzmu-YQC1fftlKBVfmAFZXPyRU7PMCM46abOS6VhXOYKYOY7r9uilKYAZFx7Ss_gjXjs_fakudlFoo1vC6ZBdW7jq2QQuA8sR3fr0j964uJKljSQdA9ajspS_mCGTb2E7Yg8ikbna5f7j0bsp3RAorCPs8xBKWBoSw-8hEW6dS_P2S4OR24UFBGMr9vimNroAsU0ZykpixhI1aVvq34Zp6041wYGiF-uQ", "e": "AQAB"}"#;

fn base() -> Value {
    let jwk: Value = serde_json::from_str(JWK).expect("test JWK");
    json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [{"issuer": "https://idp.example.com/realms/mcp", "jwks": {"inline": {"keys": [jwk]}}}],
        "rules": [{"name": "lists", "effect": "allow", "methods": ["tools/list"]}]
    })
}

/// Applies `edit` to the base configuration and returns the error.
fn refused(edit: impl FnOnce(&mut Value)) -> ConfigError {
    let mut config = base();
    edit(&mut config);
    Policy::from_value(&config).expect_err("configuration should be refused")
}

#[test]
fn base_configuration_is_accepted_with_defaults() {
    let policy = Policy::from_value(&base()).expect("valid");
    assert_eq!(
        policy.metadata_url,
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
    );
    assert_eq!(
        policy.metadata_paths,
        vec![
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-protected-resource"
        ]
    );
    assert_eq!(
        policy.authorization_servers,
        vec!["https://idp.example.com/realms/mcp"]
    );
    assert_eq!(
        policy.providers[0].audiences,
        vec!["https://mcp.example.com/mcp"]
    );
    assert_eq!(policy.providers[0].algorithms, Algorithm::ALL.to_vec());
    assert_eq!(policy.providers[0].clock_skew_seconds, 60);
    assert_eq!(
        policy.providers[0].roles_claims,
        vec![vec!["roles".to_string()]]
    );
    assert_eq!(policy.max_body_bytes, 1024 * 1024);
    assert!(policy.filter_lists);
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.token_forwarding, TokenForwarding::Strip);
}

#[test]
fn metadata_url_inserts_the_well_known_segment_before_the_path() {
    let at = |resource: &str| metadata_locations(resource).expect("valid").0;
    assert_eq!(
        at("https://h.example/"),
        "https://h.example/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        at("https://h.example"),
        "https://h.example/.well-known/oauth-protected-resource"
    );
    assert_eq!(
        at("https://h:8443/a/b/"),
        "https://h:8443/.well-known/oauth-protected-resource/a/b"
    );
    assert_eq!(
        metadata_locations("https://h.example")
            .expect("valid")
            .1
            .len(),
        1
    );
}

#[test]
fn each_error_class_is_refused_naming_the_field() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("colour", Box::new(|c| c["colour"] = json!("blue"))),
        (
            "providers[0].colour",
            Box::new(|c| c["providers"][0]["colour"] = json!(1)),
        ),
        (
            "rules[0].colour",
            Box::new(|c| c["rules"][0]["colour"] = json!(1)),
        ),
        (
            "filter_lists",
            Box::new(|c| c["filter_lists"] = json!("yes")),
        ),
        (
            "max_body_bytes",
            Box::new(|c| c["max_body_bytes"] = json!(-1)),
        ),
        (
            "max_body_bytes",
            Box::new(|c| c["max_body_bytes"] = json!(0)),
        ),
        (
            "resource",
            Box::new(|c| {
                c.as_object_mut().map(|o| o.remove("resource"));
            }),
        ),
        ("resource", Box::new(|c| c["resource"] = json!("/mcp"))),
        (
            "resource",
            Box::new(|c| c["resource"] = json!("https://mcp.example.com/mcp#frag")),
        ),
        ("resource", Box::new(|c| c["resource"] = json!("urn:mcp"))),
        ("providers", Box::new(|c| c["providers"] = json!([]))),
        ("rules", Box::new(|c| c["rules"] = json!([]))),
        ("rules", Box::new(|c| c["rules"] = json!({}))),
        (
            "rules[0].methods[0]",
            Box::new(|c| c["rules"][0]["methods"] = json!([""])),
        ),
        (
            "rules[0].names[0]",
            Box::new(|c| c["rules"][0]["names"] = json!(["a\u{0}"])),
        ),
        (
            "rules[0].methods",
            Box::new(|c| c["rules"][0]["methods"] = json!([])),
        ),
        (
            "rules[0].effect",
            Box::new(|c| c["rules"][0]["effect"] = json!("maybe")),
        ),
        (
            "rules[0].scopes[0]",
            Box::new(|c| c["rules"][0]["scopes"] = json!(["a b"])),
        ),
        (
            "providers[0].jwks.inline",
            Box::new(|c| c["providers"][0]["jwks"]["inline"] = json!("not json")),
        ),
        (
            "providers[0].jwks.inline",
            Box::new(|c| c["providers"][0]["jwks"]["inline"] = json!({"keys": []})),
        ),
        (
            "providers[0].jwks",
            Box::new(|c| c["providers"][0]["jwks"] = json!({})),
        ),
        (
            "providers[0].jwks.remote.cluster",
            Box::new(|c| c["providers"][0]["jwks"] = json!({"remote": {}})),
        ),
        (
            "providers[0].jwks.remote.refresh_seconds",
            Box::new(|c| {
                c["providers"][0]["jwks"] =
                    json!({"remote": {"cluster": "idp", "refresh_seconds": 1}})
            }),
        ),
        (
            "providers[0].jwks.remote.url",
            Box::new(|c| {
                c["providers"][0]["jwks"] = json!({"remote": {"cluster": "idp", "url": "ftp://x"}})
            }),
        ),
        (
            "providers[0].algorithms[0]",
            Box::new(|c| c["providers"][0]["algorithms"] = json!(["HS256"])),
        ),
        (
            "providers[0].algorithms[0]",
            Box::new(|c| c["providers"][0]["algorithms"] = json!(["none"])),
        ),
        (
            "providers[0].algorithms[0]",
            Box::new(|c| c["providers"][0]["algorithms"] = json!(["XY999"])),
        ),
        (
            "providers[0].clock_skew_seconds",
            Box::new(|c| c["providers"][0]["clock_skew_seconds"] = json!(3600)),
        ),
        (
            "providers[0].roles_claims[0]",
            Box::new(|c| c["providers"][0]["roles_claims"] = json!(["a..b"])),
        ),
        (
            "providers[0].token_types",
            Box::new(|c| c["providers"][0]["token_types"] = json!([])),
        ),
        (
            "providers[0].token_types[1]",
            Box::new(|c| c["providers"][0]["token_types"] = json!(["at+jwt", "at jwt"])),
        ),
        (
            "providers[0].require_token_type",
            Box::new(|c| c["providers"][0]["require_token_type"] = json!("yes")),
        ),
        (
            "providers[1].issuer",
            Box::new(|c| {
                let p = c["providers"][0].clone();
                c["providers"] = json!([p.clone(), p]);
            }),
        ),
        (
            "token_forwarding",
            Box::new(|c| c["token_forwarding"] = json!("sometimes")),
        ),
        ("mode", Box::new(|c| c["mode"] = json!("permissive"))),
        (
            "public_paths[0]",
            Box::new(|c| c["public_paths"] = json!(["healthz"])),
        ),
        (
            "rules[0].when",
            Box::new(|c| c["rules"][0]["when"] = json!("request.argument.x > 1")),
        ),
        (
            "rules[0].when",
            Box::new(|c| c["rules"][0]["when"] = json!("request.arguments.x >")),
        ),
        (
            "rules[0].when",
            Box::new(|c| c["rules"][0]["when"] = json!("request.method")),
        ),
        (
            "rules[0].when",
            Box::new(|c| c["rules"][0]["when"] = json!(true)),
        ),
        (
            "scope_implies.a",
            Box::new(|c| c["scope_implies"] = json!({"a": ["b"], "b": ["c"], "c": ["a"]})),
        ),
        (
            "scope_implies.a",
            Box::new(|c| c["scope_implies"] = json!({"a": "b"})),
        ),
        (
            "scope_implies.a[0]",
            Box::new(|c| c["scope_implies"] = json!({"a": ["b c"]})),
        ),
        (
            "identity_headers.authorization",
            Box::new(|c| c["identity_headers"] = json!({"authorization": "sub"})),
        ),
        (
            "identity_headers.x bad",
            Box::new(|c| c["identity_headers"] = json!({"x bad": "sub"})),
        ),
        (
            "identity_headers.x-who",
            Box::new(|c| c["identity_headers"] = json!({"x-who": "$nope"})),
        ),
        (
            "identity_headers.x-who",
            Box::new(|c| c["identity_headers"] = json!({"x-who": 3})),
        ),
        (
            "scopes_supported[0]",
            Box::new(|c| c["scopes_supported"] = json!(["has space"])),
        ),
        (
            "authorization_servers[0]",
            Box::new(|c| c["authorization_servers"] = json!(["not a url"])),
        ),
    ];
    for (field, edit) in cases {
        let error = refused(edit);
        assert_eq!(error.field, field, "{error}");
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[test]
fn configuration_that_is_not_json_is_refused() {
    let error = Policy::from_json("{nope").expect_err("refused");
    assert!(error.to_string().contains("not valid JSON"));
    assert!(Policy::from_json("[]").is_err());
}

#[test]
fn inline_jwks_may_be_a_json_string() {
    let mut config = base();
    let text = config["providers"][0]["jwks"]["inline"].to_string();
    config["providers"][0]["jwks"]["inline"] = json!(text);
    assert!(Policy::from_value(&config).is_ok());
}

/// An unusable inline key is left out, and why is kept for the log (the
/// index and the reason, never key material); usable keys still load.
#[test]
fn unusable_inline_keys_are_skipped_with_a_reason() {
    let mut config = base();
    let keys = &mut config["providers"][0]["jwks"]["inline"]["keys"];
    keys.as_array_mut()
        .expect("keys")
        .push(json!({"kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB"}));
    let policy = Policy::from_value(&config).expect("accepted");
    let skipped = &policy.providers[0].skipped_keys;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains("#1") && skipped[0].contains("weak"),
        "{skipped:?}"
    );
    assert!(!skipped[0].contains("AQAB"), "no key material: {skipped:?}");
    assert!(Policy::from_value(&base()).expect("accepted").providers[0]
        .skipped_keys
        .is_empty());
}

#[test]
fn scope_hierarchies_close_transitively() {
    let mut config = base();
    config["scope_implies"] =
        json!({"mcp:admin": ["mcp:write"], "mcp:write": ["mcp:read"], "x": ["mcp:read"]});
    let policy = Policy::from_value(&config).expect("accepted");
    let held = vec!["mcp:admin".to_string(), "mcp:read".to_string()];
    assert_eq!(
        policy.scope_implies.implied_by(&held),
        vec!["mcp:write".to_string()]
    );
    assert_eq!(
        policy.scope_implies.closure.get("mcp:admin"),
        Some(&vec!["mcp:write".to_string(), "mcp:read".to_string()])
    );
}

#[test]
fn offline_access_is_never_advertised() {
    let mut config = base();
    config["scopes_supported"] = json!(["mcp:read", "offline_access"]);
    let policy = Policy::from_value(&config).expect("accepted");
    assert_eq!(policy.scopes_supported, vec!["mcp:read".to_string()]);
}

#[test]
fn rule_conditions_compile_once() {
    let mut config = base();
    config["rules"][0]["when"] = json!("request.arguments.amount < 100");
    let policy = Policy::from_value(&config).expect("accepted");
    let when = policy.rules[0].when.as_ref().expect("a condition");
    assert_eq!(when.source(), "request.arguments.amount < 100");
    assert!(when.uses_arguments());
}

#[test]
fn dpop_settings_are_read_and_bounded() {
    let policy = Policy::from_value(&base()).expect("valid");
    let dpop = &policy.providers[0].dpop;
    assert_eq!(dpop.mode, crate::dpop::Mode::Off);
    assert_eq!(dpop.iat_window_seconds, defaults::DPOP_IAT_WINDOW_SECONDS);
    assert!(dpop.nonce.is_none());

    let mut config = base();
    config["providers"][0]["dpop"] = json!("required");
    config["providers"][0]["dpop_algorithms"] = json!(["ES256", "EdDSA"]);
    config["providers"][0]["dpop_iat_window_seconds"] = json!(60);
    config["providers"][0]["dpop_nonce"] =
        json!({"keys": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "lifetime_seconds": 30});
    let policy = Policy::from_value(&config).expect("valid");
    let dpop = &policy.providers[0].dpop;
    assert_eq!(dpop.mode, crate::dpop::Mode::Required);
    assert_eq!(dpop.algorithms, vec![Algorithm::ES256, Algorithm::EdDSA]);
    assert_eq!(dpop.iat_window_seconds, 60);
    assert_eq!(dpop.nonce.as_ref().map(|n| n.lifetime_seconds), Some(30));

    let field = |edit: &dyn Fn(&mut Value)| refused(edit).field;
    assert_eq!(
        field(&|c| c["providers"][0]["dpop"] = json!("on")),
        "providers[0].dpop"
    );
    assert_eq!(
        field(&|c| c["providers"][0]["dpop_algorithms"] = json!(["HS256"])),
        "providers[0].dpop_algorithms[0]"
    );
    assert_eq!(
        field(&|c| c["providers"][0]["dpop_iat_window_seconds"] = json!(601)),
        "providers[0].dpop_iat_window_seconds"
    );
    assert_eq!(
        field(&|c| c["providers"][0]["dpop_iat_window_seconds"] = json!(0)),
        "providers[0].dpop_iat_window_seconds"
    );
    // Nonces need DPoP on, keys of at least 32 bytes, a bounded lifetime.
    let nonce = |n: Value| {
        move |c: &mut Value| {
            c["providers"][0]["dpop"] = json!("allowed");
            c["providers"][0]["dpop_nonce"] = n.clone();
        }
    };
    assert_eq!(
        field(&nonce(json!({"keys": ["c2hvcnQ"]}))),
        "providers[0].dpop_nonce.keys"
    );
    assert_eq!(
        field(&nonce(json!({"keys": ["not base64!"]}))),
        "providers[0].dpop_nonce.keys[0]"
    );
    assert_eq!(
        field(&nonce(
            json!({"keys": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "lifetime_seconds": 1})
        )),
        "providers[0].dpop_nonce.lifetime_seconds"
    );
    assert_eq!(
        field(&nonce(
            json!({"keys": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"], "other": 1})
        )),
        "providers[0].dpop_nonce.other"
    );
    assert_eq!(
        field(&|c| c["providers"][0]["dpop_nonce"] =
            json!({"keys": ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]})),
        "providers[0].dpop_nonce"
    );
}
