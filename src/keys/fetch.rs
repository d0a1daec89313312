//! Remote key sets, fetched through an Envoy cluster by one worker at a time
//! and shared with the others: the steps (discovery documents, then the key
//! set), the lease that elects the fetching worker, the records published to
//! shared data (keys, failures), and when a request's wait is over.
//!
//! Pure logic over a [`Proxy`]: shared data and outgoing calls are asked of
//! it, so the whole exchange between workers runs natively in tests (two
//! simulated workers, a configuration canary, a failing issuer). The host
//! implements `Proxy` with proxy-wasm calls; this mirrors Envoy's own split
//! of `jwks_async_fetcher` and `jwks_cache`.

use std::rc::Rc;

use super::discovery;
use super::schedule::{self, Schedule};
use crate::config::{JwksSource, Policy, RemoteJwks};
use crate::counters::Counter;
use crate::exchange::Level;
use crate::keys::jwks::KeySet;

/// What the fetcher asks of the proxy.
pub trait Proxy {
    /// A shared-data entry (visible to every worker of the proxy): its value
    /// and version, `(None, None)` when absent.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes a shared-data entry; with `cas`, only if its version is still
    /// `cas`. Whether it was written.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
    /// Starts a GET through `cluster`: the call's token, or why it could
    /// not start.
    fn dispatch(
        &mut self,
        cluster: &str,
        authority: &str,
        path: &str,
        timeout_ms: u64,
    ) -> Result<u32, String>;
    fn log(&mut self, level: Level, line: &str);
    fn count(&mut self, counter: Counter);
}

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
    token: u32,
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
    pub fn for_policy(policy: &Policy, now_ms: u64, proxy: &mut dyn Proxy) -> Vec<KeySlot> {
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
                    let lease_key = format!("mcp_authz.lease.{id}");
                    create_lease(proxy, &lease_key);
                    KeySlot {
                        keys: None,
                        generation: 0,
                        remote: Some(Remote {
                            config: remote.clone(),
                            issuer: p.issuer.clone(),
                            schedule: Schedule::new(remote.refresh_seconds, now_ms),
                            published_key: format!("mcp_authz.jwks.{id}"),
                            lease_key,
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

    /// Loads what another worker published, then starts a fetch when one is
    /// due and this worker wins the lease.
    pub fn tick(&mut self, now_ms: u64, proxy: &mut dyn Proxy) {
        self.adopt_published(proxy);
        self.adopt_failure(proxy);
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        if !std::mem::replace(&mut r.ticked, true) {
            return;
        }
        if r.in_flight.is_some()
            || !r.schedule.due(now_ms)
            || !claim_lease(proxy, &r.lease_key, now_ms, &r.config)
        {
            return;
        }
        // Another worker may have published (or failed) and released the
        // lease between the look above and the claim: load what it left, and
        // fetch only if still due.
        self.adopt_published(proxy);
        self.adopt_failure(proxy);
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        if !r.schedule.due(now_ms) {
            release_lease(proxy, &r.lease_key);
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
        self.dispatch(&url, step, now_ms, proxy);
    }

    fn dispatch(&mut self, url: &str, step: Step, now_ms: u64, proxy: &mut dyn Proxy) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let Some((authority, path)) = discovery::authority_and_path(url) else {
            let line = format!("mcp_authz: cannot fetch {url:?} for issuer {}", r.issuer);
            proxy.log(Level::Warn, &line);
            self.fetch_failed(now_ms, None, proxy);
            return;
        };
        match proxy.dispatch(&r.config.cluster, &authority, &path, r.config.timeout_ms) {
            Ok(token) => r.in_flight = Some(InFlight { token, step }),
            Err(why) => {
                let line = format!(
                    "mcp_authz: JWKS fetch for issuer {} through cluster {:?} could not start: {why}",
                    r.issuer, r.config.cluster
                );
                proxy.log(Level::Warn, &line);
                self.fetch_failed(now_ms, None, proxy);
            }
        }
    }

    /// Whether `token` is this slot's call.
    pub fn owns_call(&self, token: u32) -> bool {
        self.remote
            .as_ref()
            .and_then(|r| r.in_flight)
            .is_some_and(|f| f.token == token)
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
        proxy: &mut dyn Proxy,
    ) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let Some(InFlight { step, .. }) = r.in_flight.take() else {
            return;
        };
        let ok = status == Some(200);
        match step {
            Step::Discover(i) => {
                let found = if ok {
                    discovery::jwks_uri(body, &r.issuer)
                } else {
                    Err(format!("status {status:?}"))
                };
                match found {
                    Ok(uri) => {
                        r.jwks_uri = Some(uri.clone());
                        self.dispatch(&uri, Step::Jwks, now_ms, proxy);
                    }
                    Err(why) => {
                        let urls = discovery::metadata_urls(&r.issuer);
                        let line = format!(
                            "mcp_authz: discovery at {} failed: {why}",
                            urls.get(i).map_or("?", String::as_str)
                        );
                        proxy.log(Level::Warn, &line);
                        match urls.get(i + 1) {
                            Some(next) => {
                                let next = next.clone();
                                self.dispatch(&next, Step::Discover(i + 1), now_ms, proxy)
                            }
                            None => self.fetch_failed(
                                now_ms,
                                Some("no usable discovery document"),
                                proxy,
                            ),
                        }
                    }
                }
            }
            Step::Jwks => {
                let parsed = if ok {
                    parse_key_set(body, proxy)
                } else {
                    Err(format!("status {status:?}"))
                };
                match parsed {
                    Ok(_) => {
                        proxy.count(Counter::JwksFetchOk);
                        let record = Published {
                            fetched_at_ms: now_ms,
                            max_age: cache_control.and_then(schedule::max_age),
                            body: body.to_vec(),
                        };
                        proxy.shared_set(&r.published_key, &record.encode(), None);
                        release_lease(proxy, &r.lease_key);
                        self.adopt_published(proxy);
                    }
                    Err(why) => self.fetch_failed(now_ms, Some(&why), proxy),
                }
            }
        }
    }

    fn fetch_failed(&mut self, now_ms: u64, why: Option<&str>, proxy: &mut dyn Proxy) {
        let has_keys = self.keys.is_some();
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        proxy.count(Counter::JwksFetchFailed);
        r.in_flight = None;
        r.schedule.failed(now_ms);
        // Tell the other workers, so they back off too instead of each
        // trying the failing issuer in turn, and their waiting requests get
        // their answer now.
        let record = Failure {
            at_ms: now_ms,
            failures: r.schedule.failures(),
        };
        proxy.shared_set(&r.failure_key, &record.encode(), None);
        // Our own record is not news to us.
        r.loaded_failure_cas = proxy.shared_get(&r.failure_key).1;
        release_lease(proxy, &r.lease_key);
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
        proxy.log(Level::Warn, &line);
    }

    /// Adopts a failed fetch another worker recorded since we last looked.
    fn adopt_failure(&mut self, proxy: &mut dyn Proxy) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let (Some(bytes), cas) = proxy.shared_get(&r.failure_key) else {
            return;
        };
        if cas.is_none() || cas == r.loaded_failure_cas {
            return;
        }
        r.loaded_failure_cas = cas;
        if let Some(record) = Failure::decode(&bytes) {
            r.schedule.failure_adopted(record.at_ms, record.failures);
        }
    }

    /// Loads the key set in shared data when it is newer than ours.
    fn adopt_published(&mut self, proxy: &mut dyn Proxy) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let (Some(bytes), cas) = proxy.shared_get(&r.published_key) else {
            return;
        };
        if cas.is_some() && cas == r.loaded_cas {
            return;
        }
        r.loaded_cas = cas;
        let Some(record) = Published::decode(&bytes) else {
            return;
        };
        r.schedule.adopted(record.fetched_at_ms, record.max_age);
        if r.loaded_body.as_deref() == Some(record.body.as_slice()) {
            return;
        }
        match parse_key_set(&record.body, proxy) {
            Ok(keys) => {
                let line = format!(
                    "mcp_authz: loaded {} signing key(s) for issuer {}",
                    keys.len(),
                    r.issuer
                );
                proxy.log(Level::Info, &line);
                r.loaded_body = Some(record.body);
                self.keys = Some(Rc::new(keys));
                self.generation += 1;
            }
            Err(why) => proxy.log(
                Level::Warn,
                &format!("mcp_authz: published key set unusable: {why}"),
            ),
        }
    }
}

