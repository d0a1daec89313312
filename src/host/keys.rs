//! The key fetcher's view of the proxy (`keys::fetch::Proxy`): proxy-wasm
//! shared data, calls through Envoy clusters, the log and the counters.

use super::abi;
use super::log;
use super::stats::Stats;
use crate::counters::Counter;
use crate::exchange::Level;
use crate::keys::fetch::Proxy;
use crate::shared_data::SharedData;
use proxy_wasm::types::LogLevel;

pub struct HostProxy<'a> {
    pub stats: &'a Stats,
}

/// Shared data through proxy-wasm: the authorization server's answers and
/// the DPoP replay memory.
pub struct HostShared;

impl SharedData for HostShared {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        abi::shared_get(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        abi::shared_set(key, value, cas).is_ok()
    }
}

impl Proxy for HostProxy<'_> {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        abi::shared_get(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        abi::shared_set(key, value, cas).is_ok()
    }

    fn dispatch(
        &mut self,
        cluster: &str,
        authority: &str,
        path: &str,
        timeout_ms: u64,
    ) -> Result<u32, String> {
        let headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", authority),
            ("accept", "application/json"),
        ];
        abi::http_call(cluster, &headers, None, timeout_ms)
            .map_err(|failed| format!("status {}", failed.0))
    }

    fn log(&mut self, level: Level, line: &str) {
        log(
            match level {
                Level::Info => LogLevel::Info,
                Level::Warn => LogLevel::Warn,
            },
            line,
        );
    }

    fn count(&mut self, counter: Counter) {
        self.stats.bump(counter);
    }
}
