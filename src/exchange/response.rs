//! The response side of an allowed request whose answer may carry a list:
//! nothing of such an answer reaches the client before it is filtered, and
//! an answer the filter cannot read (compressed, another media type, two
//! `Content-Type` headers, malformed, too large) is replaced by a JSON-RPC
//! error with headers that match it.

use super::output::{Action, Effect, Level, Output};
use crate::answer;
use crate::config::Policy;
use crate::counters::Counter;
use crate::gate;
use std::rc::Rc;

use crate::identity::Identity;
use crate::lists::{self, Item, ListError, ListKind, PendingLists, SseFilter};
use crate::mcp::param_headers::{self, ParamHeader, ToolList};
use crate::media;
use std::cell::RefCell;

/// What the filter reads of a response's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// `:status`, as a number (0 when absent or not a number).
    pub status: u32,
    /// Every `Content-Type` value.
    pub content_types: Vec<String>,
    /// Every `Content-Encoding` value.
    pub content_encodings: Vec<String>,
}

impl ResponseHead {
    /// Reads the headers the filter needs from the full list.
    pub fn from_headers(headers: &[(String, String)]) -> ResponseHead {
        let mut head = ResponseHead::default();
        for (name, value) in headers {
            if name == ":status" {
                head.status = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("content-type") {
                head.content_types.push(value.clone());
            } else if name.eq_ignore_ascii_case("content-encoding") {
                head.content_encodings.push(value.clone());
            }
        }
        head
    }
}

/// How the answer is being read.
enum Reading {
    /// The headers have not come yet.
    Headers,
    /// `application/json`: held whole, filtered at its end.
    Json,
    /// `text/event-stream`: filtered event by event as chunks pass.
    Sse(Box<SseFilter>),
    /// Unreadable (`why`): the headers are held until a body comes, which
    /// the error replaces. An answer that ends without one passes as it is:
    /// Envoy has no body to put the error in, and there is nothing to hide.
    Unreadable { status: u32, why: String },
    /// The error went out in place of the answer: every further byte of the
    /// upstream's body is dropped, and its trailers.
    Replaced,
    /// Finished: nothing more to do.
    Done,
}

/// Watches one answer for list results.
pub struct AnswerWatch {
    pending: PendingLists,
    identity: Rc<Identity>,
    /// The request's headers, for rule conditions.
    headers: Vec<(String, String)>,
    reading: Reading,
    /// Bytes Envoy holds of a JSON answer (the last body callback's size).
    held: usize,
}

impl AnswerWatch {
    /// A watch for the answer to an allowed request whose `pending` list
    /// requests (empty for a GET stream, whose requests the filter never saw)
    /// are answered for `identity`.
    pub fn new(
        pending: PendingLists,
        identity: Rc<Identity>,
        headers: Vec<(String, String)>,
    ) -> AnswerWatch {
        AnswerWatch {
            pending,
            identity,
            headers,
            reading: Reading::Headers,
            held: 0,
        }
    }

    pub fn on_headers(&mut self, policy: &Policy, head: &ResponseHead, end: bool) -> Output {
        if end {
            // Nothing follows the headers: nothing to read.
            self.reading = Reading::Done;
            return Output::go_on();
        }
        match readable_as(head) {
            Ok(Media::Json) => {
                // Held: `Content-Length` is set once the filtered body is known.
                self.reading = Reading::Json;
                Output::hold()
            }
            Ok(Media::EventStream) => {
                self.reading = Reading::Sse(Box::new(SseFilter::new(
                    self.pending.clone(),
                    policy.max_body_bytes,
                )));
                Output {
                    effects: vec![set_header("content-length", None)],
                    action: Action::Continue,
                }
            }
            Err(why) => {
                self.reading = Reading::Unreadable {
                    status: head.status,
                    why,
                };
                Output::hold()
            }
        }
    }

