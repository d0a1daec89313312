//! One HTTP exchange through the filter, as a state machine: Envoy's
//! callbacks go in (request headers, body chunks, trailers, the end of a key
//! wait, response headers, body chunks, trailers), effects for the host and
//! "hold" or "continue" come out. The order of the request path is written
//! here once — select the server, then route, token, body, decide — the
//! host shell only carries the output out, and `mcp-authz explain` drives
//! this same machine.
//!
//! The hold invariant, by construction: from the moment a request is held
//! until its verdict, every callback answers [`Action::Hold`], whatever it
//! is (a body chunk, trailers, end of stream, the key wait ending early);
//! only the verdict "allowed" (or audit mode) lets the request go on, and
//! after a local answer every callback holds, so nothing of a refused request
//! is ever forwarded. On the response side, an answer that may carry a list
//! is held or rewritten until it has been filtered ([`AnswerWatch`]).
//! `tests/exchange_properties.rs` drives random sequences of callbacks
//! through the machine and checks both.

mod authorization_server;
mod decision_log;
mod end;
mod output;
mod response;

pub use crate::shared_data::SharedData;
use end::Forward;
pub use output::{Action, Effect, Level, Output};
pub use response::{AnswerWatch, ResponseHead};

use crate::answer::{self, Answer};
use crate::authorization_server::Purpose;
use crate::config::{Gateway, Policy};
use crate::counters::Counter;
use crate::dpop::replay::{self, Seen};
use crate::dpop::{self, ProofErrorKind};
use crate::gate::{self, Expect, KeyRing, Refusal, RequestHead, Route, TokenVerdict, Verb};
use std::rc::Rc;

use crate::identity::Identity;
use crate::mcp::param_headers::{ParamHeader, ToolList};
use crate::publish;
use crate::servers::{self, Selection};
use crate::token_cache::VerifiedTokenCache;

/// What the exchange needs from the host, synchronously, while it decides.
pub trait Host {
    /// The proxy's shared data: the authorization server's answers and the
    /// memory of DPoP proofs already used, shared by workers.
    fn shared_data(&mut self) -> &mut dyn SharedData;
    /// The first `len` bytes of the request body Envoy holds.
    fn request_body(&self, len: usize) -> Vec<u8>;
    /// The first `len` bytes of the response body Envoy holds (the buffered
    /// body while it is held, else the current chunk).
    fn response_body(&self, len: usize) -> Vec<u8>;
    /// A provider's keys were never fetched: ask for a fetch now.
    fn fetch_keys(&mut self, provider: usize);
    /// A token named a key its provider lacks: may its keys be refetched
    /// now? (Rate-limited per provider.)
    fn refetch_keys(&mut self, provider: usize) -> bool;
    /// Calls to the authorization server this worker has in flight.
    fn calls_in_flight(&self) -> usize;
    /// The proxy's key for digests of tokens (the same in every worker).
    fn digest_key(&self) -> [u8; 32];
    /// A tool's `x-mcp-header` declarations, learned from `tools/list`
    /// answers (by any worker); `None` when never seen.
    fn tool_headers(&self, tool: &str) -> Option<Vec<ParamHeader>>;
}

/// What every callback is decided with.
pub struct Env<'a> {
    /// The configuration: its servers, each with its policy.
    pub gateway: &'a Gateway,
    pub keys: &'a KeyRing,
    pub cache: &'a mut VerifiedTokenCache,
    /// Milliseconds since the Unix epoch.
    pub now_ms: u64,
    pub host: &'a mut dyn Host,
}

/// How a request ended, for `explain` and the tests.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Allowed by the rules (`rule`: the allow rule; `None` for a body of
    /// JSON-RPC responses, or a GET / DELETE, which need no rule).
    Allowed { rule: Option<String> },
    /// Let through without a token: a public path or a CORS preflight.
    Open,
    /// Matched no server and let through (`unmatched: "pass"`).
    Unmatched,
    /// Answered by the filter without refusing (the metadata paths).
    Answered(Answer),
    /// Refused with this answer.
    Refused(Refusal),
    /// Refused, but let through because the mode is `audit`.
    AuditPassed(Refusal),
}

