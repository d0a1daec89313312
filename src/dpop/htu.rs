//! The proof's `htu` against the request's URI (RFC 9449 §4.3 step 9).
//!
//! The URI the client signed is the external one: its scheme and authority
//! are the configured `resource`'s, never the request's `Host` (behind a
//! TLS-terminating ingress the filter sees another scheme and host than the
//! client used), and its path is the request's. Both sides are normalised
//! as RFC 9449 asks (RFC 3986 §6.2.2 syntax-based and §6.2.3 scheme-based
//! normalisation): scheme and host compared without case, the scheme's
//! default port dropped, an empty path read as `/`, percent-encodings in
//! upper case and decoded where they encode unreserved characters, and dot
//! segments removed. The path is otherwise compared exactly (case, trailing
//! slash). The query and fragment of `htu` are ignored, as the request's
//! query is.

use crate::uri::{path_of, HttpUri};

/// A URI in the normal form `htu` values are compared in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normal(String);

impl Normal {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Normalises an absolute `http(s)` URI, dropping its query and fragment.
/// `None` for anything else (another scheme, no host, characters no URI
/// holds).
pub fn normalize(uri: &str) -> Option<Normal> {
    // Only printable ASCII: a byte outside it is no part of a URI, and
    // percent-encodings are normalised byte by byte below.
    if !path_of(uri)
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return None;
    }
    let HttpUri {
        scheme,
        authority,
        path,
        ..
    } = HttpUri::parse_lenient(uri).ok()?;
    let default_port = if scheme == "https" { "443" } else { "80" };
    let mut authority = normalize_encoding(authority)?.to_ascii_lowercase();
    // `host:` and `host:<default port>` are `host` (the port of an IPv6
    // literal follows its `]`).
    if let Some(colon) = authority.rfind(':') {
        let port = &authority[colon + 1..];
        if !authority[colon..].contains(']') && (port.is_empty() || port == default_port) {
            authority.truncate(colon);
        }
    }
    let path = remove_dot_segments(&normalize_encoding(path)?);
    let path = if path.is_empty() {
        "/".to_string()
    } else {
        path
    };
    Some(Normal(format!("{scheme}://{authority}{path}")))
}

/// Whether the proof's `htu` names the request: the resource's scheme and
/// authority with the request's path (without query).
pub fn matches(htu: &str, resource_origin: &str, request_path: &str) -> bool {
    let request = format!("{resource_origin}{request_path}");
    match (normalize(htu), normalize(&request)) {
        (Some(claimed), Some(actual)) => claimed == actual,
        _ => false,
    }
}

/// Percent-encodings in upper case, and decoded where they encode an
/// unreserved character (`A-Z a-z 0-9 - . _ ~`). `None` for a `%` not
/// followed by two hex digits.
fn normalize_encoding(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3)?;
        let value = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(char::from(value));
        } else {
            out.push('%');
            out.push_str(&std::str::from_utf8(hex).ok()?.to_ascii_uppercase());
        }
        i += 3;
    }
    Some(out)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate().skip(1) {
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    output.pop();
                }
                // A final dot segment leaves a trailing slash.
                if i == last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    if path.starts_with('/') || !output.is_empty() {
        format!("/{}", output.join("/"))
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "https://mcp.example.com";

    #[test]
    fn equivalent_spellings_of_the_request_uri_match() {
        for htu in [
            "https://mcp.example.com/mcp",
            "HTTPS://MCP.Example.COM/mcp",
            "https://mcp.example.com:443/mcp",
            "https://mcp.example.com:/mcp",
            "https://mcp.example.com/%6Dcp",
            "https://mcp.example.com/a/../mcp",
            "https://mcp.example.com/./mcp",
            "https://mcp.example.com/mcp?x=1",
            "https://mcp.example.com/mcp#frag",
        ] {
            assert!(matches(htu, ORIGIN, "/mcp"), "{htu}");
        }
        assert!(matches("https://mcp.example.com", ORIGIN, "/"));
        assert!(matches("https://mcp.example.com/", ORIGIN, ""));
        assert!(matches("https://mcp.example.com/a%2fb", ORIGIN, "/a%2Fb"));
    }

    #[test]
    fn another_host_port_scheme_or_path_does_not_match() {
        for htu in [
            "http://mcp.example.com/mcp",
            "https://mcp.example.com:8443/mcp",
            "https://other.example.com/mcp",
            "https://mcp.example.com.evil/mcp",
            "https://user@mcp.example.com/mcp",
            "https://mcp.example.com/MCP",
            "https://mcp.example.com/mcp/",
            "https://mcp.example.com/mcp/x",
            "https://mcp.example.com/a%2Fmcp",
            "https://mcp.example.com/mcp%",
            "https://mcp.example.com/m cp",
            "/mcp",
            "mcp.example.com/mcp",
            "ftp://mcp.example.com/mcp",
            "",
        ] {
            assert!(!matches(htu, ORIGIN, "/mcp"), "{htu}");
        }
    }

    #[test]
    fn the_resource_port_is_part_of_the_origin() {
        assert!(matches(
            "http://127.0.0.1:8080/mcp",
            "http://127.0.0.1:8080",
            "/mcp"
        ));
        assert!(!matches(
            "http://127.0.0.1/mcp",
            "http://127.0.0.1:8080",
            "/mcp"
        ));
        assert!(matches("http://[::1]:80/mcp", "http://[::1]", "/mcp"));
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
        assert_eq!(remove_dot_segments("/../a"), "/a");
        assert_eq!(remove_dot_segments("/a/.."), "/");
        assert_eq!(remove_dot_segments("/a/."), "/a/");
        assert_eq!(remove_dot_segments(""), "");
    }
}
