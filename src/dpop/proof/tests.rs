//! Every check of a proof, each failing alone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::Signer as _;
use serde_json::{json, Value};

use super::*;
use crate::dpop::nonce::NonceKeys;
use crate::dpop::{DpopPolicy, Mode};
use crate::keys::jwks::Algorithm;

pub(crate) const NOW: u64 = 1_750_000_000;
pub(crate) const ORIGIN: &str = "https://mcp.example.com";
pub(crate) const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

/// A client's proof key.
#[derive(Clone)]
pub(crate) enum ClientKey {
    Es256(p256::ecdsa::SigningKey),
    Ed(ed25519_dalek::SigningKey),
}

impl ClientKey {
    pub(crate) fn es256(seed: u8) -> ClientKey {
        let mut scalar = [0u8; 32];
        scalar[31] = seed.max(1);
        scalar[0] = 0x11;
        ClientKey::Es256(p256::ecdsa::SigningKey::from_slice(&scalar).expect("scalar"))
    }

    pub(crate) fn ed(seed: u8) -> ClientKey {
        ClientKey::Ed(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub(crate) fn alg(&self) -> &'static str {
        match self {
            ClientKey::Es256(_) => "ES256",
            ClientKey::Ed(_) => "EdDSA",
        }
    }

    pub(crate) fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match self {
            ClientKey::Es256(k) => {
                let point = k.verifying_key().to_sec1_point(false);
                let bytes = point.as_bytes();
                json!({"kty": "EC", "crv": "P-256", "x": b64(&bytes[1..33]), "y": b64(&bytes[33..65])})
            }
            ClientKey::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes())})
            }
        }
    }

    pub(crate) fn jkt(&self) -> String {
        thumbprint::of(self.jwk().as_object().expect("object")).expect("thumbprint")
    }

    /// A compact JWS of exactly these header and payload texts.
    pub(crate) fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let signature = match self {
            ClientKey::Es256(k) => {
                let s: p256::ecdsa::Signature = k.sign(input.as_bytes());
                s.to_bytes().to_vec()
            }
            ClientKey::Ed(k) => k.sign(input.as_bytes()).to_bytes().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    pub(crate) fn header(&self) -> Value {
        json!({"typ": "dpop+jwt", "alg": self.alg(), "jwk": self.jwk()})
    }
}

pub(crate) fn claims(jti: &str) -> Value {
    json!({"jti": jti, "htm": "POST", "htu": "https://mcp.example.com/mcp",
           "iat": NOW, "ath": token_hash(TOKEN)})
}

fn policy() -> DpopPolicy {
    DpopPolicy {
        mode: Mode::Required,
        ..DpopPolicy::default()
    }
}

fn request<'a>(jkt: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        path: "/mcp",
        resource_origin: ORIGIN,
        token: TOKEN,
        jkt,
        now_s: NOW,
    }
}

fn outcome(key: &ClientKey, proof: &str) -> Result<Accepted, ProofErrorKind> {
    let jkt = key.jkt();
    check(&[proof], &request(&jkt), &policy()).map_err(|e| e.kind)
}

fn with(mut value: Value, name: &str, v: Value) -> Value {
    value[name] = v;
    value
}

fn without(mut value: Value, name: &str) -> Value {
    value.as_object_mut().expect("object").remove(name);
    value
}

#[test]
fn a_valid_proof_passes_with_either_key_type() {
    for key in [ClientKey::es256(1), ClientKey::ed(2)] {
        let accepted = outcome(&key, &key.sign(&key.header(), &claims("j1"))).expect("valid");
        assert_eq!(accepted.jkt, key.jkt());
        assert_eq!(accepted.jti, "j1");
        assert_eq!(accepted.remember_until, NOW + 300 + 1);
        assert_eq!(accepted.next_nonce, None);
    }
}

