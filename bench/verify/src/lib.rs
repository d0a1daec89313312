//! Times one signature verification per algorithm and candidate library,
//! inside Envoy's V8 (see bench/verify.py, which starts Envoy with this module
//! as a singleton bootstrap service and reads the `RESULT` log lines).
//!
//! Configuration (JSON): `{"iterations": N, "batches": B, "cases": [{"alg",
//! "kid", "jwk", "token"}]}`. For each case and candidate: one call checks the
//! verdict (a valid token verifies, a forged one does not), then `batches`
//! runs of `iterations` calls each are timed with the host clock; the lowest
//! and the median batch (µs per call) are logged, the lowest being the least
//! disturbed by other load.

use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use crypto_bigint::BoxedUint;
use jwks::{Algorithm, KeySet};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// The filter's key loading and verification, as the filter compiles them.
#[path = "../../../src/keys/jwks.rs"]
#[allow(dead_code)]
mod jwks;
#[path = "../../../src/signature.rs"]
#[allow(dead_code)]
mod signature;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Bench) });
}}

struct Bench;

impl Context for Bench {}

impl RootContext for Bench {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log("no configuration");
            return false;
        };
        let Ok(config) = serde_json::from_slice::<Value>(&bytes) else {
            log("configuration is not JSON");
            return false;
        };
        match run(&config) {
            Ok(()) => log("DONE"),
            Err(e) => log(&format!("FAILED {e}")),
        }
        true
    }
}

fn log(message: &str) {
    let _ = proxy_wasm::hostcalls::log(LogLevel::Warn, message);
}

fn now() -> Duration {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

struct Timing {
    iterations: u64,
    batches: usize,
}

impl Timing {
    /// Checks `verify`'s verdict, then times it; logs one RESULT line.
    fn measure(&self, case: &str, candidate: &str, expect: bool, mut verify: impl FnMut() -> bool) {
        if verify() != expect {
            log(&format!(
                "RESULT {}",
                json!({"case": case, "candidate": candidate, "error": "wrong verdict"})
            ));
            return;
        }
        let mut per_call: Vec<f64> = (0..self.batches)
            .map(|_| {
                let start = now();
                for _ in 0..self.iterations {
                    std::hint::black_box(verify());
                }
                (now() - start).as_secs_f64() * 1e6 / self.iterations as f64
            })
            .collect();
        per_call.sort_by(f64::total_cmp);
        log(&format!(
            "RESULT {}",
            json!({"case": case, "candidate": candidate, "min_us": per_call[0],
                   "median_us": per_call[per_call.len() / 2], "batches": self.batches,
                   "iterations": self.iterations})
        ));
    }
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD.decode(text).map_err(|e| e.to_string())
}

fn run(config: &Value) -> Result<(), String> {
    let timing = Timing {
        iterations: config["iterations"].as_u64().unwrap_or(20),
        batches: config["batches"].as_u64().unwrap_or(7) as usize,
    };
    for case in config["cases"].as_array().ok_or("no cases")? {
        let alg_name = case["alg"].as_str().ok_or("no alg")?;
        let alg = Algorithm::parse(alg_name)?;
        let kid = case["kid"].as_str().ok_or("no kid")?;
        let jwk = &case["jwk"];
        let token = case["token"].as_str().ok_or("no token")?;
        let (input, signature_b64) = token.rsplit_once('.').ok_or("not a JWS")?;
        let signature = b64(signature_b64)?;
        let mut forged = signature.clone();
        forged[7] ^= 0x55;
        let message = input.as_bytes();

        let (set, _) = KeySet::from_value(&json!({ "keys": [jwk] })).map_err(|e| e.0)?;
        let key = set.find(Some(kid), alg).map_err(|e| format!("{e:?}"))?;
        let label = |what: &str| format!("{alg_name} {what}");
        timing.measure(&label("valid"), "mcp-authz", true, || {
            key.verify(message, &signature).is_ok()
        });
        timing.measure(&label("forged"), "mcp-authz", false, || {
            key.verify(message, &forged).is_ok()
        });
        let case = Case {
            alg: alg_name,
            jwk,
            token,
            message,
            signature: &signature,
            valid: label("valid"),
        };
        alternatives(&timing, &case)?;
        #[cfg(feature = "ring")]
        with_ring(&timing, &case)?;
    }
    Ok(())
}

/// One algorithm's key and valid token, as the candidates take them.
struct Case<'a> {
    alg: &'a str,
    jwk: &'a Value,
    token: &'a str,
    message: &'a [u8],
    signature: &'a [u8],
    /// The label of the valid-token rows.
    valid: String,
}

impl Case<'_> {
    /// A base64url member of the JWK, decoded.
    fn member(&self, name: &str) -> Result<Vec<u8>, String> {
        b64(self.jwk[name].as_str().unwrap_or_default())
    }

    /// The uncompressed SEC1 point of an EC JWK.
    fn point(&self) -> Result<Vec<u8>, String> {
        Ok([vec![4u8], self.member("x")?, self.member("y")?].concat())
    }
}

