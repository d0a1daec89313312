//! The verified call, handed to the rest of Envoy's filter chain (README
//! "The verified call for the rest of the chain"): what the filter decided
//! about a request, and on what, as filter state (`wasm.mcp_authz.<field>`)
//! and as request headers the filter sets itself. Everything in it was
//! verified (the token's claims) or read from the body the rules decided
//! on; nothing is taken from a client-sent header.

use crate::config::{CallField, Publish};
use crate::gate::{same_header, RequestHead, UpstreamHeaders};
use crate::identity::Identity;

/// What the filter publishes about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallRecord {
    pub server: Option<String>,
    /// `allow`, `deny`, `would_deny`, `open`, `metadata` or `unmatched`.
    pub decision: &'static str,
    pub reason: Option<&'static str>,
    pub method: Option<String>,
    pub name: Option<String>,
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub issuer: Option<String>,
    pub rule: Option<String>,
}

/// The prefix of the filter state names; Envoy's Wasm host adds `wasm.`.
pub const PROPERTY_PREFIX: &str = "mcp_authz.";

impl CallRecord {
    /// A record of `decision` for the request of `server`.
    pub fn new(decision: &'static str, server: Option<&str>) -> CallRecord {
        CallRecord {
            decision,
            server: server.map(str::to_string),
            ..CallRecord::default()
        }
    }

    /// With the verified caller. A verified token without `sub` (or a
    /// client id) is published with an empty one: a rate-limit descriptor
    /// built from a field that is not there is left out, and with it the
    /// caller's limit, so such callers rather share one bucket.
    pub fn caller(mut self, identity: Option<&Identity>) -> CallRecord {
        if let Some(identity) = identity {
            self.subject = Some(identity.subject.clone().unwrap_or_default());
            self.client_id = Some(identity.client_id.clone().unwrap_or_default());
            self.issuer = Some(identity.issuer.clone());
        }
        self
    }

    /// With the call from the body, and the rule that decided.
    pub fn call(
        mut self,
        (method, name): (Option<String>, Option<String>),
        rule: Option<String>,
    ) -> CallRecord {
        self.method = method;
        self.name = name;
        self.rule = rule;
        self
    }

    /// One field's value, when known.
    pub fn field(&self, field: CallField) -> Option<&str> {
        match field {
            CallField::Server => self.server.as_deref(),
            CallField::Decision => Some(self.decision),
            CallField::Reason => self.reason,
            CallField::Method => self.method.as_deref(),
            CallField::Name => self.name.as_deref(),
            CallField::Subject => self.subject.as_deref(),
            CallField::ClientId => self.client_id.as_deref(),
            CallField::Issuer => self.issuer.as_deref(),
            CallField::Rule => self.rule.as_deref(),
        }
    }

    /// The filter state to set: (property name, value) for every known
    /// field. Envoy's Wasm host stores property `mcp_authz.name` as filter
    /// state `wasm.mcp_authz.name`.
    pub fn properties(&self) -> Vec<(String, String)> {
        CallField::ALL
            .iter()
            .filter_map(|&f| {
                self.field(f)
                    .map(|v| (format!("{PROPERTY_PREFIX}{}", f.name()), v.to_string()))
            })
            .collect()
    }
}

/// A value as a header carries it: printable ASCII but `%` as it is, every
/// other byte (space, controls, non-ASCII) and `%` itself percent-encoded.
/// One value has one encoding and no two values share one, so a rate-limit
/// bucket keyed on the header is the value's alone.
pub fn header_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds the published headers to the edits of a request that goes on: every
/// client header any HTTP stack could read as one of them is removed first;
/// then, with a record, those whose field is known are set.
pub fn header_edits(
    publish: &Publish,
    head: &RequestHead,
    record: Option<&CallRecord>,
    edits: &mut UpstreamHeaders,
) {
    for (name, _) in &publish.headers {
        if !edits.remove.contains(name) {
            edits.remove.push(name.clone());
        }
    }
    for (sent, _) in &head.headers {
        let published = publish.headers.iter().any(|(n, _)| same_header(n, sent));
        if published && !edits.remove.contains(sent) {
            edits.remove.push(sent.clone());
        }
    }
    let Some(record) = record else { return };
    for (name, field) in &publish.headers {
        if let Some(value) = record.field(*field) {
            edits.set.push((name.clone(), header_value(value)));
        }
    }
}

