//! One request's state machine: head → (wait for keys) → body → decision.
//! Every decision is the core's (`gate`); this file only reads what Envoy
//! holds, carries out the verdict and logs it.

use super::stats::Stats;
use super::worker::Worker;
use super::{log, now_ms};
use crate::answer::{self, Answer};
use crate::gate::{self, HeadVerdict, Refusal, RequestHead};
use crate::identity::Identity;
use crate::lists::{self, ListError, PendingLists, SseFilter};
use crate::mcp::Body;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};
use serde_json::json;
use std::cell::RefCell;
use std::rc::Rc;

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a provider's keys before the token can be checked.
    AwaitingKeys,
    /// Token good; reading the JSON-RPC body.
    ReadingBody,
    /// Decided: continued upstream or answered locally.
    Done,
}

/// The request's state, shared with the worker's waiter list so the root
/// context can resume it when keys arrive.
pub struct Exchange {
    head: RequestHead,
    stage: Stage,
    identity: Option<Identity>,
    /// Body bytes buffered so far, and whether the body is complete.
    body_size: usize,
    body_complete: bool,
    /// An unknown `kid` already caused one refetch for this request.
    refetched: bool,
    /// List answers to filter for this caller, once the request was allowed.
    lists: Option<ListAnswer>,
}

/// The response side of an allowed list request.
struct ListAnswer {
    pending: PendingLists,
    identity: Identity,
    shape: AnswerShape,
}

enum AnswerShape {
    /// Not seen the response headers yet.
    Unknown,
    /// `application/json`: buffered whole, rewritten once.
    Json,
    /// `text/event-stream`: rewritten event by event as chunks pass.
    Sse(Box<SseFilter>),
    /// The answer could not be filtered and an error went out instead:
    /// everything after it is dropped.
    Dropped,
}

/// What the state machine asks Envoy to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Pause,
}

pub struct RequestFilter {
    context_id: u32,
    worker: Option<Rc<Worker>>,
    exchange: Rc<RefCell<Exchange>>,
}

impl RequestFilter {
    pub fn new(context_id: u32, worker: Option<Rc<Worker>>) -> RequestFilter {
        RequestFilter {
            context_id,
            worker,
            exchange: Rc::new(RefCell::new(Exchange {
                head: RequestHead::default(),
                stage: Stage::Done,
                identity: None,
                body_size: 0,
                body_complete: false,
                refetched: false,
                lists: None,
            })),
        }
    }
}

impl Context for RequestFilter {}

