//! Which configured server a request is for (README "Several servers
//! behind one filter"). The request's authority picks among the servers'
//! hosts and its path among their prefixes; URLs are never built from
//! either (they come from each server's `resource`).
//!
//! A path is matched as it is, case and all, the way Envoy's router
//! matches it. Because some component on the way may read it more
//! leniently (decoding `%2F`, resolving `..`, folding case, dropping a
//! trailing dot from the host), the request is matched a second time in
//! that lenient form ([`canonical_path`]): when the two disagree the
//! request is refused, so that no look-alike path can be decided under one
//! server's policy and served by another's upstream.

mod canonical;

pub use canonical::canonical_path;

use crate::config::{Gateway, HostPattern, PortPattern, ServerMatch};
use crate::gate::RequestHead;

/// The root of the RFC 9728 well-known URIs.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The server a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// This server's (index in `Gateway::servers`).
    Server(usize),
    /// The root metadata URI on a host with this one server: its document.
    RootMetadata(usize),
    /// No server takes it.
    Unmatched,
    /// It matches differently as sent and in its lenient form: refused.
    Ambiguous,
}

/// Picks the server for a request.
pub fn select(gateway: &Gateway, head: &RequestHead) -> Selection {
    if !gateway.listed {
        return Selection::Server(0);
    }
    let authority = head
        .header(":authority")
        .or_else(|| head.header("host"))
        .unwrap_or_default();
    let (host, port) = split_authority(authority);
    let host = host.to_ascii_lowercase();
    let path = head.path.as_str();

    // A server's own metadata URI (path-inserted, RFC 9728 §3.1) is its,
    // wherever its prefix lies.
    let owners = gateway.servers.iter().enumerate().filter(|(_, s)| {
        s.policy.metadata_paths.first().map(String::as_str) == Some(path)
            && admits_host(&s.matcher, &host, port)
    });
    if let Some(i) = most_specific(gateway, owners.map(|(i, _)| i), &host) {
        return Selection::Server(i);
    }
    if path == WELL_KNOWN {
        let on_host: Vec<usize> = (0..gateway.servers.len())
            .filter(|&i| admits_host(&gateway.servers[i].matcher, &host, port))
            .collect();
        return match on_host[..] {
            [only] => Selection::RootMetadata(only),
            _ => Selection::Unmatched,
        };
    }

    let exact = most_specific(
        gateway,
        (0..gateway.servers.len()).filter(|&i| {
            let m = &gateway.servers[i].matcher;
            admits_host(m, &host, port) && crate::config::under_prefix(&m.path_prefix, path)
        }),
        &host,
    );
    let lenient_host = host.trim_end_matches('.');
    let lenient_path = canonical_path(path);
    let lenient = most_specific(
        gateway,
        (0..gateway.servers.len()).filter(|&i| {
            let m = &gateway.servers[i].matcher;
            admits_host_leniently(m, lenient_host)
                && crate::config::under_prefix(&m.path_prefix.to_ascii_lowercase(), &lenient_path)
        }),
        lenient_host,
    );
    match (exact, lenient) {
        (Some(a), Some(b)) if a == b => Selection::Server(a),
        (None, None) => Selection::Unmatched,
        _ => Selection::Ambiguous,
    }
}

/// `host[:port]`, `[v6][:port]`: the host and the port, if any.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    let colon = if authority.starts_with('[') {
        authority
            .find(']')
            .and_then(|end| authority[end..].find(':').map(|c| end + c))
    } else {
        authority.rfind(':')
    };
    match colon {
        Some(at) => (&authority[..at], Some(&authority[at + 1..])),
        None => (authority, None),
    }
}

fn admits_host(matcher: &ServerMatch, host: &str, port: Option<&str>) -> bool {
    matcher.hosts.is_empty()
        || matcher.hosts.iter().any(|p| {
            host_matches(p, host)
                && match (p.port, port) {
                    (PortPattern::Any, _) => true,
                    (PortPattern::None, None) => true,
                    (PortPattern::Exact(n), Some(text)) => text == n.to_string(),
                    _ => false,
                }
        })
}

/// Ports aside, and the host already lenient (no trailing dot).
fn admits_host_leniently(matcher: &ServerMatch, host: &str) -> bool {
    matcher.hosts.is_empty() || matcher.hosts.iter().any(|p| host_matches(p, host))
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    if pattern.wildcard {
        host.len() > pattern.host.len() && host.ends_with(&pattern.host)
    } else {
        host == pattern.host
    }
}

/// Of the servers that take a request, the one with the most specific host
/// (an exact host, then the longest wildcard, then any host) and then the
/// longest prefix — the order in which Envoy picks a virtual host, then a
/// route.
fn most_specific(
    gateway: &Gateway,
    candidates: impl Iterator<Item = usize>,
    host: &str,
) -> Option<usize> {
    candidates.max_by_key(|&i| {
        let m = &gateway.servers[i].matcher;
        let host_rank = m
            .hosts
            .iter()
            .filter(|p| host_matches(p, host))
            .map(|p| {
                if p.wildcard {
                    1 + p.host.len()
                } else {
                    usize::MAX
                }
            })
            .max()
            .unwrap_or(0);
        (host_rank, m.path_prefix.len())
    })
}

#[cfg(test)]
mod tests;
