//! Several protected MCP servers in one configuration (README "Several
//! servers behind one filter"): the `servers` list, each entry compiled into
//! its own [`Policy`] with the shared providers, and what a request that
//! matches none of them gets. A configuration without `servers` is one
//! server that every request is for, exactly as before the list existed.

use super::object::Obj;
use super::parse::{compile_server, parse_max_body_bytes, parse_providers, Shared};
use super::publish::{parse_publish, Publish};
use super::{ConfigError, Policy, Provider, MATCH_KEYS, SERVER_KEYS, SHARED_KEYS, TOP_LEVEL_KEYS};
use crate::servers::canonical_path;

/// The whole configuration: the protected servers, how requests that match
/// none are treated, and what is published for the rest of the chain.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// At least one. Without a `servers` list, exactly one, matching every
    /// request.
    pub servers: Vec<Server>,
    /// Whether the configuration lists servers (`servers`).
    pub listed: bool,
    pub unmatched: Unmatched,
    pub publish: Option<Publish>,
}

/// One protected server: which requests are its, and its policy.
#[derive(Debug, Clone)]
pub struct Server {
    pub matcher: ServerMatch,
    pub policy: Policy,
}

/// The requests a server takes: its hosts (any, when empty) and the paths
/// under its prefix, segment by segment (`/github` takes `/github` and
/// `/github/mcp`, not `/githubx`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMatch {
    pub hosts: Vec<HostPattern>,
    /// Starts with `/`; no trailing `/` unless it is `/` (every path).
    pub path_prefix: String,
}

/// A `match.hosts` entry: `mcp.example.com`, `*.example.com` (any host
/// under it, not itself), each with `:port`, `:*` (any port) or no port
/// (a request whose authority names none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower-case; for a wildcard, the suffix with its leading dot
    /// (`.example.com`).
    pub host: String,
    pub wildcard: bool,
    pub port: PortPattern,
}

/// The port part of a host pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortPattern {
    /// The authority names no port.
    None,
    /// Any port, or none.
    Any,
    Exact(u16),
}

/// What becomes of a request that matches no server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmatched {
    /// 404 with a JSON-RPC error: nothing unknown reaches an upstream.
    Refuse,
    /// On untouched (but for client copies of the headers the filter sets):
    /// for listeners that carry other traffic too.
    Pass,
}

impl Gateway {
    /// Parses and validates the plugin configuration.
    pub fn from_json(text: &str) -> Result<Gateway, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError {
            field: String::new(),
            message: format!("not valid JSON: {e}"),
        })?;
        Gateway::from_value(&value)
    }

    /// Validates an already-parsed configuration value.
    pub fn from_value(value: &serde_json::Value) -> Result<Gateway, ConfigError> {
        let top = Obj::new(value, "")?;
        let gateway = if top.get("servers").is_some() {
            listed(&top)?
        } else {
            single(&top)?
        };
        check_publish_headers(&top, &gateway)?;
        Ok(gateway)
    }

    /// A gateway of one server that takes every request.
    pub fn single(policy: Policy) -> Gateway {
        Gateway {
            servers: vec![Server {
                matcher: ServerMatch::everything(),
                policy,
            }],
            listed: false,
            unmatched: Unmatched::Refuse,
            publish: None,
        }
    }

    /// The policy of a configuration of one server.
    pub fn into_single(self) -> Result<Policy, ConfigError> {
        match (self.listed, self.servers.into_iter().next()) {
            (false, Some(server)) => Ok(server.policy),
            _ => Err(ConfigError {
                field: "servers".into(),
                message: "lists servers: this reads a configuration of one server".into(),
            }),
        }
    }

    /// The trusted issuers, shared by every server (their `audiences` are
    /// the first server's; each server's own are in its policy). Their
    /// order is the key ring's.
    pub fn providers(&self) -> &[Provider] {
        self.servers
            .first()
            .map(|s| s.policy.providers.as_slice())
            .unwrap_or_default()
    }
}

impl ServerMatch {
    /// Every request.
    pub fn everything() -> ServerMatch {
        ServerMatch {
            hosts: Vec::new(),
            path_prefix: "/".into(),
        }
    }
}

/// A configuration without `servers`: its top level is the one server.
fn single(top: &Obj) -> Result<Gateway, ConfigError> {
    top.only(TOP_LEVEL_KEYS)?;
    if top.get("unmatched").is_some() {
        return Err(top.error(
            "unmatched",
            "is only used with `servers` (one server takes every request)".into(),
        ));
    }
    let resource = top.required_str("resource")?.to_string();
    let shared = Shared {
        providers: parse_providers(top, Some(&resource))?,
        max_body_bytes: parse_max_body_bytes(top)?,
        server_name: None,
        server_index: 0,
    };
    let policy = compile_server(top, resource, shared)?;
    let mut gateway = Gateway::single(policy);
    gateway.publish = parse_publish(top)?;
    Ok(gateway)
}

