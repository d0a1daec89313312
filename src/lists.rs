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

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::collections::BTreeMap;
use std::fmt;

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
    by_id: BTreeMap<String, Vec<ListKind>>,
}

impl PendingLists {
    /// No pending list request.
    pub fn new() -> PendingLists {
        PendingLists::default()
    }

    /// Records that the request with `id` asked for a list of `kind`.
    pub fn add(&mut self, id: &Value, kind: ListKind) {
        let kinds = self.by_id.entry(id_key(id)).or_default();
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
        self.by_id.get(&id_key(id)).map_or(&[], Vec::as_slice)
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
    let value = parse_strict(doc)?;
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

// ---------------------------------------------------------------------------
// Strict parse: a serde_json Value, but a duplicate key anywhere is an error.
// With duplicates, a first-wins client and our last-wins parse would read
// different ids or items, which could show an unfiltered list. Recursion is
// driven by serde_json's deserializer, so its depth limit (128) still holds.

fn parse_strict(doc: &[u8]) -> Result<Value, ListError> {
    let mut de = serde_json::Deserializer::from_slice(doc);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    de.end()
        .map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

// ---------------------------------------------------------------------------
// Byte spans in a document already validated by `parse_strict`. All loops are
// iterative (nesting is counted, not recursed) and indexing is checked, so a
// surprise is an error, never a panic.

fn truncated() -> ListError {
    invalid("unexpected end of JSON")
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

fn byte_at(b: &[u8], i: usize) -> Result<u8, ListError> {
    b.get(i).copied().ok_or_else(truncated)
}

/// The index just past the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], i: usize) -> Result<usize, ListError> {
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
fn value_end(b: &[u8], i: usize) -> Result<usize, ListError> {
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
                            .ok_or_else(|| invalid("unbalanced JSON"))?;
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
fn object_members(b: &[u8], i: usize) -> Result<Vec<(String, usize, usize)>, ListError> {
    if byte_at(b, i)? != b'{' {
        return Err(invalid("expected an object"));
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
            .map_err(|e| invalid(format!("bad key: {e}")))?;
        j = skip_ws(b, key_end);
        if byte_at(b, j)? != b':' {
            return Err(invalid("expected ':'"));
        }
        let start = skip_ws(b, j + 1);
        let end = value_end(b, start)?;
        members.push((key, start, end));
        j = skip_ws(b, end);
        match byte_at(b, j)? {
            b',' => j = skip_ws(b, j + 1),
            b'}' => return Ok(members),
            _ => return Err(invalid("expected ',' or '}'")),
        }
    }
}

/// The element spans of the array starting at `b[i] == '['`.
fn array_elements(b: &[u8], i: usize) -> Result<Vec<(usize, usize)>, ListError> {
    if byte_at(b, i)? != b'[' {
        return Err(invalid("expected an array"));
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
            _ => return Err(invalid("expected ',' or ']'")),
        }
    }
}

/// Removes whitespace outside strings. Strings cannot hold a raw CR or LF, so
/// the result is one line, as an SSE `data:` field needs.
fn minify(b: &[u8]) -> Vec<u8> {
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

// ---------------------------------------------------------------------------
// Server-sent events.

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Filters a `text/event-stream` answer chunk by chunk.
///
/// Events end at a blank line; lines end in LF, CRLF or CR, and chunks may
/// split anywhere (a CR at the end of a chunk waits for the next byte, since
/// it may be half of a CRLF). An event whose `data:` lines form JSON holding a
/// response to a pending list request, with something removed, is re-emitted
/// with its other lines (`event:`, `id:`, `retry:`, comments) in order and the
/// filtered JSON on a single `data:` line in place of the first one. Every
/// other event passes byte for byte, as soon as it is complete. Ids stay
/// pending for the whole stream, so a repeated answer is filtered too.
///
/// Stricter than "invalid JSON for a pending id": a non-empty, non-blank data
/// payload that is not valid JSON (or repeats a key) is an error whatever its
/// id, since its id cannot be known and MCP sends only JSON-RPC in `data:`.
///
/// Any event (complete or not) longer than `max_event_bytes`, counting its
/// line ends, is [`ListError::TooLarge`], so the outcome does not depend on
/// how the stream was chunked. After an error the filter keeps returning it.
pub struct SseFilter {
    pending: PendingLists,
    max_event_bytes: usize,
    /// The current incomplete event.
    buf: Vec<u8>,
    /// Bytes of `buf` already split into lines.
    scanned: usize,
    /// Where the current line starts in `buf`.
    line_start: usize,
    /// Whether a leading byte-order mark may still be coming.
    at_stream_start: bool,
    finished: bool,
    removed: usize,
    failed: Option<ListError>,
}

impl SseFilter {
    /// A filter for one event stream answering the `pending` list requests.
    pub fn new(pending: PendingLists, max_event_bytes: usize) -> SseFilter {
        SseFilter {
            pending,
            max_event_bytes,
            buf: Vec::new(),
            scanned: 0,
            line_start: 0,
            at_stream_start: true,
            finished: false,
            removed: 0,
            failed: None,
        }
    }

    /// Feeds the next chunk; returns the bytes that can be emitted now (every
    /// event completed so far, filtered where needed).
    pub fn push(
        &mut self,
        chunk: &[u8],
        keep: &dyn Fn(ListKind, &Value) -> bool,
    ) -> Result<Vec<u8>, ListError> {
        if self.finished {
            return Err(invalid("data after the end of the stream"));
        }
        self.buf.extend_from_slice(chunk);
        self.run(keep, false)
    }

    /// Ends the stream. A trailing event without its final blank line is
    /// still filtered and emitted in the shape it came (no blank line is
    /// added): a client that drops incomplete events still drops it, and one
    /// that dispatches it sees the filtered list.
    pub fn finish(
        &mut self,
        keep: &dyn Fn(ListKind, &Value) -> bool,
    ) -> Result<Vec<u8>, ListError> {
        if self.finished && self.failed.is_none() {
            return Ok(Vec::new());
        }
        self.finished = true;
        self.run(keep, true)
    }

    /// How many items were removed so far.
    pub fn removed(&self) -> usize {
        self.removed
    }

    fn run(
        &mut self,
        keep: &dyn Fn(ListKind, &Value) -> bool,
        at_end: bool,
    ) -> Result<Vec<u8>, ListError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.drain(keep, at_end);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn drain(
        &mut self,
        keep: &dyn Fn(ListKind, &Value) -> bool,
        at_end: bool,
    ) -> Result<Vec<u8>, ListError> {
        let mut out = Vec::new();
        if self.at_stream_start {
            // The SSE parser drops a leading BOM; so must we, or a client
            // would read `data:` where we read a field named "\u{FEFF}data".
            let n = self.buf.len().min(BOM.len());
            if n < BOM.len() && self.buf.get(..n) == BOM.get(..n) && !at_end {
                return Ok(out);
            }
            if self.buf.starts_with(BOM) {
                out.extend_from_slice(BOM);
                self.buf.drain(..BOM.len());
            }
            self.at_stream_start = false;
        }

        let mut removed = 0;
        let mut event_start = 0;
        let mut i = self.scanned;
        let mut line_start = self.line_start;
        while let Some(&c) = self.buf.get(i) {
            let line_end = match c {
                b'\n' => i + 1,
                b'\r' => match self.buf.get(i + 1) {
                    Some(b'\n') => i + 2,
                    Some(_) => i + 1,
                    None if at_end => i + 1,
                    // Half of a CRLF, perhaps: wait for the next byte.
                    None => break,
                },
                _ => {
                    i += 1;
                    continue;
                }
            };
            if i == line_start {
                let event = self.buf.get(event_start..line_end).unwrap_or_default();
                let (bytes, n) = self.emit(event, keep)?;
                out.extend_from_slice(&bytes);
                removed += n;
                event_start = line_end;
            }
            line_start = line_end;
            i = line_end;
        }

        if at_end && event_start < self.buf.len() {
            let event = self.buf.get(event_start..).unwrap_or_default();
            let (bytes, n) = self.emit(event, keep)?;
            out.extend_from_slice(&bytes);
            removed += n;
            event_start = self.buf.len();
            i = event_start;
            line_start = event_start;
        }
        self.removed += removed;
        self.buf.drain(..event_start);
        self.scanned = i - event_start;
        self.line_start = line_start - event_start;
        if self.buf.len() > self.max_event_bytes {
            return Err(ListError::TooLarge);
        }
        Ok(out)
    }

    /// The bytes to emit for one event (complete, or trailing at the end)
    /// and the items removed from it.
    fn emit(
        &self,
        event: &[u8],
        keep: &dyn Fn(ListKind, &Value) -> bool,
    ) -> Result<(Vec<u8>, usize), ListError> {
        if event.len() > self.max_event_bytes {
            return Err(ListError::TooLarge);
        }
        filter_event(event, &self.pending, keep)
    }
}

/// One line of an event: its content and its line end (empty for a last line
/// without one).
fn split_lines(event: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while let Some(&c) = event.get(i) {
        let end = match c {
            b'\n' => i + 1,
            b'\r' if event.get(i + 1) == Some(&b'\n') => i + 2,
            b'\r' => i + 1,
            _ => {
                i += 1;
                continue;
            }
        };
        lines.push((
            event.get(start..i).unwrap_or_default(),
            event.get(i..end).unwrap_or_default(),
        ));
        start = end;
        i = end;
    }
    if start < event.len() {
        lines.push((event.get(start..).unwrap_or_default(), &[][..]));
    }
    lines
}

/// A line's field name and value, per the SSE spec: split at the first colon,
/// drop one leading space from the value. A comment has an empty name.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&c| c == b':') {
        Some(colon) => {
            let name = line.get(..colon).unwrap_or_default();
            let value = line.get(colon + 1..).unwrap_or_default();
            (name, value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[][..]),
    }
}

/// Filters one event; returns the bytes to emit and the items removed.
fn filter_event(
    event: &[u8],
    pending: &PendingLists,
    keep: &dyn Fn(ListKind, &Value) -> bool,
) -> Result<(Vec<u8>, usize), ListError> {
    let lines = split_lines(event);
    // The spec appends each data value plus LF and drops the last LF: a join.
    let values: Vec<&[u8]> = lines
        .iter()
        .map(|(content, _)| field(content))
        .filter(|(name, _)| *name == b"data")
        .map(|(_, value)| value)
        .collect();
    let payload = values.join(&b'\n');
    // No data, or only blank data (a priming event), is not a message.
    if payload
        .iter()
        .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok((event.to_vec(), 0));
    }
    let Some((json, removed)) = filter_document(&payload, pending, keep, Shape::AnyMessages)?
    else {
        return Ok((event.to_vec(), 0));
    };
    let mut out = Vec::with_capacity(event.len());
    let mut data_written = false;
    for (content, line_end) in &lines {
        if field(content).0 == b"data" {
            if !data_written {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(line_end);
                data_written = true;
            }
        } else {
            out.extend_from_slice(content);
            out.extend_from_slice(line_end);
        }
    }
    Ok((out, removed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the host's predicate does: judge an item by the field its kind
    /// names, against an allow list.
    fn allow(allowed: &'static [&'static str]) -> impl Fn(ListKind, &Value) -> bool {
        move |kind, item| {
            let field = match kind {
                ListKind::Tools | ListKind::Prompts => "name",
                ListKind::Resources => "uri",
                ListKind::ResourceTemplates => "uriTemplate",
            };
            item.get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| allowed.contains(&v))
        }
    }

    fn keep_all(_: ListKind, _: &Value) -> bool {
        true
    }

    fn pending(id: Value, kind: ListKind) -> PendingLists {
        [(id, kind)].into_iter().collect()
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("test output is JSON")
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("test output is UTF-8")
    }

    // As the official MCP Python SDK (FastMCP, pydantic) writes them: compact,
    // keys in model order, `exclude_none`.
    const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"get_weather","description":"Get the current weather (°C) for a city","inputSchema":{"properties":{"city":{"title":"City","type":"string"}},"required":["city"],"title":"get_weatherArguments","type":"object"}},{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},{"name":"search_docs","description":"Search the docs","inputSchema":{"properties":{"query":{"title":"Query","type":"string"},"limit":{"default":10,"title":"Limit","type":"integer"}},"required":["query"],"title":"search_docsArguments","type":"object"}}],"nextCursor":"abc","_meta":{"trace":"t-1"}}}"#;

    const PROMPTS: &str = r#"{"jsonrpc":"2.0","id":"p-7","result":{"prompts":[{"name":"summarize","description":"Summarize a text","arguments":[{"name":"text","required":true}]},{"name":"admin_report","description":"Internal report","arguments":[]}]}}"#;

    const RESOURCES: &str = r#"{"jsonrpc":"2.0","id":3,"result":{"resources":[{"uri":"file:///docs/readme.md","name":"readme","mimeType":"text/markdown"},{"uri":"file:///secrets/keys.txt","name":"keys","mimeType":"text/plain"}]}}"#;

    const TEMPLATES: &str = r#"{"jsonrpc":"2.0","id":4,"result":{"resourceTemplates":[{"uriTemplate":"users://{id}/profile","name":"profile"},{"uriTemplate":"admin://{id}/audit","name":"audit"}]}}"#;

    #[test]
    fn list_methods_map_to_kinds_and_item_keys() {
        let cases = [
            ("tools/list", ListKind::Tools, "tools"),
            ("prompts/list", ListKind::Prompts, "prompts"),
            ("resources/list", ListKind::Resources, "resources"),
            (
                "resources/templates/list",
                ListKind::ResourceTemplates,
                "resourceTemplates",
            ),
        ];
        for (method, kind, key) in cases {
            assert_eq!(ListKind::from_method(method), Some(kind));
            assert_eq!(kind.items_key(), key);
        }
        assert_eq!(ListKind::from_method("tools/call"), None);
        assert_eq!(ListKind::from_method("resources/read"), None);
    }

    #[test]
    fn keep_all_returns_identical_bytes() {
        // Pretty-printed on purpose: untouched answers keep their exact bytes.
        let body = serde_json::to_vec_pretty(&parse(TOOLS.as_bytes())).unwrap();
        let out = filter_json(&body, &pending(json!(1), ListKind::Tools), &keep_all).unwrap();
        assert_eq!(
            out,
            Filtered {
                body,
                removed: 0,
                changed: false
            }
        );
    }

    #[test]
    fn forbidden_tools_are_removed_and_other_fields_kept() {
        let keep = allow(&["get_weather", "search_docs"]);
        let out =
            filter_json(TOOLS.as_bytes(), &pending(json!(1), ListKind::Tools), &keep).unwrap();
        assert!(out.changed);
        assert_eq!(out.removed, 1);
        let mut expected = parse(TOOLS.as_bytes());
        expected["result"]["tools"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        assert_eq!(parse(&out.body), expected);
        // Kept items are copied verbatim, keys in their original order.
        assert_eq!(
            text(&out.body),
            TOOLS.replace(
                r#"{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},"#,
                ""
            )
        );
    }

    #[test]
    fn all_tools_forbidden_leaves_an_empty_list() {
        let out = filter_json(
            TOOLS.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&[]),
        )
        .unwrap();
        assert_eq!(out.removed, 3);
        assert_eq!(parse(&out.body)["result"]["tools"], json!([]));
        assert_eq!(parse(&out.body)["result"]["nextCursor"], json!("abc"));
    }

    #[test]
    fn prompts_are_filtered_by_name() {
        let out = filter_json(
            PROMPTS.as_bytes(),
            &pending(json!("p-7"), ListKind::Prompts),
            &allow(&["summarize"]),
        )
        .unwrap();
        assert_eq!(out.removed, 1);
        assert_eq!(
            parse(&out.body)["result"]["prompts"],
            json!([{"name":"summarize","description":"Summarize a text","arguments":[{"name":"text","required":true}]}])
        );
    }

    #[test]
    fn resources_are_filtered_by_uri() {
        let out = filter_json(
            RESOURCES.as_bytes(),
            &pending(json!(3), ListKind::Resources),
            &allow(&["file:///docs/readme.md"]),
        )
        .unwrap();
        assert_eq!(out.removed, 1);
        assert_eq!(
            parse(&out.body)["result"]["resources"],
            json!([{"uri":"file:///docs/readme.md","name":"readme","mimeType":"text/markdown"}])
        );
    }

    #[test]
    fn resource_templates_are_filtered_by_uri_template() {
        let out = filter_json(
            TEMPLATES.as_bytes(),
            &pending(json!(4), ListKind::ResourceTemplates),
            &allow(&["users://{id}/profile"]),
        )
        .unwrap();
        assert_eq!(out.removed, 1);
        assert_eq!(
            parse(&out.body)["result"]["resourceTemplates"],
            json!([{"uriTemplate":"users://{id}/profile","name":"profile"}])
        );
    }

    #[test]
    fn public_cache_scope_becomes_private_when_items_are_removed() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}],"cacheScope":"public","ttlMs":60000}}"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert_eq!(
            text(&out.body),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"cacheScope":"private","ttlMs":60000}}"#
        );
    }

    #[test]
    fn cache_scope_becomes_private_even_when_nothing_is_removed() {
        // An admin's full list is still a list judged for that caller; one
        // already private is left as it came.
        for (scope, changed) in [("public", true), ("private", false)] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a"}}],"cacheScope":"{scope}"}}}}"#
            );
            let out = filter_json(
                body.as_bytes(),
                &pending(json!(1), ListKind::Tools),
                &allow(&["a"]),
            )
            .unwrap();
            assert_eq!(out.changed, changed, "{scope}");
            assert_eq!(out.removed, 0);
            assert_eq!(parse(&out.body)["result"]["cacheScope"], "private");
            assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name": "a"}]));
        }
    }

    #[test]
    fn absent_cache_scope_is_not_added() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}}"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert!(parse(&out.body)["result"].get("cacheScope").is_none());
    }

    #[test]
    fn error_response_passes_untouched() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"tools unavailable"}}"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&[]),
        )
        .unwrap();
        assert!(!out.changed);
        assert_eq!(out.body, body.as_bytes());
    }

    #[test]
    fn list_answer_under_another_id_is_recognised_by_its_shape() {
        let out = filter_json(
            TOOLS.as_bytes(),
            &pending(json!(2), ListKind::Tools),
            &allow(&[]),
        )
        .unwrap();
        assert_eq!(out.removed, 3);
        // And on a stream whose requests were never seen (a GET stream).
        let out = filter_json(TOOLS.as_bytes(), &PendingLists::new(), &allow(&[])).unwrap();
        assert_eq!(out.removed, 3);
    }

    #[test]
    fn other_answers_under_other_ids_pass_untouched() {
        let call = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"x"}],"capabilities":{"tools":{}}}}"#;
        let out = filter_json(call.as_bytes(), &PendingLists::new(), &allow(&[])).unwrap();
        assert!(!out.changed);
        assert_eq!(out.body, call.as_bytes());
    }

    #[test]
    fn string_id_matches_equal_looking_number() {
        // An upstream that echoes `1` as `"1"`: still the pending list, so
        // its items member must be an array.
        let odd = r#"{"jsonrpc":"2.0","id":"1","result":{"tools":{"name":"x"}}}"#;
        let refused = filter_json(
            odd.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&[]),
        );
        assert!(matches!(refused, Err(ListError::Invalid(_))));
        let echoed = TOOLS.replacen(r#""id":1"#, r#""id":"1""#, 1);
        let out = filter_json(
            echoed.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&[]),
        )
        .unwrap();
        assert_eq!(out.removed, 3);
    }

    #[test]
    fn numeric_ids_match_by_value_across_forms() {
        // A caller that sends `1.0` must not get its list unfiltered because
        // the server echoed `1`.
        let out = filter_json(
            TOOLS.as_bytes(),
            &pending(json!(1.0), ListKind::Tools),
            &allow(&[]),
        )
        .unwrap();
        assert_eq!(out.removed, 3);
    }

    #[test]
    fn result_of_another_kind_is_filtered_as_what_it_is() {
        // A pending tools/list id answered with prompts: judged as prompts.
        let body = PROMPTS.replace(r#""p-7""#, "1");
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["summarize"]),
        )
        .unwrap();
        assert_eq!(out.removed, 1);
        assert!(!text(&out.body).contains("admin_report"));
    }

    #[test]
    fn batch_filters_each_list_result_and_passes_other_results() {
        let call = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"Sunny, 21°C"}],"isError":false}}"#;
        let body = format!("[{TOOLS}, {call},\n {RESOURCES}]");
        let pending: PendingLists = [(json!(1), ListKind::Tools), (json!(3), ListKind::Resources)]
            .into_iter()
            .collect();
        let keep = allow(&["get_weather", "file:///docs/readme.md"]);
        let out = filter_json(body.as_bytes(), &pending, &keep).unwrap();
        assert_eq!(out.removed, 3);
        let v = parse(&out.body);
        let names: Vec<&str> = v[0]["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["get_weather"]);
        assert_eq!(v[1], parse(call.as_bytes()));
        assert_eq!(v[2]["result"]["resources"].as_array().unwrap().len(), 1);
        // Compact: the whitespace between batch elements is gone too.
        assert!(text(&out.body).starts_with(r#"[{"jsonrpc""#));
        assert!(text(&out.body).contains(r#"}},{"jsonrpc""#) && !text(&out.body).contains('\n'));
    }

    #[test]
    fn non_object_items_are_removed() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},"a",null,[{"name":"a"}]]}}"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert_eq!(out.removed, 3);
        assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name":"a"}]));
    }

    #[test]
    fn rewrite_keeps_key_order_number_text_and_escapes() {
        let body = r#"{ "jsonrpc": "2.0", "id": 1, "result": { "tools": [ { "name": "a", "inputSchema": { "type": "object", "maximum": 1.0e3, "big": 123456789012345678901234567890 }, "description": "say \"hi\"  now\t" }, { "name": "b" } ] } }"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert_eq!(
            text(&out.body),
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","inputSchema":{"type":"object","maximum":1.0e3,"big":123456789012345678901234567890},"description":"say \"hi\"  now\t"}]}}"#
        );
    }

    #[test]
    fn escaped_member_names_are_recognised() {
        let body =
            r#"{"jsonrpc":"2.0","id":1,"result":{"t\u006fols":[{"name":"a"},{"name":"b"}]}}"#;
        let out = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &allow(&["a"]),
        )
        .unwrap();
        assert_eq!(out.removed, 1);
        assert_eq!(parse(&out.body)["result"]["tools"], json!([{"name":"a"}]));
    }

    #[test]
    fn invalid_json_answer_is_invalid() {
        for body in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{"[..],
            b"",
            b"\xff",
            b"{} {}",
            b"{\"a\":NaN}",
        ] {
            let err =
                filter_json(body, &pending(json!(1), ListKind::Tools), &keep_all).unwrap_err();
            assert!(matches!(err, ListError::Invalid(_)), "{err}");
        }
    }

    #[test]
    fn answer_that_is_not_json_rpc_responses_is_invalid() {
        for body in [
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"[]"#,
            r#"[1]"#,
            r#""tools""#,
            r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":5,"method":"ping"}]"#,
        ] {
            let err = filter_json(
                body.as_bytes(),
                &pending(json!(1), ListKind::Tools),
                &keep_all,
            )
            .unwrap_err();
            assert!(matches!(err, ListError::Invalid(_)), "{body}");
        }
    }

    #[test]
    fn duplicate_key_anywhere_is_invalid() {
        // First-wins and last-wins readers would see different ids or names.
        for body in [
            r#"{"jsonrpc":"2.0","id":2,"id":1,"result":{"tools":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","name":"b"}]}}"#,
        ] {
            let err = filter_json(
                body.as_bytes(),
                &pending(json!(1), ListKind::Tools),
                &keep_all,
            )
            .unwrap_err();
            assert!(
                matches!(err, ListError::Invalid(ref m) if m.contains("duplicate")),
                "{err}"
            );
        }
    }

    #[test]
    fn items_that_are_not_an_array_are_invalid() {
        let body = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"a"}}}"#;
        let err = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &keep_all,
        )
        .unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)));
    }

    #[test]
    fn deeply_nested_answer_is_invalid_not_a_crash() {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a","x":{}{}}}]}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let err = filter_json(
            body.as_bytes(),
            &pending(json!(1), ListKind::Tools),
            &keep_all,
        )
        .unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)));
    }

    #[test]
    fn error_display_names_the_cause() {
        assert_eq!(
            ListError::Invalid("not valid JSON".into()).to_string(),
            "list answer cannot be filtered: not valid JSON"
        );
        assert_eq!(
            ListError::TooLarge.to_string(),
            "list answer event exceeds the size limit"
        );
    }

    // ---- SSE -------------------------------------------------------------

    const PROGRESS: &str = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5,"total":1.0,"message":"listing…"}}"#;

    /// A Python SDK stream (sse-starlette, CRLF): a progress notification,
    /// a comment ping, then the list result with an `id:` field.
    fn sse_sample() -> String {
        format!(
            "event: message\r\ndata: {PROGRESS}\r\n\r\n: ping - 2025-06-18 10:00:00\r\n\r\nid: ev-2\r\nevent: message\r\ndata: {TOOLS}\r\n\r\n"
        )
    }

    fn sse_sample_filtered() -> String {
        let tools = TOOLS.replace(
            r#"{"name":"delete_repo","description":"Delete a repository","inputSchema":{"properties":{"repo":{"title":"Repo","type":"string"}},"required":["repo"],"title":"delete_repoArguments","type":"object"}},"#,
            "",
        );
        format!(
            "event: message\r\ndata: {PROGRESS}\r\n\r\n: ping - 2025-06-18 10:00:00\r\n\r\nid: ev-2\r\nevent: message\r\ndata: {tools}\r\n\r\n"
        )
    }

    fn run_sse(
        chunks: &[&[u8]],
        pending: PendingLists,
        max: usize,
    ) -> Result<(Vec<u8>, usize), ListError> {
        let keep = allow(&["get_weather", "search_docs"]);
        let mut filter = SseFilter::new(pending, max);
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(filter.push(chunk, &keep)?);
        }
        out.extend(filter.finish(&keep)?);
        Ok((out, filter.removed()))
    }

    fn tools_1() -> PendingLists {
        pending(json!(1), ListKind::Tools)
    }

    #[test]
    fn sse_list_result_after_progress_notification_is_filtered() {
        let sample = sse_sample();
        let (out, removed) = run_sse(&[sample.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(text(&out), sse_sample_filtered());
        assert_eq!(removed, 1);
    }

    #[test]
    fn sse_keep_all_passes_bytes_unchanged() {
        let sample = sse_sample();
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        let mut out = filter.push(sample.as_bytes(), &keep_all).unwrap();
        out.extend(filter.finish(&keep_all).unwrap());
        assert_eq!(out, sample.as_bytes());
        assert_eq!(filter.removed(), 0);
    }

    #[test]
    fn sse_list_events_under_other_ids_are_filtered_other_events_pass() {
        let sample = sse_sample();
        let (out, removed) = run_sse(
            &[sample.as_bytes()],
            pending(json!(9), ListKind::Tools),
            1 << 20,
        )
        .unwrap();
        assert_eq!(out, sse_sample_filtered().as_bytes());
        assert_eq!(removed, 1);
        let call = format!("event: message\r\ndata: {PROGRESS}\r\n\r\n");
        let (out, _) = run_sse(&[call.as_bytes()], PendingLists::new(), 1 << 20).unwrap();
        assert_eq!(out, call.as_bytes());
    }

    #[test]
    fn sse_complete_events_are_emitted_as_soon_as_complete() {
        let keep = allow(&["get_weather"]);
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        let progress = format!("event: message\r\ndata: {PROGRESS}\r\n\r\n");
        assert_eq!(
            filter.push(progress.as_bytes(), &keep).unwrap(),
            progress.as_bytes()
        );
        // Half a list event: nothing to emit yet.
        let list = format!("event: message\r\ndata: {TOOLS}\r\n\r\n");
        let (head, tail) = list.as_bytes().split_at(40);
        assert!(filter.push(head, &keep).unwrap().is_empty());
        let out = filter.push(tail, &keep).unwrap();
        assert_eq!(filter.removed(), 2);
        assert!(text(&out).starts_with("event: message\r\ndata: {"));
        assert!(filter.finish(&keep).unwrap().is_empty());
    }

    #[test]
    fn sse_keeps_comments_id_event_and_retry_fields_in_order() {
        let stream =
            format!(": before\nretry: 3000\nid: 42\ndata: {TOOLS}\n: after\nevent: message\n\n");
        let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        let out = text(&out);
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines[..3], [": before", "retry: 3000", "id: 42"]);
        assert!(lines[3].starts_with("data: {\"jsonrpc\":\"2.0\",\"id\":1,"));
        assert!(!lines[3].contains("delete_repo"));
        assert_eq!(lines[4..], [": after", "event: message", "", ""]);
    }

    #[test]
    fn sse_split_at_every_offset_matches_unsplit() {
        let sample = sse_sample();
        let bytes = sample.as_bytes();
        let whole = run_sse(&[bytes], tools_1(), 1 << 20).unwrap();
        // Offsets fall inside lines, inside CRLFs and inside "°" and "…".
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(
                run_sse(&[a, b], tools_1(), 1 << 20).unwrap(),
                whole,
                "split at {at}"
            );
        }
    }

    #[test]
    fn sse_one_byte_at_a_time_matches_unsplit() {
        let sample = sse_sample();
        let bytes = sample.as_bytes();
        let whole = run_sse(&[bytes], tools_1(), 1 << 20).unwrap();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run_sse(&chunks, tools_1(), 1 << 20).unwrap(), whole);
    }

    #[test]
    fn sse_crlf_split_between_cr_and_lf_is_one_line_end() {
        let keep = allow(&["get_weather"]);
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        // The blank line's CR arrives alone: the event is not over until we
        // know whether an LF follows.
        let head = format!("data: {PROGRESS}\r\n\r");
        assert!(filter.push(head.as_bytes(), &keep).unwrap().is_empty());
        let out = filter.push(b"\ndata: ", &keep).unwrap();
        assert_eq!(out, format!("data: {PROGRESS}\r\n\r\n").as_bytes());
        // And a CR split from the LF that ends a data line does not end the event.
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        let mut out = filter
            .push(format!("data: {TOOLS}\r").as_bytes(), &keep)
            .unwrap();
        out.extend(filter.push(b"\n", &keep).unwrap());
        assert!(out.is_empty());
        out.extend(filter.push(b"\r\n", &keep).unwrap());
        assert_eq!(filter.removed(), 2);
        assert!(text(&out).ends_with("}}\r\n\r\n"));
    }

    #[test]
    fn sse_lf_and_cr_only_line_ends_are_understood() {
        for end in ["\n", "\r"] {
            let stream =
                format!("event: message{end}data: {PROGRESS}{end}{end}data: {TOOLS}{end}{end}");
            let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
            assert_eq!(removed, 1);
            let out = text(&out);
            assert!(out.starts_with(&format!(
                "event: message{end}data: {PROGRESS}{end}{end}data: "
            )));
            assert!(out.ends_with(&format!("}}}}{end}{end}")));
            assert!(!out.contains("delete_repo"));
        }
    }

    #[test]
    fn sse_multi_line_data_is_joined_and_reemitted_on_one_line() {
        let pretty = serde_json::to_string_pretty(&parse(TOOLS.as_bytes())).unwrap();
        let mut stream = String::from("event: message\n");
        for (n, line) in pretty.lines().enumerate() {
            // One leading space is stripped, and only one: mix both forms.
            if n % 2 == 0 {
                stream.push_str(&format!("data: {line}\n"));
            } else {
                stream.push_str(&format!("data:{line}\n"));
            }
        }
        stream.push('\n');
        let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(removed, 1);
        let out = text(&out);
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "event: message");
        let data = lines[1].strip_prefix("data: ").unwrap();
        let mut expected = parse(TOOLS.as_bytes());
        expected["result"]["tools"]
            .as_array_mut()
            .unwrap()
            .remove(1);
        assert_eq!(parse(data.as_bytes()), expected);
    }

    #[test]
    fn sse_event_too_large_while_incomplete_is_too_large() {
        let keep = allow(&["get_weather"]);
        let mut filter = SseFilter::new(tools_1(), 100);
        assert!(filter
            .push(b"data: {\"jsonrpc\":\"2.0\",", &keep)
            .unwrap()
            .is_empty());
        let err = filter.push(&[b' '; 100], &keep).unwrap_err();
        assert_eq!(err, ListError::TooLarge);
        // The error sticks: nothing unfiltered leaks out afterwards.
        assert_eq!(
            filter.push(b"\n\n", &keep).unwrap_err(),
            ListError::TooLarge
        );
        assert_eq!(filter.finish(&keep).unwrap_err(), ListError::TooLarge);
    }

    #[test]
    fn sse_complete_event_over_the_limit_is_too_large_however_chunked() {
        let stream = format!("data: {TOOLS}\n\n");
        let max = stream.len() - 1;
        assert_eq!(
            run_sse(&[stream.as_bytes()], tools_1(), max).unwrap_err(),
            ListError::TooLarge
        );
        let chunks: Vec<&[u8]> = stream.as_bytes().chunks(7).collect();
        assert_eq!(
            run_sse(&chunks, tools_1(), max).unwrap_err(),
            ListError::TooLarge
        );
        assert!(run_sse(&[stream.as_bytes()], tools_1(), stream.len()).is_ok());
    }

    #[test]
    fn sse_invalid_json_for_pending_id_is_invalid() {
        let stream =
            "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[\r\n\r\n";
        let err = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)), "{err}");
    }

    #[test]
    fn sse_non_json_data_is_invalid_since_its_id_is_unknown() {
        let err = run_sse(&[b"data: hello\n\n"], tools_1(), 1 << 20).unwrap_err();
        assert!(matches!(err, ListError::Invalid(_)));
    }

    #[test]
    fn sse_priming_event_with_empty_data_passes() {
        let stream = format!(
            "id: prime-0\ndata:\n\nid: prime-1\ndata: \nretry: 1000\n\ndata: {PROGRESS}\n\n"
        );
        let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(out, stream.as_bytes());
    }

    #[test]
    fn sse_trailing_event_is_filtered_at_finish_without_adding_a_blank_line() {
        let stream = format!("data: {PROGRESS}\n\nid: 7\ndata: {TOOLS}");
        let keep = allow(&["get_weather", "search_docs"]);
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        let first = filter.push(stream.as_bytes(), &keep).unwrap();
        assert_eq!(first, format!("data: {PROGRESS}\n\n").as_bytes());
        let rest = filter.finish(&keep).unwrap();
        let rest = text(&rest);
        assert!(rest.starts_with("id: 7\ndata: {\"jsonrpc\""), "{rest}");
        assert!(rest.ends_with("}}") && !rest.contains("delete_repo"));
        assert_eq!(filter.removed(), 1);
        // A lone CR at the very end counts as the line end it is.
        let (out, _) = run_sse(
            &[format!("data: {PROGRESS}\r").as_bytes()],
            tools_1(),
            1 << 20,
        )
        .unwrap();
        assert_eq!(out, format!("data: {PROGRESS}\r").as_bytes());
    }

    #[test]
    fn sse_push_after_finish_is_refused() {
        let mut filter = SseFilter::new(tools_1(), 1 << 20);
        assert!(filter.finish(&keep_all).unwrap().is_empty());
        assert!(filter.finish(&keep_all).unwrap().is_empty());
        assert!(matches!(
            filter.push(b"data: {}\n\n", &keep_all),
            Err(ListError::Invalid(_))
        ));
    }

    #[test]
    fn sse_leading_byte_order_mark_does_not_hide_data() {
        let stream = format!("\u{FEFF}data: {TOOLS}\n\n");
        let bytes = stream.as_bytes();
        for at in 0..6 {
            let (a, b) = bytes.split_at(at);
            let (out, removed) = run_sse(&[a, b], tools_1(), 1 << 20).unwrap();
            assert_eq!(removed, 1, "split at {at}");
            assert!(out.starts_with(b"\xEF\xBB\xBFdata: {"));
        }
    }

    #[test]
    fn sse_batch_in_one_event_filters_each_pending_result() {
        let stream = format!("data: [{TOOLS},{PROGRESS},{PROMPTS}]\n\n");
        let pending: PendingLists = [
            (json!(1), ListKind::Tools),
            (json!("p-7"), ListKind::Prompts),
        ]
        .into_iter()
        .collect();
        let (out, removed) = run_sse(&[stream.as_bytes()], pending, 1 << 20).unwrap();
        // delete_repo, and both prompts (none is allowed).
        assert_eq!(removed, 3);
        let v = parse(
            text(&out)
                .trim_end()
                .strip_prefix("data: ")
                .unwrap()
                .as_bytes(),
        );
        assert_eq!(v[1], parse(PROGRESS.as_bytes()));
        assert_eq!(v[2]["result"]["prompts"], json!([]));
    }

    #[test]
    fn sse_repeated_answer_for_the_same_id_is_filtered_too() {
        let stream = format!("data: {TOOLS}\n\ndata: {TOOLS}\n\n");
        let (out, removed) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(removed, 2);
        assert!(!text(&out).contains("delete_repo"));
    }

    #[test]
    fn sse_server_request_and_error_response_pass() {
        let stream = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"sampling/createMessage\",\"params\":{}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32603,\"message\":\"x\"}}\n\n";
        let (out, _) = run_sse(&[stream.as_bytes()], tools_1(), 1 << 20).unwrap();
        assert_eq!(out, stream.as_bytes());
    }
}
