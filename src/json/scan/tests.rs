//! The scanner against `parse_strict`: same documents accepted, same
//! refused, for the same kind of reason.

use super::*;
use crate::json::edits::{apply, edits};
use crate::json::parse_strict;
use proptest::prelude::*;

/// What a check concluded: accepted, a syntax error, or (with its message)
/// a repeated key.
#[derive(Debug, PartialEq)]
enum Verdict {
    Ok,
    Syntax,
    Duplicate(String),
}

fn verdict(outcome: Result<(), JsonError>) -> Verdict {
    match outcome {
        Ok(()) => Verdict::Ok,
        Err(JsonError::DuplicateKey(message)) => Verdict::Duplicate(message),
        Err(_) => Verdict::Syntax,
    }
}

fn agree(doc: &[u8]) {
    assert_eq!(
        verdict(check(doc)),
        verdict(parse_strict(doc).map(drop)),
        "{:?}",
        String::from_utf8_lossy(doc)
    );
}

#[test]
fn hand_picked_documents_get_the_verdict_parse_strict_gives() {
    let docs: &[&[u8]] = &[
        b"",
        b" ",
        b"{}",
        b"[]",
        b" [ ] ",
        b"{} {}",
        b"{},",
        b"1",
        b"-0",
        b"-",
        b"01",
        b"1.",
        b".5",
        b"1e",
        b"1e+",
        b"1E-2",
        b"1.5e3",
        b"-0.0e-0",
        b"+1",
        b"0x1",
        b"1.5.5",
        b"[1 2]",
        b"[1,]",
        b"[,1]",
        b"{\"a\":1,}",
        b"{,}",
        b"{\"a\" 1}",
        b"{\"a\":}",
        b"{1:2}",
        b"{\"a\":1 \"b\":2}",
        b"true",
        b"tru",
        b"truex",
        b"[true,false,null]",
        b"nul",
        b"NaN",
        b"Infinity",
        b"\"\"",
        b"\"a",
        b"\"\\\"\"",
        b"\"\\/\\b\\f\\n\\r\\t\\\\\"",
        b"\"\\x\"",
        b"\"\\u00e9\"",
        b"\"\\u00E9\"",
        b"\"\\u00g9\"",
        b"\"\\u00\"",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud83d\"",
        b"\"\\ude00\"",
        b"\"\\ud83d\\u0041\"",
        b"\"\\ud83d\\ud83d\"",
        b"\"\\ud83dx\"",
        b"\"\\ud83d\\n\"",
        b"\"\\u0000\"",
        b"\"\x01\"",
        b"\"\t\"",
        b"\"\x7f\"",
        b"\"\xff\"",
        b"\xef\xbb\xbf{}",
        "\"é€😀\"".as_bytes(),
        b"\"\xc3\"",
        b"{\"a\":1,\"a\":2}",
        b"{\"a\":1,\"\\u0061\":2}",
        b"{\"\\u0061\":1,\"\\u0061\":2}",
        b"[{\"a\":1},{\"a\":1}]",
        b"{\"a\":{\"a\":1}}",
        b"{\"a\":1,\"a\":2",
        b"{\"a\":1,\"a\":2} x",
        b"{\"a\":1,\"b\":{\"c\":1,\"c\":2},\"b\":3}",
        b"\t\n\r {\"a\" : [ 1 , 2 ] }\n",
        b"\x0c{}",
        b"1e400",
        b"-1e400",
        b"1e308",
        b"1.7976931348623157e308",
        b"1.7976931348623159e308",
        b"1.8e308",
        b"17976931348623157e292",
        b"0e999999999999",
        b"1e-400",
        b"1e-99999999999999999999",
        b"1e99999999999999999999",
        b"123456789012345678901234567890",
        b"0.00000000000000000000000000000001e330",
    ];
    for doc in docs {
        agree(doc);
    }
    // Integers of every length around the range's end.
    for digits in 300..=312 {
        agree(format!("1{}", "0".repeat(digits)).as_bytes());
        agree(format!("-9{}.5", "9".repeat(digits)).as_bytes());
    }
    // Many keys in one object: past the point where keys go to a hash set.
    let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
    agree(format!("{{{}}}", many.join(",")).as_bytes());
    agree(format!("{{{},\"k\\u00317\":0}}", many.join(",")).as_bytes());
}

#[test]
fn nesting_is_refused_exactly_where_serde_json_refuses_it() {
    for depth in [1, 126, 127, 128, 129, 500] {
        agree(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).as_bytes());
        agree(format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth)).as_bytes());
    }
    let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(check(ok.as_bytes()).is_ok());
    let deep = format!("[{ok}]");
    assert!(matches!(check(deep.as_bytes()), Err(JsonError::Syntax(_))));
}

