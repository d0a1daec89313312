//! How a request ends: let through (allowed, a public path or preflight,
//! or refused in audit mode) with its header edits, its answer watched for
//! lists and, where configured, the upstream's own token; or answered by
//! the filter (a refusal, or the metadata document).

use std::rc::Rc;

use super::decision_log;
use super::output::{Action, Effect, Level, Output};
use super::{authorization_server, AnswerWatch, Env, Exchange, Outcome, Stage, Verdict};
use crate::answer::Answer;
use crate::authorization_server::Purpose;
use crate::counters::Counter;
use crate::gate::{self, Refusal};
use crate::identity::Identity;
use crate::mcp::Body;

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
        let policy = env.policy;
        let edits = gate::upstream_headers(policy, &self.head, Some(&identity));
        let mut effects = vec![Effect::Count(Counter::Allowed, 1)];
        effects.extend(skipped_headers(&edits));
        if !gate::enforces(policy) {
            let call = body.as_ref().map(gate::first_call).unwrap_or_default();
            effects.push(Effect::Log(
                Level::Info,
                decision_log::allow_line(
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
        let Some(upstream) = &env.policy.upstream_token else {
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
        if env.policy.providers[provider].issuer != identity.issuer {
            let refusal = gate::upstream_token_unavailable(
                false,
                "the caller's issuer is not the one upstream_token exchanges tokens of".into(),
            );
            return self.refuse_forward(forward, refusal);
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
        if let (Some(token), Some(upstream)) = (token, &env.policy.upstream_token) {
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
    pub(super) fn refuse_forward(&mut self, forward: Forward, refusal: Refusal) -> Output {
        self.send_refusal(refusal, forward.identity)
    }

    /// A public path or a preflight: on, without client identity headers
    /// (or the token, unless forwarded).
    pub(super) fn open(&mut self, env: &mut Env) -> Output {
        let edits = gate::upstream_headers(env.policy, &self.head, None);
        self.stage = Stage::Forwarded;
        self.verdict = Some(Verdict {
            outcome: Outcome::Open,
            identity: None,
            edits: Some(edits.clone()),
        });
        Output {
            effects: vec![Effect::EditRequestHeaders(edits)],
            action: Action::Continue,
        }
    }

    /// A local answer that is no refusal (the metadata paths).
    pub(super) fn answer(&mut self, answer: Answer) -> Output {
        self.stage = Stage::Answered;
        self.verdict = Some(Verdict {
            outcome: Outcome::Answered(answer.clone()),
            identity: None,
            edits: None,
        });
        Output {
            effects: vec![Effect::SendAnswer(answer)],
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
        let policy = env.policy;
        if gate::enforces(policy) {
            return self.send_refusal(refusal, identity);
        }
        let mut effects = self.refusal_record(&refusal, identity.as_deref(), false);
        let edits = gate::upstream_headers(policy, &self.head, identity.as_deref());
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
    fn send_refusal(&mut self, refusal: Refusal, identity: Option<Rc<Identity>>) -> Output {
        let mut effects = self.refusal_record(&refusal, identity.as_deref(), true);
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

    /// The counters a refusal moves, and its decision-log line.
    fn refusal_record(
        &self,
        refusal: &Refusal,
        identity: Option<&Identity>,
        enforced: bool,
    ) -> Vec<Effect> {
        let mut effects: Vec<Effect> = refusal
            .counters()
            .into_iter()
            .map(|c| Effect::Count(c, 1))
            .collect();
        effects.push(Effect::Log(
            Level::Info,
            decision_log::refusal_line(&self.head, identity, refusal, enforced),
        ));
        effects
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
