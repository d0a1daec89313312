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
    let body = mcp::parse_body(bytes).map_err(|e| {
        let kind = match e {
            BodyError::Parse(_) => BadRequestKind::Parse,
            BodyError::Invalid(_) => BadRequestKind::Invalid,
        };
        Box::new(
            Refusal::new(
                answer::bad_request(e.code(), e.message(), None),
                Reason::BadRequest,
            )
            .with_class(Class::Request(kind)),
        )
    })?;
    let id = body.answer_id().cloned();
    let (method, name) = first_call(&body);
    let refusal = |answer: Answer, reason: Reason, rule: Option<String>| Refusal {
        answer,
        reason,
        class: None,
        rule,
        method: method.clone(),
        name: name.clone(),
        detail: None,
        condition_errors: Vec::new(),
    };
    // `Mcp_Name` is `Mcp-Name` to a CGI-style server: every spelling counts.
    let (mcp_method, mcp_name) = (
        head.header_values_any_spelling("mcp-method"),
        head.header_values_any_spelling("mcp-name"),
    );
    let checked = if mcp_method.len() > 1 || mcp_name.len() > 1 {
        // Every copy must equal the body, and a component reading another
        // copy (or the joined value) would act on a call never checked:
        // refuse repeats (in any spelling) outright.
        Err(mcp::HeaderMismatch {
            reason: "Mcp-Method or Mcp-Name header appears more than once",
        })
    } else {
        let modern = head
            .header_values_any_spelling("mcp-protocol-version")
            .contains(&MODERN_PROTOCOL);
        mcp::check_mcp_headers(
            &body,
            mcp_method.first().copied(),
            mcp_name.first().copied(),
            modern,
        )
        .and_then(|()| check_param_headers(&body, head, modern, tool_headers))
    };
    if let Err(mismatch) = checked {
        return Err(Box::new(
            refusal(
                answer::bad_request(
                    codes::HEADER_MISMATCH,
                    &format!("HeaderMismatch: {}", mismatch.reason),
                    id.as_ref(),
                ),
                Reason::BadRequest,
                None,
            )
            .with_class(Class::Request(BadRequestKind::HeaderMismatch)),
        ));
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
    let refused = |answer, reason, rule| {
        let mut refused = refusal(answer, reason, rule);
        refused.condition_errors = condition_errors.clone();
        Err(Box::new(refused))
    };
    match decision {
        Decision::Allow { rule } => Ok(Allowed {
            body,
            rule,
            condition_errors,
        }),
        Decision::Forbidden { rule } => {
            refused(answer::forbidden(id.as_ref()), Reason::Forbidden, rule)
        }
        Decision::NeedScopes { rule, scopes } => refused(
            // A token bound to a key only ever comes with the DPoP scheme.
            answer::insufficient_scope(
                policy,
                if identity.jkt.is_some() {
                    Scheme::DPoP
                } else {
                    Scheme::Bearer
                },
                &scopes,
                id.as_ref(),
            ),
            Reason::InsufficientScope,
            Some(rule),
        ),
    }
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
