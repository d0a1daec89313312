//! The DPoP proof of one request, checked as RFC 9449 §4.3 lists: one
//! `DPoP` header holding one JWT; `typ` `dpop+jwt`; an accepted asymmetric
//! `alg`; a public `jwk` (no private members) that the signature verifies
//! with; `htm` the request's method; `htu` the request's URI (see [`htu`]);
//! `iat` within the window; `ath` the hash of the access token; the key's
//! thumbprint the token's `cnf.jkt`; the server's nonce when nonces are on.
//! `jti` replay is the exchange's last step ([`super::replay`]).
//!
//! The proof is read strictly: JSON with a repeated key anywhere is
//! refused (two parsers could read two different proofs), and a header that
//! points at any key but its `jwk` (`kid`, `jku`, `x5u`, `x5c`) or makes an
//! extension critical is refused. Cheap checks come first; the signature,
//! the only costly one, last.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::htu;
use super::nonce::NonceCheck;
use super::thumbprint;
use super::DpopPolicy;
use crate::keys::jwks::{Algorithm as JwsAlgorithm, KeySet, LookupError};

/// Largest proof read. An RSA-4096 proof is about 1.5 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// Longest `jti` taken.
pub const MAX_JTI_BYTES: usize = 256;

/// Why a proof was refused; each has a counter and a fixed description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofErrorKind {
    /// No `DPoP` header.
    Missing,
    /// Not exactly one well-formed proof JWT with the claims it needs (two
    /// headers, bad encoding, duplicate keys, wrong `typ`, a claim of the
    /// wrong type, `crit`).
    Malformed,
    /// `alg` is not an accepted asymmetric algorithm, or does not fit the
    /// key.
    Algorithm,
    /// The `jwk` is not a usable public key, or the header names another key.
    Key,
    Signature,
    /// `htm` is not the request's method.
    Method,
    /// `htu` is not the request's URI.
    Uri,
    /// `iat` is outside the window.
    Time,
    /// `ath` is not the hash of the access token.
    TokenHash,
    /// The proof's key is not the one the token is bound to (answered as
    /// `invalid_token`).
    KeyBinding,
    /// No nonce, or one that is not ours or expired (answered as
    /// `use_dpop_nonce`, with a new nonce).
    Nonce,
    /// The proof was used before.
    Replay,
}

impl ProofErrorKind {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            ProofErrorKind::Missing => "missing",
            ProofErrorKind::Malformed => "malformed",
            ProofErrorKind::Algorithm => "algorithm",
            ProofErrorKind::Key => "key",
            ProofErrorKind::Signature => "signature",
            ProofErrorKind::Method => "method",
            ProofErrorKind::Uri => "uri",
            ProofErrorKind::Time => "time",
            ProofErrorKind::TokenHash => "token_hash",
            ProofErrorKind::KeyBinding => "key_binding",
            ProofErrorKind::Nonce => "nonce",
            ProofErrorKind::Replay => "replay",
        }
    }

    /// A short `error_description`: the class only, never proof content.
    pub fn description(self) -> &'static str {
        match self {
            ProofErrorKind::Missing => "DPoP proof missing",
            ProofErrorKind::Malformed => "DPoP proof malformed",
            ProofErrorKind::Algorithm => "DPoP proof algorithm not accepted",
            ProofErrorKind::Key => "DPoP proof key not usable",
            ProofErrorKind::Signature => "DPoP proof signature invalid",
            ProofErrorKind::Method => "DPoP proof htm does not match the request",
            ProofErrorKind::Uri => "DPoP proof htu does not match the request",
            ProofErrorKind::Time => "DPoP proof iat outside the accepted window",
            ProofErrorKind::TokenHash => "DPoP proof ath does not match the access token",
            ProofErrorKind::KeyBinding => "DPoP proof key is not the key the token is bound to",
            ProofErrorKind::Nonce => "DPoP proof needs a fresh server nonce",
            ProofErrorKind::Replay => "DPoP proof already used",
        }
    }
}

/// A proof error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofError {
    pub kind: ProofErrorKind,
    /// For [`ProofErrorKind::Nonce`]: the nonce to send with the challenge.
    pub nonce: Option<String>,
}

