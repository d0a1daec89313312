//! The machine with several servers and a published call: what is
//! published, counted and edited for each kind of verdict. (The hold
//! invariant over every order of callbacks is `tests/exchange_properties.rs`.)

use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::gate::{BadRequestKind, KeyRing, Reason};
use crate::shared_data::SharedMap;
use crate::token::tests::{claims, key_sets, sign, Signer, ISS, NOW};

const GITHUB: &str = "https://gw.example.com/github/mcp";
const JIRA: &str = "https://gw.example.com/jira/mcp";

/// github (enforce) and jira (audit), each with its own identity header.
fn gateway(unmatched: &str) -> Gateway {
    gateway_modes(unmatched, "audit")
}

fn gateway_modes(unmatched: &str, jira_mode: &str) -> Gateway {
    let server = |name: &str, resource: &str, mode: &str| {
        json!({"name": name, "match": {"path_prefix": format!("/{name}")}, "resource": resource,
               "mode": mode, "identity_headers": {format!("x-{name}-user"): "sub"},
               "rules": [{"name": "readers", "effect": "allow", "methods": ["tools/call", "tools/list"],
                          "names": ["get_*", "tools"], "roles": ["reader"]},
                         {"name": "listing", "effect": "allow", "methods": ["tools/list"]}]})
    };
    Gateway::from_value(&json!({
        "providers": [{"issuer": ISS, "jwks": {"remote": {"cluster": "idp"}}}],
        "servers": [server("github", GITHUB, "enforce"), server("jira", JIRA, jira_mode)],
        "unmatched": unmatched,
        "publish": {"headers": {"x-mcp-tool": "name"}}
    }))
    .expect("gateway")
}

/// The host: the request's body, the upstream's answer, and what tools
/// declare (remembered as the worker does).
struct Host {
    learned: std::cell::RefCell<std::collections::BTreeMap<String, Vec<ParamHeader>>>,
    body: Vec<u8>,
    response: Vec<u8>,
    shared: SharedMap,
}

impl super::Host for Host {
    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.shared
    }
    fn calls_in_flight(&self) -> usize {
        0
    }
    fn digest_key(&self) -> [u8; 32] {
        [7; 32]
    }
    fn request_body(&self, len: usize) -> Vec<u8> {
        self.body[..len.min(self.body.len())].to_vec()
    }
    fn response_body(&self, len: usize) -> Vec<u8> {
        self.response[..len.min(self.response.len())].to_vec()
    }
    fn fetch_keys(&mut self, _provider: usize) {}
    fn refetch_keys(&mut self, _provider: usize) -> bool {
        false
    }
    fn tool_headers(&self, tool: &str) -> Option<Vec<ParamHeader>> {
        self.learned.borrow().get(tool).cloned()
    }
}

impl Host {
    fn with_body(body: Vec<u8>) -> Host {
        Host {
            learned: Default::default(),
            body,
            response: Vec::new(),
            shared: SharedMap::default(),
        }
    }
}

/// One POST through the machine; the output of its last callback, and the
/// machine.
fn post(
    gateway: &Gateway,
    path: &str,
    audience: &str,
    body: serde_json::Value,
) -> (Output, Exchange) {
    let mut payload = claims();
    payload["aud"] = json!(audience);
    payload["roles"] = json!(["reader"]);
    let token = sign(Signer::RS256, Some("rsa1"), payload);
    let head = RequestHead::new(
        "POST",
        path,
        vec![
            ("content-type".into(), "application/json".into()),
            ("authorization".into(), format!("Bearer {token}")),
            ("x-mcp-tool".into(), "spoofed".into()),
            ("X_Mcp_Tool".into(), "spoofed".into()),
            ("x-github-user".into(), "mallory".into()),
        ],
    );
    let bytes = body.to_string().into_bytes();
    let ring = KeyRing {
        sets: vec![Some(Rc::new(key_sets().remove(0)))],
        generations: vec![1],
    };
    let mut cache = VerifiedTokenCache::new(4);
    let mut host = Host::with_body(bytes.clone());
    let mut env = Env {
        gateway,
        keys: &ring,
        cache: &mut cache,
        now_ms: NOW * 1000,
        host: &mut host,
    };
    let mut exchange = Exchange::new();
    let first = exchange.on_request_headers(&mut env, head, false);
    if exchange.verdict().is_some() {
        return (first, exchange);
    }
    let last = exchange.on_request_body(&mut env, bytes.len(), true);
    (last, exchange)
}

