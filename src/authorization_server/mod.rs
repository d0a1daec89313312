//! Calls to the authorization server in the middle of a request: token
//! introspection (RFC 7662, [`introspection`]) and token exchange (RFC 8693,
//! [`token_exchange`]), with the client authentication both use
//! ([`client_auth`]) and the answers shared by every worker of the proxy
//! ([`shared`]: one call per token, cached, keyed by a digest).
//!
//! Plain functions: a [`Call`] is built here and carried out by the host;
//! its [`CallAnswer`] comes back here to be read. The exchange
//! (`crate::exchange`) decides when.

pub mod client_auth;
pub mod introspection;
pub mod shared;
pub mod token_exchange;

use crate::config::{Client, Endpoint};
use crate::keys::discovery;
use crate::media;

/// Largest answer read from the authorization server; anything longer is
/// unusable (real answers are a few hundred bytes).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Calls one worker may have in flight at once; past it, a request that
/// needs a call is answered 503 at once rather than queued without bound.
pub const MAX_CALLS_IN_FLIGHT: usize = 64;

/// A failed call (down, slow, unusable answer) is remembered this long, so
/// that requests waiting on it, and the ones right after, get their answer
/// without each trying the failing server again.
pub const FAILURE_MEMORY_MS: u64 = 1000;

/// An HTTP call through an Envoy cluster, as the host makes it.
#[derive(Clone, PartialEq, Eq)]
pub struct Call {
    pub cluster: String,
    /// `:method`, `:path`, `:authority` first, then the rest.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// Never the body or the headers: they carry the token and the secret.
impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self
            .headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map_or("?", |(_, v)| v.as_str());
        write!(f, "Call({} {path})", self.cluster)
    }
}

/// What came back: `None` when the call failed (could not start, timed out,
/// connection refused or reset).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallAnswer {
    /// `:status` (0 when absent or not a number).
    pub status: u32,
    /// Every `Content-Type` value.
    pub content_types: Vec<String>,
    /// Every `Content-Encoding` value.
    pub content_encodings: Vec<String>,
    /// The body, at most [`MAX_ANSWER_BYTES`] + 1 bytes of it.
    pub body: Vec<u8>,
}

impl CallAnswer {
    /// The body as a strict JSON object (no duplicate key anywhere), if it
    /// is one, declared `application/json`, and not too large.
    pub fn json_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        if self.body.len() > MAX_ANSWER_BYTES {
            return Err("answer too large".into());
        }
        match self.content_types.as_slice() {
            [one] if media::essence(one) == media::JSON => {}
            _ => return Err("answer is not declared application/json".into()),
        }
        // Bytes in an encoding are not the JSON they may happen to parse as.
        let encoded = self
            .content_encodings
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        if encoded {
            return Err("answer has a content-encoding".into());
        }
        match crate::json::parse_strict(&self.body) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            Ok(_) => Err("answer is not a JSON object".into()),
            Err(e) => Err(format!("answer unreadable: {e}")),
        }
    }
}

/// Which endpoint of the authorization server a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Introspection,
    TokenExchange,
}

impl Purpose {
    /// Stable, lower-case name for stats, logs and shared-data keys.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::Introspection => "introspection",
            Purpose::TokenExchange => "token_exchange",
        }
    }

    /// The metadata field naming the endpoint (RFC 8414 section 2).
    pub fn metadata_field(self) -> &'static str {
        match self {
            Purpose::Introspection => "introspection_endpoint",
            Purpose::TokenExchange => "token_endpoint",
        }
    }
}

/// `POST` of a form to `url` through `endpoint.cluster`, authenticated as
/// `client`. `None` when the URL cannot be called.
pub fn form_post(
    endpoint: &Endpoint,
    url: &str,
    client: &Client,
    params: &[(&str, &str)],
    assertion: &client_auth::Assertion,
) -> Option<Call> {
    let (authority, path) = discovery::authority_and_path(url)?;
    let mut params: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), path),
        (":authority".to_string(), authority),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
    ];
    let authorization = client_auth::apply(client, &mut params, assertion);
    headers.extend(authorization.map(|value| ("authorization".to_string(), value)));
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Some(Call {
        cluster: endpoint.cluster.clone(),
        headers,
        body: form_encode(&params).into_bytes(),
        timeout_ms: endpoint.timeout_ms,
    })
}

/// `GET` of the `i`-th metadata document of `issuer` (RFC 8414, then OpenID
/// discovery); `None` past the last.
pub fn metadata_request(endpoint: &Endpoint, issuer: &str, i: usize) -> Option<Call> {
    let url = discovery::metadata_urls(issuer).into_iter().nth(i)?;
    let (authority, path) = discovery::authority_and_path(&url)?;
    Some(Call {
        cluster: endpoint.cluster.clone(),
        headers: vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), path),
            (":authority".to_string(), authority),
            ("accept".to_string(), "application/json".to_string()),
        ],
        body: Vec::new(),
        timeout_ms: endpoint.timeout_ms,
    })
}

/// The endpoint `purpose` names in a metadata document of `issuer`: the
/// document must name the same issuer (RFC 8414 section 3.3) and the
/// endpoint must be an `http(s)` URL.
pub fn discovered_endpoint(
    answer: &CallAnswer,
    issuer: &str,
    purpose: Purpose,
) -> Result<String, String> {
    if answer.status != 200 {
        return Err(format!("metadata answered status {}", answer.status));
    }
    let doc = answer.json_object()?;
    let declared = doc.get("issuer").and_then(|v| v.as_str());
    if declared.map(|d| d.trim_end_matches('/')) != Some(issuer.trim_end_matches('/')) {
        return Err("metadata names another issuer".into());
    }
    let field = purpose.metadata_field();
    match doc.get(field).and_then(|v| v.as_str()) {
        Some(url) if crate::uri::HttpUri::parse(url).is_ok() => Ok(url.to_string()),
        Some(_) => Err(format!("{field} is not an http(s) URL")),
        None => Err(format!("metadata has no {field}")),
    }
}

