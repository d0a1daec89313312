//! Bearer token extraction (RFC 6750) and JWT access token verification
//! (RFC 9068 profile, as far as a resource server needs it) into an
//! [`Identity`].
//!
//! Order matters: nothing read from the token is trusted before the signature
//! verified, so the only answers given before that are the ones that need no
//! trust (malformed, unknown issuer, algorithm, key, keys unavailable). Time
//! and audience answers come only after the signature checked out.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::config::Provider;
use crate::dpop::Scheme;
use crate::identity::{claim_at, Identity};
use crate::keys::jwks::{Algorithm, KeySet, LookupError, VerifyingKey};

/// Largest token accepted. Real access tokens are a few KiB at most; the
/// limit bounds the work an anonymous caller can cause before any check.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why no access token could be taken from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No `Authorization` header: answer with a plain challenge.
    Missing,
    /// An `Authorization` header that is not exactly one well-formed
    /// `Bearer <token>` or `DPoP <token>`: answer with `invalid_token`.
    Malformed,
}

/// Takes the access token, and the scheme it came with (`Bearer`, RFC 6750,
/// or `DPoP`, RFC 9449 §7.1; either in any case), from every
/// `Authorization` header value the request carried. More than one header
/// is refused rather than guessed at.
pub fn credentials<'a>(authorization: &[&'a str]) -> Result<(Scheme, &'a str), BearerError> {
    let (scheme, token) = presented(authorization)?;
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok((scheme, token))
}

/// [`credentials`] without the check of the token's alphabet, for the
/// request path: a token found in the verified-token cache passed that
/// check when it was verified, so only a token the cache lacks needs it
/// ([`is_b64token`]) — which spares every cached request a pass over its
/// bytes.
pub fn presented<'a>(authorization: &[&'a str]) -> Result<(Scheme, &'a str), BearerError> {
    let value = match authorization {
        [] => return Err(BearerError::Missing),
        [value] => *value,
        _ => return Err(BearerError::Malformed),
    };
    // credentials = auth-scheme 1*SP token68 (RFC 7235, RFC 6750 2.1,
    // RFC 9449 7.1); the scheme is case-insensitive.
    let value = value.trim_matches([' ', '\t']);
    let (scheme, token) = value.split_once(' ').ok_or(BearerError::Malformed)?;
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::DPoP
    } else {
        return Err(BearerError::Malformed);
    };
    Ok((scheme, token.trim_start_matches(' ')))
}

/// b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
pub fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // Every request's token passes here, a byte at a time: one table
    // look-up per byte.
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

/// The bytes of a b64token (before its `=` padding).
static B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// The class of a token failure; each maps to a fixed `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    Malformed,
    UnknownKey,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    /// The JWT's `typ` names another kind of token (or none, where one is
    /// required).
    TokenType,
    KeysUnavailable,
    /// The authorization server says the token is not active (revoked,
    /// expired, or never issued): introspection's answer.
    Inactive,
    /// A token bound to a key (`cnf.jkt`) sent as a bearer token: the
    /// downgrade RFC 9449 §7.2 forbids.
    DpopBound,
    /// Sent with the `DPoP` scheme but not bound to the proof's key (or to
    /// no key at all).
    KeyBinding,
    /// Sent with a scheme its provider does not take (`DPoP` where `dpop`
    /// is off, `Bearer` where it is required).
    Scheme,
}

impl TokenErrorKind {
    /// A short `error_description` naming the class only: never token text,
    /// claim values or key material.
    pub fn description(self) -> &'static str {
        match self {
            TokenErrorKind::Malformed => "token malformed",
            TokenErrorKind::UnknownKey => "unknown signing key",
            TokenErrorKind::Algorithm => "algorithm not accepted",
            TokenErrorKind::Signature => "signature invalid",
            TokenErrorKind::Expired => "token expired",
            TokenErrorKind::NotYetValid => "token not yet valid",
            TokenErrorKind::Issuer => "token issuer not accepted",
            TokenErrorKind::Audience => "token audience not accepted",
            TokenErrorKind::TokenType => "token type not accepted",
            TokenErrorKind::KeysUnavailable => "signing keys not available",
            TokenErrorKind::Inactive => "token not active",
            TokenErrorKind::DpopBound => {
                "token is bound to a key: send it with the DPoP scheme and a proof"
            }
            TokenErrorKind::KeyBinding => "token is not bound to the DPoP proof's key",
            TokenErrorKind::Scheme => "authorization scheme not accepted for this token",
        }
    }

    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            TokenErrorKind::Malformed => "malformed",
            TokenErrorKind::UnknownKey => "unknown_key",
            TokenErrorKind::Algorithm => "algorithm",
            TokenErrorKind::Signature => "signature",
            TokenErrorKind::Expired => "expired",
            TokenErrorKind::NotYetValid => "not_yet_valid",
            TokenErrorKind::Issuer => "issuer",
            TokenErrorKind::Audience => "audience",
            TokenErrorKind::TokenType => "token_type",
            TokenErrorKind::KeysUnavailable => "keys_unavailable",
            TokenErrorKind::Inactive => "inactive",
            TokenErrorKind::DpopBound => "dpop_bound",
            TokenErrorKind::KeyBinding => "key_binding",
            TokenErrorKind::Scheme => "scheme",
        }
    }
}

