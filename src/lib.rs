//! mcp-authz: an Envoy proxy-wasm filter that makes an MCP server an OAuth 2.1
//! resource server. Everything outside `host` is plain Rust, natively tested;
//! `host` is the only code that talks to the proxy.

pub mod answer;
pub mod config;
pub mod discovery;
pub mod explain;
pub mod gate;
pub mod glob;
pub mod identity;
pub mod jwks;
pub mod key_schedule;
pub mod lists;
pub mod mcp;
pub mod policy;
pub mod signature;
pub mod token;
pub mod token_cache;

#[cfg(target_arch = "wasm32")]
mod host;
