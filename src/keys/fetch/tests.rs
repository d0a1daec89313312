//! The key fetcher across simulated workers: one shared-data store, each
//! worker with its own slots, running the fetcher's effects as the host
//! does; calls answered by the test.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::shared_data::{SharedData, SharedMap};

const JWKS: &str = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
const ISSUER: &str = "https://idp.example";

/// One worker of the proxy: the shared data of all workers (versioned
/// entries as Envoy keeps them), its calls, counters and log.
struct Worker {
    shared: Rc<RefCell<SharedMap>>,
    /// Calls dispatched: (token, authority, path).
    calls: Vec<(u32, String, String)>,
    next_token: u32,
    /// Calls cannot start (as through a cluster Envoy does not know).
    calls_refused: bool,
    counts: Vec<Counter>,
    logs: Vec<String>,
    keys_changed: usize,
}

impl Worker {
    fn new(shared: &Rc<RefCell<SharedMap>>, first_token: u32) -> Worker {
        Worker {
            shared: shared.clone(),
            calls: Vec::new(),
            next_token: first_token,
            calls_refused: false,
            counts: Vec::new(),
            logs: Vec::new(),
            keys_changed: 0,
        }
    }

    fn counted(&self, counter: Counter) -> usize {
        self.counts.iter().filter(|c| **c == counter).count()
    }

    fn snapshot(&self, slot: &KeySlot) -> Snapshot {
        Snapshot::read(slot, &*self.shared.borrow())
    }

    fn tick(&mut self, slot: &mut KeySlot, now: u64) {
        let effects = slot.tick(now, &self.snapshot(slot));
        self.run(slot, now, effects);
    }

    /// Answers the last call dispatched.
    fn answer(&mut self, slot: &mut KeySlot, now: u64, status: u32, body: &str) {
        let (token, _, _) = self.calls.last().cloned().expect("a call to answer");
        assert!(slot.owns_call(token));
        let effects = slot.on_response(now, Some(status), None, body.as_bytes());
        self.run(slot, now, effects);
    }

    /// Runs the effects as the host does (`host::keys::run`).
    fn run(&mut self, slot: &mut KeySlot, now: u64, effects: Vec<Effect>) {
        let mut queue = VecDeque::from(effects);
        while let Some(effect) = queue.pop_front() {
            let shared = self.shared.clone();
            let mut shared = shared.borrow_mut();
            let outcome = match effect {
                Effect::Dispatch(fetch) => Some(Outcome::Dispatched(self.dispatch(fetch))),
                Effect::ClaimLease { write, cas } => Some(Outcome::LeaseClaimed(
                    shared.shared_set(&write.key, &write.value, Some(cas)),
                )),
                Effect::ReleaseLease(write) => {
                    shared.shared_set(&write.key, &write.value, None);
                    None
                }
                Effect::Publish(write) => {
                    shared.shared_set(&write.key, &write.value, None);
                    Some(Outcome::Published)
                }
                Effect::RecordFailure(write) => {
                    shared.shared_set(&write.key, &write.value, None);
                    Some(Outcome::FailureRecorded)
                }
                Effect::Log(_, line) => {
                    self.logs.push(line);
                    None
                }
                Effect::Count(counter) => {
                    self.counts.push(counter);
                    None
                }
                Effect::KeysChanged => {
                    self.keys_changed += 1;
                    None
                }
            };
            drop(shared);
            if let Some(outcome) = outcome {
                let answer = slot.on_outcome(now, outcome, &self.snapshot(slot));
                for effect in answer.into_iter().rev() {
                    queue.push_front(effect);
                }
            }
        }
    }

    fn dispatch(&mut self, fetch: Fetch) -> Result<u32, String> {
        if self.calls_refused {
            return Err("status 1".into());
        }
        self.next_token += 1;
        self.calls
            .push((self.next_token, fetch.authority, fetch.path));
        Ok(self.next_token)
    }

