//! JWS signature verification (RFC 7515, algorithms of RFC 7518 and RFC 8037):
//! public keys prepared once, when a key set loads, and the check of one
//! signature over the JWS signing input.
//!
//! - RSA (`RS*`, `PS*`): the `rsa` crate's public key, whose Montgomery
//!   parameters are computed when the key is built. The public operation
//!   s^65537 mod n runs as 16 squarings and one multiplication in
//!   crypto-bigint's Montgomery form (the arithmetic `rsa` itself uses): the
//!   crate's own exponentiation is a constant-time 4-bit window over the
//!   exponent's bits, over twice the work for a public exponent. The padding
//!   checks follow RFC 8017 8.2.2 (encode and compare, with the crate's
//!   DigestInfo prefixes) and 9.1.2 (EMSA-PSS-VERIFY with the salt length
//!   JWS fixes); `rsa` keeps both crate-private. Tests hold every check to
//!   `rsa`'s own verification and to Project Wycheproof's vectors.
//! - ECDSA (`ES256`, `ES384`): `p256` / `p384` with the raw `r || s`
//!   signature JWS uses.
//! - EdDSA (Ed25519): `ed25519-dalek`, strict verification.
//!
//! Nothing here is secret: keys, messages and signatures are public, so no
//! check needs to be constant-time.

use std::fmt;

use crypto_bigint::modular::BoxedMontyForm;
use crypto_bigint::BoxedUint;
use p256::ecdsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The public exponent of practically every RSA key, and the only one
/// accepted: 2^16 + 1, hence the short chain below.
const E_65537: u64 = 65_537;

/// Smallest and largest RSA modulus accepted, in bits. Below 2048 is weak
/// (RFC 7518 3.3 requires 2048); above 4096 a verification costs a token's
/// sender little and the proxy much.
pub const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=4096;

/// The hash of a signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// An RSA signature scheme: RSASSA-PKCS1-v1_5 (`RS*`) or RSASSA-PSS with
/// MGF1 of the same hash and a salt as long as the hash (`PS*`, RFC 7518 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaScheme {
    Pkcs1v15(Hash),
    Pss(Hash),
}

/// A signature that does not verify. Deliberately without detail: the
/// answer to the caller is the same whatever failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSignature;

impl fmt::Display for BadSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("signature invalid")
    }
}

impl std::error::Error for BadSignature {}

/// An RSA public key ready to verify: modulus, exponent and the modulus's
/// Montgomery parameters, computed once.
#[derive(Debug, Clone)]
pub struct RsaKey {
    key: rsa::PublicKey,
    /// Octets of the modulus (`k` in RFC 8017).
    size: usize,
    /// Bits of the modulus.
    bits: usize,
}

