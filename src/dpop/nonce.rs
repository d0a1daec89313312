//! Stateless server nonces (RFC 9449 §9): a nonce is the time it was issued
//! and an HMAC-SHA256 of that time under a key from the configuration, so
//! any proxy of a fleet that has the key can check one another issued,
//! without shared state. A proof must carry a nonce issued at most
//! `lifetime` ago: the server, not the client's clock, bounds how long a
//! proof can be replayed.
//!
//! Keys rotate by configuration update: the first key issues, every key
//! verifies, so a new key goes first and the old one stays listed for one
//! lifetime.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Bytes of MAC kept in a nonce (128 bits).
const TAG_BYTES: usize = 16;
/// Context for the MAC, so a key reused elsewhere cannot produce nonces.
const CONTEXT: &[u8] = b"mcp-authz DPoP nonce v1\0";
/// A nonce issued this far in the future still counts (proxies' clocks
/// differ a little).
const FUTURE_LEEWAY_SECONDS: u64 = 5;

/// The nonce keys of a provider, and how long a nonce is good.
#[derive(Clone)]
pub struct NonceKeys {
    /// One MAC per key, the context already fed in. The first issues; all
    /// verify.
    keys: Vec<Hmac<Sha256>>,
    pub lifetime_seconds: u64,
}

impl std::fmt::Debug for NonceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("NonceKeys")
            .field("keys", &self.keys.len())
            .field("lifetime_seconds", &self.lifetime_seconds)
            .finish()
    }
}

/// What a nonce in a proof turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by a key of ours at `issued_at` (seconds), and not expired.
    Fresh { issued_at: u64 },
    /// Not one of ours, or expired: the client must get a new one.
    Stale,
}

impl NonceKeys {
    /// At least one key; each at least 32 bytes.
    pub fn new(keys: Vec<Vec<u8>>, lifetime_seconds: u64) -> Result<NonceKeys, String> {
        if keys.is_empty() {
            return Err("needs at least one key".into());
        }
        if keys.iter().any(|k| k.len() < 32) {
            return Err("each key must be at least 32 bytes (base64url-encoded)".into());
        }
        let keys = keys
            .iter()
            .map(|key| {
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .map_err(|_| "a key HMAC-SHA256 cannot take".to_string())?;
                mac.update(CONTEXT);
                Ok(mac)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(NonceKeys {
            keys,
            lifetime_seconds,
        })
    }

    /// A nonce issued now, by the first key.
    pub fn issue(&self, now_s: u64) -> String {
        let mut raw = now_s.to_be_bytes().to_vec();
        if let Some(key) = self.keys.first() {
            let mut mac = key.clone();
            mac.update(&now_s.to_be_bytes());
            raw.extend_from_slice(&mac.finalize().into_bytes()[..TAG_BYTES]);
        }
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce a proof carried.
    pub fn check(&self, nonce: &str, now_s: u64) -> NonceCheck {
        let Some(issued_at) = self.verify(nonce) else {
            return NonceCheck::Stale;
        };
        let fresh = issued_at <= now_s.saturating_add(FUTURE_LEEWAY_SECONDS)
            && now_s.saturating_sub(issued_at) <= self.lifetime_seconds;
        if fresh {
            NonceCheck::Fresh { issued_at }
        } else {
            NonceCheck::Stale
        }
    }

    /// Whether a nonce issued at `issued_at` is past half its life, so the
    /// client should be handed a new one with the answer (RFC 9449 §8.2).
    pub fn due_for_renewal(&self, issued_at: u64, now_s: u64) -> bool {
        now_s.saturating_sub(issued_at) * 2 >= self.lifetime_seconds
    }

    /// The issue time of a nonce one of the keys made.
    fn verify(&self, nonce: &str) -> Option<u64> {
        let raw = URL_SAFE_NO_PAD.decode(nonce).ok()?;
        if raw.len() != 8 + TAG_BYTES {
            return None;
        }
        let (time, given) = raw.split_at(8);
        let issued_at = u64::from_be_bytes(time.try_into().ok()?);
        self.keys
            .iter()
            .any(|key| {
                let mut mac = key.clone();
                mac.update(&issued_at.to_be_bytes());
                // Constant-time comparison of the truncated tag.
                mac.verify_truncated_left(given).is_ok()
            })
            .then_some(issued_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seeds: &[u8], lifetime: u64) -> NonceKeys {
        NonceKeys::new(seeds.iter().map(|s| vec![*s; 32]).collect(), lifetime).expect("keys")
    }

    #[test]
    fn a_nonce_is_good_for_its_lifetime_and_no_longer() {
        let k = keys(&[1], 60);
        let nonce = k.issue(1000);
        assert_eq!(k.check(&nonce, 1000), NonceCheck::Fresh { issued_at: 1000 });
        assert_eq!(k.check(&nonce, 1060), NonceCheck::Fresh { issued_at: 1000 });
        assert_eq!(k.check(&nonce, 1061), NonceCheck::Stale);
        // Issued by a proxy whose clock runs a little ahead.
        assert_eq!(k.check(&nonce, 996), NonceCheck::Fresh { issued_at: 1000 });
        assert_eq!(k.check(&nonce, 990), NonceCheck::Stale);
        assert!(!k.due_for_renewal(1000, 1029));
        assert!(k.due_for_renewal(1000, 1030));
    }

    #[test]
    fn forged_altered_or_foreign_nonces_are_stale() {
        let k = keys(&[1], 60);
        let nonce = k.issue(1000);
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).expect("b64");
        raw[7] ^= 1; // another time, same tag
        assert_eq!(
            k.check(&URL_SAFE_NO_PAD.encode(&raw), 1000),
            NonceCheck::Stale
        );
        assert_eq!(keys(&[2], 60).check(&nonce, 1000), NonceCheck::Stale);
        for junk in ["", "AAAA", "not base64!", &format!("{nonce}A")] {
            assert_eq!(k.check(junk, 1000), NonceCheck::Stale, "{junk}");
        }
    }

    #[test]
    fn keys_rotate_the_first_issuing_and_every_one_verifying() {
        let old = keys(&[1], 60);
        let rotated = keys(&[2, 1], 60);
        let by_old = old.issue(1000);
        assert_eq!(
            rotated.check(&by_old, 1000),
            NonceCheck::Fresh { issued_at: 1000 }
        );
        let by_new = rotated.issue(1000);
        assert_eq!(old.check(&by_new, 1000), NonceCheck::Stale);
        assert!(NonceKeys::new(vec![], 60).is_err());
        assert!(NonceKeys::new(vec![vec![0; 31]], 60).is_err());
    }
}
