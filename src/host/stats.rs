//! Envoy stats for the core's counters (`counters::Counter`), defined once
//! per VM from the core's table. Envoy shows them under
//! `wasmcustom.mcp_authz.*` in `/stats`, and as `mcp_authz_*` in
//! `/stats/prometheus`: `wasmcustom` is a custom stat namespace, which the
//! Prometheus output strips, without adding its `envoy_` prefix (seen in
//! Envoy 1.36.4 and 1.40.0: `mcp_authz_denied_no_token{} 1`).

use super::abi;
use crate::counters::Counter;

/// Metric ids of this VM, in the order of `Counter::ALL`.
pub struct Stats {
    ids: Vec<u32>,
}

impl Stats {
    pub fn define() -> Stats {
        Stats {
            ids: Counter::ALL
                .iter()
                .map(|c| abi::define_counter(&format!("mcp_authz.{}", c.name())).unwrap_or(0))
                .collect(),
        }
    }

    /// The metric id of a counter (0: none).
    fn id(&self, counter: Counter) -> u32 {
        counter
            .slot()
            .and_then(|i| self.ids.get(i).copied())
            .unwrap_or(0)
    }

    pub fn add(&self, counter: Counter, n: u64) {
        let id = self.id(counter);
        if id != 0 && n > 0 {
            let _ = abi::increment_counter(id, n as i64);
        }
    }

    pub fn bump(&self, counter: Counter) {
        self.add(counter, 1);
    }
}
