//! Token introspection (RFC 7662): the request for one token, and what the
//! filter accepts of the answer. Only `"active": true` (the JSON boolean)
//! with an accepted `aud`, the provider's `iss` (when given), an `exp` still
//! ahead, nothing not yet valid, and a bearer or DPoP token (`token_type`
//! Bearer or DPoP when given; no `cnf` binding but DPoP's `jkt`) makes an
//! identity; its `scope`, `client_id`, `sub`, role claims and `cnf.jkt` are
//! read as a JWT's are (a bound token then needs its proof, as a JWT does).

use serde_json::{Map, Value};

use super::client_auth::Assertion;
use super::{form_post, Call, CallAnswer};
use crate::config::{Introspection, Provider};
use crate::identity::Identity;
use crate::token::{self, TokenErrorKind};

/// An "inactive" answer (or one refused here) is remembered this long: a
/// client retrying a revoked token does not make a call each time, and a
/// token that becomes valid is not refused for long.
pub const NEGATIVE_CACHE_MS: u64 = 5_000;

/// The introspection request for `token` to `url`.
pub fn request(
    config: &Introspection,
    url: &str,
    token: &str,
    assertion: &Assertion,
) -> Option<Call> {
    form_post(
        &config.endpoint,
        url,
        &config.client,
        &[("token", token), ("token_type_hint", "access_token")],
        assertion,
    )
}

/// What an introspection answer says.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Active and acceptable: the claims, and until when (ms) the answer
    /// may be reused.
    Active {
        claims: Map<String, Value>,
        until_ms: u64,
    },
    /// Inactive, or active but not for this resource: a 401.
    Refused(TokenErrorKind),
    /// No answer the filter can trust either way: a 503.
    Unusable(String),
}

/// Reads the answer to an introspection request for `provider`.
pub fn read(answer: &CallAnswer, provider: &Provider, now_ms: u64) -> Verdict {
    if answer.status != 200 {
        return Verdict::Unusable(format!("status {}", answer.status));
    }
    let claims = match answer.json_object() {
        Ok(claims) => claims,
        Err(why) => return Verdict::Unusable(why),
    };
    match claims.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Verdict::Refused(TokenErrorKind::Inactive),
        // `"true"`, 1, absent: RFC 7662 makes `active` a boolean.
        _ => return Verdict::Unusable("\"active\" is not a boolean".into()),
    }
    match check(&claims, provider, now_ms / 1000) {
        Ok(exp) => {
            let cache_seconds = provider
                .introspection
                .as_ref()
                .map_or(0, |c| c.cache_seconds);
            let until_ms = (exp * 1000).min(now_ms.saturating_add(cache_seconds * 1000));
            Verdict::Active { claims, until_ms }
        }
        Err(kind) => Verdict::Refused(kind),
    }
}

/// The caller, from claims an introspection answer accepted (again, at
/// `now_s`: a cached answer is checked each time it is used).
pub fn identity(
    claims: &Map<String, Value>,
    provider: &Provider,
    now_s: u64,
) -> Result<Identity, TokenErrorKind> {
    let exp = check(claims, provider, now_s)?;
    Ok(token::identity(claims.clone(), provider, exp))
}

