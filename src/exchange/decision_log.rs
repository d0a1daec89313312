//! The decision log: one JSON line per refusal (and per decision in audit
//! mode). Never the token, never a claim value other than `sub` and the
//! client id.

use serde_json::json;

use crate::config::UpstreamToken;
use crate::gate::{Refusal, RequestHead};
use crate::identity::Identity;

/// The line for a refusal; `enforced` is false in audit mode, where the
/// request goes on ("would_deny").
pub fn refusal_line(
    head: &RequestHead,
    identity: Option<&Identity>,
    refusal: &Refusal,
    enforced: bool,
) -> String {
    json!({
        "mcp_authz": if enforced { "deny" } else { "would_deny" },
        "reason": refusal.reason.name(),
        "class": refusal.class.map(|c| c.name()),
        "status": refusal.answer.status,
        "rule": refusal.rule,
        "method": refusal.method,
        "name": refusal.name,
        "sub": identity.and_then(|i| i.subject.clone()),
        "client_id": identity.and_then(|i| i.client_id.clone()),
        "issuer": identity.map(|i| i.issuer.clone()),
        "detail": refusal.detail,
        "request_id": head.header("x-request-id"),
        "http_method": head.method,
        "path": head.path,
    })
    .to_string()
}

/// The line for an allowed request in audit mode.
pub fn allow_line(
    rule: Option<&str>,
    call: (Option<String>, Option<String>),
    identity: &Identity,
    upstream: Option<&UpstreamToken>,
) -> String {
    let (method, name) = call;
    // The exchange is named by its audience; never a token.
    let exchange = upstream.map(|u| u.audience.as_ref().or(u.resource.as_ref()));
    json!({
        "mcp_authz": "allow", "rule": rule, "method": method, "name": name,
        "sub": identity.subject, "client_id": identity.client_id, "issuer": identity.issuer,
        "upstream_token_for": exchange,
    })
    .to_string()
}
