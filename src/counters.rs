//! The filter's counters, named once. The host defines one Envoy stat per
//! entry of [`Counter::ALL`] (shown as `wasmcustom.mcp_authz.<name>`), the
//! core says which to bump, and a test checks the README's list against this
//! table.

use crate::authorization_server::Purpose;
use crate::dpop::ProofErrorKind;
use crate::gate::{BadRequestKind, Reason};
use crate::token::TokenErrorKind;

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests let through: allowed by the rules, or needing no verdict
    /// (public paths, CORS preflights).
    Allowed,
    /// A refusal, by reason (`denied.<reason>`).
    Denied(Reason),
    /// A refused token, by class.
    InvalidToken(TokenErrorKind),
    /// A malformed request, by class.
    BadRequest(BadRequestKind),
    /// A refused DPoP proof, by class.
    InvalidDpopProof(ProofErrorKind),
    /// Requests whose DPoP proof passed every check.
    DpopAccepted,
    /// Proofs the replay memory forgot before they expired, to make room.
    DpopReplayEvicted,
    /// Refusals let through because the mode is `audit`.
    AuditWouldDeny,
    /// List items hidden from callers.
    ListItemsRemoved,
    /// Answers replaced by an error because the filter could not read them.
    ListUnfilterable,
    /// Rule conditions that could not be evaluated (they count against the
    /// caller).
    ConditionError,
    JwksFetchOk,
    JwksFetchFailed,
    JwksUnknownKeyRefetch,
    TokenCacheHit,
    TokenCacheMiss,
    /// A step of a call to the authorization server, by purpose.
    AuthorizationServer(Purpose, CallEvent),
}

/// What happened with a request's need of the authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallEvent {
    /// A call was made.
    Call,
    /// An earlier answer (this proxy's, any worker's) was reused.
    CacheHit,
    /// The request waited for another request's call for the same token.
    Wait,
    /// The call failed: unreachable, timed out, or an unusable answer.
    Failed,
    /// No call was made: this worker had too many in flight.
    Busy,
}

impl CallEvent {
    pub fn name(self) -> &'static str {
        match self {
            CallEvent::Call => "call",
            CallEvent::CacheHit => "cache_hit",
            CallEvent::Wait => "wait",
            CallEvent::Failed => "failed",
            CallEvent::Busy => "busy",
        }
    }
}

