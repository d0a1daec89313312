//! The only code that talks to the proxy: it hands Envoy's callbacks to the
//! core (`exchange` for each request, `keys::fetch` for the key sets) and
//! carries out what the core answers with proxy-wasm calls. It decides
//! nothing itself.

mod abi;
mod keys;
mod request;
mod root;
mod stats;
mod worker;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| Box::new(root::PluginRoot::new(context_id)));
}}

/// Milliseconds since the Unix epoch, from the host's clock.
pub(crate) fn now_ms() -> u64 {
    abi::now_ms()
}

pub(crate) fn log(level: LogLevel, message: &str) {
    abi::log(level as u32, message);
}
