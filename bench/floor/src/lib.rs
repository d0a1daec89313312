//! The floor of a proxy-wasm HTTP filter in Envoy, for bench/run.py.
//!
//! "pass" continues on every callback; "hold" does the host work of the
//! filter's call path (one call for all headers, the body held and read,
//! header edits) and decides nothing. Comparing them with bare Envoy and
//! with mcp_authz separates the ABI's cost from the filter's own.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { hold: false }) });
}}

struct Root {
    hold: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        self.hold = config.as_slice() == b"hold";
        true
    }

    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        if self.hold {
            Some(Box::new(Hold))
        } else {
            Some(Box::new(Pass))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Pass;

impl Context for Pass {}

impl HttpContext for Pass {}

struct Hold;

impl Context for Hold {}

impl HttpContext for Hold {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let headers = self.get_http_request_headers();
        if end_of_stream || headers.is_empty() {
            return self.edit_headers();
        }
        Action::Pause
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        if body.is_empty() {
            self.set_http_request_header("x-floor-empty", Some("1"));
        }
        self.edit_headers()
    }
}

impl Hold {
    fn edit_headers(&self) -> Action {
        self.set_http_request_header("authorization", None);
        self.set_http_request_header("x-mcp-subject", Some("bench"));
        self.set_http_request_header("x-mcp-roles", Some("reader"));
        Action::Continue
    }
}
