//! Filtering of MCP list answers (`tools/list`, `prompts/list`, `resources/list`,
//! `resources/templates/list`) so a caller sees only the items it may use.
//!
//! Pure Rust: no proxy code and no policy. The host says which request ids
//! asked for a list ([`PendingLists`]) and passes a predicate that keeps an
//! item; this module finds those answers in an `application/json` body
//! ([`filter_json`]) or a `text/event-stream` body ([`SseFilter`]) and removes
//! the items the predicate refuses.
//!
//! The answer is never parsed into a tree nor re-serialised from one:
//! `serde_json` (without `preserve_order`) would sort keys and rewrite
//! numbers such as `1.0e3` or integers beyond 2^64, and building a tree for
//! a long list costs more than everything else the filter does. Instead one
//! strict scan ([`crate::json::scan`], as strict as `json::parse_strict`)
//! checks the body and keeps only what the decisions need (`read`): ids,
//! item spans and the string each item is judged by. The rewrite splices the
//! original bytes: an items array with removed items is rebuilt from its
//! kept items, copied verbatim, and everything else passes byte for byte
//! (whitespace included; an SSE event keeps its `data:` lines, see
//! [`SseFilter`]).

use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use crate::json::JsonError;
use read::{Document, Listed, Members, Message, Top};

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

    /// The kind whose items a `result` member holds, if it holds items.
    pub fn from_items_key(key: &str) -> Option<ListKind> {
        ListKind::ALL
            .into_iter()
            .find(|kind| kind.items_key() == key)
    }

    /// The member of an item that names it: what the rules judge it by.
    pub fn item_key(self) -> &'static str {
        match self {
            ListKind::Tools | ListKind::Prompts => "name",
            ListKind::Resources => "uri",
            ListKind::ResourceTemplates => "uriTemplate",
        }
    }

    /// The kind's position in [`ListKind::ALL`].
    fn index(self) -> usize {
        match self {
            ListKind::Tools => 0,
            ListKind::Prompts => 1,
            ListKind::Resources => 2,
            ListKind::ResourceTemplates => 3,
        }
    }
}

/// One listed item, as the predicate that keeps or removes it sees it.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    kind: ListKind,
    key: Option<&'a str>,
    json: &'a [u8],
    declaration: bool,
}

impl<'a> Item<'a> {
    /// The kind of list it is in.
    pub fn kind(&self) -> ListKind {
        self.kind
    }

    /// Its [`ListKind::item_key`] member, unescaped, when that is a string:
    /// what the rules judge it by. An item without one cannot be judged.
    pub fn key(&self) -> Option<&'a str> {
        self.key
    }

    /// The item parsed (its text was checked with the whole answer), for a
    /// predicate that needs more than its key. It costs a tree, so ask only
    /// when it matters (see [`Item::has_declaration`]).
    pub fn value(&self) -> Option<Value> {
        serde_json::from_slice(self.json).ok()
    }

    /// Whether a key [`crate::mcp::param_headers::DECLARATION`]
    /// (`x-mcp-header`, after unescaping) stands anywhere in the item, as
    /// the scan saw: only then can a tool declare `Mcp-Param-*` headers, so
    /// only then is it worth parsing.
    pub fn has_declaration(&self) -> bool {
        self.declaration
    }
}

