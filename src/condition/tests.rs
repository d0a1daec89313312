//! Conditions: compiling, load-time refusals, evaluation, fail-closed errors.

use serde_json::json;

use super::*;

fn identity() -> Identity {
    let mut id = Identity::anonymous("https://idp.example");
    id.subject = Some("alice".into());
    id.client_id = Some("cli".into());
    id.roles = vec!["reader".into()];
    id.scopes = vec!["mcp:write".into()];
    id.implied_scopes = vec!["mcp:read".into()];
    id.claims = json!({"tenant": "acme", "sub": "alice", "groups": ["a", "b"]})
        .as_object()
        .cloned()
        .unwrap_or_default();
    id
}

fn eval(source: &str, arguments: Value) -> Result<bool, EvalError> {
    let identity = identity();
    let headers = vec![("x-tenant".to_string(), "acme".to_string())];
    let facts = Facts {
        method: "tools/call",
        name: Some("transfer"),
        arguments: Some(&arguments),
        headers: &headers,
        identity: &identity,
        now_s: 1_750_000_000,
    };
    Condition::compile(source).expect("compiles").eval(&facts)
}

#[test]
fn conditions_see_the_call_the_headers_and_the_token() {
    let args = json!({"amount": 50, "path": "/public/a.txt", "tenant": "acme", "ok": true});
    for source in [
        "request.arguments.amount < 100",
        "request.arguments.path.startsWith('/public/')",
        "request.arguments.tenant == token.claims.tenant",
        "request.method == 'tools/call' && request.name == 'transfer'",
        "request.headers['x-tenant'] == 'acme'",
        "token.sub == 'alice' && token.client_id == 'cli'",
        "'reader' in token.roles",
        "'mcp:read' in token.scopes && 'mcp:write' in token.scopes",
        "token.issuer.endsWith('idp.example')",
        "now > 1700000000",
        "request.arguments.ok",
        "has(request.arguments.amount) && !has(request.arguments.other)",
        "token.claims.groups.exists(g, g == 'b')",
        "size(request.arguments.path) > 3 && request.arguments.path.contains('a.txt')",
    ] {
        assert_eq!(eval(source, args.clone()), Ok(true), "{source}");
    }
    assert_eq!(
        eval("request.arguments.amount < 100", json!({"amount": 150})),
        Ok(false)
    );
    assert_eq!(
        eval("request.arguments.amount < 100", json!({"amount": 99.5})),
        Ok(true)
    );
}

#[test]
fn evaluation_errors_are_errors_not_answers() {
    assert_eq!(
        eval("request.arguments.amount < 100", json!({})),
        Err(EvalError::Failed)
    );
    assert_eq!(
        eval("request.arguments.amount < 100", json!({"amount": "lots"})),
        Err(EvalError::Failed)
    );
    assert_eq!(
        eval("request.arguments.amount", json!({"amount": 5})),
        Err(EvalError::NotBoolean)
    );
}

#[test]
fn bad_conditions_are_refused_when_the_configuration_loads() {
    for (source, why) in [
        ("request.arguments.amount <", "does not parse"),
        ("request.argument.amount < 100", "has no field `argument`"),
        ("token.email == 'x'", "has no field `email`"),
        ("user.name == 'x'", "unknown variable `user`"),
        (
            "request.arguments.path.matches('^/p')",
            "unknown function `matches`",
        ),
        (
            "timestamp('2020-01-01T00:00:00Z') < now",
            "unknown function `timestamp`",
        ),
        ("1 + 2", "must yield true or false"),
        ("'text'", "must yield true or false"),
        ("request.method", "must yield true or false"),
        ("[true]", "must yield true or false"),
    ] {
        let err = Condition::compile(source).expect_err(source);
        assert!(err.contains(why), "{source}: {err}");
    }
}

#[test]
fn comprehension_variables_are_in_scope_only_inside() {
    assert!(Condition::compile("request.arguments.items.all(i, i.price < 10)").is_ok());
    assert!(Condition::compile("request.arguments.items.all(i, true) && i.price < 10").is_err());
}

#[test]
fn argument_use_is_known() {
    let uses = |s: &str| Condition::compile(s).expect(s).uses_arguments();
    assert!(uses("request.arguments.amount < 100"));
    assert!(uses("has(request.arguments.x)"));
    assert!(uses("request == {}"));
    assert!(!uses("token.sub == 'alice'"));
    assert!(!uses("request.name == 'x' && 'a' in token.roles"));
}

#[test]
fn every_listed_function_exists_in_this_build() {
    let identity = identity();
    let facts = Facts {
        method: "m",
        name: None,
        arguments: None,
        headers: &[],
        identity: &identity,
        now_s: 0,
    };
    for (function, source) in [
        ("size", "size('ab') == 2"),
        ("contains", "'ab'.contains('a')"),
        ("startsWith", "'ab'.startsWith('a')"),
        ("endsWith", "'ab'.endsWith('b')"),
        ("string", "string(1) == '1'"),
        ("int", "int('2') == 2"),
        ("uint", "uint(2) == 2u"),
        ("double", "double(1) == 1.0"),
        ("bytes", "bytes('a') == b'a'"),
        ("bool", "bool('true')"),
        ("dyn", "dyn(1) == 1"),
        ("type", "type(1) == int"),
    ] {
        assert!(FUNCTIONS.contains(&function));
        let condition = Condition::compile(source).expect(source);
        assert_eq!(condition.eval(&facts), Ok(true), "{source}");
    }
    assert_eq!(FUNCTIONS.len(), 12);
}

