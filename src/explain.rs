//! What the filter would do with one request, in words: the native
//! `mcp-authz explain` command. It drives the filter's own state machine
//! (`exchange::Exchange`) through the request's callbacks and renders the
//! verdict that machine reached, adding only the per-rule trace
//! (`policy::trace`) for the reader. It never prints the token: only the
//! verified identity and the answer, which cannot hold it.

use std::fmt::Write;

use crate::answer::Answer;
use crate::condition::EvalError;
use crate::config::{Effect, Gateway, Policy, Rule};
use crate::dpop::replay;
use crate::exchange::{self, Exchange, Outcome as Verdict};
use crate::gate::{self, Class, KeyRing, Reason, Refusal, RequestHead, Verb};
use crate::identity::Identity;
use crate::keys::jwks::KeySet;
use crate::mcp::{self, Message};
use crate::policy;
use crate::shared_data::{SharedData, SharedMap};
use crate::token::TokenErrorKind;
use crate::token_cache::VerifiedTokenCache;

/// A request as the filter would see it.
#[derive(Debug, Clone)]
pub struct Request {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// Where the request ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Sent upstream (allowed, public, preflight, or refused in audit mode).
    Forwarded,
    /// Answered by the filter itself without refusing (the metadata document).
    Answered,
    /// Refused with an error answer.
    Refused,
}

/// Why the request could not be explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExplainError {
    /// The token's provider fetches its keys remotely and none were given.
    KeysNeeded { issuer: String },
    /// The verdict needs an answer of the authorization server
    /// (introspection or token exchange), which `explain` does not ask.
    AuthorizationServerNeeded,
    /// The filter would still be waiting (a bug if it ever shows).
    Undecided,
}

impl std::fmt::Display for ExplainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExplainError::KeysNeeded { issuer } => write!(
                f,
                "provider {issuer:?} fetches its keys remotely: pass them with --jwks FILE"
            ),
            ExplainError::AuthorizationServerNeeded => f.write_str(
                "the filter would ask the authorization server (introspection or token exchange) here; explain does not call it",
            ),
            ExplainError::Undecided => f.write_str("the filter reached no verdict"),
        }
    }
}

impl std::error::Error for ExplainError {}

/// The keys to verify with: inline keys from the configuration, and `remote`
/// (when given) for every provider whose keys are fetched remotely.
pub fn key_sets(gateway: &Gateway, remote: Option<&KeySet>) -> Vec<Option<KeySet>> {
    gateway
        .providers()
        .iter()
        .map(|p| match &p.jwks {
            Some(crate::config::JwksSource::Inline(keys)) => Some(keys.clone()),
            Some(crate::config::JwksSource::Remote(_)) => remote.cloned(),
            None => None,
        })
        .collect()
}

/// The host of an explanation: the body is all there, no key is ever
/// fetched, no refetch is granted, no authorization server is called.
struct Offline<'a> {
    body: &'a [u8],
    fetch_asked: Option<usize>,
    /// Shared data of this one request: no DPoP proof was used before it.
    shared: SharedMap,
}

impl exchange::Host for Offline<'_> {
    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.shared
    }

    fn request_body(&self, len: usize) -> Vec<u8> {
        self.body.get(..len).unwrap_or(self.body).to_vec()
    }

    fn response_body(&self, _len: usize) -> Vec<u8> {
        Vec::new()
    }

    fn fetch_keys(&mut self, provider: usize) {
        self.fetch_asked = Some(provider);
    }

    fn refetch_keys(&mut self, _provider: usize) -> bool {
        false
    }

    fn calls_in_flight(&self) -> usize {
        0
    }

    fn digest_key(&self) -> [u8; 32] {
        [0; 32]
    }

    fn tool_headers(&self, _tool: &str) -> Option<Vec<crate::mcp::param_headers::ParamHeader>> {
        None
    }
}

