//! The step "ask the authorization server, and resume with its answer":
//! introspecting an opaque token before the body is read, and exchanging
//! the caller's token for the upstream's after the verdict. While it runs,
//! the request is held like during a key wait: every callback answers
//! hold, and only a usable answer lets the request go on.
//!
//! One token's answer is shared by every request and worker of the proxy
//! (`authorization_server::shared`): a request finds it cached, waits for
//! the call another request made, or makes the call itself (discovering the
//! endpoint first when none is configured).

use super::output::{Action, Effect, Level, Output};
use super::{Env, Exchange, Forward, Stage};
use crate::authorization_server::client_auth::Assertion;
use crate::authorization_server::shared::{self, Digest, Lookup, Outcome as Shared};
use crate::authorization_server::{
    self as server, introspection, token_exchange, CallAnswer, Purpose,
};
use crate::config::{Endpoint, Policy};
use crate::counters::{CallEvent, Counter};
use crate::gate::Expect;
use crate::token;

mod settle;

use settle::{publish, Settled};

/// A request's business with the authorization server.
pub(super) struct Pending {
    purpose: Purpose,
    /// The provider whose authorization server is asked.
    provider: usize,
    /// The token's slot in the shared table (`None`: not shared, e.g.
    /// exchange with `cache: false`).
    digest: Option<Digest>,
    /// This request claimed the call: it publishes the answer.
    claimed: bool,
    step: Step,
    pub(super) job: Job,
}

/// What the answer is for.
pub(super) enum Job {
    /// The token's verdict, then the body (read with this expectation).
    Introspect { expect: Expect },
    /// The upstream's token, then the request goes on as decided.
    Exchange(Box<Forward>),
}

enum Step {
    /// Fetching the n-th metadata document, for the endpoint.
    Discover(usize),
    /// The call is under way.
    Call,
    /// Another request's call for the same token is under way.
    Wait { deadline_ms: u64 },
}

impl Exchange {
    /// Starts asking the authorization server for `job`.
    pub(super) fn ask_authorization_server(
        &mut self,
        env: &mut Env,
        purpose: Purpose,
        provider: usize,
        job: Job,
    ) -> Output {
        let token = self.access_token().unwrap_or_default();
        // What the answer depends on besides the token: a listener that
        // accepts other audiences, or asks another client or endpoint, has
        // answers of its own (a refusal for want of its audience must not
        // refuse the token where that audience is accepted).
        let provider_config = &self.policy(env).providers[provider];
        let digest = match purpose {
            Purpose::Introspection => provider_config.introspection.as_ref().map(|c| {
                let audiences =
                    serde_json::to_string(&provider_config.audiences).unwrap_or_default();
                Digest::of(
                    &env.host.digest_key(),
                    purpose,
                    &[
                        &provider_config.issuer,
                        &audiences,
                        &c.client.id,
                        &c.endpoint.cluster,
                        &token,
                    ],
                )
            }),
            Purpose::TokenExchange => self.policy(env).upstream_token.as_ref().and_then(|u| {
                u.cache.then(|| {
                    Digest::of(
                        &env.host.digest_key(),
                        purpose,
                        &[
                            &provider_config.issuer,
                            &u.client.id,
                            &u.endpoint.cluster,
                            u.audience.as_deref().unwrap_or_default(),
                            u.resource.as_deref().unwrap_or_default(),
                            u.scope.as_deref().unwrap_or_default(),
                            &token,
                        ],
                    )
                })
            }),
        };
        let pending = Pending {
            purpose,
            provider,
            digest,
            claimed: false,
            step: Step::Call,
            job,
        };
        self.look_up_or_call(env, pending, false)
    }