fn eval_with_headers(source: &str, headers: &[(&str, &str)]) -> Result<bool, EvalError> {
    let identity = identity();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let arguments = json!({});
    let facts = Facts {
        method: "tools/call",
        name: Some("query"),
        arguments: Some(&arguments),
        headers: &headers,
        identity: &identity,
        now_s: 1_750_000_000,
    };
    Condition::compile(source).expect("compiles").eval(&facts)
}

#[test]
fn a_header_sent_twice_or_in_another_spelling_cannot_be_evaluated() {
    let own = "request.headers['x-tenant'] == token.claims.tenant";
    assert_eq!(eval_with_headers(own, &[("x-tenant", "acme")]), Ok(true));
    assert_eq!(eval_with_headers(own, &[("x-tenant", "globex")]), Ok(false));
    // The filter would read the first; a server may read the last, both
    // joined, or `x_tenant` as `x-tenant`.
    for headers in [
        &[("x-tenant", "acme"), ("x-tenant", "globex")][..],
        &[("x-tenant", "acme"), ("x_tenant", "globex")][..],
        &[("x_tenant", "globex"), ("x-tenant", "acme")][..],
        &[("x_tenant", "acme")][..],
    ] {
        assert_eq!(
            eval_with_headers(own, headers),
            Err(EvalError::Failed),
            "{headers:?}"
        );
    }
    // Every literal way of naming a header is watched.
    for source in [
        "request.headers.x_tenant == 'acme'",
        "has(request.headers.x_tenant)",
        "'x-tenant' in request.headers",
        "!('x-tenant' in request.headers)",
    ] {
        assert_eq!(
            eval_with_headers(source, &[("x-tenant", "acme"), ("x_tenant", "acme")]),
            Err(EvalError::Failed),
            "{source}"
        );
    }
    // Other headers may repeat: the condition does not read them.
    assert_eq!(
        eval_with_headers(
            own,
            &[("x-tenant", "acme"), ("cookie", "a=1"), ("cookie", "b=2")]
        ),
        Ok(true)
    );
    // Read as a whole, every header must be unambiguous.
    let any = "request.headers.exists(k, k == 'x-tenant')";
    assert_eq!(eval_with_headers(any, &[("x-tenant", "acme")]), Ok(true));
    assert_eq!(
        eval_with_headers(
            any,
            &[("x-tenant", "acme"), ("cookie", "a"), ("cookie", "b")]
        ),
        Err(EvalError::Failed)
    );
    assert_eq!(
        eval_with_headers("size(request) > 0", &[("x_other", "1")]),
        Err(EvalError::Failed)
    );
}

#[test]
fn values_of_different_types_never_compare_equal_or_unequal() {
    let deny_mallory = "request.arguments.to == 'mallory'";
    assert_eq!(eval(deny_mallory, json!({"to": "mallory"})), Ok(true));
    assert_eq!(eval(deny_mallory, json!({"to": "bob"})), Ok(false));
    // CEL itself answers false: a deny rule would not hold for a value a
    // lenient server reads as `mallory`.
    for to in [
        json!(["mallory"]),
        json!({"name": "mallory"}),
        json!(1),
        json!(true),
    ] {
        let args = json!({ "to": to });
        assert_eq!(
            eval(deny_mallory, args.clone()),
            Err(EvalError::Failed),
            "{args}"
        );
        assert_eq!(
            eval("request.arguments.to != 'mallory'", args.clone()),
            Err(EvalError::Failed),
            "{args}"
        );
        assert_eq!(
            eval("request.arguments.to in ['mallory', 'eve']", args.clone()),
            Err(EvalError::Failed),
            "{args}"
        );
        assert_eq!(
            eval("!(request.arguments.to == 'mallory')", args.clone()),
            Err(EvalError::Failed),
            "{args}"
        );
    }
    for (source, args, expected) in [
        ("request.arguments.to == null", json!({"to": ["x"]}), false),
        ("request.arguments.to != null", json!({"to": ["x"]}), true),
        ("request.arguments.n == 100", json!({"n": 100.0}), true),
        ("request.arguments.n == 100u", json!({"n": 100}), true),
        // Exact: 2^53 + 1 is not the double 2^53.
        (
            "request.arguments.n == 9007199254740993",
            json!({"n": 9007199254740992.0}),
            false,
        ),
        (
            "request.arguments.n == 9007199254740992",
            json!({"n": 9007199254740992.0}),
            true,
        ),
        (
            "request.arguments.tags == ['a', 'b']",
            json!({"tags": ["a", "b"]}),
            true,
        ),
        (
            "request.arguments.tags == ['a']",
            json!({"tags": ["a", "b"]}),
            false,
        ),
        (
            "request.arguments.o == {'k': 1}",
            json!({"o": {"k": 1.0}}),
            true,
        ),
        (
            "'b' in request.arguments.tags",
            json!({"tags": ["a", "b"]}),
            true,
        ),
        ("'b' in ['b', 1]", json!({}), true),
        ("'tenant' in token.claims", json!({}), true),
        (
            "type(request.arguments.to) == string",
            json!({"to": "x"}),
            true,
        ),
    ] {
        assert_eq!(
            eval(source, args.clone()),
            Ok(expected),
            "{source} on {args}"
        );
    }
    assert_eq!(
        eval("request.arguments.tags == [['a']]", json!({"tags": ["a"]})),
        Err(EvalError::Failed)
    );
    assert_eq!(eval("'c' in ['b', 1]", json!({})), Err(EvalError::Failed));
    assert_eq!(eval("1 in {'a': 1}", json!({})), Err(EvalError::Failed));
}
