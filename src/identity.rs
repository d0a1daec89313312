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
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// All claims, for `identity_headers` that name a claim path.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// An identity with no roles and no scopes, for tests and examples.
    pub fn anonymous(issuer: &str) -> Identity {
        Identity {
            issuer: issuer.to_string(),
            subject: None,
            client_id: None,
            roles: Vec::new(),
            scopes: Vec::new(),
            expires_at: 0,
            claims: Map::new(),
        }
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
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

impl Identity {
    /// The value an identity header carries: strings as they are, numbers and
    /// booleans as text, lists (and `$roles`, `$scopes`) space-separated.
    /// Objects and text that is not safe in a header (control characters,
    /// non-ASCII, over 4 KiB) are refused so a claim can never split or
    /// smuggle headers.
    pub fn header_value(&self, source: &ClaimSource) -> Result<String, HeaderValueError> {
        let text = match source {
            ClaimSource::Roles => self.roles.join(" "),
            ClaimSource::Scopes => self.scopes.join(" "),
            ClaimSource::Issuer => self.issuer.clone(),
            ClaimSource::Claim(path) => {
                let mut value: Option<&Value> = None;
                for (i, segment) in path.iter().enumerate() {
                    value = if i == 0 {
                        self.claims.get(segment)
                    } else {
                        value.and_then(|v| v.get(segment))
                    };
                }
                match value {
                    None | Some(Value::Null) => return Err(HeaderValueError::Absent),
                    Some(v) => scalar_or_list_text(v)?,
                }
            }
        };
        if text.len() > 4096 || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(HeaderValueError::Unsafe);
        }
        Ok(text)
    }
}

fn scalar_or_list_text(value: &Value) -> Result<String, HeaderValueError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Array(_) | Value::Object(_) | Value::Null => Err(HeaderValueError::Unsafe),
                scalar => scalar_or_list_text(scalar),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|parts| parts.join(" ")),
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

    #[test]
    fn identity_header_values_follow_the_contract() {
        let id = with_claims(json!({
            "sub": "alice", "n": 42, "b": true, "list": ["a", 1, false],
            "nested": {"tenant": "t1"}, "obj": {"x": 1}, "evil": "a\r\nx-admin: yes",
            "utf": "é", "nul": null
        }));
        assert_eq!(id.header_value(&claim("sub")), Ok("alice".into()));
        assert_eq!(id.header_value(&claim("n")), Ok("42".into()));
        assert_eq!(id.header_value(&claim("b")), Ok("true".into()));
        assert_eq!(id.header_value(&claim("list")), Ok("a 1 false".into()));
        assert_eq!(id.header_value(&claim("nested.tenant")), Ok("t1".into()));
        assert_eq!(
            id.header_value(&ClaimSource::Roles),
            Ok("reader admin".into())
        );
        assert_eq!(id.header_value(&ClaimSource::Scopes), Ok("mcp:read".into()));
        assert_eq!(
            id.header_value(&ClaimSource::Issuer),
            Ok("https://idp.example".into())
        );
        assert_eq!(
            id.header_value(&claim("obj")),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            id.header_value(&claim("evil")),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            id.header_value(&claim("utf")),
            Err(HeaderValueError::Unsafe)
        );
        assert_eq!(
            id.header_value(&claim("nul")),
            Err(HeaderValueError::Absent)
        );
        assert_eq!(
            id.header_value(&claim("missing")),
            Err(HeaderValueError::Absent)
        );
        assert_eq!(
            id.header_value(&claim("sub.deeper")),
            Err(HeaderValueError::Absent)
        );
    }
}
