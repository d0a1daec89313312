//! The list filter written the plain way, on a tree: `json::parse_strict`,
//! then the decisions and the edits on `serde_json` values. Never used to
//! filter (it would sort keys and rewrite numbers, and a tree costs more than
//! the rest of the work); it is what the filter is checked against, by the
//! agreement property test and the `list_answer` fuzz target: for every
//! answer both refuse, or the filter's output parses to the reference's tree
//! with the same items removed.

use serde_json::{Map, Value};

use super::{filter_json as filter, invalid, Item, Keep, ListError, ListKind, PendingLists};
use super::{Shape, SseFilter};
use crate::json;
use crate::mcp::param_headers;

/// What the reference makes of a document: `None` when nothing changes,
/// otherwise the filtered tree and the number of items removed.
pub type Outcome = Result<Option<(Value, usize)>, ListError>;

/// [`super::filter_json`], on a tree.
pub fn filter_json(body: &[u8], pending: &PendingLists, keep: &Keep) -> Outcome {
    filter_document(body, pending, keep, Shape::ResponsesOnly)
}

/// The payload of an SSE event, as [`super::SseFilter`] filters it (server
/// requests and notifications may stand beside the responses).
pub fn filter_event_data(data: &[u8], pending: &PendingLists, keep: &Keep) -> Outcome {
    filter_document(data, pending, keep, Shape::AnyMessages)
}

/// Whether the filter and the reference refused for the same reason. A
/// syntax error is worded by whichever parser met it, so any two agree;
/// every other refusal must be worded the same.
pub fn same_refusal(a: &ListError, b: &ListError) -> bool {
    let syntax = |e: &ListError| matches!(e, ListError::Invalid(m) if m.starts_with("not valid JSON: malformed JSON"));
    if syntax(a) || syntax(b) {
        syntax(a) && syntax(b)
    } else {
        a == b
    }
}

/// How the filter's answer to an `application/json` body differs from the
/// reference's: `None` when they agree (both refuse for the same reason,
/// or the output parses to the reference's tree with as many items gone).
pub fn json_disagreement(body: &[u8], pending: &PendingLists, keep: &Keep) -> Option<String> {
    let got = filter(body, pending, keep).map(|filtered| {
        filtered.changed.then(|| {
            let value = serde_json::from_slice(&filtered.body).unwrap_or(Value::Null);
            (value, filtered.removed)
        })
    });
    disagreement(got, filter_json(body, pending, keep))
}

/// The same for `doc` sent as one SSE event ([`as_event`]), against the
/// reference on the payload a client rebuilds from it. An event with
/// nothing to change must pass byte for byte.
pub fn event_disagreement(doc: &[u8], pending: &PendingLists, keep: &Keep) -> Option<String> {
    let (event, payload) = as_event(doc);
    if payload.iter().all(u8::is_ascii_whitespace) {
        // No message: the event passes, whatever a parser would say.
        return None;
    }
    let mut sse = SseFilter::new(pending.clone(), usize::MAX);
    let out = sse.push(&event, keep).and_then(|mut out| {
        out.extend(sse.finish(keep)?);
        Ok(out)
    });
    let got = match out {
        Ok(out) if out == event => Ok(None),
        Ok(out) => match event_data(&out) {
            Some(data) => Ok(Some((
                serde_json::from_slice(&data).unwrap_or(Value::Null),
                sse.removed(),
            ))),
            None => return Some("the filtered event is not data lines".into()),
        },
        Err(e) => Err(e),
    };
    disagreement(got, filter_event_data(&payload, pending, keep))
}

/// `doc` as one SSE event, a `data:` line per line of it (lines end in LF,
/// CRLF or CR), and the payload a client rebuilds from that event.
pub fn as_event(doc: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = doc;
    while let Some(end) = rest.iter().position(|&c| c == b'\n' || c == b'\r') {
        lines.push(rest.get(..end).unwrap_or_default());
        let crlf = rest.get(end..end + 2) == Some(b"\r\n");
        rest = rest
            .get(end + if crlf { 2 } else { 1 }..)
            .unwrap_or_default();
    }
    lines.push(rest);
    let mut event = Vec::new();
    for line in &lines {
        event.extend_from_slice(b"data: ");
        event.extend_from_slice(line);
        event.push(b'\n');
    }
    event.push(b'\n');
    (event, lines.join(&b'\n'))
}

