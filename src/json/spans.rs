//! Byte spans of members and elements in a document already validated by
//! `parse_strict`, and minifying: how an answer is rewritten without being
//! re-serialised (`serde_json` would reorder keys and rewrite numbers such as
//! `1.0e3`). All loops are iterative (nesting is counted, not recursed) and
//! indexing is checked, so a surprise is an error, never a panic.

use super::JsonError;

fn truncated() -> JsonError {
    JsonError::Layout("unexpected end of JSON")
}

pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

fn byte_at(b: &[u8], i: usize) -> Result<u8, JsonError> {
    b.get(i).copied().ok_or_else(truncated)
}

/// The index just past the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], i: usize) -> Result<usize, JsonError> {
    let mut j = i + 1;
    loop {
        match byte_at(b, j)? {
            b'"' => return Ok(j + 1),
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
}

/// The index just past the value starting at `i`.
fn value_end(b: &[u8], i: usize) -> Result<usize, JsonError> {
    match byte_at(b, i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match byte_at(b, j)? {
                    b'"' => j = string_end(b, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth = depth
                            .checked_sub(1)
                            .ok_or(JsonError::Layout("unbalanced JSON"))?;
                        j += 1;
                        if depth == 0 {
                            return Ok(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            let mut j = i;
            while let Some(&c) = b.get(j) {
                if matches!(c, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                j += 1;
            }
            Ok(j)
        }
    }
}

/// The members of the object starting at `b[i] == '{'`: decoded key, value span.
pub fn object_members(b: &[u8], i: usize) -> Result<Vec<(String, usize, usize)>, JsonError> {
    if byte_at(b, i)? != b'{' {
        return Err(JsonError::Layout("expected an object"));
    }
    let mut members = Vec::new();
    let mut j = skip_ws(b, i + 1);
    if byte_at(b, j)? == b'}' {
        return Ok(members);
    }
    loop {
        let key_end = string_end(b, j)?;
        // Keys may use escapes (`"t\u006fols"`), so decode rather than compare bytes.
        let key: String = serde_json::from_slice(b.get(j..key_end).ok_or_else(truncated)?)
            .map_err(|_| JsonError::Layout("bad key"))?;
        j = skip_ws(b, key_end);
        if byte_at(b, j)? != b':' {
            return Err(JsonError::Layout("expected ':'"));
        }
        let start = skip_ws(b, j + 1);
        let end = value_end(b, start)?;
        members.push((key, start, end));
        j = skip_ws(b, end);
        match byte_at(b, j)? {
            b',' => j = skip_ws(b, j + 1),
            b'}' => return Ok(members),
            _ => return Err(JsonError::Layout("expected ',' or '}'")),
        }
    }
}

/// The element spans of the array starting at `b[i] == '['`.
pub fn array_elements(b: &[u8], i: usize) -> Result<Vec<(usize, usize)>, JsonError> {
    if byte_at(b, i)? != b'[' {
        return Err(JsonError::Layout("expected an array"));
    }
    let mut elements = Vec::new();
    let mut j = skip_ws(b, i + 1);
    if byte_at(b, j)? == b']' {
        return Ok(elements);
    }
    loop {
        let end = value_end(b, j)?;
        elements.push((j, end));
        j = skip_ws(b, end);
        match byte_at(b, j)? {
            b',' => j = skip_ws(b, j + 1),
            b']' => return Ok(elements),
            _ => return Err(JsonError::Layout("expected ',' or ']'")),
        }
    }
}

/// Removes whitespace outside strings. Strings cannot hold a raw CR or LF, so
/// the result is one line, as an SSE `data:` field needs.
pub fn minify(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut in_string = false;
    let mut escaped = false;
    for &c in b {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
        } else if !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            if c == b'"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}