    pub fn on_body(
        &mut self,
        policy: &Policy,
        now_s: u64,
        len: usize,
        end: bool,
        read: &dyn Fn(usize) -> Vec<u8>,
    ) -> Output {
        match &mut self.reading {
            Reading::Headers | Reading::Done => Output::go_on(),
            Reading::Unreadable { status, why } => {
                let mut effects = unreadable(why);
                effects.extend(error_headers(*status));
                effects.push(Effect::ReplaceResponseBody {
                    len,
                    bytes: answer::list_unfilterable_body(),
                });
                self.reading = Reading::Replaced;
                Output {
                    effects,
                    action: Action::Continue,
                }
            }
            Reading::Replaced => Output {
                effects: vec![Effect::ReplaceResponseBody {
                    len,
                    bytes: Vec::new(),
                }],
                action: Action::Continue,
            },
            Reading::Json => {
                self.held = len;
                if len > policy.max_body_bytes {
                    return self.replace_held_json(len, &ListError::TooLarge);
                }
                if !end {
                    return Output::hold();
                }
                self.finish_json(policy, now_s, read)
            }
            Reading::Sse(_) => self.filter_event_chunk(policy, now_s, len, end, read),
        }
    }

    /// A chunk of an event stream: its list answers filtered as they
    /// complete; what cannot be read ends the stream with an error event.
    fn filter_event_chunk(
        &mut self,
        policy: &Policy,
        now_s: u64,
        len: usize,
        end: bool,
        read: &dyn Fn(usize) -> Vec<u8>,
    ) -> Output {
        let Reading::Sse(filter) = &mut self.reading else {
            return Output::go_on();
        };
        let chunk = read(len);
        let seen = Seen::default();
        let keep = keeper(policy, &self.identity, &self.headers, now_s, &seen);
        let before = filter.removed();
        let mut out = filter.push(&chunk, &keep);
        if end {
            out = out.and_then(|mut bytes| {
                bytes.extend(filter.finish(&keep)?);
                Ok(bytes)
            });
        }
        drop(keep);
        let removed = filter.removed() - before;
        match out {
            Ok(bytes) => {
                let mut effects = removed_count(removed);
                effects.extend(seen.effects());
                if bytes != chunk {
                    effects.push(Effect::ReplaceResponseBody { len, bytes });
                }
                Output {
                    effects,
                    action: Action::Continue,
                }
            }
            Err(e) => {
                // The headers went out: the caller gets an error event, and
                // the rest of the stream is dropped.
                self.reading = Reading::Replaced;
                let mut effects = unreadable(&e.to_string());
                effects.extend(seen.effects());
                effects.push(Effect::ReplaceResponseBody {
                    len,
                    bytes: answer::list_unfilterable_event(),
                });
                Output {
                    effects,
                    action: Action::Continue,
                }
            }
        }
    }

    /// Trailers end the answer: a held JSON answer is filtered now (or it
    /// would go out unread when the trailers continue). An incomplete last
    /// event of a stream cannot be emitted any more and is dropped.
    pub fn on_trailers(
        &mut self,
        policy: &Policy,
        now_s: u64,
        names: &[String],
        read: &dyn Fn(usize) -> Vec<u8>,
    ) -> Output {
        match &mut self.reading {
            Reading::Json => {
                let mut output = self.finish_json(policy, now_s, read);
                if matches!(self.reading, Reading::Replaced) && !names.is_empty() {
                    output
                        .effects
                        .push(Effect::RemoveResponseTrailers(names.to_vec()));
                }
                output
            }
            Reading::Sse(filter) => {
                let seen = Seen::default();
                let keep = keeper(policy, &self.identity, &self.headers, now_s, &seen);
                let left = filter.finish(&keep);
                drop(keep);
                self.reading = Reading::Done;
                let mut output = Output::go_on();
                output.effects.extend(seen.effects());
                if !matches!(left, Ok(ref bytes) if bytes.is_empty()) {
                    output.effects.push(Effect::Log(
                        Level::Warn,
                        "mcp_authz: incomplete last event before trailers dropped".into(),
                    ));
                }
                output
            }
            // The error stands for the whole answer: nothing of the
            // upstream's goes with it.
            Reading::Replaced if !names.is_empty() => Output {
                effects: vec![Effect::RemoveResponseTrailers(names.to_vec())],
                action: Action::Continue,
            },
            // No body came: nothing was read, nothing is replaced.
            Reading::Unreadable { .. } => {
                self.reading = Reading::Done;
                Output::go_on()
            }
            _ => Output::go_on(),
        }
    }