/// Checks an active answer's claims; returns `exp`.
fn check(
    claims: &Map<String, Value>,
    provider: &Provider,
    now_s: u64,
) -> Result<u64, TokenErrorKind> {
    let string_or_absent = |name| claims.get(name).is_none_or(Value::is_string);
    if !["iss", "sub", "client_id", "username", "token_type", "jti"]
        .into_iter()
        .all(string_or_absent)
    {
        return Err(TokenErrorKind::Malformed);
    }
    // A token bound to a key: DPoP's binding (`cnf` holding `jkt` alone) is
    // checked against the request's proof once the answer is used
    // (`gate::introspected`); any other (mTLS's `x5t#S256`) cannot be, and
    // accepting the token without it would undo the binding.
    let jkt = match claims.get("cnf") {
        None => None,
        Some(Value::Object(cnf)) if cnf.len() == 1 => match cnf.get("jkt") {
            Some(Value::String(jkt)) if !jkt.is_empty() => Some(jkt),
            _ => return Err(TokenErrorKind::TokenType),
        },
        Some(_) => return Err(TokenErrorKind::TokenType),
    };
    let type_ok = match claims.get("token_type").and_then(Value::as_str) {
        None => true,
        Some(t) if t.eq_ignore_ascii_case("bearer") => true,
        // RFC 9449 §6.2: a DPoP token says so, and names its key.
        Some(t) if t.eq_ignore_ascii_case("dpop") => jkt.is_some(),
        Some(_) => false,
    };
    if !type_ok {
        return Err(TokenErrorKind::TokenType);
    }
    if let Some(iss) = claims.get("iss").and_then(Value::as_str) {
        if iss != provider.issuer {
            return Err(TokenErrorKind::Issuer);
        }
    }
    let accepted = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| provider.audiences.iter().any(|a| a == aud))
    };
    let audience_ok = match claims.get("aud") {
        Some(aud @ Value::String(_)) => accepted(aud),
        Some(Value::Array(list)) => list.iter().any(accepted),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenErrorKind::Audience);
    }
    let skew = provider.clock_skew_seconds;
    let exp = claims
        .get("exp")
        .and_then(token::numeric_date)
        .ok_or(TokenErrorKind::Malformed)?;
    if exp.saturating_add(skew) <= now_s {
        return Err(TokenErrorKind::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(value) = claims.get(name) {
            let at = token::numeric_date(value).ok_or(TokenErrorKind::Malformed)?;
            if at > now_s.saturating_add(skew) {
                return Err(TokenErrorKind::NotYetValid);
            }
        }
    }
    Ok(exp)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::{Client, ClientAuth, Endpoint, Secret};
    use crate::token::tests::{provider, AUD, ISS, NOW};

    fn introspecting() -> Provider {
        let mut p = provider(ISS);
        p.roles_claims = vec![vec!["realm_access".into(), "roles".into()]];
        p.introspection = Some(Introspection {
            endpoint: Endpoint {
                cluster: "idp".into(),
                url: Some("https://idp/introspect".into()),
                timeout_ms: 1000,
            },
            client: Client {
                id: "gw".into(),
                auth: ClientAuth::SecretBasic(Secret::new("s")),
            },
            cache_seconds: 60,
        });
        p
    }

    fn active() -> Value {
        json!({"active": true, "iss": ISS, "aud": AUD, "exp": NOW + 300, "iat": NOW - 5,
               "sub": "alice", "client_id": "cli", "scope": "mcp:read mcp:write",
               "token_type": "Bearer", "realm_access": {"roles": ["reader"]}})
    }

    fn answer(body: &Value) -> CallAnswer {
        CallAnswer {
            status: 200,
            content_types: vec!["application/json".into()],
            content_encodings: Vec::new(),
            body: body.to_string().into_bytes(),
        }
    }

    fn verdict(body: &Value) -> Verdict {
        read(&answer(body), &introspecting(), NOW * 1000)
    }

    fn with(mut body: Value, name: &str, value: Value) -> Value {
        body[name] = value;
        body
    }

    fn without(mut body: Value, name: &str) -> Value {
        body.as_object_mut().map(|m| m.remove(name));
        body
    }

    #[test]
    fn the_request_posts_the_token_with_a_hint() {
        let p = introspecting();
        let config = p.introspection.as_ref().expect("introspection");
        let assertion = Assertion {
            audience: ISS,
            now_s: NOW,
            jti: "j",
        };
        let call = request(config, "https://idp/introspect", "op/aque+", &assertion).expect("call");
        assert_eq!(
            String::from_utf8_lossy(&call.body),
            "token=op%2Faque%2B&token_type_hint=access_token"
        );
        assert!(call
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v.starts_with("Basic ")));
    }

    #[test]
    fn an_active_answer_maps_to_an_identity_like_a_jwt() {
        let Verdict::Active { claims, until_ms } = verdict(&active()) else {
            panic!("active expected");
        };
        assert_eq!(until_ms, (NOW + 60) * 1000, "cache_seconds before exp");
        let id = identity(&claims, &introspecting(), NOW).expect("identity");
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert_eq!(id.client_id.as_deref(), Some("cli"));
        assert_eq!(id.roles, vec!["reader"]);
        assert_eq!(id.scopes, vec!["mcp:read", "mcp:write"]);
        assert_eq!(id.expires_at, NOW + 300);
    }

    #[test]
    fn an_answer_is_reused_no_longer_than_the_tokens_exp() {
        let short = with(active(), "exp", json!(NOW + 7));
        let Verdict::Active { until_ms, .. } = verdict(&short) else {
            panic!("active expected");
        };
        assert_eq!(until_ms, (NOW + 7) * 1000);
    }

    #[test]
    fn only_the_json_boolean_true_is_active() {
        assert_eq!(
            verdict(&json!({"active": false})),
            Verdict::Refused(TokenErrorKind::Inactive)
        );
        for odd in [json!("true"), json!(1), json!(null), json!([true])] {
            assert!(
                matches!(
                    verdict(&with(active(), "active", odd.clone())),
                    Verdict::Unusable(_)
                ),
                "{odd}"
            );
        }
        assert!(matches!(
            verdict(&without(active(), "active")),
            Verdict::Unusable(_)
        ));
    }

    #[test]
    fn a_repeated_key_makes_the_answer_unusable() {
        let body = br#"{"active":false,"active":true,"aud":"https://mcp.example.com/mcp","exp":9999999999}"#;
        let answer = CallAnswer {
            status: 200,
            content_types: vec!["application/json".into()],
            content_encodings: Vec::new(),
            body: body.to_vec(),
        };
        assert!(matches!(
            read(&answer, &introspecting(), NOW * 1000),
            Verdict::Unusable(_)
        ));
    }

    #[test]
    fn other_statuses_and_media_types_are_unusable() {
        let mut a = answer(&active());
        a.status = 401;
        assert!(matches!(
            read(&a, &introspecting(), NOW * 1000),
            Verdict::Unusable(_)
        ));
        let mut a = answer(&active());
        a.content_types = vec!["application/token-introspection+jwt".into()];
        assert!(matches!(
            read(&a, &introspecting(), NOW * 1000),
            Verdict::Unusable(_)
        ));
    }

    #[test]
    fn audience_issuer_time_and_type_are_checked() {
        let refused = |body: Value| match verdict(&body) {
            Verdict::Refused(kind) => kind,
            other => panic!("refusal expected, got {other:?}"),
        };
        assert_eq!(refused(without(active(), "aud")), TokenErrorKind::Audience);
        assert_eq!(
            refused(with(active(), "aud", json!("https://other.example"))),
            TokenErrorKind::Audience
        );
        assert!(matches!(
            verdict(&with(
                active(),
                "aud",
                json!(["https://other.example", AUD])
            )),
            Verdict::Active { .. }
        ));
        assert_eq!(
            refused(with(active(), "iss", json!("https://evil.example"))),
            TokenErrorKind::Issuer
        );
        assert!(matches!(
            verdict(&without(active(), "iss")),
            Verdict::Active { .. }
        ));
        assert_eq!(refused(without(active(), "exp")), TokenErrorKind::Malformed);
        assert_eq!(
            refused(with(active(), "exp", json!("9999999999"))),
            TokenErrorKind::Malformed
        );
        assert_eq!(
            refused(with(active(), "exp", json!(NOW - 61))),
            TokenErrorKind::Expired
        );
        assert_eq!(
            refused(with(active(), "nbf", json!(NOW + 600))),
            TokenErrorKind::NotYetValid
        );
        assert_eq!(
            refused(with(active(), "token_type", json!("refresh_token"))),
            TokenErrorKind::TokenType
        );
        // DPoP says so and names its key; no other binding is taken.
        assert_eq!(
            refused(with(active(), "token_type", json!("DPoP"))),
            TokenErrorKind::TokenType
        );
        for cnf in [
            json!({"x5t#S256": "abc"}),
            json!({"jkt": "abc", "x5t#S256": "abc"}),
            json!({"jkt": 7}),
            json!({"jkt": ""}),
            json!("abc"),
        ] {
            assert_eq!(
                refused(with(active(), "cnf", cnf.clone())),
                TokenErrorKind::TokenType,
                "{cnf}"
            );
        }
        for token_type in ["DPoP", "Bearer", "dpop"] {
            let bound = with(
                with(active(), "cnf", json!({"jkt": "abc"})),
                "token_type",
                json!(token_type),
            );
            let Verdict::Active { claims, .. } = verdict(&bound) else {
                panic!("{token_type}: a DPoP-bound token is active");
            };
            let identity = identity(&claims, &introspecting(), NOW).expect("identity");
            assert_eq!(identity.jkt.as_deref(), Some("abc"));
        }
        assert_eq!(
            refused(with(active(), "sub", json!(7))),
            TokenErrorKind::Malformed
        );
    }

    #[test]
    fn a_cached_answer_is_checked_again_when_used() {
        let Verdict::Active { claims, .. } = verdict(&with(active(), "exp", json!(NOW + 10)))
        else {
            panic!("active expected");
        };
        assert!(identity(&claims, &introspecting(), NOW).is_ok());
        assert_eq!(
            identity(&claims, &introspecting(), NOW + 100),
            Err(TokenErrorKind::Expired)
        );
    }
}
