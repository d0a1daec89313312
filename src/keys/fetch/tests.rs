//! The key fetcher across simulated workers: one shared-data store, each
//! worker with its own slots, calls answered by the test.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::json;

use super::*;

const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
const ISSUER: &str = "https://idp.example";

/// Shared data as Envoy keeps it: versioned entries; a write with a stale
/// version fails, a write to a missing entry always succeeds.
#[derive(Default)]
struct Store {
    entries: HashMap<String, (Vec<u8>, u32)>,
    version: u32,
}

/// One worker's view of the proxy.
struct Worker {
    store: Rc<RefCell<Store>>,
    /// Calls dispatched: (token, authority, path).
    calls: Vec<(u32, String, String)>,
    next_token: u32,
    counts: Vec<Counter>,
    logs: Vec<String>,
}

impl Worker {
    fn new(store: &Rc<RefCell<Store>>, first_token: u32) -> Worker {
        Worker {
            store: store.clone(),
            calls: Vec::new(),
            next_token: first_token,
            counts: Vec::new(),
            logs: Vec::new(),
        }
    }

    fn counted(&self, counter: Counter) -> usize {
        self.counts.iter().filter(|c| **c == counter).count()
    }
}

impl Proxy for Worker {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.store.borrow().entries.get(key) {
            Some((value, version)) => (Some(value.clone()), Some(*version)),
            None => (None, None),
        }
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut store = self.store.borrow_mut();
        if let (Some(cas), Some((_, version))) = (cas, store.entries.get(key)) {
            if *version != cas {
                return false;
            }
        }
        store.version += 1;
        let version = store.version;
        store
            .entries
            .insert(key.to_string(), (value.to_vec(), version));
        true
    }

    fn dispatch(
        &mut self,
        _cluster: &str,
        authority: &str,
        path: &str,
        _timeout_ms: u64,
    ) -> Result<u32, String> {
        self.next_token += 1;
        self.calls
            .push((self.next_token, authority.into(), path.into()));
        Ok(self.next_token)
    }

    fn log(&mut self, _level: Level, line: &str) {
        self.logs.push(line.to_string());
    }

    fn count(&mut self, counter: Counter) {
        self.counts.push(counter);
    }
}

fn policy(url: Option<&str>) -> Policy {
    let mut remote = json!({"cluster": "idp", "refresh_seconds": 300, "timeout_ms": 1000});
    if let Some(url) = url {
        remote["url"] = json!(url);
    }
    Policy::from_value(&json!({
        "resource": "https://mcp.example/mcp",
        "providers": [{"issuer": ISSUER, "jwks": {"remote": remote}}],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    }))
    .expect("test policy")
}

/// A worker with its slot, configured and past its first (configuring) tick.
fn started(
    policy: &Policy,
    store: &Rc<RefCell<Store>>,
    first_token: u32,
    now: u64,
) -> (Worker, KeySlot) {
    let mut worker = Worker::new(store, first_token);
    let mut slots = KeySlot::for_policy(policy, now, &mut worker);
    let mut slot = slots.remove(0);
    slot.tick(now, &mut worker);
    assert!(
        worker.calls.is_empty(),
        "no fetch from the configuring tick"
    );
    (worker, slot)
}

/// Two workers sharing one store, both started at 1 s, for a key set at a
/// fixed URL.
fn two_workers() -> ((Worker, KeySlot), (Worker, KeySlot)) {
    let policy = policy(Some("https://idp.example/certs"));
    let store = Rc::new(RefCell::new(Store::default()));
    (
        started(&policy, &store, 100, 1_000),
        started(&policy, &store, 200, 1_000),
    )
}

fn answer(worker: &mut Worker, slot: &mut KeySlot, now: u64, status: u32, body: &str) {
    let (token, _, _) = worker.calls.last().cloned().expect("a call to answer");
    assert!(slot.owns_call(token));
    slot.on_response(now, Some(status), None, body.as_bytes(), worker);
}

