//! `Mcp-Param-{Name}` headers (MCP 2026-07-28, SEP-2243): a tool may mark a
//! parameter with `x-mcp-header` in its `inputSchema`, and clients mirror its
//! value into a header so that intermediaries can route on it. Anything that
//! processes the body must check those headers against it: a rate limiter
//! keyed on `Mcp-Param-Tenant` must never count a call for another tenant
//! than the one the server acts for.
//!
//! What a tool declares is learned from the `tools/list` answers the filter
//! reads ([`declarations`]); a call to a tool whose declarations are known
//! has its headers checked ([`check`]).

use serde_json::Value;

use super::headers::{decode_header_value, HeaderMismatch};

/// The schema keyword that mirrors a parameter into a header.
pub const DECLARATION: &str = "x-mcp-header";

/// One parameter mirrored into a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The header's name part (`Region` in `Mcp-Param-Region`), compared
    /// case-insensitively.
    pub name: String,
    /// The property path from the arguments' root (`["region"]`).
    pub path: Vec<String>,
    pub kind: ParamKind,
}

/// The JSON types a mirrored parameter may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Integer,
    Boolean,
}

/// Every valid `x-mcp-header` declaration of one listed tool: on a property
/// reached from the schema's root through `properties` keys only, of type
/// string, integer or boolean, with a token name unique (ignoring case)
/// within the tool. A tool with an invalid declaration declares nothing: the
/// spec has clients drop such a tool, so no conforming client sends its
/// headers.
pub fn declarations(tool: &Value) -> Vec<ParamHeader> {
    let mut found = Vec::new();
    let Some(schema) = tool.get("inputSchema") else {
        return found;
    };
    if walk(schema, &mut Vec::new(), &mut found).is_err() {
        return Vec::new();
    }
    let names: Vec<String> = found.iter().map(|p| p.name.to_ascii_lowercase()).collect();
    if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
        return Vec::new();
    }
    found
}

struct Invalid;

fn walk(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<ParamHeader>,
) -> Result<(), Invalid> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (property, sub) in properties {
        // Shared between workers as tab-separated lines (`encode`).
        if property.contains(['\t', '\n', '\r']) {
            return Err(Invalid);
        }
        path.push(property.clone());
        if let Some(declared) = sub.get(DECLARATION) {
            let name = declared.as_str().filter(|n| is_token(n)).ok_or(Invalid)?;
            let kind = match sub.get("type").and_then(Value::as_str) {
                Some("string") => ParamKind::String,
                Some("integer") => ParamKind::Integer,
                Some("boolean") => ParamKind::Boolean,
                _ => return Err(Invalid),
            };
            found.push(ParamHeader {
                name: name.to_string(),
                path: path.clone(),
                kind,
            });
        }
        walk(sub, path, found)?;
        path.pop();
    }
    Ok(())
}

/// RFC 9110 `token`: the characters of a header field name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a call's `Mcp-Param-*` headers against its arguments. For each
/// declared parameter: a value in the body needs exactly one header that
/// equals it (after decoding the base64 form; integers compared as numbers)
/// — on a 2026-07-28 request (`modern`), a missing header is a mismatch too;
/// no value in the body means no header. Headers nobody declared are left
/// alone (the spec has intermediaries forward them).
pub fn check(
    declared: &[ParamHeader],
    arguments: Option<&Value>,
    headers: &[(String, String)],
    modern: bool,
) -> Result<(), HeaderMismatch> {
    let mismatch = |reason| Err(HeaderMismatch { reason });
    for param in declared {
        // Compared as a CGI-style server reads names (case, `_` for `-`) on
        // both sides: a tool may name its header `Tenant_Id`.
        let wanted = fold(&format!("mcp-param-{}", param.name));
        let values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| fold(n) == wanted)
            .map(|(_, v)| v.as_str())
            .collect();
        let value = arguments
            .and_then(|a| param.path.iter().try_fold(a, |v, key| v.get(key)))
            .filter(|v| !v.is_null());
        match (value, values.as_slice()) {
            (None, []) => {}
            (None, _) => return mismatch("Mcp-Param header sent for a parameter the body lacks"),
            (Some(_), []) if modern => {
                return mismatch("Mcp-Param header missing for a parameter in the body")
            }
            (Some(_), []) => {}
            (Some(value), [header]) => {
                if header.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    return mismatch("Mcp-Param header holds invalid characters");
                }
                let Some(text) = decode_header_value(header) else {
                    return mismatch("Mcp-Param header is not valid base64 UTF-8");
                };
                if !agrees(param.kind, value, &text) {
                    return mismatch("Mcp-Param header does not match the body's argument");
                }
            }
            (Some(_), _) => return mismatch("Mcp-Param header appears more than once"),
        }
    }
    Ok(())
}

