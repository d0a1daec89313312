//! The `mcp-authz` command line, run as a user runs it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

const ISS: &str = "https://idp.example.com/realms/mcp";
const REMOTE_ISS: &str = "https://login.example.org";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const NOW: u64 = 1_750_000_000;

struct Keys {
    inline: RS256KeyPair,
    remote: RS256KeyPair,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        inline: RS256KeyPair::generate(2048).unwrap().with_key_id("k1"),
        remote: RS256KeyPair::generate(2048).unwrap().with_key_id("r1"),
    })
}

fn jwks(pair: &RS256KeyPair, kid: &str) -> Value {
    let c = pair.public_key().to_components();
    json!({"keys": [{"kty": "RSA", "kid": kid, "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e)}]})
}

fn config() -> Value {
    json!({
        "resource": RESOURCE,
        "scopes_supported": ["mcp:read", "mcp:write"],
        "resource_name": "Example MCP server",
        "providers": [
            {"issuer": ISS, "jwks": {"inline": jwks(&keys().inline, "k1")}},
            {"issuer": REMOTE_ISS, "jwks": {"remote": {"cluster": "idp", "url": "https://login.example.org/keys"}}}
        ],
        "rules": [
            {"name": "everyone lists", "effect": "allow", "methods": ["initialize", "ping", "tools/list"]},
            {"name": "readers read", "effect": "allow", "methods": ["tools/call"], "names": ["get_*", "search"], "roles": ["reader", "admin"], "scopes": ["mcp:read"]},
            {"name": "admins write", "effect": "allow", "methods": ["tools/call"], "names": ["*"], "roles": ["admin"], "scopes": ["mcp:write"]},
            {"name": "nobody deletes", "effect": "deny", "methods": ["tools/call"], "names": ["delete_*"]}
        ],
        "identity_headers": {"x-mcp-subject": "sub", "x-mcp-roles": "$roles"}
    })
}

/// A file under the temporary directory, private to this test process.
fn temp_file(name: &str, contents: &str) -> String {
    let dir: PathBuf = std::env::temp_dir().join(format!("mcp-authz-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

/// Written once: tests run in parallel and must not see a half-written file.
fn config_file() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| temp_file("config.json", &config().to_string()))
        .clone()
}

fn claims(iss: &str, roles: &[&str], scope: &str) -> Value {
    json!({
        "iss": iss, "aud": RESOURCE, "sub": "alice", "client_id": "cli",
        "roles": roles, "scope": scope, "iat": NOW - 10, "exp": NOW + 300,
    })
}

fn sign(pair: &RS256KeyPair, payload: Value) -> String {
    let custom: Map<String, Value> = payload.as_object().unwrap().clone();
    let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(1));
    claims.issued_at = None;
    claims.expires_at = None;
    claims.invalid_before = None;
    pair.sign(claims).unwrap()
}

fn tool_call(id: u64, name: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}}})
        .to_string()
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-authz"))
        .args(args)
        .output()
        .expect("run mcp-authz");
    Run {
        status: output.status.code().expect("exit status"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

fn explain(token: &str, body: &str, extra: &[&str]) -> Run {
    let config = config_file();
    let now = NOW.to_string();
    let mut args = vec![
        "explain", "--config", &config, "--token", token, "--body", body, "--now", &now,
    ];
    args.extend_from_slice(extra);
    let run = run(&args);
    assert_token_not_shown(&run, token);
    run
}

fn assert_token_not_shown(run: &Run, token: &str) {
    let signature = token.rsplit('.').next().unwrap();
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains(token), "the token was printed:\n{text}");
        assert!(
            !text.contains(signature),
            "the signature was printed:\n{text}"
        );
    }
}

#[test]
fn check_accepts_a_good_configuration() {
    let run = run(&["check", &config_file()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("ok: {RESOURCE}, 2 provider(s), 4 rule(s)\n")
    );
}

#[test]
fn check_refuses_a_wrong_configuration_naming_the_field() {
    let mut bad = config();
    bad["rules"][1]["scope"] = json!(["mcp:read"]);
    let path = temp_file("bad-rule.json", &bad.to_string());
    let run = run(&["check", &path]);
    assert_eq!(run.status, 1);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("`rules[1].scope`"), "{}", run.stderr);

    let mut bad = config();
    bad["rules"] = json!([]);
    let run = self::run(&["check", &bad.to_string()]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .contains("configuration field `rules`: must not be empty"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_usage_errors_exit_2() {
    assert_eq!(run(&["check"]).status, 2);
    assert_eq!(run(&["frobnicate"]).status, 2);
    let missing = run(&["check", "/nonexistent/mcp-authz.json"]);
    assert_eq!(missing.status, 2);
    assert!(
        missing.stderr.contains("no such file"),
        "{}",
        missing.stderr
    );
}

#[test]
fn metadata_prints_the_document_built_from_the_resource() {
    let run = run(&["metadata", &config_file()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let doc: Value = serde_json::from_str(&run.stdout).expect("stdout is the document alone");
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(doc["authorization_servers"], json!([ISS, REMOTE_ISS]));
    assert_eq!(doc["scopes_supported"], json!(["mcp:read", "mcp:write"]));
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert!(run.stdout.contains("\n  \"resource\""), "pretty-printed");
    // The metadata URL is the path-inserted form of the configured resource.
    assert!(
        run.stderr
            .contains("served at https://mcp.example.com/.well-known/oauth-protected-resource/mcp"),
        "{}",
        run.stderr
    );
}

#[test]
fn explain_allowed_call_names_the_rule_and_the_upstream_headers() {
    let token = sign(&keys().inline, claims(ISS, &["reader"], "mcp:read"));
    let body = temp_file("get-x.json", &tool_call(1, "get_x"));
    let run = explain(&token, &body, &[]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    for expected in [
        "request: POST /mcp\n",
        &format!("  issuer: {ISS}\n"),
        "  sub:    alice\n",
        "  client: cli\n",
        "  roles:  reader\n",
        "  scopes: mcp:read\n",
        "call: method \"tools/call\", name \"get_x\", id 1\n",
        "  rule 0 allow \"everyone lists\": does not match\n",
        "  rule 1 allow \"readers read\": matches, caller satisfies it\n",
        "  rule 2 allow \"admins write\": matches, caller does not satisfy it: needs a role of admin; lacks scopes mcp:write\n",
        "  rule 3 deny  \"nobody deletes\": does not match\n",
        "decision: allowed by rule \"readers read\"\n",
        "  remove: x-mcp-roles, x-mcp-subject, authorization\n",
        "  set: x-mcp-roles: reader\n",
        "  set: x-mcp-subject: alice\n",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // A client that asks for compression: the upstream is not asked.
    let run = explain(&token, &body, &["--header", "Accept-Encoding: gzip"]);
    assert!(
        run.stdout
            .contains("  remove: x-mcp-roles, x-mcp-subject, authorization, accept-encoding\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn explain_denied_call_prints_403_and_the_json_rpc_error_with_the_id() {
    let token = sign(
        &keys().inline,
        claims(ISS, &["admin"], "mcp:read mcp:write"),
    );
    let run = explain(&token, &tool_call(7, "delete_x"), &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(out.contains("  rule 3 deny  \"nobody deletes\": matches, caller satisfies it\n"));
    assert!(
        out.contains("decision: refused: forbidden by rule \"nobody deletes\"\n"),
        "{out}"
    );
    assert!(out.contains("answer: HTTP 403\n"), "{out}");
    assert!(out.contains(
        r#"  body: {"error":{"code":-32003,"message":"Forbidden: not allowed by policy"},"id":7,"jsonrpc":"2.0"}"#
    ), "{out}");
}

#[test]
fn explain_scope_challenge_prints_insufficient_scope() {
    let token = sign(&keys().inline, claims(ISS, &["reader"], ""));
    let run = explain(&token, &tool_call(3, "search"), &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("decision: refused: insufficient_scope by rule \"readers read\"\n"),
        "{out}"
    );
    assert!(out.contains(
        "  www-authenticate: Bearer error=\"insufficient_scope\", scope=\"mcp:read\", resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\"\n"
    ), "{out}");
    assert!(out.contains("\"id\":3"), "{out}");
}

#[test]
fn explain_expired_token_gets_invalid_token_challenge() {
    let mut payload = claims(ISS, &["reader"], "mcp:read");
    payload["exp"] = json!(NOW - 120);
    let token = sign(&keys().inline, payload);
    let token_file = temp_file("expired.jwt", &format!("{token}\n"));
    let run = explain(&token_file, &tool_call(1, "get_x"), &[]);
    assert_token_not_shown(&run, &token);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.contains("identity: none (token refused: token expired)\n"),
        "{out}"
    );
    assert!(out.contains("answer: HTTP 401\n"), "{out}");
    assert!(
        out.contains("error=\"invalid_token\", error_description=\"token expired\""),
        "{out}"
    );
    assert!(!out.contains("call:"), "the body is never reached:\n{out}");
}

#[test]
fn explain_without_a_token_gets_the_discovery_challenge() {
    let config = config_file();
    let run = run(&[
        "explain",
        "--config",
        &config,
        "--body",
        &tool_call(1, "get_x"),
    ]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("identity: none (no bearer token)\n"));
    assert!(run.stdout.contains(
        "  www-authenticate: Bearer resource_metadata=\"https://mcp.example.com/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read mcp:write\"\n"
    ), "{}", run.stdout);
}

#[test]
fn explain_remote_provider_needs_and_uses_jwks() {
    let token = sign(&keys().remote, claims(REMOTE_ISS, &["reader"], "mcp:read"));
    let body = tool_call(2, "get_x");

    let without = explain(&token, &body, &[]);
    assert_eq!(without.status, 2, "{}{}", without.stdout, without.stderr);
    assert!(without.stderr.contains("--jwks"), "{}", without.stderr);

    let jwks_file = temp_file("remote-jwks.json", &jwks(&keys().remote, "r1").to_string());
    let with = explain(&token, &body, &["--jwks", &jwks_file]);
    assert_eq!(with.status, 0, "{}{}", with.stdout, with.stderr);
    assert!(with.stdout.contains(&format!("  issuer: {REMOTE_ISS}\n")));
    assert!(with
        .stdout
        .contains("decision: allowed by rule \"readers read\"\n"));

    // The remote keys never stand in for an inline provider's.
    let forged = sign(
        &keys().remote,
        claims(ISS, &["admin"], "mcp:read mcp:write"),
    );
    let run = explain(&forged, &body, &["--jwks", &jwks_file]);
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(run.stdout.contains("answer: HTTP 401\n"));
}

#[test]
fn explain_metadata_request_and_headers_follow_the_filter() {
    let token = sign(&keys().inline, claims(ISS, &["reader"], "mcp:read"));
    let run = explain(
        &token,
        "",
        &[
            "--method",
            "GET",
            "--path",
            "/.well-known/oauth-protected-resource/mcp",
        ],
    );
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("answer: HTTP 200\n"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("\"resource\":\"{RESOURCE}\"")));

    // An Mcp-Name header that disagrees with the body: 400 HeaderMismatch.
    let run = explain(
        &token,
        &tool_call(4, "get_x"),
        &[
            "--header",
            "Mcp-Method: tools/call",
            "--header",
            "Mcp-Name: search",
        ],
    );
    assert_eq!(run.status, 1, "{}", run.stdout);
    assert!(run.stdout.contains("answer: HTTP 400\n"));
    assert!(run.stdout.contains("-32020"), "{}", run.stdout);

    // The wrong content type: 415 before the body is read.
    let run = explain(
        &token,
        &tool_call(5, "get_x"),
        &["--header", "content-type: text/plain"],
    );
    assert_eq!(run.status, 1);
    assert!(run.stdout.contains("answer: HTTP 415\n"), "{}", run.stdout);
}

/// A configuration whose provider also introspects opaque tokens, and whose
/// upstream gets an exchanged token.
fn exchanging_config_file() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let mut c = config();
        c["providers"][0]["introspection"] = json!({"cluster": "idp",
            "url": "https://idp.example.com/introspect", "client_id": "gw", "client_secret": "s3cr3t-value"});
        c["upstream_token"] = json!({"provider": ISS, "cluster": "idp",
            "token_endpoint": "https://idp.example.com/token", "client_id": "gw",
            "client_secret": "s3cr3t-value", "audience": "downstream-api"});
        temp_file("exchanging.json", &c.to_string())
    })
    .clone()
}

#[test]
fn explain_names_the_exchange_and_stops_at_an_opaque_token() {
    let config = exchanging_config_file();
    let now = NOW.to_string();
    let token = sign(&keys().inline, claims(ISS, &["reader"], "mcp:read"));
    let body = tool_call(1, "get_weather");
    let allowed = run(&[
        "explain", "--config", &config, "--token", &token, "--body", &body, "--now", &now,
    ]);
    assert_eq!(allowed.status, 0, "{}{}", allowed.stdout, allowed.stderr);
    assert!(
        allowed
            .stdout
            .contains("set: authorization: a token exchanged for downstream-api"),
        "{}",
        allowed.stdout
    );
    assert_token_not_shown(&allowed, &token);
    let opaque = run(&[
        "explain",
        "--config",
        &config,
        "--token",
        "opaque-token-1",
        "--body",
        &body,
        "--now",
        &now,
    ]);
    assert_eq!(opaque.status, 2, "{}{}", opaque.stdout, opaque.stderr);
    assert!(
        opaque.stderr.contains("would ask the authorization server"),
        "{}",
        opaque.stderr
    );
    for text in [
        &allowed.stdout,
        &allowed.stderr,
        &opaque.stdout,
        &opaque.stderr,
    ] {
        assert!(!text.contains("s3cr3t-value"), "the secret was printed");
    }
}

#[test]
fn check_names_introspection_dpop_and_the_exchange_but_no_secret() {
    let mut c: Value =
        serde_json::from_str(&std::fs::read_to_string(exchanging_config_file()).expect("config"))
            .expect("json");
    c["providers"][0]["dpop"] = json!("allowed");
    let path = temp_file("exchanging-dpop.json", &c.to_string());
    let listed = run(&["check", &path]);
    assert_eq!(listed.status, 0, "{}", listed.stderr);
    for line in [
        format!("providers[0] {ISS:?} introspects opaque tokens at https://idp.example.com/introspect through cluster \"idp\" as client \"gw\" (client_secret_basic), answers kept up to 60 s\n"),
        format!("providers[0] {ISS:?} dpop allowed: a token bound to a key (cnf.jkt, in a JWT or an introspection answer) needs its proof\n"),
        "upstream_token: the tokens of providers[0] exchanged for audience \"downstream-api\" at https://idp.example.com/token through cluster \"idp\" as client \"gw\" (client_secret_basic), sent in authorization, reused until shortly before they expire\n".to_string(),
    ] {
        assert!(listed.stdout.contains(&line), "{line}{}", listed.stdout);
    }
    assert!(
        !listed.stdout.contains("s3cr3t-value"),
        "the secret was printed"
    );
}

#[test]
fn check_lists_each_rule_condition_as_compiled() {
    let mut conditional = config();
    conditional["rules"][1]["when"] = json!("request.arguments.city != 'Atlantis'");
    conditional["rules"][2]["when"] = json!("'admin' in token.roles");
    conditional["scope_implies"] = json!({"mcp:write": ["mcp:read"]});
    let path = temp_file("conditional.json", &conditional.to_string());
    let listed = run(&["check", &path]);
    assert_eq!(listed.status, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains(
        "rules[1] \"readers read\" when request.arguments.city != 'Atlantis' (reads the arguments: lists keep the item, calls decide)\n"
    ), "{}", listed.stdout);
    assert!(listed.stdout.contains(
        "rules[2] \"admins write\" when 'admin' in token.roles (decided in lists and calls alike)\n"
    ), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("scope mcp:write implies mcp:read\n"),
        "{}",
        listed.stdout
    );
    // A misspelt variable is refused, naming the rule.
    conditional["rules"][1]["when"] = json!("request.argument.city != 'Atlantis'");
    let path = temp_file("misspelt.json", &conditional.to_string());
    let refused = run(&["check", &path]);
    assert_eq!(refused.status, 1);
    assert!(
        refused.stderr.contains("`rules[1].when`"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("has no field `argument`"),
        "{}",
        refused.stderr
    );
}

#[test]
fn explain_shows_the_condition_that_decided_and_its_value() {
    let mut conditional = config();
    conditional["rules"][1]["when"] = json!("request.arguments.city != 'Atlantis'");
    let path = temp_file("conditional-explain.json", &conditional.to_string());
    let token = sign(&keys().inline, claims(ISS, &["reader"], "mcp:read"));
    let body = |city: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "get_weather", "arguments": {"city": city}}})
        .to_string()
    };
    let explain_with = |body: String| {
        run(&[
            "explain",
            "--config",
            &path,
            "--token",
            &token,
            "--body",
            &body,
            "--now",
            &NOW.to_string(),
        ])
    };
    let run_ok = explain_with(body("Oslo"));
    assert_eq!(run_ok.status, 0, "{}{}", run_ok.stdout, run_ok.stderr);
    assert!(
        run_ok
            .stdout
            .contains("    when request.arguments.city != 'Atlantis' => true\n"),
        "{}",
        run_ok.stdout
    );
    assert!(run_ok
        .stdout
        .contains("decision: allowed by rule \"readers read\"\n"));
    let refused = explain_with(body("Atlantis"));
    assert_eq!(refused.status, 1, "{}", refused.stdout);
    assert!(
        refused
            .stdout
            .contains("    when request.arguments.city != 'Atlantis' => false\n"),
        "{}",
        refused.stdout
    );
    let missing = explain_with(
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_weather", "arguments": {}}})
        .to_string(),
    );
    assert_eq!(missing.status, 1);
    assert!(
        missing
            .stdout
            .contains("could not be evaluated (counts against the caller)"),
        "{}",
        missing.stdout
    );
}

// --- several servers (README "Several servers behind one filter") ---

const GITHUB: &str = "https://mcp.example.com/github/mcp";
const JIRA: &str = "https://mcp.example.com/jira/mcp";

/// Two servers sharing the inline provider, the call published as a header.
fn servers_file() -> String {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let server = |name: &str, resource: &str, names: &[&str]| {
            json!({"name": name, "match": {"path_prefix": format!("/{name}")}, "resource": resource,
                   "rules": [{"name": format!("{name} readers"), "effect": "allow", "methods": ["tools/call"],
                              "names": names, "roles": ["reader"]}]})
        };
        let config = json!({
            "providers": [{"issuer": ISS, "jwks": {"inline": jwks(&keys().inline, "k1")}}],
            "servers": [server("github", GITHUB, &["get_*"]), server("jira", JIRA, &["search_issues"])],
            "publish": {"headers": {"x-mcp-tool": "name"}}
        });
        temp_file("servers.json", &config.to_string())
    })
    .clone()
}

fn token_for(audience: &str) -> String {
    let mut payload = claims(ISS, &["reader"], "mcp:read");
    payload["aud"] = json!(audience);
    sign(&keys().inline, payload)
}

#[test]
fn check_lists_each_server_with_its_match() {
    let run = run(&["check", &servers_file()]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!(
            "ok: server github (any host, /github): {GITHUB}, 1 provider(s), 1 rule(s)\n\
             ok: server jira (any host, /jira): {JIRA}, 1 provider(s), 1 rule(s)\n"
        )
    );
}

#[test]
fn metadata_prints_the_named_servers_document() {
    let jira = run(&["metadata", &servers_file(), "jira"]);
    assert_eq!(jira.status, 0, "{}", jira.stderr);
    let doc: Value = serde_json::from_str(&jira.stdout).expect("the document");
    assert_eq!(doc["resource"], JIRA);
    assert!(
        jira.stderr.contains(
            "served at https://mcp.example.com/.well-known/oauth-protected-resource/jira/mcp (request paths: /.well-known/oauth-protected-resource/jira/mcp)"
        ),
        "{}",
        jira.stderr
    );
    let unknown = run(&["metadata", &servers_file(), "gitlab"]);
    assert_eq!(unknown.status, 2);
    assert!(
        unknown.stderr.contains("no server named"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn explain_picks_the_server_by_path_and_refuses_anothers_token() {
    let config = servers_file();
    let now = NOW.to_string();
    let body = tool_call(1, "search_issues");
    let token = token_for(JIRA);
    let at = |path: &str, token: &str| {
        run(&[
            "explain", "--config", &config, "--token", token, "--body", &body, "--now", &now,
            "--path", path,
        ])
    };
    let allowed = at("/jira/mcp", &token);
    assert_eq!(allowed.status, 0, "{}{}", allowed.stdout, allowed.stderr);
    for expected in [
        &format!("server: jira ({JIRA})\n"),
        "decision: allowed by rule \"jira readers\"\n",
        "  set: x-mcp-tool: search_issues\n",
    ] {
        assert!(
            allowed.stdout.contains(expected),
            "missing {expected:?} in:\n{}",
            allowed.stdout
        );
    }
    // The jira token at github: refused by audience.
    let refused = at("/github/mcp", &token);
    assert_eq!(refused.status, 1);
    assert!(
        refused.stdout.contains("server: github"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("token audience not accepted"),
        "{}",
        refused.stdout
    );
    // A look-alike path, and a path no server takes.
    let ambiguous = at("/github/../jira/mcp", &token);
    assert_eq!(ambiguous.status, 1);
    assert!(
        ambiguous.stdout.contains("server: none takes this request"),
        "{}",
        ambiguous.stdout
    );
    assert!(
        ambiguous.stdout.contains("answer: HTTP 400"),
        "{}",
        ambiguous.stdout
    );
    let nowhere = at("/gitlab/mcp", &token);
    assert!(
        nowhere.stdout.contains("answer: HTTP 404"),
        "{}",
        nowhere.stdout
    );
    assert_token_not_shown(&allowed, &token);
}