fn call(name: &str) -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name}})
}

fn published(output: &Output) -> Vec<(String, String)> {
    output
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .expect("published")
}

fn counted(output: &Output) -> Vec<Counter> {
    output
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Count(c, _) => Some(*c),
            _ => None,
        })
        .collect()
}

fn edits(output: &Output) -> gate::UpstreamHeaders {
    output
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::EditRequestHeaders(edits) => Some(edits.clone()),
            _ => None,
        })
        .expect("edits")
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn an_allowed_call_is_published_counted_for_its_server_and_set_as_a_header() {
    let g = gateway("refuse");
    let (output, exchange) = post(&g, "/github/mcp", GITHUB, call("get_weather"));
    assert_eq!(output.action, Action::Continue);
    assert_eq!(exchange.server(), Some(0));
    assert_eq!(
        published(&output),
        pairs(&[
            ("mcp_authz.server", "github"),
            ("mcp_authz.decision", "allow"),
            ("mcp_authz.method", "tools/call"),
            ("mcp_authz.name", "get_weather"),
            ("mcp_authz.subject", "user-1"),
            ("mcp_authz.client_id", "cli"),
            ("mcp_authz.issuer", ISS),
            ("mcp_authz.rule", "readers"),
        ])
    );
    assert!(counted(&output).contains(&Counter::ServerAllowed(0)));
    let edits = edits(&output);
    // The client's copies, in every spelling, out; the filter's in.
    for name in ["x-mcp-tool", "X_Mcp_Tool", "x-github-user"] {
        assert!(edits.remove.contains(&name.to_string()), "{name}");
    }
    assert!(edits
        .set
        .contains(&("x-mcp-tool".to_string(), "get_weather".to_string())));
    assert!(edits
        .set
        .contains(&("x-github-user".to_string(), "user-1".to_string())));
}