/// A header name as any HTTP stack may read it: lower-case, `_` for `-`.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Declarations as shared between workers (proxy-wasm shared data): one
/// line per parameter, `name`, `kind` and the path, separated by tabs.
pub fn encode(declared: &[ParamHeader]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(declared, &mut out);
    out
}

fn encode_into(declared: &[ParamHeader], out: &mut Vec<u8>) {
    for param in declared {
        let kind = match param.kind {
            ParamKind::String => "string",
            ParamKind::Integer => "integer",
            ParamKind::Boolean => "boolean",
        };
        out.extend_from_slice(param.name.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(kind.as_bytes());
        for segment in &param.path {
            out.push(b'\t');
            out.extend_from_slice(segment.as_bytes());
        }
        out.push(b'\n');
    }
}

/// The tools of one `tools/list` answer, in order, with what each declares:
/// what the filter learned from it. The names share one text, so a long
/// list costs a few allocations, not a few per tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolList {
    names: String,
    tools: Vec<(std::ops::Range<usize>, Vec<ParamHeader>)>,
}

impl ToolList {
    pub fn push(&mut self, tool: &str, declared: Vec<ParamHeader>) {
        let start = self.names.len();
        self.names.push_str(tool);
        self.tools.push((start..self.names.len(), declared));
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// Each tool's name and declarations, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[ParamHeader])> {
        self.tools.iter().map(|(name, declared)| {
            let name = self.names.get(name.clone()).unwrap_or_default();
            (name, declared.as_slice())
        })
    }

    /// The whole list as one text: each tool's name and [`encode`]d
    /// declarations, each with its length before it, so two lists have the
    /// same text exactly when they are the same list. Workers share the last
    /// list learned under it and compare a new list's text with it: one look
    /// instead of one per tool when nothing changed.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.names.len() + 16 * self.tools.len());
        for (tool, declared) in self.iter() {
            out.extend_from_slice(&tool.len().to_le_bytes());
            out.extend_from_slice(tool.as_bytes());
            let at = out.len();
            out.extend_from_slice(&0usize.to_le_bytes());
            encode_into(declared, &mut out);
            let len = (out.len() - at - std::mem::size_of::<usize>()).to_le_bytes();
            if let Some(slot) = out.get_mut(at..at + len.len()) {
                slot.copy_from_slice(&len);
            }
        }
        out
    }
}

/// What a tool declares, from what every worker shares (`shared`: the
/// newest list any worker read, [`encode`]d) and what this worker
/// remembers. The shared word wins: a worker that kept an older list in
/// memory would check a call against declarations the server has changed
/// (missing a new `Mcp-Param-Tenant`, or demanding one no longer declared).
/// Memory answers only when nothing (readable) is shared.
pub fn current(
    shared: Option<&[u8]>,
    remembered: Option<&[ParamHeader]>,
) -> Option<Vec<ParamHeader>> {
    shared
        .and_then(decode)
        .or_else(|| remembered.map(<[ParamHeader]>::to_vec))
}

