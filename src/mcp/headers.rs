//! The 2026-07-28 routing headers (`Mcp-Method`, `Mcp-Name`) checked
//! against the body they claim to describe: anything that processes the body
//! must refuse a mismatch (JSON-RPC error -32020 `HeaderMismatch`).

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{Body, Message};
use crate::answer::codes;

/// `Mcp-Method` / `Mcp-Name` do not match the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMismatch {
    /// A short reason, safe to send back (no header or body values in it).
    pub reason: &'static str,
}

impl HeaderMismatch {
    /// The JSON-RPC error code, [`codes::HEADER_MISMATCH`].
    pub fn code(&self) -> i64 {
        codes::HEADER_MISMATCH
    }
}

impl fmt::Display for HeaderMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason)
    }
}

impl std::error::Error for HeaderMismatch {}

/// Checks the 2026-07-28 `Mcp-Method` / `Mcp-Name` request headers against
/// the body. A present header must equal the method / name of every message;
/// `Mcp-Name` is first decoded from its `=?base64?...?=` form when the whole
/// value has that form. A header present with a response body, or
/// `Mcp-Name` with a call that has no name, is a mismatch. An absent header
/// is a mismatch only on a 2026-07-28 request (`modern`), where every call
/// carries `Mcp-Method` and every named call `Mcp-Name`; older clients do
/// not send them.
pub fn check_mcp_headers(
    body: &Body,
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    modern: bool,
) -> Result<(), HeaderMismatch> {
    if modern {
        for message in body.messages() {
            if let Message::Call(call) = message {
                if mcp_method.is_none() {
                    return Err(HeaderMismatch {
                        reason: "Mcp-Method header missing on a 2026-07-28 request",
                    });
                }
                if call.name.is_some() && mcp_name.is_none() {
                    return Err(HeaderMismatch {
                        reason: "Mcp-Name header missing on a 2026-07-28 request",
                    });
                }
            }
        }
    }
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
pub(super) fn decode_header_value(value: &str) -> Option<Cow<'_, str>> {
    let Some(encoded) = value
        .strip_prefix(BASE64_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SUFFIX))
    else {
        return Some(Cow::Borrowed(value));
    };
    let bytes = HEADER_BASE64.decode(encoded).ok()?;
    String::from_utf8(bytes).ok().map(Cow::Owned)
}
