//! Tokens already verified, so that a client reusing its token (the normal
//! case: one token for a whole MCP session) skips the signature check.
//!
//! The cache can only make a token pass that verification accepted before,
//! under the same keys, and only until its `exp` (without skew): it is never
//! more lenient than [`crate::token::verify`]. Only identities go in, so a
//! failing token cannot be cached.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::rc::Rc;

use crate::identity::Identity;

/// A 128-bit keyed digest of a token: the token itself is never stored. Two
/// SipHash instances with independent random keys, chosen per cache (so per
/// VM) and never leaving it: without the keys nobody can aim at a collision,
/// and by chance one is a 2^-128 event. A keyed PRF costs a fraction of
/// SHA-256 on the per-request path (measured in bench/).
type Digest = [u64; 2];

struct Entry {
    provider: usize,
    keys_generation: u64,
    /// Shared with the requests it serves: a hit copies a pointer, not
    /// the claims.
    identity: Rc<Identity>,
    /// Insertion order, for evicting the oldest.
    sequence: u64,
}

/// A bounded map from token digest to the identity verification produced.
pub struct VerifiedTokenCache {
    capacity: usize,
    entries: HashMap<Digest, Entry, BuildHasherDefault<DigestHasher>>,
    /// sequence -> digest, oldest first.
    order: BTreeMap<u64, Digest>,
    next_sequence: u64,
    /// Latest `now` seen by `get`; `insert` uses it to find expired entries
    /// (the host always looks a token up before verifying and inserting it).
    last_now: u64,
    keys: [RandomState; 2],
}

impl VerifiedTokenCache {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> VerifiedTokenCache {
        VerifiedTokenCache {
            capacity,
            entries: HashMap::default(),
            order: BTreeMap::new(),
            next_sequence: 0,
            last_now: 0,
            keys: [RandomState::new(), RandomState::new()],
        }
    }

    /// The identity of a token verified before for `server` (a token
    /// verified for one server — its audience — is not verified for
    /// another), if it has not expired (`now < exp`) and its provider's keys
    /// have not changed since (`keys_generation[provider]` equals the
    /// generation it was verified under). A stale entry is dropped.
    pub fn get(
        &mut self,
        server: usize,
        token: &str,
        now_s: u64,
        keys_generation: &[u64],
    ) -> Option<Rc<Identity>> {
        self.last_now = self.last_now.max(now_s);
        let digest = self.digest(server, token);
        let entry = self.entries.get(&digest)?;
        let fresh = now_s < entry.identity.expires_at
            && keys_generation.get(entry.provider) == Some(&entry.keys_generation);
        if fresh {
            return Some(Rc::clone(&entry.identity));
        }
        self.remove(&digest);
        None
    }

    /// Remembers a token that `verify` accepted for `server` and
    /// `provider`, whose keys were at `keys_generation`. When full, expired
    /// entries go first, then the oldest.
    pub fn insert(
        &mut self,
        server: usize,
        token: &str,
        provider: usize,
        keys_generation: u64,
        identity: Rc<Identity>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let digest = self.digest(server, token);
        self.remove(&digest);
        if self.entries.len() >= self.capacity {
            let now = self.last_now;
            let expired: Vec<Digest> = self
                .entries
                .iter()
                .filter(|(_, e)| e.identity.expires_at <= now)
                .map(|(d, _)| *d)
                .collect();
            for d in &expired {
                self.remove(d);
            }
        }
        while self.entries.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, digest);
        self.entries.insert(
            digest,
            Entry {
                provider,
                keys_generation,
                identity,
                sequence,
            },
        );
    }

    /// Number of cached tokens (including ones that expired but were not yet
    /// dropped).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn digest(&self, server: usize, token: &str) -> Digest {
        let key = (server, token);
        [self.keys[0].hash_one(key), self.keys[1].hash_one(key)]
    }

    fn remove(&mut self, digest: &Digest) {
        if let Some(entry) = self.entries.remove(digest) {
            self.order.remove(&entry.sequence);
        }
    }
}