/// Reads back [`encode`]'s output; `None` when it is not that.
pub fn decode(bytes: &[u8]) -> Option<Vec<ParamHeader>> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.lines()
        .map(|line| {
            let mut parts = line.split('\t');
            let name = parts.next().filter(|n| is_token(n))?.to_string();
            let kind = match parts.next()? {
                "string" => ParamKind::String,
                "integer" => ParamKind::Integer,
                "boolean" => ParamKind::Boolean,
                _ => return None,
            };
            let path: Vec<String> = parts.map(str::to_string).collect();
            (!path.is_empty()).then_some(ParamHeader { name, path, kind })
        })
        .collect()
}

/// The largest integer a mirrored parameter may hold (the spec keeps them
/// within JavaScript's safe range, 2^53 - 1).
const MAX_SAFE_INTEGER: i128 = (1 << 53) - 1;

/// Whether a header's text stands for the body's value.
fn agrees(kind: ParamKind, value: &Value, text: &str) -> bool {
    match (kind, value) {
        (ParamKind::String, Value::String(s)) => s == text,
        (ParamKind::Integer, Value::Number(n)) => {
            match (body_integer(n), decimal_integer(text.trim())) {
                (Some(body), Some(header)) => body == header,
                _ => false,
            }
        }
        (ParamKind::Boolean, Value::Bool(b)) => text == if *b { "true" } else { "false" },
        // The body's value is not of the declared type: the server refuses
        // the call anyway; refusing here too is the safe side.
        _ => false,
    }
}

/// The body's integer, when it is one within the safe range (`42` or
/// `42.0`); a fraction, or an integer beyond the range, is none: it cannot
/// be compared exactly.
fn body_integer(n: &serde_json::Number) -> Option<i128> {
    let value = if let Some(i) = n.as_i64() {
        i128::from(i)
    } else if let Some(u) = n.as_u64() {
        i128::from(u)
    } else {
        let f = n.as_f64()?;
        if f.fract() != 0.0 || f.abs() > MAX_SAFE_INTEGER as f64 {
            return None;
        }
        f as i128
    };
    (value.abs() <= MAX_SAFE_INTEGER).then_some(value)
}

