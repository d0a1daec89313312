//! The filter authenticating itself to the authorization server as a
//! confidential client: a secret (RFC 6749 section 2.3.1) or a JWT signed
//! with its key (`private_key_jwt`, RFC 7523 and OpenID Connect Core 9).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use serde_json::json;

use super::form_component;
use crate::config::{Client, ClientAuth, ClientKey};

pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid.
pub const ASSERTION_SECONDS: u64 = 60;

/// What one call's client authentication needs: its audience (the
/// authorization server's issuer identifier, the value RFC 7523bis settles
/// on), the time, and a `jti` no other call uses.
pub struct Assertion<'a> {
    pub audience: &'a str,
    pub now_s: u64,
    pub jti: &'a str,
}

/// Adds what `client`'s authentication puts in the form to `params`, and
/// returns the `Authorization` header value it needs, if any.
pub fn apply<'a>(
    client: &'a Client,
    params: &mut Vec<(&'a str, String)>,
    assertion: &Assertion,
) -> Option<String> {
    match &client.auth {
        ClientAuth::PrivateKeyJwt(key) => {
            params.push(("client_id", client.id.clone()));
            params.push(("client_assertion_type", ASSERTION_TYPE.to_string()));
            params.push(("client_assertion", sign(key, &client.id, assertion)));
            None
        }
        ClientAuth::SecretBasic(secret) => {
            // The id and secret are form-encoded before they are joined
            // (RFC 6749 2.3.1), so a `:` in either cannot split them wrongly.
            let pair = format!(
                "{}:{}",
                form_component(&client.id),
                form_component(secret.expose())
            );
            Some(format!("Basic {}", STANDARD.encode(pair)))
        }
        ClientAuth::SecretPost(secret) => {
            params.push(("client_id", client.id.clone()));
            params.push(("client_secret", secret.expose().to_string()));
            None
        }
    }
}

/// The client assertion: an ES256 JWT whose issuer and subject are the
/// client (deterministic ECDSA, RFC 6979: no randomness needed).
fn sign(key: &ClientKey, client_id: &str, assertion: &Assertion) -> String {
    let mut header = json!({"alg": "ES256", "typ": "JWT"});
    if let Some(kid) = &key.kid {
        header["kid"] = json!(kid);
    }
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": assertion.audience,
        "jti": assertion.jti, "iat": assertion.now_s,
        "exp": assertion.now_s + ASSERTION_SECONDS,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    // The key was checked when the configuration was read.
    let signature = match p256::ecdsa::SigningKey::from_slice(&key.d) {
        Ok(signing) => {
            let signature: p256::ecdsa::Signature = signing.sign(input.as_bytes());
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        }
        Err(_) => String::new(),
    };
    format!("{input}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const ASSERTION: Assertion = Assertion {
        audience: "https://idp.example.com/realms/mcp",
        now_s: 1_750_000_000,
        jti: "j1",
    };

    #[test]
    fn a_private_key_jwt_is_an_es256_assertion_by_the_client_for_the_issuer() {
        use p256::ecdsa::signature::Verifier;
        let d = [7u8; 32];
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::PrivateKeyJwt(ClientKey {
                d: d.to_vec(),
                kid: Some("gw-1".into()),
            }),
        };
        let mut params = Vec::new();
        assert_eq!(apply(&client, &mut params, &ASSERTION), None);
        let form: std::collections::HashMap<&str, &str> =
            params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(form["client_id"], "gw");
        assert_eq!(form["client_assertion_type"], ASSERTION_TYPE);
        let jwt = form["client_assertion"];
        let (input, signature) = jwt.rsplit_once('.').expect("three parts");
        let decode = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("b64")).expect("json")
        };
        let (header, claims) = input.split_once('.').expect("parts");
        assert_eq!(
            decode(header),
            json!({"alg": "ES256", "typ": "JWT", "kid": "gw-1"})
        );
        assert_eq!(
            decode(claims),
            json!({"iss": "gw", "sub": "gw", "aud": ASSERTION.audience, "jti": "j1",
                   "iat": ASSERTION.now_s, "exp": ASSERTION.now_s + ASSERTION_SECONDS})
        );
        let signing = p256::ecdsa::SigningKey::from_slice(&d).expect("key");
        let signature =
            p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).expect("b64"))
                .expect("r||s");
        assert!(signing
            .verifying_key()
            .verify(input.as_bytes(), &signature)
            .is_ok());
    }

    #[test]
    fn basic_authentication_form_encodes_id_and_secret_first() {
        let client = Client {
            id: "mcp gw".into(),
            auth: ClientAuth::SecretBasic(Secret::new("a:b%")),
        };
        let mut params = vec![("token", "t".to_string())];
        let header = apply(&client, &mut params, &ASSERTION).expect("a header");
        assert_eq!(
            params,
            vec![("token", "t".to_string())],
            "nothing in the form"
        );
        let decoded = STANDARD
            .decode(header.strip_prefix("Basic ").expect("Basic"))
            .expect("base64");
        assert_eq!(decoded, b"mcp+gw:a%3Ab%25");
    }

    #[test]
    fn post_authentication_puts_id_and_secret_in_the_form() {
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::SecretPost(Secret::new("s")),
        };
        let mut params = vec![("token", "t".to_string())];
        assert_eq!(apply(&client, &mut params, &ASSERTION), None);
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            params,
            vec![("token", "t"), ("client_id", "gw"), ("client_secret", "s")]
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let client = Client {
            id: "gw".into(),
            auth: ClientAuth::SecretBasic(Secret::new("hunter2")),
        };
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
