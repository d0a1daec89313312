//! Selection: each request to its server by host and path; look-alike paths
//! and hosts, which some component could read as another server's, refused.

use super::*;
use serde_json::json;

fn gateway(servers: serde_json::Value) -> Gateway {
    Gateway::from_value(&json!({
        "providers": [{"issuer": "https://idp.example.com", "jwks": {"remote": {"cluster": "idp"}}}],
        "servers": servers,
    }))
    .expect("valid")
}

fn server(name: &str, hosts: &[&str], prefix: &str, resource: &str) -> serde_json::Value {
    let mut matcher = json!({"path_prefix": prefix});
    if !hosts.is_empty() {
        matcher["hosts"] = json!(hosts);
    }
    json!({"name": name, "match": matcher, "resource": resource,
           "rules": [{"effect": "allow", "methods": ["*"]}]})
}

/// github under /github, jira under /jira, on any host.
fn by_path() -> Gateway {
    gateway(json!([
        server(
            "github",
            &[],
            "/github",
            "https://gw.example.com/github/mcp"
        ),
        server("jira", &[], "/jira", "https://gw.example.com/jira/mcp"),
    ]))
}

fn pick(gateway: &Gateway, authority: &str, target: &str) -> Selection {
    let head = RequestHead::new(
        "POST",
        target,
        vec![(":authority".to_string(), authority.to_string())],
    );
    select(gateway, &head)
}

const GITHUB: Selection = Selection::Server(0);
const JIRA: Selection = Selection::Server(1);

#[test]
fn a_path_under_a_prefix_is_its_servers_segment_by_segment() {
    let g = by_path();
    for (target, expected) in [
        ("/github/mcp", GITHUB),
        ("/github", GITHUB),
        ("/github/mcp/", GITHUB),
        ("/github/./mcp", GITHUB),
        ("/jira/mcp?x=/../github/mcp", JIRA),
        ("/jira/mcp", JIRA),
        ("/githubx/mcp", Selection::Unmatched),
        ("/gitlab/mcp", Selection::Unmatched),
        ("/", Selection::Unmatched),
        ("*", Selection::Unmatched),
        ("http://gw.example.com/github/mcp", Selection::Unmatched),
    ] {
        assert_eq!(pick(&g, "gw.example.com", target), expected, "{target}");
    }
}

#[test]
fn look_alike_paths_are_refused_as_ambiguous() {
    let g = by_path();
    for target in [
        "/github/../jira/mcp",
        "/github/%2e%2e/jira/mcp",
        "/github/%252e%252e/jira/mcp",
        "/github\\..\\jira/mcp",
        "//github/mcp",
        "/GitHub/mcp",
        "/GITHUB/mcp",
        "/%67ithub/mcp",
        "/github%2Fmcp",
        "/github;v=1/mcp",
        "/jira/../GitHub/mcp",
    ] {
        assert_eq!(
            pick(&g, "gw.example.com", target),
            Selection::Ambiguous,
            "{target}"
        );
    }
}

#[test]
fn a_catch_all_server_does_not_take_another_servers_look_alikes() {
    let g = gateway(json!([
        server(
            "github",
            &[],
            "/github",
            "https://gw.example.com/github/mcp"
        ),
        server("rest", &[], "/", "https://gw.example.com/mcp"),
    ]));
    assert_eq!(pick(&g, "gw", "/other/mcp"), Selection::Server(1));
    assert_eq!(pick(&g, "gw", "/github/mcp"), Selection::Server(0));
    // As sent it is the catch-all's; read leniently, github's.
    assert_eq!(pick(&g, "gw", "/%67ithub/mcp"), Selection::Ambiguous);
    assert_eq!(pick(&g, "gw", "/x/../github/mcp"), Selection::Ambiguous);
}