    fn lease(&self, slot: &KeySlot) -> Option<Vec<u8>> {
        self.snapshot(slot).lease.0
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
    shared: &Rc<RefCell<SharedMap>>,
    first_token: u32,
    now: u64,
) -> (Worker, KeySlot) {
    let mut worker = Worker::new(shared, first_token);
    let mut slots = KeySlot::for_policy(policy, now);
    let mut slot = slots.remove(0);
    worker.tick(&mut slot, now);
    assert!(
        worker.calls.is_empty(),
        "no fetch from the configuring tick"
    );
    (worker, slot)
}

/// Two workers of one Envoy (shared data in common) fetching from a remote
/// key set URL, both past their first tick.
fn two_workers() -> ((Worker, KeySlot), (Worker, KeySlot)) {
    let policy = policy(Some("https://idp.example/certs"));
    let shared = Rc::new(RefCell::new(SharedMap::default()));
    (
        started(&policy, &shared, 100, 1_000),
        started(&policy, &shared, 200, 1_000),
    )
}

/// One such worker alone.
fn one_worker() -> (Worker, KeySlot) {
    let policy = policy(Some("https://idp.example/certs"));
    started(
        &policy,
        &Rc::new(RefCell::new(SharedMap::default())),
        100,
        1_000,
    )
}

#[test]
fn two_workers_fetch_once_and_share_the_keys() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    a.tick(&mut slot_a, 1_100);
    b.tick(&mut slot_b, 1_100);
    assert_eq!(
        a.calls.len() + b.calls.len(),
        1,
        "exactly one worker fetches"
    );
    assert_eq!(a.calls[0].1, "idp.example");
    assert_eq!(a.calls[0].2, "/certs");
    assert!(slot_b.keys.is_none());

    a.answer(&mut slot_a, 1_200, 200, JWKS);
    assert_eq!(slot_a.keys.as_ref().map(|k| k.len()), Some(1));
    assert_eq!(a.counted(Counter::JwksFetchOk), 1);
    assert_eq!(a.keys_changed, 1);
    assert_eq!(a.lease(&slot_a).as_deref(), Some(&b"0"[..]), "released");
    b.tick(&mut slot_b, 1_300);
    assert_eq!(
        slot_b.keys.as_ref().map(|k| k.len()),
        Some(1),
        "adopted from shared data"
    );
    assert_eq!((slot_b.generation, b.keys_changed), (1, 1));
    assert!(b.calls.is_empty(), "the other worker never fetched");
    // Loading the same body again is no change.
    b.tick(&mut slot_b, 1_400);
    assert_eq!((slot_b.generation, b.keys_changed), (1, 1));
}

#[test]
fn a_configuration_canary_never_holds_the_lease() {
    let policy = policy(Some("https://idp.example/certs"));
    let shared = Rc::new(RefCell::new(SharedMap::default()));
    // The canary configures (one tick, which creates the lease free) and is
    // thrown away.
    let (canary, slot) = started(&policy, &shared, 1, 1_000);
    assert_eq!(canary.lease(&slot).as_deref(), Some(&b"0"[..]));
    drop((canary, slot));
    let (mut worker, mut slot) = started(&policy, &shared, 100, 1_000);
    worker.tick(&mut slot, 1_050);
    assert_eq!(
        worker.calls.len(),
        1,
        "the lease was free for the first worker"
    );
}

#[test]
fn a_failing_issuer_is_backed_off_by_every_worker() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    a.tick(&mut slot_a, 1_100);
    slot_b.keys_needed(1_100);
    assert!(slot_b.fetch_pending(), "b waits for a fetch");
    a.answer(&mut slot_a, 1_200, 500, "oops");
    assert_eq!(a.counted(Counter::JwksFetchFailed), 1);
    assert!(slot_a.keys.is_none());
    // b learns of the failure: its waiting requests get their answer, and
    // it backs off instead of trying the failing issuer itself.
    b.tick(&mut slot_b, 1_300);
    assert!(!slot_b.fetch_pending());
    assert!(b.calls.is_empty());
    // After the backoff (1 s after the first failure) one worker tries again.
    a.tick(&mut slot_a, 2_300);
    b.tick(&mut slot_b, 2_300);
    assert_eq!(a.calls.len() + b.calls.len(), 2);
}

#[test]
fn a_fetch_that_cannot_start_is_a_failure_every_worker_backs_off_from() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    a.calls_refused = true;
    a.tick(&mut slot_a, 1_100);
    assert_eq!(a.counted(Counter::JwksFetchFailed), 1);
    assert!(a.logs.iter().any(|l| l.contains("could not start")));
    assert!(!slot_a.fetch_pending());
    assert_eq!(a.lease(&slot_a).as_deref(), Some(&b"0"[..]), "released");
    // b adopts the failure and backs off; a, once its backoff ran out,
    // tries again.
    b.tick(&mut slot_b, 1_300);
    assert!(b.calls.is_empty());
    a.calls_refused = false;
    a.tick(&mut slot_a, 2_100);
    assert_eq!(a.calls.len(), 1);
}

#[test]
fn a_lease_whose_holder_went_silent_expires() {
    let ((mut a, mut slot_a), (mut b, mut slot_b)) = two_workers();
    a.tick(&mut slot_a, 1_100);
    assert_eq!(a.calls.len(), 1);
    // a never answers (its worker is stuck); b may not fetch while the lease
    // holds (three timeouts and a second) ...
    b.tick(&mut slot_b, 4_000);
    assert!(b.calls.is_empty());
    // ... and may once it ran out.
    b.tick(&mut slot_b, 5_200);
    assert_eq!(b.calls.len(), 1);
}