/// Runs the request through the filter's state machine and describes the
/// verdict it reached.
pub fn explain(
    gateway: &Gateway,
    keys: &[Option<KeySet>],
    request: &Request,
    now_s: u64,
) -> Result<(Outcome, String), ExplainError> {
    let (verdict, server) = decide(gateway, keys, request, now_s)?;
    let mut out = String::new();
    let head = &request.head;
    let _ = writeln!(out, "request: {} {}", head.method, head.path);
    let policy = match server.and_then(|i| gateway.servers.get(i)) {
        Some(server) => {
            if let Some(name) = &server.policy.server_name {
                let _ = writeln!(out, "server: {name} ({})", server.policy.resource);
            }
            Some(&server.policy)
        }
        None => {
            out.push_str("server: none takes this request\n");
            None
        }
    };
    write_caller(&mut out, &verdict);
    let identity = verdict.identity.as_ref();
    let body_read = head.verb() == Verb::Post
        && !matches!(
            &verdict.outcome,
            Verdict::Refused(r) | Verdict::AuditPassed(r)
                if matches!(r.reason, Reason::UnsupportedMediaType | Reason::TooLarge)
        );
    match (identity, policy) {
        (Some(identity), Some(policy)) if body_read => {
            write_calls(&mut out, policy, identity, request, now_s)
        }
        (Some(_), _) if head.verb() != Verb::Post => {
            out.push_str("body: none (a GET or DELETE takes no body): a valid token is enough\n")
        }
        _ => {}
    }
    let outcome = write_decision(&mut out, &verdict.outcome, head.verb());
    if let Some(edits) = &verdict.edits {
        write_edits(&mut out, edits);
        let upstream = policy.and_then(|p| p.upstream_token.as_ref());
        if let (Some(upstream), Some(_)) = (upstream, &verdict.identity) {
            let audience = upstream.audience.as_ref().or(upstream.resource.as_ref());
            let _ = writeln!(
                out,
                "  set: {}: a token exchanged for {} (the filter asks the authorization server; explain does not)",
                upstream.header,
                audience.map_or("?", String::as_str)
            );
        }
    }
    Ok((outcome, out))
}

/// Feeds the request to the filter's state machine, the whole body at once,
/// and returns the verdict it reached and the server it chose.
fn decide(
    gateway: &Gateway,
    keys: &[Option<KeySet>],
    request: &Request,
    now_s: u64,
) -> Result<(exchange::Verdict, Option<usize>), ExplainError> {
    let providers = gateway.providers();
    let ring = KeyRing {
        sets: keys
            .iter()
            .map(|k| k.clone().map(std::rc::Rc::new))
            .collect(),
        generations: vec![0; providers.len()],
    };
    // A fresh cache: every explanation verifies the token itself.
    let mut cache = VerifiedTokenCache::new(1);
    let mut shared = SharedMap::default();
    replay::prepare(&mut shared, [0; 32]);
    let mut host = Offline {
        body: &request.body,
        fetch_asked: None,
        shared,
    };
    let mut exchange = Exchange::new();
    let mut env = exchange::Env {
        gateway,
        keys: &ring,
        cache: &mut cache,
        now_ms: now_s.saturating_mul(1000),
        host: &mut host,
    };
    let empty = request.body.is_empty();
    let calls = |output: &exchange::Output| {
        output
            .effects
            .iter()
            .any(|e| matches!(e, exchange::Effect::CallAuthorizationServer(_)))
    };
    let mut called = calls(&exchange.on_request_headers(&mut env, request.head.clone(), empty));
    if !empty && exchange.verdict().is_none() {
        called |= calls(&exchange.on_request_body(&mut env, request.body.len(), true));
    }
    if called && exchange.verdict().is_none() {
        return Err(ExplainError::AuthorizationServerNeeded);
    }
    if let Some(provider) = host.fetch_asked {
        return Err(ExplainError::KeysNeeded {
            issuer: providers
                .get(provider)
                .map(|p| p.issuer.clone())
                .unwrap_or_default(),
        });
    }
    // The machine holds only while it waits for keys or for the body, and
    // an explanation gives it the whole body at once.
    let verdict = exchange.verdict().cloned().ok_or(ExplainError::Undecided)?;
    Ok((verdict, exchange.server()))
}

