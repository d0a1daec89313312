//! Envoy stats for the core's counters (`counters::Counter`), defined once
//! per VM from the core's table. Envoy shows them under
//! `wasmcustom.mcp_authz.*` in `/stats`, and as `mcp_authz_*` in
//! `/stats/prometheus`: `wasmcustom` is a custom stat namespace, which the
//! Prometheus output strips, without adding its `envoy_` prefix (seen in
//! Envoy 1.36.4 and 1.40.0: `mcp_authz_denied_no_token{} 1`).

use super::abi;
use crate::config::Gateway;
use crate::counters::Counter;

/// Metric ids of this VM, in the order of `Counter::ALL`, and each listed
/// server's (allowed, denied).
pub struct Stats {
    ids: Vec<u32>,
    servers: Vec<(u32, u32)>,
}

impl Stats {
    pub fn define(gateway: &Gateway) -> Stats {
        let define = |name: String| abi::define_counter(&format!("mcp_authz.{name}")).unwrap_or(0);
        let servers = gateway
            .servers
            .iter()
            .filter_map(|s| s.policy.server_name.as_deref())
            .map(|name| {
                (
                    define(format!("server.{name}.allowed")),
                    define(format!("server.{name}.denied")),
                )
            })
            .collect();
        Stats {
            ids: Counter::ALL.iter().map(|c| define(c.name())).collect(),
            servers,
        }
    }

    /// The metric id of a counter (0: none).
    fn id(&self, counter: Counter) -> u32 {
        let server = |i: usize| self.servers.get(i).copied();
        match counter {
            Counter::ServerAllowed(i) => server(i).map_or(0, |(allowed, _)| allowed),
            Counter::ServerDenied(i) => server(i).map_or(0, |(_, denied)| denied),
            other => other
                .slot()
                .and_then(|i| self.ids.get(i).copied())
                .unwrap_or(0),
        }
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
