//! The caller as the verified token describes it.

use serde_json::{Map, Value};

/// Who is calling, taken from a token whose signature and claims have been
/// verified. Nothing in here is trusted before that.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The token's `iss` (equal to the provider's configured issuer).
    pub issuer: String,
    /// `sub`, when present.
    pub subject: Option<String>,
    /// `client_id`, else `azp`.
    pub client_id: Option<String>,
    /// Roles gathered from every configured `roles_claims` path.
    pub roles: Vec<String>,
    /// Scopes from the configured `scopes_claim`.
    pub scopes: Vec<String>,
    /// Scopes the held ones imply (`scope_implies`) and that are not held
    /// themselves.
    pub implied_scopes: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// All claims, for `identity_headers` that name a claim path.
    pub claims: Map<String, Value>,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to (DPoP,
    /// RFC 9449 §6.1). A bound token is only good with a proof by that key.
    pub jkt: Option<String>,
}

/// The claim at a dot-path (`realm_access.roles` as `["realm_access",
/// "roles"]`), if every step is there.
pub fn claim_at<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(claims.get(first)?, |value, segment| value.get(segment))
}

impl Identity {
    /// An identity granted nothing: its issuer alone, without subject,
    /// client, roles, scopes, claims or key binding. No request is ever
    /// decided for one (every request to the MCP endpoint needs a verified
    /// token); it is the sample caller each rule condition is tried on when
    /// the configuration loads (`condition::Condition::compile`).
    pub fn anonymous(issuer: &str) -> Identity {
        Identity {
            issuer: issuer.to_string(),
            subject: None,
            client_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            implied_scopes: Vec::new(),
            expires_at: 0,
            claims: Map::new(),
            jkt: None,
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the caller holds `scope`, itself or through a broader scope
    /// that implies it.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .chain(&self.implied_scopes)
            .any(|s| s == scope)
    }

    /// Every scope the caller holds, implied ones included.
    pub fn granted_scopes(&self) -> Vec<String> {
        self.scopes
            .iter()
            .chain(&self.implied_scopes)
            .cloned()
            .collect()
    }
}

use crate::config::ClaimSource;

/// Why an identity header was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueError {
    /// The claim is absent (or null): nothing to send.
    Absent,
    /// The claim is an object, or its text is not safe in a header.
    Unsafe,
}

/// An identity header's value, and how many list elements were left out of
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValue {
    pub text: String,
    pub dropped: usize,
}

impl Identity {
    /// The value an identity header carries: strings as they are, numbers and
    /// booleans as text, lists (and `$roles`, `$scopes`) space-separated.
    /// A list element that holds a space, a comma, a quote, a backslash or
    /// anything outside printable ASCII is left out (and counted in
    /// `dropped`), so no element can be read as two, or as another: the role
    /// `"admin x"` never shows up upstream as `admin`. Objects and text that
    /// is not safe in a header (control characters, non-ASCII, over 4 KiB)
    /// are refused so a claim can never split or smuggle headers.
    pub fn header_value(&self, source: &ClaimSource) -> Result<HeaderValue, HeaderValueError> {
        let (text, dropped) = match source {
            ClaimSource::Roles => list_text(self.roles.iter().map(String::as_str)),
            ClaimSource::Scopes => list_text(self.scopes.iter().map(String::as_str)),
            ClaimSource::Issuer => (self.issuer.clone(), 0),
            ClaimSource::Claim(path) => match claim_at(&self.claims, path) {
                None | Some(Value::Null) => return Err(HeaderValueError::Absent),
                Some(v) => scalar_or_list_text(v)?,
            },
        };
        if text.is_empty() && dropped > 0 {
            return Err(HeaderValueError::Unsafe);
        }
        // Leading or trailing spaces are dropped by every HTTP parser: `" admin "`
        // would arrive as `admin`.
        if text.len() > 4096
            || !text.bytes().all(|b| (0x20..0x7f).contains(&b))
            || text.trim() != text
        {
            return Err(HeaderValueError::Unsafe);
        }
        Ok(HeaderValue { text, dropped })
    }
}

/// Whether a list element can stand in a space-separated header value
/// without being mistaken for another.
fn is_safe_list_element(element: &str) -> bool {
    !element.is_empty()
        && element
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b',' | b'"' | b'\\'))
}

