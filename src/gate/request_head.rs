//! A request's head as the filter reads it: method, path, headers, and the
//! spellings under which an HTTP stack may read a header name.

/// What the filter knows of a request before its body: method, path without
/// query, and the headers (names lower-case, as Envoy gives them).
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// The method as sent (HTTP/2 lets a client send `post`).
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// A body (or trailers) follows the headers: they did not end the stream.
    pub has_body: bool,
}

/// The request methods the filter tells apart, whatever their case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Post,
    Get,
    Delete,
    Options,
    Head,
    Other,
}

impl RequestHead {
    /// Splits `:path` into path and query, and keeps the headers, their
    /// values without leading or trailing spaces and tabs: they are no part
    /// of a field value (RFC 9110, section 5.5), and an HTTP/1.1 hop drops
    /// them, so a server reads `MCP-Protocol-Version: " 2026-07-28"` (which
    /// HTTP/2 carries as it is) as `2026-07-28`; the filter must too.
    pub fn new(
        method: &str,
        path_and_query: &str,
        mut headers: Vec<(String, String)>,
    ) -> RequestHead {
        for (_, value) in &mut headers {
            let trimmed = value.trim_matches([' ', '\t']);
            if trimmed.len() != value.len() {
                *value = trimmed.to_string();
            }
        }
        let path = crate::uri::path_of(path_and_query).to_string();
        RequestHead {
            method: method.to_string(),
            path,
            headers,
            has_body: false,
        }
    }

    /// The method, recognised whatever its case: an upstream may read `post`
    /// as POST, so the filter must too.
    pub fn verb(&self) -> Verb {
        let m = self.method.as_str();
        if m.eq_ignore_ascii_case("POST") {
            Verb::Post
        } else if m.eq_ignore_ascii_case("GET") {
            Verb::Get
        } else if m.eq_ignore_ascii_case("DELETE") {
            Verb::Delete
        } else if m.eq_ignore_ascii_case("OPTIONS") {
            Verb::Options
        } else if m.eq_ignore_ascii_case("HEAD") {
            Verb::Head
        } else {
            Verb::Other
        }
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header in any spelling an HTTP stack could read as
    /// `name` (case, `_` for `-`), in order.
    pub fn header_values_any_spelling(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| same_header(n, name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every value of a header, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Whether two header names are the same to some HTTP stack: case and `_`
/// for `-` aside (CGI-style servers fold `x_mcp_roles` into `X-Mcp-Roles`).
pub fn same_header(a: &str, b: &str) -> bool {
    let fold = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| fold(x) == fold(y))
}