    /// The answer to this request's call: `None` when it failed (could not
    /// start, timed out, reset). [`Action::Continue`] means "resume".
    pub fn on_authorization_server_answer(
        &mut self,
        env: &mut Env,
        answer: Option<CallAnswer>,
    ) -> Output {
        let mut pending = match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::AuthorizationServer(pending) => *pending,
            other => {
                // Not waiting for a call any more (refused meanwhile): the
                // answer still serves the requests waiting for it.
                self.stage = other;
                if let Some(orphan) = self.orphan.take() {
                    self.share_orphan_answer(env, *orphan, answer);
                }
                return self.request_action();
            }
        };
        match pending.step {
            Step::Discover(i) => self.discovered(env, pending, i, answer),
            Step::Call => {
                let settled = self.read_answer(env, &pending, answer);
                if let Some(digest) = pending.digest.filter(|_| pending.claimed) {
                    publish(env, pending.purpose, &digest, &settled);
                }
                pending.claimed = false;
                self.settle(env, pending, settled)
            }
            Step::Wait { .. } => {
                self.stage = Stage::AuthorizationServer(Box::new(pending));
                Output::hold()
            }
        }
    }

    fn share_orphan_answer(&mut self, env: &mut Env, pending: Pending, answer: Option<CallAnswer>) {
        let Some(digest) = pending.digest.filter(|_| pending.claimed) else {
            return;
        };
        if matches!(pending.step, Step::Call) {
            let settled = self.read_answer(env, &pending, answer);
            publish(env, pending.purpose, &digest, &settled);
        } else {
            release(env, &pending);
        }
    }

    /// The stream is over (answered, or reset by the client): a call it
    /// claimed and will never publish is given back at once, so the requests
    /// waiting for it do not wait for its whole lease.
    pub fn on_stream_done(&mut self, env: &mut Env) {
        if let Stage::AuthorizationServer(pending) = &self.stage {
            release(env, pending);
            self.stage = Stage::Answered;
        }
        if let Some(orphan) = self.orphan.take() {
            release(env, &orphan);
        }
    }

    /// Whether [`Exchange::on_stream_done`] has anything to give back: the
    /// host skips the call (and its clock and key look-ups) when not.
    pub fn has_work_at_stream_end(&self) -> bool {
        matches!(self.stage, Stage::AuthorizationServer(_)) || self.orphan.is_some()
    }

    /// A waiting request looks again at the shared answer (the host calls
    /// this while the request waits for another's call).
    pub fn on_authorization_server_wait(&mut self, env: &mut Env) -> Output {
        match std::mem::replace(&mut self.stage, Stage::Start) {
            Stage::AuthorizationServer(pending) if matches!(pending.step, Step::Wait { .. }) => {
                self.look_up_or_call(env, *pending, true)
            }
            other => {
                self.stage = other;
                Output::hold()
            }
        }
    }

    fn look_up_or_call(&mut self, env: &mut Env, mut pending: Pending, waited: bool) -> Output {
        let name = pending.purpose.name();
        let Some(digest) = pending.digest else {
            return self.call(env, pending);
        };
        let endpoint = endpoint_of(self.policy(env), &pending).clone();
        let lease_ms = endpoint.timeout_ms * 3 + 1000;
        let found = shared::look_up(
            env.host.shared_data(),
            pending.purpose,
            &digest,
            env.now_ms,
            lease_ms,
        );
        let purpose = pending.purpose;
        let count = move |event| Effect::Count(Counter::AuthorizationServer(purpose, event), 1);
        let mut output = match found {
            Lookup::Ready(payload) => {
                let hit = count(CallEvent::CacheHit);
                let mut output = self.settle(env, pending, Settled::Ready(payload));
                output.effects.insert(0, hit);
                return output;
            }
            Lookup::Refused(payload) => {
                let hit = count(CallEvent::CacheHit);
                let mut output = self.settle(env, pending, Settled::Refused(payload));
                output.effects.insert(0, hit);
                return output;
            }
            Lookup::Failed => {
                return self.settle(
                    env,
                    pending,
                    Settled::Unavailable("the last call failed a moment ago".into()),
                )
            }
            Lookup::Pending => {
                let deadline_ms = match pending.step {
                    Step::Wait { deadline_ms } => deadline_ms,
                    _ => env.now_ms + lease_ms + endpoint.timeout_ms + 500,
                };
                if env.now_ms >= deadline_ms {
                    return self.settle(
                        env,
                        pending,
                        Settled::Unavailable("waited too long for another request's call".into()),
                    );
                }
                let first = !matches!(pending.step, Step::Wait { .. });
                pending.step = Step::Wait { deadline_ms };
                self.stage = Stage::AuthorizationServer(Box::new(pending));
                let mut effects = Vec::new();
                if first {
                    effects.push(count(CallEvent::Wait));
                }
                effects.push(Effect::AwaitAuthorizationServer);
                return Output {
                    effects,
                    action: Action::Hold,
                };
            }
            Lookup::Claimed => {
                pending.claimed = true;
                self.call(env, pending)
            }
            Lookup::Unshared => self.call(env, pending),
        };
        if waited {
            // The call it waited for was abandoned; this request now makes
            // its own.
            output.effects.insert(
                0,
                Effect::Log(
                    Level::Info,
                    format!("mcp_authz: {name} call of another request lapsed; calling again"),
                ),
            );
        }
        output
    }

    /// Makes the call (or, without a known endpoint, the first discovery
    /// call).
    fn call(&mut self, env: &mut Env, mut pending: Pending) -> Output {
        let purpose = pending.purpose;
        let count = move |event| Effect::Count(Counter::AuthorizationServer(purpose, event), 1);
        if env.host.calls_in_flight() >= server::MAX_CALLS_IN_FLIGHT {
            let busy = count(CallEvent::Busy);
            release(env, &pending);
            pending.claimed = false;
            let mut output = self.settle(
                env,
                pending,
                Settled::Unavailable("too many calls in flight".into()),
            );
            output.effects.insert(0, busy);
            return output;
        }
        let issuer = self.policy(env).providers[pending.provider].issuer.clone();
        let endpoint = endpoint_of(self.policy(env), &pending).clone();
        let url = endpoint.url.clone().or_else(|| {
            shared::endpoint(
                env.host.shared_data(),
                pending.purpose,
                &issuer,
                &endpoint.cluster,
            )
        });
        let Some(url) = url else {
            return self.discover(env, pending, 0);
        };
        let token = self.access_token().unwrap_or_default();
        let jti = jti(env, purpose);
        let assertion = Assertion {
            audience: &issuer,
            now_s: env.now_ms / 1000,
            jti: &jti,
        };
        let call = match pending.purpose {
            Purpose::Introspection => self.policy(env).providers[pending.provider]
                .introspection
                .as_ref()
                .and_then(|c| introspection::request(c, &url, &token, &assertion)),
            Purpose::TokenExchange => self
                .policy(env)
                .upstream_token
                .as_ref()
                .and_then(|c| token_exchange::request(c, &url, &token, &assertion)),
        };
        let Some(call) = call else {
            let why = format!("cannot call {url:?}");
            return self.fail_call(env, pending, why);
        };
        pending.step = Step::Call;
        self.stage = Stage::AuthorizationServer(Box::new(pending));
        Output {
            effects: vec![
                count(CallEvent::Call),
                Effect::CallAuthorizationServer(call),
            ],
            action: Action::Hold,
        }
    }

    fn discover(&mut self, env: &mut Env, mut pending: Pending, i: usize) -> Output {
        let issuer = &self.policy(env).providers[pending.provider].issuer;
        match server::metadata_request(endpoint_of(self.policy(env), &pending), issuer, i) {
            Some(call) => {
                pending.step = Step::Discover(i);
                self.stage = Stage::AuthorizationServer(Box::new(pending));
                Output {
                    effects: vec![Effect::CallAuthorizationServer(call)],
                    action: Action::Hold,
                }
            }
            None => {
                let why = format!(
                    "no usable metadata names the {} of issuer {issuer}",
                    pending.purpose.metadata_field()
                );
                self.fail_call(env, pending, why)
            }
        }
    }

    fn discovered(
        &mut self,
        env: &mut Env,
        pending: Pending,
        i: usize,
        answer: Option<CallAnswer>,
    ) -> Output {
        let issuer = self.policy(env).providers[pending.provider].issuer.clone();
        let found = match &answer {
            Some(answer) => server::discovered_endpoint(answer, &issuer, pending.purpose),
            None => Err("no answer".into()),
        };
        match found {
            Ok(url) => {
                let cluster = endpoint_of(self.policy(env), &pending).cluster.clone();
                shared::remember_endpoint(
                    env.host.shared_data(),
                    pending.purpose,
                    &issuer,
                    &cluster,
                    &url,
                );
                self.call(env, pending)
            }
            Err(why) => {
                let mut output = self.discover(env, pending, i + 1);
                output.effects.insert(
                    0,
                    Effect::Log(
                        Level::Warn,
                        format!("mcp_authz: metadata of issuer {issuer} (document {i}): {why}"),
                    ),
                );
                output
            }
        }
    }

    /// The call could not be made or answered: shared as a failure, so the
    /// requests waiting on it get their answer now.
    fn fail_call(&mut self, env: &mut Env, mut pending: Pending, why: String) -> Output {
        let settled = Settled::Unavailable(why);
        if let Some(digest) = pending.digest.filter(|_| pending.claimed) {
            publish(env, pending.purpose, &digest, &settled);
        }
        pending.claimed = false;
        self.settle(env, pending, settled)
    }

    /// The caller's access token, either scheme (checked before any call is
    /// made).
    fn access_token(&self) -> Option<String> {
        token::credentials(&self.head.header_values("authorization"))
            .ok()
            .map(|(_, token)| token.to_string())
    }
}