/// Who the caller is, or why there is nobody.
fn write_caller(out: &mut String, verdict: &exchange::Verdict) {
    match (&verdict.outcome, &verdict.identity) {
        (Verdict::Answered(_), _) => {
            out.push_str("identity: none needed (answered by the filter)\n")
        }
        (Verdict::Open, _) => {
            out.push_str("identity: none needed (public path or CORS preflight)\n")
        }
        (Verdict::Unmatched, _) => out.push_str("identity: not checked (no server's request)\n"),
        (_, Some(identity)) => write_identity(out, identity),
        (Verdict::Refused(r) | Verdict::AuditPassed(r), None) => {
            let why = match (r.reason, r.class) {
                (Reason::NoToken, _) => "no bearer token".to_string(),
                (_, Some(Class::Token(TokenErrorKind::UnknownKey))) => {
                    "the token names a key the provider does not have".to_string()
                }
                (_, Some(Class::Token(kind))) => format!("token refused: {}", kind.description()),
                (other, _) => format!("not checked ({})", other.name()),
            };
            let _ = writeln!(out, "identity: none ({why})");
            if r.class == Some(Class::Token(TokenErrorKind::UnknownKey)) {
                out.push_str(
                    "note: the filter refetches a remote provider's keys once before refusing\n",
                );
            }
        }
        (Verdict::Allowed { .. }, None) => out.push_str("identity: none\n"),
    }
}

/// The decision and the answer, if the filter answers.
fn write_decision(out: &mut String, verdict: &Verdict, verb: Verb) -> Outcome {
    match verdict {
        Verdict::Allowed { rule } => {
            match rule {
                Some(rule) => {
                    let _ = writeln!(out, "decision: allowed by rule {rule:?}");
                }
                None if verb == Verb::Post => {
                    out.push_str("decision: allowed (a JSON-RPC response needs no rule)\n")
                }
                None => out.push_str("decision: allowed\n"),
            }
            Outcome::Forwarded
        }
        Verdict::Open => {
            out.push_str("decision: passed without a token\n");
            Outcome::Forwarded
        }
        Verdict::Unmatched => {
            out.push_str("decision: passed unchecked (unmatched: pass)\n");
            Outcome::Forwarded
        }
        Verdict::Answered(answer) => {
            let _ = writeln!(out, "decision: answered locally");
            write_answer(out, answer);
            if answer.status < 400 {
                Outcome::Answered
            } else {
                Outcome::Refused
            }
        }
        Verdict::Refused(refusal) => {
            write_refusal(out, refusal);
            Outcome::Refused
        }
        Verdict::AuditPassed(refusal) => {
            write_refusal(out, refusal);
            out.push_str(
                "mode: audit: the filter logs this refusal but lets the request through\n",
            );
            Outcome::Forwarded
        }
    }
}

fn write_identity(out: &mut String, identity: &Identity) {
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
    let list = |v: &[String]| {
        if v.is_empty() {
            "(none)".to_string()
        } else {
            v.join(" ")
        }
    };
    out.push_str("identity: token verified (the token itself is not shown)\n");
    let _ = writeln!(out, "  issuer: {}", identity.issuer);
    let _ = writeln!(out, "  sub:    {}", or_none(&identity.subject));
    let _ = writeln!(out, "  client: {}", or_none(&identity.client_id));
    let _ = writeln!(out, "  roles:  {}", list(&identity.roles));
    let _ = writeln!(out, "  scopes: {}", list(&identity.scopes));
    let _ = writeln!(out, "  expires: {} (unix)", identity.expires_at);
}

/// Each message of the body, and for each call every rule's verdict.
fn write_calls(
    out: &mut String,
    policy: &Policy,
    identity: &Identity,
    request: &Request,
    now_s: u64,
) {
    let Ok(body) = mcp::parse_body(&request.body) else {
        out.push_str("body: not a valid JSON-RPC message (see the answer)\n");
        return;
    };
    if body.is_batch() {
        let _ = writeln!(out, "body: a batch of {}", body.messages().len());
    }
    for message in body.messages() {
        match message {
            Message::Response { id } => {
                let _ = writeln!(out, "response: id {id} (no rule applies)");
            }
            Message::Call(call) => {
                write_call(out, policy, identity, call, &request.head.headers, now_s)
            }
        }
    }
}

