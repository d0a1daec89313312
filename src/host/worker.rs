//! What one VM (one Envoy worker) shares between its root context and its
//! requests: the configuration, the keys, the verified-token cache, the
//! counters, the requests waiting for keys or for another request's call to
//! the authorization server, and the calls in flight.

use super::abi;
use super::abi::HostShared;
use super::stats::Stats;
use crate::authorization_server::{shared, Purpose};
use crate::config::Gateway;
use crate::exchange::Exchange;
use crate::gate::KeyRing;
use crate::keys::fetch::KeySlot;
use crate::keys::wait::{KeyProgress, KeyWaits};
use crate::mcp::param_headers::{self, ParamHeader, ToolList};
use crate::token_cache::VerifiedTokenCache;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::rc::{Rc, Weak};

/// Verified tokens remembered per VM.
const TOKEN_CACHE_CAPACITY: usize = 1024;
/// Tools whose `Mcp-Param-*` declarations a VM keeps in memory.
const TOOL_HEADERS_CAPACITY: usize = 4096;

fn tool_headers_key(tool: &str) -> String {
    format!("mcp_authz.tool_headers.{tool}")
}

/// The last tool list any worker learned ([`ToolList::encode`]);
/// outside `tool_headers_key`'s names, which end in a tool's.
const LAST_TOOL_LIST_KEY: &str = "mcp_authz.last_tool_list";

pub struct Worker {
    pub gateway: Rc<Gateway>,
    /// Tools' `Mcp-Param-*` declarations this worker learned or read from
    /// shared data (bounded).
    tool_headers: RefCell<BTreeMap<String, Vec<ParamHeader>>>,
    pub slots: RefCell<Vec<KeySlot>>,
    pub cache: RefCell<VerifiedTokenCache>,
    pub stats: Stats,
    /// Requests held until a provider's keys settle (`keys::wait` says
    /// when).
    pub waiters: RefCell<KeyWaits<Request>>,
    /// The proxy's key for digests of tokens (shared data, so every worker
    /// finds a token's answer in the same slot).
    pub digest_key: [u8; 32],
    /// Calls to the authorization server in flight, by token: the request
    /// whose answer it is.
    pub calls: RefCell<HashMap<u32, Request>>,
    /// Requests waiting for another request's call.
    pub call_waiters: RefCell<Vec<Request>>,
}

/// A request the root context may have to resume.
#[derive(Clone)]
pub struct Request {
    pub context_id: u32,
    pub exchange: Weak<RefCell<Exchange>>,
}

impl Worker {
    pub fn new(gateway: Gateway, stats: Stats, now_ms: u64) -> Worker {
        // Keys are per provider, and every server shares the providers.
        let slots = match gateway.servers.first() {
            Some(first) => KeySlot::for_policy(&first.policy, now_ms),
            None => Vec::new(),
        };
        if gateway
            .providers()
            .iter()
            .any(|p| p.introspection.is_some())
        {
            shared::prepare(&mut HostShared, Purpose::Introspection);
        }
        let exchanges = gateway
            .servers
            .iter()
            .any(|s| s.policy.upstream_token.as_ref().is_some_and(|u| u.cache));
        if exchanges {
            shared::prepare(&mut HostShared, Purpose::TokenExchange);
        }
        if crate::dpop::dpop_accepted(gateway.providers()) {
            crate::dpop::replay::prepare(&mut HostShared, random_key(now_ms));
        }
        Worker {
            gateway: Rc::new(gateway),
            tool_headers: RefCell::new(BTreeMap::new()),
            slots: RefCell::new(slots),
            cache: RefCell::new(VerifiedTokenCache::new(TOKEN_CACHE_CAPACITY)),
            stats,
            waiters: RefCell::new(KeyWaits::new()),
            digest_key: shared::digest_key(&mut HostShared, random_key(now_ms)),
            calls: RefCell::new(HashMap::new()),
            call_waiters: RefCell::new(Vec::new()),
        }
    }

