//! The JSON-RPC / MCP request body, parsed once into typed values.
//!
//! The parser is strict where a lenient one would let a request slip past the
//! rules: a duplicate key anywhere in the document is refused (parsers disagree
//! on which copy wins, so the filter and the server could see different
//! calls), a name-keyed method without a string name is refused (a rule keyed
//! on names must never be skipped), and strings are compared after JSON
//! unescaping (`"tools\/call"` is `tools/call`, as the server will see it).
//!
//! It walks the document once with serde visitors: only `jsonrpc`, `method`,
//! `id`, `params.name` and `params.uri` are kept; everything else (tool
//! `arguments`, `_meta`, results) is skipped without building a
//! `serde_json::Value`, while still checking it for duplicate keys. serde_json's
//! recursion limit (128) stays on, so deep nesting is a parse error, not a
//! stack overflow.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// JSON-RPC error code for a header/body disagreement (MCP 2026-07-28
/// `HeaderMismatch`).
pub const HEADER_MISMATCH: i64 = -32020;

/// JSON-RPC error code for malformed JSON.
pub const PARSE_ERROR: i64 = -32700;

/// JSON-RPC error code for valid JSON that is not a valid JSON-RPC message.
pub const INVALID_REQUEST: i64 = -32600;

/// A JSON-RPC request or notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The decoded `method`.
    pub method: String,
    /// The name rules match on: `params.name` for `tools/call` and
    /// `prompts/get`, `params.uri` for `resources/read`, else `None`.
    pub name: Option<String>,
    /// The request id (a string or an integer); `None` for a notification.
    pub id: Option<Value>,
}

/// One message of a POSTed body.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request or notification: rules apply.
    Call(Call),
    /// A JSON-RPC response (`id` and `result` or `error`, no `method`): how a
    /// client answers a server-initiated request. No rule applies to it.
    Response {
        /// The id of the server request it answers.
        id: Value,
    },
}

/// A parsed POST body: one message or a non-empty batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A single JSON-RPC object.
    Single(Message),
    /// A JSON array of messages (protocol 2025-03-26); never empty.
    Batch(Vec<Message>),
}

impl Body {
    /// Every message, in body order (one for a single message).
    pub fn messages(&self) -> &[Message] {
        match self {
            Body::Single(message) => std::slice::from_ref(message),
            Body::Batch(messages) => messages,
        }
    }

    /// Whether the body is a JSON array, even of one element.
    pub fn is_batch(&self) -> bool {
        matches!(self, Body::Batch(_))
    }