/// The verdict on a request, and what it was decided on.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub outcome: Outcome,
    /// The verified identity, when the token was checked and good.
    pub identity: Option<Rc<Identity>>,
    /// The header edits the request went upstream with (when it did).
    pub edits: Option<gate::UpstreamHeaders>,
}

/// Where the request is.
enum Stage {
    /// No headers yet.
    Start,
    /// Held until a provider's keys arrive.
    AwaitingKeys,
    /// Token good; held until the body has ended.
    ReadingBody {
        identity: Rc<Identity>,
        expect: Expect,
    },
    /// Held while the authorization server is asked (introspection before
    /// the body is read, or token exchange after the verdict).
    AuthorizationServer(Box<authorization_server::Pending>),
    /// Let through: every later request callback continues.
    Forwarded,
    /// Answered by the filter: every later request callback holds.
    Answered,
}

/// One request and its answer.
pub struct Exchange {
    head: RequestHead,
    /// The server the request is for (index into `Gateway::servers`),
    /// once selected; `None` before, and for a request that matches none.
    server: Option<usize>,
    stage: Stage,
    /// Body bytes Envoy holds (the last body callback's size).
    body_len: usize,
    /// The body has ended (end of stream, or trailers came).
    body_ended: bool,
    /// The request is for the MCP endpoint (not a metadata or public path,
    /// nor a preflight).
    endpoint: bool,
    /// An unknown `kid` already caused one refetch for this request.
    refetched: bool,
    answer: Option<AnswerWatch>,
    /// A new DPoP nonce for the client, sent with the upstream's answer.
    dpop_nonce: Option<String>,
    verdict: Option<Verdict>,
    /// A call this request made and no longer waits for (it was refused
    /// meanwhile): its answer is still shared when it comes.
    orphan: Option<Box<authorization_server::Pending>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    pub fn new() -> Exchange {
        Exchange {
            head: RequestHead::default(),
            server: None,
            stage: Stage::Start,
            body_len: 0,
            body_ended: false,
            endpoint: false,
            refetched: false,
            answer: None,
            dpop_nonce: None,
            verdict: None,
            orphan: None,
        }
    }

    /// The verdict, once there is one.
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// The request (its head, as the filter read it).
    pub fn head(&self) -> &RequestHead {
        &self.head
    }

    /// The server the request is for, once selected (index into
    /// `Gateway::servers`).
    pub fn server(&self) -> Option<usize> {
        self.server
    }