impl Counter {
    /// Every counter, in the order the README lists them.
    pub const ALL: [Counter; 62] = [
        Counter::Allowed,
        Counter::Denied(Reason::NoToken),
        Counter::Denied(Reason::InvalidToken),
        Counter::InvalidToken(TokenErrorKind::Malformed),
        Counter::InvalidToken(TokenErrorKind::TokenType),
        Counter::InvalidToken(TokenErrorKind::UnknownKey),
        Counter::InvalidToken(TokenErrorKind::Algorithm),
        Counter::InvalidToken(TokenErrorKind::Signature),
        Counter::InvalidToken(TokenErrorKind::Expired),
        Counter::InvalidToken(TokenErrorKind::NotYetValid),
        Counter::InvalidToken(TokenErrorKind::Issuer),
        Counter::InvalidToken(TokenErrorKind::Audience),
        Counter::InvalidToken(TokenErrorKind::Inactive),
        Counter::InvalidToken(TokenErrorKind::DpopBound),
        Counter::InvalidToken(TokenErrorKind::KeyBinding),
        Counter::InvalidToken(TokenErrorKind::Scheme),
        Counter::Denied(Reason::InvalidDpopProof),
        Counter::InvalidDpopProof(ProofErrorKind::Missing),
        Counter::InvalidDpopProof(ProofErrorKind::Malformed),
        Counter::InvalidDpopProof(ProofErrorKind::Algorithm),
        Counter::InvalidDpopProof(ProofErrorKind::Key),
        Counter::InvalidDpopProof(ProofErrorKind::Signature),
        Counter::InvalidDpopProof(ProofErrorKind::Method),
        Counter::InvalidDpopProof(ProofErrorKind::Uri),
        Counter::InvalidDpopProof(ProofErrorKind::Time),
        Counter::InvalidDpopProof(ProofErrorKind::TokenHash),
        Counter::InvalidDpopProof(ProofErrorKind::Replay),
        Counter::Denied(Reason::UseDpopNonce),
        Counter::DpopAccepted,
        Counter::DpopReplayEvicted,
        Counter::Denied(Reason::KeysUnavailable),
        Counter::Denied(Reason::IntrospectionUnavailable),
        Counter::Denied(Reason::Forbidden),
        Counter::Denied(Reason::InsufficientScope),
        Counter::Denied(Reason::BadRequest),
        Counter::BadRequest(BadRequestKind::Parse),
        Counter::BadRequest(BadRequestKind::Invalid),
        Counter::BadRequest(BadRequestKind::HeaderMismatch),
        Counter::BadRequest(BadRequestKind::UnexpectedBody),
        Counter::Denied(Reason::TooLarge),
        Counter::Denied(Reason::UnsupportedMediaType),
        Counter::Denied(Reason::MethodNotAllowed),
        Counter::Denied(Reason::UpstreamTokenUnavailable),
        Counter::AuditWouldDeny,
        Counter::ListItemsRemoved,
        Counter::ListUnfilterable,
        Counter::ConditionError,
        Counter::JwksFetchOk,
        Counter::JwksFetchFailed,
        Counter::JwksUnknownKeyRefetch,
        Counter::TokenCacheHit,
        Counter::TokenCacheMiss,
        Counter::AuthorizationServer(Purpose::Introspection, CallEvent::Call),
        Counter::AuthorizationServer(Purpose::Introspection, CallEvent::CacheHit),
        Counter::AuthorizationServer(Purpose::Introspection, CallEvent::Wait),
        Counter::AuthorizationServer(Purpose::Introspection, CallEvent::Failed),
        Counter::AuthorizationServer(Purpose::Introspection, CallEvent::Busy),
        Counter::AuthorizationServer(Purpose::TokenExchange, CallEvent::Call),
        Counter::AuthorizationServer(Purpose::TokenExchange, CallEvent::CacheHit),
        Counter::AuthorizationServer(Purpose::TokenExchange, CallEvent::Wait),
        Counter::AuthorizationServer(Purpose::TokenExchange, CallEvent::Failed),
        Counter::AuthorizationServer(Purpose::TokenExchange, CallEvent::Busy),
    ];

    /// The stat's name under `mcp_authz.`.
    pub fn name(self) -> String {
        match self {
            Counter::Allowed => "allowed".into(),
            Counter::AuditWouldDeny => "audit_would_deny".into(),
            Counter::Denied(reason) => format!("denied.{}", reason.name()),
            Counter::InvalidToken(kind) => format!("invalid_token.{}", kind.name()),
            Counter::BadRequest(kind) => format!("bad_request.{}", kind.name()),
            Counter::InvalidDpopProof(kind) => format!("invalid_dpop_proof.{}", kind.name()),
            Counter::DpopAccepted => "dpop.accepted".into(),
            Counter::DpopReplayEvicted => "dpop.replay_evicted".into(),
            Counter::ListItemsRemoved => "list_items_removed".into(),
            Counter::ListUnfilterable => "list_unfilterable".into(),
            Counter::ConditionError => "condition_error".into(),
            Counter::JwksFetchOk => "jwks_fetch.ok".into(),
            Counter::JwksFetchFailed => "jwks_fetch.failed".into(),
            Counter::JwksUnknownKeyRefetch => "jwks_fetch.unknown_key_refetch".into(),
            Counter::TokenCacheHit => "token_cache.hit".into(),
            Counter::TokenCacheMiss => "token_cache.miss".into(),
            Counter::AuthorizationServer(purpose, event) => {
                format!("{}.{}", purpose.name(), event.name())
            }
        }
    }

    /// This counter's index in [`Counter::ALL`]; `None` for a value that is
    /// never counted.
    pub fn slot(self) -> Option<usize> {
        Counter::ALL.iter().position(|c| *c == self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_name() {
        let names: Vec<String> = Counter::ALL.iter().map(|c| c.name()).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[..i].contains(name), "{name} twice");
            assert_eq!(Counter::ALL[i].slot(), Some(i));
        }
        assert_eq!(Counter::Denied(Reason::NoToken).name(), "denied.no_token");
        assert_eq!(
            Counter::InvalidToken(TokenErrorKind::TokenType).name(),
            "invalid_token.token_type"
        );
    }
}
