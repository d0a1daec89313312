//! The proxy's memory of proofs already used (RFC 9449 §11.1): a proof's
//! `jti` (with its key's thumbprint) is remembered until the proof would
//! fail its time checks anyway, in proxy-wasm shared data, so every worker
//! of one Envoy sees the proofs the others took.
//!
//! Bounded: [`SHARDS`] shared-data entries of at most [`PER_SHARD`] proofs
//! each. A full shard forgets its expired proofs first, then the one that
//! expires soonest (counted: a proof forgotten early could be replayed to
//! this proxy until its window closes). Each shard is updated with
//! compare-and-swap, so two workers taking proofs at once never lose one.
//!
//! This memory is per Envoy process: a fleet of proxies does not share it,
//! and a proof taken by one can be replayed to another within its window.
//! Server nonces ([`super::nonce`]) bound that window fleet-wide to the
//! nonce lifetime without shared state.
//!
//! A proof is remembered by a keyed digest, never its text: the key is
//! drawn once per Envoy process and kept in shared data, so nobody can aim
//! `jti` values at one shard to flood it.

use sha2::{Digest, Sha256};

use crate::shared_data::SharedData;

/// Shared-data entries the memory is spread over.
pub const SHARDS: usize = 256;
/// Proofs one shard holds.
pub const PER_SHARD: usize = 128;
/// Proofs the proxy remembers at most.
pub const CAPACITY: usize = SHARDS * PER_SHARD;

/// Bytes of one remembered proof: a 16-byte digest and when it may be
/// forgotten (seconds, big-endian).
const ENTRY: usize = 24;
/// Tries of a compare-and-swap update before giving up.
const TRIES: usize = 16;
const SECRET_KEY: &str = "mcp_authz.dpop_jti.secret";

fn shard_key(shard: usize) -> String {
    format!("mcp_authz.dpop_jti.{shard}")
}

/// What remembering a proof found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First use; remembered. `evicted`: an unexpired proof was forgotten to
    /// make room.
    Fresh { evicted: bool },
    /// Used before.
    Replayed,
    /// The memory could not be updated (shared data refused every try): the
    /// proof is refused rather than taken unrecorded.
    Unavailable,
}

/// Creates the shared-data entries (compare-and-swap only guards entries
/// that exist: a write to a missing one always succeeds). Every VM calls
/// this while configuring; Envoy configures its main-thread VM before the
/// workers', so they exist before any request. `random` seeds the digest
/// key the first time.
pub fn prepare(shared: &mut dyn SharedData, random: [u8; 32]) {
    if shared.shared_get(SECRET_KEY).0.is_none() {
        shared.shared_set(SECRET_KEY, &random, None);
    }
    for shard in 0..SHARDS {
        let key = shard_key(shard);
        if shared.shared_get(&key).0.is_none() {
            shared.shared_set(&key, &[], None);
        }
    }
}

/// Remembers the proof `jti` of the key `jkt` until `until` (seconds);
/// says whether it was seen before.
pub fn remember(shared: &mut dyn SharedData, jkt: &str, jti: &str, until: u64, now_s: u64) -> Seen {
    let secret = match shared.shared_get(SECRET_KEY).0 {
        Some(secret) if !secret.is_empty() => secret,
        _ => return Seen::Unavailable,
    };
    let mut hasher = Sha256::new();
    hasher.update(&secret);
    hasher.update((jkt.len() as u64).to_be_bytes());
    hasher.update(jkt.as_bytes());
    hasher.update(jti.as_bytes());
    let full = hasher.finalize();
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&full[..16]);
    let key = shard_key(usize::from(full[16]) % SHARDS);
    for _ in 0..TRIES {
        let (value, cas) = shared.shared_get(&key);
        if cas.is_none() {
            // Never created (see `prepare`): create it, then update it.
            shared.shared_set(&key, &[], None);
            continue;
        }
        let Some(updated) = insert(&value.unwrap_or_default(), digest, until, now_s) else {
            return Seen::Replayed;
        };
        if shared.shared_set(&key, &updated.bytes, cas) {
            return Seen::Fresh {
                evicted: updated.evicted,
            };
        }
    }
    Seen::Unavailable
}

struct Updated {
    bytes: Vec<u8>,
    evicted: bool,
}