/// The integer a decimal number's text stands for, exactly, when it stands
/// for one within the safe range: `42`, `+42`, `042`, `42.0`, `4.2e1` are
/// 42; `42.0000000000000001` (which a double rounds to 42) is no integer.
fn decimal_integer(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (mantissa, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let mut exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) {
                return None;
            }
            // An exponent this long puts any non-zero value out of range.
            let magnitude: i64 = if digits.trim_start_matches('0').len() > 18 {
                i64::MAX / 4
            } else {
                digits.parse().unwrap_or(0)
            };
            if e.starts_with('-') {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    // The digits, and the power of ten they are scaled by.
    let mut digits: String = format!("{whole}{fraction}");
    exponent -= fraction.len() as i64;
    let significant = digits.trim_start_matches('0').len();
    digits = digits[digits.len() - significant..].to_string();
    if digits.is_empty() {
        return Some(0);
    }
    while exponent < 0 {
        // Only trailing zeros may be divided away.
        if !digits.ends_with('0') {
            return None;
        }
        digits.pop();
        exponent += 1;
    }
    // The safe range has 16 digits at most.
    if digits.len() as i64 + exponent > 16 {
        return None;
    }
    let mut value: i128 = digits.parse().ok()?;
    for _ in 0..exponent {
        value *= 10;
    }
    if value > MAX_SAFE_INTEGER {
        return None;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_are_compared_exactly() {
        for (text, value) in [
            ("42", Some(42)),
            ("+42", Some(42)),
            ("-42", Some(-42)),
            ("042", Some(42)),
            ("42.0", Some(42)),
            ("42.", Some(42)),
            ("4.2e1", Some(42)),
            ("420e-1", Some(42)),
            ("0", Some(0)),
            ("-0.0e5", Some(0)),
            ("9007199254740991", Some(MAX_SAFE_INTEGER)),
            ("9007199254740992", None),
            ("42.0000000000000001", None),
            ("42.5", None),
            ("4.25e1", None),
            ("1e16", None),
            ("1e99999999999999999999999", None),
            ("1e-99999999999999999999999", None),
            ("inf", None),
            ("NaN", None),
            ("0x2a", None),
            (".5", None),
            ("", None),
            ("-", None),
            ("4 2", None),
            ("1e", None),
        ] {
            assert_eq!(decimal_integer(text), value, "{text:?}");
        }
        let param = ParamHeader {
            name: "Account".into(),
            path: vec!["account".into()],
            kind: ParamKind::Integer,
        };
        let call = |account: Value, header: &str| {
            check(
                std::slice::from_ref(&param),
                Some(&json!({ "account": account })),
                &[("mcp-param-account".to_string(), header.to_string())],
                true,
            )
        };
        assert_eq!(call(json!(42), "42"), Ok(()));
        assert_eq!(call(json!(42.0), "42"), Ok(()));
        assert_eq!(call(json!(-7), "-7.00"), Ok(()));
        // A double would take these for equal.
        assert!(call(json!(42), "42.0000000000000001").is_err());
        assert!(call(json!(9007199254740993_u64), "9007199254740992").is_err());
        assert!(call(json!(9007199254740993_u64), "9007199254740993").is_err());
        assert!(call(json!(42.5), "42.5").is_err());
    }

    #[test]
    fn the_shared_declarations_win_over_a_workers_memory() {
        let old = declarations(&tool());
        let new = vec![ParamHeader {
            name: "Tenant".into(),
            path: vec!["tenant".into()],
            kind: ParamKind::String,
        }];
        assert_eq!(current(Some(&encode(&new)), Some(&old)), Some(new.clone()));
        // A tool that now declares nothing.
        assert_eq!(current(Some(b""), Some(&old)), Some(Vec::new()));
        assert_eq!(current(None, Some(&old)), Some(old.clone()));
        assert_eq!(current(Some(b"not\tan\tencoding"), Some(&old)), Some(old));
        assert_eq!(current(None, None), None);
        assert_eq!(current(Some(&encode(&new)), None), Some(new));
    }

    #[test]
    fn a_declared_name_with_an_underscore_finds_its_header() {
        let declared = declarations(&json!({"inputSchema": {"properties": {
            "tenant": {"type": "string", "x-mcp-header": "Tenant_Id"}}}}));
        assert_eq!(declared.len(), 1);
        let args = json!({"tenant": "acme"});
        for name in [
            "Mcp-Param-Tenant_Id",
            "mcp-param-tenant-id",
            "MCP_PARAM_TENANT_ID",
        ] {
            let sent = |value: &str| vec![(name.to_string(), value.to_string())];
            assert_eq!(
                check(&declared, Some(&args), &sent("acme"), true),
                Ok(()),
                "{name}"
            );
            assert!(
                check(&declared, Some(&args), &sent("globex"), false).is_err(),
                "{name}"
            );
        }
        assert!(check(&declared, Some(&args), &[], true).is_err());
    }

    fn tool() -> Value {
        json!({"name": "execute_sql", "inputSchema": {"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "dry": {"type": "boolean", "x-mcp-header": "Dry-Run"},
            "target": {"type": "object", "properties": {
                "tenant": {"type": "string", "x-mcp-header": "Tenant"}}},
            "query": {"type": "string"}}}})
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn declarations_are_read_from_the_schema() {
        let found = declarations(&tool());
        let names: Vec<&str> = found.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["Dry-Run", "Limit", "Region", "Tenant"]);
        let tenant = found.iter().find(|p| p.name == "Tenant").unwrap();
        assert_eq!(tenant.path, ["target", "tenant"]);
        for bad in [
            json!({"inputSchema": {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}}),
            json!({"inputSchema": {"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}}),
            json!({"inputSchema": {"properties": {"a": {"type": "string", "x-mcp-header": ""}}}}),
            json!({"inputSchema": {"properties": {
                "a": {"type": "string", "x-mcp-header": "X"},
                "b": {"type": "string", "x-mcp-header": "x"}}}}),
        ] {
            assert!(declarations(&bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn declarations_read_back_what_was_shared() {
        let declared = declarations(&tool());
        assert_eq!(decode(&encode(&declared)), Some(declared));
        assert_eq!(decode(b""), Some(Vec::new()));
        assert_eq!(decode(b"Bad Name\tstring\ta"), None);
        assert_eq!(decode(b"A\tnumber\ta"), None);
        assert_eq!(decode(b"A\tstring"), None);
    }

    #[test]
    fn headers_must_equal_the_arguments() {
        let declared = declarations(&tool());
        let args = json!({"region": "us-west1", "limit": 42, "dry": false,
                          "target": {"tenant": "Grüße"}, "query": "SELECT 1"});
        let ok = headers(&[
            ("mcp-param-region", "us-west1"),
            ("mcp-param-limit", "42.0"),
            ("mcp-param-dry-run", "false"),
            ("mcp-param-tenant", "=?base64?R3LDvMOfZQ==?="),
        ]);
        assert_eq!(check(&declared, Some(&args), &ok, true), Ok(()));
        for (header, value) in [
            ("mcp-param-region", "us-east1"),
            ("mcp-param-limit", "41"),
            ("mcp-param-dry-run", "False"),
            ("mcp-param-tenant", "Gruesse"),
        ] {
            let mut wrong = ok.clone();
            wrong.retain(|(n, _)| n != header);
            wrong.push((header.to_string(), value.to_string()));
            assert!(
                check(&declared, Some(&args), &wrong, true).is_err(),
                "{header}"
            );
        }
        // Missing: a mismatch on 2026-07-28, tolerated before.
        let missing: Vec<_> = ok
            .iter()
            .filter(|(n, _)| n != "mcp-param-limit")
            .cloned()
            .collect();
        assert!(check(&declared, Some(&args), &missing, true).is_err());
        assert!(check(&declared, Some(&args), &missing, false).is_ok());
        // A header for a value the body lacks, twice, or in another spelling.
        let no_limit = json!({"region": "us-west1", "dry": false, "target": {"tenant": "Grüße"}});
        assert!(check(&declared, Some(&no_limit), &ok, false).is_err());
        let mut twice = ok.clone();
        twice.push(("Mcp_Param_Region".into(), "us-west1".into()));
        assert!(check(&declared, Some(&args), &twice, true).is_err());
        // Undeclared headers are not ours to judge.
        let mut extra = ok;
        extra.push(("mcp-param-other".into(), "x".into()));
        assert_eq!(check(&declared, Some(&args), &extra, true), Ok(()));
    }

    #[test]
    fn lists_encode_to_the_same_text_only_when_they_are_the_same() {
        let param = |name: &str| ParamHeader {
            name: name.into(),
            path: vec!["a".into()],
            kind: ParamKind::String,
        };
        let lists: Vec<Vec<(&str, Vec<ParamHeader>)>> = vec![
            vec![],
            vec![("t", vec![])],
            vec![("t", vec![param("A")])],
            vec![("t", vec![param("B")])],
            vec![("t", vec![]), ("u", vec![])],
            vec![("u", vec![]), ("t", vec![])],
            // Names that would run together in a plainer text.
            vec![("t\tA\tstring\ta\n", vec![])],
            vec![("tu", vec![])],
            vec![("", vec![]), ("", vec![])],
            vec![("", vec![])],
        ];
        let lists: Vec<ToolList> = lists
            .into_iter()
            .map(|tools| {
                let mut list = ToolList::default();
                for (tool, declared) in tools {
                    list.push(tool, declared);
                }
                list
            })
            .collect();
        for (i, a) in lists.iter().enumerate() {
            for (j, b) in lists.iter().enumerate() {
                assert_eq!(a.encode() == b.encode(), i == j, "{a:?} {b:?}");
            }
        }
    }
}
