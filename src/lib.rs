//! mcp-authz: an Envoy proxy-wasm filter that makes an MCP server an OAuth 2.1
//! resource server. Everything outside `host` is plain Rust, natively tested;
//! `host` is the only code that talks to the proxy.
//!
//! # Layout
//!
//! The request path, in the order the README's "Request handling" reads:
//!
//! - **drive**: [`exchange`] — the state machine every Envoy callback of a
//!   request and its answer goes through; it calls the steps below in order
//!   and says what the host must do. `explain` drives the same machine.
//! - **route**: [`gate::route`] — metadata paths, public paths, preflights,
//!   methods.
//! - **extract, verify**: [`token`] (bearer header, JWT checks) with keys
//!   from [`keys`] (typed keys, discovery, fetching, sharing, refresh
//!   schedule), remembered in [`token_cache`]; the caller becomes an
//!   [`identity::Identity`].
//! - **parse**: [`mcp`] — the JSON-RPC body, strictly ([`json`]), and the
//!   `Mcp-Method` / `Mcp-Name` header checks.
//! - **decide**: [`policy`] over the rules compiled by [`config`] (globs in
//!   [`glob`]).
//! - **answer**: [`answer`] — statuses, challenges, JSON-RPC errors, the
//!   metadata document; [`lists`] filters list answers; counters are named in
//!   [`counters`].

pub mod answer;
pub mod authorization_server;
pub mod condition;
pub mod config;
pub mod counters;
pub mod dpop;
pub mod exchange;
pub mod explain;
pub mod gate;
pub mod glob;
pub mod header_pairs;
pub mod identity;
pub mod json;
pub mod keys;
pub mod lists;
pub mod mcp;
pub mod media;
pub mod policy;
pub mod publish;
pub mod servers;
pub mod shared_data;
pub mod signature;
pub mod token;
pub mod token_cache;
pub mod uri;

#[cfg(target_arch = "wasm32")]
mod host;