/// What one worker publishes for the others: when, how fresh, and the body.
#[derive(Debug, PartialEq, Eq)]
struct Published {
    fetched_at_ms: u64,
    max_age: Option<u64>,
    body: Vec<u8>,
}

impl Published {
    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{}\n{}\n",
            self.fetched_at_ms,
            self.max_age.map(|a| a.to_string()).unwrap_or_default()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Published> {
        let mut parts = bytes.splitn(3, |b| *b == b'\n');
        let fetched_at_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let max_age = std::str::from_utf8(parts.next()?).ok()?.parse().ok();
        Some(Published {
            fetched_at_ms,
            max_age,
            body: parts.next()?.to_vec(),
        })
    }
}

/// A failed fetch, as one worker records it for the others.
#[derive(Debug, PartialEq, Eq)]
struct Failure {
    at_ms: u64,
    failures: u32,
}

impl Failure {
    fn encode(&self) -> Vec<u8> {
        format!("{}\n{}", self.at_ms, self.failures).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Failure> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (at, failures) = text.split_once('\n')?;
        Some(Failure {
            at_ms: at.parse().ok()?,
            failures: failures.parse().ok()?,
        })
    }
}

/// The lease value: the time (ms) until which a worker holds the fetch;
/// `0` is free.
fn lease_value(until_ms: u64) -> Vec<u8> {
    until_ms.to_string().into_bytes()
}