#[test]
fn a_refusal_is_published_with_its_reason_and_counted_for_its_server() {
    let g = gateway("refuse");
    // A token for jira at github: refused by audience, in github's name.
    let (output, _) = post(&g, "/github/mcp", JIRA, call("get_weather"));
    assert_eq!(output.action, Action::Hold);
    let state = published(&output);
    assert!(state.contains(&("mcp_authz.decision".into(), "deny".into())));
    assert!(state.contains(&("mcp_authz.reason".into(), "invalid_token".into())));
    assert!(state.contains(&("mcp_authz.server".into(), "github".into())));
    assert!(counted(&output).contains(&Counter::ServerDenied(0)));
    let log = output
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Log(_, line) => Some(line.clone()),
            _ => None,
        })
        .expect("decision log");
    assert!(log.contains(r#""server":"github""#), "{log}");
}

#[test]
fn a_server_in_audit_mode_lets_its_refusal_on_with_the_call_published() {
    let g = gateway("refuse");
    let (output, _) = post(&g, "/jira/mcp", JIRA, call("delete_project"));
    assert_eq!(output.action, Action::Continue);
    assert!(published(&output).contains(&("mcp_authz.decision".into(), "would_deny".into())));
    assert!(edits(&output)
        .set
        .contains(&("x-mcp-tool".to_string(), "delete_project".to_string())));
    assert!(counted(&output).contains(&Counter::ServerDenied(1)));
}

#[test]
fn no_servers_request_is_refused_or_passed_without_any_servers_headers() {
    let refused = gateway("refuse");
    let (output, exchange) = post(&refused, "/gitlab/mcp", GITHUB, call("get_weather"));
    assert_eq!(output.action, Action::Hold);
    assert_eq!(exchange.server(), None);
    assert!(counted(&output).contains(&Counter::Denied(Reason::NoServer)));
    assert!(published(&output).contains(&("mcp_authz.reason".into(), "no_server".into())));

    let passing = gateway("pass");
    let (output, _) = post(&passing, "/gitlab/mcp", GITHUB, call("get_weather"));
    assert_eq!(output.action, Action::Continue);
    assert!(counted(&output).contains(&Counter::UnmatchedPassed));
    assert_eq!(
        published(&output),
        pairs(&[("mcp_authz.decision", "unmatched")])
    );
    let edits = edits(&output);
    assert!(edits.set.is_empty());
    for name in ["x-mcp-tool", "X_Mcp_Tool", "x-github-user"] {
        assert!(edits.remove.contains(&name.to_string()), "{name}");
    }
    // Not the filter's route: its token stays.
    assert!(!edits.remove.contains(&"authorization".to_string()));
}

#[test]
fn a_look_alike_path_is_refused_whatever_the_mode_or_unmatched() {
    for unmatched in ["refuse", "pass"] {
        let g = gateway(unmatched);
        // As sent github's, read leniently jira's (which is in audit mode).
        let (output, _) = post(&g, "/github/../jira/mcp", JIRA, call("get_weather"));
        assert_eq!(output.action, Action::Hold, "{unmatched}");
        assert!(counted(&output).contains(&Counter::BadRequest(BadRequestKind::AmbiguousPath)));
    }
}

#[test]
fn a_batch_of_several_calls_is_refused_when_the_call_is_published() {
    let g = gateway("refuse");
    let batch = json!([call("get_weather"), call("get_forecast")]);
    let (output, _) = post(&g, "/github/mcp", GITHUB, batch);
    assert_eq!(output.action, Action::Hold);
    assert!(counted(&output).contains(&Counter::BadRequest(BadRequestKind::Batch)));
    // One call in a batch is one call.
    let (output, _) = post(&g, "/github/mcp", GITHUB, json!([call("get_weather")]));
    assert_eq!(output.action, Action::Continue);
}

#[test]
fn the_root_metadata_uri_is_the_only_servers_on_its_host() {
    let g = Gateway::from_value(&json!({
        "providers": [{"issuer": ISS, "jwks": {"remote": {"cluster": "idp"}}}],
        "servers": [
            {"name": "a", "match": {"hosts": ["a.example.com"]}, "resource": "https://a.example.com/mcp",
             "rules": [{"effect": "allow", "methods": ["*"]}]},
            {"name": "b", "match": {"hosts": ["b.example.com"]}, "resource": "https://b.example.com/mcp",
             "rules": [{"effect": "allow", "methods": ["*"]}]}
        ]
    }))
    .expect("gateway");
    let head = RequestHead::new(
        "GET",
        crate::servers::WELL_KNOWN,
        vec![(":authority".into(), "b.example.com".into())],
    );
    let ring = KeyRing::default();
    let mut cache = VerifiedTokenCache::new(1);
    let mut host = Host::with_body(Vec::new());
    let mut env = env(&g, &ring, &mut cache, &mut host);
    let mut exchange = Exchange::new();
    let output = exchange.on_request_headers(&mut env, head, true);
    let document = output
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::SendAnswer(a) => Some(a.clone()),
            _ => None,
        })
        .expect("answered");
    let doc: serde_json::Value = serde_json::from_slice(&document.body).expect("JSON");
    assert_eq!(doc["resource"], "https://b.example.com/mcp");
}

/// The machine's view of `g` at the tests' time.
fn env<'a>(
    g: &'a Gateway,
    ring: &'a KeyRing,
    cache: &'a mut VerifiedTokenCache,
    host: &'a mut Host,
) -> Env<'a> {
    Env {
        gateway: g,
        keys: ring,
        cache,
        now_ms: NOW * 1000,
        host,
    }
}

