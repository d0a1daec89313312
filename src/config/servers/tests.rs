//! `servers`: each server compiled with the shared providers, its own
//! resource, audiences and rules; every refusal naming its field; the
//! configuration of one server unchanged.

use super::*;
use crate::config::{CallField, Mode};
use serde_json::{json, Value};

fn provider() -> Value {
    json!({"issuer": "https://idp.example.com/realms/mcp", "jwks": {"remote": {"cluster": "idp"}}})
}

fn server(name: &str, prefix: &str) -> Value {
    json!({
        "name": name,
        "match": {"path_prefix": prefix},
        "resource": format!("https://gw.example.com{prefix}/mcp"),
        "rules": [{"effect": "allow", "methods": ["*"]}]
    })
}

fn two() -> Value {
    json!({
        "providers": [provider()],
        "servers": [server("github", "/github"), server("jira", "/jira")]
    })
}

fn refused(edit: impl FnOnce(&mut Value)) -> ConfigError {
    let mut config = two();
    edit(&mut config);
    Gateway::from_value(&config).expect_err("configuration should be refused")
}

#[test]
fn each_server_is_its_own_resource_with_the_shared_providers() {
    let gateway = Gateway::from_value(&two()).expect("valid");
    assert!(gateway.listed);
    assert_eq!(gateway.unmatched, Unmatched::Refuse);
    let [github, jira] = &gateway.servers[..] else {
        panic!("two servers")
    };
    assert_eq!(github.policy.server_name.as_deref(), Some("github"));
    assert_eq!(
        (github.policy.server_index, jira.policy.server_index),
        (0, 1)
    );
    assert_eq!(
        github.policy.metadata_url,
        "https://gw.example.com/.well-known/oauth-protected-resource/github/mcp"
    );
    assert_eq!(
        jira.policy.metadata_paths[0],
        "/.well-known/oauth-protected-resource/jira/mcp"
    );
    // The audience is each server's own resource.
    assert_eq!(
        github.policy.providers[0].audiences,
        vec!["https://gw.example.com/github/mcp"]
    );
    assert_eq!(
        jira.policy.providers[0].audiences,
        vec!["https://gw.example.com/jira/mcp"]
    );
    assert_eq!(github.matcher.path_prefix, "/github");
    assert!(github.matcher.hosts.is_empty());
}

#[test]
fn a_configuration_of_one_server_reads_as_before() {
    let config = json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [provider()],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    });
    let gateway = Gateway::from_value(&config).expect("valid");
    assert!(!gateway.listed);
    assert_eq!(gateway.servers.len(), 1);
    assert_eq!(gateway.servers[0].matcher, ServerMatch::everything());
    assert_eq!(gateway.servers[0].policy.server_name, None);
    assert_eq!(
        gateway.servers[0].policy.providers[0].audiences,
        vec!["https://mcp.example.com/mcp"]
    );
    assert!(gateway.publish.is_none());
    // `unmatched` means nothing without servers.
    let mut config = config;
    config["unmatched"] = json!("pass");
    let error = Gateway::from_value(&config).expect_err("refused");
    assert_eq!(error.field, "unmatched");
}

#[test]
fn servers_set_their_own_keys() {
    let mut config = two();
    config["servers"][1]["audiences"] = json!(["jira-mcp", "https://gw.example.com/jira/mcp"]);
    config["servers"][1]["mode"] = json!("audit");
    config["servers"][1]["filter_lists"] = json!(false);
    config["servers"][1]["public_paths"] = json!(["/jira/healthz"]);
    config["servers"][1]["match"]["hosts"] =
        json!(["Jira.Example.com", "*.jira.example.com:8443", "[::1]:*"]);
    config["unmatched"] = json!("pass");
    config["max_body_bytes"] = json!(4096);
    let gateway = Gateway::from_value(&config).expect("valid");
    let jira = &gateway.servers[1];
    assert_eq!(
        jira.policy.providers[0].audiences,
        vec!["jira-mcp", "https://gw.example.com/jira/mcp"]
    );
    assert_eq!(jira.policy.mode, Mode::Audit);
    assert!(!jira.policy.filter_lists);
    assert_eq!(jira.policy.max_body_bytes, 4096);
    assert_eq!(gateway.servers[0].policy.mode, Mode::Enforce);
    assert_eq!(gateway.unmatched, Unmatched::Pass);
    assert_eq!(
        jira.matcher.hosts,
        vec![
            HostPattern {
                host: "jira.example.com".into(),
                wildcard: false,
                port: PortPattern::None
            },
            HostPattern {
                host: ".jira.example.com".into(),
                wildcard: true,
                port: PortPattern::Exact(8443)
            },
            HostPattern {
                host: "[::1]".into(),
                wildcard: false,
                port: PortPattern::Any
            },
        ]
    );
}

