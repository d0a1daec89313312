//! What the filter reads of a document, in one strict scan
//! ([`crate::json::scan`]): for each message, where its `id` is, whether it
//! has a `result` or an `error`, and in an object `result`, its item arrays
//! and `cacheScope`; for each item, its span, the string it is judged by and
//! whether a header declaration stands in it.
//! Nothing else is kept, and nothing is allocated per value.

use std::borrow::Cow;
use std::ops::Range;

use super::ListKind;
use crate::json::scan::Scanner;
use crate::json::JsonError;
use crate::mcp::param_headers;

/// A document as the filter reads it.
pub(super) struct Document<'a> {
    pub top: Top,
    /// The batch's elements, or the one message (empty for [`Top::Other`]).
    pub messages: Vec<Message>,
    /// The items of every item array, in document order; each array of
    /// [`Members::Array`] names its range here.
    pub items: Vec<Listed<'a>>,
}

/// What the document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Top {
    Batch,
    Message,
    Other,
}

/// One element of a batch, or the one message.
#[derive(Default)]
pub(super) struct Message {
    pub is_object: bool,
    /// The span of `id`'s value.
    pub id: Option<Range<usize>>,
    pub has_result: bool,
    pub has_error: bool,
    /// What `result` holds, when it is an object.
    pub result: Option<ResultObject>,
}

/// What the filter needs of an object `result`.
#[derive(Default)]
pub(super) struct ResultObject {
    /// Per kind, in [`ListKind::ALL`] order: its items member.
    pub lists: [Members; 4],
    pub cache_scope: Option<CacheScope>,
}

/// A `result`'s member for one kind of items.
#[derive(Default, Clone)]
pub(super) enum Members {
    #[default]
    Absent,
    NotArray,
    Array {
        /// The array's span.
        span: Range<usize>,
        /// Its items in [`Document::items`].
        items: Range<usize>,
    },
}

/// `cacheScope`: where its value is, and whether it is `"private"` already.
pub(super) struct CacheScope {
    pub span: Range<usize>,
    pub private: bool,
}

/// One element of an item array.
pub(super) struct Listed<'a> {
    pub span: Range<usize>,
    pub is_object: bool,
    /// The string member its kind is judged by, unescaped, if it has one.
    pub key: Option<Cow<'a, str>>,
    /// Whether a key [`param_headers::DECLARATION`] stands anywhere in it.
    pub declaration: bool,
}

/// Reads and checks a whole document: a syntax error or a repeated key
/// anywhere refuses it.
pub(super) fn document(doc: &[u8]) -> Result<Document<'_>, JsonError> {
    let mut scanner = Scanner::new(doc)?;
    scanner.watch(param_headers::DECLARATION);
    let mut messages = Vec::new();
    let mut items = Vec::new();
    let top = match scanner.peek()? {
        b'[' => {
            scanner.array(|s| {
                messages.push(message(s, &mut items)?);
                Ok(())
            })?;
            Top::Batch
        }
        b'{' => {
            messages.push(message(&mut scanner, &mut items)?);
            Top::Message
        }
        _ => {
            scanner.skip_value()?;
            Top::Other
        }
    };
    scanner.finish()?;
    Ok(Document {
        top,
        messages,
        items,
    })
}

fn message<'a>(s: &mut Scanner<'a>, items: &mut Vec<Listed<'a>>) -> Result<Message, JsonError> {
    let mut m = Message::default();
    if s.peek()? != b'{' {
        s.skip_value()?;
        return Ok(m);
    }
    m.is_object = true;
    s.object(|s, key| {
        match key {
            "id" => m.id = Some(s.skip_value()?),
            "result" => {
                m.has_result = true;
                if s.peek()? == b'{' {
                    m.result = Some(result(s, items)?);
                } else {
                    s.skip_value()?;
                }
            }
            "error" => {
                m.has_error = true;
                s.skip_value()?;
            }
            _ => {
                s.skip_value()?;
            }
        }
        Ok(())
    })?;
    Ok(m)
}

fn result<'a>(s: &mut Scanner<'a>, items: &mut Vec<Listed<'a>>) -> Result<ResultObject, JsonError> {
    let mut r = ResultObject::default();
    s.object(|s, key| {
        if let Some(kind) = ListKind::from_items_key(key) {
            r.lists[kind.index()] = if s.peek()? == b'[' {
                let first = items.len();
                let span = s.array(|s| {
                    items.push(item(s, kind)?);
                    Ok(())
                })?;
                Members::Array {
                    span,
                    items: first..items.len(),
                }
            } else {
                s.skip_value()?;
                Members::NotArray
            };
        } else if key == "cacheScope" {
            r.cache_scope = Some(if s.peek()? == b'"' {
                let (span, text) = s.string()?;
                CacheScope {
                    span,
                    private: text == "private",
                }
            } else {
                CacheScope {
                    span: s.skip_value()?,
                    private: false,
                }
            });
        } else {
            s.skip_value()?;
        }
        Ok(())
    })?;
    Ok(r)
}

fn item<'a>(s: &mut Scanner<'a>, kind: ListKind) -> Result<Listed<'a>, JsonError> {
    if s.peek()? != b'{' {
        return Ok(Listed {
            span: s.skip_value()?,
            is_object: false,
            key: None,
            declaration: false,
        });
    }
    let declarations_before = s.watched_keys();
    let mut judged_by = None;
    let span = s.object(|s, key| {
        if key == kind.item_key() && s.peek()? == b'"' {
            judged_by = Some(s.string()?.1);
        } else {
            s.skip_value()?;
        }
        Ok(())
    })?;
    Ok(Listed {
        span,
        is_object: true,
        key: judged_by,
        declaration: s.watched_keys() != declarations_before,
    })
}