#[test]
fn each_claim_checked_alone() {
    let key = ClientKey::es256(3);
    let h = key.header();
    let c = claims("j");
    let cases: Vec<(Value, ProofErrorKind)> = vec![
        (with(c.clone(), "htm", json!("GET")), ProofErrorKind::Method),
        (
            with(c.clone(), "htm", json!("post")),
            ProofErrorKind::Method,
        ),
        (
            with(c.clone(), "htu", json!("https://other.example.com/mcp")),
            ProofErrorKind::Uri,
        ),
        (
            with(c.clone(), "htu", json!("https://mcp.example.com/mcp/")),
            ProofErrorKind::Uri,
        ),
        (
            with(c.clone(), "htu", json!("https://mcp.example.com:8443/mcp")),
            ProofErrorKind::Uri,
        ),
        (
            with(c.clone(), "iat", json!(NOW - 301)),
            ProofErrorKind::Time,
        ),
        (
            with(c.clone(), "iat", json!(NOW + 301)),
            ProofErrorKind::Time,
        ),
        (
            with(c.clone(), "iat", json!(NOW.to_string())),
            ProofErrorKind::Malformed,
        ),
        (with(c.clone(), "iat", json!(-1)), ProofErrorKind::Malformed),
        (
            with(c.clone(), "ath", json!(token_hash("another token"))),
            ProofErrorKind::TokenHash,
        ),
        (with(c.clone(), "jti", json!("")), ProofErrorKind::Malformed),
        (with(c.clone(), "jti", json!(7)), ProofErrorKind::Malformed),
        (
            with(c.clone(), "jti", json!("x".repeat(257))),
            ProofErrorKind::Malformed,
        ),
        (
            with(c.clone(), "nonce", json!(1)),
            ProofErrorKind::Malformed,
        ),
    ];
    for (claims, kind) in cases {
        assert_eq!(outcome(&key, &key.sign(&h, &claims)), Err(kind), "{claims}");
    }
    for name in ["jti", "htm", "htu", "iat", "ath"] {
        assert_eq!(
            outcome(&key, &key.sign(&h, &without(c.clone(), name))),
            Err(ProofErrorKind::Malformed),
            "{name}"
        );
    }
    // Equivalent spellings and a float `iat` pass.
    for claims in [
        with(c.clone(), "htu", json!("HTTPS://MCP.EXAMPLE.COM:443/mcp")),
        with(c.clone(), "iat", json!(NOW as f64 + 0.5)),
        with(c.clone(), "iat", json!(NOW - 300)),
    ] {
        assert!(outcome(&key, &key.sign(&h, &claims)).is_ok(), "{claims}");
    }
}

#[test]
fn each_header_member_checked_alone() {
    let key = ClientKey::es256(4);
    let other = ClientKey::es256(5);
    let h = key.header();
    let c = claims("j");
    let mut private = key.jwk();
    private["d"] = json!("AAAA");
    let cases: Vec<(Value, ProofErrorKind)> = vec![
        (
            with(h.clone(), "typ", json!("JWT")),
            ProofErrorKind::Malformed,
        ),
        (without(h.clone(), "typ"), ProofErrorKind::Malformed),
        (
            with(h.clone(), "alg", json!("none")),
            ProofErrorKind::Algorithm,
        ),
        (
            with(h.clone(), "alg", json!("HS256")),
            ProofErrorKind::Algorithm,
        ),
        (
            with(h.clone(), "alg", json!("RS256")),
            ProofErrorKind::Algorithm,
        ),
        (without(h.clone(), "alg"), ProofErrorKind::Malformed),
        (without(h.clone(), "jwk"), ProofErrorKind::Malformed),
        (
            with(h.clone(), "jwk", json!("key")),
            ProofErrorKind::Malformed,
        ),
        (with(h.clone(), "jwk", private), ProofErrorKind::Key),
        (with(h.clone(), "kid", json!("rsa1")), ProofErrorKind::Key),
        (
            with(h.clone(), "jku", json!("https://evil/jwks")),
            ProofErrorKind::Key,
        ),
        (
            with(h.clone(), "crit", json!(["exp"])),
            ProofErrorKind::Malformed,
        ),
        (
            with(h.clone(), "jwk", json!({"kty": "oct", "k": "c2VjcmV0"})),
            ProofErrorKind::Key,
        ),
        // Another key's jwk: the signature does not verify with it, but the
        // binding fails first.
        (
            with(h.clone(), "jwk", other.jwk()),
            ProofErrorKind::KeyBinding,
        ),
    ];
    for (header, kind) in cases {
        assert_eq!(outcome(&key, &key.sign(&header, &c)), Err(kind), "{header}");
    }
    // `typ` is a media type: its case and an `application/` prefix do not
    // matter.
    assert!(outcome(
        &key,
        &key.sign(&with(h, "typ", json!("application/DPoP+JWT")), &c)
    )
    .is_ok());
}

#[test]
fn the_signature_must_be_the_keys() {
    let key = ClientKey::es256(6);
    let other = ClientKey::es256(7);
    // Signed by another key, naming ours.
    let forged = other.sign(&key.header(), &claims("j"));
    assert_eq!(outcome(&key, &forged), Err(ProofErrorKind::Signature));
    // A proof for another token is bound to the same key but not the token.
    let mut bytes = key.sign(&key.header(), &claims("j")).into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).expect("ascii");
    assert_eq!(outcome(&key, &tampered), Err(ProofErrorKind::Signature));
    let unsigned = format!(
        "{}.",
        key.sign(&with(key.header(), "alg", json!("none")), &claims("j"))
            .rsplit_once('.')
            .expect("dots")
            .0
    );
    assert_eq!(outcome(&key, &unsigned), Err(ProofErrorKind::Algorithm));
}