#[test]
fn hosts_pick_first_then_the_longest_prefix() {
    let g = gateway(json!([
        server("any", &[], "/", "https://gw.example.com/mcp"),
        server(
            "wild",
            &["*.example.com:*"],
            "/",
            "https://w.example.com/mcp"
        ),
        server(
            "exact",
            &["a.example.com"],
            "/",
            "https://a.example.com/mcp"
        ),
        server(
            "deep",
            &["a.example.com"],
            "/deep",
            "https://a.example.com/deep/mcp"
        ),
    ]));
    assert_eq!(pick(&g, "a.example.com", "/mcp"), Selection::Server(2));
    assert_eq!(pick(&g, "A.Example.COM", "/mcp"), Selection::Server(2));
    assert_eq!(pick(&g, "a.example.com", "/deep/mcp"), Selection::Server(3));
    assert_eq!(pick(&g, "b.example.com:8443", "/mcp"), Selection::Server(1));
    assert_eq!(pick(&g, "example.com", "/mcp"), Selection::Server(0));
    assert_eq!(pick(&g, "other.org", "/mcp"), Selection::Server(0));
}

#[test]
fn host_look_alikes_and_ports_are_not_another_hosts() {
    let g = gateway(json!([
        server(
            "a",
            &["a.example.com", "a.example.com:8443"],
            "/",
            "https://a.example.com/mcp"
        ),
        server("v6", &["[::1]:*"], "/", "https://v6.example.com/mcp"),
    ]));
    assert_eq!(pick(&g, "a.example.com", "/mcp"), Selection::Server(0));
    assert_eq!(pick(&g, "a.example.com:8443", "/mcp"), Selection::Server(0));
    assert_eq!(pick(&g, "[::1]:10000", "/mcp"), Selection::Server(1));
    assert_eq!(pick(&g, "[::1]", "/mcp"), Selection::Server(1));
    // Another port, a trailing dot: what a lenient virtual host could take
    // as a.example.com is refused, not passed on as no server's.
    assert_eq!(pick(&g, "a.example.com:9999", "/mcp"), Selection::Ambiguous);
    assert_eq!(pick(&g, "a.example.com.", "/mcp"), Selection::Ambiguous);
    assert_eq!(pick(&g, "b.example.com", "/mcp"), Selection::Unmatched);
    assert_eq!(pick(&g, "", "/mcp"), Selection::Unmatched);
    // Host takes `host` when there is no `:authority`.
    let head = RequestHead::new(
        "POST",
        "/mcp",
        vec![("host".into(), "a.example.com".into())],
    );
    assert_eq!(select(&g, &head), Selection::Server(0));
}

#[test]
fn each_servers_metadata_uri_is_its_own() {
    let g = by_path();
    assert_eq!(
        pick(&g, "gw", "/.well-known/oauth-protected-resource/github/mcp"),
        GITHUB
    );
    assert_eq!(
        pick(&g, "gw", "/.well-known/oauth-protected-resource/jira/mcp"),
        JIRA
    );
    // The root document would name one server of two: none.
    assert_eq!(
        pick(&g, "gw", "/.well-known/oauth-protected-resource"),
        Selection::Unmatched
    );
    let apart = gateway(json!([
        server(
            "github",
            &["github.example.com"],
            "/",
            "https://github.example.com/mcp"
        ),
        server(
            "jira",
            &["jira.example.com"],
            "/",
            "https://jira.example.com/mcp"
        ),
    ]));
    assert_eq!(
        pick(
            &apart,
            "jira.example.com",
            "/.well-known/oauth-protected-resource"
        ),
        Selection::RootMetadata(1)
    );
    assert_eq!(
        pick(
            &apart,
            "jira.example.com",
            "/.well-known/oauth-protected-resource/mcp"
        ),
        Selection::Server(1)
    );
    assert_eq!(
        pick(
            &apart,
            "other.example.com",
            "/.well-known/oauth-protected-resource/mcp"
        ),
        Selection::Unmatched
    );
}

#[test]
fn one_server_without_a_list_takes_every_request() {
    let policy = crate::config::Policy::from_value(&json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [{"issuer": "https://idp", "jwks": {"remote": {"cluster": "idp"}}}],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    }))
    .expect("valid");
    let g = Gateway::single(policy);
    for target in ["/mcp", "//x/../mcp", "/%2e%2e", "*"] {
        assert_eq!(
            pick(&g, "anything", target),
            Selection::Server(0),
            "{target}"
        );
    }
}
