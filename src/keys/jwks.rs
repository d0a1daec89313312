//! JSON Web Key Sets (RFC 7517) turned into prepared verification keys.
//!
//! Keys are parsed once, when a JWKS is configured or fetched, into a key
//! ready to verify ([`crate::signature`]: an RSA key's Montgomery parameters,
//! a decoded curve point). A token's `alg` then selects the key and pairs it
//! with that one algorithm ([`VerifyingKey`]), and only a key of the fitting
//! type can be paired: an RSA key can never be used as an HMAC secret and an
//! EC key never verifies an RSA signature.

use std::fmt;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use serde_json::{Map, Value};

use crate::signature::{BadSignature, Ed25519Key, Hash, P256Key, P384Key, RsaKey, RsaScheme};

/// A signature algorithm the filter can verify. HMAC and `none` are
/// deliberately absent: a resource server must never share a secret with the
/// issuer, and an unsigned token proves nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm, in the order they are listed to users.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// Parses a JWA `alg` name (case-sensitive, as RFC 7518 defines them).
    /// `none` and the HMAC algorithms are refused with a message saying they
    /// are never accepted; unknown names with the list of supported ones.
    pub fn parse(name: &str) -> Result<Algorithm, String> {
        if let Some(alg) = Algorithm::ALL.into_iter().find(|a| a.name() == name) {
            return Ok(alg);
        }
        if name.eq_ignore_ascii_case("none") {
            return Err(format!(
                "algorithm {name:?} is never accepted: tokens must be signed"
            ));
        }
        if matches!(
            name.to_ascii_uppercase().as_str(),
            "HS256" | "HS384" | "HS512"
        ) {
            return Err(format!(
                "HMAC algorithm {name:?} is never accepted: a resource server must not share a secret with the issuer"
            ));
        }
        let supported: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
        Err(format!(
            "unsupported algorithm {name:?}; supported: {}",
            supported.join(", ")
        ))
    }

    /// The JWA name, as it appears in a token header's `alg`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The kind of key this algorithm needs.
    fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyType::Rsa,
            Algorithm::ES256 => KeyType::P256,
            Algorithm::ES384 => KeyType::P384,
            Algorithm::EdDSA => KeyType::Ed25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The shape of a public key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
}

/// A JWKS that is not a JWKS at all (as opposed to single keys that cannot be
/// used, which are skipped with a warning).
#[derive(Debug, Clone, PartialEq)]
pub struct JwksError(pub String);

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksError {}

/// Why no key fits a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// No key has the token's `kid`, or the token names none and the set does
    /// not hold exactly one key. A refetch of the JWKS may help.
    UnknownKey,
    /// A key was found but it cannot verify the token's `alg` (wrong key type,
    /// or the key declares another `alg`).
    Algorithm,
}

/// A prepared public key of a JWKS.
#[derive(Debug, Clone)]
enum PublicKey {
    Rsa(RsaKey),
    P256(P256Key),
    P384(P384Key),
    Ed25519(Ed25519Key),
}

impl PublicKey {
    fn key_type(&self) -> KeyType {
        match self {
            PublicKey::Rsa(_) => KeyType::Rsa,
            PublicKey::P256(_) => KeyType::P256,
            PublicKey::P384(_) => KeyType::P384,
            PublicKey::Ed25519(_) => KeyType::Ed25519,
        }
    }
}

/// A key paired with the one algorithm it verifies a token with. Only
/// [`KeySet::find`] pairs them, and only when the key's type fits the
/// algorithm.
#[derive(Debug, Clone, Copy)]
pub struct VerifyingKey<'a> {
    key: &'a PublicKey,
    alg: Algorithm,
}

