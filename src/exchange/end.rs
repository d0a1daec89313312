//! How a request ends: let through (allowed, a public path or preflight,
//! no server's with `unmatched: "pass"`, or refused in audit mode) with its
//! header edits, its answer watched for lists and, where configured, the
//! upstream's own token; or answered by the filter (a refusal, or the
//! metadata document). Every end is published (`publish`) and counted for
//! its server.

use std::rc::Rc;

use super::decision_log;
use super::output::{Action, Effect, Level, Output};
use super::{authorization_server, AnswerWatch, Env, Exchange, Outcome, Stage, Verdict};
use crate::answer::Answer;
use crate::authorization_server::Purpose;
use crate::counters::Counter;
use crate::gate::RequestHead;
use crate::gate::{self, Refusal};
use crate::identity::Identity;
use crate::mcp::Body;
use crate::publish::{self, CallRecord};

/// A decided request on its way upstream: what it goes with.
pub(super) struct Forward {
    outcome: Outcome,
    identity: Option<Rc<Identity>>,
    edits: gate::UpstreamHeaders,
    /// Counts and log lines of the decision, carried out when it goes.
    effects: Vec<Effect>,
    watch: Option<AnswerWatch>,
}

impl Exchange {
    pub(super) fn allow(
        &mut self,
        env: &mut Env,
        identity: Rc<Identity>,
        rule: Option<String>,
        body: Option<Body>,
    ) -> Output {
        let policy = self.policy(env);
        let call = body.as_ref().map(gate::first_call).unwrap_or_default();
        let record = CallRecord::new("allow", policy.server_name.as_deref())
            .caller(Some(&identity))
            .call(call.clone(), rule.clone());
        let mut edits = gate::upstream_headers(policy, &self.head, Some(&identity));
        published_headers(env, &self.head, Some(&record), &mut edits);
        let mut effects = vec![Effect::Count(Counter::Allowed, 1)];
        if env.gateway.listed {
            effects.push(Effect::Count(
                Counter::ServerAllowed(policy.server_index),
                1,
            ));
        }
        effects.extend(published(env, &record));
        effects.extend(skipped_headers(&edits));
        if !gate::enforces(policy) {
            effects.push(Effect::Log(
                Level::Info,
                decision_log::allow_line(
                    policy.server_name.as_deref(),
                    rule.as_deref(),
                    call,
                    &identity,
                    policy.upstream_token.as_ref(),
                ),
            ));
        }
        let mut watch = None;
        if gate::enforces(policy) && policy.filter_lists {
            // Every answer that can carry a list is watched: a GET stream
            // (live or resumed) or DELETE, whose requests the filter never
            // saw, and a POST that asked for a list.
            let pending = body.as_ref().map(gate::pending_lists).unwrap_or_default();
            if body.is_none() || !pending.is_empty() {
                watch = Some(AnswerWatch::new(
                    pending,
                    identity.clone(),
                    self.head.headers.clone(),
                ));
            }
        }
        self.forward(
            env,
            Forward {
                outcome: Outcome::Allowed { rule },
                identity: Some(identity),
                edits,
                effects,
                watch,
            },
        )
    }

    /// Lets a decided request go upstream: at once, or once the token the
    /// upstream gets has been exchanged for it.
    pub(super) fn forward(&mut self, env: &mut Env, forward: Forward) -> Output {
        let policy = self.policy(env);
        let Some(upstream) = &policy.upstream_token else {
            return self.finish_forward(env, forward, None);
        };
        let Some(identity) = &forward.identity else {
            // Audit mode letting a request without a verified token on:
            // there is nothing to exchange.
            return self.finish_forward(env, forward, None);
        };
        let provider = upstream.provider;
        // The verdict is given; only the upstream's token is still to come
        // (`explain` shows it; a failed exchange replaces it).
        self.verdict = Some(Verdict {
            outcome: forward.outcome.clone(),
            identity: forward.identity.clone(),
            edits: Some(forward.edits.clone()),
        });
        if policy.providers[provider].issuer != identity.issuer {
            let refusal = gate::upstream_token_unavailable(
                false,
                "the caller's issuer is not the one upstream_token exchanges tokens of".into(),
            );
            return self.refuse_forward(env, forward, refusal);
        }
        self.ask_authorization_server(
            env,
            Purpose::TokenExchange,
            provider,
            authorization_server::Job::Exchange(Box::new(forward)),
        )
    }