    /// The id a JSON-RPC error answering this body should carry: the id of a
    /// single request. `None` (answer with `"id": null`) for a notification,
    /// a response (an error does not answer a response) and a batch (one error
    /// cannot answer several requests).
    pub fn answer_id(&self) -> Option<&Value> {
        match self {
            Body::Single(Message::Call(call)) => call.id.as_ref(),
            _ => None,
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Not JSON at all: malformed, trailing data, invalid UTF-8, too deep.
    Parse(String),
    /// JSON, but not a valid JSON-RPC / MCP message (includes duplicate keys).
    Invalid(String),
}

impl BodyError {
    /// The JSON-RPC error code: -32700 for [`BodyError::Parse`], -32600 for
    /// [`BodyError::Invalid`].
    pub fn code(&self) -> i64 {
        match self {
            BodyError::Parse(_) => PARSE_ERROR,
            BodyError::Invalid(_) => INVALID_REQUEST,
        }
    }

    /// A short message safe to send back: it never quotes more than a short,
    /// printable key name from the body.
    pub fn message(&self) -> &str {
        match self {
            BodyError::Parse(message) | BodyError::Invalid(message) => message,
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for BodyError {}

/// `Mcp-Method` / `Mcp-Name` do not match the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMismatch {
    /// A short reason, safe to send back (no header or body values in it).
    pub reason: &'static str,
}

impl HeaderMismatch {
    /// The JSON-RPC error code, [`HEADER_MISMATCH`].
    pub fn code(&self) -> i64 {
        HEADER_MISMATCH
    }
}

impl fmt::Display for HeaderMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for HeaderMismatch {}

/// Whether a `Content-Type` value is `application/json`, with or without
/// parameters. Anything else (including `text/plain` carrying JSON, and a
/// missing header) is refused, so no body reaches the server unchecked.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or("");
    media_type.trim().eq_ignore_ascii_case("application/json")
}

/// Parses a POST body into typed messages.
///
/// Malformed JSON (including invalid UTF-8, trailing data and nesting deeper
/// than serde_json's limit of 128) is [`BodyError::Parse`]; JSON that is not
/// JSON-RPC 2.0, or holds a duplicate key anywhere, is [`BodyError::Invalid`].
/// Syntax is checked over the whole document before meaning, so a malformed
/// body is always a parse error.
pub fn parse_body(bytes: &[u8]) -> Result<Body, BodyError> {
    let check = KeyCheck::default();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw = BodySeed(&check)
        .deserialize(&mut deserializer)
        .map_err(from_json_error)?;
    deserializer.end().map_err(from_json_error)?;
    if let Some(message) = check.first.into_inner() {
        return Err(BodyError::Invalid(message));
    }
    match raw {
        RawBody::Object(message) => Ok(Body::Single(message.validate()?)),
        RawBody::Array(elements) => {
            if elements.is_empty() {
                return Err(invalid("empty batch"));
            }
            let mut messages = Vec::with_capacity(elements.len());
            for (index, element) in elements.into_iter().enumerate() {
                let message = match element {
                    RawElement::Object(message) => message.validate(),
                    RawElement::Other => Err(invalid("batch element is not an object")),
                };
                messages.push(message.map_err(|e| match e {
                    BodyError::Invalid(m) => {
                        BodyError::Invalid(format!("batch element {index}: {m}"))
                    }
                    other => other,
                })?);
            }
            Ok(Body::Batch(messages))
        }
        RawBody::Other => Err(invalid("not a JSON-RPC object or batch")),
    }
}

/// Checks the 2026-07-28 `Mcp-Method` / `Mcp-Name` request headers against
/// the body. An absent header is not checked; a present one must equal the
/// method / name of every message. `Mcp-Name` is first decoded from its
/// `=?base64?...?=` form when the whole value has that form. A header present
/// with a response body, or `Mcp-Name` with a call that has no name, is a
/// mismatch.
pub fn check_mcp_headers(
    body: &Body,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
) -> Result<(), HeaderMismatch> {
    if mcp_method.is_none() && mcp_name.is_none() {
        return Ok(());
    }
    let name = match mcp_name {
        Some(value) => Some(decode_header_value(value).ok_or(HeaderMismatch {
            reason: "Mcp-Name header is not valid base64 UTF-8",
        })?),
        None => None,
    };
    for message in body.messages() {
        let Message::Call(call) = message else {
            return Err(HeaderMismatch {
                reason: "Mcp-Method or Mcp-Name header sent with a JSON-RPC response",
            });
        };
        // The spec allows the base64 form only for Mcp-Name (and Mcp-Param-*):
        // Mcp-Method is compared as sent.
        if let Some(method) = mcp_method {
            if method != call.method {
                return Err(HeaderMismatch {
                    reason: "Mcp-Method header does not match the body's method",
                });
            }
        }
        if let Some(name) = &name {
            match &call.name {
                Some(body_name) if body_name == name.as_ref() => {}
                Some(_) => {
                    return Err(HeaderMismatch {
                        reason: "Mcp-Name header does not match the body's name",
                    })
                }
                None => {
                    return Err(HeaderMismatch {
                        reason: "Mcp-Name header sent for a call without a name",
                    })
                }
            }
        }
    }
    Ok(())
}

/// The spec's sentinel markers are case-sensitive and exact.
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Standard alphabet; padding optional, since clients disagree on it and the
/// decoded value is compared with the body anyway.
const HEADER_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes `=?base64?...?=` when the whole value has that form; any other
/// value is taken as is. `None` when the encoded form is not valid base64 or
/// not UTF-8.
fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    let Some(encoded) = value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SUFFIX))
    else {
        return Some(Cow::Borrowed(value));
    };
    let bytes = HEADER_BASE64.decode(encoded).ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

fn invalid(message: &str) -> BodyError {
    BodyError::Invalid(message.to_string())
}

fn from_json_error(error: serde_json::Error) -> BodyError {
    match error.classify() {
        // Every visitor below accepts every JSON type, so a data error is
        // unexpected; still, it means "not what we expected", not bad syntax.
        serde_json::error::Category::Data => invalid("not a JSON-RPC message"),
        // serde_json's syntax messages name the problem and its position only,
        // never body content.
        _ => BodyError::Parse(format!("malformed JSON: {error}")),
    }
}

// ---------------------------------------------------------------------------
// Duplicate key detection

/// Duplicate key bookkeeping for one parse.
///
/// The first duplicate is recorded rather than raised so that the rest of
/// the document is still checked for syntax: a malformed body is a parse
/// error whatever else is wrong with it.
///
/// Keys of the objects being walked live on one shared stack (each object
/// owns the tail it pushed, and drops it when it ends), so walking a body of
/// many small objects allocates nothing per object.
#[derive(Default)]
struct KeyCheck<'de> {
    first: RefCell<Option<String>>,
    stack: RefCell<Vec<Cow<'de, str>>>,
}

impl KeyCheck<'_> {
    fn record(&self, key: &str) {
        let mut first = self.first.borrow_mut();
        if first.is_none() {
            // Quote the key only when it is short and printable, so the
            // message cannot carry much of the body or control characters.
            let message =
                if key.len() <= 32 && key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                    format!("duplicate key \"{key}\"")
                } else {
                    "duplicate key".to_string()
                };
            *first = Some(message);
        }
    }
}