#[test]
fn publishing_is_read_with_its_headers() {
    let mut config = two();
    config["publish"] = json!({"headers": {"X-MCP-Tool": "name", "x-mcp-caller": "subject"}});
    let publish = Gateway::from_value(&config)
        .expect("valid")
        .publish
        .expect("publish");
    assert!(publish.filter_state);
    assert_eq!(
        publish.headers,
        vec![
            ("x-mcp-tool".to_string(), CallField::Name),
            ("x-mcp-caller".to_string(), CallField::Subject)
        ]
    );
}

/// An edit of the configuration, the field its refusal names, and words of
/// the message.
type Mistake = (Box<dyn FnOnce(&mut Value)>, &'static str, &'static str);

#[test]
fn each_mistake_is_refused_naming_its_field() {
    let cases: Vec<Mistake> = vec![
        (
            Box::new(|c| c["rules"] = json!([])),
            "rules",
            "belongs in each entry of `servers`",
        ),
        (
            Box::new(|c| c["resource"] = json!("https://x/mcp")),
            "resource",
            "belongs in each entry",
        ),
        (
            Box::new(|c| c["servers"] = json!([])),
            "servers",
            "must not be empty",
        ),
        (
            Box::new(|c| c["providers"][0]["audiences"] = json!(["x"])),
            "providers[0].audiences",
            "per server",
        ),
        (
            Box::new(|c| c["servers"][1]["name"] = json!("github")),
            "servers[1].name",
            "another server",
        ),
        (
            Box::new(|c| c["servers"][1]["name"] = json!("ji ra")),
            "servers[1].name",
            "letters, digits",
        ),
        (
            Box::new(|c| c["servers"][1]["resource"] = json!("https://gw.example.com/github/mcp")),
            "servers[1].resource",
            "another server's too",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["path_prefix"] = json!("/GitHub")),
            "servers[1].match",
            "same requests as server \"github\"",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["path_prefix"] = json!("/jira/")),
            "servers[1].match.path_prefix",
            "normal form",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["path_prefix"] = json!("/a/../jira")),
            "servers[1].match.path_prefix",
            "normal form",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["path_prefix"] = json!("/j%69ra")),
            "servers[1].match.path_prefix",
            "normal form",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["path_prefix"] = json!("jira")),
            "servers[1].match.path_prefix",
            "normal form",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["hosts"] = json!(["*"])),
            "servers[1].match.hosts[0]",
            "not a host name",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["hosts"] = json!(["a.com:99999"])),
            "servers[1].match.hosts[0]",
            "not a host name",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["hosts"] = json!(["a..com"])),
            "servers[1].match.hosts[0]",
            "not a host name",
        ),
        (
            Box::new(|c| c["servers"][1]["match"]["scheme"] = json!("https")),
            "servers[1].match.scheme",
            "unknown key",
        ),
        (
            Box::new(|c| c["servers"][1]["public_paths"] = json!(["/healthz"])),
            "servers[1].public_paths[0]",
            "not under the server's path_prefix",
        ),
        (
            Box::new(|c| c["servers"][1]["rules"][0]["effect"] = json!("maybe")),
            "servers[1].rules[0].effect",
            "is not one of",
        ),
        (
            Box::new(|c| c["servers"][0]["providers"] = json!([])),
            "servers[0].providers",
            "unknown key",
        ),
        (
            Box::new(|c| c["unmatched"] = json!("allow")),
            "unmatched",
            "is not one of",
        ),
        (
            Box::new(|c| c["publish"] = json!({"headers": {"x-mcp-tool": "tool"}})),
            "publish.headers.x-mcp-tool",
            "must be one of",
        ),
        (
            Box::new(|c| c["publish"] = json!({"headers": {"authorization": "name"}})),
            "publish.headers.authorization",
            "reserved",
        ),
        (
            Box::new(|c| {
                c["servers"][0]["identity_headers"] = json!({"x-mcp-subject": "sub"});
                c["publish"] = json!({"headers": {"X_MCP_SUBJECT": "subject"}});
            }),
            "publish.headers.x_mcp_subject",
            "identity header",
        ),
    ];
    for (edit, field, words) in cases {
        let error = refused(edit);
        assert_eq!(error.field, field, "{error}");
        assert!(error.message.contains(words), "{field}: {error}");
    }
}

#[test]
fn servers_apart_by_host_may_share_a_prefix() {
    let mut config = two();
    config["servers"][1]["match"] =
        json!({"hosts": ["jira.example.com"], "path_prefix": "/github"});
    assert!(Gateway::from_value(&config).is_ok());
    config["servers"][0]["match"]["hosts"] = json!(["JIRA.example.com:443"]);
    let error = Gateway::from_value(&config).expect_err("same host and prefix");
    assert_eq!(error.field, "servers[1].match");
}

#[test]
fn a_policy_of_one_server_is_not_read_from_a_list() {
    let error = Policy::from_value(&two()).expect_err("listed");
    assert_eq!(error.field, "servers");
}