/// A `jti` for a client assertion that no other call of this proxy uses: a
/// keyed digest of the time and a count.
fn jti(env: &Env, purpose: Purpose) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    Digest::of(
        &env.host.digest_key(),
        purpose,
        &["jti", &env.now_ms.to_string(), &n.to_string()],
    )
    .text()
}

/// The endpoint the call of `pending` goes to.
fn endpoint_of<'a>(policy: &'a Policy, pending: &Pending) -> &'a Endpoint {
    match pending.purpose {
        Purpose::Introspection => policy.providers[pending.provider]
            .introspection
            .as_ref()
            .map(|c| &c.endpoint),
        Purpose::TokenExchange => policy.upstream_token.as_ref().map(|c| &c.endpoint),
    }
    .unwrap_or(&FALLBACK)
}

/// Never used: the machine only asks for a purpose that is configured.
static FALLBACK: Endpoint = Endpoint {
    cluster: String::new(),
    url: None,
    timeout_ms: 1,
};

/// Gives a claimed call back without an answer (it was never made).
fn release(env: &mut Env, pending: &Pending) {
    if let Some(digest) = pending.digest.filter(|_| pending.claimed) {
        shared::publish(
            env.host.shared_data(),
            pending.purpose,
            &digest,
            Shared::Released,
            env.now_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Policy;
    use crate::dpop::proof::tests::{claims as proof_claims, ClientKey};
    use crate::dpop::proof::token_hash;
    use crate::dpop::Mode as DpopMode;
    use crate::exchange::Host;
    use crate::gate::{KeyRing, RequestHead};
    use crate::mcp::param_headers::ParamHeader;
    use crate::shared_data::{SharedData, SharedMap};
    use crate::token::TokenErrorKind;
    use crate::token_cache::VerifiedTokenCache;
    use serde_json::Value;

    struct TestHost {
        shared: SharedMap,
        /// The request body Envoy holds.
        body: Vec<u8>,
    }

    impl Host for TestHost {
        fn shared_data(&mut self) -> &mut dyn SharedData {
            &mut self.shared
        }
        fn request_body(&self, len: usize) -> Vec<u8> {
            self.body[..len.min(self.body.len())].to_vec()
        }
        fn response_body(&self, _len: usize) -> Vec<u8> {
            Vec::new()
        }
        fn fetch_keys(&mut self, _provider: usize) {}
        fn refetch_keys(&mut self, _provider: usize) -> bool {
            false
        }
        fn calls_in_flight(&self) -> usize {
            0
        }
        fn digest_key(&self) -> [u8; 32] {
            [3; 32]
        }
        fn tool_headers(&self, _tool: &str) -> Option<Vec<ParamHeader>> {
            None
        }
    }

    const ISS: &str = "https://idp.example.com";
    const NOW_MS: u64 = 1_750_000_000_000;

    fn policy(resource: &str) -> Policy {
        Policy::from_value(&json!({
            "resource": resource,
            "providers": [{"issuer": ISS, "introspection": {"cluster": "idp",
                "url": "https://idp.example.com/introspect", "client_id": "gw", "client_secret": "s"}}],
            "rules": [{"effect": "allow", "methods": ["*"]}]
        }))
        .expect("policy")
    }

    /// Drives one request, `head` then `body` (none when empty), through
    /// `policy`'s listener; the introspection call, if one is made, answered
    /// with `claims`. Every effect, in order.
    fn run(
        policy: &Policy,
        host: &mut TestHost,
        head: RequestHead,
        body: &[u8],
        claims: &Value,
    ) -> Vec<Effect> {
        let gateway = crate::config::Gateway::single(policy.clone());
        run_at(&gateway, host, head, body, claims)
    }

    /// [`run`] through a configuration of several servers.
    fn run_at(
        gateway: &crate::config::Gateway,
        host: &mut TestHost,
        head: RequestHead,
        body: &[u8],
        claims: &Value,
    ) -> Vec<Effect> {
        let ring = KeyRing {
            sets: vec![None],
            generations: vec![0],
        };
        host.body = body.to_vec();
        let mut cache = VerifiedTokenCache::new(0);
        let mut env = Env {
            gateway,
            keys: &ring,
            cache: &mut cache,
            now_ms: NOW_MS,
            host,
        };
        let mut exchange = Exchange::new();
        let mut effects = exchange
            .on_request_headers(&mut env, head, body.is_empty())
            .effects;
        if effects
            .iter()
            .any(|e| matches!(e, Effect::CallAuthorizationServer(_)))
        {
            let answer = CallAnswer {
                status: 200,
                content_types: vec!["application/json".into()],
                content_encodings: Vec::new(),
                body: claims.to_string().into_bytes(),
            };
            effects.extend(
                exchange
                    .on_authorization_server_answer(&mut env, Some(answer))
                    .effects,
            );
        }
        if !body.is_empty() {
            effects.extend(exchange.on_request_body(&mut env, body.len(), true).effects);
        }
        effects
    }

    /// The status the filter answered, or 200 when it let the request on.
    fn status_of(effects: &[Effect]) -> u32 {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::SendAnswer(a) => Some(a.status),
                _ => None,
            })
            .unwrap_or(200)
    }

    /// A GET to `policy`'s listener with `token`; the introspection call,
    /// if one is made, answered with `aud`. The status answered, or 200.
    fn get(policy: &Policy, host: &mut TestHost, token: &str, aud: &str) -> u32 {
        let head = RequestHead::new(
            "GET",
            "/mcp",
            vec![("authorization".into(), format!("Bearer {token}"))],
        );
        let claims = json!({"active": true, "iss": ISS, "aud": aud, "exp": NOW_MS / 1000 + 300});
        status_of(&run(policy, host, head, b"", &claims))
    }

    /// A POST of `tools/list` with `token` as DPoP and `proofs`, to a
    /// provider with `dpop: allowed`; the introspection call, if made,
    /// answered with `claims`. Every effect.
    fn dpop_post(host: &mut TestHost, token: &str, proofs: &[&str], claims: &Value) -> Vec<Effect> {
        post_with(
            host,
            DpopMode::Allowed,
            &format!("DPoP {token}"),
            proofs,
            claims,
        )
    }

    /// A POST of `tools/list` with `authorization` and `proofs`, to a
    /// provider whose `dpop` is `mode`; the introspection call, if made,
    /// answered with `claims`. Every effect.
    fn post_with(
        host: &mut TestHost,
        mode: DpopMode,
        authorization: &str,
        proofs: &[&str],
        claims: &Value,
    ) -> Vec<Effect> {
        let mut policy = policy("https://mcp.example.com/mcp");
        policy.providers[0].dpop.mode = mode;
        let mut headers = vec![
            ("authorization".to_string(), authorization.to_string()),
            ("content-type".to_string(), "application/json".to_string()),
        ];
        headers.extend(proofs.iter().map(|p| ("dpop".to_string(), p.to_string())));
        let head = RequestHead::new("POST", "/mcp", headers);
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        run(&policy, host, head, body, claims)
    }

    /// A request that goes away while its introspection call is out has
    /// work at stream end: giving the claimed call back lets the next request
    /// for the same token call at once instead of waiting out the lease. A
    /// request whose answer came has none (the host then skips the call).
    #[test]
    fn a_request_gone_with_its_call_out_gives_the_call_back() {
        let gateway = crate::config::Gateway::single(policy("https://mcp.example.com/mcp"));
        let ring = KeyRing {
            sets: vec![None],
            generations: vec![0],
        };
        let head = || {
            RequestHead::new(
                "GET",
                "/mcp",
                vec![("authorization".into(), "Bearer opaque-1".into())],
            )
        };
        let calls = |effects: &[Effect]| {
            effects
                .iter()
                .filter(|e| matches!(e, Effect::CallAuthorizationServer(_)))
                .count()
        };
        let claims = json!({"active": true, "iss": ISS, "aud": "https://mcp.example.com/mcp", "exp": NOW_MS / 1000 + 300});
        // (the first request goes away before its answer, it is answered)
        for (gone, answered) in [(false, false), (true, false), (false, true)] {
            let mut host = TestHost {
                shared: SharedMap::default(),
                body: Vec::new(),
            };
            shared::prepare(&mut host.shared, Purpose::Introspection);
            let mut cache = VerifiedTokenCache::new(0);
            let mut env = Env {
                gateway: &gateway,
                keys: &ring,
                cache: &mut cache,
                now_ms: NOW_MS,
                host: &mut host,
            };
            let mut first = Exchange::new();
            assert!(!first.has_work_at_stream_end());
            let out = first.on_request_headers(&mut env, head(), true);
            assert_eq!(calls(&out.effects), 1);
            assert!(first.has_work_at_stream_end());
            if answered {
                let answer = CallAnswer {
                    status: 200,
                    content_types: vec!["application/json".into()],
                    content_encodings: Vec::new(),
                    body: claims.to_string().into_bytes(),
                };
                first.on_authorization_server_answer(&mut env, Some(answer));
                assert!(!first.has_work_at_stream_end(), "nothing left to give back");
                continue;
            }
            if gone {
                first.on_stream_done(&mut env);
                assert!(!first.has_work_at_stream_end());
            }
            let second = Exchange::new().on_request_headers(&mut env, head(), true);
            assert_eq!(calls(&second.effects), usize::from(gone), "gone: {gone}");
        }
    }

    #[test]
    fn an_introspected_dpop_bound_token_passes_with_a_fresh_proof_once() {
        let mut host = dpop_host();
        let key = ClientKey::es256(41);
        let token = "opaque-bound-1";
        let proof = |jti: &str| proof_by(&key, token, jti);
        let answer = active_answer(Some(&key));
        let first = dpop_post(&mut host, token, &[&proof("p1")], &answer);
        assert_eq!(status_of(&first), 200, "{first:?}");
        assert!(first
            .iter()
            .any(|e| matches!(e, Effect::Count(Counter::DpopAccepted, 1))));
        // The shared answer is reused: the proof is still checked, and a
        // proof taken before is a replay.
        let again = dpop_post(&mut host, token, &[&proof("p1")], &answer);
        assert_eq!(status_of(&again), 401, "{again:?}");
        assert!(again.iter().any(|e| matches!(
            e,
            Effect::Count(
                Counter::AuthorizationServer(Purpose::Introspection, CallEvent::CacheHit),
                1
            )
        )));
        assert_eq!(status_of(&dpop_post(&mut host, token, &[], &answer)), 401);
        assert_eq!(
            status_of(&dpop_post(&mut host, token, &[&proof("p2")], &answer)),
            200
        );
    }

    /// A host with shared data as Envoy has it: introspection's slots and
    /// the DPoP replay memory.
    fn dpop_host() -> TestHost {
        let mut host = TestHost {
            shared: SharedMap::default(),
            body: Vec::new(),
        };
        shared::prepare(&mut host.shared, Purpose::Introspection);
        crate::dpop::replay::prepare(&mut host.shared, [5; 32]);
        host
    }

    /// A proof by `key` for the POST to the listener, for `token`.
    fn proof_by(key: &ClientKey, token: &str, jti: &str) -> String {
        let mut c = proof_claims(jti);
        c["ath"] = json!(token_hash(token));
        c["iat"] = json!(NOW_MS / 1000);
        key.sign(&key.header(), &c)
    }

    /// An active introspection answer for the listener, bound to `key`'s
    /// thumbprint when given.
    fn active_answer(key: Option<&ClientKey>) -> Value {
        let mut answer = json!({"active": true, "iss": ISS, "aud": "https://mcp.example.com/mcp",
            "exp": NOW_MS / 1000 + 300, "token_type": "Bearer"});
        if let Some(key) = key {
            answer["token_type"] = json!("DPoP");
            answer["cnf"] = json!({"jkt": key.jkt()});
        }
        answer
    }

    /// The first challenge of a refusal among `effects`, if any.
    fn challenge(effects: &[Effect]) -> Option<String> {
        effects.iter().find_map(|e| match e {
            Effect::SendAnswer(a) => a
                .headers
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.clone()),
            _ => None,
        })
    }

    fn counted(effects: &[Effect], counter: Counter) -> bool {
        effects
            .iter()
            .any(|e| matches!(e, Effect::Count(c, 1) if *c == counter))
    }

    #[test]
    fn an_introspected_dpop_bound_token_is_refused_without_its_key_or_as_bearer() {
        let key = ClientKey::es256(42);
        let other = ClientKey::es256(43);
        let bound = active_answer(Some(&key));
        for mode in [DpopMode::Allowed, DpopMode::Required] {
            let mut host = dpop_host();
            let token = format!("opaque-bound-{}", mode.name());
            let mut send = |proofs: &[&str]| {
                post_with(&mut host, mode, &format!("DPoP {token}"), proofs, &bound)
            };
            // A proof by another key: the token is not bound to it.
            let effects = send(&[&proof_by(&other, &token, "o1")]);
            assert_eq!(status_of(&effects), 401, "{mode:?} {effects:?}");
            assert!(counted(
                &effects,
                Counter::InvalidToken(TokenErrorKind::KeyBinding)
            ));
            assert!(
                challenge(&effects).is_some_and(|c| c.starts_with("DPoP error=\"invalid_token\""))
            );
            // No proof at all.
            let effects = send(&[]);
            assert_eq!(status_of(&effects), 401, "{mode:?}");
            assert!(counted(
                &effects,
                Counter::InvalidDpopProof(crate::dpop::ProofErrorKind::Missing)
            ));
            // The proof of the right key: the (shared) answer is good.
            let effects = send(&[&proof_by(&key, &token, "k1")]);
            assert_eq!(status_of(&effects), 200, "{mode:?} {effects:?}");
        }
        // Sent as a bearer token, even with a good proof alongside: the
        // downgrade, refused once the answer names the key.
        let mut host = dpop_host();
        let token = "opaque-bound-bearer";
        let effects = post_with(
            &mut host,
            DpopMode::Allowed,
            &format!("Bearer {token}"),
            &[&proof_by(&key, token, "b1")],
            &bound,
        );
        assert_eq!(status_of(&effects), 401, "{effects:?}");
        assert!(counted(
            &effects,
            Counter::InvalidToken(TokenErrorKind::DpopBound)
        ));
        assert!(counted(
            &effects,
            Counter::AuthorizationServer(Purpose::Introspection, CallEvent::Call)
        ));
        // Where `dpop` is required, a bearer token is refused before any
        // call.
        let effects = post_with(
            &mut host,
            DpopMode::Required,
            &format!("Bearer {token}-2"),
            &[],
            &bound,
        );
        assert_eq!(status_of(&effects), 401);
        assert!(counted(
            &effects,
            Counter::InvalidToken(TokenErrorKind::Scheme)
        ));
        assert!(!effects
            .iter()
            .any(|e| matches!(e, Effect::CallAuthorizationServer(_))));
    }

    #[test]
    fn where_dpop_is_required_an_introspected_token_without_cnf_is_refused() {
        let key = ClientKey::es256(44);
        let mut host = dpop_host();
        let token = "opaque-unbound";
        let proof = proof_by(&key, token, "u1");
        let unbound = active_answer(None);
        // The DPoP scheme and a valid proof, but the token is bound to no
        // key: nothing ties the proof to it.
        for mode in [DpopMode::Required, DpopMode::Allowed] {
            let effects = post_with(
                &mut host,
                mode,
                &format!("DPoP {token}"),
                &[&proof],
                &unbound,
            );
            assert_eq!(status_of(&effects), 401, "{mode:?} {effects:?}");
            assert!(counted(
                &effects,
                Counter::InvalidToken(TokenErrorKind::KeyBinding)
            ));
        }
        // Where DPoP is only allowed, the same token as a bearer token passes.
        let effects = post_with(
            &mut host,
            DpopMode::Allowed,
            &format!("Bearer {token}"),
            &[],
            &unbound,
        );
        assert_eq!(status_of(&effects), 200, "{effects:?}");
    }

    #[test]
    fn conditions_and_the_scope_hierarchy_read_introspected_claims() {
        let policy = Policy::from_value(&json!({
            "resource": "https://mcp.example.com/mcp",
            "providers": [{"issuer": ISS, "introspection": {"cluster": "idp",
                "url": "https://idp.example.com/introspect", "client_id": "gw", "client_secret": "s"}}],
            "scope_implies": {"mcp:write": ["mcp:read"]},
            "rules": [{"effect": "allow", "methods": ["tools/list"],
                "when": "token.claims.tenant == 'acme' && 'mcp:read' in token.scopes && token.sub == 'alice'"}]
        }))
        .expect("policy");
        for (tenant, status) in [("acme", 200), ("globex", 403)] {
            let mut host = dpop_host();
            let mut answer = active_answer(None);
            answer["tenant"] = json!(tenant);
            answer["scope"] = json!("mcp:write");
            answer["sub"] = json!("alice");
            let head = RequestHead::new(
                "POST",
                "/mcp",
                vec![
                    ("authorization".into(), format!("Bearer opaque-{tenant}")),
                    ("content-type".into(), "application/json".into()),
                ],
            );
            let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
            let effects = run(&policy, &mut host, head, body, &answer);
            assert_eq!(status_of(&effects), status, "{tenant}: {effects:?}");
            assert!(!counted(&effects, Counter::ConditionError), "{tenant}");
        }
    }

    #[test]
    fn listeners_with_other_audiences_never_share_a_refusal() {
        let mut host = TestHost {
            shared: SharedMap::default(),
            body: Vec::new(),
        };
        shared::prepare(&mut host.shared, Purpose::Introspection);
        let (a, b) = (
            policy("https://a.example/mcp"),
            policy("https://b.example/mcp"),
        );
        // The token is for A: B refuses it, and must not make A refuse it.
        assert_eq!(get(&b, &mut host, "tok", "https://a.example/mcp"), 401);
        assert_eq!(get(&a, &mut host, "tok", "https://a.example/mcp"), 200);
        // And A's acceptance is no acceptance at B.
        assert_eq!(get(&b, &mut host, "tok", "https://a.example/mcp"), 401);
    }

    #[test]
    fn an_introspected_token_for_one_server_is_refused_at_another() {
        let server = |name: &str| {
            json!({"name": name, "match": {"path_prefix": format!("/{name}")},
                   "resource": format!("https://gw.example/{name}/mcp"),
                   "rules": [{"effect": "allow", "methods": ["*"]}]})
        };
        let gateway = crate::config::Gateway::from_value(&json!({
            "providers": [{"issuer": ISS, "introspection": {"cluster": "idp",
                "url": "https://idp.example.com/introspect", "client_id": "gw", "client_secret": "s"}}],
            "servers": [server("a"), server("b")]
        }))
        .expect("gateway");
        let mut host = TestHost {
            shared: SharedMap::default(),
            body: Vec::new(),
        };
        shared::prepare(&mut host.shared, Purpose::Introspection);
        let claims = json!({"active": true, "iss": ISS, "aud": "https://gw.example/a/mcp",
                            "exp": NOW_MS / 1000 + 300});
        let mut at = |path: &str| {
            let head = RequestHead::new(
                "GET",
                path,
                vec![("authorization".into(), "Bearer opaque-1".into())],
            );
            status_of(&run_at(&gateway, &mut host, head, b"", &claims))
        };
        assert_eq!(at("/a/mcp"), 200);
        // The answer shared for a is no answer for b.
        assert_eq!(at("/b/mcp"), 401);
        assert_eq!(at("/a/mcp"), 200);
    }
}