    /// The selected server's policy. Only called once a server is
    /// selected; before (never, by construction) it is the first server's.
    fn policy<'g>(&self, env: &Env<'g>) -> &'g Policy {
        let servers = &env.gateway.servers;
        let i = self.server.filter(|&i| i < servers.len()).unwrap_or(0);
        &servers[i].policy
    }

    /// The selected server's policy, if a server was selected.
    fn chosen<'g>(&self, env: &Env<'g>) -> Option<&'g Policy> {
        self.server
            .and_then(|i| env.gateway.servers.get(i))
            .map(|s| &s.policy)
    }

    pub fn on_request_headers(
        &mut self,
        env: &mut Env,
        mut head: RequestHead,
        end_of_stream: bool,
    ) -> Output {
        if !matches!(self.stage, Stage::Start) {
            return self.request_action();
        }
        head.has_body = !end_of_stream;
        self.head = head;
        self.body_ended = end_of_stream;
        match servers::select(env.gateway, &self.head) {
            Selection::Server(i) => self.server = Some(i),
            Selection::RootMetadata(i) => {
                self.server = Some(i);
                let policy = self.policy(env);
                return self.answer(env, gate::metadata_route(policy, self.head.verb()));
            }
            Selection::Unmatched => return self.unmatched(env),
            Selection::Ambiguous => {
                self.endpoint = true;
                return self.refuse(env, gate::ambiguous_path(), None);
            }
        }
        let route = gate::route(self.policy(env), &self.head);
        self.endpoint = !matches!(route, Route::Open);
        match route {
            Route::Metadata(answer) => self.answer(env, answer),
            Route::Open => self.open(env),
            Route::Refuse(refusal) => self.refuse(env, refusal, None),
            Route::Endpoint(expect) => self.check_token(env, expect),
        }
    }

    pub fn on_request_body(&mut self, env: &mut Env, len: usize, end_of_stream: bool) -> Output {
        self.body_len = len;
        self.body_ended |= end_of_stream;
        self.after_body_event(env)
    }

    /// Trailers end the body: decide now. (Envoy's default for a callback is
    /// to continue, which would release the held request unread.) Trailers
    /// that may not go upstream are removed first (`names`: the trailers'
    /// names).
    pub fn on_request_trailers(&mut self, env: &mut Env, names: &[String]) -> Output {
        self.body_ended = true;
        let mut output = self.after_body_event(env);
        let mut remove = match self.chosen(env) {
            Some(policy) => gate::trailers_to_remove(policy, self.endpoint, names),
            None => gate::trailers_to_remove_unmatched(env.gateway, names),
        };
        let publish = env.gateway.publish.as_ref();
        for name in names {
            if publish::is_published_header(publish, name) && !remove.contains(name) {
                remove.push(name.clone());
            }
        }
        if !remove.is_empty() {
            output
                .effects
                .insert(0, Effect::RemoveRequestTrailers(remove));
        }
        output
    }

    /// The key wait is over: the keys arrived, their fetch ended, or the
    /// wait ran out. [`Action::Continue`] means "resume the held request".
    pub fn on_keys_settled(&mut self, env: &mut Env) -> Output {
        if !matches!(self.stage, Stage::AwaitingKeys) {
            return Output::hold();
        }
        match self.head_expectation() {
            Some(expect) => self.check_token(env, expect),
            None => self.refuse(env, gate::keys_unavailable(), None),
        }
    }

    /// Whether the answer's callbacks can change anything: it is watched
    /// (lists, streams) or a DPoP nonce goes with it. When not, each of
    /// them lets the answer on untouched, and the host skips them (no clock,
    /// no key look-up, no copy of headers); debug builds check that every
    /// such callback indeed changes nothing.
    pub fn watches_answer(&self) -> bool {
        self.answer.is_some() || self.dpop_nonce.is_some()
    }

    /// `head` reads the answer's headers; it is called only when the answer
    /// is watched (lists, streams), so an answer that passes as it is costs
    /// no copy of its headers.
    pub fn on_response_headers(
        &mut self,
        env: &mut Env,
        head: impl FnOnce() -> ResponseHead,
        end_of_stream: bool,
    ) -> Output {
        let idle = !self.watches_answer();
        let policy = self.policy(env);
        let mut output = match self.answer.as_mut() {
            Some(watch) => watch.on_headers(policy, &head(), end_of_stream),
            None => Output::go_on(),
        };
        if let Some(nonce) = self.dpop_nonce.take() {
            output.effects.insert(
                0,
                Effect::SetResponseHeader {
                    name: "dpop-nonce".into(),
                    value: Some(nonce),
                },
            );
        }
        debug_assert!(!idle || output == Output::go_on());
        output
    }

    pub fn on_response_body(&mut self, env: &mut Env, len: usize, end_of_stream: bool) -> Output {
        let idle = !self.watches_answer();
        let policy = self.policy(env);
        let host = &*env.host;
        let now_s = env.now_ms / 1000;
        let output = match self.answer.as_mut() {
            Some(watch) => watch.on_body(policy, now_s, len, end_of_stream, &|n| {
                host.response_body(n)
            }),
            None => Output::go_on(),
        };
        let output = learned_for(policy, output);
        debug_assert!(!idle || output == Output::go_on());
        output
    }

    /// `names`: the trailers' names.
    pub fn on_response_trailers(&mut self, env: &mut Env, names: &[String]) -> Output {
        let idle = !self.watches_answer();
        let policy = self.policy(env);
        let host = &*env.host;
        let now_s = env.now_ms / 1000;
        let output = match self.answer.as_mut() {
            Some(watch) => watch.on_trailers(policy, now_s, names, &|n| host.response_body(n)),
            None => Output::go_on(),
        };
        let output = learned_for(policy, output);
        debug_assert!(!idle || output == Output::go_on());
        output
    }

    /// What a request callback answers once the request is decided (or
    /// while it waits).
    fn request_action(&self) -> Output {
        match self.stage {
            Stage::Forwarded => Output::go_on(),
            _ => Output::hold(),
        }
    }

    fn after_body_event(&mut self, env: &mut Env) -> Output {
        match &self.stage {
            Stage::Start | Stage::Answered | Stage::Forwarded => self.request_action(),
            Stage::AuthorizationServer(pending)
                if !matches!(pending.job, authorization_server::Job::Introspect { .. }) =>
            {
                Output::hold()
            }
            Stage::AwaitingKeys | Stage::AuthorizationServer(_) => {
                // Keep buffering, but not beyond the limit.
                let policy = self.policy(env);
                if self.body_len > policy.max_body_bytes {
                    if let Stage::AuthorizationServer(pending) =
                        std::mem::replace(&mut self.stage, Stage::AwaitingKeys)
                    {
                        self.orphan = Some(pending);
                    }
                    return self.refuse(env, gate::too_large(policy), None);
                }
                Output::hold()
            }
            Stage::ReadingBody { .. } => {
                let Stage::ReadingBody { identity, expect } =
                    std::mem::replace(&mut self.stage, Stage::AwaitingKeys)
                else {
                    return Output::hold();
                };
                self.read_body(env, identity, expect)
            }
        }
    }

    /// The body's expectation, from the head (for a token checked again
    /// after the key wait).
    fn head_expectation(&self) -> Option<Expect> {
        match self.head.verb() {
            Verb::Post => Some(Expect::JsonRpc),
            Verb::Get | Verb::Delete => Some(Expect::Nothing),
            _ => None,
        }
    }

    fn check_token(&mut self, env: &mut Env, expect: Expect) -> Output {
        let now_s = env.now_ms / 1000;
        let policy = self.policy(env);
        match gate::check_token(policy, &self.head, env.keys, env.cache, now_s) {
            TokenVerdict::Verified {
                identity,
                cached,
                proof,
            } => {
                let counter = if cached {
                    Counter::TokenCacheHit
                } else {
                    Counter::TokenCacheMiss
                };
                self.verified(
                    env,
                    identity,
                    proof,
                    vec![Effect::Count(counter, 1)],
                    expect,
                )
            }
            TokenVerdict::Refuse(refusal) => self.refuse(env, refusal, None),
            TokenVerdict::Introspect { provider } => self.ask_authorization_server(
                env,
                Purpose::Introspection,
                provider,
                authorization_server::Job::Introspect { expect },
            ),
            TokenVerdict::KeysPending { provider } => {
                if matches!(self.stage, Stage::AwaitingKeys) {
                    // The wait is over and still no keys.
                    return self.refuse(env, gate::keys_unavailable(), None);
                }
                env.host.fetch_keys(provider);
                self.await_keys(provider, Vec::new())
            }
            TokenVerdict::UnknownKey { provider, refusal } => {
                if self.refetched || !env.host.refetch_keys(provider) {
                    return self.refuse(env, refusal, None);
                }
                self.refetched = true;
                self.await_keys(
                    provider,
                    vec![Effect::Count(Counter::JwksUnknownKeyRefetch, 1)],
                )
            }
        }
    }

    /// A good token (a verified JWT, or an introspection answer): its DPoP
    /// proof, if any, is checked against replay last, then the body is read.
    /// `counts` go first.
    fn verified(
        &mut self,
        env: &mut Env,
        identity: Rc<Identity>,
        proof: Option<dpop::Accepted>,
        mut counts: Vec<Effect>,
        expect: Expect,
    ) -> Output {
        if let Some(proof) = proof {
            let now_s = env.now_ms / 1000;
            // Last of the proof's checks: was it used before?
            let seen = replay::remember(
                env.host.shared_data(),
                &proof.jkt,
                &proof.jti,
                proof.remember_until,
                now_s,
            );
            match seen {
                Seen::Fresh { evicted } => {
                    counts.push(Effect::Count(Counter::DpopAccepted, 1));
                    if evicted {
                        counts.push(Effect::Count(Counter::DpopReplayEvicted, 1));
                    }
                    self.dpop_nonce = proof.next_nonce;
                }
                Seen::Replayed | Seen::Unavailable => {
                    let refusal =
                        gate::proof_refusal(self.policy(env), ProofErrorKind::Replay.into());
                    // Like every other failed proof: no identity (audit
                    // mode lets it on without one).
                    let mut output = self.refuse(env, refusal, None);
                    counts.append(&mut output.effects);
                    output.effects = counts;
                    return output;
                }
            }
        }
        let mut output = self.read_body(env, identity, expect);
        counts.append(&mut output.effects);
        output.effects = counts;
        output
    }

    fn await_keys(&mut self, provider: usize, mut effects: Vec<Effect>) -> Output {
        self.stage = Stage::AwaitingKeys;
        effects.push(Effect::AwaitKeys { provider });
        Output {
            effects,
            action: Action::Hold,
        }
    }

    /// With a good token: read the body to its end, then decide.
    fn read_body(&mut self, env: &mut Env, identity: Rc<Identity>, expect: Expect) -> Output {
        let policy = self.policy(env);
        match expect {
            Expect::Nothing => {
                if self.body_len > 0 {
                    return self.refuse(env, gate::unexpected_body(), Some(identity));
                }
                if !self.body_ended {
                    self.stage = Stage::ReadingBody { identity, expect };
                    return Output::hold();
                }
                self.allow(env, identity, None, None)
            }
            Expect::JsonRpc => {
                if let Some(refusal) = gate::check_content_type(&self.head) {
                    return self.refuse(env, refusal, Some(identity));
                }
                if self.body_len > policy.max_body_bytes {
                    return self.refuse(env, gate::too_large(policy), Some(identity));
                }
                if !self.body_ended {
                    self.stage = Stage::ReadingBody { identity, expect };
                    return Output::hold();
                }
                let bytes = env.host.request_body(self.body_len);
                let now_s = env.now_ms / 1000;
                let host = &*env.host;
                let tool_headers = |tool: &str| host.tool_headers(&tool_key(policy, tool));
                let checked =
                    gate::check_body(policy, &self.head, &identity, &bytes, now_s, &tool_headers);
                let checked = checked.and_then(|allowed| {
                    // Published, one request stands for one call: a batch
                    // of several would count once in a per-call limit.
                    match env.gateway.publish {
                        Some(_) if gate::calls_in(&allowed.body) > 1 => {
                            Err(Box::new(gate::published_batch(&allowed.body)))
                        }
                        _ => Ok(allowed),
                    }
                });
                match checked {
                    Ok(allowed) => {
                        let errors = condition_errors(&allowed.condition_errors);
                        let mut output =
                            self.allow(env, identity, allowed.rule, Some(allowed.body));
                        output.effects.splice(0..0, errors);
                        output
                    }
                    Err(refusal) => {
                        let errors = condition_errors(&refusal.condition_errors);
                        let mut output = self.refuse(env, *refusal, Some(identity));
                        output.effects.splice(0..0, errors);
                        output
                    }
                }
            }
        }
    }
}