#[test]
fn two_workers_fetch_once_and_share_the_keys() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    slot_a.tick(1_100, &mut a);
    slot_b.tick(1_100, &mut b);
    assert_eq!(
        a.calls.len() + b.calls.len(),
        1,
        "exactly one worker fetches"
    );
    assert_eq!(a.calls[0].1, "idp.example");
    assert_eq!(a.calls[0].2, "/certs");
    assert!(slot_b.keys.is_none());

    answer(&mut a, &mut slot_a, 1_200, 200, JWKS);
    assert_eq!(slot_a.keys.as_ref().map(|k| k.len()), Some(1));
    assert_eq!(a.counted(Counter::JwksFetchOk), 1);
    slot_b.tick(1_300, &mut b);
    assert_eq!(
        slot_b.keys.as_ref().map(|k| k.len()),
        Some(1),
        "adopted from shared data"
    );
    assert_eq!(slot_b.generation, 1);
    assert!(b.calls.is_empty(), "the other worker never fetched");
    // Loading the same body again is no change.
    slot_b.tick(1_400, &mut b);
    assert_eq!(slot_b.generation, 1);
}

#[test]
fn a_configuration_canary_never_holds_the_lease() {
    let policy = policy(Some("https://idp.example/certs"));
    let store = Rc::new(RefCell::new(Store::default()));
    // The canary configures (one tick) and is thrown away.
    let canary = started(&policy, &store, 1, 1_000);
    drop(canary);
    let (mut worker, mut slot) = started(&policy, &store, 100, 1_000);
    slot.tick(1_050, &mut worker);
    assert_eq!(
        worker.calls.len(),
        1,
        "the lease was free for the first worker"
    );
}

#[test]
fn a_failing_issuer_is_backed_off_by_every_worker() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    slot_a.tick(1_100, &mut a);
    slot_b.keys_needed(1_100);
    assert!(slot_b.fetch_pending(), "b waits for a fetch");
    answer(&mut a, &mut slot_a, 1_200, 500, "oops");
    assert_eq!(a.counted(Counter::JwksFetchFailed), 1);
    assert!(slot_a.keys.is_none());
    // b learns of the failure: its waiting requests get their answer, and
    // it backs off instead of trying the failing issuer itself.
    slot_b.tick(1_300, &mut b);
    assert!(!slot_b.fetch_pending());
    assert!(b.calls.is_empty());
    // After the backoff (1 s after the first failure) one worker tries again.
    slot_a.tick(2_300, &mut a);
    slot_b.tick(2_300, &mut b);
    assert_eq!(a.calls.len() + b.calls.len(), 2);
}

#[test]
fn a_lease_whose_holder_went_silent_expires() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    slot_a.tick(1_100, &mut a);
    assert_eq!(a.calls.len(), 1);
    // a never answers (its worker is stuck); b may not fetch while the lease
    // holds (three timeouts and a second) ...
    slot_b.tick(4_000, &mut b);
    assert!(b.calls.is_empty());
    // ... and may once it ran out.
    slot_b.tick(5_200, &mut b);
    assert_eq!(b.calls.len(), 1);
}

#[test]
fn discovery_tries_rfc_8414_then_openid_then_fetches_the_key_set() {
    let policy = policy(None);
    let store = Rc::new(RefCell::new(Store::default()));
    let (mut w, mut slot) = started(&policy, &store, 100, 1_000);
    slot.tick(1_100, &mut w);
    assert_eq!(w.calls[0].2, "/.well-known/oauth-authorization-server");
    answer(&mut w, &mut slot, 1_200, 404, "");
    assert_eq!(w.calls[1].2, "/.well-known/openid-configuration");
    let doc = json!({"issuer": ISSUER, "jwks_uri": "https://keys.example/jwks"}).to_string();
    answer(&mut w, &mut slot, 1_300, 200, &doc);
    assert_eq!(
        (w.calls[2].1.as_str(), w.calls[2].2.as_str()),
        ("keys.example", "/jwks")
    );
    answer(&mut w, &mut slot, 1_400, 200, JWKS);
    assert!(slot.keys.is_some());
    // A metadata document naming another issuer is not trusted.
    let (mut v, mut other) = started(&policy, &Rc::new(RefCell::new(Store::default())), 1, 1_000);
    other.tick(1_100, &mut v);
    let foreign =
        json!({"issuer": "https://evil.example", "jwks_uri": "https://evil.example/jwks"});
    answer(&mut v, &mut other, 1_200, 200, &foreign.to_string());
    assert_eq!(
        v.calls[1].2, "/.well-known/openid-configuration",
        "moved on to the next document"
    );
}

