//! Removing the whitespace between tokens of a document already checked, so
//! a rewritten answer is compact and fits on one SSE `data:` line (strings
//! cannot hold a raw CR or LF). Runs are copied whole rather than byte by
//! byte: a long list answer goes through here.

/// `doc` without whitespace outside strings.
pub fn minify(doc: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(doc.len());
    let mut i = 0;
    while i < doc.len() {
        let rest = doc.get(i..).unwrap_or_default();
        let run = rest
            .iter()
            .position(|&c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'"'))
            .unwrap_or(rest.len());
        out.extend_from_slice(rest.get(..run).unwrap_or_default());
        i += run;
        match doc.get(i) {
            Some(b'"') => {
                let end = string_end(doc, i);
                out.extend_from_slice(doc.get(i..end).unwrap_or_default());
                i = end;
            }
            // Whitespace: dropped.
            Some(_) => i += 1,
            None => break,
        }
    }
    out
}

/// The index just past the string starting at `doc[i] == '"'` (the end of
/// `doc` if it is unterminated).
fn string_end(doc: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    loop {
        let rest = doc.get(j..).unwrap_or_default();
        match rest.iter().position(|&c| c == b'"' || c == b'\\') {
            Some(n) if rest.get(n) == Some(&b'\\') => j += n + 2,
            Some(n) => return j + n + 1,
            None => return doc.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_goes_outside_strings_only() {
        let doc = b" { \"a b\" :\t[ 1 ,\r\n \"x\\\" y\\\\\" , \"\\\\\" ] }\n";
        assert_eq!(minify(doc), br#"{"a b":[1,"x\" y\\","\\"]}"#);
        assert_eq!(minify(b""), b"");
        assert_eq!(minify(b"\"unterminated "), b"\"unterminated ");
    }
}
