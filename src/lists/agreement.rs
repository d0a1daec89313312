//! The filter against [`super::reference`], the same filter built the plain
//! way on a parsed tree (`json::parse_strict`, then decisions and edits on
//! `serde_json` values), over generated answers (hostile ones among them:
//! repeated keys, escaped names and keys, nesting, whitespace, bytes
//! changed): the same answers refused for the same reason, the same items
//! shown to the predicate in the same order (same kind, key and value), and
//! an output that parses to the reference's tree (byte for byte when the
//! answer is written as serde_json writes); and the same through the SSE
//! framing.

use super::*;
use crate::json;
use crate::json::edits::{apply, edits};
use crate::mcp::param_headers;
use proptest::prelude::*;
use std::cell::RefCell;

/// How a filter ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    Unchanged,
    Changed {
        value: Value,
        removed: usize,
    },
    Syntax,
    /// A repeated key, with the message (the same first repeat is named).
    Duplicate(String),
    /// Not the answer expected, with the message.
    Shape(String),
}

/// What the predicate was shown: kind, key and the item itself.
type Shown = Vec<(ListKind, Option<String>, Value)>;

/// Which names the predicate keeps (resources and templates included).
fn keeps(name: Option<&str>, allowed: &[&str]) -> bool {
    name.is_some_and(|n| allowed.contains(&n))
}

// ---- both filters, seen the same way -----------------------------------

/// A predicate keeping the `allowed` names, which logs what it is shown.
fn logging<'a>(allowed: &'a [&'a str], log: &'a RefCell<Shown>) -> impl Fn(&Item) -> bool + 'a {
    move |item| {
        let value = item.value().expect("an item of a checked answer parses");
        // Skipping the parse of a tool must never hide a declaration.
        assert_eq!(
            item.has_declaration(),
            reference::has_member(&value, param_headers::DECLARATION),
            "{value}"
        );
        log.borrow_mut()
            .push((item.kind(), item.key().map(str::to_string), value));
        keeps(item.key(), allowed)
    }
}

fn outcome(result: reference::Outcome) -> Outcome {
    match result {
        Ok(None) => Outcome::Unchanged,
        Ok(Some((value, removed))) => Outcome::Changed { value, removed },
        Err(ListError::Invalid(m)) if m.starts_with("not valid JSON: malformed JSON") => {
            Outcome::Syntax
        }
        Err(ListError::Invalid(m)) if m.starts_with("not valid JSON: duplicate key") => {
            Outcome::Duplicate(m)
        }
        Err(ListError::Invalid(m)) => Outcome::Shape(m),
        Err(ListError::TooLarge) => unreachable!("no size limit here"),
    }
}

/// Runs one of the two filters with the logging predicate.
fn run(
    filter: impl FnOnce(&Keep) -> reference::Outcome,
    allowed: &[&str],
    shown: &mut Shown,
) -> Outcome {
    let log = RefCell::new(Vec::new());
    let result = filter(&logging(allowed, &log));
    shown.extend(log.into_inner());
    outcome(result)
}

/// The filter's output as the reference gives it: a tree.
fn parsed(output: Option<(Vec<u8>, usize)>) -> Option<(Value, usize)> {
    output.map(|(body, removed)| {
        let value = serde_json::from_slice(&body).expect("the output is JSON");
        (value, removed)
    })
}

// ---- generated answers ---------------------------------------------------

const NAMES: &[&str] = &["get_a", "set_b", "file:///x", "docs://{p}", "é"];

/// How a name may be written: plain, or with an escape.
fn written(name: &str, escape: bool) -> String {
    match (escape, name.char_indices().next()) {
        (true, Some((_, c))) => format!("\\u{:04x}{}", u32::from(c), &name[c.len_utf8()..]),
        _ => name.to_string(),
    }
}

/// JSON text built from parts, with a chosen spacing.
#[derive(Debug, Clone)]
struct Style {
    /// Written after `,` `:` `[` `{` (empty for compact text).
    space: &'static str,
    /// Members in sorted order and no escapes: as serde_json writes.
    tidy: bool,
}

fn object(style: &Style, mut members: Vec<(String, String)>) -> String {
    if style.tidy {
        members.sort();
    }
    let s = style.space;
    let members: Vec<String> = members
        .into_iter()
        .map(|(k, v)| format!("\"{k}\":{s}{v}"))
        .collect();
    format!("{{{s}{}}}", members.join(&format!(",{s}")))
}