/// The space-separated safe elements, and how many were left out.
fn list_text<'a>(elements: impl Iterator<Item = &'a str>) -> (String, usize) {
    let mut kept: Vec<&str> = Vec::new();
    let mut dropped = 0;
    for element in elements {
        if is_safe_list_element(element) {
            kept.push(element);
        } else {
            dropped += 1;
        }
    }
    (kept.join(" "), dropped)
}

fn scalar_or_list_text(value: &Value) -> Result<(String, usize), HeaderValueError> {
    match value {
        Value::String(s) => Ok((s.clone(), 0)),
        Value::Number(n) => Ok((n.to_string(), 0)),
        Value::Bool(b) => Ok((b.to_string(), 0)),
        Value::Array(items) => {
            let texts = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    Value::Bool(b) => Ok(b.to_string()),
                    Value::Array(_) | Value::Object(_) | Value::Null => {
                        Err(HeaderValueError::Unsafe)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(list_text(texts.iter().map(String::as_str)))
        }
        Value::Null | Value::Object(_) => Err(HeaderValueError::Unsafe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_claims(claims: Value) -> Identity {
        let mut id = Identity::anonymous("https://idp.example");
        id.claims = claims.as_object().cloned().unwrap_or_default();
        id.roles = vec!["reader".into(), "admin".into()];
        id.scopes = vec!["mcp:read".into()];
        id
    }

    fn claim(path: &str) -> ClaimSource {
        ClaimSource::Claim(path.split('.').map(str::to_string).collect())
    }

    fn text(result: Result<HeaderValue, HeaderValueError>) -> Result<String, HeaderValueError> {
        result.map(|v| v.text)
    }

    #[test]
    fn list_elements_that_could_be_read_as_others_are_left_out() {
        let mut id = with_claims(json!({"groups": ["ops", "admin x", "a,b", "q\"", "ok"]}));
        id.roles = vec!["user".into(), "admin x".into(), "".into()];
        assert_eq!(
            id.header_value(&ClaimSource::Roles),
            Ok(HeaderValue {
                text: "user".into(),
                dropped: 2
            })
        );
        assert_eq!(
            id.header_value(&claim("groups")),
            Ok(HeaderValue {
                text: "ops ok".into(),
                dropped: 3
            })
        );
        id.roles = vec!["admin x".into()];
        assert_eq!(
            id.header_value(&ClaimSource::Roles),
            Err(HeaderValueError::Unsafe)
        );
        // A single value may hold spaces: it cannot be mistaken for a list.
        let id = with_claims(json!({"name": "Alice Smith"}));
        assert_eq!(
            text(id.header_value(&claim("name"))),
            Ok("Alice Smith".into())
        );
    }

    #[test]
    fn identity_header_values_follow_the_contract() {
        let id = with_claims(json!({
            "sub": "alice", "n": 42, "b": true, "list": ["a", 1, false],
            "nested": {"tenant": "t1"}, "obj": {"x": 1}, "evil": "a\r\nx-admin: yes",
            "utf": "é", "nul": null
        }));
        assert_eq!(text(id.header_value(&claim("sub"))), Ok("alice".into()));
        assert_eq!(text(id.header_value(&claim("n"))), Ok("42".into()));
        assert_eq!(text(id.header_value(&claim("b"))), Ok("true".into()));
        assert_eq!(
            text(id.header_value(&claim("list"))),
            Ok("a 1 false".into())
        );
        assert_eq!(
            text(id.header_value(&claim("nested.tenant"))),
            Ok("t1".into())
        );
        assert_eq!(
            text(id.header_value(&ClaimSource::Roles)),
            Ok("reader admin".into())
        );
        assert_eq!(
            text(id.header_value(&ClaimSource::Scopes)),
            Ok("mcp:read".into())
        );
        assert_eq!(
            text(id.header_value(&ClaimSource::Issuer)),
            Ok("https://idp.example".into())
        );
        assert_eq!(
            text(id.header_value(&claim("obj"))),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            text(id.header_value(&claim("evil"))),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            text(id.header_value(&claim("utf"))),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            text(id.header_value(&claim("nul"))),
            Err(HeaderValueError::Absent)
        );
        assert_eq!(
            text(id.header_value(&claim("missing"))),
            Err(HeaderValueError::Absent)
        );
        assert_eq!(
            text(id.header_value(&claim("sub.deeper"))),
            Err(HeaderValueError::Absent)
        );
    }
}
