//! Replays the fuzz inputs through the fuzz targets' own code
//! (`fuzz/src/checks.rs`): every crash input kept in
//! `fuzz/regressions/<target>/`, and the seed corpus `fuzz/corpus/<target>/`,
//! must run without a panic and keep the target's invariants.

use std::fs;
use std::path::Path;

#[path = "../fuzz/src/checks.rs"]
mod checks;

/// Runs `check` over every file of the target's regression and seed
/// directories; returns how many inputs ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["regressions", "corpus"] {
        let Ok(entries) = fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let data = fs::read(&path).expect("readable fuzz input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn request_body_inputs_parse_without_panic() {
    assert!(replay("request_body", checks::request_body) > 0);
}

#[test]
fn token_inputs_verify_without_panic() {
    assert!(replay("token", checks::token) > 0);
}

#[test]
fn jwks_inputs_parse_without_panic() {
    assert!(replay("jwks", checks::jwks) > 0);
}

#[test]
fn config_inputs_parse_without_panic() {
    assert!(replay("config", checks::config) > 0);
}

#[test]
fn list_answer_inputs_filter_without_panic() {
    assert!(replay("list_answer", checks::list_answer) > 0);
}

#[test]
fn dpop_proof_inputs_check_without_panic() {
    assert!(replay("dpop_proof", checks::dpop_proof) > 0);
}

#[test]
fn seed_proofs_check_as_minted() {
    // The valid seeds must keep passing, or the target would only ever
    // exercise the failure paths; the others fail for their own reason.
    use mcp_authz::dpop::{self, proof, ProofErrorKind};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/dpop_proof");
    let policy = dpop::DpopPolicy {
        mode: dpop::Mode::Required,
        ..dpop::DpopPolicy::default()
    };
    let request = proof::Request {
        method: "POST",
        path: "/mcp",
        resource_origin: "https://mcp.example.com",
        token: checks::DPOP_TOKEN,
        jkt: checks::DPOP_JKT,
        now_s: checks::NOW,
    };
    for (name, expected) in [
        ("es256_valid", None),
        ("es256_htu_uppercase_port", None),
        ("es256_iat_float", None),
        ("es256_with_nonce", None),
        ("es256_wrong_htm", Some(ProofErrorKind::Method)),
        ("es256_old_iat", Some(ProofErrorKind::Time)),
        ("eddsa_other_key", Some(ProofErrorKind::KeyBinding)),
        ("two_headers", Some(ProofErrorKind::Malformed)),
        ("private_jwk", Some(ProofErrorKind::Key)),
        ("hs256", Some(ProofErrorKind::Algorithm)),
        ("none_alg", Some(ProofErrorKind::Algorithm)),
        ("duplicate_typ", Some(ProofErrorKind::Malformed)),
    ] {
        let text = fs::read_to_string(root.join(name)).expect("seed proof");
        let values: Vec<&str> = text.split('\n').collect();
        let outcome = proof::check(&values, &request, &policy).map_err(|e| e.kind);
        assert_eq!(outcome.err(), expected, "{name}");
    }
}

#[test]
fn seed_tokens_verify_as_minted() {
    // The valid seeds must keep verifying, or the token target would only
    // ever exercise the failure paths.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/token");
    let policy = checks::policy();
    let keys: Vec<_> = policy
        .providers
        .iter()
        .map(|p| match &p.jwks {
            Some(mcp_authz::config::JwksSource::Inline(keys)) => Some(keys),
            _ => None,
        })
        .collect();
    for name in ["rs256_valid", "ps256_valid", "es256_valid", "eddsa_valid"] {
        let token = fs::read_to_string(root.join(name)).expect("seed token");
        let identity =
            mcp_authz::token::verify(token.trim(), &policy.providers, &keys, checks::NOW)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(identity.issuer, checks::ISSUER);
    }
}

#[test]
fn condition_inputs_evaluate_without_panic() {
    assert!(replay("condition", checks::condition) > 0);
}
