//! One request's context: hands every Envoy callback to the core's state
//! machine (`exchange::Exchange`) and carries out what it says. No decision
//! is made here; every callback of the stream, trailers included, goes
//! through the machine, so none can fall back to the SDK's default of
//! "continue".

use super::abi::{self, Buffer, HostShared, Map};
use super::worker::{Request, Worker};
use super::{log, now_ms};
use crate::authorization_server::{Call, CallAnswer, MAX_ANSWER_BYTES};
use crate::exchange::{self, Action, Effect, Env, Exchange, Level, Output, ResponseHead};
use crate::gate::RequestHead;
use crate::mcp::param_headers::ParamHeader;
use crate::shared_data::SharedData;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{self, LogLevel};
use std::cell::RefCell;
use std::rc::Rc;

pub struct RequestFilter {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    /// Shared with the worker's waiting list, so the root context can hand
    /// it the end of a key wait.
    exchange: Rc<RefCell<Exchange>>,
}

impl RequestFilter {
    pub fn new(context_id: u32, worker: Option<Rc<Worker>>) -> RequestFilter {
        RequestFilter {
            context_id,
            worker,
            exchange: Rc::new(RefCell::new(Exchange::new())),
        }
    }

    /// The machine says the answer's callbacks would let it on untouched
    /// (`Exchange::watches_answer`): they are skipped. Not before the
    /// filter is configured, where every callback holds.
    fn answer_passes(&self) -> bool {
        self.worker.is_some() && !self.exchange.borrow().watches_answer()
    }

    /// Runs one event through the machine and carries out its output.
    fn run(&self, event: impl FnOnce(&mut Exchange, &mut Env) -> Output) -> types::Action {
        let Some(worker) = &self.worker else {
            // No configuration: the first callback answered; hold the rest.
            return types::Action::Pause;
        };
        let output = drive(worker, &self.exchange, event);
        match carry_out(worker, self.context_id, &self.exchange, output) {
            Action::Continue => types::Action::Continue,
            Action::Hold => types::Action::Pause,
        }
    }
}

