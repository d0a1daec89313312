//! The body step: a POSTed JSON-RPC body, declared JSON and within the size
//! limit, parsed strictly, its MCP routing headers checked against it, then
//! decided by the rules.

use super::{BadRequestKind, Class, Reason, Refusal, RequestHead};
use crate::answer::{self, codes, Answer};
use crate::config::Policy;
use crate::dpop::Scheme;
use crate::identity::Identity;
use crate::mcp::param_headers::{self, ParamHeader};
use crate::mcp::{self, Body, BodyError};
use crate::policy::{self, Decision};
use serde_json::Value;

/// Before reading a POST body: is it declared JSON?
pub fn check_content_type(head: &RequestHead) -> Option<Refusal> {
    let types = head.header_values("content-type");
    // Two Content-Type headers: a server may read either; refuse both.
    if types.len() == 1 && mcp::is_json_content_type(types.first().copied()) {
        None
    } else {
        Some(Refusal::new(
            answer::unsupported_media_type(),
            Reason::UnsupportedMediaType,
        ))
    }
}

/// A body over `max_body_bytes`.
pub fn too_large(policy: &Policy) -> Refusal {
    Refusal::new(answer::too_large(policy.max_body_bytes), Reason::TooLarge)
}

/// The verdict on a POSTed JSON-RPC body.
#[derive(Debug)]
pub struct Allowed {
    /// The parsed body, for logging and list filtering.
    pub body: Body,
    /// The deciding rule (None for a JSON-RPC response, which needs none).
    pub rule: Option<String>,
    /// Rules whose condition could not be evaluated on the way.
    pub condition_errors: Vec<String>,
}

/// What a tool's `Mcp-Param-*` headers stand for, as far as the filter
/// learned it from `tools/list` answers (`None`: never seen).
pub type ToolHeaders<'a> = &'a dyn Fn(&str) -> Option<Vec<ParamHeader>>;

/// Parses the body, checks the MCP headers against it, and decides.
pub fn check_body(
    policy: &Policy,
    head: &RequestHead,
    identity: &Identity,
    bytes: &[u8],
    now_s: u64,
    tool_headers: ToolHeaders,
) -> Result<Allowed, Box<Refusal>> {
    let body = mcp::parse_body(bytes).map_err(|e| Box::new(malformed(&e)))?;
    let id = body.answer_id().cloned();
    // From here on a refusal names the call it refuses, for the log.
    let (method, name) = first_call(&body);
    let of_the_call = |refusal: Refusal| {
        Box::new(Refusal {
            method: method.clone(),
            name: name.clone(),
            ..refusal
        })
    };
    if let Err(mismatch) = check_routing_headers(&body, head, tool_headers) {
        return Err(of_the_call(header_mismatch(&mismatch, id.as_ref())));
    }
    let mut condition_errors = Vec::new();
    let decision = policy::decide_body(
        &policy.rules,
        &body,
        identity,
        &head.headers,
        now_s,
        &mut condition_errors,
    );
    let refusal = match decision {
        Decision::Allow { rule } => {
            return Ok(Allowed {
                body,
                rule,
                condition_errors,
            })
        }
        Decision::Forbidden { rule } => Refusal {
            rule,
            ..Refusal::new(answer::forbidden(id.as_ref()), Reason::Forbidden)
        },
        Decision::NeedScopes { rule, scopes } => Refusal {
            rule: Some(rule),
            ..Refusal::new(
                scope_challenge(policy, identity, &scopes, id.as_ref()),
                Reason::InsufficientScope,
            )
        },
    };
    Err(of_the_call(Refusal {
        condition_errors,
        ..refusal
    }))
}

/// 400 for a body that is not JSON, or not a JSON-RPC message the filter
/// takes.
fn malformed(error: &BodyError) -> Refusal {
    let kind = match error {
        BodyError::Parse(_) => BadRequestKind::Parse,
        BodyError::Invalid(_) => BadRequestKind::Invalid,
    };
    Refusal::new(
        answer::bad_request(error.code(), error.message(), None),
        Reason::BadRequest,
    )
    .with_class(Class::Request(kind))
}

/// The routing headers against the body: `Mcp-Method` and `Mcp-Name`, and
/// each `tools/call`'s `Mcp-Param-*` headers.
fn check_routing_headers(
    body: &Body,
    head: &RequestHead,
    tool_headers: ToolHeaders,
) -> Result<(), mcp::HeaderMismatch> {
    // `Mcp_Name` is `Mcp-Name` to a CGI-style server: every spelling counts.
    let (mcp_method, mcp_name) = (
        head.header_values_any_spelling("mcp-method"),
        head.header_values_any_spelling("mcp-name"),
    );
    if mcp_method.len() > 1 || mcp_name.len() > 1 {
        // Every copy must equal the body, and a component reading another
        // copy (or the joined value) would act on a call never checked:
        // refuse repeats (in any spelling) outright.
        return Err(mcp::HeaderMismatch {
            reason: "Mcp-Method or Mcp-Name header appears more than once",
        });
    }
    let modern = head
        .header_values_any_spelling("mcp-protocol-version")
        .contains(&MODERN_PROTOCOL);
    mcp::check_mcp_headers(
        body,
        mcp_method.first().copied(),
        mcp_name.first().copied(),
        modern,
    )?;
    check_param_headers(body, head, modern, tool_headers)
}

/// 400 for routing headers that do not say what the body says.
fn header_mismatch(mismatch: &mcp::HeaderMismatch, id: Option<&Value>) -> Refusal {
    Refusal::new(
        answer::bad_request(
            codes::HEADER_MISMATCH,
            &format!("HeaderMismatch: {}", mismatch.reason),
            id,
        ),
        Reason::BadRequest,
    )
    .with_class(Class::Request(BadRequestKind::HeaderMismatch))
}

/// 403 `insufficient_scope` naming the scopes to ask for, on the scheme
/// the token came with: a token bound to a key only ever comes with DPoP.
fn scope_challenge(
    policy: &Policy,
    identity: &Identity,
    scopes: &[String],
    id: Option<&Value>,
) -> Answer {
    let scheme = if identity.jkt.is_some() {
        Scheme::DPoP
    } else {
        Scheme::Bearer
    };
    answer::insufficient_scope(policy, scheme, scopes, id)
}

/// The protocol revision whose requests must carry their routing headers.
const MODERN_PROTOCOL: &str = "2026-07-28";

/// Each `tools/call`'s `Mcp-Param-*` headers, for tools whose declarations
/// are known.
fn check_param_headers(
    body: &Body,
    head: &RequestHead,
    modern: bool,
    tool_headers: ToolHeaders,
) -> Result<(), mcp::HeaderMismatch> {
    for message in body.messages() {
        let mcp::Message::Call(call) = message else {
            continue;
        };
        let (true, Some(tool)) = (call.method == "tools/call", &call.name) else {
            continue;
        };
        if let Some(declared) = tool_headers(tool) {
            param_headers::check(&declared, call.arguments.as_ref(), &head.headers, modern)?;
        }
    }
    Ok(())
}

/// The method and name of a body's first call, for logs.
pub fn first_call(body: &Body) -> (Option<String>, Option<String>) {
    body.messages()
        .iter()
        .find_map(|m| match m {
            mcp::Message::Call(call) => Some((Some(call.method.clone()), call.name.clone())),
            mcp::Message::Response { .. } => None,
        })
        .unwrap_or_default()
}