impl VerifyingKey<'_> {
    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` (the decoded third part of a compact JWS) over
    /// `message` (the JWS signing input, `header.payload` as sent).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        use Algorithm::*;
        match (self.key, self.alg) {
            (PublicKey::Rsa(key), alg) => {
                let scheme = match alg {
                    RS256 => RsaScheme::Pkcs1v15(Hash::Sha256),
                    RS384 => RsaScheme::Pkcs1v15(Hash::Sha384),
                    RS512 => RsaScheme::Pkcs1v15(Hash::Sha512),
                    PS256 => RsaScheme::Pss(Hash::Sha256),
                    PS384 => RsaScheme::Pss(Hash::Sha384),
                    PS512 => RsaScheme::Pss(Hash::Sha512),
                    ES256 | ES384 | EdDSA => return Err(BadSignature),
                };
                key.verify(scheme, message, signature)
            }
            (PublicKey::P256(key), ES256) => key.verify(message, signature),
            (PublicKey::P384(key), ES384) => key.verify(message, signature),
            (PublicKey::Ed25519(key), EdDSA) => key.verify(message, signature),
            // `find` never pairs these.
            (PublicKey::P256(_) | PublicKey::P384(_) | PublicKey::Ed25519(_), _) => {
                Err(BadSignature)
            }
        }
    }
}

/// One usable public key of a JWKS.
#[derive(Debug, Clone)]
struct Key {
    kid: Option<String>,
    /// The `alg` the JWK declares; such a key verifies only that algorithm.
    alg: Option<Algorithm>,
    /// Prepared once, at parse time, whatever algorithms it serves.
    key: PublicKey,
}

/// The usable signature keys of one provider.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses JWKS JSON text. See [`KeySet::from_value`].
    pub fn parse(json: &str) -> Result<(KeySet, Vec<String>), JwksError> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| JwksError(format!("JWKS is not valid JSON: {e}")))?;
        KeySet::from_value(&value)
    }

    /// Builds a key set from a parsed JWKS document. Keys that cannot be used
    /// (symmetric, encryption-only, unsupported type or curve, bad encoding)
    /// are skipped and described in the returned warnings; a document that is
    /// not a JWKS is an error. An empty usable set is not an error here: the
    /// caller decides whether it can live with one.
    pub fn from_value(value: &Value) -> Result<(KeySet, Vec<String>), JwksError> {
        let object = value.as_object().ok_or_else(|| {
            JwksError("JWKS must be a JSON object with a \"keys\" array".to_string())
        })?;
        let entries = match object.get("keys") {
            None => return Err(JwksError("JWKS has no \"keys\" member".to_string())),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err(JwksError("JWKS \"keys\" must be an array".to_string())),
        };
        let mut keys = Vec::new();
        let mut warnings = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            match parse_key(entry) {
                Ok(key) => keys.push(key),
                Err(why) => warnings.push(format!(
                    "JWKS key #{index}{}: skipped: {why}",
                    describe_kid(entry)
                )),
            }
        }
        Ok((KeySet { keys }, warnings))
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is usable.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that verifies a token whose header names `kid` (if any) and
    /// `alg`. With a `kid`, only keys carrying that `kid` are candidates;
    /// without one, only the set's single key (if it has exactly one), since
    /// trying every key would let a token pick its own verifier.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<VerifyingKey<'_>, LookupError> {
        let candidates: Vec<&Key> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None if self.keys.len() == 1 => self.keys.iter().collect(),
            None => Vec::new(),
        };
        if candidates.is_empty() {
            return Err(LookupError::UnknownKey);
        }
        // A kid shared by several keys (seen during rotations) selects the
        // first one that fits the algorithm.
        candidates
            .into_iter()
            .find(|k| k.key.key_type() == alg.key_type() && k.alg.is_none_or(|a| a == alg))
            .map(|k| VerifyingKey { key: &k.key, alg })
            .ok_or(LookupError::Algorithm)
    }
}

/// ` (kid "...")` for warnings, when the entry has a string kid.
fn describe_kid(entry: &Value) -> String {
    match entry.get("kid").and_then(Value::as_str) {
        Some(kid) => format!(" (kid {kid:?})"),
        None => String::new(),
    }
}

/// Base64url as JWKs carry it: RFC 7517 says unpadded, but some producers pad.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses one JWK; `Err` says why it is skipped (never key material).
fn parse_key(entry: &Value) -> Result<Key, String> {
    let jwk = entry.as_object().ok_or("not a JSON object")?;
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err("\"kid\" is not a string".to_string()),
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(Value::String(u)) => return Err(format!("\"use\" is {u:?}, not \"sig\"")),
        Some(_) => return Err("\"use\" is not a string".to_string()),
    }
    // RFC 7517 4.3: a key restricted to other operations must not verify.
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op.as_str() == Some("verify")) => {}
        Some(_) => return Err("\"key_ops\" does not allow \"verify\"".to_string()),
    }
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(alg)) => Some(Algorithm::parse(alg)?),
        Some(_) => return Err("\"alg\" is not a string".to_string()),
    };
    let kty = jwk
        .get("kty")
        .and_then(Value::as_str)
        .ok_or("no string \"kty\"")?;
    let key = match kty {
        "RSA" => PublicKey::Rsa(rsa_key(jwk)?),
        "EC" => ec_key(jwk)?,
        "OKP" => okp_key(jwk)?,
        "oct" => return Err("symmetric key (kty \"oct\") is never used".to_string()),
        other => return Err(format!("unsupported kty {other:?}")),
    };
    if let Some(alg) = alg {
        if alg.key_type() != key.key_type() {
            return Err(format!("\"alg\" {alg} does not fit the key type"));
        }
    }
    Ok(Key { kid, alg, key })
}

/// Decodes a base64url member that must be present.
fn member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no string {name:?}"))?;
    B64URL
        .decode(text)
        .map_err(|_| format!("{name:?} is not base64url"))
}

/// Moduli outside 2048..=4096 bits and exponents other than 65537 are
/// refused; the message names the problem, not the key.
fn rsa_key(jwk: &Map<String, Value>) -> Result<RsaKey, String> {
    RsaKey::from_components(&member(jwk, "n")?, &member(jwk, "e")?)
}

/// A coordinate of `size` bytes; shorter values (leading zeros dropped by
/// some producers) are left-padded, longer ones refused.
fn coordinate(jwk: &Map<String, Value>, name: &str, size: usize) -> Result<Vec<u8>, String> {
    let raw = member(jwk, name)?;
    if raw.len() > size {
        return Err(format!("{name:?} is longer than the curve allows"));
    }
    let mut padded = vec![0u8; size - raw.len()];
    padded.extend_from_slice(&raw);
    Ok(padded)
}

fn ec_key(jwk: &Map<String, Value>) -> Result<PublicKey, String> {
    let crv = jwk
        .get("crv")
        .and_then(Value::as_str)
        .ok_or("EC key without a string \"crv\"")?;
    let size = match crv {
        "P-256" => 32,
        "P-384" => 48,
        other => return Err(format!("unsupported EC curve {other:?}")),
    };
    // Uncompressed SEC1 point: 0x04 || x || y.
    let mut point = vec![0x04];
    point.extend(coordinate(jwk, "x", size)?);
    point.extend(coordinate(jwk, "y", size)?);
    Ok(if size == 32 {
        PublicKey::P256(P256Key::from_sec1(&point)?)
    } else {
        PublicKey::P384(P384Key::from_sec1(&point)?)
    })
}

fn okp_key(jwk: &Map<String, Value>) -> Result<PublicKey, String> {
    match jwk.get("crv").and_then(Value::as_str) {
        Some("Ed25519") => {}
        Some(other) => return Err(format!("unsupported OKP curve {other:?}")),
        None => return Err("OKP key without a string \"crv\"".to_string()),
    }
    Ok(PublicKey::Ed25519(Ed25519Key::from_bytes(&member(
        jwk, "x",
    )?)?))
}

/// Key pairs and JWK builders shared by the token, JWKS and cache tests.
#[cfg(test)]
pub(crate) mod test_keys {
    use std::sync::OnceLock;

    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use jwt_simple::prelude::*;
    use serde_json::{json, Value};

    use super::KeySet;

    /// One key pair per type, generated once per test binary (RSA is slow).
    pub(crate) struct TestKeys {
        pub rsa: RS256KeyPair,
        /// The same RSA key, for PS256 signing.
        pub ps: PS256KeyPair,
        /// A second RSA key, "another issuer's".
        pub rsa_other: RS256KeyPair,
        pub es256: ES256KeyPair,
        pub es384: ES384KeyPair,
        pub ed: Ed25519KeyPair,
    }

    pub(crate) fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa = RS256KeyPair::generate(2048).expect("rsa key");
            let ps = PS256KeyPair::from_der(&rsa.to_der().expect("der")).expect("ps key");
            TestKeys {
                rsa,
                ps,
                rsa_other: RS256KeyPair::generate(2048).expect("rsa key"),
                es256: ES256KeyPair::generate(),
                es384: ES384KeyPair::generate(),
                ed: Ed25519KeyPair::generate(),
            }
        })
    }

    pub(crate) fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// An RSA JWK without `alg` or `use` (as many IdPs publish them).
    pub(crate) fn rsa_jwk(pair: &RS256KeyPair, kid: &str) -> Value {
        let c = pair.public_key().to_components();
        json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)})
    }

    pub(crate) fn es256_jwk(kid: &str) -> Value {
        let point = keys()
            .es256
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])})
    }

    pub(crate) fn es384_jwk(kid: &str) -> Value {
        let point = keys()
            .es384
            .public_key()
            .public_key()
            .to_bytes_uncompressed();
        json!({"kty": "EC", "crv": "P-384", "kid": kid, "x": b64(&point[1..49]), "y": b64(&point[49..])})
    }

    pub(crate) fn ed_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&keys().ed.public_key().to_bytes())})
    }

    /// A key set from JWKs that must all be usable.
    pub(crate) fn key_set(jwks: Vec<Value>) -> KeySet {
        let count = jwks.len();
        let (set, warnings) = KeySet::from_value(&json!({ "keys": jwks })).expect("jwks");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(set.len(), count);
        set
    }
}

#[cfg(test)]
mod tests {
    use jwt_simple::prelude::{ECDSAP256PublicKeyLike, ES256KeyPair};
    use serde_json::json;

    use super::test_keys::*;
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::parse(alg.name()), Ok(alg));
        }
    }

    #[test]
    fn none_and_hmac_algorithms_are_never_accepted() {
        for name in ["none", "HS256", "HS384", "HS512"] {
            let err = Algorithm::parse(name).unwrap_err();
            assert!(err.contains("never accepted"), "{err}");
        }
    }

    #[test]
    fn unknown_algorithm_lists_supported_ones() {
        let err = Algorithm::parse("ES512").unwrap_err();
        assert!(err.contains("RS256") && err.contains("EdDSA"), "{err}");
        assert!(
            Algorithm::parse("rs256").is_err(),
            "names are case-sensitive"
        );
    }

    #[test]
    fn rsa_ec_and_okp_keys_are_parsed() {
        let set = key_set(vec![
            rsa_jwk(&keys().rsa, "rsa1"),
            es256_jwk("ec1"),
            es384_jwk("ec2"),
            ed_jwk("ed1"),
        ]);
        assert_eq!(
            set.find(Some("rsa1"), Algorithm::RS256)
                .unwrap()
                .algorithm(),
            Algorithm::RS256
        );
        assert_eq!(
            set.find(Some("ec1"), Algorithm::ES256).unwrap().algorithm(),
            Algorithm::ES256
        );
        assert_eq!(
            set.find(Some("ec2"), Algorithm::ES384).unwrap().algorithm(),
            Algorithm::ES384
        );
        assert_eq!(
            set.find(Some("ed1"), Algorithm::EdDSA).unwrap().algorithm(),
            Algorithm::EdDSA
        );
    }

    #[test]
    fn jwks_exported_by_jwt_simple_is_usable() {
        let k = keys();
        let jwks = format!(
            r#"{{"keys":[{},{},{},{}]}}"#,
            k.rsa.public_key().with_key_id("a").to_jwk(),
            k.es256.public_key().with_key_id("b").to_jwk(),
            k.es384.public_key().with_key_id("c").to_jwk(),
            k.ed.public_key().with_key_id("d").to_jwk(),
        );
        let (set, warnings) = KeySet::parse(&jwks).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn unusable_keys_are_skipped_with_warnings() {
        let mut enc = rsa_jwk(&keys().rsa, "enc");
        enc["use"] = json!("enc");
        let mut wrap_only = rsa_jwk(&keys().rsa, "wrap");
        wrap_only["key_ops"] = json!(["wrapKey"]);
        let mut mismatched = es256_jwk("mismatch");
        mismatched["alg"] = json!("RS256");
        let mut bad_point = es256_jwk("bad-point");
        bad_point["y"] = bad_point["x"].clone();
        let jwks = json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            enc,
            wrap_only,
            mismatched,
            bad_point,
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
            {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AA"},
            {"kty": "RSA", "kid": "weak", "n": b64(&[0xff; 128]), "e": "AQAB"},
            {"kty": "RSA", "kid": "bad-b64", "n": "***", "e": "AQAB"},
            {"kty": "RSA", "kid": "hs", "alg": "HS256", "n": "AA", "e": "AQAB"},
            {"kty": "XYZ"},
            "not an object",
            rsa_jwk(&keys().rsa, "good"),
        ]});
        let (set, warnings) = KeySet::from_value(&jwks).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(warnings.len(), 12, "{warnings:#?}");
        assert!(warnings[0].contains("\"hmac\"") && warnings[0].contains("oct"));
        assert!(warnings[1].contains("\"enc\""));
        assert!(warnings[5].contains("secp256k1"));
        // Warnings never carry key material.
        let n = rsa_jwk(&keys().rsa, "x")["n"].as_str().unwrap().to_string();
        assert!(warnings.iter().all(|w| !w.contains(&n[..20])));
    }

    #[test]
    fn a_jwks_that_is_not_a_jwks_is_an_error() {
        assert!(KeySet::parse("{not json")
            .unwrap_err()
            .0
            .contains("not valid JSON"));
        assert!(KeySet::parse("[]").unwrap_err().0.contains("\"keys\""));
        assert!(KeySet::parse("{}").unwrap_err().0.contains("no \"keys\""));
        assert!(KeySet::parse(r#"{"keys": {}}"#)
            .unwrap_err()
            .0
            .contains("array"));
    }

    #[test]
    fn an_empty_key_set_is_not_an_error() {
        let (set, warnings) = KeySet::parse(r#"{"keys": []}"#).unwrap();
        assert!(set.is_empty() && warnings.is_empty());
    }

    #[test]
    fn rsa_key_without_alg_serves_every_rsa_algorithm_and_no_other() {
        let set = key_set(vec![rsa_jwk(&keys().rsa, "rsa1")]);
        for alg in &Algorithm::ALL[..6] {
            assert_eq!(set.find(Some("rsa1"), *alg).unwrap().algorithm(), *alg);
        }
        for alg in [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA] {
            assert_eq!(
                set.find(Some("rsa1"), alg).unwrap_err(),
                LookupError::Algorithm
            );
        }
    }

    #[test]
    fn a_key_declaring_alg_serves_only_that_alg() {
        let mut jwk = rsa_jwk(&keys().rsa, "rsa1");
        jwk["alg"] = json!("PS256");
        jwk["use"] = json!("sig");
        let set = key_set(vec![jwk]);
        assert!(set.find(Some("rsa1"), Algorithm::PS256).is_ok());
        assert_eq!(
            set.find(Some("rsa1"), Algorithm::RS256).unwrap_err(),
            LookupError::Algorithm
        );
    }

    #[test]
    fn lookup_by_kid_and_without_kid() {
        let set = key_set(vec![rsa_jwk(&keys().rsa, "rsa1"), es256_jwk("ec1")]);
        assert_eq!(
            set.find(Some("nope"), Algorithm::RS256).unwrap_err(),
            LookupError::UnknownKey
        );
        assert_eq!(
            set.find(None, Algorithm::RS256).unwrap_err(),
            LookupError::UnknownKey
        );
        let single = key_set(vec![es256_jwk("ec1")]);
        assert!(single.find(None, Algorithm::ES256).is_ok());
        assert_eq!(
            single.find(None, Algorithm::RS256).unwrap_err(),
            LookupError::Algorithm
        );
    }

    #[test]
    fn a_kid_shared_by_two_keys_selects_the_one_fitting_the_alg() {
        let set = key_set(vec![rsa_jwk(&keys().rsa, "k"), es256_jwk("k")]);
        assert_eq!(
            set.find(Some("k"), Algorithm::ES256).unwrap().algorithm(),
            Algorithm::ES256
        );
        assert_eq!(
            set.find(Some("k"), Algorithm::RS384).unwrap().algorithm(),
            Algorithm::RS384
        );
    }

    #[test]
    fn short_ec_coordinates_are_left_padded_and_padding_is_tolerated() {
        // Find a P-256 key whose x starts with a zero byte, then drop it.
        let point = std::iter::repeat_with(ES256KeyPair::generate)
            .map(|p| p.public_key().public_key().to_bytes_uncompressed())
            .find(|point| point[1] == 0)
            .unwrap();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(&point[2..33]), "y": format!("{}=", b64(&point[33..]))});
        assert_eq!(key_set(vec![jwk]).len(), 1);
    }
}
