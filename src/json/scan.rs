//! One strict pass over a JSON document that allocates nothing per value.
//!
//! The list filter reads whole answers through it rather than building a
//! `serde_json::Value` tree: for a long list the tree costs more than all
//! the rest of the filtering, and more still in wasm, where every node is a
//! small allocation.
//!
//! It accepts exactly what [`super::parse_strict`] accepts: JSON as
//! serde_json reads it (UTF-8, no raw control characters in strings, `\u`
//! surrogates in pairs, numbers within f64's range, nesting below
//! serde_json's limit) with no key repeated in any object, keys compared
//! after unescaping. As there, a syntax error anywhere wins over a repeated
//! key: repeats are only reported by [`Scanner::finish`].
//!
//! The caller walks the document by asking for what comes next
//! ([`Scanner::object`], [`Scanner::array`], [`Scanner::string`],
//! [`Scanner::skip_value`]); each answers the byte span it read, so the
//! document can be rewritten from its own bytes. Recursion follows the
//! document's nesting, which is refused beyond [`MAX_DEPTH`].

use std::borrow::Cow;
use std::ops::Range;

use serde_json::Value;

use super::keys::{KeyCheck, ObjectKeys};
use super::JsonError;

/// The deepest nesting of arrays and objects serde_json reads: its parser
/// refuses the 128th level (`parse_strict` relies on that limit too).
pub const MAX_DEPTH: usize = 127;

/// Below 10^300 no number can exceed f64's range; a larger one is rare and
/// is judged by serde_json itself, so the limit is exactly its own.
const SURELY_FINITE_DIGITS: usize = 300;

fn syntax(what: &str, at: usize) -> JsonError {
    JsonError::Syntax(format!("{what} at byte {at}"))
}

/// Checks a whole document, keeping nothing: `Ok` exactly when
/// [`super::parse_strict`] would parse it.
pub fn check(doc: &[u8]) -> Result<(), JsonError> {
    let mut scanner = Scanner::new(doc)?;
    scanner.skip_value()?;
    scanner.finish()
}