/// The keys are already uniform keyed digests, so folding their words is a
/// good hash: no second SipHash per lookup.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // A `[u8; 32]` hashes as its length prefix, then its bytes.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::keys::jwks::KeySet;
    use crate::token::tests::{check, claims, key_sets, provider, sign, Signer, ISS, NOW};
    use crate::token::{verify, TokenError, TokenErrorKind};

    fn identity(expires_at: u64) -> Rc<Identity> {
        let mut id = Identity::anonymous(ISS);
        id.expires_at = expires_at;
        Rc::new(id)
    }

    #[test]
    fn a_cached_token_is_returned() {
        let mut cache = VerifiedTokenCache::new(8);
        cache.insert(0, "t1", 0, 3, identity(NOW + 10));
        assert_eq!(cache.get(0, "t1", NOW, &[3]), Some(identity(NOW + 10)));
        assert_eq!(cache.get(0, "t2", NOW, &[3]), None);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_expired_entry_is_not_returned_and_has_no_skew() {
        let mut cache = VerifiedTokenCache::new(8);
        cache.insert(0, "t1", 0, 0, identity(NOW + 10));
        assert!(cache.get(0, "t1", NOW + 9, &[0]).is_some());
        assert_eq!(cache.get(0, "t1", NOW + 10, &[0]), None);
        assert!(cache.is_empty(), "stale entries are dropped");
    }

    #[test]
    fn a_keys_generation_bump_invalidates_the_providers_tokens() {
        let mut cache = VerifiedTokenCache::new(8);
        cache.insert(0, "a", 0, 1, identity(NOW + 10));
        cache.insert(0, "b", 1, 1, identity(NOW + 10));
        assert_eq!(cache.get(0, "a", NOW, &[2, 1]), None);
        assert!(cache.get(0, "b", NOW, &[2, 1]).is_some());
        // A provider index the host no longer knows never hits.
        assert_eq!(cache.get(0, "b", NOW, &[2]), None);
    }

    #[test]
    fn when_full_expired_entries_go_first_then_the_oldest() {
        let mut cache = VerifiedTokenCache::new(3);
        cache.insert(0, "old", 0, 0, identity(NOW + 100));
        cache.insert(0, "short", 0, 0, identity(NOW + 5));
        cache.insert(0, "new", 0, 0, identity(NOW + 100));
        // Advance time past "short"'s exp (the host's lookups carry `now`).
        assert_eq!(cache.get(0, "missing", NOW + 6, &[0]), None);
        cache.insert(0, "fourth", 0, 0, identity(NOW + 100));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(0, "old", NOW + 6, &[0]).is_some());
        cache.insert(0, "fifth", 0, 0, identity(NOW + 100));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(0, "old", NOW + 6, &[0]), None, "oldest evicted");
        for t in ["new", "fourth", "fifth"] {
            assert!(cache.get(0, t, NOW + 6, &[0]).is_some(), "{t}");
        }
    }

    #[test]
    fn reinserting_a_token_replaces_it() {
        let mut cache = VerifiedTokenCache::new(2);
        cache.insert(0, "t", 0, 0, identity(NOW + 10));
        cache.insert(0, "t", 0, 1, identity(NOW + 20));
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.get(0, "t", NOW, &[1]).map(|i| i.expires_at),
            Some(NOW + 20)
        );
    }

    #[test]
    fn a_token_verified_for_one_server_is_not_known_to_another() {
        let mut cache = VerifiedTokenCache::new(4);
        cache.insert(0, "t", 0, 0, identity(NOW + 10));
        assert!(cache.get(0, "t", NOW, &[0]).is_some());
        assert_eq!(cache.get(1, "t", NOW, &[0]), None);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = VerifiedTokenCache::new(0);
        cache.insert(0, "t", 0, 0, identity(NOW + 10));
        assert_eq!(cache.get(0, "t", NOW, &[0]), None);
    }

    #[test]
    fn the_token_itself_is_not_stored() {
        let mut cache = VerifiedTokenCache::new(2);
        cache.insert(0, "secret-token", 0, 0, identity(NOW + 10));
        assert!(cache
            .entries
            .keys()
            .all(|k| *k == cache.digest(0, "secret-token")));
    }

    #[test]
    fn digests_are_keyed_per_cache() {
        let a = VerifiedTokenCache::new(1);
        let b = VerifiedTokenCache::new(1);
        assert_eq!(a.digest(0, "t"), a.digest(0, "t"));
        assert_ne!(
            a.digest(0, "t"),
            b.digest(0, "t"),
            "each VM has its own keys"
        );
        assert_ne!(a.digest(0, "t"), a.digest(0, "u"));
    }

    /// The host's request path: look up, else verify and remember successes.
    fn authenticate(
        cache: &mut VerifiedTokenCache,
        token: &str,
        sets: &[KeySet],
        generations: &[u64],
        now: u64,
    ) -> Result<Rc<Identity>, TokenError> {
        if let Some(identity) = cache.get(0, token, now, generations) {
            return Ok(identity);
        }
        let providers = [provider(ISS)];
        let keys: Vec<Option<&KeySet>> = sets.iter().map(Some).collect();
        let identity = Rc::new(verify(token, &providers, &keys, now)?);
        // Only an Identity can go in: failures have nothing to insert.
        cache.insert(0, token, 0, generations[0], Rc::clone(&identity));
        Ok(identity)
    }

    #[test]
    fn host_pattern_never_caches_failures_and_drops_tokens_of_removed_keys() {
        let sets = key_sets();
        let mut cache = VerifiedTokenCache::new(16);

        let good = sign(Signer::RS256, Some("rsa1"), claims());
        let expected = Rc::new(check(&good).unwrap());
        assert_eq!(
            authenticate(&mut cache, &good, &sets[..1], &[0], NOW),
            Ok(expected.clone())
        );
        assert_eq!(cache.len(), 1);
        assert_eq!(
            authenticate(&mut cache, &good, &sets[..1], &[0], NOW),
            Ok(expected)
        );

        let forged = sign(Signer::OtherRsa, Some("rsa1"), claims());
        for _ in 0..2 {
            let err = authenticate(&mut cache, &forged, &sets[..1], &[0], NOW).unwrap_err();
            assert_eq!(err.kind, TokenErrorKind::Signature);
        }
        assert_eq!(cache.len(), 1);

        // The key is rotated out; the host bumps the generation.
        let rotated = vec![KeySet::parse(&json!({"keys": []}).to_string()).unwrap().0];
        let err = authenticate(&mut cache, &good, &rotated, &[1], NOW).unwrap_err();
        assert_eq!(err.kind, TokenErrorKind::UnknownKey);

        // Past exp but within skew: verification would accept, the cache does not.
        let mut cache = VerifiedTokenCache::new(16);
        let short = sign(
            Signer::RS256,
            Some("rsa1"),
            json!({"iss": ISS, "aud": crate::token::tests::AUD, "exp": NOW + 1}),
        );
        assert!(authenticate(&mut cache, &short, &sets[..1], &[0], NOW).is_ok());
        assert_eq!(cache.get(0, &short, NOW + 30, &[0]), None);
    }
}