    /// The request goes upstream, with the exchanged token when there is one.
    pub(super) fn finish_forward(
        &mut self,
        env: &mut Env,
        forward: Forward,
        token: Option<&str>,
    ) -> Output {
        let Forward {
            outcome,
            identity,
            mut edits,
            mut effects,
            watch,
        } = forward;
        if let (Some(token), Some(upstream)) = (token, &self.policy(env).upstream_token) {
            let value = if upstream.header == "authorization" {
                format!("Bearer {token}")
            } else {
                token.to_string()
            };
            edits.set.push((upstream.header.clone(), value));
        }
        effects.push(Effect::EditRequestHeaders(edits.clone()));
        self.answer = watch;
        self.stage = Stage::Forwarded;
        self.verdict = Some(Verdict {
            outcome,
            identity,
            edits: Some(edits),
        });
        Output {
            effects,
            action: Action::Continue,
        }
    }

    /// No token for the upstream: the request is answered (in audit mode
    /// too: it must never go on without the token the operator asked for).
    pub(super) fn refuse_forward(
        &mut self,
        env: &Env,
        forward: Forward,
        refusal: Refusal,
    ) -> Output {
        self.send_refusal(env, refusal, forward.identity)
    }

    /// A public path or a preflight: on, without client identity headers
    /// (or the token, unless forwarded).
    pub(super) fn open(&mut self, env: &mut Env) -> Output {
        let policy = self.policy(env);
        let record = CallRecord::new("open", policy.server_name.as_deref());
        let mut edits = gate::upstream_headers(policy, &self.head, None);
        published_headers(env, &self.head, None, &mut edits);
        let effects = published(env, &record);
        self.go_on_undecided(Outcome::Open, edits, effects)
    }

    /// A request no server takes: refused (404), or with `unmatched:
    /// "pass"` on without any header the filter sets for a server
    /// (identity or published), in any spelling, since the filters after
    /// this one may trust them.
    pub(super) fn unmatched(&mut self, env: &mut Env) -> Output {
        if env.gateway.unmatched == crate::config::Unmatched::Refuse {
            self.endpoint = true;
            return self.refuse(env, gate::no_server(), None);
        }
        let mut edits = gate::unmatched_headers(env.gateway, &self.head);
        published_headers(env, &self.head, None, &mut edits);
        let mut effects = vec![Effect::Count(Counter::UnmatchedPassed, 1)];
        effects.extend(published(env, &CallRecord::new("unmatched", None)));
        self.go_on_undecided(Outcome::Unmatched, edits, effects)
    }

    /// Lets a request on without a verdict on its caller (a public path,
    /// a preflight, no server's), with these header edits after `effects`.
    fn go_on_undecided(
        &mut self,
        outcome: Outcome,
        edits: gate::UpstreamHeaders,
        mut effects: Vec<Effect>,
    ) -> Output {
        self.stage = Stage::Forwarded;
        self.verdict = Some(Verdict {
            outcome,
            identity: None,
            edits: Some(edits.clone()),
        });
        effects.push(Effect::EditRequestHeaders(edits));
        Output {
            effects,
            action: Action::Continue,
        }
    }

    /// A local answer that is no refusal (the metadata paths).
    pub(super) fn answer(&mut self, env: &Env, answer: Answer) -> Output {
        let server = self.chosen(env).and_then(|p| p.server_name.as_deref());
        let mut effects = published(env, &CallRecord::new("metadata", server));
        self.stage = Stage::Answered;
        self.verdict = Some(Verdict {
            outcome: Outcome::Answered(answer.clone()),
            identity: None,
            edits: None,
        });
        effects.push(Effect::SendAnswer(answer));
        Output {
            effects,
            action: Action::Hold,
        }
    }