/// `application/x-www-form-urlencoded` (the WHATWG serializer: unreserved
/// bytes as they are, space as `+`, everything else percent-encoded).
pub fn form_encode(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", form_component(k), form_component(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One form-encoded component.
pub fn form_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An error code an authorization server gave (`invalid_grant`), fit for a
/// log line: only the characters RFC 6749 allows in one, and short.
pub fn error_code(answer: &CallAnswer) -> Option<String> {
    let doc = answer.json_object().ok()?;
    let code = doc.get("error")?.as_str()?;
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    ok.then(|| code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientAuth, Secret};

    fn answer(status: u32, body: &str) -> CallAnswer {
        CallAnswer {
            status,
            content_types: vec!["application/json; charset=utf-8".into()],
            content_encodings: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn forms_encode_everything_but_unreserved_bytes() {
        assert_eq!(
            form_encode(&[("a b", "x&y=z+/é"), ("t", "abc-._*~")]),
            "a+b=x%26y%3Dz%2B%2F%C3%A9&t=abc-._*%7E"
        );
    }

    #[test]
    fn a_form_post_goes_through_the_cluster_to_the_urls_authority_and_path() {
        let endpoint = Endpoint {
            cluster: "idp".into(),
            url: None,
            timeout_ms: 900,
        };
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::SecretPost(Secret::new("s3cret")),
        };
        let call = form_post(
            &endpoint,
            "https://idp.example:8443/realms/x/introspect?a=1",
            &client,
            &[("token", "t")],
            &client_auth::Assertion {
                audience: "https://idp.example:8443/realms/x",
                now_s: 0,
                jti: "j",
            },
        )
        .expect("a URL");
        assert_eq!(call.cluster, "idp");
        assert_eq!(call.timeout_ms, 900);
        assert_eq!(
            &call.headers[..3],
            &[
                (":method".to_string(), "POST".to_string()),
                (":path".to_string(), "/realms/x/introspect?a=1".to_string()),
                (":authority".to_string(), "idp.example:8443".to_string()),
            ]
        );
        assert_eq!(
            String::from_utf8_lossy(&call.body),
            "token=t&client_id=gw&client_secret=s3cret"
        );
        let debug = format!("{call:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("token=t"),
            "{debug}"
        );
    }

    #[test]
    fn endpoints_are_discovered_only_from_the_issuers_own_metadata() {
        let doc = r#"{"issuer":"https://idp/x","introspection_endpoint":"https://idp/x/introspect","token_endpoint":"https://idp/x/token"}"#;
        assert_eq!(
            discovered_endpoint(&answer(200, doc), "https://idp/x", Purpose::Introspection),
            Ok("https://idp/x/introspect".into())
        );
        assert_eq!(
            discovered_endpoint(&answer(200, doc), "https://idp/x", Purpose::TokenExchange),
            Ok("https://idp/x/token".into())
        );
        assert!(
            discovered_endpoint(&answer(200, doc), "https://evil/x", Purpose::Introspection)
                .is_err()
        );
        assert!(
            discovered_endpoint(&answer(404, doc), "https://idp/x", Purpose::Introspection)
                .is_err()
        );
        let other = r#"{"issuer":"https://idp/x","introspection_endpoint":"file:///etc/passwd"}"#;
        assert!(
            discovered_endpoint(&answer(200, other), "https://idp/x", Purpose::Introspection)
                .is_err()
        );
        let twice = r#"{"issuer":"https://idp/x","issuer":"https://evil/x","introspection_endpoint":"https://idp/x/i"}"#;
        assert!(
            discovered_endpoint(&answer(200, twice), "https://idp/x", Purpose::Introspection)
                .is_err()
        );
    }

    #[test]
    fn answers_must_be_one_json_object_declared_json_and_small() {
        assert!(answer(200, r#"{"a":1}"#).json_object().is_ok());
        assert!(answer(200, r#"[1]"#).json_object().is_err());
        assert!(answer(200, r#"{"a":1,"a":2}"#).json_object().is_err());
        let mut plain = answer(200, r#"{"a":1}"#);
        plain.content_types = vec!["text/html".into()];
        assert!(plain.json_object().is_err());
        plain.content_types = vec!["application/json".into(), "application/json".into()];
        assert!(plain.json_object().is_err());
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_ANSWER_BYTES));
        assert!(answer(200, &big).json_object().is_err());
        let mut encoded = answer(200, r#"{"a":1}"#);
        encoded.content_encodings = vec!["gzip".into()];
        assert!(encoded.json_object().is_err());
        encoded.content_encodings = vec!["identity".into()];
        assert!(encoded.json_object().is_ok());
    }

    #[test]
    fn error_codes_are_kept_only_when_safe_to_log() {
        assert_eq!(
            error_code(&answer(400, r#"{"error":"invalid_grant"}"#)),
            Some("invalid_grant".into())
        );
        assert_eq!(error_code(&answer(400, r#"{"error":"a\nb"}"#)), None);
        assert_eq!(error_code(&answer(400, r#"{"error":7}"#)), None);
    }
}
