//! Remote key sets: fetched through an Envoy cluster by one worker at a time
//! (a lease in shared data), published to the other workers through shared
//! data, refreshed on a schedule, refetched on an unknown `kid`.

use super::stats::Stats;
use super::{log, now_ms};
use crate::config::{JwksSource, Policy, RemoteJwks};
use crate::counters::Counter;
use crate::discovery;
use crate::jwks::KeySet;
use crate::key_schedule::{self, Schedule};
use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;
use std::rc::Rc;
use std::time::Duration;

/// One provider's keys in this VM.
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
    /// Shared-data keys: the published key set, the fetch lease, and the
    /// last failed fetch.
    published_key: String,
    lease_key: String,
    failure_key: String,
    /// The `jwks_fetch.failed` counter, bumped for every failed fetch,
    /// including one that could not even start.
    failed_metric: u32,
    /// The shared-data versions this VM last loaded.
    loaded_cas: Option<u32>,
    loaded_failure_cas: Option<u32>,
    /// The key set body last loaded, to tell a change from a refresh.
    loaded_body: Option<Vec<u8>>,
    jwks_uri: Option<String>,
    in_flight: Option<InFlight>,
    /// Whether `tick` ran before. Its first run comes from `on_configure`,
    /// which Envoy also runs in a throwaway "configuration canary" VM on the
    /// main thread: a fetch started there is cancelled with the canary but
    /// would keep the lease for its whole term, delaying every worker's first
    /// fetch by seconds. So fetches start from the first timer tick on.
    ticked: bool,
}

/// A fetch under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub token: u32,
    pub step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Fetching the n-th discovery document.
    Discover(usize),
    Jwks,
}

