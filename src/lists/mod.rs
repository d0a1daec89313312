//! Filtering of MCP list answers (`tools/list`, `prompts/list`, `resources/list`,
//! `resources/templates/list`) so a caller sees only the items it may use.
//!
//! Pure Rust: no proxy code and no policy. The host says which request ids
//! asked for a list ([`PendingLists`]) and passes a predicate that keeps an
//! item; this module finds those answers in an `application/json` body
//! ([`filter_json`]) or a `text/event-stream` body ([`SseFilter`]) and removes
//! the items the predicate refuses.
//!
//! The answer is never re-serialised from a parsed tree: `serde_json` (without
//! `preserve_order`) would sort keys and rewrite numbers such as `1.0e3` or
//! integers beyond 2^64. Instead the body is parsed once to validate it and to
//! make the decisions, and the rewrite splices the original bytes: kept items
//! are copied verbatim, the array around them is rebuilt, and the result is
//! minified (whitespace outside strings removed) so it is compact and fits on
//! one SSE `data:` line.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::json::spans::{array_elements, minify, object_members, skip_ws};
use crate::json::{self, JsonError};

/// The list methods whose answers are filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// `tools/list`; items are judged by their `name`.
    Tools,
    /// `prompts/list`; items are judged by their `name`.
    Prompts,
    /// `resources/list`; items are judged by their `uri`.
    Resources,
    /// `resources/templates/list`; items are judged by their `uriTemplate`.
    ResourceTemplates,
}

impl ListKind {
    /// Every kind, in the order list answers are checked.
    pub const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::ResourceTemplates,
    ];

    /// The kind of list a JSON-RPC method asks for, if it is a list method.
    pub fn from_method(method: &str) -> Option<ListKind> {
        match method {
            "tools/list" => Some(ListKind::Tools),
            "prompts/list" => Some(ListKind::Prompts),
            "resources/list" => Some(ListKind::Resources),
            "resources/templates/list" => Some(ListKind::ResourceTemplates),
            _ => None,
        }
    }

    /// The member of the `result` object that holds the items.
    pub fn items_key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }
}

/// The list requests (JSON-RPC id and kind) whose answers must be filtered:
/// one entry for a single request, several for a batch. Ids are kept under
/// their canonical text ([`id_key`]), so an answer's id is found in
/// logarithmic time however many messages a batch holds, and an upstream that
/// echoes `1` as `"1"` or `1.0` is still matched.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PendingLists {
    by_id: BTreeMap<IdKey, Vec<ListKind>>,
}

/// A JSON-RPC id by its canonical text ([`id_key`]): what pending list
/// requests are found by. Every comparison of two keys is counted in the
/// unit tests ([`comparisons`]), which show that finding the answers of a
/// batch grows with its size, not with its square.
#[derive(Debug, Clone)]
struct IdKey(String);

impl PartialEq for IdKey {
    fn eq(&self, other: &IdKey) -> bool {
        comparisons::count();
        self.0 == other.0
    }
}

impl Eq for IdKey {}

impl PartialOrd for IdKey {
    fn partial_cmp(&self, other: &IdKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for IdKey {
    fn cmp(&self, other: &IdKey) -> std::cmp::Ordering {
        comparisons::count();
        self.0.cmp(&other.0)
    }
}

/// Counts comparisons of pending ids, in unit tests only.
#[cfg(test)]
mod comparisons {
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub fn count() {
        COUNT.with(|c| c.set(c.get() + 1));
    }

    /// The comparisons made on this thread since the last call.
    pub fn take() -> u64 {
        COUNT.with(|c| c.replace(0))
    }
}

#[cfg(not(test))]
mod comparisons {
    #[inline(always)]
    pub fn count() {}
}

impl PendingLists {
    /// No pending list request.
    pub fn new() -> PendingLists {
        PendingLists::default()
    }

    /// Records that the request with `id` asked for a list of `kind`.
    pub fn add(&mut self, id: &Value, kind: ListKind) {
        let kinds = self.by_id.entry(IdKey(id_key(id))).or_default();
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }

    /// Whether no list request is pending.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The kinds asked for under `id`. Normally one; a batch that reuses an
    /// id for two list methods gets both filters, which only ever removes
    /// more.
    fn kinds_for(&self, id: &Value) -> &[ListKind] {
        self.by_id
            .get(&IdKey(id_key(id)))
            .map_or(&[], Vec::as_slice)
    }
}

impl FromIterator<(Value, ListKind)> for PendingLists {
    fn from_iter<I: IntoIterator<Item = (Value, ListKind)>>(iter: I) -> PendingLists {
        let mut pending = PendingLists::new();
        for (id, kind) in iter {
            pending.add(&id, kind);
        }
        pending
    }
}

/// The canonical text of a JSON-RPC id: a string as it is, a number in its
/// shortest integral form when it has one (`1`, `1.0`, `1e0` and `"1"` all
/// meet), anything else as its JSON text. Matching too much only ever filters
/// more.
fn id_key(id: &Value) -> String {
    match id {
        Value::String(text) => text.clone(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => (f as i64).to_string(),
                    _ => n.to_string(),
                }
            }
        }
        other => other.to_string(),
    }
}

