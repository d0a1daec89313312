//! Token exchange (RFC 8693): the caller's verified access token traded for
//! one issued for the upstream's audience, and what the filter accepts of
//! the answer: an access token (`issued_token_type`), of `token_type`
//! Bearer, with a positive `expires_in`, safe to put in a header, and — when
//! it is a JWT — issued by the provider for the configured audience.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use super::client_auth::Assertion;
use super::{error_code, form_post, Call, CallAnswer};
use crate::config::UpstreamToken;
use crate::token::{self, MAX_TOKEN_BYTES};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// An exchanged token is reused until this long before it expires, so the
/// upstream never gets one about to lapse.
pub const EXPIRY_MARGIN_MS: u64 = 30_000;

/// An exchanged token is reused at most this long, however long it lives:
/// one revoked at the authorization server stops being used within it.
pub const MAX_REUSE_MS: u64 = 3_600_000;

/// The exchange request for the caller's `subject_token` to `url`.
pub fn request(
    config: &UpstreamToken,
    url: &str,
    subject_token: &str,
    assertion: &Assertion,
) -> Option<Call> {
    let mut params = vec![
        ("grant_type", GRANT_TYPE),
        ("subject_token", subject_token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        ("requested_token_type", ACCESS_TOKEN_TYPE),
    ];
    if let Some(audience) = &config.audience {
        params.push(("audience", audience));
    }
    if let Some(resource) = &config.resource {
        params.push(("resource", resource));
    }
    if let Some(scope) = &config.scope {
        params.push(("scope", scope));
    }
    form_post(&config.endpoint, url, &config.client, &params, assertion)
}

/// What an exchange answer says.
#[derive(Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A token for the upstream, and until when (ms) it may be reused.
    Issued { token: String, until_ms: u64 },
    /// The authorization server refused the exchange (its error code, when
    /// safe to log), or issued something the filter must not forward: 502.
    Refused(String),
    /// No usable answer (down, 5xx): 503.
    Unavailable(String),
}

/// Never the token.
impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Issued { until_ms, .. } => write!(f, "Issued(until {until_ms})"),
            Verdict::Refused(why) => write!(f, "Refused({why})"),
            Verdict::Unavailable(why) => write!(f, "Unavailable({why})"),
        }
    }
}

/// Reads the answer to an exchange request; `issuer` is the provider's.
pub fn read(answer: &CallAnswer, config: &UpstreamToken, issuer: &str, now_ms: u64) -> Verdict {
    if answer.status >= 500 || answer.status == 0 {
        return Verdict::Unavailable(format!("status {}", answer.status));
    }
    if answer.status != 200 {
        return Verdict::Refused(match error_code(answer) {
            Some(code) => format!("status {}, error {code}", answer.status),
            None => format!("status {}", answer.status),
        });
    }
    match check(answer, config, issuer, now_ms) {
        Ok((token, until_ms)) => Verdict::Issued { token, until_ms },
        Err(why) => Verdict::Refused(why),
    }
}

fn check(
    answer: &CallAnswer,
    config: &UpstreamToken,
    issuer: &str,
    now_ms: u64,
) -> Result<(String, u64), String> {
    let doc = answer.json_object()?;
    let text = |name: &str| doc.get(name).and_then(Value::as_str);
    if text("issued_token_type") != Some(ACCESS_TOKEN_TYPE) {
        return Err("issued_token_type is not an access token".into());
    }
    if !text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("bearer")) {
        return Err("token_type is not Bearer".into());
    }
    let token = text("access_token").ok_or("no access_token")?;
    // It goes in a header: b64token characters only (no CR, LF, space).
    if token.len() > MAX_TOKEN_BYTES || token::credentials(&[&format!("Bearer {token}")]).is_err() {
        return Err("access_token is not a token a header can carry".into());
    }
    let expires_in = doc
        .get("expires_in")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or("expires_in is not a positive integer")?;
    let mut expires_ms = now_ms.saturating_add(expires_in.saturating_mul(1000));
    if let Some(claims) = jwt_claims(token) {
        check_jwt(&claims, config, issuer, now_ms / 1000)?;
        if let Some(exp) = claims.get("exp").and_then(token::numeric_date) {
            expires_ms = expires_ms.min(exp.saturating_mul(1000));
        }
    }
    if expires_ms <= now_ms {
        return Err("the token issued has already expired".into());
    }
    let until_ms = expires_ms
        .saturating_sub(EXPIRY_MARGIN_MS)
        .min(now_ms.saturating_add(MAX_REUSE_MS))
        .max(now_ms);
    Ok((token.to_string(), until_ms))
}