#[test]
fn discovery_tries_rfc_8414_then_openid_then_fetches_the_key_set() {
    let policy = policy(None);
    let shared = Rc::new(RefCell::new(SharedMap::default()));
    let (mut w, mut slot) = started(&policy, &shared, 100, 1_000);
    w.tick(&mut slot, 1_100);
    assert_eq!(w.calls[0].2, "/.well-known/oauth-authorization-server");
    w.answer(&mut slot, 1_200, 404, "");
    assert_eq!(w.calls[1].2, "/.well-known/openid-configuration");
    let doc = json!({"issuer": ISSUER, "jwks_uri": "https://keys.example/jwks"}).to_string();
    w.answer(&mut slot, 1_300, 200, &doc);
    assert_eq!(
        (w.calls[2].1.as_str(), w.calls[2].2.as_str()),
        ("keys.example", "/jwks")
    );
    w.answer(&mut slot, 1_400, 200, JWKS);
    assert!(slot.keys.is_some());
    // A metadata document naming another issuer is not trusted.
    let (mut v, mut other) = started(
        &policy,
        &Rc::new(RefCell::new(SharedMap::default())),
        1,
        1_000,
    );
    v.tick(&mut other, 1_100);
    let foreign =
        json!({"issuer": "https://evil.example", "jwks_uri": "https://evil.example/jwks"});
    v.answer(&mut other, 1_200, 200, &foreign.to_string());
    assert_eq!(
        v.calls[1].2, "/.well-known/openid-configuration",
        "moved on to the next document"
    );
}

#[test]
fn an_unusable_key_set_keeps_the_last_good_keys() {
    let (mut w, mut slot) = one_worker();
    w.tick(&mut slot, 1_100);
    w.answer(&mut slot, 1_200, 200, JWKS);
    assert_eq!(slot.generation, 1);
    // The refresh comes back empty: a failure, not an empty key set.
    w.tick(&mut slot, 400_000);
    w.answer(&mut slot, 400_100, 200, r#"{"keys":[]}"#);
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
    let (mut w, mut slot) = one_worker();
    w.tick(&mut slot, 1_100);
    w.answer(&mut slot, 1_200, 200, JWKS);
    assert!(slot.unknown_key(2_000));
    w.tick(&mut slot, 2_000);
    w.answer(&mut slot, 2_100, 200, JWKS);
    assert!(!slot.unknown_key(3_000), "at most one refetch per 30 s");
    assert!(slot.unknown_key(32_100));
    let inline = Policy::from_value(&json!({
        "resource": "https://mcp.example/mcp",
        "providers": [{"issuer": ISSUER, "jwks": {"inline": serde_json::from_str::<serde_json::Value>(JWKS).unwrap()}}],
        "rules": [{"effect": "allow", "methods": ["*"]}]
    }))
    .unwrap();
    let mut slots = KeySlot::for_policy(&inline, 0);
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
    a.tick(&mut slot_a, 1_100);
    // A request in b needs keys: b asks for a fetch (a holds the lease).
    slot_b.keys_needed(1_100);
    let mut waits = KeyWaits::new();
    let progress = |slot: &KeySlot| KeyProgress::of(std::slice::from_ref(slot));
    waits.add("first", 0, &progress(&slot_b), 1_100);
    b.tick(&mut slot_b, 1_150);
    assert!(b.calls.is_empty(), "a holds the lease");
    assert!(waits
        .take_settled(&progress(&slot_b), 1_150, |_| false)
        .is_empty());
    // a's fetch fails; b hears of it on its next tick: the request goes on
    // (to be refused), long before its deadline.
    a.answer(&mut slot_a, 1_200, 500, "oops");
    assert!(waits
        .take_settled(&progress(&slot_b), 1_250, |_| false)
        .is_empty());
    b.tick(&mut slot_b, 1_300);
    assert_eq!(
        waits.take_settled(&progress(&slot_b), 1_300, |_| false),
        ["first"]
    );

    // After the backoff a fetch succeeds: a second request goes on when b
    // adopts the keys.
    slot_b.keys_needed(2_300);
    waits.add("second", 0, &progress(&slot_b), 2_300);
    a.tick(&mut slot_a, 2_300);
    b.tick(&mut slot_b, 2_300);
    let (fetcher, fetcher_slot) = if a.calls.len() > 1 {
        (&mut a, &mut slot_a)
    } else {
        (&mut b, &mut slot_b)
    };
    fetcher.answer(fetcher_slot, 2_400, 200, JWKS);
    b.tick(&mut slot_b, 2_500);
    assert!(slot_b.keys.is_some());
    assert_eq!(
        waits.take_settled(&progress(&slot_b), 2_500, |_| false),
        ["second"]
    );
}