/// A configuration with `servers`: shared keys at the top, each server's
/// own in its entry.
fn listed(top: &Obj) -> Result<Gateway, ConfigError> {
    if let Some(key) = top
        .map
        .keys()
        .find(|k| !SHARED_KEYS.contains(&k.as_str()) && SERVER_KEYS.contains(&k.as_str()))
    {
        return Err(top.error(
            key,
            "belongs in each entry of `servers` when servers are listed".into(),
        ));
    }
    top.only(SHARED_KEYS)?;
    let providers = parse_providers(top, None)?;
    let max_body_bytes = parse_max_body_bytes(top)?;
    let unmatched = top.choice(
        "unmatched",
        &[("refuse", Unmatched::Refuse), ("pass", Unmatched::Pass)],
    )?;
    let mut servers: Vec<Server> = Vec::new();
    for (i, value) in top.required_list("servers")?.iter().enumerate() {
        let obj = Obj::new(value, &format!("servers[{i}]"))?;
        obj.only(SERVER_KEYS)?;
        let name = obj.required_str("name")?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(obj.error(
                "name",
                "must be 1 to 64 letters, digits, '_' or '-' (it names counters)".into(),
            ));
        }
        if servers
            .iter()
            .any(|s| s.policy.server_name.as_deref() == Some(name))
        {
            return Err(obj.error("name", format!("{name:?} names another server too")));
        }
        let matcher = parse_match(&obj)?;
        let resource = obj.required_str("resource")?.to_string();
        if servers.iter().any(|s| s.policy.resource == resource) {
            return Err(obj.error(
                "resource",
                "is another server's too: each server is its own protected resource".into(),
            ));
        }
        let audiences = obj
            .optional_str_list("audiences")?
            .unwrap_or_else(|| vec![resource.clone()]);
        let mut own = providers.clone();
        for provider in &mut own {
            provider.audiences = audiences.clone();
        }
        let shared = Shared {
            providers: own,
            max_body_bytes,
            server_name: Some(name.to_string()),
            server_index: i,
        };
        let policy = compile_server(&obj, resource, shared)?;
        for (j, path) in policy.public_paths.iter().enumerate() {
            if !under_prefix(&matcher.path_prefix, path) {
                return Err(obj.error(
                    &format!("public_paths[{j}]"),
                    format!(
                        "is not under the server's path_prefix {:?}: no request for it reaches this server",
                        matcher.path_prefix
                    ),
                ));
            }
        }
        if let Some(other) = servers.iter().find(|s| overlaps(&s.matcher, &matcher)) {
            return Err(obj.error(
                "match",
                format!(
                    "takes the same requests as server {:?}: no request could tell them apart",
                    other.policy.server_name.as_deref().unwrap_or_default()
                ),
            ));
        }
        servers.push(Server { matcher, policy });
    }
    Ok(Gateway {
        servers,
        listed: true,
        unmatched,
        publish: parse_publish(top)?,
    })
}

/// `match`: `hosts` and `path_prefix`.
fn parse_match(server: &Obj) -> Result<ServerMatch, ConfigError> {
    let obj = server.required_obj("match")?;
    obj.only(MATCH_KEYS)?;
    let mut hosts = Vec::new();
    for (i, text) in obj
        .optional_str_list("hosts")?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let pattern = parse_host(text).map_err(|m| obj.error(&format!("hosts[{i}]"), m))?;
        if !hosts.contains(&pattern) {
            hosts.push(pattern);
        }
    }
    let path_prefix = obj.optional_str("path_prefix")?.unwrap_or("/").to_string();
    // A prefix in another form than the one requests are compared in
    // could never be told apart from its look-alikes.
    let normal = path_prefix.starts_with('/')
        && (path_prefix == "/" || !path_prefix.ends_with('/'))
        && canonical_path(&path_prefix) == path_prefix.to_ascii_lowercase();
    if !normal {
        return Err(obj.error(
            "path_prefix",
            format!("{path_prefix:?} must be a path in normal form: starting with '/', no trailing '/', no empty, '.' or '..' segment, no '%', '\\\\' or ';'"),
        ));
    }
    Ok(ServerMatch { hosts, path_prefix })
}

/// One `hosts` entry.
fn parse_host(text: &str) -> Result<HostPattern, String> {
    let bad = || {
        format!("{text:?} is not a host name, `*.` and a domain, or either with `:port` or `:*`")
    };
    let (host, port) = match text.rsplit_once(':') {
        // An IPv6 literal keeps its colons inside the brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (text, None),
    };
    let port = match port {
        None => PortPattern::None,
        Some("*") => PortPattern::Any,
        Some(digits) => match digits.parse::<u16>() {
            Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => PortPattern::Exact(n),
            _ => return Err(bad()),
        },
    };
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    let ipv6 = name.starts_with('[')
        && name.ends_with(']')
        && name[1..name.len() - 1]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    let dns = !name.is_empty()
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !(dns || (ipv6 && !wildcard)) {
        return Err(bad());
    }
    let name = name.to_ascii_lowercase();
    Ok(HostPattern {
        host: if wildcard { format!(".{name}") } else { name },
        wildcard,
        port,
    })
}

/// Whether a request path falls under a prefix, segment by segment.
pub fn under_prefix(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Two matches no request could tell apart: the same prefix (in any case)
/// and a host pattern in common (or both any host).
fn overlaps(a: &ServerMatch, b: &ServerMatch) -> bool {
    if !a.path_prefix.eq_ignore_ascii_case(&b.path_prefix) {
        return false;
    }
    match (a.hosts.is_empty(), b.hosts.is_empty()) {
        (true, true) => true,
        (false, false) => a.hosts.iter().any(|h| {
            b.hosts
                .iter()
                .any(|g| g.host == h.host && g.wildcard == h.wildcard)
        }),
        _ => false,
    }
}

/// A published header is set by the filter: it must not be an identity
/// header of some server too (one would overwrite the other).
fn check_publish_headers(top: &Obj, gateway: &Gateway) -> Result<(), ConfigError> {
    let Some(publish) = &gateway.publish else {
        return Ok(());
    };
    for (name, _) in &publish.headers {
        let clash = gateway.servers.iter().any(|s| {
            s.policy
                .identity_headers
                .iter()
                .any(|h| crate::gate::same_header(&h.name, name))
        });
        if clash {
            return Err(top.error(
                &format!("publish.headers.{name}"),
                "is an identity header too (identity_headers)".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
