//! URIs as the filter meets them: absolute `http(s)` URIs in the
//! configuration and in discovery documents, and request targets. One
//! splitter for all of them, so a resource, a JWKS URL and a request path are
//! never cut differently in two places.

/// An absolute `http`/`https` URI: a scheme, a non-empty authority, a path
/// (possibly empty) and a query (with its `?`, possibly empty); never a
/// fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpUri<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: &'a str,
}

impl<'a> HttpUri<'a> {
    /// Parses `text`, refusing anything but an absolute `http(s)` URI with a
    /// host, without a fragment, and without characters a URI cannot carry
    /// (whitespace, controls, `"`, `\`).
    pub fn parse(text: &'a str) -> Result<HttpUri<'a>, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("https://") {
            ("https", rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            ("http", rest)
        } else {
            return Err(format!("{text:?} is not an absolute http(s) URI"));
        };
        Self::split(text, scheme, rest)
    }

    /// Parses an absolute `http(s)` URI a client wrote and signed (a DPoP
    /// proof's `htu`), to be compared after normalisation: its scheme in any
    /// case (schemes are case-insensitive, RFC 3986 §3.1), and its query
    /// and fragment dropped, so `query` is always empty. Otherwise as
    /// [`HttpUri::parse`]; `scheme` is `https` or `http`.
    pub fn parse_lenient(text: &'a str) -> Result<HttpUri<'a>, String> {
        let text = path_of(text);
        let (scheme, rest) = text
            .split_once("://")
            .and_then(|(scheme, rest)| {
                if scheme.eq_ignore_ascii_case("https") {
                    Some(("https", rest))
                } else if scheme.eq_ignore_ascii_case("http") {
                    Some(("http", rest))
                } else {
                    None
                }
            })
            .ok_or_else(|| format!("{text:?} is not an absolute http(s) URI"))?;
        Self::split(text, scheme, rest)
    }

    /// The authority, path and query of `rest` (what follows `scheme://` in
    /// `text`).
    fn split(text: &'a str, scheme: &'a str, rest: &'a str) -> Result<HttpUri<'a>, String> {
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err(format!("{text:?} holds characters a URI cannot carry"));
        }
        if text.contains('#') {
            return Err(format!("{text:?} must not have a fragment"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.is_empty() {
            return Err(format!("{text:?} has no host"));
        }
        let query_start = rest.find('?').unwrap_or(rest.len());
        let (path, query) = rest.split_at(query_start);
        Ok(HttpUri {
            scheme,
            authority,
            path,
            query,
        })
    }

    /// `scheme://authority`.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// The `:path` of a request for this URI: its path (`/` when empty) and
    /// query.
    pub fn request_path(&self) -> String {
        let path = if self.path.is_empty() { "/" } else { self.path };
        format!("{path}{}", self.query)
    }
}

/// The path of a request target, without query or fragment.
pub fn path_of(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_uris_split_into_their_parts() {
        let uri = HttpUri::parse("https://idp.example:8443/realms/mcp?x=1").unwrap();
        assert_eq!(
            (uri.scheme, uri.authority, uri.path, uri.query),
            ("https", "idp.example:8443", "/realms/mcp", "?x=1")
        );
        assert_eq!(uri.origin(), "https://idp.example:8443");
        assert_eq!(uri.request_path(), "/realms/mcp?x=1");
        let bare = HttpUri::parse("http://host").unwrap();
        assert_eq!((bare.path, bare.query), ("", ""));
        assert_eq!(bare.request_path(), "/");
        let query_only = HttpUri::parse("http://host?a").unwrap();
        assert_eq!(
            (query_only.authority, query_only.path, query_only.query),
            ("host", "", "?a")
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "ftp://host/x",
            "//host/x",
            "/relative",
            "https:///nohost",
            "https://host/a#frag",
            "https://host/a b",
            "https://host/\"x",
            "https://ho\\st/",
            "",
        ] {
            assert!(HttpUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_uris_take_any_scheme_case_and_drop_query_and_fragment() {
        let uri = HttpUri::parse_lenient("HTTPS://Idp.Example/a?x=1#f").unwrap();
        assert_eq!(
            (uri.scheme, uri.authority, uri.path, uri.query),
            ("https", "Idp.Example", "/a", "")
        );
        assert_eq!(HttpUri::parse_lenient("Http://h").unwrap().scheme, "http");
        for bad in [
            "ftp://host/x",
            "https:///nohost",
            "https://host/a b",
            "/a",
            "",
        ] {
            assert!(HttpUri::parse_lenient(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_paths_drop_query_and_fragment() {
        assert_eq!(path_of("/mcp?x=1"), "/mcp");
        assert_eq!(path_of("/mcp#f"), "/mcp");
        assert_eq!(path_of("/mcp"), "/mcp");
        assert_eq!(path_of(""), "");
    }
}
