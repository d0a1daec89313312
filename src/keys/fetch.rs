//! Remote key sets, fetched through an Envoy cluster by one worker at a time
//! and shared with the others: the steps (discovery documents, then the key
//! set), the lease that elects the fetching worker, and the records published
//! to shared data (keys, failures). When a request waiting for them may go
//! on is `super::wait`.
//!
//! Pure logic: each entry point takes the time and what happened (a tick
//! with a [`Snapshot`] of the slot's shared-data entries, the answer to a
//! call) and returns [`Effect`]s for the host to carry out in order:
//! dispatch this fetch, claim or release the lease, publish these bytes,
//! record this failure, log this, count this, keys changed. The effects
//! whose result matters (a claim's compare-and-swap, a dispatch's call
//! token, the version a write left) are answered with an [`Outcome`], which
//! may bring more effects. So the whole exchange between workers runs
//! natively in tests (two simulated workers, a configuration canary, a
//! failing issuer); the host (`host::keys`) runs the effects with
//! proxy-wasm calls. This mirrors Envoy's own split of `jwks_async_fetcher`
//! and `jwks_cache`.

use std::rc::Rc;

use super::discovery;
use super::jwks::KeySet;
use super::schedule::{self, Schedule};
use crate::config::{JwksSource, Policy, RemoteJwks};
use crate::counters::Counter;
use crate::exchange::Level;

mod effects;
mod records;

pub use effects::{Effect, Entry, Fetch, Outcome, Snapshot, Write};
use records::{lease_value, Failure, Published};

/// One provider's keys in this worker.
pub struct KeySlot {
    pub keys: Option<Rc<KeySet>>,
    /// Changes whenever `keys` changes, so cached verifications made with
    /// older keys stop counting.
    pub generation: u64,
    remote: Option<Remote>,
}

struct Remote {
    config: RemoteJwks,
    issuer: String,
    schedule: Schedule,
    /// Shared-data keys: the published key set, the fetch lease, the last
    /// failed fetch.
    published_key: String,
    lease_key: String,
    failure_key: String,
    /// The shared-data versions this worker last loaded.
    loaded_cas: Option<u32>,
    loaded_failure_cas: Option<u32>,
    /// The key set body last loaded, to tell a change from a refresh.
    loaded_body: Option<Vec<u8>>,
    jwks_uri: Option<String>,
    in_flight: Option<InFlight>,
    /// Whether `tick` ran before. Its first run comes from configuring,
    /// which Envoy also does in a throwaway "configuration canary" VM on the
    /// main thread: a fetch started there is cancelled with the canary but
    /// would keep the lease for its whole term, delaying every worker's
    /// first fetch by seconds. So fetches start from the first timer tick on.
    ticked: bool,
}

/// A fetch under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    /// The call's token, once the host started it.
    token: Option<u32>,
    step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Fetching the n-th discovery document.
    Discover(usize),
    Jwks,
}

impl KeySlot {
    /// The slots of a policy: inline keys ready, remote ones empty and due.
    pub fn for_policy(policy: &Policy, now_ms: u64) -> Vec<KeySlot> {
        policy
            .providers
            .iter()
            .map(|p| match &p.jwks {
                // Introspected only: no keys, ever.
                None => KeySlot {
                    keys: None,
                    generation: 0,
                    remote: None,
                },
                Some(JwksSource::Inline(keys)) => KeySlot {
                    keys: Some(Rc::new(keys.clone())),
                    generation: 1,
                    remote: None,
                },
                Some(JwksSource::Remote(remote)) => {
                    // Keys in shared data are per issuer and source, so two
                    // listeners trusting the same issuer share one fetch.
                    let id = format!(
                        "{}|{}|{}",
                        p.issuer,
                        remote.cluster,
                        remote.url.as_deref().unwrap_or("discover")
                    );
                    KeySlot {
                        keys: None,
                        generation: 0,
                        remote: Some(Remote {
                            config: remote.clone(),
                            issuer: p.issuer.clone(),
                            schedule: Schedule::new(remote.refresh_seconds, now_ms),
                            published_key: format!("mcp_authz.jwks.{id}"),
                            lease_key: format!("mcp_authz.lease.{id}"),
                            failure_key: format!("mcp_authz.failure.{id}"),
                            loaded_cas: None,
                            loaded_failure_cas: None,
                            loaded_body: None,
                            jwks_uri: remote.url.clone(),
                            in_flight: None,
                            ticked: false,
                        }),
                    }
                }
            })
            .collect()
    }