/// The predicate that keeps an item (`true`) or removes it.
pub type Keep<'k> = dyn Fn(&Item) -> bool + 'k;

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
/// are; otherwise the body is spliced from them (see the module's notes).
pub fn filter_json(
    body: &[u8],
    pending: &PendingLists,
    keep: &Keep,
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

/// A change to the document.
enum Edit {
    /// The items array at `span` becomes its kept items (those of `items`
    /// in [`Document::items`] marked kept).
    Cut {
        span: Range<usize>,
        items: Range<usize>,
    },
    /// The `cacheScope` value at `span` becomes `"private"`.
    MakePrivate { span: Range<usize> },
}

impl Edit {
    fn start(&self) -> usize {
        match self {
            Edit::Cut { span, .. } | Edit::MakePrivate { span } => span.start,
        }
    }
}

/// What is decided about a document: its edits, and which of its items stay.
struct Plan {
    edits: Vec<Edit>,
    /// One flag per item of [`Document::items`].
    kept: Vec<bool>,
    removed: usize,
}

/// Filters one JSON document. `None` when nothing changes; otherwise the
/// rewritten document and the number of items removed.
fn filter_document(
    doc: &[u8],
    pending: &PendingLists,
    keep: &Keep,
    shape: Shape,
) -> Result<Option<(Vec<u8>, usize)>, ListError> {
    // The whole document is checked before anything is decided: a syntax
    // error or a repeated key anywhere wins over what the messages say.
    let read = read::document(doc)?;
    if shape == Shape::ResponsesOnly {
        match read.top {
            Top::Batch if read.messages.is_empty() => return Err(invalid("empty batch")),
            Top::Other => return Err(invalid("not a JSON-RPC response or batch")),
            _ => {}
        }
    }
    let mut plan = Plan {
        edits: Vec::new(),
        kept: vec![true; read.items.len()],
        removed: 0,
    };
    for message in &read.messages {
        plan_message(doc, &read, message, pending, keep, shape, &mut plan)?;
    }
    if plan.edits.is_empty() {
        return Ok(None);
    }
    let out = rewrite(doc, &read.items, &plan)?;
    Ok(Some((out, plan.removed)))
}

/// Decides what to change in one message. A response is a list answer when
/// its id is a pending list request, or when its `result` holds a `tools`,
/// `prompts`, `resources` or `resourceTemplates` array (how a list answer is
/// recognised on a stream whose requests the filter never saw, and whatever
/// id an upstream echoes). A pending list whose items member is not an array
/// is refused: a client would choke on it anyway, and refusing is safer than
/// guessing what it would show.
fn plan_message(
    doc: &[u8],
    read: &Document,
    message: &Message,
    pending: &PendingLists,
    keep: &Keep,
    shape: Shape,
    plan: &mut Plan,
) -> Result<(), ListError> {
    if !message.is_object {
        return match shape {
            Shape::ResponsesOnly => Err(invalid("batch element is not an object")),
            Shape::AnyMessages => Ok(()),
        };
    }
    let is_response = message.id.is_some() && (message.has_result || message.has_error);
    if shape == Shape::ResponsesOnly && !is_response {
        return Err(invalid("not a JSON-RPC response"));
    }
    let (Some(id), Some(result)) = (&message.id, &message.result) else {
        return Ok(());
    };
    let id: Value = serde_json::from_slice(doc.get(id.clone()).unwrap_or_default())
        .map_err(|_| invalid("unreadable id"))?;
    let asked = pending.kinds_for(&id);
    for kind in asked {
        if matches!(result.lists[kind.index()], Members::NotArray) {
            return Err(invalid(format!(
                "result.{} is not an array",
                kind.items_key()
            )));
        }
    }
    let mut is_list = !asked.is_empty();
    for kind in ListKind::ALL {
        let Members::Array { span, items } = &result.lists[kind.index()] else {
            continue;
        };
        is_list = true;
        let mut removed = 0;
        for index in items.clone() {
            let listed = read.items.get(index).ok_or_else(|| invalid("item lost"))?;
            // Items that are not objects cannot be judged, so they go.
            let stays = listed.is_object && keep(&item_view(doc, kind, listed));
            if !stays {
                if let Some(flag) = plan.kept.get_mut(index) {
                    *flag = false;
                }
                removed += 1;
            }
        }
        if removed > 0 {
            plan.removed += removed;
            plan.edits.push(Edit::Cut {
                span: span.clone(),
                items: items.clone(),
            });
        }
    }
    // A list is judged per caller: a shared cache must never serve it to
    // another, whether or not anything was cut this time.
    if let Some(scope) = &result.cache_scope {
        if is_list && !scope.private {
            plan.edits.push(Edit::MakePrivate {
                span: scope.span.clone(),
            });
        }
    }
    Ok(())
}

fn item_view<'a>(doc: &'a [u8], kind: ListKind, listed: &'a Listed) -> Item<'a> {
    Item {
        kind,
        key: listed.key.as_deref(),
        json: doc.get(listed.span.clone()).unwrap_or_default(),
        declaration: listed.declaration,
    }
}

/// The document with the plan's edits made. Edits never overlap: a cut
/// array and a `cacheScope` are distinct members of one `result`.
fn rewrite(doc: &[u8], items: &[Listed], plan: &Plan) -> Result<Vec<u8>, ListError> {
    let mut edits: Vec<&Edit> = plan.edits.iter().collect();
    edits.sort_by_key(|edit| edit.start());
    let mut out = Vec::with_capacity(doc.len());
    let mut at = 0;
    for edit in edits {
        let before = doc
            .get(at..edit.start())
            .ok_or_else(|| invalid("overlapping rewrite"))?;
        out.extend_from_slice(before);
        match edit {
            Edit::Cut { span, items: range } => {
                out.push(b'[');
                let mut first = true;
                for index in range.clone() {
                    let (Some(listed), Some(true)) = (items.get(index), plan.kept.get(index))
                    else {
                        continue;
                    };
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    out.extend_from_slice(doc.get(listed.span.clone()).unwrap_or_default());
                }
                out.push(b']');
                at = span.end;
            }
            Edit::MakePrivate { span } => {
                out.extend_from_slice(b"\"private\"");
                at = span.end;
            }
        }
    }
    out.extend_from_slice(doc.get(at..).unwrap_or_default());
    Ok(out)
}

mod read;
pub mod reference;
mod sse;
pub use sse::SseFilter;

#[cfg(test)]
mod agreement;
#[cfg(test)]
mod tests;
