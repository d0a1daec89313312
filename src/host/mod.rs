//! The only code that talks to the proxy: it hands Envoy's callbacks to the
//! core (`exchange` for each request, `keys::fetch` for the key sets) and
//! carries out what the core answers with proxy-wasm calls. It decides
//! nothing itself.

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
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}