/// Why an answer could not be filtered. The host answers the caller with a
/// JSON-RPC error instead of passing the list on unfiltered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// The answer is not what a JSON-RPC server sends (the message says how).
    Invalid(String),
    /// An SSE event grew beyond the configured limit.
    TooLarge,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Invalid(why) => write!(f, "list answer cannot be filtered: {why}"),
            ListError::TooLarge => f.write_str("list answer event exceeds the size limit"),
        }
    }
}

impl std::error::Error for ListError {}

fn invalid(why: impl Into<String>) -> ListError {
    ListError::Invalid(why.into())
}

impl From<JsonError> for ListError {
    fn from(e: JsonError) -> ListError {
        ListError::Invalid(format!("not valid JSON: {e}"))
    }
}

/// A filtered `application/json` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The body to send: the original bytes when nothing was removed.
    pub body: Vec<u8>,
    /// How many items were removed.
    pub removed: usize,
    /// Whether `body` differs from the input (so `Content-Length` must change).
    pub changed: bool,
}

/// Filters an `application/json` answer: one JSON-RPC response or a batch
/// array of responses. Each list answer (a pending id, or a `result` holding
/// an items array) has its items filtered with `keep`, and a present
/// `cacheScope` becomes `"private"`; errors, other answers and other fields
/// pass untouched. When nothing changes the original bytes come back as they
/// are; otherwise the body is rewritten compactly.
pub fn filter_json(
    body: &[u8],
    pending: &PendingLists,
    keep: &dyn Fn(ListKind, &Value) -> bool,
) -> Result<Filtered, ListError> {
    match filter_document(body, pending, keep, Shape::ResponsesOnly)? {
        Some((rewritten, removed)) => Ok(Filtered {
            body: rewritten,
            removed,
            changed: true,
        }),
        None => Ok(Filtered {
            body: body.to_vec(),
            removed: 0,
            changed: false,
        }),
    }
}

/// What a document may hold: an `application/json` answer carries only
/// responses; an SSE stream also carries the server's requests and
/// notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    ResponsesOnly,
    AnyMessages,
}

/// Which items of one items array stay.
struct Cut {
    key: &'static str,
    keep: Vec<bool>,
}

/// A replacement of `doc[start..end]`.
struct Edit {
    start: usize,
    end: usize,
    with: Vec<u8>,
}

/// Filters one JSON document. `None` when nothing was removed; otherwise the
/// rewritten, minified document and the number of items removed.
fn filter_document(
    doc: &[u8],
    pending: &PendingLists,
    keep: &dyn Fn(ListKind, &Value) -> bool,
    shape: Shape,
) -> Result<Option<(Vec<u8>, usize)>, ListError> {
    let value = json::parse_strict(doc)?;
    let top = skip_ws(doc, 0);
    // Decide on the parsed tree first; locate byte spans only if a cut is due.
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    match &value {
        Value::Array(messages) => {
            if messages.is_empty() && shape == Shape::ResponsesOnly {
                return Err(invalid("empty batch"));
            }
            for (index, message) in messages.iter().enumerate() {
                let plan = plan_message(message, pending, keep, shape)?;
                if !plan.is_empty() {
                    plans.push((index, plan));
                }
            }
        }
        Value::Object(_) => {
            let plan = plan_message(&value, pending, keep, shape)?;
            if !plan.is_empty() {
                plans.push((0, plan));
            }
        }
        _ if shape == Shape::ResponsesOnly => {
            return Err(invalid("not a JSON-RPC response or batch"))
        }
        _ => {}
    }
    if plans.is_empty() {
        return Ok(None);
    }

    let starts: Vec<usize> = if value.is_array() {
        array_elements(doc, top)?
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    } else {
        vec![top]
    };
    let mut edits = Vec::new();
    let mut removed = 0;
    for (index, plan) in &plans {
        let start = *starts
            .get(*index)
            .ok_or_else(|| invalid("batch layout does not match its parse"))?;
        removed += cut_message(doc, start, plan, &mut edits)?;
    }
    edits.sort_by_key(|e| e.start);
    let mut out = Vec::with_capacity(doc.len());
    let mut at = 0;
    for edit in &edits {
        let before = doc
            .get(at..edit.start)
            .ok_or_else(|| invalid("overlapping rewrite"))?;
        out.extend_from_slice(before);
        out.extend_from_slice(&edit.with);
        at = edit.end;
    }
    out.extend_from_slice(doc.get(at..).unwrap_or_default());
    Ok(Some((minify(&out), removed)))
}

