//! Duplicate-key bookkeeping for one parse.
//!
//! The first duplicate is recorded rather than raised, so the rest of the
//! document is still checked for syntax: a malformed document is a syntax
//! error whatever else is wrong with it.
//!
//! Keys of the objects being walked live on one shared stack (each object
//! owns the tail it pushed, and drops it when it ends), so walking a
//! document of many small objects allocates nothing per object; an object
//! with many keys switches to a hash set, so it stays linear.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Visitor};

use super::JsonError;

/// The duplicate-key state of one parse.
#[derive(Default)]
pub struct KeyCheck<'de> {
    first: RefCell<Option<String>>,
    stack: RefCell<Vec<Cow<'de, str>>>,
}

impl KeyCheck<'_> {
    fn record(&self, key: &str) {
        let mut first = self.first.borrow_mut();
        if first.is_none() {
            // Quote the key only when it is short and printable, so the
            // message cannot carry much of the document or control characters.
            let message =
                if key.len() <= 32 && key.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
                    format!("duplicate key \"{key}\"")
                } else {
                    "duplicate key".to_string()
                };
            *first = Some(message);
        }
    }

    /// After the parse: the first duplicate, if any.
    pub fn result(&self) -> Result<(), JsonError> {
        match self.first.borrow().clone() {
            Some(message) => Err(JsonError::DuplicateKey(message)),
            None => Ok(()),
        }
    }
}

/// Keys seen in one JSON object, compared after unescaping.
pub struct ObjectKeys<'de> {
    /// Where this object's keys start on the shared stack.
    start: usize,
    /// Large objects switch to a hash set so an object with many keys stays
    /// linear, not quadratic. std's hasher is randomly keyed (no hash flooding).
    many: Option<HashSet<Cow<'de, str>>>,
}

/// Up to this many keys a linear scan beats hashing.
const FEW_KEYS: usize = 16;

impl<'de> ObjectKeys<'de> {
    pub fn new(check: &KeyCheck<'de>) -> Self {
        ObjectKeys {
            start: check.stack.borrow().len(),
            many: None,
        }
    }

    /// Adds `key`; records a duplicate when it was already there. Nested
    /// objects have finished (and popped their keys) by the time the next
    /// key of this one arrives, so the tail from `start` is this object's.
    pub fn insert(&mut self, key: Cow<'de, str>, check: &KeyCheck<'de>) {
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
    pub fn finish(self, check: &KeyCheck<'de>) {
        check.stack.borrow_mut().truncate(self.start);
    }
}

/// Reads an object key as an unescaped string, borrowed when it has no escapes.
pub struct KeySeed;

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