/// Keys seen in one JSON object, compared after unescaping.
struct Keys<'de> {
    /// Where this object's keys start on the shared stack.
    start: usize,
    /// Large objects switch to a hash set so an object with many keys stays
    /// linear, not quadratic. std's hasher is randomly keyed (no hash flooding).
    many: Option<HashSet<Cow<'de, str>>>,
}

/// Up to this many keys a linear scan beats hashing.
const FEW_KEYS: usize = 16;

impl<'de> Keys<'de> {
    fn new(check: &KeyCheck<'de>) -> Self {
        Keys {
            start: check.stack.borrow().len(),
            many: None,
        }
    }

    /// Adds `key`; records a duplicate when it was already there. Nested
    /// objects have finished (and popped their keys) by the time the next
    /// key of this one arrives, so the tail from `start` is this object's.
    fn insert(&mut self, key: Cow<'de, str>, check: &KeyCheck<'de>) {
        if let Some(set) = &mut self.many {
            if set.contains(&key) {
                check.record(&key);
            } else {
                set.insert(key);
            }
            return;
        }
        let mut stack = check.stack.borrow_mut();
        let own = stack.get(self.start..).unwrap_or_default();
        if own.contains(&key) {
            drop(stack);
            check.record(&key);
            return;
        }
        stack.push(key);
        if stack.len() - self.start > FEW_KEYS {
            self.many = Some(stack.drain(self.start..).collect());
        }
    }

    /// Ends the object: pops its keys off the shared stack.
    fn finish(self, check: &KeyCheck<'de>) {
        check.stack.borrow_mut().truncate(self.start);
    }
}

/// Reads an object key as an unescaped string, borrowed when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

// ---------------------------------------------------------------------------
// Skipping a value (still checking it for duplicate keys)

/// Walks any JSON value without keeping it, checking every object in it for
/// duplicate keys. Recursion goes through serde_json's `deserialize_any`, so
/// its depth limit applies.
#[derive(Clone, Copy)]
struct Skip<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for Skip<'_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = Keys::new(self.0);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            keys.insert(key, self.0);
            map.next_value_seed(self)?;
        }
        keys.finish(self.0);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The raw shape: what the document holds, before JSON-RPC validation

enum RawBody<'de> {
    Object(RawMessage<'de>),
    Array(Vec<RawElement<'de>>),
    Other,
}

enum RawElement<'de> {
    Object(RawMessage<'de>),
    Other,
}

/// A string field, or the fact that the field held something else.
enum Text<'de> {
    Str(Cow<'de, str>),
    NotString,
}

enum RawId {
    Valid(Value),
    Invalid,
}

enum RawParams<'de> {
    Object {
        name: Option<Text<'de>>,
        uri: Option<Text<'de>>,
    },
    Array,
    Other,
}

#[derive(Default)]
struct RawMessage<'de> {
    jsonrpc: Option<Text<'de>>,
    method: Option<Text<'de>>,
    id: Option<RawId>,
    params: Option<RawParams<'de>>,
    has_result: bool,
    has_error: bool,
}

/// Methods whose rules match on a name, and the `params` field holding it.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

impl RawMessage<'_> {
    fn validate(self) -> Result<Message, BodyError> {
        match self.jsonrpc {
            Some(Text::Str(version)) if version == "2.0" => {}
            _ => return Err(invalid("jsonrpc must be \"2.0\"")),
        }
        let id = match self.id {
            None => None,
            Some(RawId::Valid(id)) => Some(id),
            Some(RawId::Invalid) => return Err(invalid("id must be a string or an integer")),
        };
        let method = match self.method {
            Some(Text::Str(method)) => method,
            Some(Text::NotString) => return Err(invalid("method must be a string")),
            None => return response(id, self.has_result, self.has_error, self.params.is_some()),
        };
        if self.has_result || self.has_error {
            // Neither request nor response: parsers would disagree on which.
            return Err(invalid("a request cannot carry result or error"));
        }
        let (name, uri) = match self.params {
            None | Some(RawParams::Array) => (None, None),
            Some(RawParams::Object { name, uri }) => (name, uri),
            Some(RawParams::Other) => return Err(invalid("params must be an object or an array")),
        };
        let name = match name_field(&method) {
            None => None,
            Some(field) => {
                let value = if field == "uri" { uri } else { name };
                match value {
                    Some(Text::Str(value)) => Some(value.into_owned()),
                    // A rule keyed on names must never be skipped because the
                    // name is missing or of another type.
                    _ => {
                        return Err(BodyError::Invalid(format!(
                            "{method} needs params.{field} as a string"
                        )))
                    }
                }
            }
        };
        Ok(Message::Call(Call {
            method: method.into_owned(),
            name,
            id,
        }))
    }
}