/// A token that was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenError {
    pub kind: TokenErrorKind,
    /// Index of the provider the token's `iss` selected, when it got that
    /// far: the host refetches that provider's keys on `UnknownKey` and
    /// answers 503 on `KeysUnavailable`.
    pub provider: Option<usize>,
}

impl TokenError {
    /// See [`TokenErrorKind::description`].
    pub fn description(&self) -> &'static str {
        self.kind.description()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for TokenError {}

/// Verifies a JWT access token against the configured providers.
///
/// `keys[i]` are the current keys of `providers[i]` (inline or fetched);
/// `None` means remote keys have never been fetched. `now` is seconds since
/// the Unix epoch.
pub fn verify(
    token: &str,
    providers: &[Provider],
    keys: &[Option<&KeySet>],
    now_s: u64,
) -> Result<Identity, TokenError> {
    let malformed = TokenError {
        kind: TokenErrorKind::Malformed,
        provider: None,
    };
    let jws = Jws::split(token).ok_or(malformed)?;
    let header = Header::read(&jws.header).ok_or(malformed)?;

    // Select the provider by the unverified `iss`; the verified payload is
    // checked against it again below.
    let issuer = jws.payload.get("iss").and_then(Value::as_str);
    let index = providers
        .iter()
        .position(|p| Some(p.issuer.as_str()) == issuer)
        .ok_or(TokenError {
            kind: TokenErrorKind::Issuer,
            provider: None,
        })?;
    let provider = &providers[index];
    let fail = |kind| TokenError {
        kind,
        provider: Some(index),
    };

    let key_set = keys.get(index).copied().flatten();
    let key = header.key(provider, key_set).map_err(fail)?;
    key.verify(jws.signing_input.as_bytes(), &jws.signature)
        .map_err(|_| fail(TokenErrorKind::Signature))?;

    // Signature verified: `payload` is authenticated (it was decoded from the
    // very bytes that were signed).
    let expires_at = check_claims(&jws.payload, provider, now_s).map_err(fail)?;
    Ok(identity(jws.payload, provider, expires_at))
}

/// A compact JWS, split and decoded but not yet trusted.
struct Jws<'t> {
    header: Map<String, Value>,
    payload: Map<String, Value>,
    /// The first two parts exactly as sent: what the signature covers.
    signing_input: &'t str,
    signature: Vec<u8>,
}

impl<'t> Jws<'t> {
    /// Three base64url parts, the first two JSON objects; `None` for
    /// anything else, or a token over [`MAX_TOKEN_BYTES`].
    fn split(token: &'t str) -> Option<Jws<'t>> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        // An empty signature (an unsecured JWS) gets through here so that its
        // `alg: none` is reported as what it is; no algorithm accepts it.
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
        let header = decode_object(header_b64)?;
        let payload = decode_object(payload_b64)?;
        Some(Jws {
            header,
            payload,
            signing_input: &token[..header_b64.len() + 1 + payload_b64.len()],
            signature,
        })
    }
}

/// What a JWT's header says of how to verify it.
struct Header<'h> {
    alg: &'h str,
    kid: Option<&'h str>,
    /// `typ`, folded ([`fold_token_type`]).
    typ: Option<String>,
}

impl<'h> Header<'h> {
    /// `alg` (a string), `kid` and `typ` (strings when present), and no
    /// `crit`; `None` for anything else.
    fn read(header: &'h Map<String, Value>) -> Option<Header<'h>> {
        let alg = header.get("alg").and_then(Value::as_str)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return None,
        };
        let typ = match header.get("typ") {
            None => None,
            Some(Value::String(typ)) => Some(fold_token_type(typ)),
            Some(_) => return None,
        };
        // RFC 7515 4.1.11: no extension is understood here, so a token that
        // makes one critical is refused (and `crit` must never be empty).
        if header.contains_key("crit") {
            return None;
        }
        Some(Header { alg, kid, typ })
    }

    /// The provider's key this token is to verify with: of a type the
    /// provider takes as an access token, with an algorithm it accepts,
    /// from its current keys (`None`: never fetched).
    fn key<'k>(
        &self,
        provider: &Provider,
        keys: Option<&'k KeySet>,
    ) -> Result<VerifyingKey<'k>, TokenErrorKind> {
        // A logout token, a DPoP proof or a security event is signed by the
        // same keys but is no access token (RFC 8725 3.11, RFC 9068 4).
        let type_ok = match &self.typ {
            None => !provider.require_token_type,
            Some(typ) => provider.token_types.contains(typ),
        };
        if !type_ok {
            return Err(TokenErrorKind::TokenType);
        }
        let alg = Algorithm::parse(self.alg).map_err(|_| TokenErrorKind::Algorithm)?;
        if !provider.algorithms.contains(&alg) {
            return Err(TokenErrorKind::Algorithm);
        }
        let keys = keys.ok_or(TokenErrorKind::KeysUnavailable)?;
        keys.find(self.kid, alg).map_err(|e| match e {
            LookupError::UnknownKey => TokenErrorKind::UnknownKey,
            LookupError::Algorithm => TokenErrorKind::Algorithm,
        })
    }
}

/// What a bearer token looks like, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Three dot-separated parts whose first is a base64url JSON object:
    /// a JWT, and the `iss` its (unverified) payload names.
    Jwt { issuer: Option<String> },
    /// Anything else: a reference to be introspected.
    Opaque,
}