impl From<ProofErrorKind> for ProofError {
    fn from(kind: ProofErrorKind) -> Self {
        ProofError { kind, nonce: None }
    }
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method as sent.
    pub method: &'a str,
    /// The request's path, without query.
    pub path: &'a str,
    /// `scheme://authority` of the configured resource.
    pub resource_origin: &'a str,
    /// The access token the proof goes with.
    pub token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
    pub now_s: u64,
}

/// A proof that passed every check but replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The key's thumbprint (the token's `cnf.jkt`).
    pub jkt: String,
    pub jti: String,
    /// Until when (seconds) the same proof would pass the other checks: its
    /// `jti` is remembered until then.
    pub remember_until: u64,
    /// A new nonce to hand the client with the answer, when the one it used
    /// is past half its life.
    pub next_nonce: Option<String>,
}

/// The parts of a proof JWT, decoded but not yet trusted.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `header.payload` exactly as sent: what the signature covers.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

/// Reads one proof JWT (compact JWS) strictly: three unpadded base64url
/// parts, header and payload JSON objects without repeated keys.
pub fn parse(proof: &str) -> Result<Parsed<'_>, ProofErrorKind> {
    let malformed = ProofErrorKind::Malformed;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(malformed);
    }
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let object = |part: &str| -> Result<Map<String, Value>, ProofErrorKind> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| malformed)?;
        match crate::json::parse_strict(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(malformed),
        }
    };
    let header = object(header_b64)?;
    let claims = object(payload_b64)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| malformed)?;
    Ok(Parsed {
        header,
        claims,
        signing_input: &proof[..header_b64.len() + 1 + payload_b64.len()],
        signature,
    })
}

/// Header members that point at a key other than the proof's `jwk`.
const OTHER_KEY_MEMBERS: &[&str] = &["kid", "jku", "x5u", "x5c"];

/// Checks the proof of a request (`values`: every `DPoP` header value it
/// carried) against the request and the token's `cnf.jkt`.
pub fn check(
    values: &[&str],
    request: &Request,
    policy: &DpopPolicy,
) -> Result<Accepted, ProofError> {
    let proof = match values {
        [] => return Err(ProofErrorKind::Missing.into()),
        [one] => one.trim_matches([' ', '\t']),
        _ => return Err(ProofErrorKind::Malformed.into()),
    };
    let parsed = parse(proof)?;
    let key = ProofKey::read(&parsed.header, policy)?;
    let claims = ProofClaims::read(&parsed.claims)?;
    claims.check_against(request, &key.jkt, policy.iat_window_seconds)?;
    let (remember_until, next_nonce) = check_nonce(&claims, request.now_s, policy)?;
    // The signature last: the one costly check.
    key.verify(&parsed)?;
    Ok(Accepted {
        jkt: key.jkt,
        jti: claims.jti.to_string(),
        remember_until: remember_until.saturating_add(1),
        next_nonce,
    })
}

/// The key a proof names in its header, with the algorithm it signs with.
struct ProofKey<'p> {
    alg: JwsAlgorithm,
    jwk: &'p Map<String, Value>,
    /// Its thumbprint.
    jkt: String,
}

impl<'p> ProofKey<'p> {
    /// From the header: `typ` `dpop+jwt` and no `crit`, an accepted `alg`,
    /// a `jwk`, and nothing pointing at another key.
    fn read(
        header: &'p Map<String, Value>,
        policy: &DpopPolicy,
    ) -> Result<ProofKey<'p>, ProofErrorKind> {
        use ProofErrorKind::*;
        let typ = header.get("typ").and_then(Value::as_str).ok_or(Malformed)?;
        if crate::token::fold_token_type(typ) != "dpop+jwt" || header.contains_key("crit") {
            return Err(Malformed);
        }
        let alg = header.get("alg").and_then(Value::as_str).ok_or(Malformed)?;
        let alg = JwsAlgorithm::parse(alg).map_err(|_| Algorithm)?;
        if !policy.algorithms.contains(&alg) {
            return Err(Algorithm);
        }
        let jwk = match header.get("jwk") {
            Some(Value::Object(jwk)) => jwk,
            _ => return Err(Malformed),
        };
        if OTHER_KEY_MEMBERS.iter().any(|m| header.contains_key(*m)) {
            return Err(Key);
        }
        let jkt = thumbprint::of(jwk).map_err(|_| Key)?;
        Ok(ProofKey { alg, jwk, jkt })
    }

    /// Whether the proof's signature verifies with this key.
    fn verify(&self, parsed: &Parsed) -> Result<(), ProofErrorKind> {
        let (keys, _) =
            KeySet::from_value(&json!({ "keys": [self.jwk] })).map_err(|_| ProofErrorKind::Key)?;
        let key = keys.find(None, self.alg).map_err(|e| match e {
            LookupError::UnknownKey => ProofErrorKind::Key,
            LookupError::Algorithm => ProofErrorKind::Algorithm,
        })?;
        key.verify(parsed.signing_input.as_bytes(), &parsed.signature)
            .map_err(|_| ProofErrorKind::Signature)
    }
}