impl Context for RequestFilter {
    /// The answer to a call this request made while Envoy ran one of its
    /// callbacks (the SDK routes it back here).
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(worker) = &self.worker {
            call_answered(worker, token, body_size);
        }
    }
}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> types::Action {
        if self.worker.is_none() {
            send(&exchange::unconfigured_answer());
            return types::Action::Pause;
        }
        // One host call for all headers; the core reads them from memory.
        let mut headers = abi::pairs(Map::RequestHeaders);
        let method = take_pseudo(&mut headers, ":method");
        let path = take_pseudo(&mut headers, ":path");
        let head = RequestHead::new(&method, &path, headers);
        self.run(|ex, env| ex.on_request_headers(env, head, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        self.run(|ex, env| ex.on_request_body(env, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> types::Action {
        let names = names_of(Map::RequestTrailers);
        self.run(|ex, env| ex.on_request_trailers(env, &names))
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        end_of_stream: bool,
    ) -> types::Action {
        if self.answer_passes() {
            return types::Action::Continue;
        }
        // The machine reads the headers only when it watches the answer.
        let head = || ResponseHead::from_headers(&abi::pairs(Map::ResponseHeaders));
        self.run(|ex, env| ex.on_response_headers(env, head, end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> types::Action {
        if self.answer_passes() {
            return types::Action::Continue;
        }
        self.run(|ex, env| ex.on_response_body(env, body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> types::Action {
        if self.answer_passes() {
            return types::Action::Continue;
        }
        let names = names_of(Map::ResponseTrailers);
        self.run(|ex, env| ex.on_response_trailers(env, &names))
    }

    /// The stream is over, whichever way it ended.
    fn on_log(&mut self) {
        if let Some(worker) = &self.worker {
            if !self.exchange.borrow().has_work_at_stream_end() {
                return;
            }
            drive(worker, &self.exchange, |ex, env| {
                ex.on_stream_done(env);
                Output::hold()
            });
        }
    }
}

/// The host as the machine sees it while it decides: Envoy's buffers,
/// shared data and this VM's key slots.
struct Live<'a> {
    worker: &'a Worker,
    now_ms: u64,
    shared: HostShared,
}

impl exchange::Host for Live<'_> {
    fn shared_data(&mut self) -> &mut dyn SharedData {
        &mut self.shared
    }

    fn calls_in_flight(&self) -> usize {
        self.worker.calls_in_flight()
    }

    fn digest_key(&self) -> [u8; 32] {
        self.worker.digest_key
    }

    fn request_body(&self, len: usize) -> Vec<u8> {
        abi::buffer(Buffer::RequestBody, len)
    }

    fn response_body(&self, len: usize) -> Vec<u8> {
        abi::buffer(Buffer::ResponseBody, len)
    }

    fn fetch_keys(&mut self, provider: usize) {
        if let Some(slot) = self.worker.slots.borrow_mut().get_mut(provider) {
            slot.keys_needed(self.now_ms);
        }
    }

    fn refetch_keys(&mut self, provider: usize) -> bool {
        self.worker
            .slots
            .borrow_mut()
            .get_mut(provider)
            .is_some_and(|slot| slot.unknown_key(self.now_ms))
    }

    fn tool_headers(&self, tool: &str) -> Option<Vec<ParamHeader>> {
        self.worker.tool_headers(tool)
    }
}

/// Feeds one event to the machine with this VM's configuration, keys and
/// cache.
pub fn drive(
    worker: &Worker,
    exchange: &RefCell<Exchange>,
    event: impl FnOnce(&mut Exchange, &mut Env) -> Output,
) -> Output {
    let now_ms = now_ms();
    let keys = worker.key_ring();
    let mut cache = worker.cache.borrow_mut();
    let mut host = Live {
        worker,
        now_ms,
        shared: HostShared,
    };
    let mut env = Env {
        gateway: &worker.gateway,
        keys: &keys,
        cache: &mut cache,
        now_ms,
        host: &mut host,
    };
    event(&mut exchange.borrow_mut(), &mut env)
}

/// Carries out the machine's effects, in order; returns its action.
pub fn carry_out(
    worker: &Worker,
    context_id: u32,
    exchange: &Rc<RefCell<Exchange>>,
    output: Output,
) -> Action {
    let mut failed_call = false;
    for effect in output.effects {
        match effect {
            Effect::CallAuthorizationServer(call) => match dispatch(&call) {
                Ok(token) => {
                    worker.calls.borrow_mut().insert(
                        token,
                        Request {
                            context_id,
                            exchange: Rc::downgrade(exchange),
                        },
                    );
                }
                Err(()) => failed_call = true,
            },
            Effect::AwaitAuthorizationServer => worker.call_waiters.borrow_mut().push(Request {
                context_id,
                exchange: Rc::downgrade(exchange),
            }),
            Effect::SendAnswer(answer) => send(&answer),
            Effect::EditRequestHeaders(edits) => {
                for name in &edits.remove {
                    let _ = abi::set_header(Map::RequestHeaders, name, None);
                }
                for (name, value) in &edits.set {
                    let _ = abi::set_header(Map::RequestHeaders, name, Some(value));
                }
            }
            Effect::RemoveRequestTrailers(names) => {
                for name in &names {
                    let _ = abi::set_header(Map::RequestTrailers, name, None);
                }
            }
            Effect::RemoveResponseTrailers(names) => {
                for name in &names {
                    let _ = abi::set_header(Map::ResponseTrailers, name, None);
                }
            }
            Effect::AwaitKeys { provider } => worker.wait(context_id, exchange, provider, now_ms()),
            Effect::ReplaceResponseBody { len, bytes } => {
                let _ = abi::set_buffer(Buffer::ResponseBody, len, &bytes);
            }
            Effect::SetResponseHeader { name, value } => {
                let _ = abi::set_header(Map::ResponseHeaders, &name, value.as_deref());
            }
            Effect::LearnToolHeaders(tools) => worker.learn_tool_headers(tools),
            Effect::Publish(properties) => {
                for (name, value) in &properties {
                    let _ = abi::set_property(name, value);
                }
            }
            Effect::Count(counter, n) => worker.stats.add(counter, n),
            Effect::Log(level, line) => log(
                match level {
                    Level::Info => LogLevel::Info,
                    Level::Warn => LogLevel::Warn,
                },
                &line,
            ),
        }
    }
    if failed_call {
        // The call could not even start (an unknown cluster, say): the
        // machine hears it as a call without an answer, at once.
        let output = drive(worker, exchange, |ex, env| {
            ex.on_authorization_server_answer(env, None)
        });
        return carry_out(worker, context_id, exchange, output);
    }
    output.action
}

fn dispatch(call: &Call) -> Result<u32, ()> {
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
    abi::http_call(&call.cluster, &headers, body, call.timeout_ms).map_err(|failed| {
        log(
            LogLevel::Warn,
            &format!(
                "mcp_authz: call through cluster {:?} could not start: status {}",
                call.cluster, failed.0
            ),
        );
    })
}

/// Hands the answer of a call to the authorization server to the request
/// that made it, then lets the requests waiting for it look again. Whether
/// `token` was such a call.
pub fn call_answered(worker: &Worker, token: u32, body_size: usize) -> bool {
    let Some(request) = worker.calls.borrow_mut().remove(&token) else {
        return false;
    };
    let headers = abi::pairs(Map::CallResponseHeaders);
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.trim().parse::<u32>().ok());
    // No status: the call failed (reset, refused, timed out).
    let answer = status.map(|status| CallAnswer {
        status,
        content_types: headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .collect(),
        content_encodings: headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
            .map(|(_, v)| v.clone())
            .collect(),
        body: abi::buffer(
            Buffer::CallResponseBody,
            body_size.min(MAX_ANSWER_BYTES + 1),
        ),
    });
    if let Some(exchange) = request.exchange.upgrade() {
        resume_with(worker, request.context_id, &exchange, |ex, env| {
            ex.on_authorization_server_answer(env, answer)
        });
    }
    poll_call_waiters(worker);
    true
}

/// Lets every request waiting for another's call look at the shared answer
/// again (each asks to wait on if it is not there yet).
pub fn poll_call_waiters(worker: &Worker) {
    let waiting: Vec<Request> = worker.call_waiters.borrow_mut().drain(..).collect();
    for request in waiting {
        if let Some(exchange) = request.exchange.upgrade() {
            resume_with(worker, request.context_id, &exchange, |ex, env| {
                ex.on_authorization_server_wait(env)
            });
        }
    }
}

/// Runs an event of a request from outside its own callbacks (the root
/// context, or another request's): with its context made current, and the
/// request resumed when the machine says so.
pub fn resume_with(
    worker: &Worker,
    context_id: u32,
    exchange: &Rc<RefCell<Exchange>>,
    event: impl FnOnce(&mut Exchange, &mut Env) -> Output,
) {
    if abi::set_effective_context(context_id).is_err() {
        return;
    }
    let output = drive(worker, exchange, event);
    if carry_out(worker, context_id, exchange, output) == Action::Continue {
        let _ = abi::resume_request();
    }
}

fn send(answer: &crate::answer::Answer) {
    let headers: Vec<(&str, &str)> = answer
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let _ = abi::send_response(answer.status, &headers, &answer.body);
}

fn names_of(map: Map) -> Vec<String> {
    abi::pairs(map).into_iter().map(|(name, _)| name).collect()
}

fn take_pseudo(headers: &mut Vec<(String, String)>, name: &str) -> String {
    match headers.iter().position(|(n, _)| n == name) {
        Some(i) => headers.remove(i).1,
        None => String::new(),
    }
}