/// Whether a trailer is a client copy of a published header.
pub fn is_published_header(publish: Option<&Publish>, name: &str) -> bool {
    publish.is_some_and(|p| p.headers.iter().any(|(n, _)| same_header(n, name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Publish {
        Publish {
            filter_state: true,
            headers: vec![
                ("x-mcp-tool".into(), CallField::Name),
                ("x-mcp-caller".into(), CallField::Subject),
            ],
        }
    }

    #[test]
    fn header_values_are_one_to_one_and_safe() {
        assert_eq!(header_value("get_weather"), "get_weather");
        assert_eq!(header_value("a b"), "a%20b");
        assert_eq!(header_value("a%20b"), "a%2520b");
        assert_eq!(header_value("x\r\ny"), "x%0D%0Ay");
        assert_eq!(header_value("café"), "caf%C3%A9");
        assert_eq!(header_value(""), "");
    }

    #[test]
    fn client_copies_go_in_every_spelling_and_the_filters_values_come_in() {
        let head = RequestHead::new(
            "POST",
            "/mcp",
            vec![
                ("x-mcp-tool".into(), "cheap".into()),
                ("X_MCP_TOOL".into(), "cheap".into()),
                ("x-mcp_caller".into(), "someone-else".into()),
                ("x-other".into(), "kept".into()),
            ],
        );
        let mut record = CallRecord::new("allow", Some("github"));
        record.name = Some("expensive tool".into());
        record.subject = Some("alice".into());
        let mut edits = UpstreamHeaders::default();
        header_edits(&publish(), &head, Some(&record), &mut edits);
        assert_eq!(
            edits.remove,
            vec!["x-mcp-tool", "x-mcp-caller", "X_MCP_TOOL", "x-mcp_caller"]
        );
        assert_eq!(
            edits.set,
            vec![
                ("x-mcp-tool".to_string(), "expensive%20tool".to_string()),
                ("x-mcp-caller".to_string(), "alice".to_string()),
            ]
        );
        // Without a record (a request that goes on undecided), only removed.
        let mut edits = UpstreamHeaders::default();
        header_edits(&publish(), &head, None, &mut edits);
        assert!(edits.set.is_empty());
        assert_eq!(edits.remove.len(), 4);
    }

    #[test]
    fn a_verified_caller_without_sub_or_client_id_is_published_as_empty() {
        // A rate-limit descriptor built from a missing field is left out,
        // and with it the caller's bucket: such callers share the empty one.
        let record =
            CallRecord::new("allow", None).caller(Some(&Identity::anonymous("https://idp")));
        assert_eq!(record.field(CallField::Subject), Some(""));
        assert_eq!(record.field(CallField::ClientId), Some(""));
        assert_eq!(record.field(CallField::Issuer), Some("https://idp"));
        // No verified caller: nothing about one.
        let record = CallRecord::new("deny", None).caller(None);
        assert_eq!(record.field(CallField::Subject), None);
    }

    #[test]
    fn properties_name_each_known_field() {
        let mut record = CallRecord::new("deny", None);
        record.reason = Some("forbidden");
        record.method = Some("tools/call".into());
        assert_eq!(
            record.properties(),
            vec![
                ("mcp_authz.decision".to_string(), "deny".to_string()),
                ("mcp_authz.reason".to_string(), "forbidden".to_string()),
                ("mcp_authz.method".to_string(), "tools/call".to_string()),
            ]
        );
    }
}
