//! A refusal: the answer the filter sends instead of forwarding, why (the
//! reason and its class, which name the counters and the log's `reason`),
//! and what the decision log tells of it.

use crate::answer::Answer;
use crate::counters::Counter;
use crate::dpop::ProofErrorKind;
use crate::token::TokenErrorKind;

/// Why a request was refused; names the counter and the log's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NoToken,
    InvalidToken,
    KeysUnavailable,
    Forbidden,
    InsufficientScope,
    BadRequest,
    TooLarge,
    UnsupportedMediaType,
    MethodNotAllowed,
    /// Introspection could not say whether the token is good (the
    /// authorization server down, slow or answering garbage): 503.
    IntrospectionUnavailable,
    /// No token for the upstream could be had by exchange: 502 or 503.
    UpstreamTokenUnavailable,
    /// A DPoP proof that failed its checks.
    InvalidDpopProof,
    /// A DPoP proof without a fresh server nonce.
    UseDpopNonce,
    /// No configured server takes the request.
    NoServer,
}

/// The classes of malformed request, each with its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequestKind {
    Parse,
    Invalid,
    HeaderMismatch,
    /// A body on a request that takes none (GET, DELETE, OPTIONS).
    UnexpectedBody,
    /// A path (or host) that some component could read as another
    /// server's than it is as sent.
    AmbiguousPath,
    /// A batch of several calls where the call is published: one request
    /// would stand for several calls in rate limits.
    Batch,
}

impl BadRequestKind {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            BadRequestKind::Parse => "parse_error",
            BadRequestKind::Invalid => "invalid_request",
            BadRequestKind::HeaderMismatch => "header_mismatch",
            BadRequestKind::UnexpectedBody => "unexpected_body",
            BadRequestKind::AmbiguousPath => "ambiguous_path",
            BadRequestKind::Batch => "batch",
        }
    }
}

impl Reason {
    /// Stable, lower-case name for stats and logs.
    pub fn name(self) -> &'static str {
        match self {
            Reason::NoToken => "no_token",
            Reason::InvalidToken => "invalid_token",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::Forbidden => "forbidden",
            Reason::InsufficientScope => "insufficient_scope",
            Reason::BadRequest => "bad_request",
            Reason::TooLarge => "too_large",
            Reason::UnsupportedMediaType => "unsupported_media_type",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::IntrospectionUnavailable => "introspection_unavailable",
            Reason::UpstreamTokenUnavailable => "upstream_token_unavailable",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::UseDpopNonce => "use_dpop_nonce",
            Reason::NoServer => "no_server",
        }
    }
}

/// The finer class of a refusal, where its reason has classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Token(TokenErrorKind),
    Request(BadRequestKind),
    Proof(ProofErrorKind),
}

impl Class {
    /// The class's stable name, as counters and logs show it.
    pub fn name(self) -> &'static str {
        match self {
            Class::Token(kind) => kind.name(),
            Class::Request(kind) => kind.name(),
            Class::Proof(kind) => kind.name(),
        }
    }
}

/// A refusal: the answer to send and why.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub answer: Answer,
    pub reason: Reason,
    pub class: Option<Class>,
    /// The deciding rule, when a rule decided.
    pub rule: Option<String>,
    /// The JSON-RPC method and name, once the body was parsed (for the log).
    pub method: Option<String>,
    pub name: Option<String>,
    /// What went wrong with a call to the authorization server (for the
    /// log; never a token or a secret).
    pub detail: Option<String>,
    /// Rules whose condition could not be evaluated on the way.
    pub condition_errors: Vec<String>,
}

impl Refusal {
    pub(super) fn new(answer: Answer, reason: Reason) -> Refusal {
        Refusal {
            answer,
            reason,
            class: None,
            rule: None,
            method: None,
            name: None,
            detail: None,
            condition_errors: Vec::new(),
        }
    }

    pub(super) fn with_class(mut self, class: Class) -> Refusal {
        self.class = Some(class);
        self
    }

    /// The counters this refusal moves.
    pub fn counters(&self) -> Vec<Counter> {
        let mut counters = vec![Counter::Denied(self.reason)];
        match self.class {
            Some(Class::Token(kind)) => counters.push(Counter::InvalidToken(kind)),
            Some(Class::Request(kind)) => counters.push(Counter::BadRequest(kind)),
            Some(Class::Proof(kind)) => counters.push(Counter::InvalidDpopProof(kind)),
            None => {}
        }
        counters
    }
}
