//! Properties of the rule engine and of list filtering, over generated rule
//! sets, identities and calls.

use mcp_authz::config::{Effect, Policy};
use mcp_authz::gate;
use mcp_authz::identity::Identity;
use mcp_authz::lists::{self, Item, ListKind, PendingLists};
use mcp_authz::policy::{decide, Arguments, Call, Decision};
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

/// Conditions reading the arguments, the token and the call.
const CONDITIONS: &[&str] = &[
    "request.arguments.amount < 100",
    "request.arguments.tenant == token.claims.tenant",
    "has(request.arguments.dry) && request.arguments.dry",
    "'admin' in token.roles",
    "request.name.startsWith('get_')",
    "size(token.scopes) > 1",
];

/// A rule that may carry a condition.
fn rule_with_condition() -> impl Strategy<Value = Value> {
    (
        rule(),
        proptest::option::of(proptest::sample::select(CONDITIONS)),
    )
        .prop_map(|(mut r, when)| {
            if let Some(when) = when {
                r["when"] = json!(when);
            }
            r
        })
}

/// Arguments of every shape the conditions meet: fitting, wrong types, missing.
fn arguments() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(prop_oneof![
        (0i64..200).prop_map(|n| json!({"amount": n})),
        Just(json!({"amount": "many"})),
        proptest::sample::select(&["acme", "globex"][..]).prop_map(|t| json!({"tenant": t})),
        any::<bool>().prop_map(|b| json!({"dry": b})),
        Just(json!({"dry": "yes"})),
        Just(json!({})),
        Just(json!([1, 2])),
    ])
}

fn tenant_identity() -> impl Strategy<Value = Identity> {
    (
        identity(),
        proptest::option::of(proptest::sample::select(&["acme", "globex"][..])),
    )
        .prop_map(|(mut id, tenant)| {
            if let Some(t) = tenant {
                id.claims.insert("tenant".into(), json!(t));
            }
            id
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
        let decision = decide(&p.rules, &Call::plain(&method, name.as_deref()), &id, &mut Vec::new());
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
        if let Decision::Allow { rule: Some(rule) } = decide(&p.rules, &Call::plain(&method, name.as_deref()), &nobody, &mut Vec::new()) {
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
        let before = decide(&policy(&rules).rules, &Call::plain(&method, name.as_deref()), &id, &mut Vec::new()).is_allow();
        let after = decide(&policy(&with_deny).rules, &Call::plain(&method, name.as_deref()), &id, &mut Vec::new()).is_allow();
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
        let keep = |item: &Item| item.key().is_some_and(|n| gate::may_use(&p, &id, &[], 0, item.kind(), n, &mut Vec::new()));
        let filtered = lists::filter_json(answer.as_bytes(), &pending, &keep).expect("valid answer");
        let out: Value = serde_json::from_slice(&filtered.body).expect("json");
        let kept: Vec<&str> = out["result"]["tools"].as_array().expect("tools").iter()
            .map(|t| t["name"].as_str().expect("name")).collect();
        let expected: Vec<&str> = tools.iter().copied()
            .filter(|n| decide(&p.rules, &Call::plain("tools/call", Some(n)), &id, &mut Vec::new()).is_allow()).collect();
        prop_assert_eq!(kept, expected);
    }

    #[test]
    fn a_tool_some_call_may_reach_is_listed(
        rules in proptest::collection::vec(rule_with_condition(), 1..6), id in tenant_identity(),
        name in proptest::sample::select(NAMES), args in arguments()
    ) {
        let p = policy(&rules);
        let call = Call {
            method: "tools/call",
            name: Some(name),
            arguments: Arguments::Known(args.as_ref()),
            headers: &[],
            now_s: 0,
        };
        if decide(&p.rules, &call, &id, &mut Vec::new()).is_allow() {
            prop_assert!(gate::may_use(&p, &id, &[], 0, ListKind::Tools, name, &mut Vec::new()));
        }
    }

    #[test]
    fn a_condition_never_allows_more_than_its_rule_without_it(
        rules in proptest::collection::vec(rule_with_condition(), 1..6), id in tenant_identity(),
        (method, name) in call(), args in arguments()
    ) {
        // Dropping the conditions of the allow rules can only allow more;
        // dropping those of the deny rules, only less.
        let strip = |effect: &str| -> Vec<Value> {
            rules.iter().cloned().map(|mut r| {
                if r["effect"] == effect {
                    r.as_object_mut().expect("rule").remove("when");
                }
                r
            }).collect()
        };
        let call = Call {
            method: &method,
            name: name.as_deref(),
            arguments: Arguments::Known(args.as_ref()),
            headers: &[],
            now_s: 0,
        };
        let allowed = |rules: &[Value]| decide(&policy(rules).rules, &call, &id, &mut Vec::new()).is_allow();
        let with = allowed(&rules);
        prop_assert!(!with || allowed(&strip("allow")));
        prop_assert!(!allowed(&strip("deny")) || with);
    }
}
