//! Answers of the authorization server shared by every worker of the proxy
//! (proxy-wasm shared data): one call per token at a time, its answer reused
//! by all, positive answers until they lapse, negative ones briefly,
//! failures for a second.
//!
//! A fixed table of slots per purpose, so that a flood of made-up tokens
//! cannot grow shared data without bound: a token's slot is picked by a
//! keyed digest of it (HMAC-SHA256 under a random key the proxy's workers
//! share and nothing else sees), and the slot holds that digest, never the
//! token. Two tokens in one slot take turns (the later answer evicts the
//! earlier); one slot's call under way is the single flight: the worker that
//! claims it (compare-and-swap) calls, every other request for that token
//! waits for its answer.

use sha2::{Digest as _, Sha256};

use super::Purpose;
use crate::shared_data::SharedData;

/// Slots per purpose.
pub const SLOTS: usize = 1024;

/// A keyed digest of a token (and what else a cached answer depends on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// HMAC-SHA256 under `key` of `parts`, each length-prefixed so no two
    /// lists of parts collide.
    pub fn of(key: &[u8; 32], purpose: Purpose, parts: &[&str]) -> Digest {
        let mut message = Vec::new();
        for part in std::iter::once(purpose.name()).chain(parts.iter().copied()) {
            message.extend_from_slice(&(part.len() as u64).to_be_bytes());
            message.extend_from_slice(part.as_bytes());
        }
        Digest(hmac_sha256(key, &message))
    }

    fn hex(&self) -> String {
        self.0[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The digest's first 128 bits as text (hex).
    pub fn text(&self) -> String {
        self.hex()
    }

    fn slot(&self) -> usize {
        usize::from(u16::from_be_bytes([self.0[30], self.0[31]])) % SLOTS
    }
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer);
    out
}

const DIGEST_KEY: &str = "mcp_authz.digest_key";

/// The proxy's digest key: the one in shared data, or `fresh` published
/// as it (the first VM to configure, on Envoy's main thread, does so before
/// any worker configures).
pub fn digest_key(shared: &mut dyn SharedData, fresh: [u8; 32]) -> [u8; 32] {
    let read = |shared: &dyn SharedData| {
        shared
            .shared_get(DIGEST_KEY)
            .0
            .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
    };
    if let Some(key) = read(shared) {
        return key;
    }
    shared.shared_set(DIGEST_KEY, &fresh, None);
    read(shared).unwrap_or(fresh)
}

fn slot_key(purpose: Purpose, slot: usize) -> String {
    format!("mcp_authz.{}.{slot}", purpose.name())
}

/// Creates the slots of `purpose` that do not exist yet. Compare-and-swap
/// only holds on entries that exist (a write to a missing one always
/// succeeds), so every slot is made before any worker claims one.
pub fn prepare(shared: &mut dyn SharedData, purpose: Purpose) {
    for slot in 0..SLOTS {
        let key = slot_key(purpose, slot);
        if shared.shared_get(&key).1.is_none() {
            shared.shared_set(&key, b"", None);
        }
    }
}

/// What a slot says about one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A usable answer (its payload).
    Ready(Vec<u8>),
    /// A negative answer (its payload).
    Refused(Vec<u8>),
    /// The last call failed, a moment ago.
    Failed,
    /// Another request's call for this token is under way: wait for it.
    Pending,
    /// This request claimed the call: make it, then publish the answer.
    Claimed,
    /// The slot is busy with another token's call (or shared data is not
    /// there): call without sharing.
    Unshared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Ready,
    Refused,
    Failed,
}

impl State {
    fn tag(self) -> u8 {
        match self {
            State::Pending => b'P',
            State::Ready => b'R',
            State::Refused => b'N',
            State::Failed => b'F',
        }
    }
}

struct Record {
    digest: String,
    state: State,
    until_ms: u64,
    payload: Vec<u8>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.digest,
            self.state.tag() as char,
            self.until_ms
        )
        .into_bytes();
        out.extend_from_slice(&self.payload);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Record> {
        let mut parts = bytes.splitn(4, |b| *b == b'\n');
        let digest = String::from_utf8(parts.next()?.to_vec()).ok()?;
        let state = match parts.next()? {
            b"P" => State::Pending,
            b"R" => State::Ready,
            b"N" => State::Refused,
            b"F" => State::Failed,
            _ => return None,
        };
        let until_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        Some(Record {
            digest,
            state,
            until_ms,
            payload: parts.next()?.to_vec(),
        })
    }
}