/// Creates the lease entry when it does not exist yet. Shared data checks
/// compare-and-swap only on entries that exist (a write to a missing key
/// always succeeds), so two workers racing for a lease that was never
/// written would both win. Every VM calls this while configuring, and Envoy
/// configures its main-thread VMs before the workers', so the entry exists
/// before any worker claims it.
fn create_lease(proxy: &mut dyn Proxy, key: &str) {
    if proxy.shared_get(key).0.is_none() {
        proxy.shared_set(key, &lease_value(0), None);
    }
}

/// Takes the fetch lease when it is free or expired (compare-and-swap on an
/// existing entry, so of N workers exactly one wins).
fn claim_lease(proxy: &mut dyn Proxy, key: &str, now_ms: u64, config: &RemoteJwks) -> bool {
    let (value, cas) = proxy.shared_get(key);
    if cas.is_none() {
        // Never created (see `create_lease`): create it; claim on a later tick.
        create_lease(proxy, key);
        return false;
    }
    let held_until: u64 = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if held_until > now_ms {
        return false;
    }
    // Discovery may take three calls, each with the timeout.
    let until = now_ms + config.timeout_ms * 3 + 1000;
    proxy.shared_set(key, &lease_value(until), cas)
}

fn release_lease(proxy: &mut dyn Proxy, key: &str) {
    proxy.shared_set(key, &lease_value(0), None);
}

/// A fetched key set, usable only when it holds at least one key: an empty
/// or garbled answer counts as a failed fetch, so the last good keys stay.
fn parse_key_set(body: &[u8], proxy: &mut dyn Proxy) -> Result<KeySet, String> {
    let text = std::str::from_utf8(body).map_err(|_| "key set is not UTF-8".to_string())?;
    let (keys, skipped) = KeySet::parse(text).map_err(|e| e.to_string())?;
    for why in skipped {
        proxy.log(Level::Info, &format!("mcp_authz: skipped a key: {why}"));
    }
    if keys.is_empty() {
        return Err("key set holds no usable signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
