//! The root context: loads the configuration (refusing a bad one, which makes
//! Envoy refuse the listener), runs the key refresh tick and hands each
//! request a context that shares this VM's worker state.

use super::abi::{self, Buffer, Map};
use super::keys;
use super::request::{self, RequestFilter};
use super::stats::Stats;
use super::worker::Worker;
use super::{log, now_ms};
use crate::config::Gateway;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use std::rc::Rc;

/// The tick drives key refresh and wakes requests waiting for keys; 100 ms
/// keeps that wait short and costs a few map look-ups per tick.
const TICK_MS: u32 = 100;

pub struct PluginRoot {
    context_id: u32,
    worker: Option<Rc<Worker>>,
}

impl PluginRoot {
    pub fn new(context_id: u32) -> PluginRoot {
        PluginRoot {
            context_id,
            worker: None,
        }
    }

    /// Starts due fetches and resumes requests whose keys are settled.
    fn drive_keys(&self) {
        let Some(worker) = &self.worker else { return };
        let now_ms = now_ms();
        for slot in worker.slots.borrow_mut().iter_mut() {
            keys::tick(slot, now_ms, &worker.stats);
        }
        for (context_id, exchange) in worker.ready_waiters(now_ms) {
            request::resume_with(worker, context_id, &exchange, |ex, env| {
                ex.on_keys_settled(env)
            });
        }
        request::poll_call_waiters(worker);
        let _ = abi::set_effective_context(self.context_id);
    }
}

impl Context for PluginRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(worker) = self.worker.clone() else {
            return;
        };
        if request::call_answered(&worker, token, body_size) {
            let _ = abi::set_effective_context(self.context_id);
            return;
        }
        let headers = abi::pairs(Map::CallResponseHeaders);
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let status = header(":status").and_then(|s| s.trim().parse().ok());
        let cache_control = header("cache-control");
        let body = abi::buffer(Buffer::CallResponseBody, body_size);
        for slot in worker.slots.borrow_mut().iter_mut() {
            if slot.owns_call(token) {
                let answer = (status, cache_control, body.as_slice());
                keys::on_response(slot, now_ms(), answer, &worker.stats);
                break;
            }
        }
        self.drive_keys();
    }
}

impl RootContext for PluginRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = abi::buffer(Buffer::PluginConfiguration, usize::MAX);
        let text = String::from_utf8_lossy(&bytes);
        match Gateway::from_json(&text) {
            Ok(gateway) => {
                for server in &gateway.servers {
                    let policy = &server.policy;
                    log(
                        LogLevel::Info,
                        &format!(
                            "mcp_authz: configured for resource {}{} with {} provider(s) and {} rule(s)",
                            policy.resource,
                            policy
                                .server_name
                                .as_ref()
                                .map(|n| format!(" (server {n})"))
                                .unwrap_or_default(),
                            policy.providers.len(),
                            policy.rules.len()
                        ),
                    );
                }
                // Providers are shared by every server: once each.
                for provider in gateway.providers() {
                    for why in &provider.skipped_keys {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "mcp_authz: provider {}: skipped an inline key: {why}",
                                provider.issuer
                            ),
                        );
                    }
                }
                let stats = Stats::define(&gateway);
                self.worker = Some(Rc::new(Worker::new(gateway, stats, now_ms())));
                let _ = abi::set_tick_period_ms(TICK_MS);
                self.drive_keys();
                true
            }
            Err(e) => {
                log(
                    LogLevel::Critical,
                    &format!("mcp_authz: configuration refused: {e}"),
                );
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.drive_keys();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Without a configuration every request is refused (fail closed).
        Some(Box::new(RequestFilter::new(
            context_id,
            self.worker.clone(),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