    /// How long a request may wait for this provider's fetch.
    pub fn wait_ms(&self) -> u64 {
        self.remote
            .as_ref()
            .map(|r| r.config.timeout_ms * 2 + 500)
            .unwrap_or(0)
    }

    /// Whether a fetch is asked for or under way.
    pub fn fetch_pending(&self) -> bool {
        self.remote
            .as_ref()
            .is_some_and(|r| r.in_flight.is_some() || r.schedule.wanted())
    }

    /// A request needs keys that were never fetched: ask for a fetch now.
    pub fn keys_needed(&mut self, now_ms: u64) {
        if let Some(r) = self.remote.as_mut() {
            r.schedule.keys_needed(now_ms);
        }
    }

    /// A token named a key this set lacks. Whether a refetch was granted
    /// (rate-limited per provider; inline keys are never refetched).
    pub fn unknown_key(&mut self, now_ms: u64) -> bool {
        match self.remote.as_mut() {
            Some(r) => r.in_flight.is_some() || r.schedule.unknown_key(now_ms),
            None => false,
        }
    }

    /// Loads what another worker published or recorded, then asks for the
    /// lease when a fetch is due and none is under way. The first tick comes
    /// from configuring: it only creates the lease entry (see
    /// `Remote::claim_lease`; Envoy configures its main-thread VMs before
    /// the workers', so the entry exists before any worker claims it).
    pub fn tick(&mut self, now_ms: u64, shared: &Snapshot) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.adopt(shared, &mut effects);
        let Some(r) = self.remote.as_mut() else {
            return effects;
        };
        if !std::mem::replace(&mut r.ticked, true) {
            if shared.lease.0.is_none() {
                effects.push(r.free_lease());
            }
            return effects;
        }
        if r.in_flight.is_none() && r.schedule.due(now_ms) {
            effects.extend(r.claim_lease(&shared.lease, now_ms));
        }
        effects
    }

    /// Takes what came of an effect; `shared` was read after it.
    pub fn on_outcome(&mut self, now_ms: u64, outcome: Outcome, shared: &Snapshot) -> Vec<Effect> {
        let mut effects = Vec::new();
        match outcome {
            Outcome::LeaseClaimed(won) => {
                if won {
                    self.lease_won(now_ms, shared, &mut effects);
                }
            }
            Outcome::Dispatched(Ok(token)) => {
                if let Some(in_flight) = self.remote.as_mut().and_then(|r| r.in_flight.as_mut()) {
                    in_flight.token = Some(token);
                }
            }
            Outcome::Dispatched(Err(why)) => {
                if let Some(r) = &self.remote {
                    let line = format!(
                        "mcp_authz: JWKS fetch for issuer {} through cluster {:?} could not start: {why}",
                        r.issuer, r.config.cluster
                    );
                    effects.push(Effect::Log(Level::Warn, line));
                }
                self.fetch_failed(now_ms, None, &mut effects);
            }
            Outcome::Published => self.adopt_published(&shared.published, &mut effects),
            // Our own record is not news to us.
            Outcome::FailureRecorded => {
                if let Some(r) = self.remote.as_mut() {
                    r.loaded_failure_cas = shared.failure.1;
                }
            }
        }
        effects
    }

    /// The lease is ours. Another worker may have published (or failed) and
    /// released it between the look that asked for it and the claim: load
    /// what it left, and fetch only if still due.
    fn lease_won(&mut self, now_ms: u64, shared: &Snapshot, effects: &mut Vec<Effect>) {
        self.adopt(shared, effects);
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        if !r.schedule.due(now_ms) {
            effects.push(r.free_lease());
            return;
        }
        r.schedule.started();
        let (url, step) = match &r.jwks_uri {
            Some(url) => (url.clone(), Step::Jwks),
            None => (
                discovery::metadata_urls(&r.issuer)[0].clone(),
                Step::Discover(0),
            ),
        };
        self.dispatch(&url, step, now_ms, effects);
    }

    fn dispatch(&mut self, url: &str, step: Step, now_ms: u64, effects: &mut Vec<Effect>) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let Some((authority, path)) = discovery::authority_and_path(url) else {
            let line = format!("mcp_authz: cannot fetch {url:?} for issuer {}", r.issuer);
            effects.push(Effect::Log(Level::Warn, line));
            self.fetch_failed(now_ms, None, effects);
            return;
        };
        r.in_flight = Some(InFlight { token: None, step });
        effects.push(Effect::Dispatch(Fetch {
            cluster: r.config.cluster.clone(),
            authority,
            path,
            timeout_ms: r.config.timeout_ms,
        }));
    }

    /// Whether `token` is this slot's call.
    pub fn owns_call(&self, token: u32) -> bool {
        self.remote
            .as_ref()
            .and_then(|r| r.in_flight)
            .is_some_and(|f| f.token == Some(token))
    }

    /// Handles the answer to this slot's call: discovery goes on to the next
    /// document or to the key set; a usable key set is published for every
    /// worker; anything else is a failed fetch.
    pub fn on_response(
        &mut self,
        now_ms: u64,
        status: Option<u32>,
        cache_control: Option<&str>,
        body: &[u8],
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(r) = self.remote.as_mut() else {
            return effects;
        };
        let Some(InFlight { step, .. }) = r.in_flight.take() else {
            return effects;
        };
        let answer = if status == Some(200) {
            Ok(body)
        } else {
            Err(format!("status {status:?}"))
        };
        match step {
            Step::Discover(i) => self.on_discovery_document(i, answer, now_ms, &mut effects),
            Step::Jwks => self.on_key_set(answer, cache_control, now_ms, &mut effects),
        }
        effects
    }

    /// The `i`-th discovery document: its `jwks_uri` is fetched next, or
    /// else the next document; after the last one, the fetch failed.
    fn on_discovery_document(
        &mut self,
        i: usize,
        answer: Result<&[u8], String>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        match answer.and_then(|body| discovery::jwks_uri(body, &r.issuer)) {
            Ok(uri) => {
                r.jwks_uri = Some(uri.clone());
                self.dispatch(&uri, Step::Jwks, now_ms, effects);
            }
            Err(why) => {
                let urls = discovery::metadata_urls(&r.issuer);
                let line = format!(
                    "mcp_authz: discovery at {} failed: {why}",
                    urls.get(i).map_or("?", String::as_str)
                );
                effects.push(Effect::Log(Level::Warn, line));
                match urls.get(i + 1) {
                    Some(next) => self.dispatch(next, Step::Discover(i + 1), now_ms, effects),
                    None => {
                        self.fetch_failed(now_ms, Some("no usable discovery document"), effects)
                    }
                }
            }
        }
    }

    /// The key set: a usable one is published for every worker (and loaded
    /// here when the host says it was written); else the fetch failed.
    fn on_key_set(
        &mut self,
        answer: Result<&[u8], String>,
        cache_control: Option<&str>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) {
        let parsed = answer.and_then(|body| parse_key_set(body, effects).map(|_| body));
        let body = match parsed {
            Ok(body) => body,
            Err(why) => {
                self.fetch_failed(now_ms, Some(&why), effects);
                return;
            }
        };
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        effects.push(Effect::Count(Counter::JwksFetchOk));
        let record = Published {
            fetched_at_ms: now_ms,
            max_age: cache_control.and_then(schedule::max_age),
            body: body.to_vec(),
        };
        effects.push(Effect::Publish(Write {
            key: r.published_key.clone(),
            value: record.encode(),
        }));
        effects.push(r.free_lease());
    }

    fn fetch_failed(&mut self, now_ms: u64, why: Option<&str>, effects: &mut Vec<Effect>) {
        let has_keys = self.keys.is_some();
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        effects.push(Effect::Count(Counter::JwksFetchFailed));
        r.in_flight = None;
        r.schedule.failed(now_ms);
        // Tell the other workers, so they back off too instead of each
        // trying the failing issuer in turn, and their waiting requests get
        // their answer now.
        let record = Failure {
            at_ms: now_ms,
            failures: r.schedule.failures(),
        };
        effects.push(Effect::RecordFailure(Write {
            key: r.failure_key.clone(),
            value: record.encode(),
        }));
        effects.push(r.free_lease());
        let keeping = if has_keys {
            "keeping the last good keys"
        } else {
            "no keys yet"
        };
        let line = format!(
            "mcp_authz: JWKS fetch for issuer {} failed ({}); {keeping}; retry #{}",
            r.issuer,
            why.unwrap_or("not started"),
            r.schedule.failures()
        );
        effects.push(Effect::Log(Level::Warn, line));
    }

    /// Loads what other workers left in shared data.
    fn adopt(&mut self, shared: &Snapshot, effects: &mut Vec<Effect>) {
        self.adopt_published(&shared.published, effects);
        self.adopt_failure(&shared.failure);
    }

    /// Adopts a failed fetch another worker recorded since we last looked.
    fn adopt_failure(&mut self, entry: &Entry) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let (Some(bytes), cas) = entry else {
            return;
        };
        if cas.is_none() || *cas == r.loaded_failure_cas {
            return;
        }
        r.loaded_failure_cas = *cas;
        if let Some(record) = Failure::decode(bytes) {
            r.schedule.failure_adopted(record.at_ms, record.failures);
        }
    }

    /// Loads the key set in shared data when it is newer than ours.
    fn adopt_published(&mut self, entry: &Entry, effects: &mut Vec<Effect>) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let (Some(bytes), cas) = entry else {
            return;
        };
        if cas.is_some() && *cas == r.loaded_cas {
            return;
        }
        r.loaded_cas = *cas;
        let Some(record) = Published::decode(bytes) else {
            return;
        };
        r.schedule.adopted(record.fetched_at_ms, record.max_age);
        if r.loaded_body.as_deref() == Some(record.body.as_slice()) {
            return;
        }
        match parse_key_set(&record.body, effects) {
            Ok(keys) => {
                let line = format!(
                    "mcp_authz: loaded {} signing key(s) for issuer {}",
                    keys.len(),
                    r.issuer
                );
                effects.push(Effect::Log(Level::Info, line));
                r.loaded_body = Some(record.body);
                self.keys = Some(Rc::new(keys));
                self.generation += 1;
                effects.push(Effect::KeysChanged);
            }
            Err(why) => effects.push(Effect::Log(
                Level::Warn,
                format!("mcp_authz: published key set unusable: {why}"),
            )),
        }
    }
}

