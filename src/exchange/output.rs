//! What the exchange asks of the host: effects to carry out, in order, and
//! whether the stream goes on.

use crate::answer::Answer;
use crate::authorization_server::Call;
use crate::counters::Counter;
use crate::gate::UpstreamHeaders;
use crate::mcp::param_headers::ToolList;

/// Whether Envoy may move the stream on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on: for a request callback, everything held so far goes upstream;
    /// for a response callback, to the client. After the key wait (a
    /// callback of its own), it means "resume the held request".
    Continue,
    /// Keep holding (and buffering) the stream.
    Hold,
}

/// Log levels the filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// One thing for the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Answer the request locally; nothing of it goes upstream.
    SendAnswer(Answer),
    /// Edit the request headers before they go upstream.
    EditRequestHeaders(UpstreamHeaders),
    /// Remove these request trailers before they go upstream.
    RemoveRequestTrailers(Vec<String>),
    /// Remove these response trailers before they go to the client.
    RemoveResponseTrailers(Vec<String>),
    /// Put the request on the waiting list of a provider's keys; the host
    /// calls `on_keys_settled` when they arrive, their fetch ends, or the
    /// wait runs out.
    AwaitKeys { provider: usize },
    /// Make this call to the authorization server; the host hands its
    /// answer (or its failure) to `on_authorization_server_answer`.
    CallAuthorizationServer(Call),
    /// Put the request on the waiting list for another request's call; the
    /// host calls `on_authorization_server_wait` on every tick until the
    /// request leaves it (by asking for another wait, or not).
    AwaitAuthorizationServer,
    /// Replace the first `len` response body bytes Envoy holds now (all of
    /// them: the whole buffered body, or the current chunk when the response
    /// streams) with `bytes`.
    ReplaceResponseBody { len: usize, bytes: Vec<u8> },
    /// Set a response header, or remove it (`None`).
    SetResponseHeader { name: String, value: Option<String> },
    /// Remember what these tools declare as `Mcp-Param-*` headers (read
    /// from a `tools/list` answer), for every worker.
    LearnToolHeaders(ToolList),
    /// Set these properties (name, value): Envoy filter state
    /// `wasm.<name>`, for the filters after this one and the access log.
    Publish(Vec<(String, String)>),
    /// Add to a counter.
    Count(Counter, u64),
    /// Write a line to Envoy's log.
    Log(Level, String),
}

/// The effects of one callback and what to answer Envoy.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub effects: Vec<Effect>,
    pub action: Action,
}

impl Output {
    /// Hold, with no effect.
    pub fn hold() -> Output {
        Output {
            effects: Vec::new(),
            action: Action::Hold,
        }
    }

    /// Continue, with no effect.
    pub fn go_on() -> Output {
        Output {
            effects: Vec::new(),
            action: Action::Continue,
        }
    }
}
