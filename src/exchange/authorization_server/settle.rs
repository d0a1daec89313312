//! What the authorization server's answer comes to, shared with every
//! request and worker that asks about the same token, and how the request
//! goes on with it: introspected claims become the caller's identity, an
//! exchanged token goes upstream; a refusal or no answer refuses the
//! request.

use std::rc::Rc;

use serde_json::Value;

use super::{Job, Pending};
use crate::authorization_server::shared::{self, Digest, Outcome as Shared};
use crate::authorization_server::{
    self as server, introspection, token_exchange, CallAnswer, Purpose,
};
use crate::counters::{CallEvent, Counter};
use crate::exchange::output::{Effect, Level, Output};
use crate::exchange::{Env, Exchange, Forward, Stage};
use crate::gate::{self, Expect};
use crate::token::TokenErrorKind;

/// What the authorization server's answer comes to.
pub(super) enum Settled {
    /// An answer to use: introspected claims (JSON), or the exchanged token.
    Ready(Vec<u8>),
    /// A refusal: the class of an introspection refusal, or why an exchange
    /// was refused.
    Refused(Vec<u8>),
    /// No answer: the server down, slow, busy, or answering garbage.
    Unavailable(String),
}

impl Exchange {
    pub(super) fn read_answer(
        &self,
        env: &mut Env,
        pending: &Pending,
        answer: Option<CallAnswer>,
    ) -> Settled {
        let Some(answer) = answer else {
            return Settled::Unavailable("no answer (unreachable or timed out)".into());
        };
        let provider = &self.policy(env).providers[pending.provider];
        match pending.purpose {
            Purpose::Introspection => match introspection::read(&answer, provider, env.now_ms) {
                introspection::Verdict::Active { claims, until_ms } => {
                    let mut payload = until_ms.to_string().into_bytes();
                    payload.push(b'\n');
                    payload.extend(Value::Object(claims).to_string().into_bytes());
                    Settled::Ready(payload)
                }
                introspection::Verdict::Refused(kind) => {
                    Settled::Refused(kind.name().as_bytes().to_vec())
                }
                introspection::Verdict::Unusable(why) => Settled::Unavailable(why),
            },
            Purpose::TokenExchange => {
                let Some(config) = self.policy(env).upstream_token.as_ref() else {
                    return Settled::Unavailable("no upstream_token configured".into());
                };
                match token_exchange::read(&answer, config, &provider.issuer, env.now_ms) {
                    token_exchange::Verdict::Issued { token, until_ms } => {
                        let mut payload = until_ms.to_string().into_bytes();
                        payload.push(b'\n');
                        payload.extend(token.into_bytes());
                        Settled::Ready(payload)
                    }
                    token_exchange::Verdict::Refused(why) => Settled::Refused(why.into_bytes()),
                    token_exchange::Verdict::Unavailable(why) => Settled::Unavailable(why),
                }
            }
        }
    }

    /// The request goes on with what the authorization server said.
    pub(super) fn settle(&mut self, env: &mut Env, pending: Pending, settled: Settled) -> Output {
        let mut effects = Vec::new();
        if let Settled::Unavailable(why) = &settled {
            effects.push(Effect::Count(
                Counter::AuthorizationServer(pending.purpose, CallEvent::Failed),
                1,
            ));
            effects.push(Effect::Log(
                Level::Warn,
                format!(
                    "mcp_authz: {} at issuer {} failed: {why}",
                    pending.purpose.name(),
                    self.policy(env).providers[pending.provider].issuer
                ),
            ));
        }
        let mut output = match pending.job {
            Job::Introspect { expect } => {
                self.settle_introspection(env, pending.provider, expect, settled)
            }
            Job::Exchange(forward) => self.settle_exchange(env, *forward, settled),
        };
        effects.append(&mut output.effects);
        output.effects = effects;
        output
    }

