//! Resource URIs as rules match them. A rule matches the URI text; a server
//! may first normalise it (a URL parser lowercases the scheme, trims spaces,
//! removes `..` segments, decodes `%2e`), so the text the filter judged and
//! the resource the server reads could differ: `SECRET://keys` slips past a
//! deny rule on `secret://*` and still reads `secret://keys`. So a
//! `resources/read` URI must already be in normal form, or it is refused.

/// Why a URI is not in normal form, if it is not.
pub fn not_normal(uri: &str) -> Option<&'static str> {
    if uri
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '\\')
    {
        return Some("holds whitespace, a control character or a backslash");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Some("has no scheme");
    };
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Some("has a scheme that is not lower-case letters, digits, '+', '-' or '.'");
    }
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => after.split_at(after.find(['/', '?', '#']).unwrap_or(after.len())),
        None => ("", rest),
    };
    if authority.chars().any(|c| c.is_ascii_uppercase()) {
        return Some("has upper-case letters in its authority");
    }
    if has_encoded_unreserved(uri) {
        return Some("percent-encodes a character that needs no encoding");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Some("has a '.' or '..' path segment");
    }
    None
}

/// `%41` (`A`), `%2e` (`.`), `%7E` (`~`)…: RFC 3986 normalisation decodes
/// percent-encoded unreserved characters, so two spellings of one URI exist.
fn has_encoded_unreserved(uri: &str) -> bool {
    let bytes = uri.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && std::str::from_utf8(&w[1..])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .is_some_and(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_in_normal_form_pass() {
        for uri in [
            "secret://keys",
            "docs://readme",
            "file:///projects/app/config.json",
            "https://example.com/a/b?q=1#frag",
            "users://42/profile",
            "urn:isbn:0451450523",
            "file:///a%2Fb",
            "git+ssh://host/repo.git",
        ] {
            assert_eq!(not_normal(uri), None, "{uri}");
        }
    }

    #[test]
    fn other_spellings_are_refused() {
        for uri in [
            "SECRET://keys",
            "Secret://keys",
            " secret://keys",
            "secret://keys ",
            "secret://ke ys",
            "secret://keys\n",
            "secret://KEYS",
            "file:///public/../etc/passwd",
            "file:///public/./x",
            "file:///public/%2e%2e/etc/passwd",
            "file:///public/%2E%2E/etc",
            "secret://%6beys",
            "file:\\\\etc\\passwd",
            "no-scheme",
            ":nothing",
            "1abc://x",
        ] {
            assert!(not_normal(uri).is_some(), "{uri}");
        }
    }
}
