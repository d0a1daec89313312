//! The form a request path is compared in when the filter asks whether it
//! could be read as another server's: what the most lenient component on
//! the way (Envoy with `normalize_path`, a router, an application server)
//! could make of it.

/// How many rounds of percent-decoding a path gets: a server that decodes
/// twice reads `%252e` as `.`.
const DECODE_ROUNDS: usize = 3;

/// `path` as the most lenient reader sees it: percent-encodings decoded
/// (repeatedly), `\` read as `/`, `;parameters` dropped from segments,
/// empty and `.` segments dropped, `..` taking the one before it, no
/// trailing `/`, and ASCII lower-case. Always starts with `/`.
pub fn canonical_path(path: &str) -> String {
    let mut text = path.to_string();
    for _ in 0..DECODE_ROUNDS {
        let decoded = percent_decode(&text);
        if decoded == text {
            break;
        }
        text = decoded;
    }
    let text = text.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/")).to_ascii_lowercase()
}

/// One round of percent-decoding; a `%` not followed by two hex digits
/// stays as it is. Bytes that are not UTF-8 become replacement characters.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_of_a_path_meet_in_one_form() {
        for path in [
            "/github/mcp",
            "/GitHub/MCP",
            "//github/mcp",
            "/github//mcp/",
            "/github/./mcp",
            "/jira/../github/mcp",
            "/%67ithub/mcp",
            "/github%2Fmcp",
            "/github%252Fmcp",
            "/github\\mcp",
            "/github;x=1/mcp",
            "/github/%2e/mcp",
            "/x/%2e%2e/github/mcp",
        ] {
            assert_eq!(canonical_path(path), "/github/mcp", "{path}");
        }
    }

    #[test]
    fn the_root_and_odd_escapes_stay_paths() {
        assert_eq!(canonical_path("/"), "/");
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/../.."), "/");
        assert_eq!(canonical_path("/a%zz/b%4"), "/a%zz/b%4");
        assert_eq!(canonical_path("/caf%C3%A9"), "/café");
    }
}
