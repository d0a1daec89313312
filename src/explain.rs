//! What the filter would do with one request, in words: the native
//! `mcp-authz explain` command. It drives the same functions the host shell
//! drives (`gate::check_head`, `gate::check_content_type`, `gate::too_large`,
//! `gate::check_body`, `gate::upstream_headers`) in the same order, and adds
//! only the per-rule trace (`policy::trace`) for the reader. It never prints
//! the token: only the verified identity and the answer, which cannot hold it.

use std::fmt::Write;

use crate::answer::Answer;
use crate::config::{Effect, Mode, Policy};
use crate::gate::{self, HeadVerdict, Keys, Reason, Refusal, RequestHead};
use crate::identity::Identity;
use crate::jwks::KeySet;
use crate::mcp::{self, Message};
use crate::policy;
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
}

impl std::fmt::Display for ExplainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExplainError::KeysNeeded { issuer } => write!(
                f,
                "provider {issuer:?} fetches its keys remotely: pass them with --jwks FILE"
            ),
        }
    }
}

impl std::error::Error for ExplainError {}

/// The keys to verify with: inline keys from the configuration, and `remote`
/// (when given) for every provider whose keys are fetched remotely.
pub fn key_sets(policy: &Policy, remote: Option<&KeySet>) -> Vec<Option<KeySet>> {
    policy
        .providers
        .iter()
        .map(|p| match &p.jwks {
            crate::config::JwksSource::Inline(keys) => Some(keys.clone()),
            crate::config::JwksSource::Remote(_) => remote.cloned(),
        })
        .collect()
}

/// Runs the request through the filter's pipeline and describes each step.
pub fn explain(
    policy: &Policy,
    keys: &[Option<KeySet>],
    request: &Request,
    now: u64,
) -> Result<(Outcome, String), ExplainError> {
    let mut out = String::new();
    let head = &request.head;
    let _ = writeln!(out, "request: {} {}", head.method, head.path);
    let generations = vec![0; policy.providers.len()];
    let keys = Keys {
        sets: keys.iter().map(Option::as_ref).collect(),
        generations: &generations,
    };
    // A fresh cache: every explanation verifies the token itself.
    let mut cache = VerifiedTokenCache::new(1);
    let verdict = gate::check_head(policy, head, &keys, &mut cache, now);
    let identity = match verdict {
        HeadVerdict::Respond(answer) => {
            out.push_str("identity: none needed (answered by the filter)\n");
            let outcome = if answer.status < 400 {
                Outcome::Answered
            } else {
                Outcome::Refused
            };
            let _ = writeln!(out, "decision: answered locally");
            write_answer(&mut out, &answer);
            return Ok((outcome, out));
        }
        HeadVerdict::PassUntouched => {
            out.push_str("identity: none needed (public path or CORS preflight)\n");
            out.push_str("decision: passed without a token\n");
            write_edits(&mut out, policy, None);
            return Ok((Outcome::Forwarded, out));
        }
        HeadVerdict::KeysPending { provider } => {
            return Err(ExplainError::KeysNeeded {
                issuer: policy.providers[provider].issuer.clone(),
            })
        }
        HeadVerdict::UnknownKey { refusal, .. } => {
            out.push_str("identity: none (the token names a key the provider does not have)\n");
            out.push_str(
                "note: the filter refetches a remote provider's keys once before refusing\n",
            );
            return Ok(refused(out, policy, None, &refusal));
        }
        HeadVerdict::Refuse(refusal) => {
            let why = match refusal.reason {
                Reason::NoToken => "no bearer token".to_string(),
                Reason::InvalidToken(kind) => format!("token refused: {}", kind.description()),
                other => other.name().to_string(),
            };
            let _ = writeln!(out, "identity: none ({why})");
            return Ok(refused(out, policy, None, &refusal));
        }
        HeadVerdict::Verified { identity, .. } => identity,
    };
    write_identity(&mut out, &identity);

    if head.method != "POST" {
        out.push_str("body: not inspected (not a POST): a valid token is enough\n");
        out.push_str("decision: allowed\n");
        write_edits(&mut out, policy, Some(&identity));
        return Ok((Outcome::Forwarded, out));
    }
    if let Some(refusal) = gate::check_content_type(head) {
        return Ok(refused(out, policy, Some(&identity), &refusal));
    }
    if request.body.len() > policy.max_body_bytes {
        let refusal = gate::too_large(policy);
        return Ok(refused(out, policy, Some(&identity), &refusal));
    }
    write_calls(&mut out, policy, &identity, &request.body);
    match gate::check_body(policy, head, &identity, &request.body) {
        Ok(allowed) => {
            match &allowed.rule {
                Some(rule) => {
                    let _ = writeln!(out, "decision: allowed by rule {rule:?}");
                }
                None => out.push_str("decision: allowed (a JSON-RPC response needs no rule)\n"),
            }
            write_edits(&mut out, policy, Some(&identity));
            Ok((Outcome::Forwarded, out))
        }
        Err(refusal) => Ok(refused(out, policy, Some(&identity), &refusal)),
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
fn write_calls(out: &mut String, policy: &Policy, identity: &Identity, body: &[u8]) {
    let Ok(body) = mcp::parse_body(body) else {
        out.push_str("body: not a valid JSON-RPC message (see the answer)\n");
        return;
    };
    if body.is_batch() {
        let _ = writeln!(out, "body: a batch of {}", body.messages().len());
    }
    for message in body.messages() {
        let call = match message {
            Message::Response { id } => {
                let _ = writeln!(out, "response: id {id} (no rule applies)");
                continue;
            }
            Message::Call(call) => call,
        };
        let id = call
            .id
            .as_ref()
            .map_or("none (notification)".to_string(), |id| id.to_string());
        let name = call
            .name
            .as_ref()
            .map_or("(none)".to_string(), |n| format!("{n:?}"));
        let _ = writeln!(out, "call: method {:?}, name {name}, id {id}", call.method);
        let traces = policy::trace(&policy.rules, &call.method, call.name.as_deref(), identity);
        for (i, (t, rule)) in traces.iter().zip(&policy.rules).enumerate() {
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
        }
        let decision =
            match policy::decide(&policy.rules, &call.method, call.name.as_deref(), identity) {
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
}

fn refused(
    mut out: String,
    policy: &Policy,
    identity: Option<&Identity>,
    refusal: &Refusal,
) -> (Outcome, String) {
    let by = match (&refusal.reason, &refusal.rule) {
        (Reason::Forbidden, None) => " (no rule allows it: default deny)".to_string(),
        (_, Some(rule)) => format!(" by rule {rule:?}"),
        (_, None) => String::new(),
    };
    let _ = writeln!(out, "decision: refused: {}{by}", refusal.reason.name());
    write_answer(&mut out, &refusal.answer);
    if policy.mode == Mode::Audit {
        out.push_str("mode: audit: the filter logs this refusal but lets the request through\n");
        write_edits(&mut out, policy, identity);
        return (Outcome::Forwarded, out);
    }
    (Outcome::Refused, out)
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

/// The header edits on the way upstream: with an identity, exactly
/// `gate::upstream_headers`; without one, client-sent identity headers (and
/// the token, unless forwarded) are only removed.
fn write_edits(out: &mut String, policy: &Policy, identity: Option<&Identity>) {
    let edits = match identity {
        Some(identity) => gate::upstream_headers(policy, identity),
        None => {
            let mut edits = gate::upstream_headers(policy, &Identity::anonymous(""));
            edits.set.clear();
            edits.skipped.clear();
            edits
        }
    };
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