/// A 2026-07-28 POST at `path` with a reader's token for `aud`, through
/// `host`; with `answer`, that JSON answer comes back and what it teaches
/// is learned. Returns the request's verdict output.
fn through(
    g: &Gateway,
    host: &mut Host,
    path: &str,
    aud: &str,
    body: &serde_json::Value,
    answer: Option<&serde_json::Value>,
) -> Output {
    let mut payload = claims();
    payload["roles"] = json!(["reader"]);
    payload["aud"] = json!(aud);
    let token = sign(Signer::RS256, Some("rsa1"), payload);
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("authorization".into(), format!("Bearer {token}")),
        ("mcp-protocol-version".into(), "2026-07-28".into()),
        (
            "mcp-method".into(),
            body["method"].as_str().unwrap_or_default().into(),
        ),
    ];
    if let Some(name) = body["params"]["name"].as_str() {
        headers.push(("mcp-name".into(), name.into()));
    }
    let ring = KeyRing {
        sets: vec![Some(Rc::new(key_sets().remove(0)))],
        generations: vec![1],
    };
    let mut cache = VerifiedTokenCache::new(4);
    host.body = body.to_string().into_bytes();
    let len = host.body.len();
    if let Some(answer) = answer {
        host.response = answer.to_string().into_bytes();
    }
    let mut env = Env {
        gateway: g,
        keys: &ring,
        cache: &mut cache,
        now_ms: NOW * 1000,
        host,
    };
    let mut exchange = Exchange::new();
    exchange.on_request_headers(&mut env, RequestHead::new("POST", path, headers), false);
    let verdict = exchange.on_request_body(&mut env, len, true);
    if answer.is_some() {
        let head = ResponseHead::from_headers(&[
            (":status".into(), "200".into()),
            ("content-type".into(), "application/json".into()),
        ]);
        exchange.on_response_headers(&mut env, || head, false);
        let len = env.host.response_body(usize::MAX).len();
        let out = exchange.on_response_body(&mut env, len, true);
        for effect in out.effects {
            if let Effect::LearnToolHeaders(tools) = effect {
                let mut learned = host.learned.borrow_mut();
                for (tool, declared) in tools.iter() {
                    learned.insert(tool.to_string(), declared.to_vec());
                }
            }
        }
    }
    verdict
}

#[test]
fn what_one_servers_tool_declares_is_not_held_against_anothers_tool_of_that_name() {
    let g = gateway_modes("refuse", "enforce");
    let mut host = Host::with_body(Vec::new());
    // github's `get_x` mirrors `region` into Mcp-Param-Region; jira's
    // `get_x` declares nothing.
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let listed = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "get_x", "inputSchema":
        {"type": "object", "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}}]}});
    through(&g, &mut host, "/github/mcp", GITHUB, &list, Some(&listed));
    assert!(!host.learned.borrow().is_empty(), "the list taught nothing");
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "get_x", "arguments": {"region": "eu"}}});
    // At github the header is needed; at jira it is not.
    let at_github = through(&g, &mut host, "/github/mcp", GITHUB, &call, None);
    assert_eq!(at_github.action, Action::Hold);
    let at_jira = through(&g, &mut host, "/jira/mcp", JIRA, &call, None);
    assert_eq!(at_jira.action, Action::Continue);
}

/// The answer's headers are read only when the machine watches the answer:
/// a list's answer is read, a tool call's answer passes without a copy of
/// its headers (one host call fewer on every call).
#[test]
fn only_a_watched_answer_has_its_headers_read() {
    let g = Gateway::from_value(&json!({
        "resource": "https://mcp.example.com/mcp",
        "providers": [{"issuer": ISS, "jwks": {"remote": {"cluster": "idp"}}}],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    }))
    .expect("gateway");
    for (method, watched) in [("tools/call", false), ("tools/list", true)] {
        let mut payload = claims();
        payload["aud"] = json!("https://mcp.example.com/mcp");
        let token = sign(Signer::RS256, Some("rsa1"), payload);
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"name": "t"}});
        let mut host = Host::with_body(body.to_string().into_bytes());
        let ring = KeyRing {
            sets: vec![Some(Rc::new(key_sets().remove(0)))],
            generations: vec![1],
        };
        let mut cache = VerifiedTokenCache::new(4);
        let len = host.body.len();
        let mut env = env(&g, &ring, &mut cache, &mut host);
        let mut exchange = Exchange::new();
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("authorization".into(), format!("Bearer {token}")),
        ];
        exchange.on_request_headers(&mut env, RequestHead::new("POST", "/mcp", headers), false);
        let verdict = exchange.on_request_body(&mut env, len, true);
        assert_eq!(verdict.action, Action::Continue, "{method}: {verdict:?}");
        let read = std::cell::Cell::new(false);
        exchange.on_response_headers(
            &mut env,
            || {
                read.set(true);
                ResponseHead::from_headers(&[
                    (":status".into(), "200".into()),
                    ("content-type".into(), "application/json".into()),
                ])
            },
            false,
        );
        assert_eq!(read.get(), watched, "{method}");
    }
}