#[test]
fn the_proof_must_be_one_strict_jwt() {
    let key = ClientKey::es256(8);
    let good = key.sign(&key.header(), &claims("j"));
    let jkt = key.jkt();
    let req = request(&jkt);
    let kind = |values: &[&str]| check(values, &req, &policy()).map_err(|e| e.kind);
    assert_eq!(kind(&[]), Err(ProofErrorKind::Missing));
    assert_eq!(kind(&[&good, &good]), Err(ProofErrorKind::Malformed));
    assert_eq!(
        kind(&[&format!("{good}, {good}")]),
        Err(ProofErrorKind::Malformed)
    );
    assert_eq!(
        kind(&[&format!("{good}.x")]),
        Err(ProofErrorKind::Malformed)
    );
    assert_eq!(kind(&[&format!("{good}=")]), Err(ProofErrorKind::Malformed));
    assert_eq!(
        kind(&[&"a".repeat(MAX_PROOF_BYTES + 1)]),
        Err(ProofErrorKind::Malformed)
    );
    assert!(kind(&[&format!(" {good} ")]).is_ok());
    // Duplicate keys in the header or the claims, in any spelling.
    let h = key.header().to_string();
    let dup_header = format!("{},\"alg\":\"none\"}}", &h[..h.len() - 1]);
    let c = claims("j").to_string();
    let dup_claims = format!("{},\"h\\u0074m\":\"GET\"}}", &c[..c.len() - 1]);
    for proof in [key.sign_raw(&dup_header, &c), key.sign_raw(&h, &dup_claims)] {
        assert_eq!(kind(&[&proof]), Err(ProofErrorKind::Malformed));
    }
}

#[test]
fn nonces_are_required_once_configured_and_renewed_past_half_life() {
    let key = ClientKey::es256(9);
    let jkt = key.jkt();
    let keys = NonceKeys::new(vec![vec![7; 32]], 60).expect("keys");
    let policy = DpopPolicy {
        mode: Mode::Required,
        nonce: Some(keys.clone()),
        ..DpopPolicy::default()
    };
    let run = |claims: &Value, now: u64| {
        let req = Request {
            now_s: now,
            ..request(&jkt)
        };
        check(&[&key.sign(&key.header(), claims)], &req, &policy)
    };
    // No nonce, or a foreign one: use_dpop_nonce with a fresh nonce.
    for claims in [claims("a"), with(claims("a"), "nonce", json!("bm9wZQ"))] {
        let err = run(&claims, NOW).expect_err("nonce needed");
        assert_eq!(err.kind, ProofErrorKind::Nonce);
        let nonce = err.nonce.expect("a nonce to send");
        assert_eq!(
            keys.check(&nonce, NOW),
            crate::dpop::nonce::NonceCheck::Fresh { issued_at: NOW }
        );
    }
    let nonce = keys.issue(NOW);
    let ok = run(&with(claims("b"), "nonce", json!(nonce)), NOW + 10).expect("fresh nonce");
    assert_eq!(ok.next_nonce, None);
    // The jti need only be remembered while the nonce is good.
    assert_eq!(ok.remember_until, NOW + 60 + 1);
    let late = with(
        with(claims("c"), "nonce", json!(nonce)),
        "iat",
        json!(NOW + 40),
    );
    let renewed = run(&late, NOW + 40).expect("still fresh");
    assert!(renewed.next_nonce.is_some());
    let stale = with(
        with(claims("d"), "nonce", json!(nonce)),
        "iat",
        json!(NOW + 61),
    );
    assert_eq!(
        run(&stale, NOW + 61).map_err(|e| e.kind),
        Err(ProofErrorKind::Nonce)
    );
}

#[test]
fn only_the_providers_algorithms_are_taken() {
    let key = ClientKey::ed(10);
    let jkt = key.jkt();
    let es_only = DpopPolicy {
        algorithms: vec![Algorithm::ES256],
        ..policy()
    };
    let proof = key.sign(&key.header(), &claims("j"));
    assert_eq!(
        check(&[&proof], &request(&jkt), &es_only).map_err(|e| e.kind),
        Err(ProofErrorKind::Algorithm)
    );
    // An EC key with an EdDSA header: the key does not fit the algorithm.
    let ec = ClientKey::es256(11);
    let mixed = ec.sign(&with(ec.header(), "alg", json!("EdDSA")), &claims("j"));
    assert_eq!(outcome(&ec, &mixed), Err(ProofErrorKind::Algorithm));
}