/// One call: every rule's verdict on it, then the decision.
fn write_call(
    out: &mut String,
    policy: &Policy,
    identity: &Identity,
    call: &mcp::Call,
    headers: &[(String, String)],
    now_s: u64,
) {
    let id = call
        .id
        .as_ref()
        .map_or("none (notification)".to_string(), |id| id.to_string());
    let name = call
        .name
        .as_ref()
        .map_or("(none)".to_string(), |n| format!("{n:?}"));
    let _ = writeln!(out, "call: method {:?}, name {name}, id {id}", call.method);
    let facts = policy::Call {
        method: &call.method,
        name: call.name.as_deref(),
        arguments: policy::Arguments::Known(call.arguments.as_ref()),
        headers,
        now_s,
    };
    let traces = policy::trace(&policy.rules, &facts, identity);
    for (i, (trace, rule)) in traces.iter().zip(&policy.rules).enumerate() {
        write_rule_trace(out, i, trace, rule);
    }
    let decision = match policy::decide(&policy.rules, &facts, identity, &mut Vec::new()) {
        policy::Decision::Allow { rule } => format!("allow ({})", rule.unwrap_or_default()),
        policy::Decision::Forbidden { rule: Some(rule) } => {
            format!("forbidden by {rule:?}")
        }
        policy::Decision::Forbidden { rule: None } => {
            "forbidden: no rule allows it (default deny)".into()
        }
        policy::Decision::NeedScopes { rule, scopes } => {
            format!("needs scopes {} (rule {rule:?})", scopes.join(" "))
        }
    };
    let _ = writeln!(out, "  => {decision}");
}

/// The `i`-th rule's verdict on a call: whether it matches, what the caller
/// lacks, what its condition gave.
fn write_rule_trace(out: &mut String, i: usize, t: &policy::RuleTrace, rule: &Rule) {
    let effect = match t.effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny ",
    };
    let verdict = if !t.matched {
        "does not match".to_string()
    } else if t.satisfied() {
        "matches, caller satisfies it".to_string()
    } else {
        let mut lacks = Vec::new();
        if !t.has_role {
            let roles = rule.roles.as_deref().unwrap_or_default().join(", ");
            lacks.push(format!("needs a role of {roles}"));
        }
        if !t.has_scopes {
            lacks.push(format!("lacks scopes {}", t.missing_scopes.join(" ")));
        }
        format!("matches, caller does not satisfy it: {}", lacks.join("; "))
    };
    let _ = writeln!(out, "  rule {i} {effect} {:?}: {verdict}", t.rule);
    if let Some((source, value)) = &t.condition {
        let value = match value {
            Ok(value) => value.to_string(),
            Err(EvalError::Failed) => "could not be evaluated (counts against the caller)".into(),
            Err(EvalError::NotBoolean) => "not true or false (counts against the caller)".into(),
        };
        let _ = writeln!(out, "    when {source} => {value}");
    }
}

fn write_refusal(out: &mut String, refusal: &Refusal) {
    let by = match (&refusal.reason, &refusal.rule) {
        (Reason::Forbidden, None) => " (no rule allows it: default deny)".to_string(),
        (_, Some(rule)) => format!(" by rule {rule:?}"),
        (_, None) => String::new(),
    };
    let _ = writeln!(out, "decision: refused: {}{by}", refusal.reason.name());
    write_answer(out, &refusal.answer);
}

fn write_answer(out: &mut String, answer: &Answer) {
    let _ = writeln!(out, "answer: HTTP {}", answer.status);
    for (name, value) in &answer.headers {
        let _ = writeln!(out, "  {name}: {value}");
    }
    if !answer.body.is_empty() {
        let _ = writeln!(out, "  body: {}", String::from_utf8_lossy(&answer.body));
    }
}

/// The header edits the request goes upstream with, exactly as the filter
/// makes them.
fn write_edits(out: &mut String, edits: &gate::UpstreamHeaders) {
    out.push_str("upstream: forwarded");
    if edits.remove.is_empty() && edits.set.is_empty() {
        out.push_str(" unchanged\n");
        return;
    }
    out.push('\n');
    if !edits.remove.is_empty() {
        let _ = writeln!(out, "  remove: {}", edits.remove.join(", "));
    }
    for (name, value) in &edits.set {
        let _ = writeln!(out, "  set: {name}: {value}");
    }
    for (name, why) in &edits.skipped {
        let _ = writeln!(out, "  left out: {name} ({why})");
    }
}
