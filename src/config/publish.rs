//! `publish`: handing the verified call to the rest of Envoy's filter chain
//! (rate limits, access logs, RBAC after this filter) as filter state, and
//! as request headers where asked (README "The verified call for the rest
//! of the chain").

use super::object::Obj;
use super::parse::is_header_name_byte;
use super::{ConfigError, PUBLISH_KEYS, RESERVED_HEADERS};

/// One fact about a request the filter can publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallField {
    /// The server the request was for (its `name`).
    Server,
    /// What became of it: `allow`, `deny`, `would_deny` (audit mode),
    /// `open` (public path, CORS preflight), `metadata`, `unmatched`.
    Decision,
    /// Why it was refused (the decision log's `reason`).
    Reason,
    /// The JSON-RPC method, from the body.
    Method,
    /// The tool or prompt name, or the resource URI, from the body.
    Name,
    /// The verified token's `sub`.
    Subject,
    /// Its `client_id` (else `azp`).
    ClientId,
    /// Its issuer.
    Issuer,
    /// The rule that decided.
    Rule,
}

impl CallField {
    /// Every field, in the order the README lists them.
    pub const ALL: [CallField; 9] = [
        CallField::Server,
        CallField::Decision,
        CallField::Reason,
        CallField::Method,
        CallField::Name,
        CallField::Subject,
        CallField::ClientId,
        CallField::Issuer,
        CallField::Rule,
    ];

    /// The field's name in the configuration and in filter state keys
    /// (`wasm.mcp_authz.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            CallField::Server => "server",
            CallField::Decision => "decision",
            CallField::Reason => "reason",
            CallField::Method => "method",
            CallField::Name => "name",
            CallField::Subject => "subject",
            CallField::ClientId => "client_id",
            CallField::Issuer => "issuer",
            CallField::Rule => "rule",
        }
    }

    fn parse(text: &str) -> Option<CallField> {
        CallField::ALL.into_iter().find(|f| f.name() == text)
    }
}

/// What the filter publishes of each request it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Set Envoy filter state `wasm.mcp_authz.<field>` for every field
    /// known.
    pub filter_state: bool,
    /// Request headers set from fields (lower-case names), on requests that
    /// go upstream; client-sent copies in any spelling are always removed.
    pub headers: Vec<(String, CallField)>,
}

/// `publish`, when present.
pub(super) fn parse_publish(top: &Obj) -> Result<Option<Publish>, ConfigError> {
    let Some(obj) = top.optional_obj("publish")? else {
        return Ok(None);
    };
    obj.only(PUBLISH_KEYS)?;
    let filter_state = obj.optional_bool("filter_state")?.unwrap_or(true);
    let mut headers: Vec<(String, CallField)> = Vec::new();
    if let Some(map) = obj.optional_obj("headers")? {
        for (name, field) in map.map {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(is_header_name_byte) {
                return Err(map.error(name, "is not a valid HTTP header name".into()));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with(':') {
                return Err(map.error(name, "is reserved and cannot carry the call".into()));
            }
            if headers.iter().any(|(h, _)| *h == lower) {
                return Err(map.error(
                    name,
                    "is configured twice (header names are case-insensitive)".into(),
                ));
            }
            let names: Vec<&str> = CallField::ALL.iter().map(|f| f.name()).collect();
            let field = field
                .as_str()
                .and_then(CallField::parse)
                .ok_or_else(|| map.error(name, format!("must be one of {}", names.join(", "))))?;
            headers.push((lower, field));
        }
    }
    Ok(Some(Publish {
        filter_state,
        headers,
    }))
}