/// A proof's claims, each of the type RFC 9449 §4.2 gives it.
struct ProofClaims<'p> {
    jti: &'p str,
    htm: &'p str,
    htu: &'p str,
    ath: &'p str,
    iat: u64,
    nonce: Option<&'p str>,
}

impl<'p> ProofClaims<'p> {
    fn read(claims: &'p Map<String, Value>) -> Result<ProofClaims<'p>, ProofErrorKind> {
        use ProofErrorKind::Malformed;
        let text = |name: &str| -> Result<&'p str, ProofErrorKind> {
            match claims.get(name) {
                Some(Value::String(s)) => Ok(s),
                _ => Err(Malformed),
            }
        };
        let jti = text("jti")?;
        if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
            return Err(Malformed);
        }
        let (htm, htu, ath) = (text("htm")?, text("htu")?, text("ath")?);
        let iat = match claims.get("iat") {
            // A NumericDate: a non-negative number; a string is no date.
            Some(value) => crate::token::numeric_date(value).ok_or(Malformed)?,
            None => return Err(Malformed),
        };
        let nonce = match claims.get("nonce") {
            None => None,
            Some(Value::String(n)) => Some(n.as_str()),
            Some(_) => return Err(Malformed),
        };
        Ok(ProofClaims {
            jti,
            htm,
            htu,
            ath,
            iat,
            nonce,
        })
    }

    /// The claims against the request: its method and URI, the time, the
    /// access token, and the key the token is bound to (`jkt`: the proof
    /// key's thumbprint).
    fn check_against(
        &self,
        request: &Request,
        jkt: &str,
        window_s: u64,
    ) -> Result<(), ProofErrorKind> {
        use ProofErrorKind::*;
        if self.htm != request.method {
            return Err(Method);
        }
        if !htu::matches(self.htu, request.resource_origin, request.path) {
            return Err(Uri);
        }
        if self.iat.abs_diff(request.now_s) > window_s {
            return Err(Time);
        }
        if self.ath != token_hash(request.token) {
            return Err(TokenHash);
        }
        if jkt != request.jkt {
            return Err(KeyBinding);
        }
        Ok(())
    }
}

/// The server nonce, when nonces are on: a fresh one of ours, or the
/// refusal carries a new one. Returns until when the proof's `jti` is
/// remembered (while `iat` is in the window, and no longer than the nonce
/// lives) and, when the nonce is past half its life, the next one.
fn check_nonce(
    claims: &ProofClaims,
    now_s: u64,
    policy: &DpopPolicy,
) -> Result<(u64, Option<String>), ProofError> {
    let mut remember_until = claims.iat.saturating_add(policy.iat_window_seconds);
    let mut next_nonce = None;
    if let Some(keys) = &policy.nonce {
        let fresh = || keys.issue(now_s);
        match claims.nonce.map(|n| keys.check(n, now_s)) {
            Some(NonceCheck::Fresh { issued_at }) => {
                remember_until =
                    remember_until.min(issued_at.saturating_add(keys.lifetime_seconds));
                if keys.due_for_renewal(issued_at, now_s) {
                    next_nonce = Some(fresh());
                }
            }
            None | Some(NonceCheck::Stale) => {
                return Err(ProofError {
                    kind: ProofErrorKind::Nonce,
                    nonce: Some(fresh()),
                })
            }
        }
    }
    Ok((remember_until, next_nonce))
}

/// `ath`: the base64url SHA-256 of the access token's ASCII text.
pub fn token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
pub(crate) mod tests;