    fn finish_json(
        &mut self,
        policy: &Policy,
        now_s: u64,
        read: &dyn Fn(usize) -> Vec<u8>,
    ) -> Output {
        if self.held == 0 {
            // Trailers with no body: nothing to read or hide.
            self.reading = Reading::Done;
            return Output::go_on();
        }
        let body = read(self.held);
        let seen = Seen::default();
        let filtered = {
            let keep = keeper(policy, &self.identity, &self.headers, now_s, &seen);
            lists::filter_json(&body, &self.pending, &keep)
        };
        match filtered {
            Ok(filtered) => {
                self.reading = Reading::Done;
                let mut effects = removed_count(filtered.removed);
                effects.extend(seen.effects());
                if filtered.changed {
                    effects.push(set_header(
                        "content-length",
                        Some(filtered.body.len().to_string()),
                    ));
                    effects.push(Effect::ReplaceResponseBody {
                        len: self.held,
                        bytes: filtered.body,
                    });
                }
                Output {
                    effects,
                    action: Action::Continue,
                }
            }
            Err(e) => {
                let mut output = self.replace_held_json(self.held, &e);
                output.effects.splice(0..0, seen.effects());
                output
            }
        }
    }

    /// The held headers become the error's, and the held body the error.
    fn replace_held_json(&mut self, len: usize, e: &ListError) -> Output {
        self.reading = Reading::Replaced;
        let mut effects = unreadable(&e.to_string());
        effects.extend(error_headers(502));
        effects.push(Effect::ReplaceResponseBody {
            len,
            bytes: answer::list_unfilterable_body(),
        });
        Output {
            effects,
            action: Action::Continue,
        }
    }
}

/// What the filter can read.
enum Media {
    Json,
    EventStream,
}

/// Whether the answer's bytes can be read as they come: identity encoding
/// and exactly one `Content-Type` the filter reads.
fn readable_as(head: &ResponseHead) -> Result<Media, String> {
    let encoded = head
        .content_encodings
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("identity"));
    if encoded {
        return Err("list answer is compressed (content-encoding)".into());
    }
    let [content_type] = head.content_types.as_slice() else {
        return Err(format!(
            "list answer has {} content-type headers",
            head.content_types.len()
        ));
    };
    match media::essence(content_type).as_str() {
        media::JSON => Ok(Media::Json),
        media::EVENT_STREAM => Ok(Media::EventStream),
        _ => Err("list answer has a media type the filter cannot read".into()),
    }
}

/// Headers of the error that replaces an answer: the upstream's error status
/// stays (a client still sees "not found" or "unavailable"), any other
/// becomes 502; no encoding, a length that matches.
fn error_headers(status: u32) -> Vec<Effect> {
    let status = if (400..600).contains(&status) {
        status
    } else {
        502
    };
    vec![
        set_header(":status", Some(status.to_string())),
        set_header("content-type", Some("application/json".into())),
        set_header("content-encoding", None),
        set_header(
            "content-length",
            Some(answer::list_unfilterable_body().len().to_string()),
        ),
    ]
}

fn unreadable(why: &str) -> Vec<Effect> {
    vec![
        Effect::Count(Counter::ListUnfilterable, 1),
        Effect::Log(Level::Warn, format!("mcp_authz: answer not passed: {why}")),
    ]
}

fn removed_count(removed: usize) -> Vec<Effect> {
    if removed == 0 {
        Vec::new()
    } else {
        vec![Effect::Count(Counter::ListItemsRemoved, removed as u64)]
    }
}

fn set_header(name: &str, value: Option<String>) -> Effect {
    Effect::SetResponseHeader {
        name: name.to_string(),
        value,
    }
}