    /// Calls in flight whose request is still there (Envoy cancels the
    /// calls of a request that goes away; those are dropped here).
    pub fn calls_in_flight(&self) -> usize {
        let mut calls = self.calls.borrow_mut();
        calls.retain(|_, r| r.exchange.strong_count() > 0);
        calls.len()
    }

    /// What a tool declares as `Mcp-Param-*` headers: what the workers
    /// share (the newest list any of them read), else this worker's memory.
    pub fn tool_headers(&self, tool: &str) -> Option<Vec<ParamHeader>> {
        let (shared, _) = abi::shared_get(&tool_headers_key(tool));
        let remembered = self.tool_headers.borrow().get(tool).cloned();
        let declared = param_headers::current(shared.as_deref(), remembered.as_deref())?;
        if remembered.as_ref() != Some(&declared) {
            self.remember(tool, declared.clone());
        }
        Some(declared)
    }

    /// Remembers, and shares with the other workers, what listed tools
    /// declare (a list is the newest word on a tool's schema). A list is
    /// learned tool by tool (a shared-data look each) only when it is not
    /// the last list any worker learned: listing the same tools again costs
    /// one look.
    pub fn learn_tool_headers(&self, tools: ToolList) {
        let list = tools.encode();
        let (last, _) = abi::shared_get(LAST_TOOL_LIST_KEY);
        if last.as_deref() == Some(list.as_slice()) {
            // Every tool of that list was shared before the list was, and
            // whoever shares another list shares its tools first, then it.
            return;
        }
        for (tool, declared) in tools.iter() {
            // Against what is shared, not this worker's memory: another
            // worker may have shared a newer list since.
            let known = self.tool_headers(tool).as_deref() == Some(declared);
            if !known {
                let _ = abi::shared_set(
                    &tool_headers_key(tool),
                    &param_headers::encode(declared),
                    None,
                );
                self.remember(tool, declared.to_vec());
            }
        }
        let _ = abi::shared_set(LAST_TOOL_LIST_KEY, &list, None);
    }

    fn remember(&self, tool: &str, declared: Vec<ParamHeader>) {
        let mut known = self.tool_headers.borrow_mut();
        if known.len() >= TOOL_HEADERS_CAPACITY && !known.contains_key(tool) {
            // Forget one: shared data still holds it for a later look-up.
            if let Some(first) = known.keys().next().cloned() {
                known.remove(&first);
            }
        }
        known.insert(tool.to_string(), declared);
    }

    /// The keys as the core wants them: a snapshot, so that asking for a
    /// fetch while deciding never meets a borrowed slot.
    pub fn key_ring(&self) -> KeyRing {
        let slots = self.slots.borrow();
        KeyRing {
            sets: slots.iter().map(|s| s.keys.clone()).collect(),
            generations: slots.iter().map(|s| s.generation).collect(),
        }
    }

    /// Holds the request until `provider`'s keys settle.
    pub fn wait(
        &self,
        context_id: u32,
        exchange: &Rc<RefCell<Exchange>>,
        provider: usize,
        now_ms: u64,
    ) {
        let progress = KeyProgress::of(&self.slots.borrow());
        let request = Request {
            context_id,
            exchange: Rc::downgrade(exchange),
        };
        self.waiters
            .borrow_mut()
            .add(request, provider, &progress, now_ms);
    }

    /// Takes out the requests whose key wait is over; drops those whose
    /// request is gone.
    pub fn ready_waiters(&self, now_ms: u64) -> Vec<(u32, Rc<RefCell<Exchange>>)> {
        let progress = KeyProgress::of(&self.slots.borrow());
        self.waiters
            .borrow_mut()
            .take_settled(&progress, now_ms, |r| r.exchange.strong_count() == 0)
            .into_iter()
            .filter_map(|r| Some((r.context_id, r.exchange.upgrade()?)))
            .collect()
    }
}

/// 32 random bytes: the VM's random hasher keys (seeded from WASI's
/// `random_get`) through SipHash, with the time mixed in.
fn random_key(now_ms: u64) -> [u8; 32] {
    let state = RandomState::new();
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&state.hash_one((i as u64, now_ms)).to_le_bytes());
    }
    key
}