/// Looks the token up; when nobody answers for it, claims its call for
/// `lease_ms` (after which another request may claim it: a worker that
/// claimed and went away does not block the token for longer).
pub fn look_up(
    shared: &mut dyn SharedData,
    purpose: Purpose,
    digest: &Digest,
    now_ms: u64,
    lease_ms: u64,
) -> Lookup {
    let key = slot_key(purpose, digest.slot());
    let hex = digest.hex();
    let (value, cas) = shared.shared_get(&key);
    let Some(cas) = cas else {
        return Lookup::Unshared;
    };
    let current = value.as_deref().and_then(Record::decode);
    if let Some(record) = &current {
        if record.until_ms > now_ms {
            if record.digest == hex {
                return match record.state {
                    State::Ready => Lookup::Ready(record.payload.clone()),
                    State::Refused => Lookup::Refused(record.payload.clone()),
                    State::Failed => Lookup::Failed,
                    State::Pending => Lookup::Pending,
                };
            }
            if record.state == State::Pending {
                return Lookup::Unshared;
            }
        }
    }
    let claim = Record {
        digest: hex,
        state: State::Pending,
        until_ms: now_ms.saturating_add(lease_ms),
        payload: Vec::new(),
    };
    if shared.shared_set(&key, &claim.encode(), Some(cas)) {
        Lookup::Claimed
    } else {
        // Another worker wrote first: whatever it wrote decides.
        match look_up_once(shared, &key, &claim.digest, now_ms) {
            Some(lookup) => lookup,
            None => Lookup::Unshared,
        }
    }
}

fn look_up_once(shared: &dyn SharedData, key: &str, hex: &str, now_ms: u64) -> Option<Lookup> {
    let record = Record::decode(&shared.shared_get(key).0?)?;
    if record.digest != hex || record.until_ms <= now_ms {
        return None;
    }
    Some(match record.state {
        State::Ready => Lookup::Ready(record.payload),
        State::Refused => Lookup::Refused(record.payload),
        State::Failed => Lookup::Failed,
        State::Pending => Lookup::Pending,
    })
}

/// What a finished call leaves for the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready {
        payload: Vec<u8>,
        until_ms: u64,
    },
    Refused {
        payload: Vec<u8>,
        until_ms: u64,
    },
    Failed {
        until_ms: u64,
    },
    /// Nothing to keep (the call never happened): the claim is released.
    Released,
}

/// Publishes a call's outcome in the token's slot, unless another token's
/// call holds the slot now.
pub fn publish(
    shared: &mut dyn SharedData,
    purpose: Purpose,
    digest: &Digest,
    outcome: Outcome,
    now_ms: u64,
) {
    let key = slot_key(purpose, digest.slot());
    let (value, cas) = shared.shared_get(&key);
    let Some(cas) = cas else {
        return;
    };
    let hex = digest.hex();
    let busy = value
        .as_deref()
        .and_then(Record::decode)
        .is_some_and(|r| r.state == State::Pending && r.digest != hex && r.until_ms > now_ms);
    if busy {
        return;
    }
    let (state, until_ms, payload) = match outcome {
        Outcome::Ready { payload, until_ms } => (State::Ready, until_ms, payload),
        Outcome::Refused { payload, until_ms } => (State::Refused, until_ms, payload),
        Outcome::Failed { until_ms } => (State::Failed, until_ms, Vec::new()),
        Outcome::Released => (State::Failed, 0, Vec::new()),
    };
    let record = Record {
        digest: hex,
        state,
        until_ms,
        payload,
    };
    shared.shared_set(&key, &record.encode(), Some(cas));
}

/// Where a discovered endpoint is remembered, for every worker.
fn endpoint_key(purpose: Purpose, issuer: &str, cluster: &str) -> String {
    format!("mcp_authz.endpoint.{}.{issuer}|{cluster}", purpose.name())
}

/// An endpoint discovered before (by any worker).
pub fn endpoint(
    shared: &dyn SharedData,
    purpose: Purpose,
    issuer: &str,
    cluster: &str,
) -> Option<String> {
    let value = shared
        .shared_get(&endpoint_key(purpose, issuer, cluster))
        .0?;
    String::from_utf8(value).ok().filter(|url| !url.is_empty())
}

