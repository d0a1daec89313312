//! Properties of the rule engine and of list filtering, over generated rule
//! sets, identities and calls.

use mcp_authz::config::{Effect, Policy};
use mcp_authz::gate;
use mcp_authz::identity::Identity;
use mcp_authz::lists::{self, ListKind, PendingLists};
use mcp_authz::policy::{decide, Decision};
use proptest::prelude::*;
use serde_json::{json, Value};

const JWK: &str = r#"{"kty": "RSA", "kid": "p1", "use": "sig", "alg": "RS256", "n": "k-wPoxCzDeIkyAVju6SjSbwhxa2YlBB_7Vm01Aip6BF0EzOwNW1u4J7ougYJAmnJRMwlxgOqmX3XClCjS-yXyCV8bbcFtYaqYYaQKMjUiMvQuL-jUecFqg2S2f-XmPv6xsfULX4rr_OVkUaeTrx7cprCSOklv09Y9nWvRADz5v6nJeuEAkd-P4XvY8IjvIgUsErRI2NxQcTR89d9-JXriW9QKHvm8UZXvZvLKZ7o7TRvR0UzDbb1-UMXk4D1hmnErxVnjgsTIplpToFA8OR5YMrY6qbeQe1rMQbssftkXYwG-nAgJFZSpS2MDG8-Q0WcK2xZYcHEEYRy_guNT5JM1Q", "e": "AQAB"}"#;

const METHOD_GLOBS: &[&str] = &[
    "*",
    "tools/*",
    "tools/call",
    "prompts/get",
    "tools/list",
    "?ools/call",
];
const NAME_GLOBS: &[&str] = &["*", "get_*", "?et_a", "search", "delete_*", "set_*"];
const ROLES: &[&str] = &["reader", "admin", "ops"];
const SCOPES: &[&str] = &["s1", "s2", "s3"];
const METHODS: &[&str] = &["tools/call", "tools/list", "prompts/get", "ping"];
const NAMES: &[&str] = &["get_a", "get_b", "set_a", "delete_a", "search", "other"];

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(pool, 1..=pool.len().min(3))
        .prop_map(|v| v.into_iter().map(str::to_string).collect())
}

fn rule() -> impl Strategy<Value = Value> {
    (
        any::<bool>(),
        subset(METHOD_GLOBS),
        proptest::option::of(subset(NAME_GLOBS)),
        proptest::option::of(subset(ROLES)),
        proptest::option::of(subset(SCOPES)),
    )
        .prop_map(|(deny, methods, names, roles, scopes)| {
            let mut r = json!({"effect": if deny { "deny" } else { "allow" }, "methods": methods});
            if let Some(n) = names {
                r["names"] = json!(n);
            }
            if let Some(x) = roles {
                r["roles"] = json!(x);
            }
            if let Some(x) = scopes {
                r["scopes"] = json!(x);
            }
            r
        })
}

fn policy(rules: &[Value]) -> Policy {
    let jwk: Value = serde_json::from_str(JWK).expect("test key");
    Policy::from_value(&json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [{"issuer": "https://idp", "jwks": {"inline": {"keys": [jwk]}}}],
        "rules": rules,
    }))
    .expect("generated rules are valid configuration")
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        proptest::sample::subsequence(ROLES, 0..=3),
        proptest::sample::subsequence(SCOPES, 0..=3),
    )
        .prop_map(|(roles, scopes)| {
            let mut id = Identity::anonymous("https://idp");
            id.roles = roles.into_iter().map(str::to_string).collect();
            id.scopes = scopes.into_iter().map(str::to_string).collect();
            id
        })
}

fn call() -> impl Strategy<Value = (String, Option<String>)> {
    (
        proptest::sample::select(METHODS),
        proptest::option::of(proptest::sample::select(NAMES)),
    )
        .prop_map(|(m, n)| (m.to_string(), n.map(str::to_string)))
}

fn satisfied_matching_deny(p: &Policy, id: &Identity, method: &str, name: Option<&str>) -> bool {
    p.rules.iter().any(|r| {
        r.effect == Effect::Deny
            && r.methods.iter().any(|g| g.matches(method))
            && match (&r.names, name) {
                (None, _) => true,
                (Some(globs), Some(n)) => globs.iter().any(|g| g.matches(n)),
                (Some(_), None) => false,
            }
            && r.roles
                .as_ref()
                .is_none_or(|roles| roles.iter().any(|x| id.has_role(x)))
            && r.scopes
                .as_ref()
                .is_none_or(|scopes| scopes.iter().all(|x| id.has_scope(x)))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn deny_always_wins(rules in proptest::collection::vec(rule(), 1..6), id in identity(), (method, name) in call()) {
        let p = policy(&rules);
        let decision = decide(&p.rules, &method, name.as_deref(), &id);
        if satisfied_matching_deny(&p, &id, &method, name.as_deref()) {
            prop_assert!(matches!(decision, Decision::Forbidden { rule: Some(_) }), "{decision:?}");
        }
    }

    #[test]
    fn caller_without_roles_or_scopes_is_allowed_only_by_rules_requiring_none(
        rules in proptest::collection::vec(rule(), 1..6), (method, name) in call()
    ) {
        let p = policy(&rules);
        let nobody = Identity::anonymous("https://idp");
        if let Decision::Allow { rule: Some(rule) } = decide(&p.rules, &method, name.as_deref(), &nobody) {
            let r = p.rules.iter().find(|r| r.name == rule).expect("deciding rule exists");
            prop_assert!(r.roles.is_none() && r.scopes.is_none());
        }
    }

    #[test]
    fn adding_a_deny_rule_never_allows_more(
        rules in proptest::collection::vec(rule(), 1..6), extra in rule(), id in identity(), (method, name) in call()
    ) {
        let mut with_deny = rules.clone();
        let mut deny = extra;
        deny["effect"] = json!("deny");
        with_deny.push(deny);
        let before = decide(&policy(&rules).rules, &method, name.as_deref(), &id).is_allow();
        let after = decide(&policy(&with_deny).rules, &method, name.as_deref(), &id).is_allow();
        prop_assert!(!after || before);
    }

    #[test]
    fn list_filtering_keeps_exactly_the_callable_tools(
        rules in proptest::collection::vec(rule(), 1..6), id in identity(),
        tools in proptest::sample::subsequence(NAMES, 0..=NAMES.len())
    ) {
        let p = policy(&rules);
        let items: Vec<Value> = tools.iter().map(|n| json!({"name": n})).collect();
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": items}}).to_string();
        let pending: PendingLists = [(json!(1), ListKind::Tools)].into_iter().collect();
        let keep = |kind: ListKind, item: &Value| gate::may_use(&p, &id, kind, item);
        let filtered = lists::filter_json(answer.as_bytes(), &pending, &keep).expect("valid answer");
        let out: Value = serde_json::from_slice(&filtered.body).expect("json");
        let kept: Vec<&str> = out["result"]["tools"].as_array().expect("tools").iter()
            .map(|t| t["name"].as_str().expect("name")).collect();
        let expected: Vec<&str> = tools.iter().copied()
            .filter(|n| decide(&p.rules, "tools/call", Some(n), &id).is_allow()).collect();
        prop_assert_eq!(kept, expected);
    }
}