impl HttpContext for RequestFilter {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            send(&answer::keys_unavailable(5));
            return Action::Pause;
        };
        // One host call for all headers; the core reads them from memory.
        let mut headers = self.get_http_request_headers();
        let method = take_pseudo(&mut headers, ":method");
        let path = take_pseudo(&mut headers, ":path");
        let mut ex = self.exchange.borrow_mut();
        ex.head = RequestHead::new(&method, &path, headers);
        ex.head.has_body = !end_of_stream;
        ex.body_complete = end_of_stream;
        let next = after_head(&worker, &mut ex, self.context_id, &self.exchange, now_ms());
        drop(ex);
        action(next)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return Action::Pause;
        };
        let mut ex = self.exchange.borrow_mut();
        ex.body_size = body_size;
        ex.body_complete = end_of_stream;
        match ex.stage {
            Stage::Done => Action::Continue,
            Stage::AwaitingKeys => {
                // Keep buffering; the waiter checks the size when it resumes.
                if body_size > worker.policy.max_body_bytes {
                    let refusal = gate::too_large(&worker.policy);
                    return action(refuse(&worker, &mut ex, refusal));
                }
                Action::Pause
            }
            Stage::ReadingBody => action(after_body(&worker, &mut ex)),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let mut ex = self.exchange.borrow_mut();
        let Some(lists) = ex.lists.as_mut() else {
            return Action::Continue;
        };
        let content_type = self
            .get_http_response_header("content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if end_of_stream {
            ex.lists = None;
            return Action::Continue;
        }
        match media.as_str() {
            "application/json" => {
                // Hold the headers: Content-Length is set once the filtered
                // body is known.
                lists.shape = AnswerShape::Json;
                Action::Pause
            }
            "text/event-stream" => {
                let max = self
                    .worker
                    .as_ref()
                    .map(|w| w.policy.max_body_bytes)
                    .unwrap_or(0);
                lists.shape =
                    AnswerShape::Sse(Box::new(SseFilter::new(lists.pending.clone(), max)));
                self.set_http_response_header("content-length", None);
                Action::Continue
            }
            _ => {
                ex.lists = None;
                Action::Continue
            }
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(worker) = self.worker.clone() else {
            return Action::Continue;
        };
        let mut ex = self.exchange.borrow_mut();
        let Some(lists) = ex.lists.as_mut() else {
            return Action::Continue;
        };
        let policy = &worker.policy;
        let identity = &lists.identity;
        let keep = |kind: lists::ListKind, item: &serde_json::Value| {
            gate::may_use(policy, identity, kind, item)
        };
        match &mut lists.shape {
            AnswerShape::Unknown => Action::Continue,
            AnswerShape::Dropped => {
                self.set_http_response_body(0, body_size, &[]);
                Action::Continue
            }
            AnswerShape::Json => {
                if body_size > policy.max_body_bytes {
                    unfilterable_json(&worker, body_size, &ListError::TooLarge);
                    lists.shape = AnswerShape::Dropped;
                    return Action::Continue;
                }
                if !end_of_stream {
                    return Action::Pause;
                }
                let body = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                match lists::filter_json(&body, &lists.pending, &keep) {
                    Ok(filtered) => {
                        Stats::add(worker.stats.list_items_removed, filtered.removed as u64);
                        if filtered.changed {
                            self.set_http_response_body(0, body_size, &filtered.body);
                            self.set_http_response_header(
                                "content-length",
                                Some(&filtered.body.len().to_string()),
                            );
                        }
                    }
                    Err(e) => unfilterable_json(&worker, body_size, &e),
                }
                ex.lists = None;
                Action::Continue
            }
            AnswerShape::Sse(filter) => {
                let chunk = self
                    .get_http_response_body(0, body_size)
                    .unwrap_or_default();
                let before = filter.removed();
                let mut out = filter.push(&chunk, &keep);
                if end_of_stream {
                    out = out.and_then(|mut bytes| {
                        bytes.extend(filter.finish(&keep)?);
                        Ok(bytes)
                    });
                }
                Stats::add(
                    worker.stats.list_items_removed,
                    (filter.removed() - before) as u64,
                );
                let bytes = match out {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        count_unfilterable(&worker, &e);
                        // Nothing unfiltered goes out; the caller gets an error
                        // event and the rest of the stream is dropped.
                        lists.shape = AnswerShape::Dropped;
                        let mut event = b"event: message\ndata: ".to_vec();
                        event.extend(answer::list_unfilterable_body());
                        event.extend(b"\n\n");
                        self.set_http_response_body(0, body_size, &event);
                        return Action::Continue;
                    }
                };
                self.set_http_response_body(0, body_size, &bytes);
                Action::Continue
            }
        }
    }
}

/// Logs and counts a list answer the filter could not inspect.
fn count_unfilterable(worker: &Worker, e: &ListError) {
    Stats::bump(worker.stats.list_unfilterable);
    log(
        LogLevel::Warn,
        &format!("mcp_authz: list answer not passed: {e}"),
    );
}

/// A JSON list answer that cannot be filtered is replaced by a JSON-RPC
/// error: never passed through unfiltered.
fn unfilterable_json(worker: &Worker, body_size: usize, e: &ListError) {
    count_unfilterable(worker, e);
    let body = answer::list_unfilterable_body();
    let _ = hostcalls::set_buffer(
        proxy_wasm::types::BufferType::HttpResponseBody,
        0,
        body_size,
        &body,
    );
    let _ = hostcalls::set_map_value(
        proxy_wasm::types::MapType::HttpResponseHeaders,
        ":status",
        Some("502"),
    );
    let _ = hostcalls::set_map_value(
        proxy_wasm::types::MapType::HttpResponseHeaders,
        "content-length",
        Some(&body.len().to_string()),
    );
}

/// Called by the root context, with this request's context in effect, once
/// the keys it waited for arrived or its wait ran out.
pub fn resume_after_keys(worker: &Worker, ex: &mut Exchange, now: u64) {
    if ex.stage != Stage::AwaitingKeys {
        return;
    }
    ex.stage = Stage::Done;
    let next = match check_head(worker, ex, now) {
        HeadVerdict::KeysPending { .. } => refuse(worker, ex, gate::keys_unavailable()),
        HeadVerdict::UnknownKey { refusal, .. } => refuse(worker, ex, refusal),
        verdict => on_verdict(worker, ex, verdict),
    };
    if next == Next::Continue {
        let _ = hostcalls::resume_http_request();
    }
}

