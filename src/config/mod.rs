//! Plugin configuration (README "Configuration reference"): the JSON parsed
//! strictly (`parse`, reading objects with `object`) and compiled into a
//! [`Gateway`] — one [`Policy`] per protected server (`servers`), and how
//! requests find theirs — that the request path uses as is.

mod authorization_server;
mod object;
mod parse;
mod publish;
mod servers;

pub use publish::{CallField, Publish};
pub use servers::{
    under_prefix, Gateway, HostPattern, PortPattern, Server, ServerMatch, Unmatched,
};

pub use authorization_server::{
    Client, ClientAuth, ClientKey, Endpoint, Introspection, Secret, UpstreamToken,
};

use crate::glob::Glob;
use crate::keys::jwks::{Algorithm, KeySet};

/// Everything the filter needs to decide on a request for one protected
/// server, validated and compiled once.
#[derive(Debug, Clone)]
pub struct Policy {
    pub resource: String,
    /// RFC 9728 metadata URL, the path-inserted form for `resource`.
    pub metadata_url: String,
    /// Request paths that serve the metadata document (path-inserted and root).
    pub metadata_paths: Vec<String>,
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub resource_name: Option<String>,
    pub resource_documentation: Option<String>,
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub filter_lists: bool,
    pub token_forwarding: TokenForwarding,
    pub identity_headers: Vec<IdentityHeader>,
    pub max_body_bytes: usize,
    pub mode: Mode,
    pub public_paths: Vec<String>,
    /// The token the upstream gets in place of the caller's, by token
    /// exchange (RFC 8693); `None`: the upstream gets none.
    pub upstream_token: Option<UpstreamToken>,
    pub scope_implies: ScopeImplies,
    /// The server's `name` when servers are listed (`None` for a
    /// configuration of one server); logs and counters name it.
    pub server_name: Option<String>,
    /// Its place in the list (0 for a configuration of one server): what
    /// is remembered for one server (a verified token, whose audience is
    /// the server's) is never used for another.
    pub server_index: usize,
}

/// The scope hierarchy: what each broad scope stands for, transitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeImplies {
    pub closure: std::collections::BTreeMap<String, Vec<String>>,
}

impl ScopeImplies {
    /// The scopes `held` implies and that are not held themselves, in
    /// first-seen order.
    pub fn implied_by(&self, held: &[String]) -> Vec<String> {
        let mut implied: Vec<String> = Vec::new();
        for scope in held {
            for narrower in self.closure.get(scope).into_iter().flatten() {
                if !held.contains(narrower) && !implied.contains(narrower) {
                    implied.push(narrower.clone());
                }
            }
        }
        implied
    }
}

/// An RFC 6749 scope-token: printable ASCII without space, `"` or `\`
/// (so it stands in a challenge's quoted `scope` as it is).
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// The refresh-token scope: never advertised, never asked for in a
/// challenge (MCP 2026-07-28).
pub const OFFLINE_ACCESS: &str = "offline_access";

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct Provider {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Where JWT access tokens are verified from; `None` for a provider
    /// whose tokens are only introspected.
    pub jwks: Option<JwksSource>,
    /// Opaque tokens (and, without `jwks`, every token of this issuer) are
    /// validated by RFC 7662 introspection.
    pub introspection: Option<Introspection>,
    /// Accepted algorithms; never `none` nor HMAC.
    pub algorithms: Vec<Algorithm>,
    pub clock_skew_seconds: u64,
    /// Each entry is a dot-path split into segments, e.g. `["realm_access", "roles"]`.
    pub roles_claims: Vec<Vec<String>>,
    pub scopes_claim: String,
    /// Accepted JWT `typ` values, lower-case, without an `application/`
    /// prefix (RFC 7515 4.1.9 makes it optional).
    pub token_types: Vec<String>,
    /// Whether a token without `typ` is refused.
    pub require_token_type: bool,
    /// DPoP (RFC 9449): whether its tokens may or must be bound to a key.
    pub dpop: crate::dpop::DpopPolicy,
    /// Why each unusable key of an inline `jwks` was left out (never key
    /// material): logged when the configuration loads, as a fetched key
    /// set's are when it arrives.
    pub skipped_keys: Vec<String>,
}

/// Where a provider's keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    Inline(KeySet),
    Remote(RemoteJwks),
}

/// A JWKS fetched through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub cluster: String,
    /// `None`: discover it from the issuer (RFC 8414, then OpenID discovery).
    pub url: Option<String>,
    pub refresh_seconds: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One authorization rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub methods: Vec<Glob>,
    /// `None`: the rule matches whatever the name.
    pub names: Option<Vec<Glob>>,
    /// `None`: no role needed. Otherwise any one of them.
    pub roles: Option<Vec<String>>,
    /// `None`: no scope needed. Otherwise all of them.
    pub scopes: Option<Vec<String>>,
    /// `None`: no condition. Otherwise the rule matches only when it is true.
    pub when: Option<crate::condition::Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenForwarding {
    Strip,
    Forward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

/// A header the filter sets upstream from the verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name.
    pub name: String,
    pub source: ClaimSource,
}

/// What an identity header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    /// A dot-path into the token's claims.
    Claim(Vec<String>),
    Roles,
    Scopes,
    Issuer,
}

