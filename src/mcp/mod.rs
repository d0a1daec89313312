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
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::answer::codes;
use crate::json::keys::{KeyCheck, KeySeed, ObjectKeys};
use crate::json::walk::{scalars_are, Skip, ValueSeed};
use crate::lists::ListKind;
use crate::media;

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
    /// `params.arguments` (a tool's or a prompt's arguments), as parsed:
    /// what rule conditions and `Mcp-Param-*` headers are checked against.
    pub arguments: Option<Value>,
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
            BodyError::Parse(_) => codes::PARSE_ERROR,
            BodyError::Invalid(_) => codes::INVALID_REQUEST,
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

/// Whether a `Content-Type` value is `application/json`, with or without
/// parameters. Anything else (including `text/plain` carrying JSON, and a
/// missing header) is refused, so no body reaches the server unchecked.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|value| media::is(value, media::JSON))
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
    if let Err(duplicate) = check.result() {
        return Err(BodyError::Invalid(duplicate.to_string()));
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
        arguments: Option<Value>,
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
        if id.is_none() && ListKind::from_method(&method).is_some() {
            // Without an id JSON-RPC makes it a notification, which gets no
            // answer; but a lenient server may answer it anyway, and an
            // answer is matched to the list it must be filtered as by id.
            // MCP has no such notification.
            return Err(invalid("a list request needs an id"));
        }
        let mut call_arguments = None;
        let (name, uri) = match self.params {
            None | Some(RawParams::Array) => (None, None),
            Some(RawParams::Object {
                name,
                uri,
                arguments,
            }) => {
                call_arguments = arguments;
                (name, uri)
            }
            Some(RawParams::Other) => return Err(invalid("params must be an object or an array")),
        };
        let name = match name_field(&method) {
            None => None,
            Some(field) => {
                let value = if field == "uri" { uri } else { name };
                match value {
                    Some(Text::Str(uri)) if field == "uri" => {
                        if let Some(why) = resource_uri::not_normal(&uri) {
                            return Err(BodyError::Invalid(format!(
                                "params.uri {why}: send the URI in normal form"
                            )));
                        }
                        Some(uri.into_owned())
                    }
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
            arguments: call_arguments.filter(|a| !a.is_null()),
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

    scalars_are!(RawBody::Other);

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

    scalars_are!(RawElement::Other);

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
        let mut keys = ObjectKeys::new(check);
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

    scalars_are!(non-string: Text::NotString);

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

    scalars_are!(RawParams::Other);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Skip(self.0).visit_seq(seq).map(|()| RawParams::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let check = self.0;
        let mut keys = ObjectKeys::new(check);
        let (mut name, mut uri, mut arguments) = (None, None, None);
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "name" => name = Some(map.next_value_seed(TextSeed(check))?),
                "uri" => uri = Some(map.next_value_seed(TextSeed(check))?),
                "arguments" => arguments = Some(map.next_value_seed(ValueSeed(check))?),
                _ => map.next_value_seed(Skip(check))?,
            }
            keys.insert(key, check);
        }
        keys.finish(check);
        Ok(RawParams::Object {
            name,
            uri,
            arguments,
        })
    }
}

mod headers;
pub mod param_headers;
pub(crate) mod resource_uri;
pub use headers::{check_mcp_headers, HeaderMismatch};

#[cfg(test)]
mod tests;