impl KeySlot {
    /// The slots of a policy: inline keys ready, remote ones empty and due.
    pub fn for_policy(policy: &Policy, failed_metric: u32) -> Vec<KeySlot> {
        let now = now_ms();
        policy
            .providers
            .iter()
            .map(|p| match &p.jwks {
                JwksSource::Inline(keys) => KeySlot {
                    keys: Some(Rc::new(keys.clone())),
                    generation: 1,
                    remote: None,
                },
                JwksSource::Remote(remote) => {
                    // Keys in shared data are per issuer and source, so two
                    // listeners trusting the same issuer share one fetch.
                    let id = format!(
                        "{}|{}|{}",
                        p.issuer,
                        remote.cluster,
                        remote.url.as_deref().unwrap_or("discover")
                    );
                    let lease_key = format!("mcp_authz.lease.{id}");
                    create_lease(&lease_key);
                    KeySlot {
                        keys: None,
                        generation: 0,
                        remote: Some(Remote {
                            config: remote.clone(),
                            issuer: p.issuer.clone(),
                            schedule: Schedule::new(remote.refresh_seconds, now),
                            published_key: format!("mcp_authz.jwks.{id}"),
                            lease_key,
                            failure_key: format!("mcp_authz.failure.{id}"),
                            failed_metric,
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
    pub fn keys_needed(&mut self, now: u64) {
        if let Some(r) = self.remote.as_mut() {
            r.schedule.keys_needed(now);
        }
    }

    /// A token named a key this set lacks. Returns whether a refetch was
    /// granted (rate-limited per provider).
    pub fn unknown_key(&mut self, now: u64) -> bool {
        match self.remote.as_mut() {
            Some(r) => r.in_flight.is_some() || r.schedule.unknown_key(now),
            None => false,
        }
    }

    /// Loads what another worker published, then starts a fetch when one is
    /// due and this worker wins the lease. Returns the dispatched call's token.
    pub fn tick(&mut self, now: u64) -> Option<u32> {
        self.adopt_published();
        self.adopt_failure();
        let r = self.remote.as_mut()?;
        if !std::mem::replace(&mut r.ticked, true) {
            return None;
        }
        if r.in_flight.is_some()
            || !r.schedule.due(now)
            || !claim_lease(&r.lease_key, now, &r.config)
        {
            return None;
        }
        // Another worker may have published (or failed) and released the
        // lease between the look above and the claim: load what it left, and
        // fetch only if still due.
        self.adopt_published();
        self.adopt_failure();
        let r = self.remote.as_mut()?;
        if !r.schedule.due(now) {
            release_lease(&r.lease_key);
            return None;
        }
        r.schedule.started();
        let (url, step) = match &r.jwks_uri {
            Some(url) => (url.clone(), Step::Jwks),
            None => (
                discovery::metadata_urls(&r.issuer)[0].clone(),
                Step::Discover(0),
            ),
        };
        self.dispatch(&url, step, now)
    }

    fn dispatch(&mut self, url: &str, step: Step, now: u64) -> Option<u32> {
        let r = self.remote.as_mut()?;
        let Some((authority, path)) = discovery::authority_and_path(url) else {
            log(
                LogLevel::Error,
                &format!("mcp_authz: cannot fetch {url:?} for issuer {}", r.issuer),
            );
            self.fetch_failed(now, None);
            return None;
        };
        let headers = vec![
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", authority.as_str()),
            ("accept", "application/json"),
        ];
        match hostcalls::dispatch_http_call(
            &r.config.cluster,
            headers,
            None,
            vec![],
            Duration::from_millis(r.config.timeout_ms),
        ) {
            Ok(token) => {
                r.in_flight = Some(InFlight { token, step });
                Some(token)
            }
            Err(status) => {
                let msg = format!(
                    "mcp_authz: JWKS fetch for issuer {} through cluster {:?} could not start: {status:?}",
                    r.issuer, r.config.cluster
                );
                log(LogLevel::Error, &msg);
                self.fetch_failed(now, None);
                None
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

    /// Handles the answer to this slot's call. Returns the next call's token
    /// when discovery goes on to another document or to the key set.
    pub fn on_response(
        &mut self,
        status: Option<u32>,
        cache_control: Option<String>,
        body: Vec<u8>,
        stats: &Stats,
    ) -> Option<u32> {
        let now = now_ms();
        let r = self.remote.as_mut()?;
        let step = r.in_flight.take()?.step;
        let ok = status == Some(200);
        match step {
            Step::Discover(i) => {
                let found = if ok {
                    discovery::jwks_uri(&body, &r.issuer)
                } else {
                    Err(format!("status {status:?}"))
                };
                match found {
                    Ok(uri) => {
                        r.jwks_uri = Some(uri.clone());
                        self.dispatch(&uri, Step::Jwks, now)
                    }
                    Err(why) => {
                        let urls = discovery::metadata_urls(&r.issuer);
                        log(
                            LogLevel::Warn,
                            &format!("mcp_authz: discovery at {} failed: {why}", urls[i]),
                        );
                        match urls.get(i + 1) {
                            Some(next) => self.dispatch(&next.clone(), Step::Discover(i + 1), now),
                            None => {
                                self.fetch_failed(now, Some("no usable discovery document"));
                                None
                            }
                        }
                    }
                }
            }
            Step::Jwks => {
                let parsed = if ok {
                    parse_key_set(&body)
                } else {
                    Err(format!("status {status:?}"))
                };
                match parsed {
                    Ok(_) => {
                        stats.bump(Counter::JwksFetchOk);
                        let max_age = cache_control.as_deref().and_then(key_schedule::max_age);
                        let record = Published {
                            fetched_at_ms: now,
                            max_age,
                            body,
                        };
                        let _ = hostcalls::set_shared_data(
                            &r.published_key,
                            Some(&record.encode()),
                            None,
                        );
                        release_lease(&r.lease_key);
                        self.adopt_published();
                    }
                    Err(why) => {
                        self.fetch_failed(now, Some(&why));
                    }
                }
                None
            }
        }
    }

    fn fetch_failed(&mut self, now: u64, why: Option<&str>) {
        if let Some(r) = self.remote.as_mut() {
            Stats::add_id(r.failed_metric, 1);
            r.in_flight = None;
            r.schedule.failed(now);
            // Tell the other workers, so they back off too instead of each
            // trying the failing issuer in turn, and their waiting requests
            // get their answer now.
            let record = format!("{now}\n{}", r.schedule.failures());
            let _ = hostcalls::set_shared_data(&r.failure_key, Some(record.as_bytes()), None);
            // Our own record is not news to us.
            r.loaded_failure_cas = hostcalls::get_shared_data(&r.failure_key)
                .ok()
                .and_then(|(_, cas)| cas);
            release_lease(&r.lease_key);
            let keeping = if self.keys.is_some() {
                "keeping the last good keys"
            } else {
                "no keys yet"
            };
            log(
                LogLevel::Warn,
                &format!(
                    "mcp_authz: JWKS fetch for issuer {} failed ({}); {keeping}; retry #{}",
                    r.issuer,
                    why.unwrap_or("not started"),
                    r.schedule.failures()
                ),
            );
        }
    }

    /// Adopts a failed fetch another worker recorded since we last looked.
    fn adopt_failure(&mut self) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let Ok((Some(bytes), cas)) = hostcalls::get_shared_data(&r.failure_key) else {
            return;
        };
        if cas.is_none() || cas == r.loaded_failure_cas {
            return;
        }
        r.loaded_failure_cas = cas;
        let text = String::from_utf8_lossy(&bytes);
        let mut parts = text.splitn(2, '\n');
        let at = parts.next().and_then(|v| v.parse().ok());
        let failures = parts.next().and_then(|v| v.parse().ok());
        if let (Some(at), Some(failures)) = (at, failures) {
            r.schedule.failure_adopted(at, failures);
        }
    }

    /// Loads the key set in shared data when it is newer than ours.
    fn adopt_published(&mut self) {
        let Some(r) = self.remote.as_mut() else {
            return;
        };
        let Ok((Some(bytes), cas)) = hostcalls::get_shared_data(&r.published_key) else {
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
        match parse_key_set(&record.body) {
            Ok(keys) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "mcp_authz: loaded {} signing key(s) for issuer {}",
                        keys.len(),
                        r.issuer
                    ),
                );
                r.loaded_body = Some(record.body);
                self.keys = Some(Rc::new(keys));
                self.generation += 1;
            }
            Err(why) => log(
                LogLevel::Warn,
                &format!("mcp_authz: published key set unusable: {why}"),
            ),
        }
    }
}

/// What one worker publishes for the others: when, how fresh, and the body.
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

/// Creates the lease entry when it does not exist yet. Shared data checks
/// compare-and-swap only on entries that exist (a write to a missing key
/// always succeeds), so two workers racing for a lease that was never
/// written would both win. Every VM calls this while configuring, and Envoy
/// configures its main-thread VMs before the workers', so the entry exists
/// before any worker claims it.
fn create_lease(key: &str) {
    if let Ok((None, _)) = hostcalls::get_shared_data(key) {
        let _ = hostcalls::set_shared_data(key, Some(b"0"), None);
    }
}

/// Takes the fetch lease when it is free or expired (compare-and-swap on an
/// existing entry, so of N workers exactly one wins).
fn claim_lease(key: &str, now: u64, config: &RemoteJwks) -> bool {
    let (value, cas) = hostcalls::get_shared_data(key).unwrap_or((None, None));
    if cas.is_none() {
        // Never created (see `create_lease`): create it; claim on a later tick.
        create_lease(key);
        return false;
    }
    let held_until: u64 = value
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if held_until > now {
        return false;
    }
    // Discovery may take three calls, each with the timeout.
    let until = now + config.timeout_ms * 3 + 1000;
    hostcalls::set_shared_data(key, Some(until.to_string().as_bytes()), cas).is_ok()
}

fn release_lease(key: &str) {
    let _ = hostcalls::set_shared_data(key, Some(b"0"), None);
}

/// A fetched key set, usable only when it holds at least one key: an empty
/// or garbled answer counts as a failed fetch, so the last good keys stay.
fn parse_key_set(body: &[u8]) -> Result<KeySet, String> {
    let text = std::str::from_utf8(body).map_err(|_| "key set is not UTF-8".to_string())?;
    let (keys, skipped) = KeySet::parse(text).map_err(|e| e.to_string())?;
    for why in skipped {
        log(LogLevel::Info, &format!("mcp_authz: skipped a key: {why}"));
    }
    if keys.is_empty() {
        return Err("key set holds no usable signing key".into());
    }
    Ok(keys)
}
