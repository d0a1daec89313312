//! Carries out the key fetcher's effects (`keys::fetch`) with proxy-wasm
//! calls: shared data, GETs through Envoy clusters, the log and the
//! counters. What each effect answers goes back to the fetcher at once.

use std::collections::VecDeque;

use super::abi;
use super::log;
use super::stats::Stats;
use crate::exchange::Level;
use crate::keys::fetch::{Effect, Fetch, KeySlot, Outcome, Snapshot};
use crate::shared_data::SharedData;
use abi::HostShared;
use proxy_wasm::types::LogLevel;

/// A timer tick for one provider's keys.
pub fn tick(slot: &mut KeySlot, now_ms: u64, stats: &Stats) {
    let effects = slot.tick(now_ms, &Snapshot::read(slot, &HostShared));
    run(slot, now_ms, stats, effects);
}

/// The answer to one provider's call.
pub fn on_response(
    slot: &mut KeySlot,
    now_ms: u64,
    (status, cache_control, body): (Option<u32>, Option<&str>, &[u8]),
    stats: &Stats,
) {
    let effects = slot.on_response(now_ms, status, cache_control, body);
    run(slot, now_ms, stats, effects);
}

/// Runs the effects in order. An effect that asks for an answer gets it
/// right away, with shared data read after it, and what the slot answers
/// with runs before the rest.
fn run(slot: &mut KeySlot, now_ms: u64, stats: &Stats, effects: Vec<Effect>) {
    let mut queue = VecDeque::from(effects);
    while let Some(effect) = queue.pop_front() {
        let outcome = match effect {
            Effect::Dispatch(fetch) => Some(Outcome::Dispatched(dispatch(&fetch))),
            Effect::ClaimLease { write, cas } => Some(Outcome::LeaseClaimed(
                HostShared.shared_set(&write.key, &write.value, Some(cas)),
            )),
            Effect::ReleaseLease(write) => {
                HostShared.shared_set(&write.key, &write.value, None);
                None
            }
            Effect::Publish(write) => {
                HostShared.shared_set(&write.key, &write.value, None);
                Some(Outcome::Published)
            }
            Effect::RecordFailure(write) => {
                HostShared.shared_set(&write.key, &write.value, None);
                Some(Outcome::FailureRecorded)
            }
            Effect::Log(level, line) => {
                let level = match level {
                    Level::Info => LogLevel::Info,
                    Level::Warn => LogLevel::Warn,
                };
                log(level, &line);
                None
            }
            Effect::Count(counter) => {
                stats.bump(counter);
                None
            }
            // Waiting requests compare generations on every drive of the
            // keys (`Worker::ready_waiters`), which follows this run.
            Effect::KeysChanged => None,
        };
        if let Some(outcome) = outcome {
            let answer = slot.on_outcome(now_ms, outcome, &Snapshot::read(slot, &HostShared));
            for effect in answer.into_iter().rev() {
                queue.push_front(effect);
            }
        }
    }
}

/// Starts a GET through `fetch.cluster`: the call's token, or why it could
/// not start.
fn dispatch(fetch: &Fetch) -> Result<u32, String> {
    let headers = vec![
        (":method", "GET"),
        (":path", fetch.path.as_str()),
        (":authority", fetch.authority.as_str()),
        ("accept", "application/json"),
    ];
    abi::http_call(&fetch.cluster, &headers, None, fetch.timeout_ms)
        .map_err(|failed| format!("status {}", failed.0))
}