/// Tells a JWT from an opaque token, without trusting either.
pub fn shape(token: &str) -> Shape {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Shape::Opaque;
    };
    if header.len() > MAX_TOKEN_BYTES || decode_object(header).is_none() {
        return Shape::Opaque;
    }
    let issuer = decode_object(payload).and_then(|claims| {
        claims
            .get("iss")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    Shape::Jwt { issuer }
}

/// A `typ` value as compared: lower-case, without the `application/` prefix
/// that RFC 7515 4.1.9 makes optional (`application/at+jwt` is `at+jwt`).
pub fn fold_token_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

/// A base64url JSON object, or `None`.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate (RFC 7519 2): a non-negative JSON number; fractions are
/// truncated, which only ever makes `exp` earlier.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                // Saturating float-to-int conversion.
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// Checks the verified claims; returns `exp`.
fn check_claims(
    payload: &Map<String, Value>,
    provider: &Provider,
    now_s: u64,
) -> Result<u64, TokenErrorKind> {
    // Registered claims of another type than RFC 7519 gives them make the
    // token malformed, not merely unusable for one purpose.
    let string_or_null = |name| {
        payload
            .get(name)
            .is_none_or(|v| v.is_string() || v.is_null())
    };
    let audience_shape = match payload.get("aud") {
        None | Some(Value::Null | Value::String(_)) => true,
        Some(Value::Array(list)) => list.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !["iss", "sub", "jti"].into_iter().all(string_or_null) || !audience_shape {
        return Err(TokenErrorKind::Malformed);
    }
    // RFC 7800 `cnf` is an object; its DPoP member `jkt` a thumbprint.
    match payload.get("cnf") {
        None => {}
        Some(Value::Object(cnf)) if cnf.get("jkt").is_none_or(Value::is_string) => {}
        Some(_) => return Err(TokenErrorKind::Malformed),
    }
    let skew = provider.clock_skew_seconds;
    let exp = payload
        .get("exp")
        .ok_or(TokenErrorKind::Malformed)
        .and_then(|v| numeric_date(v).ok_or(TokenErrorKind::Malformed))?;
    if exp.saturating_add(skew) <= now_s {
        return Err(TokenErrorKind::Expired);
    }
    for name in ["nbf", "iat"] {
        if let Some(value) = payload.get(name) {
            let at = numeric_date(value).ok_or(TokenErrorKind::Malformed)?;
            if at > now_s.saturating_add(skew) {
                return Err(TokenErrorKind::NotYetValid);
            }
        }
    }
    if payload.get("iss").and_then(Value::as_str) != Some(provider.issuer.as_str()) {
        return Err(TokenErrorKind::Issuer);
    }
    let accepted = |aud: &Value| {
        aud.as_str()
            .is_some_and(|aud| provider.audiences.iter().any(|a| a == aud))
    };
    let audience_ok = match payload.get("aud") {
        Some(aud @ Value::String(_)) => accepted(aud),
        Some(Value::Array(list)) => list.iter().any(accepted),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenErrorKind::Audience);
    }
    Ok(exp)
}

/// Builds the identity from verified claims.
pub(crate) fn identity(
    claims: Map<String, Value>,
    provider: &Provider,
    expires_at: u64,
) -> Identity {
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
    let mut roles = Vec::new();
    for path in &provider.roles_claims {
        if let Some(value) = claim_at(&claims, path) {
            collect_words(value, &mut roles);
        }
    }
    let mut scopes = Vec::new();
    if let Some(value) = claims.get(&provider.scopes_claim) {
        collect_words(value, &mut scopes);
    }
    Identity {
        issuer: provider.issuer.clone(),
        subject: text("sub"),
        client_id: text("client_id").or_else(|| text("azp")),
        roles,
        scopes,
        implied_scopes: Vec::new(),
        expires_at,
        jkt: claim_at(&claims, &["cnf".to_string(), "jkt".to_string()])
            .and_then(Value::as_str)
            .map(str::to_string),
        claims,
    }
}

/// Adds the words of a space-separated string, or the strings of an array,
/// skipping duplicates and keeping order. Other shapes add nothing.
fn collect_words(value: &Value, into: &mut Vec<String>) {
    let mut add = |word: &str| {
        if !word.is_empty() && !into.iter().any(|w| w == word) {
            into.push(word.to_string());
        }
    };
    match value {
        Value::String(s) => s.split_whitespace().for_each(&mut add),
        Value::Array(items) => items.iter().filter_map(Value::as_str).for_each(&mut add),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use jwt_simple::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::config::JwksSource;
    use crate::keys::jwks::test_keys::*;

    pub(crate) const ISS: &str = "https://idp.example.com/realms/mcp";
    const OTHER_ISS: &str = "https://other.example.com";
    pub(crate) const AUD: &str = "https://mcp.example.com/mcp";
    pub(crate) const NOW: u64 = 1_750_000_000;

    #[derive(Clone, Copy)]
    pub(crate) enum Signer {
        RS256,
        PS256,
        ES256,
        ES384,
        EdDSA,
        OtherRsa,
    }

    pub(crate) fn provider(issuer: &str) -> Provider {
        Provider {
            issuer: issuer.to_string(),
            audiences: vec![AUD.to_string()],
            jwks: Some(JwksSource::Inline(KeySet::default())),
            introspection: None,
            algorithms: Algorithm::ALL.to_vec(),
            clock_skew_seconds: 60,
            roles_claims: vec![vec!["roles".to_string()]],
            scopes_claim: "scope".to_string(),
            token_types: vec!["at+jwt".into(), "jwt".into()],
            require_token_type: false,
            dpop: crate::dpop::DpopPolicy::default(),
            skipped_keys: Vec::new(),
        }
    }

    /// Provider 0 (`ISS`) has keys rsa1, ec1, ec384, ed1; provider 1
    /// (`OTHER_ISS`) has rsa2.
    pub(crate) fn key_sets() -> Vec<KeySet> {
        vec![
            key_set(vec![
                rsa_jwk(&keys().rsa, "rsa1"),
                es256_jwk("ec1"),
                es384_jwk("ec384"),
                ed_jwk("ed1"),
            ]),
            key_set(vec![rsa_jwk(&keys().rsa_other, "rsa2")]),
        ]
    }

    fn check_with(token: &str, providers: &[Provider], now: u64) -> Result<Identity, TokenError> {
        let sets = key_sets();
        verify(token, providers, &[Some(&sets[0]), Some(&sets[1])], now)
    }

    pub(crate) fn check(token: &str) -> Result<Identity, TokenError> {
        check_with(token, &[provider(ISS), provider(OTHER_ISS)], NOW)
    }

    fn kind(token: &str) -> TokenErrorKind {
        check(token).unwrap_err().kind
    }

    pub(crate) fn claims() -> Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "user-1", "client_id": "cli",
            "exp": NOW + 300, "iat": NOW - 10, "scope": "mcp:read mcp:write",
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    /// JWT claims holding exactly `payload` (no claims added by jwt-simple).
    fn exact(payload: Value) -> JWTClaims<Map<String, Value>> {
        let custom = payload.as_object().unwrap().clone();
        let mut claims = Claims::with_custom_claims(custom, Duration::from_secs(1));
        claims.issued_at = None;
        claims.expires_at = None;
        claims.invalid_before = None;
        claims
    }

    pub(crate) fn sign(signer: Signer, kid: Option<&str>, payload: Value) -> String {
        sign_with(signer, kid, payload, &HeaderOptions::default())
    }

    fn sign_with(
        signer: Signer,
        kid: Option<&str>,
        payload: Value,
        opts: &HeaderOptions,
    ) -> String {
        fn id<T>(pair: T, kid: Option<&str>, set: fn(T, &str) -> T) -> T {
            match kid {
                Some(kid) => set(pair, kid),
                None => pair,
            }
        }
        let k = keys();
        let c = exact(payload);
        // ECDSA key pairs are not Clone: copy them through their bytes.
        let es256 = || ES256KeyPair::from_bytes(&k.es256.to_bytes()).unwrap();
        let es384 = || ES384KeyPair::from_bytes(&k.es384.to_bytes()).unwrap();
        match signer {
            Signer::RS256 => {
                id(k.rsa.clone(), kid, RS256KeyPair::with_key_id).sign_with_options(c, opts)
            }
            Signer::PS256 => {
                id(k.ps.clone(), kid, PS256KeyPair::with_key_id).sign_with_options(c, opts)
            }
            Signer::ES256 => id(es256(), kid, ES256KeyPair::with_key_id).sign_with_options(c, opts),
            Signer::ES384 => id(es384(), kid, ES384KeyPair::with_key_id).sign_with_options(c, opts),
            Signer::EdDSA => {
                id(k.ed.clone(), kid, Ed25519KeyPair::with_key_id).sign_with_options(c, opts)
            }
            Signer::OtherRsa => {
                id(k.rsa_other.clone(), kid, RS256KeyPair::with_key_id).sign_with_options(c, opts)
            }
        }
        .unwrap()
    }

    fn rs256(payload: Value) -> String {
        sign(Signer::RS256, Some("rsa1"), payload)
    }

    /// A token with an arbitrary header, signed with the Ed25519 key `ed1`.
    fn ed25519_signed(header: Value, payload: Value) -> String {
        use ed25519_dalek::Signer as _;
        let seed: [u8; 32] = keys().ed.to_bytes()[..32].try_into().unwrap();
        let input = raw(header, payload, "");
        let input = input.trim_end_matches('.');
        let signature = ed25519_dalek::SigningKey::from_bytes(&seed).sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_bytes()))
    }

    /// A token with an arbitrary header and an arbitrary signature.
    fn raw(header: Value, payload: Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        )
    }

    // --- bearer extraction ---

    #[test]
    fn bearer_token_is_taken_from_the_one_authorization_header() {
        let bearer = |t| Ok((Scheme::Bearer, t));
        assert_eq!(credentials(&["Bearer abc.def.ghi"]), bearer("abc.def.ghi"));
        assert_eq!(credentials(&["bearer abc-_~+/="]), bearer("abc-_~+/="));
        assert_eq!(credentials(&["BEARER  abc"]), bearer("abc"));
    }

    #[test]
    fn a_token_holds_the_b64token_alphabet_and_nothing_else() {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/";
        for byte in 0u8..=255 {
            let Ok(text) = std::str::from_utf8(std::slice::from_ref(&byte)) else {
                continue;
            };
            let value = format!("Bearer a{text}b");
            let expected = if alphabet.contains(text) {
                Ok((
                    Scheme::Bearer,
                    value.strip_prefix("Bearer ").unwrap_or_default(),
                ))
            } else {
                Err(BearerError::Malformed)
            };
            assert_eq!(credentials(&[&value]), expected, "byte {byte}");
        }
    }

    #[test]
    fn dpop_scheme_is_recognised_in_any_case() {
        for value in ["DPoP a.b.c", "dpop a.b.c", "DPOP  a.b.c"] {
            assert_eq!(
                credentials(&[value]),
                Ok((Scheme::DPoP, "a.b.c")),
                "{value}"
            );
        }
        for value in ["DPoP", "DPoP-x a.b.c", "DPoPa.b.c", "DPoP a b"] {
            assert_eq!(
                credentials(&[value]),
                Err(BearerError::Malformed),
                "{value}"
            );
        }
    }

    #[test]
    fn no_authorization_header_is_missing() {
        assert_eq!(credentials(&[]), Err(BearerError::Missing));
    }

    #[test]
    fn two_authorization_headers_are_malformed() {
        assert_eq!(
            credentials(&["Bearer a", "DPoP a"]),
            Err(BearerError::Malformed)
        );
    }

    #[test]
    fn other_schemes_and_empty_or_odd_tokens_are_malformed() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "",
            "Bearer a b",
            "Bearer a\tb",
            "Bearer ===",
            "Bearer a=b",
            "Bearer tök",
            "Bearerabc",
        ] {
            assert_eq!(
                credentials(&[value]),
                Err(BearerError::Malformed),
                "{value:?}"
            );
        }
    }

    // --- accepted tokens, every algorithm family ---

    #[test]
    fn valid_rs256_token_yields_identity() {
        let id = check(&rs256(claims())).unwrap();
        assert_eq!(id.issuer, ISS);
        assert_eq!(id.subject.as_deref(), Some("user-1"));
        assert_eq!(id.client_id.as_deref(), Some("cli"));
        assert_eq!(id.scopes, ["mcp:read", "mcp:write"]);
        assert_eq!(id.expires_at, NOW + 300);
        assert_eq!(id.claims.get("sub"), Some(&json!("user-1")));
    }

    #[test]
    fn every_algorithm_family_verifies() {
        for (signer, kid) in [
            (Signer::PS256, "rsa1"),
            (Signer::ES256, "ec1"),
            (Signer::ES384, "ec384"),
            (Signer::EdDSA, "ed1"),
        ] {
            let token = sign(signer, Some(kid), claims());
            assert!(check(&token).is_ok(), "{kid}");
        }
    }

    #[test]
    fn access_token_typ_values_are_accepted() {
        for typ in ["at+jwt", "application/at+jwt", "JWT", "jwt"] {
            let opts = HeaderOptions {
                signature_type: Some(typ.to_string()),
                ..Default::default()
            };
            let token = sign_with(Signer::RS256, Some("rsa1"), claims(), &opts);
            assert!(check(&token).is_ok(), "{typ}");
        }
    }

    #[test]
    fn other_token_types_are_refused() {
        for typ in [
            "JWE",
            "dpop+jwt",
            "logout+jwt",
            "secevent+jwt",
            "application/secevent+jwt",
            "",
            "jwt+",
        ] {
            let token = raw(
                json!({"alg": "RS256", "kid": "rsa1", "typ": typ}),
                claims(),
                "AAAA",
            );
            assert_eq!(kind(&token), TokenErrorKind::TokenType, "{typ}");
        }
        // Even with a valid signature: the issuer's keys sign other tokens too.
        let logout = sign_with_typ("logout+jwt");
        assert_eq!(kind(&logout), TokenErrorKind::TokenType);
        let token = raw(
            json!({"alg": "RS256", "kid": "rsa1", "typ": 7}),
            claims(),
            "AAAA",
        );
        assert_eq!(kind(&token), TokenErrorKind::Malformed);
    }

    #[test]
    fn token_types_and_untyped_tokens_follow_the_provider() {
        let mut strict = provider(ISS);
        strict.token_types = vec!["at+jwt".into()];
        strict.require_token_type = true;
        let providers = [strict];
        // No `typ` (and a made-up signature): the strict provider stops at
        // the type, the default one goes on to the signature.
        let untyped = raw(json!({"alg": "RS256", "kid": "rsa1"}), claims(), "AAAA");
        assert_eq!(
            check_with(&untyped, &providers, NOW).map_err(|e| e.kind),
            Err(TokenErrorKind::TokenType)
        );
        assert_eq!(kind(&untyped), TokenErrorKind::Signature);
        assert_eq!(
            check_with(&sign_with_typ("JWT"), &providers, NOW).map_err(|e| e.kind),
            Err(TokenErrorKind::TokenType)
        );
        assert!(check_with(&sign_with_typ("application/AT+JWT"), &providers, NOW).is_ok());
    }

    fn sign_with_typ(typ: &str) -> String {
        let opts = HeaderOptions {
            signature_type: Some(typ.to_string()),
            ..Default::default()
        };
        sign_with(Signer::RS256, Some("rsa1"), claims(), &opts)
    }

    #[test]
    fn a_critical_header_extension_is_malformed() {
        // Validly signed, but it makes an extension critical that nothing
        // here understands (RFC 7515 4.1.11).
        for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("b64")] {
            let header = json!({"alg": "EdDSA", "kid": "ed1", "crit": crit});
            assert_eq!(
                kind(&ed25519_signed(header, claims())),
                TokenErrorKind::Malformed,
                "{crit}"
            );
        }
        // The same header without `crit` passes.
        let header = json!({"alg": "EdDSA", "kid": "ed1"});
        assert!(check(&ed25519_signed(header, claims())).is_ok());
    }

    #[test]
    fn registered_claims_of_the_wrong_type_are_malformed_after_the_signature() {
        for (name, value) in [
            ("sub", json!(1)),
            ("jti", json!({"a": 1})),
            ("aud", json!(7)),
            ("aud", json!([7, AUD])),
        ] {
            let token = rs256(with(claims(), name, value.clone()));
            assert_eq!(kind(&token), TokenErrorKind::Malformed, "{name}: {value}");
            // Forged, the same token is a signature failure first.
            let forged = sign(Signer::OtherRsa, Some("rsa1"), with(claims(), name, value));
            assert_eq!(kind(&forged), TokenErrorKind::Signature);
        }
        // Null is as good as absent for the optional ones.
        assert!(check(&rs256(with(claims(), "jti", json!(null)))).is_ok());
    }

    // --- time ---

    #[test]
    fn expired_token_is_rejected() {
        let err = check(&rs256(with(claims(), "exp", json!(NOW - 61)))).unwrap_err();
        assert_eq!(
            err,
            TokenError {
                kind: TokenErrorKind::Expired,
                provider: Some(0)
            }
        );
        assert_eq!(err.description(), "token expired");
    }

    #[test]
    fn skew_is_honoured_for_exp_both_ways() {
        assert!(check(&rs256(with(claims(), "exp", json!(NOW - 59)))).is_ok());
        assert_eq!(
            kind(&rs256(with(claims(), "exp", json!(NOW - 60)))),
            TokenErrorKind::Expired
        );
        let mut strict = provider(ISS);
        strict.clock_skew_seconds = 0;
        let at_exp = rs256(with(claims(), "exp", json!(NOW)));
        assert_eq!(
            check_with(&at_exp, &[strict.clone()], NOW)
                .unwrap_err()
                .kind,
            TokenErrorKind::Expired
        );
        assert!(check_with(&at_exp, &[strict], NOW - 1).is_ok());
    }

    #[test]
    fn skew_is_the_providers_never_a_fifteen_minute_default() {
        let token = rs256(with(claims(), "exp", json!(NOW - 600)));
        assert_eq!(kind(&token), TokenErrorKind::Expired);
        let token = rs256(with(claims(), "nbf", json!(NOW + 600)));
        assert_eq!(kind(&token), TokenErrorKind::NotYetValid);
    }

    #[test]
    fn token_not_yet_valid_is_rejected_with_skew_honoured() {
        assert_eq!(
            kind(&rs256(with(claims(), "nbf", json!(NOW + 61)))),
            TokenErrorKind::NotYetValid
        );
        assert!(check(&rs256(with(claims(), "nbf", json!(NOW + 59)))).is_ok());
    }

    #[test]
    fn token_issued_in_the_future_is_rejected_with_skew_honoured() {
        assert_eq!(
            kind(&rs256(with(claims(), "iat", json!(NOW + 120)))),
            TokenErrorKind::NotYetValid
        );
        assert!(check(&rs256(with(claims(), "iat", json!(NOW + 30)))).is_ok());
    }

    #[test]
    fn token_without_exp_is_malformed() {
        assert_eq!(
            kind(&rs256(without(claims(), "exp"))),
            TokenErrorKind::Malformed
        );
    }

    #[test]
    fn exp_as_string_is_malformed() {
        let token = rs256(with(claims(), "exp", json!((NOW + 300).to_string())));
        assert_eq!(kind(&token), TokenErrorKind::Malformed);
        let token = rs256(with(claims(), "nbf", json!("0")));
        assert_eq!(kind(&token), TokenErrorKind::Malformed);
    }

    #[test]
    fn fractional_exp_is_accepted_and_truncated() {
        let id = check(&rs256(with(claims(), "exp", json!(NOW as f64 + 300.7)))).unwrap();
        assert_eq!(id.expires_at, NOW + 300);
    }

    // --- issuer and audience ---

    #[test]
    fn wrong_issuer_is_rejected_without_a_provider() {
        let err = check(&rs256(with(
            claims(),
            "iss",
            json!("https://evil.example.com"),
        )))
        .unwrap_err();
        assert_eq!(
            err,
            TokenError {
                kind: TokenErrorKind::Issuer,
                provider: None
            }
        );
        assert_eq!(
            kind(&rs256(without(claims(), "iss"))),
            TokenErrorKind::Issuer
        );
        assert_eq!(
            kind(&rs256(with(claims(), "iss", json!(ISS.to_uppercase())))),
            TokenErrorKind::Issuer
        );
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let err = check(&rs256(with(
            claims(),
            "aud",
            json!("https://other.example.com/mcp"),
        )))
        .unwrap_err();
        assert_eq!(
            err,
            TokenError {
                kind: TokenErrorKind::Audience,
                provider: Some(0)
            }
        );
        assert_eq!(
            kind(&rs256(without(claims(), "aud"))),
            TokenErrorKind::Audience
        );
        assert_eq!(
            kind(&rs256(with(claims(), "aud", json!([])))),
            TokenErrorKind::Audience
        );
    }

    #[test]
    fn audience_list_containing_the_resource_is_accepted() {
        let token = rs256(with(claims(), "aud", json!(["account", AUD, "other"])));
        assert!(check(&token).is_ok());
    }

    #[test]
    fn claim_answers_come_only_after_the_signature() {
        // Expired and with a wrong audience, but signed by someone else.
        let forged = sign(
            Signer::OtherRsa,
            Some("rsa1"),
            with(with(claims(), "exp", json!(1)), "aud", json!("x")),
        );
        assert_eq!(kind(&forged), TokenErrorKind::Signature);
    }

    // --- algorithms ---

    #[test]
    fn alg_none_is_rejected() {
        let token = raw(json!({"alg": "none", "kid": "rsa1"}), claims(), "");
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError {
                kind: TokenErrorKind::Algorithm,
                provider: Some(0)
            }
        );
        let token = raw(json!({"alg": "none"}), claims(), "");
        assert_eq!(kind(&token), TokenErrorKind::Algorithm);
    }

    #[test]
    fn hs256_signed_with_the_rsa_public_key_is_rejected() {
        let pem = keys().rsa.public_key().to_pem().unwrap();
        for secret in [pem.into_bytes(), keys().rsa.public_key().to_der().unwrap()] {
            let token = HS256Key::from_bytes(&secret)
                .with_key_id("rsa1")
                .authenticate(exact(claims()))
                .unwrap();
            assert_eq!(kind(&token), TokenErrorKind::Algorithm);
        }
    }

    #[test]
    fn alg_not_configured_for_the_provider_is_rejected() {
        let mut rsa_only = provider(ISS);
        rsa_only.algorithms = vec![Algorithm::RS256];
        let token = sign(Signer::ES256, Some("ec1"), claims());
        assert_eq!(
            check_with(&token, &[rsa_only.clone()], NOW)
                .unwrap_err()
                .kind,
            TokenErrorKind::Algorithm
        );
        let token = sign(Signer::PS256, Some("rsa1"), claims());
        assert_eq!(
            check_with(&token, &[rsa_only], NOW).unwrap_err().kind,
            TokenErrorKind::Algorithm
        );
    }

    #[test]
    fn alg_that_does_not_fit_the_key_type_is_rejected() {
        // An RS256 token pointing at the EC key.
        let token = sign(Signer::RS256, Some("ec1"), claims());
        assert_eq!(kind(&token), TokenErrorKind::Algorithm);
        let token = raw(json!({"alg": "ES512", "kid": "ec1"}), claims(), "AAAA");
        assert_eq!(kind(&token), TokenErrorKind::Algorithm);
    }

    // --- keys ---

    #[test]
    fn unknown_kid_is_rejected_as_unknown_key() {
        let err = check(&sign(Signer::RS256, Some("rotated"), claims())).unwrap_err();
        assert_eq!(
            err,
            TokenError {
                kind: TokenErrorKind::UnknownKey,
                provider: Some(0)
            }
        );
        assert_eq!(err.description(), "unknown signing key");
    }

    #[test]
    fn kid_of_another_issuers_key_is_unknown() {
        let token = sign(Signer::OtherRsa, Some("rsa2"), claims());
        assert_eq!(kind(&token), TokenErrorKind::UnknownKey);
        // The same token under its own issuer passes.
        assert!(check(&sign(
            Signer::OtherRsa,
            Some("rsa2"),
            with(claims(), "iss", json!(OTHER_ISS))
        ))
        .is_ok());
    }

    #[test]
    fn token_without_kid_uses_the_only_key() {
        let set = key_set(vec![rsa_jwk(&keys().rsa, "rsa1")]);
        let token = sign(Signer::RS256, None, claims());
        assert!(verify(&token, &[provider(ISS)], &[Some(&set)], NOW).is_ok());
    }

    #[test]
    fn token_without_kid_and_several_keys_is_unknown_key() {
        assert_eq!(
            kind(&sign(Signer::RS256, None, claims())),
            TokenErrorKind::UnknownKey
        );
    }

    #[test]
    fn keys_not_fetched_yet_are_unavailable_for_that_provider() {
        let sets = key_sets();
        let token = sign(
            Signer::OtherRsa,
            Some("rsa2"),
            with(claims(), "iss", json!(OTHER_ISS)),
        );
        let providers = [provider(ISS), provider(OTHER_ISS)];
        let err = verify(&token, &providers, &[Some(&sets[0]), None], NOW).unwrap_err();
        assert_eq!(
            err,
            TokenError {
                kind: TokenErrorKind::KeysUnavailable,
                provider: Some(1)
            }
        );
        let err = verify(&token, &providers, &[Some(&sets[0])], NOW).unwrap_err();
        assert_eq!(err.kind, TokenErrorKind::KeysUnavailable);
    }

    // --- signature and structure ---

    #[test]
    fn tampered_payload_fails_the_signature() {
        let token = rs256(with(claims(), "sub", json!("user-1")));
        let forged_payload = b64(with(claims(), "sub", json!("admin")).to_string().as_bytes());
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(kind(&tampered), TokenErrorKind::Signature);
    }

    #[test]
    fn signature_by_another_key_with_the_same_kid_fails() {
        assert_eq!(
            kind(&sign(Signer::OtherRsa, Some("rsa1"), claims())),
            TokenErrorKind::Signature
        );
        let token = rs256(claims());
        // 256 signature bytes are 342 characters; 340 stay canonical base64url.
        let cut = &token[..token.len() - 2];
        assert_eq!(kind(cut), TokenErrorKind::Signature);
        let empty_signature = format!("{}.", &token[..token.rfind('.').unwrap()]);
        assert_eq!(kind(&empty_signature), TokenErrorKind::Signature);
    }

    #[test]
    fn huge_token_is_malformed() {
        let token = rs256(with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES))));
        assert_eq!(kind(&token), TokenErrorKind::Malformed);
    }

    #[test]
    fn garbage_tokens_are_malformed() {
        let good = rs256(claims());
        let parts: Vec<&str> = good.split('.').collect();
        let header = b64(json!({"alg": "RS256", "kid": "rsa1"})
            .to_string()
            .as_bytes());
        let payload = b64(claims().to_string().as_bytes());
        for token in [
            String::new(),
            "garbage".to_string(),
            "..".to_string(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.extra"),
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}*.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"not json"), payload, parts[2]),
            format!("{}.{}.{}", b64(b"[1,2]"), payload, parts[2]),
            format!("{header}.{}.{}", b64(b"\"just a string\""), parts[2]),
            format!("{header}.{}.{}", b64(&[0xff, 0xfe]), parts[2]),
            raw(json!({"kid": "rsa1"}), claims(), parts[2]),
            raw(json!({"alg": 256, "kid": "rsa1"}), claims(), parts[2]),
            raw(json!({"alg": "RS256", "kid": 7}), claims(), parts[2]),
            raw(
                json!({"alg": "RS256", "kid": "rsa1", "typ": 1}),
                claims(),
                parts[2],
            ),
        ] {
            assert_eq!(kind(&token), TokenErrorKind::Malformed, "{token}");
        }
    }

    #[test]
    fn odd_claim_shapes_never_panic() {
        for (name, value) in [
            ("exp", json!(-5)),
            ("exp", json!(1e300)),
            ("exp", json!(null)),
            ("exp", json!({"a": 1})),
            ("iat", json!(u64::MAX)),
            ("nbf", json!([1])),
            ("aud", json!(7)),
            ("aud", json!([7, AUD])),
            ("sub", json!(1)),
            ("roles", json!({"x": 1})),
            ("scope", json!(3)),
        ] {
            let _ = check(&rs256(with(claims(), name, value)));
        }
    }

    // --- claim shapes ---

    #[test]
    fn keycloak_realm_and_client_roles_are_gathered() {
        let mut kc = provider(ISS);
        kc.roles_claims = vec![
            vec!["realm_access".into(), "roles".into()],
            vec![
                "resource_access".into(),
                "mcp-server".into(),
                "roles".into(),
            ],
        ];
        let payload = with(
            with(
                claims(),
                "realm_access",
                json!({"roles": ["reader", "offline_access"]}),
            ),
            "resource_access",
            json!({"mcp-server": {"roles": ["admin", "reader"]}, "account": {"roles": ["manage"]}}),
        );
        let id = check_with(&rs256(payload), &[kc], NOW).unwrap();
        assert_eq!(id.roles, ["reader", "offline_access", "admin"]);
    }

    #[test]
    fn roles_as_space_separated_string_are_split() {
        let id = check(&rs256(with(
            claims(),
            "roles",
            json!("reader  admin reader"),
        )))
        .unwrap();
        assert_eq!(id.roles, ["reader", "admin"]);
    }

    #[test]
    fn roles_of_other_shapes_are_ignored() {
        let id = check(&rs256(with(claims(), "roles", json!({"reader": true})))).unwrap();
        assert!(id.roles.is_empty());
        let id = check(&rs256(with(claims(), "roles", json!(["a", 1, "b"])))).unwrap();
        assert_eq!(id.roles, ["a", "b"]);
    }

    #[test]
    fn scope_string_and_scp_array_are_both_read() {
        let id = check(&rs256(claims())).unwrap();
        assert_eq!(id.scopes, ["mcp:read", "mcp:write"]);
        let mut azure = provider(ISS);
        azure.scopes_claim = "scp".into();
        let payload = with(
            without(claims(), "scope"),
            "scp",
            json!(["mcp:read", "mcp:admin"]),
        );
        let id = check_with(&rs256(payload), &[azure], NOW).unwrap();
        assert_eq!(id.scopes, ["mcp:read", "mcp:admin"]);
    }

    #[test]
    fn client_id_falls_back_to_azp() {
        let id = check(&rs256(with(claims(), "azp", json!("other")))).unwrap();
        assert_eq!(id.client_id.as_deref(), Some("cli"));
        let id = check(&rs256(with(
            without(claims(), "client_id"),
            "azp",
            json!("web"),
        )))
        .unwrap();
        assert_eq!(id.client_id.as_deref(), Some("web"));
        let id = check(&rs256(without(claims(), "client_id"))).unwrap();
        assert_eq!(id.client_id, None);
    }

    #[test]
    fn descriptions_name_the_class_only() {
        let all = [
            TokenErrorKind::Malformed,
            TokenErrorKind::UnknownKey,
            TokenErrorKind::Algorithm,
            TokenErrorKind::Signature,
            TokenErrorKind::Expired,
            TokenErrorKind::NotYetValid,
            TokenErrorKind::Issuer,
            TokenErrorKind::Audience,
            TokenErrorKind::KeysUnavailable,
        ];
        for kind in all {
            let d = kind.description();
            assert!(
                !d.is_empty()
                    && d.len() < 40
                    && d.bytes().all(|b| b.is_ascii_lowercase() || b == b' ')
            );
        }
    }
}