fn response(
    id: Option<Value>,
    has_result: bool,
    has_error: bool,
    has_params: bool,
) -> Result<Message, BodyError> {
    if !has_result && !has_error {
        return Err(invalid("missing method"));
    }
    if has_result && has_error {
        return Err(invalid("a response carries result or error, not both"));
    }
    if has_params {
        return Err(invalid("a response cannot carry params"));
    }
    match id {
        Some(id) => Ok(Message::Response { id }),
        None => Err(invalid("a response needs an id")),
    }
}

// ---------------------------------------------------------------------------
// Seeds and visitors building the raw shape

/// The whole document: an object, an array, or something else.
struct BodySeed<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_, 'de> {
    type Value = RawBody<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, 'de> {
    type Value = RawBody<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawBody::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element_seed(ElementSeed(self.0))? {
            elements.push(element);
        }
        Ok(RawBody::Array(elements))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        MessageVisitor(self.0).visit_map(map).map(RawBody::Object)
    }
}

/// One batch element: an object, or anything else (refused later).
struct ElementSeed<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, 'de> {
    type Value = RawElement<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_, 'de> {
    type Value = RawElement<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawElement::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        // A nested batch: walk it for syntax and duplicates, refuse it later.
        Skip(self.0).visit_seq(seq).map(|()| RawElement::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        MessageVisitor(self.0)
            .visit_map(map)
            .map(RawElement::Object)
    }
}

/// The fields of one message object.
struct MessageVisitor<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> Visitor<'de> for MessageVisitor<'_, 'de> {
    type Value = RawMessage<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let check = self.0;
        let mut keys = Keys::new(check);
        let mut message = RawMessage::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // On a repeated key the later value overwrites the earlier one
            // here, but the duplicate is recorded and the body refused, so
            // which one wins never matters.
            match key.as_ref() {
                "jsonrpc" => message.jsonrpc = Some(map.next_value_seed(TextSeed(check))?),
                "method" => message.method = Some(map.next_value_seed(TextSeed(check))?),
                "id" => message.id = Some(map.next_value_seed(IdSeed(check))?),
                "params" => message.params = Some(map.next_value_seed(ParamsSeed(check))?),
                "result" => {
                    message.has_result = true;
                    map.next_value_seed(Skip(check))?;
                }
                "error" => {
                    message.has_error = true;
                    map.next_value_seed(Skip(check))?;
                }
                _ => map.next_value_seed(Skip(check))?,
            }
            keys.insert(key, check);
        }
        keys.finish(check);
        Ok(message)
    }
}

/// A value that should be a string.
struct TextSeed<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for TextSeed<'_, 'de> {
    type Value = Text<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TextSeed<'_, 'de> {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Owned(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text::Str(Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Text::NotString)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Text::NotString)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Text::NotString)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Text::NotString)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Text::NotString)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_seq(seq).map(|()| Text::NotString)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_map(map).map(|()| Text::NotString)
    }
}

/// A JSON-RPC id: a string or an integer. Null, fractions, booleans, arrays
/// and objects are invalid (MCP forbids null ids; the others are not ids).
struct IdSeed<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for IdSeed<'_, 'de> {
    type Value = RawId;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdSeed<'_, 'de> {
    type Value = RawId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or integer id")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawId::Valid(Value::String(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(RawId::Valid(Value::String(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RawId::Valid(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawId::Valid(Value::from(v)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawId::Invalid)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawId::Invalid)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawId::Invalid)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_seq(seq).map(|()| RawId::Invalid)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_map(map).map(|()| RawId::Invalid)
    }
}