fn array(style: &Style, elements: Vec<String>) -> String {
    let s = style.space;
    format!("[{s}{}]", elements.join(&format!(",{s}")))
}

fn style() -> impl Strategy<Value = Style> {
    (
        proptest::sample::select(&["", "", " ", "\n  ", "\r\n\t"][..]),
        any::<bool>(),
    )
        .prop_map(|(space, tidy)| Style {
            space,
            tidy: tidy && space.is_empty(),
        })
}

/// An item of `kind`: usually an object named from [`NAMES`], sometimes
/// something a client could not use.
fn item(style: Style, kind: ListKind) -> impl Strategy<Value = String> {
    let key = kind.item_key();
    (
        0..10u8,
        proptest::sample::select(NAMES),
        any::<bool>(),
        0..4u8,
        0..16u8,
    )
        .prop_map(move |(form, name, escape, schema, repeat)| {
            let escape = escape && !style.tidy;
            let mut members = vec![(
                written(key, escape && form == 1),
                format!("\"{}\"", written(name, escape)),
            )];
            members.push(("description".into(), "\"does \\\"things\\\"\\n\"".into()));
            let header = match schema {
                0 => None,
                1 => Some("\"x-mcp-header\""),
                2 if !style.tidy => Some("\"x-mcp-h\\u0065ader\""),
                _ => Some("\"title\""),
            };
            if let Some(header) = header {
                let id = format!("{{\"type\":\"string\",{header}:\"Id\"}}");
                members.push((
                    "inputSchema".into(),
                    format!("{{\"properties\":{{\"id\":{id}}},\"type\":\"object\"}}"),
                ));
            }
            match form {
                2 => members[0].1 = "7".into(),
                3 => {
                    members.remove(0);
                }
                4 => return "\"get_a\"".into(),
                5 => return "null".into(),
                6 => return format!("[{{\"{key}\":\"get_a\"}}]"),
                _ => {}
            }
            if repeat == 0 && !style.tidy {
                // Repeated: the answer must be refused.
                members.push((written(key, form == 7), "\"x\"".into()));
            }
            object(&style, members)
        })
}