#[test]
fn an_unusable_key_set_keeps_the_last_good_keys() {
    let policy = policy(Some("https://idp.example/certs"));
    let store = Rc::new(RefCell::new(Store::default()));
    let (mut w, mut slot) = started(&policy, &store, 100, 1_000);
    slot.tick(1_100, &mut w);
    answer(&mut w, &mut slot, 1_200, 200, JWKS);
    assert_eq!(slot.generation, 1);
    // The refresh comes back empty: a failure, not an empty key set.
    slot.tick(400_000, &mut w);
    answer(&mut w, &mut slot, 400_100, 200, r#"{"keys":[]}"#);
    assert_eq!(slot.generation, 1);
    assert!(slot.keys.is_some());
    assert_eq!(w.counted(Counter::JwksFetchFailed), 1);
    assert!(w
        .logs
        .iter()
        .any(|l| l.contains("keeping the last good keys")));
}

#[test]
fn unknown_kid_refetches_are_rate_limited_and_inline_keys_never_refetch() {
    let policy = policy(Some("https://idp.example/certs"));
    let store = Rc::new(RefCell::new(Store::default()));
    let (mut w, mut slot) = started(&policy, &store, 100, 1_000);
    slot.tick(1_100, &mut w);
    answer(&mut w, &mut slot, 1_200, 200, JWKS);
    assert!(slot.unknown_key(2_000));
    slot.tick(2_000, &mut w);
    answer(&mut w, &mut slot, 2_100, 200, JWKS);
    assert!(!slot.unknown_key(3_000), "at most one refetch per 30 s");
    assert!(slot.unknown_key(32_100));
    let inline = Policy::from_value(&json!({
        "resource": "https://mcp.example/mcp",
        "providers": [{"issuer": ISSUER, "jwks": {"inline": serde_json::from_str::<serde_json::Value>(JWKS).unwrap()}}],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    }))
    .unwrap();
    let mut slots = KeySlot::for_policy(&inline, 0, &mut w);
    assert!(!slots[0].unknown_key(100_000));
    assert!(!slots[0].fetch_pending());
}

#[test]
fn records_read_back_what_they_wrote() {
    let published = Published {
        fetched_at_ms: 7,
        max_age: Some(60),
        body: b"{\"keys\":[]}\nwith a newline".to_vec(),
    };
    assert_eq!(Published::decode(&published.encode()), Some(published));
    let failure = Failure {
        at_ms: 9,
        failures: 3,
    };
    assert_eq!(Failure::decode(&failure.encode()), Some(failure));
    assert_eq!(Failure::decode(b"garbage"), None);
    assert_eq!(Published::decode(b"x\n\n{}"), None);
}

/// Waits (`keys::wait`) against real slots: a request held in one worker
/// goes on when another worker's fetch brings keys or fails, and not before.
#[test]
fn a_held_request_goes_on_when_another_workers_fetch_ends() {
    use crate::keys::wait::{KeyProgress, KeyWaits};

    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    slot_a.tick(1_100, &mut a);
    // A request in b needs keys: b asks for a fetch (a holds the lease).
    slot_b.keys_needed(1_100);
    let mut waits = KeyWaits::new();
    let progress = |slot: &KeySlot| KeyProgress::of(std::slice::from_ref(slot));
    waits.add("first", 0, &progress(&slot_b), 1_100);
    slot_b.tick(1_150, &mut b);
    assert!(b.calls.is_empty(), "a holds the lease");
    assert!(waits
        .take_settled(&progress(&slot_b), 1_150, |_| false)
        .is_empty());
    // a's fetch fails; b hears of it on its next tick: the request goes on
    // (to be refused), long before its deadline.
    answer(&mut a, &mut slot_a, 1_200, 500, "oops");
    assert!(waits
        .take_settled(&progress(&slot_b), 1_250, |_| false)
        .is_empty());
    slot_b.tick(1_300, &mut b);
    assert_eq!(
        waits.take_settled(&progress(&slot_b), 1_300, |_| false),
        ["first"]
    );

    // After the backoff a fetch succeeds: a second request goes on when b
    // adopts the keys.
    slot_b.keys_needed(2_300);
    waits.add("second", 0, &progress(&slot_b), 2_300);
    slot_a.tick(2_300, &mut a);
    slot_b.tick(2_300, &mut b);
    let (fetcher, fetcher_slot) = if a.calls.len() > 1 {
        (&mut a, &mut slot_a)
    } else {
        (&mut b, &mut slot_b)
    };
    answer(fetcher, fetcher_slot, 2_400, 200, JWKS);
    slot_b.tick(2_500, &mut b);
    assert!(slot_b.keys.is_some());
    assert_eq!(
        waits.take_settled(&progress(&slot_b), 2_500, |_| false),
        ["second"]
    );
}
