//! Strict JSON: what the filter reads of a request or an answer must read
//! the same to every parser behind it. A duplicate key anywhere is refused
//! (parsers disagree on which copy wins, so the filter and the server could
//! see different calls or lists); strings are compared after unescaping.
//!
//! - [`keys`]: duplicate-key bookkeeping shared by every walk of a document.
//! - [`walk`]: serde seeds that walk a value (skipping it, or building a
//!   `serde_json::Value`) while checking every object in it.
//! - [`scan`]: one pass that checks a document as strictly as
//!   [`parse_strict`] without building it, and reports byte spans, so an
//!   answer can be rewritten from its own bytes (serde_json would reorder
//!   keys and rewrite numbers such as `1.0e3`).
//!
//! Recursion goes through serde_json's deserializer, whose depth limit (128)
//! holds, or through the scanner, which keeps the same limit: deep nesting
//! is a syntax error, not a stack overflow.

#[cfg(test)]
pub(crate) mod edits;
pub mod keys;
pub mod scan;
pub mod walk;

use std::fmt;

use serde::de::DeserializeSeed;
use serde_json::Value;

/// Why a document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON: malformed, trailing data, invalid UTF-8, too deep. The
    /// message names the problem and its position only, never content.
    Syntax(String),
    /// JSON with a repeated key (the message quotes the key only when it is
    /// short and printable).
    DuplicateKey(String),
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax(why) => write!(f, "malformed JSON: {why}"),
            JsonError::DuplicateKey(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for JsonError {}

/// Parses a whole document into a `Value`, refusing duplicate keys
/// anywhere. Syntax is judged over the whole document first: a malformed
/// document is a syntax error whatever else is wrong with it.
pub fn parse_strict(doc: &[u8]) -> Result<Value, JsonError> {
    let check = keys::KeyCheck::default();
    let mut de = serde_json::Deserializer::from_slice(doc);
    let value = walk::ValueSeed(&check)
        .deserialize(&mut de)
        .map_err(|e| JsonError::Syntax(e.to_string()))?;
    de.end().map_err(|e| JsonError::Syntax(e.to_string()))?;
    check.result()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_after_unescaping() {
        for doc in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":[{"b":1,"\u0062":2}]}"#,
            r#"[{"c":{"d":1,"d":1}}]"#,
        ] {
            assert!(
                matches!(
                    parse_strict(doc.as_bytes()),
                    Err(JsonError::DuplicateKey(_))
                ),
                "{doc}"
            );
        }
        assert!(parse_strict(br#"{"a":{"a":1},"b":[{"a":2},{"a":3}]}"#).is_ok());
    }

    #[test]
    fn syntax_errors_come_before_duplicates() {
        assert!(matches!(
            parse_strict(br#"{"a":1,"a":2"#),
            Err(JsonError::Syntax(_))
        ));
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(
            parse_strict(deep.as_bytes()),
            Err(JsonError::Syntax(_))
        ));
    }

    #[test]
    fn many_keys_stay_linear_and_are_still_checked() {
        let mut doc = String::from("{");
        for i in 0..5000 {
            doc.push_str(&format!("\"k{i}\":{i},"));
        }
        doc.push_str("\"k17\":0}");
        assert!(matches!(
            parse_strict(doc.as_bytes()),
            Err(JsonError::DuplicateKey(_))
        ));
    }
}