/// `params`: keeps `name` and `uri` of an object, skips everything else.
struct ParamsSeed<'a, 'de>(&'a KeyCheck<'de>);

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_, 'de> {
    type Value = RawParams<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_, 'de> {
    type Value = RawParams<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or array of params")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(RawParams::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_seq(seq).map(|()| RawParams::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let check = self.0;
        let mut keys = Keys::new(check);
        let (mut name, mut uri) = (None, None);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "name" => name = Some(map.next_value_seed(TextSeed(check))?),
                "uri" => uri = Some(map.next_value_seed(TextSeed(check))?),
                _ => map.next_value_seed(Skip(check))?,
            }
            keys.insert(key, check);
        }
        keys.finish(check);
        Ok(RawParams::Object { name, uri })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(method: &str, name: Option<&str>, id: Option<Value>) -> Message {
        Message::Call(Call {
            method: method.to_string(),
            name: name.map(str::to_string),
            id,
        })
    }

    #[test]
    fn valid_bodies_parse_into_typed_messages() {
        let cases: &[(&str, &[u8], Body)] = &[
            (
                "tools/call with name",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_x","arguments":{"a":[1,{"b":null}]}}}"#,
                Body::Single(call("tools/call", Some("get_x"), Some(json!(1)))),
            ),
            (
                "prompts/get with name, string id",
                br#"{"jsonrpc":"2.0","id":"abc","method":"prompts/get","params":{"name":"p"}}"#,
                Body::Single(call("prompts/get", Some("p"), Some(json!("abc")))),
            ),
            (
                "resources/read takes the uri",
                br#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a.txt","name":"ignored"}}"#,
                Body::Single(call("resources/read", Some("file:///a.txt"), Some(json!(2)))),
            ),
            (
                "tools/list has no name even when params.name is there",
                br#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"name":"x","cursor":"c"}}"#,
                Body::Single(call("tools/list", None, Some(json!(3)))),
            ),
            (
                "escaped slash in method",
                br#"{"jsonrpc":"2.0","id":4,"method":"tools\/call","params":{"name":"get_x"}}"#,
                Body::Single(call("tools/call", Some("get_x"), Some(json!(4)))),
            ),
            (
                "unicode escape in method and name",
                br#"{"jsonrpc":"2.0","id":5,"method":"\u0074ools/call","params":{"name":"del\u0065te_x"}}"#,
                Body::Single(call("tools/call", Some("delete_x"), Some(json!(5)))),
            ),
            (
                "escaped key spelling still names the field",
                br#"{"jsonrpc":"2.0","id":6,"m\u0065thod":"tools/call","params":{"na\u006de":"danger"}}"#,
                Body::Single(call("tools/call", Some("danger"), Some(json!(6)))),
            ),
            (
                "same keys in nested and sibling objects are not duplicates",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"name":"inner","a":{"a":{"a":1}},"b":[{"a":1},{"a":2}],"c":{"b":1},"d":{"a":1,"b":2}},"name":"outer","_meta":{"name":"meta"}},"x":{"id":2,"method":"m"}}"#,
                Body::Single(call("tools/call", Some("outer"), Some(json!(1)))),
            ),
            (
                "notification has no id",
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
                Body::Single(call("notifications/initialized", None, None)),
            ),
            (
                "negative and large integer ids",
                br#"[{"jsonrpc":"2.0","id":-7,"method":"ping"},{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}]"#,
                Body::Batch(vec![
                    call("ping", None, Some(json!(-7))),
                    call("ping", None, Some(json!(u64::MAX))),
                ]),
            ),
            (
                "params as an array",
                br#"{"jsonrpc":"2.0","id":8,"method":"custom","params":[1,2,{"k":"v"}]}"#,
                Body::Single(call("custom", None, Some(json!(8)))),
            ),
            (
                "response with result",
                br#"{"jsonrpc":"2.0","id":9,"result":{"roots":[]}}"#,
                Body::Single(Message::Response { id: json!(9) }),
            ),
            (
                "response with error",
                br#"{"jsonrpc":"2.0","id":"s-1","error":{"code":-1,"message":"no"}}"#,
                Body::Single(Message::Response { id: json!("s-1") }),
            ),
            (
                "unknown top-level keys are tolerated",
                br#"{"jsonrpc":"2.0","id":10,"method":"ping","extra":{"x":1}}"#,
                Body::Single(call("ping", None, Some(json!(10)))),
            ),
            (
                "surrounding whitespace",
                b" \n{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"ping\"}\r\n ",
                Body::Single(call("ping", None, Some(json!(11)))),
            ),
            (
                "2025-03-26 batch of initialize and tools/list",
                br#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"c","version":"1"}}},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
                Body::Batch(vec![
                    call("initialize", None, Some(json!(1))),
                    call("tools/list", None, Some(json!(2))),
                ]),
            ),
            (
                "2025-06-18 initialize",
                br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"roots":{"listChanged":true},"elicitation":{}},"clientInfo":{"name":"c","title":"C","version":"1.0"}}}"#,
                Body::Single(call("initialize", None, Some(json!(0)))),
            ),
            (
                "2026-07-28 server/discover",
                br#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"c","version":"1"},"io.modelcontextprotocol/clientCapabilities":{}}}}"#,
                Body::Single(call("server/discover", None, Some(json!(1)))),
            ),
            (
                "batch mixing a call, a notification and a response",
                br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}},{"jsonrpc":"2.0","method":"notifications/progress"},{"jsonrpc":"2.0","id":"r","result":{}}]"#,
                Body::Batch(vec![
                    call("tools/call", Some("a"), Some(json!(1))),
                    call("notifications/progress", None, None),
                    Message::Response { id: json!("r") },
                ]),
            ),
        ];
        for (what, bytes, expected) in cases {
            assert_eq!(parse_body(bytes).as_ref(), Ok(expected), "{what}");
        }
    }

    #[test]
    fn bad_bodies_are_refused_with_the_right_code() {
        let cases: &[(&str, &[u8], i64)] = &[
            // Malformed JSON.
            ("empty body", b"", PARSE_ERROR),
            ("whitespace only", b"  ", PARSE_ERROR),
            ("truncated", br#"{"jsonrpc":"2.0","id":1,"method":"ping""#, PARSE_ERROR),
            ("not JSON", b"hello", PARSE_ERROR),
            ("single quotes", br#"{'jsonrpc':'2.0'}"#, PARSE_ERROR),
            ("trailing comma", br#"{"jsonrpc":"2.0","id":1,"method":"ping",}"#, PARSE_ERROR),
            ("trailing garbage", br#"{"jsonrpc":"2.0","id":1,"method":"ping"} x"#, PARSE_ERROR),
            (
                "two concatenated objects",
                br#"{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"delete_x"}}"#,
                PARSE_ERROR,
            ),
            ("invalid UTF-8 in method", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\xffng\"}", PARSE_ERROR),
            ("invalid UTF-8 in a key", b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"\xc3\x28\":1}", PARSE_ERROR),
            (
                "invalid UTF-8 deep in arguments",
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"a\",\"arguments\":{\"x\":[\"\xed\xa0\x80\"]}}}",
                PARSE_ERROR,
            ),
            ("invalid UTF-8 outside strings", b"{\"jsonrpc\":\"2.0\"\xff}", PARSE_ERROR),
            (
                "lone surrogate escape",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"\ud800"}}"#,
                PARSE_ERROR,
            ),
            (
                "malformed after a duplicate key is still a parse error",
                br#"{"method":"a","method":"b""#,
                PARSE_ERROR,
            ),
            // Not JSON-RPC.
            ("a string", br#""tools/call""#, INVALID_REQUEST),
            ("a number", b"42", INVALID_REQUEST),
            ("null", b"null", INVALID_REQUEST),
            ("missing jsonrpc", br#"{"id":1,"method":"ping"}"#, INVALID_REQUEST),
            ("wrong jsonrpc version", br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, INVALID_REQUEST),
            ("numeric jsonrpc", br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#, INVALID_REQUEST),
            ("missing method", br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST),
            ("method not a string", br#"{"jsonrpc":"2.0","id":1,"method":["tools/call"]}"#, INVALID_REQUEST),
            ("null id", br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#, INVALID_REQUEST),
            ("float id", br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, INVALID_REQUEST),
            ("integral float id", br#"{"jsonrpc":"2.0","id":1.0,"method":"ping"}"#, INVALID_REQUEST),
            ("exponent id", br#"{"jsonrpc":"2.0","id":1e3,"method":"ping"}"#, INVALID_REQUEST),
            ("boolean id", br#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#, INVALID_REQUEST),
            ("object id", br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, INVALID_REQUEST),
            ("array id", br#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#, INVALID_REQUEST),
            ("params a string", br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#, INVALID_REQUEST),
            ("params null", br#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#, INVALID_REQUEST),
            ("tools/call without params", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#, INVALID_REQUEST),
            (
                "tools/call without a name",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
                INVALID_REQUEST,
            ),
            (
                "tools/call with a numeric name",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":42}}"#,
                INVALID_REQUEST,
            ),
            (
                "tools/call with an array name",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_x"]}}"#,
                INVALID_REQUEST,
            ),
            (
                "tools/call with a null name",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":null}}"#,
                INVALID_REQUEST,
            ),
            (
                "tools/call with params as an array",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_x"]}"#,
                INVALID_REQUEST,
            ),
            (
                "prompts/get without a name",
                br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{}}"#,
                INVALID_REQUEST,
            ),
            (
                "resources/read with a name but no uri",
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"file:///a"}}"#,
                INVALID_REQUEST,
            ),
            (
                "resources/read with a numeric uri",
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":1}}"#,
                INVALID_REQUEST,
            ),
            (
                "request carrying a result",
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"result":{}}"#,
                INVALID_REQUEST,
            ),
            ("response without id", br#"{"jsonrpc":"2.0","result":{}}"#, INVALID_REQUEST),
            ("response with null id", br#"{"jsonrpc":"2.0","id":null,"error":{}}"#, INVALID_REQUEST),
            ("response with result and error", br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#, INVALID_REQUEST),
            ("response with params", br#"{"jsonrpc":"2.0","id":1,"result":{},"params":{}}"#, INVALID_REQUEST),
            // Batches.
            ("empty batch", b"[]", INVALID_REQUEST),
            ("nested batch", br#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#, INVALID_REQUEST),
            ("batch with a non-object", br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},1]"#, INVALID_REQUEST),
            (
                "batch with one invalid element",
                br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#,
                INVALID_REQUEST,
            ),
        ];
        for (what, bytes, code) in cases {
            match parse_body(bytes) {
                Err(error) => assert_eq!(error.code(), *code, "{what}: {error:?}"),
                Ok(body) => panic!("{what}: accepted as {body:?}"),
            }
        }
    }

    #[test]
    fn duplicate_keys_anywhere_are_invalid() {
        let cases: &[(&str, &str)] = &[
            (
                "name, safe first",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"danger"}}"#,
            ),
            (
                "name, danger first",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger","name":"safe"}}"#,
            ),
            (
                "method at top level",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"x"}}"#,
            ),
            (
                "method, reverse order",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"},"method":"ping"}"#,
            ),
            (
                "params twice",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
            ),
            (
                "id twice",
                r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
            ),
            (
                "jsonrpc twice",
                r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
            ),
            (
                "unknown top-level key twice",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","x":1,"x":2}"#,
            ),
            (
                "uri twice",
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","uri":"b"}}"#,
            ),
            (
                "escaped name key",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","na\u006de":"danger"}}"#,
            ),
            (
                "escaped name key first",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"\u006eame":"danger","name":"safe"}}"#,
            ),
            (
                "escaped method key",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","\u006dethod":"tools/call","params":{"name":"x"}}"#,
            ),
            (
                "escaped slash in key",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a/b":1,"a\/b":2}}"#,
            ),
            (
                "deep in arguments",
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"x":{"y":[{"z":1,"z":2}]}}}}"#,
            ),
            (
                "in _meta",
                r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"k":1,"k":1}}}"#,
            ),
            (
                "in a response result",
                r#"{"jsonrpc":"2.0","id":1,"result":{"a":1,"a":2}}"#,
            ),
            (
                "in an object id",
                r#"{"jsonrpc":"2.0","id":{"a":1,"a":2},"method":"ping"}"#,
            ),
            (
                "in a later batch element",
                r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","name":"delete_x"}}]"#,
            ),
            ("in a nested batch", r#"[[{"a":1,"a":2}]]"#),
        ];
        for (what, body) in cases {
            match parse_body(body.as_bytes()) {
                Err(BodyError::Invalid(message)) => {
                    assert!(message.starts_with("duplicate key"), "{what}: {message}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_keys_in_large_objects_are_found() {
        // Past the linear-scan threshold, the hash set takes over.
        let mut arguments: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
        let clean = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{{}}}}}}}"#,
            arguments.join(",")
        );
        assert!(parse_body(clean.as_bytes()).is_ok());
        // A big object nested in, and followed by, small ones with the same keys.
        let nested = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{"k1":{{{}}},"k2":[{{{}}}],"k3":{{"k1":1}}}}}}}}"#,
            arguments.join(","),
            arguments.join(",")
        );
        assert!(parse_body(nested.as_bytes()).is_ok());
        arguments.push("\"k\\u0035\":0".to_string()); // "k5", escaped
        let duplicated = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{{{}}}}}}}"#,
            arguments.join(",")
        );
        assert_eq!(
            parse_body(duplicated.as_bytes()),
            Err(BodyError::Invalid("duplicate key \"k5\"".to_string()))
        );
    }

    #[test]
    fn error_messages_stay_short_and_do_not_echo_the_body() {
        let long_key = "k".repeat(10_000);
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","{long_key}":1,"{long_key}":2}}"#);
        let error = parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(error, BodyError::Invalid("duplicate key".to_string()));
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{long_key}"#);
        let error = parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(error.code(), PARSE_ERROR);
        assert!(error.message().len() < 100, "{}", error.message());
        let error = parse_body(b"{\"a\":\"\x01\x02\"}").unwrap_err();
        assert!(error.message().len() < 100);
    }

    #[test]
    fn deep_nesting_is_a_parse_error_not_a_crash() {
        let depth = 100_000;
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        let in_arguments = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{arrays}}}}}"#
        );
        let in_id = format!(r#"{{"jsonrpc":"2.0","id":{arrays},"method":"ping"}}"#);
        let in_name = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{objects}}}}}"#
        );
        let unterminated = "[".repeat(depth);
        for (what, body) in [
            ("arrays", &arrays),
            ("objects", &objects),
            ("in arguments", &in_arguments),
            ("in id", &in_id),
            ("in name", &in_name),
            ("unterminated", &unterminated),
        ] {
            let error = parse_body(body.as_bytes()).unwrap_err();
            assert_eq!(error.code(), PARSE_ERROR, "{what}: {error:?}");
        }
        // Reasonable nesting is fine.
        let shallow = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"a","arguments":{}{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(parse_body(shallow.as_bytes()).is_ok());
    }

    #[test]
    fn large_bodies_parse() {
        let blob = "x".repeat(1 << 20);
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_x","arguments":{{"blob":"{blob}","list":[{}]}}}}}}"#,
            vec!["{\"k\":\"v\\n\"}"; 10_000].join(",")
        );
        assert_eq!(
            parse_body(body.as_bytes()),
            Ok(Body::Single(call(
                "tools/call",
                Some("get_x"),
                Some(json!(1))
            )))
        );
    }

    #[test]
    fn body_helpers() {
        let single = parse_body(br#"{"jsonrpc":"2.0","id":"q","method":"ping"}"#).unwrap();
        assert!(!single.is_batch());
        assert_eq!(single.messages().len(), 1);
        assert_eq!(single.answer_id(), Some(&json!("q")));
        let notification = parse_body(br#"{"jsonrpc":"2.0","method":"notifications/x"}"#).unwrap();
        assert_eq!(notification.answer_id(), None);
        let response = parse_body(br#"{"jsonrpc":"2.0","id":3,"result":{}}"#).unwrap();
        assert_eq!(response.answer_id(), None);
        let batch = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
        assert!(batch.is_batch());
        assert_eq!(batch.messages().len(), 1);
        assert_eq!(batch.answer_id(), None);
    }

    #[test]
    fn only_application_json_is_json() {
        let cases: &[(Option<&str>, bool)] = &[
            (Some("application/json"), true),
            (Some("Application/JSON"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("application/json;charset=UTF-8"), true),
            (Some("  application/json  "), true),
            (Some(" application/json ; charset=utf-8"), true),
            (None, false),
            (Some(""), false),
            (Some("text/plain"), false),
            (Some("text/plain; charset=utf-8"), false),
            (Some("application/json-seq"), false),
            (Some("application/jsonx"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("application/json, text/plain"), false),
            (Some("application/ json"), false),
            (Some("text/json"), false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_json_content_type(*value), *expected, "{value:?}");
        }
    }

    #[test]
    fn mcp_headers_must_match_the_body() {
        let tool = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}}"#,
        )
        .unwrap();
        let unicode = parse_body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Hello, 世界"}}"#
                .as_bytes(),
        )
        .unwrap();
        let sentinel =
            parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"=?base64?literal?="}}"#)
                .unwrap();
        let list = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        let response = parse_body(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
        let batch = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"other"}}]"#,
        )
        .unwrap();
        let same_batch = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"danger"}},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"danger"}}]"#,
        )
        .unwrap();
        // (what, body, Mcp-Method, Mcp-Name, accepted)
        type Case<'a> = (&'a str, &'a Body, Option<&'a str>, Option<&'a str>, bool);
        let cases: &[Case] = &[
            ("no headers", &tool, None, None, true),
            (
                "both match",
                &tool,
                Some("tools/call"),
                Some("danger"),
                true,
            ),
            ("method only", &tool, Some("tools/call"), None, true),
            ("name only", &tool, None, Some("danger"), true),
            (
                "name mismatch",
                &tool,
                Some("tools/call"),
                Some("safe"),
                false,
            ),
            (
                "method mismatch",
                &tool,
                Some("tools/list"),
                Some("danger"),
                false,
            ),
            (
                "method is case-sensitive",
                &tool,
                Some("Tools/Call"),
                None,
                false,
            ),
            (
                "base64 name",
                &tool,
                None,
                Some("=?base64?ZGFuZ2Vy?="),
                true,
            ),
            (
                "base64 name mismatch",
                &tool,
                None,
                Some("=?base64?c2FmZQ==?="),
                false,
            ),
            ("invalid base64", &tool, None, Some("=?base64?!!!?="), false),
            (
                "base64 of invalid UTF-8",
                &tool,
                None,
                Some("=?base64?/w==?="),
                false,
            ),
            (
                "base64 non-ASCII name",
                &unicode,
                None,
                Some("=?base64?SGVsbG8sIOS4lueVjA==?="),
                true,
            ),
            (
                "base64 without padding",
                &unicode,
                None,
                Some("=?base64?SGVsbG8sIOS4lueVjA?="),
                true,
            ),
            (
                "sentinel-looking name sent encoded",
                &sentinel,
                None,
                Some("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="),
                true,
            ),
            (
                "sentinel-looking name sent plain",
                &sentinel,
                None,
                Some("=?base64?literal?="),
                false,
            ),
            (
                "uppercase markers are not decoded",
                &tool,
                None,
                Some("=?BASE64?ZGFuZ2Vy?="),
                false,
            ),
            (
                "partial marker is literal",
                &tool,
                None,
                Some("=?base64?ZGFuZ2Vy"),
                false,
            ),
            (
                "Mcp-Method is not base64-decoded",
                &tool,
                Some("=?base64?dG9vbHMvY2FsbA==?="),
                None,
                false,
            ),
            (
                "name header for a call without a name",
                &list,
                Some("tools/list"),
                Some("x"),
                false,
            ),
            (
                "method header for a call without a name",
                &list,
                Some("tools/list"),
                None,
                true,
            ),
            (
                "headers with a response",
                &response,
                Some("tools/call"),
                None,
                false,
            ),
            (
                "name header with a response",
                &response,
                None,
                Some("danger"),
                false,
            ),
            ("no headers with a response", &response, None, None, true),
            (
                "batch, one element differs",
                &batch,
                Some("tools/call"),
                Some("danger"),
                false,
            ),
            (
                "batch, method header only",
                &batch,
                Some("tools/call"),
                None,
                true,
            ),
            (
                "batch, all elements match",
                &same_batch,
                Some("tools/call"),
                Some("danger"),
                true,
            ),
        ];
        for (what, body, method, name, ok) in cases {
            let result = check_mcp_headers(body, *method, *name);
            assert_eq!(result.is_ok(), *ok, "{what}: {result:?}");
            if let Err(mismatch) = result {
                assert_eq!(mismatch.code(), HEADER_MISMATCH);
            }
        }
    }
}