fn check_head(worker: &Worker, ex: &Exchange, now: u64) -> HeadVerdict {
    let mut cache = worker.cache.borrow_mut();
    worker
        .with_keys(|keys| gate::check_head(&worker.policy, &ex.head, keys, &mut cache, now / 1000))
}

fn after_head(
    worker: &Worker,
    ex: &mut Exchange,
    context_id: u32,
    shared: &Rc<RefCell<Exchange>>,
    now: u64,
) -> Next {
    match check_head(worker, ex, now) {
        HeadVerdict::KeysPending { provider } => {
            worker.slots.borrow_mut()[provider].keys_needed(now);
            worker.wait(context_id, shared, provider, now);
            ex.stage = Stage::AwaitingKeys;
            Next::Pause
        }
        HeadVerdict::UnknownKey { provider, refusal } => {
            let granted = !ex.refetched && worker.slots.borrow_mut()[provider].unknown_key(now);
            if granted {
                Stats::bump(worker.stats.jwks_refetch_unknown_key);
                ex.refetched = true;
                worker.wait(context_id, shared, provider, now);
                ex.stage = Stage::AwaitingKeys;
                Next::Pause
            } else {
                refuse(worker, ex, refusal)
            }
        }
        verdict => on_verdict(worker, ex, verdict),
    }
}

fn on_verdict(worker: &Worker, ex: &mut Exchange, verdict: HeadVerdict) -> Next {
    match verdict {
        HeadVerdict::Respond(answer) => {
            ex.stage = Stage::Done;
            send(&answer);
            Next::Pause
        }
        HeadVerdict::PassUntouched => {
            ex.stage = Stage::Done;
            strip_client_headers(worker);
            Next::Continue
        }
        HeadVerdict::Refuse(refusal) => refuse(worker, ex, refusal),
        HeadVerdict::UnknownKey { refusal, .. } => refuse(worker, ex, refusal),
        HeadVerdict::KeysPending { .. } => refuse(worker, ex, gate::keys_unavailable()),
        HeadVerdict::Verified {
            identity,
            needs_body,
            cached,
        } => {
            Stats::bump(if cached {
                worker.stats.token_cache_hit
            } else {
                worker.stats.token_cache_miss
            });
            if !needs_body {
                allow(worker, ex, &identity, None, None);
                return Next::Continue;
            }
            if let Some(refusal) = gate::check_content_type(&ex.head) {
                return refuse(worker, ex, refusal);
            }
            ex.identity = Some(identity);
            ex.stage = Stage::ReadingBody;
            if ex.body_complete {
                after_body(worker, ex)
            } else {
                Next::Pause
            }
        }
    }
}

fn after_body(worker: &Worker, ex: &mut Exchange) -> Next {
    let policy = &worker.policy;
    if ex.body_size > policy.max_body_bytes {
        return refuse(worker, ex, gate::too_large(policy));
    }
    if !ex.body_complete {
        return Next::Pause;
    }
    ex.stage = Stage::Done;
    let bytes = hostcalls::get_buffer(
        proxy_wasm::types::BufferType::HttpRequestBody,
        0,
        ex.body_size,
    )
    .ok()
    .flatten()
    .unwrap_or_default();
    let Some(identity) = ex.identity.take() else {
        return refuse(worker, ex, gate::keys_unavailable());
    };
    match gate::check_body(policy, &ex.head, &identity, &bytes) {
        Ok(allowed) => {
            allow(
                worker,
                ex,
                &identity,
                allowed.rule.as_deref(),
                Some(&allowed.body),
            );
            Next::Continue
        }
        Err(refusal) => {
            decision_log(worker, ex, Some(&identity), &refusal);
            finish_refusal(worker, ex, *refusal, Some(&identity))
        }
    }
}