/// The item predicate: the caller may use the item (same rule engine); an
/// item without the string it is judged by is removed. Every listed tool
/// also tells what it declares as `Mcp-Param-*` headers: that goes to
/// `seen.learned`; the rules whose condition could not be evaluated go to
/// `seen.condition_errors`.
fn keeper<'a>(
    policy: &'a Policy,
    identity: &'a Identity,
    headers: &'a [(String, String)],
    now_s: u64,
    seen: &'a Seen,
) -> impl Fn(&Item) -> bool + 'a {
    move |item| {
        let Some(name) = item.key() else {
            return false;
        };
        if item.kind() == ListKind::Tools {
            seen.learned.borrow_mut().push(name, declared_headers(item));
        }
        let mut errors = seen.condition_errors.borrow_mut();
        gate::may_use(
            policy,
            identity,
            headers,
            now_s,
            item.kind(),
            name,
            &mut errors,
        )
    }
}

/// A tool's `Mcp-Param-*` declarations. Only a tool with an
/// `x-mcp-header` member can declare any, so only such a tool is parsed;
/// for the others `declarations` would find nothing either.
fn declared_headers(tool: &Item) -> Vec<ParamHeader> {
    if !tool.has_declaration() {
        return Vec::new();
    }
    tool.value()
        .map(|tool| param_headers::declarations(&tool))
        .unwrap_or_default()
}

/// Tools' `Mcp-Param-*` declarations seen while filtering.
type Learned = RefCell<ToolList>;

/// The effect that shares what was learned, if anything was.
fn learn(learned: Learned) -> Option<Effect> {
    let learned = learned.into_inner();
    (!learned.is_empty()).then_some(Effect::LearnToolHeaders(learned))
}

/// What filtering a list noticed besides its verdicts.
#[derive(Default)]
struct Seen {
    learned: Learned,
    /// A rule's name for each condition that could not be evaluated.
    condition_errors: RefCell<Vec<String>>,
}

