//! Counters in Envoy's stats, declared in one place. Envoy shows them under
//! `wasmcustom.mcp_authz.*` (and `envoy_wasmcustom_mcp_authz_*` in Prometheus).

use crate::gate::{BadRequestKind, Reason};
use crate::token::TokenErrorKind;
use proxy_wasm::hostcalls::{define_metric, increment_metric};
use proxy_wasm::types::MetricType;

/// Metric ids of this VM.
pub struct Stats {
    allowed: u32,
    audit_would_deny: u32,
    denied_no_token: u32,
    denied_invalid_token: u32,
    invalid_token: [u32; 9],
    denied_keys_unavailable: u32,
    denied_forbidden: u32,
    denied_insufficient_scope: u32,
    denied_bad_request: u32,
    bad_request: [u32; 3],
    denied_too_large: u32,
    denied_unsupported_media_type: u32,
    pub list_items_removed: u32,
    pub list_unfilterable: u32,
    pub jwks_fetch_ok: u32,
    pub jwks_fetch_failed: u32,
    pub jwks_refetch_unknown_key: u32,
    pub token_cache_hit: u32,
    pub token_cache_miss: u32,
}

const TOKEN_KINDS: [(TokenErrorKind, &str); 9] = [
    (TokenErrorKind::Malformed, "malformed"),
    (TokenErrorKind::UnknownKey, "unknown_key"),
    (TokenErrorKind::Algorithm, "algorithm"),
    (TokenErrorKind::Signature, "signature"),
    (TokenErrorKind::Expired, "expired"),
    (TokenErrorKind::NotYetValid, "not_yet_valid"),
    (TokenErrorKind::Issuer, "issuer"),
    (TokenErrorKind::Audience, "audience"),
    (TokenErrorKind::KeysUnavailable, "keys_unavailable"),
];

const BAD_REQUEST_KINDS: [(BadRequestKind, &str); 3] = [
    (BadRequestKind::Parse, "parse_error"),
    (BadRequestKind::Invalid, "invalid_request"),
    (BadRequestKind::HeaderMismatch, "header_mismatch"),
];

fn counter(name: &str) -> u32 {
    define_metric(MetricType::Counter, &format!("mcp_authz.{name}")).unwrap_or(0)
}

impl Stats {
    pub fn define() -> Stats {
        Stats {
            allowed: counter("allowed"),
            audit_would_deny: counter("audit_would_deny"),
            denied_no_token: counter("denied.no_token"),
            denied_invalid_token: counter("denied.invalid_token"),
            invalid_token: TOKEN_KINDS.map(|(_, n)| counter(&format!("invalid_token.{n}"))),
            denied_keys_unavailable: counter("denied.keys_unavailable"),
            denied_forbidden: counter("denied.forbidden"),
            denied_insufficient_scope: counter("denied.insufficient_scope"),
            denied_bad_request: counter("denied.bad_request"),
            bad_request: BAD_REQUEST_KINDS.map(|(_, n)| counter(&format!("bad_request.{n}"))),
            denied_too_large: counter("denied.too_large"),
            denied_unsupported_media_type: counter("denied.unsupported_media_type"),
            list_items_removed: counter("list_items_removed"),
            list_unfilterable: counter("list_unfilterable"),
            jwks_fetch_ok: counter("jwks_fetch.ok"),
            jwks_fetch_failed: counter("jwks_fetch.failed"),
            jwks_refetch_unknown_key: counter("jwks_fetch.unknown_key_refetch"),
            token_cache_hit: counter("token_cache.hit"),
            token_cache_miss: counter("token_cache.miss"),
        }
    }

    pub fn bump(id: u32) {
        Self::add(id, 1);
    }

    pub fn add(id: u32, n: u64) {
        if id != 0 && n > 0 {
            let _ = increment_metric(id, n as i64);
        }
    }

    pub fn allowed(&self) {
        Self::bump(self.allowed);
    }

    pub fn would_deny(&self) {
        Self::bump(self.audit_would_deny);
    }

    /// Counts a refusal under its reason (and its class, where it has one).
    pub fn denied(&self, reason: Reason) {
        match reason {
            Reason::NoToken => Self::bump(self.denied_no_token),
            Reason::InvalidToken(kind) => {
                Self::bump(self.denied_invalid_token);
                if let Some(i) = TOKEN_KINDS.iter().position(|(k, _)| *k == kind) {
                    Self::bump(self.invalid_token[i]);
                }
            }
            Reason::KeysUnavailable => Self::bump(self.denied_keys_unavailable),
            Reason::Forbidden => Self::bump(self.denied_forbidden),
            Reason::InsufficientScope => Self::bump(self.denied_insufficient_scope),
            Reason::BadRequest(kind) => {
                Self::bump(self.denied_bad_request);
                if let Some(i) = BAD_REQUEST_KINDS.iter().position(|(k, _)| *k == kind) {
                    Self::bump(self.bad_request[i]);
                }
            }
            Reason::TooLarge => Self::bump(self.denied_too_large),
            Reason::UnsupportedMediaType => Self::bump(self.denied_unsupported_media_type),
        }
    }
}