impl RsaKey {
    /// Builds a key from the big-endian modulus and exponent (a JWK's `n`
    /// and `e`). Refuses moduli outside [`RSA_BITS`] and exponents other
    /// than 65537; the message names the problem, never the key.
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<RsaKey, String> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        if e != [0x01, 0x00, 0x01] {
            return Err("RSA key refused: public exponent is not 65537".to_string());
        }
        let bits = n
            .first()
            .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
        if !RSA_BITS.contains(&bits) {
            return Err(format!(
                "RSA key refused: modulus of {bits} bits (accepted: {} to {})",
                RSA_BITS.start(),
                RSA_BITS.end()
            ));
        }
        let precision = limb_precision(n.len());
        let n = BoxedUint::from_be_slice(n, precision)
            .map_err(|_| "RSA key refused: modulus unreadable".to_string())?;
        let key = rsa::PublicKey::new(n, BoxedUint::from(E_65537))
            .map_err(|e| format!("RSA key refused: {e}"))?;
        Ok(RsaKey {
            size: key.size(),
            bits,
            key,
        })
    }

    /// Verifies `signature` over `message` with `scheme`.
    pub fn verify(
        &self,
        scheme: RsaScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), BadSignature> {
        match scheme {
            RsaScheme::Pkcs1v15(hash) => {
                let em = self.public_operation(signature, self.size)?;
                pkcs1v15_check(&em, hash, message)
            }
            RsaScheme::Pss(hash) => {
                // EMSA-PSS works on emBits = modBits - 1 bits: one octet
                // fewer than the modulus when modBits = 8k' + 1.
                let em_bits = self.bits - 1;
                let em = self.public_operation(signature, em_bits.div_ceil(8))?;
                match hash {
                    Hash::Sha256 => pss_check::<Sha256>(&em, em_bits, message),
                    Hash::Sha384 => pss_check::<Sha384>(&em, em_bits, message),
                    Hash::Sha512 => pss_check::<Sha512>(&em, em_bits, message),
                }
            }
        }
    }

    /// RSAVP1 with its framing (RFC 8017 8.2.2 steps 1-2, 9.1.2 steps 1-2):
    /// the signature is exactly `k` octets, its integer below the modulus,
    /// and the result fits `em_len` octets; returns that encoded message.
    fn public_operation(&self, signature: &[u8], em_len: usize) -> Result<Vec<u8>, BadSignature> {
        if signature.len() != self.size {
            return Err(BadSignature);
        }
        let n = self.key.n().as_ref();
        let s =
            BoxedUint::from_be_slice(signature, n.bits_precision()).map_err(|_| BadSignature)?;
        if s >= *n {
            return Err(BadSignature);
        }
        let m = pow_65537(&s, &self.key);
        let bytes = m.to_be_bytes();
        // `bytes` is as wide as the limbs; everything left of `em_len`
        // octets must be zero.
        let (high, em) = bytes.split_at(bytes.len() - em_len);
        if high.iter().any(|&b| b != 0) {
            return Err(BadSignature);
        }
        Ok(em.to_vec())
    }
}

/// s^65537 mod n: s^(2^16) by 16 squarings, times s, all in Montgomery form
/// with the key's precomputed parameters (crypto-bigint's operations, the
/// same `rsa` uses). `s` is below n and of the modulus's precision.
fn pow_65537(s: &BoxedUint, key: &rsa::PublicKey) -> BoxedUint {
    let base = BoxedMontyForm::new(s.clone(), key.n_params());
    let mut power = base.square();
    for _ in 1..16 {
        power = power.square();
    }
    power.mul(&base).retrieve()
}

/// RFC 8017 8.2.2 steps 3-4: EM must equal EMSA-PKCS1-v1_5-ENCODE(M), i.e.
/// `00 01 FF..FF 00 || DigestInfo || H` with at least 8 octets of `FF`.
/// Encoding and comparing (rather than parsing) leaves no room for the
/// lenient-parser forgeries (Bleichenbacher 2006).
fn pkcs1v15_check(em: &[u8], hash: Hash, message: &[u8]) -> Result<(), BadSignature> {
    let (prefix, digest) = match hash {
        Hash::Sha256 => (
            rsa::Pkcs1v15Sign::new::<Sha256>().prefix,
            Sha256::digest(message).to_vec(),
        ),
        Hash::Sha384 => (
            rsa::Pkcs1v15Sign::new::<Sha384>().prefix,
            Sha384::digest(message).to_vec(),
        ),
        Hash::Sha512 => (
            rsa::Pkcs1v15Sign::new::<Sha512>().prefix,
            Sha512::digest(message).to_vec(),
        ),
    };
    let t_len = prefix.len() + digest.len();
    let Some(ps_len) = em.len().checked_sub(t_len + 3).filter(|&n| n >= 8) else {
        return Err(BadSignature);
    };
    let mut expected = Vec::with_capacity(em.len());
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + ps_len, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(&prefix);
    expected.extend_from_slice(&digest);
    if expected == em {
        Ok(())
    } else {
        Err(BadSignature)
    }
}