    /// Introspection's verdict: the claims it accepted become the caller
    /// (then the body is read); a refusal or no answer refuses the request.
    fn settle_introspection(
        &mut self,
        env: &mut Env,
        provider: usize,
        expect: Expect,
        settled: Settled,
    ) -> Output {
        self.stage = Stage::AwaitingKeys;
        match settled {
            Settled::Ready(payload) => {
                let claims =
                    payload_body(&payload).and_then(|b| match crate::json::parse_strict(b) {
                        Ok(Value::Object(map)) => Some(map),
                        _ => None,
                    });
                let now_s = env.now_ms / 1000;
                match claims
                    .map(|c| gate::introspected(self.policy(env), &self.head, provider, &c, now_s))
                {
                    Some(Ok((identity, proof))) => {
                        self.verified(env, Rc::new(identity), proof, Vec::new(), expect)
                    }
                    Some(Err(refusal)) => self.refuse(env, *refusal, None),
                    None => self.refuse(
                        env,
                        gate::introspection_unavailable("unreadable shared answer".into()),
                        None,
                    ),
                }
            }
            Settled::Refused(payload) => {
                let kind = refused_kind(&payload);
                let refusal = gate::token_refused(self.policy(env), &self.head, kind);
                self.refuse(env, refusal, None)
            }
            Settled::Unavailable(why) => {
                self.refuse(env, gate::introspection_unavailable(why), None)
            }
        }
    }

    /// The exchange's verdict: the request goes upstream with the token
    /// issued for it; without one it is refused (502, or 503 when the
    /// authorization server could not be reached).
    fn settle_exchange(&mut self, env: &mut Env, forward: Forward, settled: Settled) -> Output {
        let audience = self
            .policy(env)
            .upstream_token
            .as_ref()
            .map_or(String::new(), |u| {
                u.audience
                    .clone()
                    .or(u.resource.clone())
                    .unwrap_or_default()
            });
        match settled {
            Settled::Ready(payload) => {
                match payload_body(&payload).and_then(|b| std::str::from_utf8(b).ok()) {
                    Some(token) => self.finish_forward(env, forward, Some(token)),
                    None => self.refuse_forward(
                        env,
                        forward,
                        gate::upstream_token_unavailable(
                            false,
                            format!("exchange for {audience}: unreadable shared answer"),
                        ),
                    ),
                }
            }
            Settled::Refused(why) => self.refuse_forward(
                env,
                forward,
                gate::upstream_token_unavailable(
                    false,
                    format!(
                        "exchange for {audience} refused: {}",
                        String::from_utf8_lossy(&why)
                    ),
                ),
            ),
            Settled::Unavailable(why) => self.refuse_forward(
                env,
                forward,
                gate::upstream_token_unavailable(true, format!("exchange for {audience}: {why}")),
            ),
        }
    }
}

pub(super) fn publish(env: &mut Env, purpose: Purpose, digest: &Digest, settled: &Settled) {
    let now = env.now_ms;
    let outcome = match settled {
        Settled::Ready(payload) => Shared::Ready {
            until_ms: payload_until(payload).unwrap_or(now),
            payload: payload.clone(),
        },
        Settled::Refused(payload) => Shared::Refused {
            payload: payload.clone(),
            until_ms: now + introspection::NEGATIVE_CACHE_MS,
        },
        Settled::Unavailable(_) => Shared::Failed {
            until_ms: now + server::FAILURE_MEMORY_MS,
        },
    };
    shared::publish(env.host.shared_data(), purpose, digest, outcome, now);
}

/// A ready payload: `<until_ms>\n<body>`.
fn payload_until(payload: &[u8]) -> Option<u64> {
    let end = payload.iter().position(|b| *b == b'\n')?;
    std::str::from_utf8(&payload[..end]).ok()?.parse().ok()
}

fn payload_body(payload: &[u8]) -> Option<&[u8]> {
    let end = payload.iter().position(|b| *b == b'\n')?;
    Some(&payload[end + 1..])
}

/// The class of a shared introspection refusal.
fn refused_kind(payload: &[u8]) -> TokenErrorKind {
    const KINDS: [TokenErrorKind; 7] = [
        TokenErrorKind::Inactive,
        TokenErrorKind::Audience,
        TokenErrorKind::Issuer,
        TokenErrorKind::Expired,
        TokenErrorKind::NotYetValid,
        TokenErrorKind::TokenType,
        TokenErrorKind::Malformed,
    ];
    KINDS
        .into_iter()
        .find(|k| k.name().as_bytes() == payload)
        .unwrap_or(TokenErrorKind::Inactive)
}