/// The same verification through the libraries the filter could use.
fn alternatives(timing: &Timing, case: &Case) -> Result<(), String> {
    use jwt_simple::prelude::*;
    let Case {
        alg,
        token,
        message,
        signature,
        ref valid,
        ..
    } = *case;
    let member = |name: &str| case.member(name);
    let options = || None;
    match alg {
        "RS256" | "PS256" => {
            let (n, e) = (member("n")?, member("e")?);
            let precision = (n.len().div_ceil(8) * 64) as u32;
            let key = rsa::PublicKey::new(
                BoxedUint::from_be_slice(&n, precision).map_err(|e| e.to_string())?,
                BoxedUint::from_be_slice(&e, 64).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
            let hashed = || Sha256::digest(message);
            if alg == "RS256" {
                timing.measure(valid, "rsa 0.10 PublicKey::verify", true, || {
                    key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &hashed(), signature)
                        .is_ok()
                });
                let old = RS256PublicKey::from_components(&n, &e).map_err(|e| e.to_string())?;
                timing.measure(valid, "jwt-simple 0.15 (rsa 0.9)", true, || {
                    old.verify_token::<NoCustomClaims>(token, options()).is_ok()
                });
            } else {
                timing.measure(valid, "rsa 0.10 PublicKey::verify", true, || {
                    key.verify(rsa::Pss::<Sha256>::new(), &hashed(), signature)
                        .is_ok()
                });
                let old = PS256PublicKey::from_components(&n, &e).map_err(|e| e.to_string())?;
                timing.measure(valid, "jwt-simple 0.15 (rsa 0.9)", true, || {
                    old.verify_token::<NoCustomClaims>(token, options()).is_ok()
                });
            }
        }
        "ES256" | "ES384" => {
            let point = case.point()?;
            // The previous line of the curve crates, the same code for both.
            macro_rules! previous_line {
                ($curve:ident, $name:literal) => {{
                    use $curve::ecdsa::signature::Verifier;
                    let key = $curve::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                        .map_err(|e| e.to_string())?;
                    let sig = $curve::ecdsa::Signature::from_slice(signature)
                        .map_err(|e| e.to_string())?;
                    timing.measure(valid, $name, true, || key.verify(message, &sig).is_ok());
                }};
            }
            if alg == "ES256" {
                previous_line!(p256_13, "p256 0.13");
                let old = ES256PublicKey::from_bytes(&point).map_err(|e| e.to_string())?;
                timing.measure(valid, "jwt-simple 0.15 (p256 0.14)", true, || {
                    old.verify_token::<NoCustomClaims>(token, options()).is_ok()
                });
            } else {
                previous_line!(p384_13, "p384 0.13");
            }
        }
        "EdDSA" => {
            let x = member("x")?;
            let key = ed25519_compact::PublicKey::from_slice(&x).map_err(|e| e.to_string())?;
            let sig =
                ed25519_compact::Signature::from_slice(signature).map_err(|e| e.to_string())?;
            timing.measure(valid, "ed25519-compact 2.6", true, || {
                key.verify(message, &sig).is_ok()
            });
            let old = Ed25519PublicKey::from_bytes(&x).map_err(|e| e.to_string())?;
            timing.measure(valid, "jwt-simple 0.15 (ed25519-compact)", true, || {
                old.verify_token::<NoCustomClaims>(token, options()).is_ok()
            });
        }
        _ => {}
    }
    Ok(())
}

#[cfg(feature = "ring")]
fn with_ring(timing: &Timing, case: &Case) -> Result<(), String> {
    use ring::signature as sig;
    let (alg, message, signature, valid) = (case.alg, case.message, case.signature, &case.valid);
    let member = |name: &str| case.member(name);
    let point = || case.point();
    match alg {
        "RS256" | "PS256" => {
            let key = sig::RsaPublicKeyComponents {
                n: member("n")?,
                e: member("e")?,
            };
            let params = if alg == "RS256" {
                &sig::RSA_PKCS1_2048_8192_SHA256
            } else {
                &sig::RSA_PSS_2048_8192_SHA256
            };
            timing.measure(valid, "ring 0.17", true, || {
                key.verify(params, message, signature).is_ok()
            });
        }
        "ES256" | "ES384" | "EdDSA" => {
            let (params, bytes): (&dyn sig::VerificationAlgorithm, Vec<u8>) = match alg {
                "ES256" => (&sig::ECDSA_P256_SHA256_FIXED, point()?),
                "ES384" => (&sig::ECDSA_P384_SHA384_FIXED, point()?),
                _ => (&sig::ED25519, member("x")?),
            };
            let key = sig::UnparsedPublicKey::new(params, bytes);
            timing.measure(valid, "ring 0.17", true, || {
                key.verify(message, signature).is_ok()
            });
        }
        _ => {}
    }
    Ok(())
}