/// RFC 8017 9.1.2 EMSA-PSS-VERIFY steps 3-14, MGF1 with hash `D`, salt
/// length = hash length (RFC 7518 3.5).
fn pss_check<D: Digest>(em: &[u8], em_bits: usize, message: &[u8]) -> Result<(), BadSignature> {
    let h_len = <D as Digest>::output_size();
    let s_len = h_len;
    let em_len = em.len();
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return Err(BadSignature);
    }
    // Steps 4-6: trailer 0xbc; maskedDB || H; the bits above emBits clear.
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let (h, trailer) = rest.split_at(h_len);
    let top_bits_mask = 0xffu8 >> (8 * em_len - em_bits);
    if trailer != [0xbc] || masked_db[0] & !top_bits_mask != 0 {
        return Err(BadSignature);
    }
    // Steps 7-9: DB = maskedDB xor MGF1(H), top bits cleared.
    let mut db = masked_db.to_vec();
    mgf1_xor::<D>(h, &mut db);
    db[0] &= top_bits_mask;
    // Step 10: PS (zeros) || 0x01 || salt.
    let (padding, salt) = db.split_at(db.len() - s_len);
    let Some((&one, zeros)) = padding.split_last() else {
        return Err(BadSignature);
    };
    if one != 0x01 || zeros.iter().any(|&b| b != 0) {
        return Err(BadSignature);
    }
    // Steps 12-14: H' = Hash(0x00 * 8 || Hash(M) || salt) must equal H.
    let expected = D::new()
        .chain_update([0u8; 8])
        .chain_update(D::digest(message))
        .chain_update(salt)
        .finalize();
    if expected.as_slice() == h {
        Ok(())
    } else {
        Err(BadSignature)
    }
}