/// The payload of a JWT-shaped token (read, not verified: the token comes
/// straight from the authorization server, over the configured cluster).
fn jwt_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    match crate::json::parse_strict(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A JWT issued by the exchange must name the provider as issuer and the
/// configured audience (else the resource) in `aud`: a token for another
/// audience would make the upstream a confused deputy.
fn check_jwt(
    claims: &serde_json::Map<String, Value>,
    config: &UpstreamToken,
    issuer: &str,
    now_s: u64,
) -> Result<(), String> {
    if let Some(iss) = claims.get("iss") {
        if iss.as_str() != Some(issuer) {
            return Err("the token issued names another issuer".into());
        }
    }
    let wanted = config
        .audience
        .as_deref()
        .or(config.resource.as_deref())
        .unwrap_or_default();
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == wanted,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(wanted)),
        _ => false,
    };
    if !audience_ok {
        return Err("the token issued is not for the configured audience".into());
    }
    if let Some(exp) = claims.get("exp") {
        match token::numeric_date(exp) {
            Some(exp) if exp > now_s => {}
            _ => return Err("the token issued has expired or a malformed exp".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Client, ClientAuth, Endpoint, Secret};

    const ISS: &str = "https://idp.example/realms/mcp";
    const NOW_MS: u64 = 1_750_000_000_000;

    fn config() -> UpstreamToken {
        UpstreamToken {
            provider: 0,
            endpoint: Endpoint {
                cluster: "idp".into(),
                url: Some("https://idp.example/token".into()),
                timeout_ms: 1000,
            },
            client: Client {
                id: "gw".into(),
                auth: ClientAuth::SecretBasic(Secret::new("s")),
            },
            audience: Some("downstream-api".into()),
            resource: None,
            scope: Some("api:read".into()),
            header: "authorization".into(),
            cache: true,
        }
    }

    fn jwt(claims: Value) -> String {
        let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", part(json!({"alg": "RS256"})), part(claims))
    }

    fn issued(token: &str) -> Value {
        json!({"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE,
               "token_type": "Bearer", "expires_in": 300})
    }

    fn answer(status: u32, body: &Value) -> CallAnswer {
        CallAnswer {
            status,
            content_types: vec!["application/json".into()],
            content_encodings: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn verdict(body: &Value) -> Verdict {
        read(&answer(200, body), &config(), ISS, NOW_MS)
    }

    fn with(mut body: Value, name: &str, value: Value) -> Value {
        body[name] = value;
        body
    }

    #[test]
    fn the_request_names_the_grant_the_subject_and_the_audience() {
        let assertion = Assertion {
            audience: ISS,
            now_s: 0,
            jti: "j",
        };
        let call =
            request(&config(), "https://idp.example/token", "caller", &assertion).expect("call");
        assert_eq!(
            String::from_utf8_lossy(&call.body),
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=caller\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &audience=downstream-api&scope=api%3Aread"
        );
    }

    #[test]
    fn an_opaque_token_is_issued_until_shortly_before_it_expires() {
        assert_eq!(
            verdict(&issued("opaque-token")),
            Verdict::Issued {
                token: "opaque-token".into(),
                until_ms: NOW_MS + 300_000 - EXPIRY_MARGIN_MS
            }
        );
    }

    #[test]
    fn a_long_lived_token_is_reused_an_hour_at_most() {
        let long = with(issued("opaque-token"), "expires_in", json!(u64::MAX / 1000));
        assert_eq!(
            verdict(&long),
            Verdict::Issued {
                token: "opaque-token".into(),
                until_ms: NOW_MS + MAX_REUSE_MS
            }
        );
    }

    #[test]
    fn a_jwt_must_be_for_the_configured_audience_and_issuer() {
        let now = NOW_MS / 1000;
        let good = jwt(json!({"iss": ISS, "aud": ["x", "downstream-api"], "exp": now + 100}));
        assert_eq!(
            verdict(&issued(&good)),
            Verdict::Issued {
                token: good.clone(),
                until_ms: (now + 100) * 1000 - EXPIRY_MARGIN_MS
            },
            "the earlier of exp and expires_in"
        );
        for claims in [
            json!({"iss": ISS, "aud": "https://mcp.example.com/mcp", "exp": now + 100}),
            json!({"iss": ISS, "exp": now + 100}),
            json!({"iss": "https://evil", "aud": "downstream-api", "exp": now + 100}),
            json!({"iss": ISS, "aud": "downstream-api", "exp": now - 1}),
            json!({"iss": ISS, "aud": "downstream-api", "exp": "soon"}),
        ] {
            assert!(
                matches!(verdict(&issued(&jwt(claims.clone()))), Verdict::Refused(_)),
                "{claims}"
            );
        }
    }

    #[test]
    fn the_answer_must_be_a_bearer_access_token_with_a_lifetime() {
        for (name, value) in [
            (
                "issued_token_type",
                json!("urn:ietf:params:oauth:token-type:refresh_token"),
            ),
            ("issued_token_type", json!(null)),
            ("token_type", json!("N_A")),
            ("token_type", json!("DPoP")),
            ("expires_in", json!(0)),
            ("expires_in", json!("300")),
            ("expires_in", json!(null)),
            ("access_token", json!("two words")),
            ("access_token", json!("x\r\nx-admin: 1")),
            ("access_token", json!("")),
            ("access_token", json!(42)),
        ] {
            assert!(
                matches!(
                    verdict(&with(issued("t"), name, value.clone())),
                    Verdict::Refused(_)
                ),
                "{name}: {value}"
            );
        }
        assert!(matches!(
            verdict(&with(issued("t"), "token_type", json!("bearer"))),
            Verdict::Issued { .. }
        ));
    }

    #[test]
    fn refusals_and_outages_are_told_apart() {
        let refused = read(
            &answer(400, &json!({"error": "invalid_grant"})),
            &config(),
            ISS,
            NOW_MS,
        );
        assert_eq!(
            refused,
            Verdict::Refused("status 400, error invalid_grant".into())
        );
        assert!(matches!(
            read(&answer(503, &json!({})), &config(), ISS, NOW_MS),
            Verdict::Unavailable(_)
        ));
        let garbage = CallAnswer {
            status: 200,
            content_types: vec!["application/json".into()],
            content_encodings: Vec::new(),
            body: b"<html>".to_vec(),
        };
        assert!(matches!(
            read(&garbage, &config(), ISS, NOW_MS),
            Verdict::Refused(_)
        ));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let v = verdict(&issued("secret-upstream-token"));
        assert!(!format!("{v:?}").contains("secret-upstream-token"));
    }
}
