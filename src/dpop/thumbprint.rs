//! RFC 7638 JWK thumbprints: the SHA-256 of the key's required members, in
//! lexicographic order, as JSON without whitespace, base64url-encoded. That
//! is what a DPoP-bound token's `cnf.jkt` holds (RFC 9449 §6.1).
//!
//! The members must be in their one canonical form (unpadded base64url,
//! EC coordinates and Ed25519 keys at their full length, an RSA modulus
//! without a leading zero): RFC 7518 asks for it, and a key spelled two ways
//! would have two thumbprints.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Members a public JWK must not carry: private key parts (RFC 7518 §6.2.2,
/// §6.3.2, RFC 8037 §2) and a symmetric key.
pub const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The thumbprint of a public JWK, or why the JWK is unusable (a message
/// that never holds key material).
pub fn of(jwk: &Map<String, Value>) -> Result<String, &'static str> {
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err("the proof's jwk holds a private or symmetric key");
    }
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    let canonical = |name: &str, len: Option<usize>| -> Result<&str, &'static str> {
        let value = text(name).ok_or("the proof's jwk lacks a required member")?;
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| "the proof's jwk holds a member that is not unpadded base64url")?;
        match len {
            Some(len) if bytes.len() != len => {
                Err("the proof's jwk has a member of the wrong size")
            }
            None if bytes.first() == Some(&0) || bytes.is_empty() => {
                Err("the proof's jwk has an integer with a leading zero")
            }
            _ => Ok(value),
        }
    };
    // Members in lexicographic order, values already checked to need no
    // JSON escaping (base64url, or the names matched below).
    let members: Vec<(&str, &str)> = match text("kty") {
        Some("EC") => {
            let (crv, size) = match text("crv") {
                Some("P-256") => ("P-256", 32),
                Some("P-384") => ("P-384", 48),
                _ => return Err("the proof's jwk uses an unsupported curve"),
            };
            vec![
                ("crv", crv),
                ("kty", "EC"),
                ("x", canonical("x", Some(size))?),
                ("y", canonical("y", Some(size))?),
            ]
        }
        Some("OKP") => {
            if text("crv") != Some("Ed25519") {
                return Err("the proof's jwk uses an unsupported curve");
            }
            vec![
                ("crv", "Ed25519"),
                ("kty", "OKP"),
                ("x", canonical("x", Some(32))?),
            ]
        }
        Some("RSA") => vec![
            ("e", canonical("e", None)?),
            ("kty", "RSA"),
            ("n", canonical("n", None)?),
        ],
        _ => return Err("the proof's jwk has an unsupported key type"),
    };
    let body: Vec<String> = members
        .iter()
        .map(|(name, value)| format!("\"{name}\":\"{value}\""))
        .collect();
    let json = format!("{{{}}}", body.join(","));
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rfc_7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = obj(json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        }));
        assert_eq!(
            of(&jwk),
            Ok("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".to_string())
        );
    }

    #[test]
    fn rfc_9449_example_key_thumbprint() {
        // RFC 9449 §4.1's proof key and the `jkt` of its §6.1 example.
        let jwk = obj(json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        }));
        assert_eq!(
            of(&jwk),
            Ok("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".to_string())
        );
    }

    #[test]
    fn private_keys_and_non_canonical_members_are_refused() {
        let ec = json!({"kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
        let with = |name: &str, value: Value| {
            let mut jwk = obj(ec.clone());
            jwk.insert(name.to_string(), value);
            jwk
        };
        for name in PRIVATE_MEMBERS {
            assert!(of(&with(name, json!("AAAA"))).is_err(), "{name}");
        }
        // Padded, short (leading zeros dropped) or long coordinates.
        assert!(of(&with(
            "x",
            json!("l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs=")
        ))
        .is_err());
        assert!(of(&with(
            "x",
            json!("8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs")
        ))
        .is_err());
        assert!(of(&with("crv", json!("P-521"))).is_err());
        assert!(of(&with("kty", json!("oct"))).is_err());
        let rsa = |n: &str| obj(json!({"kty": "RSA", "e": "AQAB", "n": n}));
        assert!(of(&rsa("AAEC")).is_err());
        assert!(of(&rsa("")).is_err());
        assert!(of(&rsa("AQID")).is_ok());
    }
}