/// A refused configuration: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// JSON path of the offending field, e.g. `providers[0].jwks.remote.cluster`.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            write!(f, "configuration: {}", self.message)
        } else {
            write!(f, "configuration field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Defaults named once, shared by the parser and the README check.
pub mod defaults {
    pub const CLOCK_SKEW_SECONDS: u64 = 60;
    pub const REFRESH_SECONDS: u64 = 300;
    pub const TIMEOUT_MS: u64 = 2000;
    pub const MAX_BODY_BYTES: u64 = 1024 * 1024;
    pub const ROLES_CLAIM: &str = "roles";
    pub const SCOPES_CLAIM: &str = "scope";
    /// RFC 9068 access tokens, and issuers that type every JWT as `JWT`.
    pub const TOKEN_TYPES: &[&str] = &["at+jwt", "jwt"];
    /// Upper bounds that catch typos (a skew of hours, a 1 GiB body) before they
    /// become a security or memory problem.
    pub const MAX_CLOCK_SKEW_SECONDS: u64 = 600;
    pub const MAX_BODY_BYTES_LIMIT: u64 = 64 * 1024 * 1024;
    pub const MAX_TIMEOUT_MS: u64 = 60_000;
    pub const MIN_REFRESH_SECONDS: u64 = 10;
    /// How long an introspection answer "active" is reused at most.
    pub const INTROSPECTION_CACHE_SECONDS: u64 = 60;
    pub const MAX_INTROSPECTION_CACHE_SECONDS: u64 = 3600;
    /// The header the exchanged token goes upstream in.
    pub const UPSTREAM_TOKEN_HEADER: &str = "authorization";
    pub const MAX_REFRESH_SECONDS: u64 = 7 * 24 * 3600;
    /// A DPoP proof's `iat` may be this far from now, either way (the MCP
    /// DPoP extension's ±5 minutes), and at most the maximum.
    pub const DPOP_IAT_WINDOW_SECONDS: u64 = 300;
    pub const MAX_DPOP_IAT_WINDOW_SECONDS: u64 = 600;
    /// How long a DPoP server nonce is good, and its bounds.
    pub const DPOP_NONCE_LIFETIME_SECONDS: u64 = 60;
    pub const MIN_DPOP_NONCE_LIFETIME_SECONDS: u64 = 5;
    pub const MAX_DPOP_NONCE_LIFETIME_SECONDS: u64 = 600;
}

/// The top-level keys, in the order the README's reference lists them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "resource",
    "authorization_servers",
    "scopes_supported",
    "resource_name",
    "resource_documentation",
    "providers",
    "rules",
    "filter_lists",
    "token_forwarding",
    "identity_headers",
    "max_body_bytes",
    "mode",
    "public_paths",
    "upstream_token",
    "scope_implies",
    "publish",
    "servers",
    "unmatched",
];

/// The top-level keys beside `servers`: what every server shares.
pub const SHARED_KEYS: &[&str] = &[
    "servers",
    "unmatched",
    "providers",
    "max_body_bytes",
    "publish",
];

/// Keys of one `servers[]` entry: the server's own (the single-server
/// top-level keys it may set, with `name`, `match` and `audiences`).
pub const SERVER_KEYS: &[&str] = &[
    "name",
    "match",
    "resource",
    "audiences",
    "authorization_servers",
    "scopes_supported",
    "resource_name",
    "resource_documentation",
    "rules",
    "filter_lists",
    "token_forwarding",
    "identity_headers",
    "mode",
    "public_paths",
    "upstream_token",
    "scope_implies",
];

/// Keys of `servers[].match`.
pub const MATCH_KEYS: &[&str] = &["hosts", "path_prefix"];

/// Keys of `publish`.
pub const PUBLISH_KEYS: &[&str] = &["filter_state", "headers"];

/// Keys of one `providers[]` entry.
pub const PROVIDER_KEYS: &[&str] = &[
    "issuer",
    "audiences",
    "jwks",
    "algorithms",
    "clock_skew_seconds",
    "roles_claims",
    "scopes_claim",
    "token_types",
    "require_token_type",
    "introspection",
    "dpop",
    "dpop_algorithms",
    "dpop_iat_window_seconds",
    "dpop_nonce",
];

/// Keys of `providers[].dpop_nonce`.
pub const DPOP_NONCE_KEYS: &[&str] = &["keys", "lifetime_seconds"];

/// Keys of `providers[].jwks.remote`.
pub const REMOTE_JWKS_KEYS: &[&str] = &["cluster", "url", "refresh_seconds", "timeout_ms"];

/// Keys of `providers[].introspection`.
pub const INTROSPECTION_KEYS: &[&str] = &[
    "cluster",
    "url",
    "client_id",
    "client_auth",
    "client_secret",
    "client_secret_env",
    "client_key",
    "client_key_env",
    "timeout_ms",
    "cache_seconds",
];

/// Keys of `upstream_token`.
pub const UPSTREAM_TOKEN_KEYS: &[&str] = &[
    "provider",
    "cluster",
    "token_endpoint",
    "client_id",
    "client_auth",
    "client_secret",
    "client_secret_env",
    "client_key",
    "client_key_env",
    "audience",
    "resource",
    "scope",
    "header",
    "timeout_ms",
    "cache",
];

/// Keys of one `rules[]` entry.
pub const RULE_KEYS: &[&str] = &[
    "name", "effect", "methods", "names", "roles", "scopes", "when",
];

/// Headers an operator may not have the filter set from claims: they carry
/// the request's framing, routing or credentials.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "mcp-protocol-version",
    "dpop",
];

#[cfg(test)]
mod tests;