/// XORs MGF1(seed) (RFC 8017 B.2.1) into `out`.
fn mgf1_xor<D: Digest>(seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in (0u32..).zip(out.chunks_mut(<D as Digest>::output_size())) {
        let mask = D::new()
            .chain_update(seed)
            .chain_update(counter.to_be_bytes())
            .finalize();
        chunk.iter_mut().zip(mask.iter()).for_each(|(o, m)| *o ^= m);
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The storage precision, in bits, of a `len`-octet integer: whole limbs.
fn limb_precision(len: usize) -> u32 {
    let limb_bytes = (crypto_bigint::Limb::BITS / 8) as usize;
    (len.div_ceil(limb_bytes) * limb_bytes * 8) as u32
}

/// An ECDSA public key type over one curve crate (`p256`, `p384`): built
/// from an uncompressed SEC1 point (`04 || x || y`, points not on the curve
/// refused), verifying JWS's `r || s` signature (RFC 7518 3.4) with the
/// curve's hash.
macro_rules! ecdsa_key {
    ($(#[$doc:meta])* $name:ident, $curve:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name($curve::ecdsa::VerifyingKey);

        impl $name {
            /// From an uncompressed SEC1 point; refuses points not on the curve.
            pub fn from_sec1(point: &[u8]) -> Result<$name, String> {
                $curve::ecdsa::VerifyingKey::from_sec1_bytes(point)
                    .map($name)
                    .map_err(|_| "EC point is not on the curve".to_string())
            }

            /// ECDSA over `message`; `signature` is `r || s`.
            pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
                let signature =
                    $curve::ecdsa::Signature::from_slice(signature).map_err(|_| BadSignature)?;
                self.0.verify(message, &signature).map_err(|_| BadSignature)
            }
        }
    };
}

ecdsa_key!(
    /// A P-256 public key (`ES256`: SHA-256, 64-octet signatures).
    P256Key,
    p256
);
ecdsa_key!(
    /// A P-384 public key (`ES384`: SHA-384, 96-octet signatures).
    P384Key,
    p384
);

/// An Ed25519 public key (`EdDSA`, RFC 8037).
#[derive(Debug, Clone)]
pub struct Ed25519Key(ed25519_dalek::VerifyingKey);

impl Ed25519Key {
    /// From the 32-octet encoded point (a JWK's `x`).
    pub fn from_bytes(x: &[u8]) -> Result<Ed25519Key, String> {
        let x: &[u8; 32] = x
            .try_into()
            .map_err(|_| "invalid Ed25519 public key".to_string())?;
        ed25519_dalek::VerifyingKey::from_bytes(x)
            .map(Ed25519Key)
            .map_err(|_| "invalid Ed25519 public key".to_string())
    }

    /// Ed25519 over `message`; `signature` is 64 octets. The strict check:
    /// canonical `S`, and no small-order `R` or public key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| BadSignature)?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use jwt_simple::prelude::*;

    use super::*;

    fn rsa_key(pair: &RS256KeyPair) -> RsaKey {
        let c = pair.public_key().to_components();
        RsaKey::from_components(&c.n, &c.e).expect("usable key")
    }

    #[test]
    fn the_short_chain_equals_the_librarys_exponentiation() {
        let pair = RS256KeyPair::generate(2048).unwrap();
        let key = rsa_key(&pair);
        let n = key.key.n().as_ref();
        for seed in 1u8..=20 {
            // Arbitrary values below n: every byte `seed * i`, top byte low.
            let mut bytes: Vec<u8> = (0..key.size)
                .map(|i| seed.wrapping_mul(i as u8 | 1))
                .collect();
            bytes[0] &= 0x3f;
            let s = BoxedUint::from_be_slice(&bytes, n.bits_precision()).unwrap();
            let library = BoxedMontyForm::new(s.clone(), key.key.n_params())
                .pow(&BoxedUint::from(E_65537))
                .retrieve();
            assert_eq!(pow_65537(&s, &key.key), library);
        }
    }

    #[test]
    fn moduli_of_any_bit_length_verify_rs256_and_ps256() {
        // Keys of 2049, 2050 and 2055 bits and their signatures, made with
        // Python's `cryptography` (OpenSSL). At 2049 bits EMSA-PSS's encoded
        // message is one octet shorter than the modulus.
        let fixtures: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/rsa_odd_sizes.json")).unwrap();
        let message = fixtures["message"].as_str().unwrap().as_bytes();
        let b64 = |v: &serde_json::Value| {
            Base64UrlSafeNoPadding::decode_to_vec(v.as_str().unwrap(), None).unwrap()
        };
        let keys = fixtures["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 3);
        for k in keys {
            let key = RsaKey::from_components(&b64(&k["n"]), &b64(&k["e"])).unwrap();
            assert_eq!(key.bits as u64, k["bits"].as_u64().unwrap());
            for (scheme, signature) in [
                (RsaScheme::Pkcs1v15(Hash::Sha256), b64(&k["rs256"])),
                (RsaScheme::Pss(Hash::Sha256), b64(&k["ps256"])),
            ] {
                assert_eq!(key.verify(scheme, message, &signature), Ok(()));
                let mut tampered = message.to_vec();
                tampered[3] ^= 1;
                assert_eq!(
                    key.verify(scheme, &tampered, &signature),
                    Err(BadSignature),
                    "{} bits {scheme:?}",
                    key.bits
                );
            }
        }
    }

    #[test]
    fn rsa_keys_outside_the_accepted_sizes_or_exponent_are_refused() {
        let pair = RS256KeyPair::generate(2048).unwrap();
        let c = pair.public_key().to_components();
        let err = RsaKey::from_components(&c.n, &[3]).unwrap_err();
        assert!(err.contains("exponent"), "{err}");
        let err = RsaKey::from_components(&c.n[..128], &c.e).unwrap_err();
        assert!(err.contains("1024 bits"), "{err}");
        let big = [c.n.as_slice(), &c.n, &c.n].concat();
        let err = RsaKey::from_components(&big, &c.e).unwrap_err();
        assert!(err.contains("6144 bits"), "{err}");
        // Leading zero octets are not part of the size.
        let mut padded = vec![0, 0];
        padded.extend_from_slice(&c.n);
        assert!(RsaKey::from_components(&padded, &[0, 1, 0, 1]).is_ok());
    }

    #[test]
    fn a_signature_of_the_wrong_length_or_not_below_the_modulus_is_refused() {
        let pair = RS256KeyPair::generate(2048).unwrap();
        let key = rsa_key(&pair);
        let token = pair.sign(Claims::create(Duration::from_mins(5))).unwrap();
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = Base64UrlSafeNoPadding::decode_to_vec(signature, None).unwrap();
        let scheme = RsaScheme::Pkcs1v15(Hash::Sha256);
        let mut long = vec![0];
        long.extend_from_slice(&signature);
        assert_eq!(
            key.verify(scheme, input.as_bytes(), &long),
            Err(BadSignature)
        );
        assert_eq!(
            key.verify(scheme, input.as_bytes(), &signature[1..]),
            Err(BadSignature)
        );
        let n = pair.public_key().to_components().n;
        assert_eq!(key.verify(scheme, input.as_bytes(), &n), Err(BadSignature));
        assert_eq!(
            key.verify(scheme, input.as_bytes(), &vec![0xff; n.len()]),
            Err(BadSignature)
        );
    }
}