    /// Logs and counts a refusal; answers it, or in audit mode lets the
    /// request on without client identity headers (and with the verified
    /// ones where there is an identity).
    pub(super) fn refuse(
        &mut self,
        env: &mut Env,
        refusal: Refusal,
        identity: Option<Rc<Identity>>,
    ) -> Output {
        // A request no server took is refused whatever a server's mode.
        let Some(policy) = self.chosen(env).filter(|p| !gate::enforces(p)) else {
            return self.send_refusal(env, refusal, identity);
        };
        let (mut effects, record) = self.refusal_record(env, &refusal, identity.as_deref(), false);
        let mut edits = gate::upstream_headers(policy, &self.head, identity.as_deref());
        published_headers(env, &self.head, Some(&record), &mut edits);
        effects.push(Effect::Count(Counter::AuditWouldDeny, 1));
        effects.extend(skipped_headers(&edits));
        self.forward(
            env,
            Forward {
                outcome: Outcome::AuditPassed(refusal),
                identity,
                edits,
                effects,
                watch: None,
            },
        )
    }

    /// Counts, logs and answers a refusal: the request ends here.
    fn send_refusal(
        &mut self,
        env: &Env,
        refusal: Refusal,
        identity: Option<Rc<Identity>>,
    ) -> Output {
        let (mut effects, _) = self.refusal_record(env, &refusal, identity.as_deref(), true);
        effects.push(Effect::SendAnswer(refusal.answer.clone()));
        self.stage = Stage::Answered;
        self.verdict = Some(Verdict {
            outcome: Outcome::Refused(refusal),
            identity,
            edits: None,
        });
        Output {
            effects,
            action: Action::Hold,
        }
    }

    /// The counters a refusal moves (its server's too), the call it
    /// publishes, and its decision-log line; and that call.
    fn refusal_record(
        &self,
        env: &Env,
        refusal: &Refusal,
        identity: Option<&Identity>,
        enforced: bool,
    ) -> (Vec<Effect>, CallRecord) {
        let chosen = self.chosen(env);
        let server = chosen.and_then(|p| p.server_name.as_deref());
        let mut effects: Vec<Effect> = refusal
            .counters()
            .into_iter()
            .map(|c| Effect::Count(c, 1))
            .collect();
        if let (true, Some(policy)) = (env.gateway.listed, chosen) {
            effects.push(Effect::Count(Counter::ServerDenied(policy.server_index), 1));
        }
        let decision = if enforced { "deny" } else { "would_deny" };
        let mut record = CallRecord::new(decision, server).caller(identity).call(
            (refusal.method.clone(), refusal.name.clone()),
            refusal.rule.clone(),
        );
        record.reason = Some(refusal.reason.name());
        effects.extend(published(env, &record));
        effects.push(Effect::Log(
            Level::Info,
            decision_log::refusal_line(&self.head, server, identity, refusal, enforced),
        ));
        (effects, record)
    }
}

/// The effect that publishes a record as filter state, when the
/// configuration asks for it.
fn published(env: &Env, record: &CallRecord) -> Vec<Effect> {
    match &env.gateway.publish {
        Some(p) if p.filter_state => vec![Effect::Publish(record.properties())],
        _ => Vec::new(),
    }
}

/// The published headers' edits (see [`publish::header_edits`]), when the
/// configuration publishes headers.
fn published_headers(
    env: &Env,
    head: &RequestHead,
    record: Option<&CallRecord>,
    edits: &mut gate::UpstreamHeaders,
) {
    if let Some(publish) = &env.gateway.publish {
        publish::header_edits(publish, head, record, edits);
    }
}

fn skipped_headers(edits: &gate::UpstreamHeaders) -> Vec<Effect> {
    edits
        .skipped
        .iter()
        .map(|(name, why)| {
            Effect::Log(
                Level::Warn,
                format!("mcp_authz: identity header {name} left out: {why}"),
            )
        })
        .collect()
}