/// A cursor over one document.
pub struct Scanner<'a> {
    /// The document, known to be UTF-8 (so text between quotes can be
    /// borrowed as `&str`).
    text: &'a str,
    pos: usize,
    depth: usize,
    keys: KeyCheck<'a>,
    /// A key to count wherever it stands, and how often it was read.
    watched: Option<&'static str>,
    seen: usize,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `doc`. Invalid UTF-8 is refused here: inside
    /// a string serde_json refuses it too, and outside one any non-ASCII
    /// byte is a syntax error anyway.
    pub fn new(doc: &'a [u8]) -> Result<Scanner<'a>, JsonError> {
        let text =
            std::str::from_utf8(doc).map_err(|e| syntax("invalid UTF-8", e.valid_up_to()))?;
        Ok(Scanner {
            text,
            pos: 0,
            depth: 0,
            keys: KeyCheck::default(),
            watched: None,
            seen: 0,
        })
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, without consuming it.
    pub fn peek(&mut self) -> Result<u8, JsonError> {
        self.skip_whitespace();
        self.bytes()
            .get(self.pos)
            .copied()
            .ok_or_else(|| syntax("unexpected end of JSON", self.pos))
    }

    fn skip_whitespace(&mut self) {
        while matches!(
            self.bytes().get(self.pos),
            Some(b' ' | b'\t' | b'\n' | b'\r')
        ) {
            self.pos += 1;
        }
    }

    /// Counts, from now on, every object key equal to `key` (after
    /// unescaping), at any depth: [`Scanner::watched_keys`].
    pub fn watch(&mut self, key: &'static str) {
        self.watched = Some(key);
    }

    /// How many watched keys were read so far: the difference across a
    /// value tells whether one is anywhere inside it.
    pub fn watched_keys(&self) -> usize {
        self.seen
    }

    /// Ends the document: only whitespace may follow the value. Then, the
    /// whole document being JSON, the first repeated key refuses it.
    pub fn finish(&mut self) -> Result<(), JsonError> {
        self.skip_whitespace();
        if self.pos != self.text.len() {
            return Err(syntax("trailing characters", self.pos));
        }
        self.keys.result()
    }

    /// Reads any value, checking it; returns its span.
    pub fn skip_value(&mut self) -> Result<Range<usize>, JsonError> {
        match self.peek()? {
            b'{' => self.object(|scanner, _| scanner.skip_value().map(drop)),
            b'[' => self.array(|scanner| scanner.skip_value().map(drop)),
            b'"' => self.string_span().map(|(span, _)| span),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => Err(syntax("expected a value", self.pos)),
        }
    }

    /// Reads an object. `member` is called with each key (unescaped) and
    /// must read that member's value, with any method of this scanner.
    /// Returns the object's span.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), JsonError>,
    ) -> Result<Range<usize>, JsonError> {
        let start = self.open(b'{', "expected an object")?;
        // Pushed after each value: the keys of objects nested in it are
        // gone from the shared stack by then.
        let mut keys = ObjectKeys::new(&self.keys);
        if self.peek()? == b'}' {
            keys.finish(&self.keys);
            return Ok(self.close(start));
        }
        loop {
            if self.peek()? != b'"' {
                return Err(syntax("expected a key", self.pos));
            }
            let (_, key) = self.string_text()?;
            if self.watched.is_some_and(|watched| *key == *watched) {
                self.seen += 1;
            }
            if self.peek()? != b':' {
                return Err(syntax("expected ':'", self.pos));
            }
            self.pos += 1;
            member(self, &key)?;
            keys.insert(key, &self.keys);
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    keys.finish(&self.keys);
                    return Ok(self.close(start));
                }
                _ => return Err(syntax("expected ',' or '}'", self.pos)),
            }
        }
    }

    /// Reads an array. `element` is called once per element and must read
    /// it, with any method of this scanner. Returns the array's span.
    pub fn array(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<(), JsonError>,
    ) -> Result<Range<usize>, JsonError> {
        let start = self.open(b'[', "expected an array")?;
        if self.peek()? == b']' {
            return Ok(self.close(start));
        }
        loop {
            element(self)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => return Ok(self.close(start)),
                _ => return Err(syntax("expected ',' or ']'", self.pos)),
            }
        }
    }

    /// Reads a string; returns its span (quotes included) and its text,
    /// unescaped (borrowed from the document unless it has escapes).
    pub fn string(&mut self) -> Result<(Range<usize>, Cow<'a, str>), JsonError> {
        if self.peek()? != b'"' {
            return Err(syntax("expected a string", self.pos));
        }
        self.string_text()
    }

    fn open(&mut self, bracket: u8, expected: &str) -> Result<usize, JsonError> {
        if self.peek()? != bracket {
            return Err(syntax(expected, self.pos));
        }
        if self.depth == MAX_DEPTH {
            return Err(syntax("nested too deep", self.pos));
        }
        self.depth += 1;
        let start = self.pos;
        self.pos += 1;
        Ok(start)
    }

    /// Consumes the closing bracket the caller saw.
    fn close(&mut self, start: usize) -> Range<usize> {
        self.pos += 1;
        self.depth -= 1;
        start..self.pos
    }

    fn string_text(&mut self) -> Result<(Range<usize>, Cow<'a, str>), JsonError> {
        let (span, escaped) = self.string_span()?;
        let inner = self
            .text
            .get(span.start + 1..span.end - 1)
            .ok_or_else(|| syntax("string out of bounds", span.start))?;
        if !escaped {
            return Ok((span, Cow::Borrowed(inner)));
        }
        // Rare, and already checked: serde_json unescapes it.
        let quoted = self.text.get(span.clone()).unwrap_or_default();
        let text: String =
            serde_json::from_str(quoted).map_err(|_| syntax("invalid string", span.start))?;
        Ok((span, Cow::Owned(text)))
    }

    /// Reads the string at the cursor (`"`), checking its escapes; returns
    /// its span and whether it has escapes.
    fn string_span(&mut self) -> Result<(Range<usize>, bool), JsonError> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            // Most bytes of a string need no look: pass them in one go.
            i = special_byte(bytes, i).ok_or_else(|| syntax("unterminated string", start))?;
            match bytes.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i = escape_end(bytes, i)?;
                }
                _ => return Err(syntax("control character in a string", i)),
            }
        }
        self.pos = i + 1;
        Ok((start..self.pos, escaped))
    }

    /// Reads a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`,
    /// within f64's range as serde_json judges it.
    fn number(&mut self) -> Result<Range<usize>, JsonError> {
        let bytes = self.bytes();
        let start = self.pos;
        let mut i = start;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        let integer = i;
        match bytes.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits_end(bytes, i),
            _ => return Err(syntax("invalid number", i)),
        }
        let integer_digits = i - integer;
        if bytes.get(i) == Some(&b'.') {
            let fraction = i + 1;
            i = digits_end(bytes, fraction);
            if i == fraction {
                return Err(syntax("invalid number", i));
            }
        }
        // Only a positive exponent can push a number out of range.
        let mut exponent = 0usize;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let positive = match bytes.get(i) {
                Some(b'-') => {
                    i += 1;
                    false
                }
                Some(b'+') => {
                    i += 1;
                    true
                }
                _ => true,
            };
            let digits = i;
            i = digits_end(bytes, digits);
            if i == digits {
                return Err(syntax("invalid number", i));
            }
            if positive {
                exponent = bytes
                    .get(digits..i)
                    .unwrap_or_default()
                    .iter()
                    .fold(0usize, |e, d| {
                        e.saturating_mul(10).saturating_add(usize::from(d - b'0'))
                    });
            }
        }
        self.pos = i;
        if integer_digits.saturating_add(exponent) > SURELY_FINITE_DIGITS {
            let text = self.text.get(start..i).unwrap_or_default();
            if serde_json::from_str::<Value>(text).is_err() {
                return Err(syntax("number out of range", start));
            }
        }
        Ok(start..i)
    }

    fn literal(&mut self, word: &str) -> Result<Range<usize>, JsonError> {
        let start = self.pos;
        let rest = self.bytes().get(start..).unwrap_or_default();
        if !rest.starts_with(word.as_bytes()) {
            return Err(syntax("invalid literal", start));
        }
        self.pos += word.len();
        Ok(start..self.pos)
    }
}