/// A `result`: item arrays of one or two kinds (or a member that is not an
/// array), and perhaps a `cacheScope` and other members.
fn result(style: Style) -> impl Strategy<Value = String> {
    (
        proptest::sample::subsequence(ListKind::ALL.to_vec(), 1..=2),
        proptest::collection::vec(0..10u8, 0..4),
        0..6u8,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(move |(kinds, forms, scope, not_array, escaped)| {
            let items: Vec<_> = kinds
                .iter()
                .map(|&kind| proptest::collection::vec(item(style.clone(), kind), 0..6))
                .collect();
            let style = style.clone();
            items.prop_map(move |lists| {
                let mut members = Vec::new();
                for (n, (kind, items)) in kinds.iter().zip(lists).enumerate() {
                    let key = written(kind.items_key(), escaped && !style.tidy && n == 0);
                    let value = if not_array && n == 0 {
                        "{\"name\":\"get_a\"}".to_string()
                    } else {
                        array(&style, items)
                    };
                    members.push((key, value));
                }
                let scope = match scope {
                    0 => Some("\"public\""),
                    1 => Some("\"private\""),
                    2 if !style.tidy => Some("\"priv\\u0061te\""),
                    3 => Some("null"),
                    _ => None,
                };
                if let Some(scope) = scope {
                    members.push(("cacheScope".into(), scope.into()));
                }
                if forms.contains(&0) {
                    members.push(("nextCursor".into(), "\"abc\"".into()));
                }
                if forms.contains(&1) {
                    members.push(("_meta".into(), "{\"n\":1.0e3}".into()));
                }
                object(&style, members)
            })
        })
}

const IDS: &[&str] = &["1", "\"1\"", "1.0", "2", "\"a\"", "null", "{}"];

/// A JSON-RPC message: mostly responses with a list `result`.
fn message(style: Style) -> impl Strategy<Value = String> {
    (
        proptest::sample::select(IDS),
        0..16u8,
        result(style.clone()),
        any::<bool>(),
    )
        .prop_map(move |(id, form, result, escaped_id)| {
            let jsonrpc = ("jsonrpc".to_string(), "\"2.0\"".to_string());
            let id_key = written("id", escaped_id && !style.tidy);
            let id = (id_key, id.to_string());
            let members = match form {
                0 => vec![jsonrpc, id, ("error".into(), "{\"code\":-1}".into())],
                1 => vec![
                    jsonrpc,
                    ("method".into(), "\"notifications/x\"".into()),
                    ("params".into(), "{}".into()),
                ],
                2 => vec![jsonrpc, id],
                3 => vec![jsonrpc, id, ("result".into(), "\"text\"".into())],
                4 => return "7".into(),
                _ => vec![jsonrpc, id, ("result".into(), result)],
            };
            object(&style, members)
        })
}

/// A whole answer: one message, a batch, or something else; sometimes with
/// a few bytes changed, inserted or removed.
fn answer() -> impl Strategy<Value = Vec<u8>> {
    style()
        .prop_flat_map(|style| {
            let spaced = style.clone();
            let batch = proptest::collection::vec(message(style.clone()), 0..5)
                .prop_map(move |messages| array(&spaced, messages));
            prop_oneof![
                6 => message(style),
                3 => batch,
                1 => proptest::sample::select(&["\"tools\"", "1", ""][..]).prop_map(str::to_string),
            ]
        })
        .prop_flat_map(|text| {
            let edits = prop_oneof![3 => Just(Vec::new()), 1 => edits(b"{}[]\",:\\ 0ae\xff", 1)];
            (Just(text), edits)
        })
        .prop_map(|(text, edits)| apply(text.into_bytes(), &edits))
}

fn pending() -> impl Strategy<Value = PendingLists> {
    let asked = [
        (json_id(1), ListKind::Tools),
        (Value::from("a"), ListKind::Prompts),
        (json_id(2), ListKind::Resources),
        (Value::from("1"), ListKind::ResourceTemplates),
    ];
    proptest::sample::subsequence(asked.to_vec(), 0..=4).prop_map(PendingLists::from_iter)
}

fn json_id(n: u64) -> Value {
    Value::from(n)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_filter_agrees_with_the_tree_reference(
        doc in answer(),
        pending in pending(),
        allowed in proptest::sample::subsequence(NAMES, 0..=NAMES.len()),
        any_messages in any::<bool>(),
    ) {
        let shape = if any_messages { Shape::AnyMessages } else { Shape::ResponsesOnly };
        let (mut expected_shown, mut shown) = (Vec::new(), Vec::new());
        let expected = run(
            |keep| reference::filter_document(&doc, &pending, keep, shape),
            &allowed,
            &mut expected_shown,
        );
        let got = run(
            |keep| filter_document(&doc, &pending, keep, shape).map(parsed),
            &allowed,
            &mut shown,
        );
        prop_assert_eq!(&got, &expected);
        if !matches!(got, Outcome::Syntax | Outcome::Duplicate(_)) {
            prop_assert_eq!(shown, expected_shown);
        }
        // Written as serde_json writes it, the output is exactly what
        // serde_json writes for the reference's tree: kept items verbatim,
        // nothing else touched.
        if let Outcome::Changed { value, .. } = &expected {
            let parsed = json::parse_strict(&doc).expect("changed, so valid");
            if serde_json::to_vec(&parsed).ok().as_deref() == Some(&doc[..]) {
                let (body, _) = filter_document(&doc, &pending, &|i: &Item| keeps(i.key(), &allowed), shape)
                    .expect("valid")
                    .expect("changed");
                prop_assert_eq!(body, serde_json::to_vec(value).expect("serialises"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// The same agreement through the SSE framing: the event's data,
    /// filtered, rebuilds to the reference's tree, and an event with nothing
    /// to change passes byte for byte.
    #[test]
    fn an_sse_event_agrees_with_the_tree_reference(
        doc in answer(),
        pending in pending(),
        allowed in proptest::sample::subsequence(NAMES, 0..=NAMES.len()),
    ) {
        let keep = |item: &Item| keeps(item.key(), &allowed);
        let disagreement = reference::event_disagreement(&doc, &pending, &keep);
        prop_assert!(disagreement.is_none(), "{}", disagreement.unwrap_or_default());
    }
}