impl Seen {
    /// The effects of what was seen: the learned declarations shared, and
    /// the condition errors counted (each) and logged (once per rule, with
    /// how many items it met, never their names or values) as at call time.
    fn effects(self) -> Vec<Effect> {
        let mut effects: Vec<Effect> = learn(self.learned).into_iter().collect();
        let errors = self.condition_errors.into_inner();
        let mut rules: Vec<&String> = Vec::new();
        for rule in &errors {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
        for rule in rules {
            let items = errors.iter().filter(|r| *r == rule).count();
            effects.push(Effect::Count(Counter::ConditionError, items as u64));
            effects.push(Effect::Log(
                Level::Warn,
                format!(
                    "mcp_authz: the condition of rule {rule:?} could not be evaluated for {items} listed item(s); it counted against the caller"
                ),
            ));
        }
        effects
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Whatever a `tools/list` answer's tools look like, what is learned of
    /// them is what `declarations` finds in each parsed tool, even when the
    /// filter skips parsing it.
    #[test]
    fn listed_tools_teach_what_their_parsed_schemas_declare() {
        let policy = Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp", "jwks": {"remote": {"cluster": "idp"}}}],
            "rules": [{"effect": "allow", "methods": ["tools/list", "tools/call"]}]
        }))
        .expect("policy");
        let body = concat!(
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":["#,
            r#"{"name":"plain","inputSchema":{"type":"object","properties":{"id":{"type":"string"}}}},"#,
            r#"{"name":"routed","inputSchema":{"properties":{"region":{"type":"string","x-mcp-header":"Region"}}}},"#,
            r#"{"name":"escaped","inputSchema":{"properties":{"t":{"type":"integer","x-mcp-h\u0065ader":"Tenant"}}}},"#,
            r#"{"n\u0061me":"escaped name","description":"x-mcp-header","inputSchema":{}},"#,
            r#"{"name":"invalid","inputSchema":{"properties":{"a":{"type":"object","x-mcp-header":"A"}}}},"#,
            r#"{"name":7},{"description":"no name"}]}}"#
        );
        let head = ResponseHead {
            status: 200,
            content_types: vec!["application/json".into()],
            content_encodings: Vec::new(),
        };
        let pending: PendingLists = [(json!(1), ListKind::Tools)].into_iter().collect();
        let mut watch = AnswerWatch::new(
            pending,
            Rc::new(Identity::anonymous("https://idp")),
            Vec::new(),
        );
        watch.on_headers(&policy, &head, false);
        let output = watch.on_body(&policy, 0, body.len(), true, &|_| body.as_bytes().to_vec());
        let learned = output.effects.iter().find_map(|e| match e {
            Effect::LearnToolHeaders(learned) => Some(
                learned
                    .iter()
                    .map(|(tool, declared)| (tool.to_string(), declared.to_vec()))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        });

        let parsed: Value = serde_json::from_str(body).expect("JSON");
        let expected: Vec<(String, Vec<ParamHeader>)> = parsed["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|tool| {
                let name = tool.get("name")?.as_str()?;
                Some((name.to_string(), param_headers::declarations(tool)))
            })
            .collect();
        assert_eq!(learned, Some(expected.clone()));
        let declaring: Vec<&str> = expected
            .iter()
            .filter(|(_, declared)| !declared.is_empty())
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(declaring, ["routed", "escaped"]);
    }

    fn policy() -> Policy {
        Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": "https://idp.example.com",
                "jwks": {"remote": {"cluster": "idp", "url": "https://idp.example.com/jwks"}}}],
            "rules": [
                {"effect": "allow", "methods": ["tools/list"]},
                {"name": "acme tools", "effect": "allow", "methods": ["tools/call"],
                 "names": ["query*"], "when": "token.claims.tenant == 'acme'"},
                {"name": "readers", "effect": "allow", "methods": ["tools/call"], "names": ["get_*"]}
            ]
        }))
        .expect("policy")
    }

    /// The effects of filtering `answer` to `tools/list` (id 1) for a
    /// caller whose token has no `tenant` claim, as JSON or as one event.
    fn filter(answer: &Value, sse: bool) -> Vec<Effect> {
        let policy = policy();
        let identity = Rc::new(Identity::anonymous("https://idp.example.com"));
        let pending = [(json!(1), ListKind::Tools)].into_iter().collect();
        let mut watch = AnswerWatch::new(pending, identity, Vec::new());
        let (media, body) = if sse {
            (
                "text/event-stream",
                format!("event: message\ndata: {answer}\n\n"),
            )
        } else {
            ("application/json", answer.to_string())
        };
        let head = ResponseHead {
            status: 200,
            content_types: vec![media.into()],
            content_encodings: Vec::new(),
        };
        let mut effects = watch.on_headers(&policy, &head, false).effects;
        let bytes = body.into_bytes();
        let read = |len: usize| bytes[..len].to_vec();
        effects.extend(watch.on_body(&policy, 0, bytes.len(), true, &read).effects);
        effects
    }

    #[test]
    fn a_condition_that_cannot_be_evaluated_for_a_list_is_counted_and_logged_by_rule_name() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "query", "inputSchema": {"type": "object"}},
            {"name": "query_secret_project_x", "inputSchema": {"type": "object"}},
            {"name": "get_weather", "inputSchema": {"type": "object"}}
        ]}});
        for sse in [false, true] {
            let effects = filter(&answer, sse);
            // Both `query*` tools are hidden (the allow rule counts as
            // false), the other stays.
            let body = effects
                .iter()
                .find_map(|e| match e {
                    Effect::ReplaceResponseBody { bytes, .. } => Some(bytes.clone()),
                    _ => None,
                })
                .expect("the answer is rewritten");
            let body = String::from_utf8(body).expect("text");
            assert!(
                body.contains("get_weather") && !body.contains("query"),
                "{body}"
            );
            let counted: u64 = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Count(Counter::ConditionError, n) => Some(*n),
                    _ => None,
                })
                .sum();
            assert_eq!(counted, 2, "one per item it was evaluated for (sse: {sse})");
            let logs: Vec<&String> = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Log(Level::Warn, line) => Some(line),
                    _ => None,
                })
                .collect();
            assert_eq!(logs.len(), 1, "one line per rule: {logs:?}");
            assert!(logs[0].contains("\"acme tools\"") && logs[0].contains("2 listed item"));
            assert!(!logs[0].contains("query"), "never the items it met");
        }
    }

    #[test]
    fn a_list_whose_conditions_evaluate_counts_no_error() {
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
            {"name": "get_weather", "inputSchema": {"type": "object"}}
        ]}});
        let effects = filter(&answer, false);
        assert!(!effects
            .iter()
            .any(|e| matches!(e, Effect::Count(Counter::ConditionError, _))));
    }
}