/// The index of the first byte at or after `from` that ends a string's
/// plain run: `"`, `\\` or a control character (below 0x20). Eight bytes at
/// a time where it can (wasm has 64-bit integers, not always SIMD): the
/// strings of a list answer are most of its bytes.
fn special_byte(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `v` is zero: its high bit set in the result. Exact for the
    // lowest such byte (a borrow only runs upwards, from a zero byte).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Below 0x20: subtracting 0x20 borrows through the high bit of a
        // byte that had none.
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let found =
            control | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    let rest = bytes.get(i..).unwrap_or_default();
    rest.iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|n| i + n)
}

fn digits_end(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Checks the escape at `bytes[i] == '\\'`; returns the index just past it.
/// A `\u` escape of a UTF-16 surrogate must be a leading one followed by a
/// trailing one: serde_json refuses a lone surrogate in text.
fn escape_end(bytes: &[u8], i: usize) -> Result<usize, JsonError> {
    match bytes.get(i + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
        Some(b'u') => match hex4(bytes, i + 2)? {
            0xD800..=0xDBFF => {
                let pair = bytes.get(i + 6) == Some(&b'\\')
                    && bytes.get(i + 7) == Some(&b'u')
                    && matches!(hex4(bytes, i + 8)?, 0xDC00..=0xDFFF);
                if pair {
                    Ok(i + 12)
                } else {
                    Err(syntax("lone surrogate in an escape", i))
                }
            }
            0xDC00..=0xDFFF => Err(syntax("lone surrogate in an escape", i)),
            _ => Ok(i + 6),
        },
        _ => Err(syntax("invalid escape", i)),
    }
}

/// The four hex digits at `bytes[i..i + 4]`.
fn hex4(bytes: &[u8], i: usize) -> Result<u16, JsonError> {
    let digits = bytes
        .get(i..i + 4)
        .ok_or_else(|| syntax("unterminated escape", i))?;
    digits.iter().try_fold(0u16, |n, &d| {
        let v = char::from(d)
            .to_digit(16)
            .ok_or_else(|| syntax("invalid escape", i))?;
        Ok(n << 4 | v as u16)
    })
}

#[cfg(test)]
mod tests;