/// The payload of an event made of `data: ` lines only.
fn event_data(event: &[u8]) -> Option<Vec<u8>> {
    let body = event.strip_suffix(b"\n\n")?;
    let lines: Option<Vec<&[u8]>> = body
        .split(|&c| c == b'\n')
        .map(|line| line.strip_prefix(b"data: "))
        .collect();
    Some(lines?.join(&b'\n'))
}

fn disagreement(got: Outcome, expected: Outcome) -> Option<String> {
    match (&got, &expected) {
        (Ok(None), Ok(None)) => None,
        (Ok(Some(a)), Ok(Some(b))) if a == b => None,
        (Err(a), Err(b)) if same_refusal(a, b) => None,
        _ => Some(format!("filter: {got:?}\nreference: {expected:?}")),
    }
}

pub(super) fn filter_document(
    doc: &[u8],
    pending: &PendingLists,
    keep: &Keep,
    shape: Shape,
) -> Outcome {
    let mut value = json::parse_strict(doc)?;
    let mut removed = 0;
    let mut changed = false;
    let messages: Vec<&mut Value> = match &mut value {
        Value::Array(messages) => {
            if messages.is_empty() && shape == Shape::ResponsesOnly {
                return Err(invalid("empty batch"));
            }
            messages.iter_mut().collect()
        }
        message @ Value::Object(_) => vec![message],
        _ if shape == Shape::ResponsesOnly => {
            return Err(invalid("not a JSON-RPC response or batch"))
        }
        _ => Vec::new(),
    };
    for message in messages {
        let Some(object) = message.as_object_mut() else {
            if shape == Shape::ResponsesOnly {
                return Err(invalid("batch element is not an object"));
            }
            continue;
        };
        let is_response = object.contains_key("id")
            && (object.contains_key("result") || object.contains_key("error"));
        if shape == Shape::ResponsesOnly && !is_response {
            return Err(invalid("not a JSON-RPC response"));
        }
        let Some(id) = object.get("id").cloned() else {
            continue;
        };
        let Some(Value::Object(result)) = object.get_mut("result") else {
            continue;
        };
        let (n, edited) = filter_result(result, pending.kinds_for(&id), keep)?;
        removed += n;
        changed |= edited;
    }
    Ok(changed.then_some((value, removed)))
}

/// Filters one `result` in place; returns the items removed and whether
/// anything changed.
fn filter_result(
    result: &mut Map<String, Value>,
    asked: &[ListKind],
    keep: &Keep,
) -> Result<(usize, bool), ListError> {
    for kind in asked {
        let key = kind.items_key();
        if result.get(key).is_some_and(|items| !items.is_array()) {
            return Err(invalid(format!("result.{key} is not an array")));
        }
    }
    let mut is_list = !asked.is_empty();
    let mut removed = 0;
    for kind in ListKind::ALL {
        let Some(Value::Array(items)) = result.get_mut(kind.items_key()) else {
            continue;
        };
        is_list = true;
        let before = items.len();
        // Items that are not objects cannot be judged, so they go.
        items.retain(|item| item.is_object() && keep(&item_view(kind, item, &to_text(item))));
        removed += before - items.len();
    }
    let mut changed = removed > 0;
    if let Some(scope) = result.get_mut("cacheScope") {
        if is_list && scope != "private" {
            *scope = Value::from("private");
            changed = true;
        }
    }
    Ok((removed, changed))
}

fn to_text(item: &Value) -> Vec<u8> {
    serde_json::to_vec(item).unwrap_or_default()
}

/// An item as the predicate sees it, from its tree (`json` is its text).
fn item_view<'a>(kind: ListKind, item: &'a Value, json: &'a [u8]) -> Item<'a> {
    Item {
        kind,
        key: item.get(kind.item_key()).and_then(Value::as_str),
        json,
        declaration: has_member(item, param_headers::DECLARATION),
    }
}

/// Whether a member named `name` stands anywhere in `value`.
pub fn has_member(value: &Value, name: &str) -> bool {
    match value {
        Value::Object(members) => members
            .iter()
            .any(|(key, value)| key == name || has_member(value, name)),
        Value::Array(elements) => elements.iter().any(|v| has_member(v, name)),
        _ => false,
    }
}