/// What to change in one message: the items arrays to cut, and whether its
/// `cacheScope` must become `"private"`.
#[derive(Default)]
struct Plan {
    cuts: Vec<Cut>,
    make_private: bool,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.cuts.is_empty() && !self.make_private
    }
}

/// Decides what to change in one message. A response is a list answer when
/// its id is a pending list request, or when its `result` holds a `tools`,
/// `prompts`, `resources` or `resourceTemplates` array (how a list answer is
/// recognised on a stream whose requests the filter never saw, and whatever
/// id an upstream echoes). A pending list whose items member is not an array
/// is refused: a client would choke on it anyway, and refusing is safer than
/// guessing what it would show.
fn plan_message(
    message: &Value,
    pending: &PendingLists,
    keep: &dyn Fn(ListKind, &Value) -> bool,
    shape: Shape,
) -> Result<Plan, ListError> {
    let Some(object) = message.as_object() else {
        return match shape {
            Shape::ResponsesOnly => Err(invalid("batch element is not an object")),
            Shape::AnyMessages => Ok(Plan::default()),
        };
    };
    let is_response = object.contains_key("id")
        && (object.contains_key("result") || object.contains_key("error"));
    if shape == Shape::ResponsesOnly && !is_response {
        return Err(invalid("not a JSON-RPC response"));
    }
    let (Some(id), Some(Value::Object(result))) = (object.get("id"), object.get("result")) else {
        return Ok(Plan::default());
    };
    let asked = pending.kinds_for(id);
    for kind in asked {
        let key = kind.items_key();
        if result.get(key).is_some_and(|items| !items.is_array()) {
            return Err(invalid(format!("result.{key} is not an array")));
        }
    }
    let mut plan = Plan::default();
    let mut is_list = !asked.is_empty();
    for kind in ListKind::ALL {
        let Some(Value::Array(items)) = result.get(kind.items_key()) else {
            continue;
        };
        is_list = true;
        // Items that are not objects cannot be judged, so they go.
        let flags: Vec<bool> = items
            .iter()
            .map(|item| item.is_object() && keep(kind, item))
            .collect();
        if flags.contains(&false) {
            plan.cuts.push(Cut {
                key: kind.items_key(),
                keep: flags,
            });
        }
    }
    // A list is judged per caller: a shared cache must never serve it to
    // another, whether or not anything was cut this time.
    plan.make_private = is_list
        && result
            .get("cacheScope")
            .is_some_and(|scope| scope != "private");
    Ok(plan)
}

/// Records the edits for one message object starting at `start`; returns the
/// number of items removed.
fn cut_message(
    doc: &[u8],
    start: usize,
    plan: &Plan,
    edits: &mut Vec<Edit>,
) -> Result<usize, ListError> {
    let members = object_members(doc, start)?;
    let (result_start, _) = member(&members, "result")?;
    let result = object_members(doc, result_start)?;
    let mut removed = 0;
    for cut in &plan.cuts {
        let (items_start, items_end) = member(&result, cut.key)?;
        let items = array_elements(doc, items_start)?;
        if items.len() != cut.keep.len() {
            return Err(invalid("items layout does not match their parse"));
        }
        let mut with = vec![b'['];
        for (&(s, e), &kept) in items.iter().zip(&cut.keep) {
            if kept {
                if with.len() > 1 {
                    with.push(b',');
                }
                with.extend_from_slice(doc.get(s..e).unwrap_or_default());
            } else {
                removed += 1;
            }
        }
        with.push(b']');
        edits.push(Edit {
            start: items_start,
            end: items_end,
            with,
        });
    }
    if plan.make_private {
        let (s, e) = member(&result, "cacheScope")?;
        edits.push(Edit {
            start: s,
            end: e,
            with: b"\"private\"".to_vec(),
        });
    }
    Ok(removed)
}

fn member(members: &[(String, usize, usize)], key: &str) -> Result<(usize, usize), ListError> {
    members
        .iter()
        .find(|(k, _, _)| k == key)
        .map(|&(_, s, e)| (s, e))
        .ok_or_else(|| invalid(format!("member {key:?} not found")))
}

mod sse;
pub use sse::SseFilter;

#[cfg(test)]
mod tests;