/// Remembers a discovered endpoint.
pub fn remember_endpoint(
    shared: &mut dyn SharedData,
    purpose: Purpose,
    issuer: &str,
    cluster: &str,
    url: &str,
) {
    shared.shared_set(
        &endpoint_key(purpose, issuer, cluster),
        url.as_bytes(),
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_data::SharedMap;

    const KEY: [u8; 32] = [7; 32];
    const NOW: u64 = 1_750_000_000_000;

    fn prepared() -> SharedMap {
        let mut shared = SharedMap::default();
        prepare(&mut shared, Purpose::Introspection);
        shared
    }

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // RFC 4231 test case 2's key and message, the key zero-padded to
        // 32 bytes (the same MAC by HMAC's definition); Python's hmac agrees.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn digests_depend_on_key_purpose_and_every_part() {
        let d = Digest::of(&KEY, Purpose::Introspection, &["t"]);
        assert_eq!(d, Digest::of(&KEY, Purpose::Introspection, &["t"]));
        assert_ne!(d, Digest::of(&[8; 32], Purpose::Introspection, &["t"]));
        assert_ne!(d, Digest::of(&KEY, Purpose::TokenExchange, &["t"]));
        assert_ne!(
            Digest::of(&KEY, Purpose::TokenExchange, &["ab", "c"]),
            Digest::of(&KEY, Purpose::TokenExchange, &["a", "bc"])
        );
    }

    #[test]
    fn one_claim_per_token_then_everyone_reads_the_answer() {
        let mut shared = prepared();
        let d = Digest::of(&KEY, Purpose::Introspection, &["tok"]);
        let look = |s: &mut SharedMap, now| look_up(s, Purpose::Introspection, &d, now, 3000);
        assert_eq!(look(&mut shared, NOW), Lookup::Claimed);
        assert_eq!(
            look(&mut shared, NOW),
            Lookup::Pending,
            "a second worker waits"
        );
        publish(
            &mut shared,
            Purpose::Introspection,
            &d,
            Outcome::Ready {
                payload: b"claims".to_vec(),
                until_ms: NOW + 60_000,
            },
            NOW,
        );
        assert_eq!(
            look(&mut shared, NOW + 1),
            Lookup::Ready(b"claims".to_vec())
        );
        assert_eq!(
            look(&mut shared, NOW + 60_000),
            Lookup::Claimed,
            "lapsed: called again"
        );
        assert!(!shared.contains(b"tok"), "the token itself is never stored");
    }

    #[test]
    fn an_abandoned_claim_lapses_after_its_lease() {
        let mut shared = prepared();
        let d = Digest::of(&KEY, Purpose::Introspection, &["tok"]);
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW, 3000),
            Lookup::Claimed
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW + 2999, 3000),
            Lookup::Pending
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW + 3000, 3000),
            Lookup::Claimed
        );
    }

    #[test]
    fn failures_and_refusals_are_remembered_for_their_time() {
        let mut shared = prepared();
        let d = Digest::of(&KEY, Purpose::Introspection, &["tok"]);
        look_up(&mut shared, Purpose::Introspection, &d, NOW, 3000);
        publish(
            &mut shared,
            Purpose::Introspection,
            &d,
            Outcome::Failed {
                until_ms: NOW + 1000,
            },
            NOW,
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW + 999, 3000),
            Lookup::Failed
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW + 1000, 3000),
            Lookup::Claimed
        );
        publish(
            &mut shared,
            Purpose::Introspection,
            &d,
            Outcome::Refused {
                payload: b"inactive".to_vec(),
                until_ms: NOW + 6000,
            },
            NOW,
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW + 5000, 3000),
            Lookup::Refused(b"inactive".to_vec())
        );
    }

    /// Finds two tokens whose digests share a slot.
    fn colliding() -> (Digest, Digest) {
        let first = Digest::of(&KEY, Purpose::Introspection, &["t0"]);
        for i in 1.. {
            let other = Digest::of(&KEY, Purpose::Introspection, &[&format!("t{i}")]);
            if other.slot() == first.slot() {
                return (first, other);
            }
        }
        unreachable!()
    }

    #[test]
    fn a_slot_busy_with_another_tokens_call_is_left_alone() {
        let mut shared = prepared();
        let (a, b) = colliding();
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &a, NOW, 3000),
            Lookup::Claimed
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &b, NOW, 3000),
            Lookup::Unshared
        );
        publish(
            &mut shared,
            Purpose::Introspection,
            &b,
            Outcome::Ready {
                payload: b"b".to_vec(),
                until_ms: NOW + 9000,
            },
            NOW,
        );
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &a, NOW, 3000),
            Lookup::Pending
        );
        publish(
            &mut shared,
            Purpose::Introspection,
            &a,
            Outcome::Ready {
                payload: b"a".to_vec(),
                until_ms: NOW + 9000,
            },
            NOW,
        );
        // An answer evicts another token's answer.
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &b, NOW, 3000),
            Lookup::Claimed
        );
    }

    #[test]
    fn without_prepared_slots_nothing_is_shared() {
        let mut shared = SharedMap::default();
        let d = Digest::of(&KEY, Purpose::Introspection, &["tok"]);
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW, 3000),
            Lookup::Unshared
        );
    }

    #[test]
    fn the_digest_key_is_made_once_and_shared() {
        let mut shared = SharedMap::default();
        let first = digest_key(&mut shared, [1; 32]);
        assert_eq!(first, [1; 32]);
        assert_eq!(
            digest_key(&mut shared, [2; 32]),
            [1; 32],
            "a later VM adopts it"
        );
    }

    #[test]
    fn garbage_in_a_slot_is_overwritten_not_trusted() {
        let mut shared = prepared();
        let d = Digest::of(&KEY, Purpose::Introspection, &["tok"]);
        let key = slot_key(Purpose::Introspection, d.slot());
        shared.shared_set(&key, b"\xff\xfe garbage", None);
        assert_eq!(
            look_up(&mut shared, Purpose::Introspection, &d, NOW, 3000),
            Lookup::Claimed
        );
    }
}