#[test]
fn spans_text_and_facts_are_reported() {
    let doc = br#"{ "a": [1, "x\"y"], "b\u0063": "d\u00e9", "e": {} }"#;
    let mut scanner = Scanner::new(doc).unwrap();
    scanner.watch("bc");
    let mut seen = Vec::new();
    let span = scanner
        .object(|s, key| {
            let value = if key == "bc" {
                let (span, text) = s.string()?;
                assert_eq!(text, "dé");
                span
            } else {
                s.skip_value()?
            };
            seen.push((key.to_string(), value));
            Ok(())
        })
        .unwrap();
    scanner.finish().unwrap();
    assert_eq!(span, 0..doc.len());
    let text = |r: &Range<usize>| std::str::from_utf8(&doc[r.clone()]).unwrap();
    let seen: Vec<(&str, &str)> = seen.iter().map(|(k, r)| (k.as_str(), text(r))).collect();
    assert_eq!(
        seen,
        [("a", r#"[1, "x\"y"]"#), ("bc", r#""d\u00e9""#), ("e", "{}")]
    );
    assert_eq!(scanner.watched_keys(), 1);
}

#[test]
fn a_repeated_key_waits_for_the_syntax_of_the_whole_document() {
    let mut scanner = Scanner::new(br#"{"a":1,"a":2}"#).unwrap();
    assert_eq!(scanner.skip_value().unwrap(), 0..13);
    assert!(matches!(scanner.finish(), Err(JsonError::DuplicateKey(_))));
}

// ---- generated documents -----------------------------------------------

/// Scalars serde_json reads.
const SCALARS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-12",
    "3.25",
    "1e5",
    "2E-3",
    "1.0e3",
    "1e308",
    "-1.5e308",
    "1e-400",
    "123456789012345678901234567890",
    "true",
    "false",
    "null",
];

/// String contents (between the quotes) serde_json reads.
const TEXTS: &[&str] = &[
    "",
    "a",
    "name",
    "n\\u0061me",
    "é€😀",
    "say \\\"hi\\\"",
    "tab\\t",
    "\\u0000",
    "\\ud83d\\ude00",
    "\\/",
    "\u{7f}",
];

/// Nearly valid tokens: what a careless server might write.
const BAD: &[&str] = &[
    "01",
    "1.",
    "-",
    "tru",
    "1e400",
    "\"\\ud83d\"",
    "\"\\ude00\"",
    "\"\\ud83d\\u0041\"",
    "\"\\x\"",
    "\"\t\"",
    "\"\\u12\"",
    "NaN",
];

/// Keys, some equal after unescaping.
const KEYS: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "e",
    "name",
    "n\\u0061me",
    "id",
    "x-mcp-header",
    "\\u00e9",
    "é",
];

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        6 => proptest::sample::select(SCALARS).prop_map(str::to_string),
        6 => proptest::sample::select(TEXTS).prop_map(|t| format!("\"{t}\"")),
        1 => proptest::sample::select(BAD).prop_map(str::to_string),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5)
                .prop_map(|elements| format!("[{}]", elements.join(","))),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..5).prop_map(
                |members| {
                    let members: Vec<String> = members
                        .iter()
                        .map(|(k, v)| format!("\"{k}\":{v}"))
                        .collect();
                    format!("{{{}}}", members.join(","))
                }
            ),
        ]
    })
}

/// Bytes worth putting anywhere in a document.
const NOISE: &[u8] = b"{}[]\",:\\ \n0123456789eE.+-utfnalrsx\x00\x1f\xff";

/// A document, then a few edits: bytes replaced, inserted or removed.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (json_text(), edits(NOISE, 2)).prop_map(|(text, edits)| apply(text.into_bytes(), &edits))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_documents_get_the_verdict_parse_strict_gives(doc in mutated()) {
        prop_assert_eq!(verdict(check(&doc)), verdict(parse_strict(&doc).map(drop)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Eight bytes at a time finds the byte one at a time finds.
    #[test]
    fn a_string_run_ends_where_a_byte_by_byte_look_ends_it(
        bytes in proptest::collection::vec(
            prop_oneof![
                4 => proptest::sample::select(&b"ab \x7f\xc3\xa9\xff\x21\x23\x5b\x5d"[..]),
                1 => any::<u8>(),
            ],
            0..40,
        ),
        from in 0..40usize,
    ) {
        let naive = bytes
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b < 0x20 || b == b'"' || b == b'\\'))
            .map(|n| from + n);
        prop_assert_eq!(special_byte(&bytes, from), naive);
    }
}