/// The answer of a VM without a configuration: it refuses every request
/// (fail closed), and holds every later callback. Envoy normally refuses
/// such a configuration before any request comes.
pub fn unconfigured_answer() -> Answer {
    answer::keys_unavailable(answer::RETRY_AFTER_SECONDS)
}

/// Under which name the host remembers what a tool declares: its own for
/// the one server, else prefixed by its server's, so that two servers'
/// tools of one name never share declarations (`/` is in no server name).
fn tool_key(policy: &Policy, tool: &str) -> String {
    match &policy.server_name {
        Some(server) => format!("{server}/{tool}"),
        None => tool.to_string(),
    }
}

/// A response output whose learned tool declarations are named for the
/// policy's server ([`tool_key`]).
fn learned_for(policy: &Policy, mut output: Output) -> Output {
    if policy.server_name.is_none() {
        return output;
    }
    for effect in &mut output.effects {
        if let Effect::LearnToolHeaders(tools) = effect {
            let mut named = ToolList::default();
            for (tool, declared) in tools.iter() {
                named.push(&tool_key(policy, tool), declared.to_vec());
            }
            *tools = named;
        }
    }
    output
}

/// Counts and logs the rules whose condition could not be evaluated: their
/// names only, never the values they met.
fn condition_errors(rules: &[String]) -> Vec<Effect> {
    rules
        .iter()
        .flat_map(|rule| {
            [
                Effect::Count(Counter::ConditionError, 1),
                Effect::Log(
                    Level::Warn,
                    format!("mcp_authz: the condition of rule {rule:?} could not be evaluated; it counted against the caller"),
                ),
            ]
        })
        .collect()
}

#[cfg(test)]
mod tests;