impl Remote {
    /// Asks to take the fetch lease when it is free or expired
    /// (compare-and-swap on an existing entry, so of N workers exactly one
    /// wins). Shared data checks compare-and-swap only on entries that exist
    /// (a write to a missing key always succeeds), so two workers racing
    /// for a lease never written would both win: a missing lease is created
    /// free instead, to be claimed on a later tick.
    fn claim_lease(&self, lease: &Entry, now_ms: u64) -> Option<Effect> {
        let (value, cas) = lease;
        let Some(cas) = *cas else {
            return Some(self.free_lease());
        };
        let held_until: u64 = value
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if held_until > now_ms {
            return None;
        }
        // Discovery may take three calls, each with the timeout.
        let until = now_ms + self.config.timeout_ms * 3 + 1000;
        Some(Effect::ClaimLease {
            write: Write {
                key: self.lease_key.clone(),
                value: lease_value(until),
            },
            cas,
        })
    }

    fn free_lease(&self) -> Effect {
        Effect::ReleaseLease(Write {
            key: self.lease_key.clone(),
            value: lease_value(0),
        })
    }
}

/// A fetched key set, usable only when it holds at least one key: an empty
/// or garbled answer counts as a failed fetch, so the last good keys stay.
fn parse_key_set(body: &[u8], effects: &mut Vec<Effect>) -> Result<KeySet, String> {
    let text = std::str::from_utf8(body).map_err(|_| "key set is not UTF-8".to_string())?;
    let (keys, skipped) = KeySet::parse(text).map_err(|e| e.to_string())?;
    for why in skipped {
        effects.push(Effect::Log(
            Level::Info,
            format!("mcp_authz: skipped a key: {why}"),
        ));
    }
    if keys.is_empty() {
        return Err("key set holds no usable signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