/// The shard with `digest` added (expired entries dropped, and the one that
/// expires soonest when full); `None` when `digest` is there and unexpired.
fn insert(shard: &[u8], digest: [u8; 16], until: u64, now_s: u64) -> Option<Updated> {
    let mut entries: Vec<([u8; 16], u64)> = shard
        .chunks_exact(ENTRY)
        .filter_map(|chunk| {
            let (d, t) = chunk.split_at(16);
            Some((d.try_into().ok()?, u64::from_be_bytes(t.try_into().ok()?)))
        })
        .filter(|(_, expires)| *expires > now_s)
        .collect();
    if entries.iter().any(|(d, _)| *d == digest) {
        return None;
    }
    let mut evicted = false;
    while entries.len() >= PER_SHARD {
        let soonest = entries
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, expires))| *expires)
            .map(|(i, _)| i)?;
        entries.swap_remove(soonest);
        evicted = true;
    }
    entries.push((digest, until));
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY);
    for (d, t) in entries {
        bytes.extend_from_slice(&d);
        bytes.extend_from_slice(&t.to_be_bytes());
    }
    Some(Updated { bytes, evicted })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_data::SharedMap;

    fn prepared() -> SharedMap {
        let mut shared = SharedMap::default();
        prepare(&mut shared, [9; 32]);
        shared
    }

    #[test]
    fn a_proof_is_taken_once_until_it_expires() {
        let mut shared = prepared();
        let fresh = Seen::Fresh { evicted: false };
        assert_eq!(remember(&mut shared, "k1", "j", 1300, 1000), fresh);
        assert_eq!(remember(&mut shared, "k1", "j", 1300, 1100), Seen::Replayed);
        // Another key's proof with the same jti is another proof.
        assert_eq!(remember(&mut shared, "k2", "j", 1300, 1100), fresh);
        // Past its window the proof fails its time check anyway; the memory
        // may forget it.
        assert_eq!(remember(&mut shared, "k1", "j", 1700, 1300), fresh);
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_soonest_to_expire_first() {
        let mut shared = prepared();
        let mut evictions = 0;
        for i in 0..(CAPACITY * 2) {
            match remember(&mut shared, "k", &format!("j{i}"), 10_000 + i as u64, 1000) {
                Seen::Fresh { evicted } => evictions += usize::from(evicted),
                other => panic!("{other:?}"),
            }
        }
        assert!(evictions >= CAPACITY, "{evictions}");
        for shard in 0..SHARDS {
            let len = shared.shared_get(&shard_key(shard)).0.expect("shard").len();
            assert!(len <= PER_SHARD * ENTRY);
        }
        // The latest proofs are all still remembered.
        let last = format!("j{}", CAPACITY * 2 - 1);
        assert_eq!(
            remember(&mut shared, "k", &last, 99_999, 1000),
            Seen::Replayed
        );
    }

    #[test]
    fn two_workers_racing_on_one_shard_both_keep_their_proof() {
        /// Shared data where another worker adds a proof to the same shard
        /// between this worker's read and its compare-and-swap, once.
        struct Racing {
            map: SharedMap,
            raced: bool,
        }
        impl SharedData for Racing {
            fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.map.shared_get(key)
            }
            fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
                if !self.raced {
                    self.raced = true;
                    let (current, _) = self.map.shared_get(key);
                    let theirs = insert(&current.unwrap_or_default(), [1; 16], 5000, 1000)
                        .expect("a new proof");
                    assert!(self.map.shared_set(key, &theirs.bytes, None));
                }
                self.map.shared_set(key, value, cas)
            }
        }
        let mut racing = Racing {
            map: prepared(),
            raced: false,
        };
        assert_eq!(
            remember(&mut racing, "k", "j", 5000, 1000),
            Seen::Fresh { evicted: false }
        );
        assert_eq!(
            remember(&mut racing.map, "k", "j", 5000, 1000),
            Seen::Replayed
        );
        let shard = (0..SHARDS)
            .filter_map(|s| racing.map.shared_get(&shard_key(s)).0)
            .find(|bytes| !bytes.is_empty())
            .expect("the shard both wrote");
        assert_eq!(shard.len(), 2 * ENTRY);
        assert!(shard.chunks_exact(ENTRY).any(|e| e[..16] == [1; 16]));
    }

    #[test]
    fn without_its_key_the_memory_refuses_rather_than_forgets() {
        let mut empty = SharedMap::default();
        assert_eq!(
            remember(&mut empty, "k", "j", 5000, 1000),
            Seen::Unavailable
        );
    }
}