fn allow(
    worker: &Worker,
    ex: &mut Exchange,
    identity: &Identity,
    rule: Option<&str>,
    body: Option<&Body>,
) {
    worker.stats.allowed();
    if let Some(body) = body {
        let pending = gate::pending_lists(&worker.policy, body);
        if !pending.is_empty() && gate::enforces(&worker.policy) {
            ex.lists = Some(ListAnswer {
                pending,
                identity: identity.clone(),
                shape: AnswerShape::Unknown,
            });
        }
    }
    apply_upstream_headers(worker, identity);
    if !gate::enforces(&worker.policy) {
        let (method, name) = body.map(gate::first_call).unwrap_or_default();
        let line = json!({
            "mcp_authz": "allow", "rule": rule, "method": method, "name": name,
            "sub": identity.subject, "client_id": identity.client_id, "issuer": identity.issuer,
        });
        log(LogLevel::Info, &line.to_string());
    }
}

/// Refuses from the head (no body read): logs, counts, answers.
fn refuse(worker: &Worker, ex: &mut Exchange, refusal: Refusal) -> Next {
    decision_log(worker, ex, None, &refusal);
    finish_refusal(worker, ex, refusal, None)
}

fn finish_refusal(
    worker: &Worker,
    ex: &mut Exchange,
    refusal: Refusal,
    identity: Option<&Identity>,
) -> Next {
    ex.stage = Stage::Done;
    worker.stats.denied(refusal.reason);
    if gate::enforces(&worker.policy) {
        send(&refusal.answer);
        return Next::Pause;
    }
    // Audit mode: let it through, but never with client-sent identity
    // headers; set the verified ones when there is an identity.
    worker.stats.would_deny();
    match identity {
        Some(identity) => apply_upstream_headers(worker, identity),
        None => strip_client_headers(worker),
    }
    Next::Continue
}

/// One JSON line per refusal (or "would deny" in audit mode). Never the
/// token, never claim values other than `sub` and the client id.
fn decision_log(worker: &Worker, ex: &Exchange, identity: Option<&Identity>, refusal: &Refusal) {
    let decision = if gate::enforces(&worker.policy) {
        "deny"
    } else {
        "would_deny"
    };
    let class = match refusal.reason {
        gate::Reason::InvalidToken(kind) => Some(format!("{kind:?}")),
        gate::Reason::BadRequest(kind) => Some(format!("{kind:?}")),
        _ => None,
    };
    let line = json!({
        "mcp_authz": decision,
        "reason": refusal.reason.name(),
        "class": class,
        "status": refusal.answer.status,
        "rule": refusal.rule,
        "method": refusal.method,
        "name": refusal.name,
        "sub": identity.and_then(|i| i.subject.clone()),
        "client_id": identity.and_then(|i| i.client_id.clone()),
        "issuer": identity.map(|i| i.issuer.clone()),
        "request_id": ex.head.header("x-request-id"),
        "http_method": ex.head.method,
        "path": ex.head.path,
    });
    log(LogLevel::Info, &line.to_string());
}

/// Removes client-sent identity headers (and the token unless forwarded),
/// then sets the verified identity's.
fn apply_upstream_headers(worker: &Worker, identity: &Identity) {
    let edits = gate::upstream_headers(&worker.policy, identity);
    for name in &edits.remove {
        set_request_header(name, None);
    }
    for (name, value) in &edits.set {
        set_request_header(name, Some(value));
    }
    for (name, why) in &edits.skipped {
        log(
            LogLevel::Warn,
            &format!("mcp_authz: identity header {name} left out: {why}"),
        );
    }
}

fn set_request_header(name: &str, value: Option<&str>) {
    let _ = hostcalls::set_map_value(proxy_wasm::types::MapType::HttpRequestHeaders, name, value);
}

/// For requests that go upstream without a verified identity (public paths,
/// preflights, audit mode): client-sent identity headers never pass, nor
/// the token unless it is forwarded.
fn strip_client_headers(worker: &Worker) {
    for header in &worker.policy.identity_headers {
        set_request_header(&header.name, None);
    }
    if worker.policy.token_forwarding == crate::config::TokenForwarding::Strip {
        set_request_header("authorization", None);
    }
}

fn send(answer: &Answer) {
    let headers: Vec<(&str, &str)> = answer
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(answer.status, headers, Some(&answer.body));
}

fn action(next: Next) -> Action {
    match next {
        Next::Continue => Action::Continue,
        Next::Pause => Action::Pause,
    }
}

fn take_pseudo(headers: &mut Vec<(String, String)>, name: &str) -> String {
    match headers.iter().position(|(n, _)| n == name) {
        Some(i) => headers.remove(i).1,
        None => String::new(),
    }
}
