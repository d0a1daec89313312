//! The token step: the access token a request carries (`Authorization:
//! Bearer` or `DPoP`), verified with the provider's keys or left to
//! introspection, the scheme it came with against its binding, and the DPoP
//! proof of a bound token; with the refusals of this step.

use std::rc::Rc;

use super::{Class, Reason, Refusal, RequestHead};
use crate::answer;
use crate::authorization_server::introspection;
use crate::config::{Policy, Provider};
use crate::dpop::{self, Mode as DpopMode, ProofError, ProofErrorKind, Scheme};
use crate::identity::Identity;
use crate::keys::jwks::KeySet;
use crate::token::{self, BearerError, TokenError, TokenErrorKind};
use crate::token_cache::VerifiedTokenCache;

/// The keys the host holds now, per provider, and their generations (a
/// generation changes whenever a provider's key set changes).
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    pub sets: Vec<Option<Rc<KeySet>>>,
    pub generations: Vec<u64>,
}

/// The outcome of checking a request's token.
#[derive(Debug)]
pub enum TokenVerdict {
    /// The token is good (and so is its DPoP proof, when it is bound).
    Verified {
        identity: Rc<Identity>,
        /// It was found in the verified-token cache.
        cached: bool,
        /// The DPoP proof that came with a bound token: its `jti` is still
        /// to be checked against replay.
        proof: Option<dpop::Accepted>,
    },
    /// Refuse the request.
    Refuse(Refusal),
    /// The token named a key the provider's current set lacks: its keys may
    /// be refetched once, then the token is checked again.
    UnknownKey { provider: usize, refusal: Refusal },
    /// The provider's remote keys have never been fetched: wait for them,
    /// then check again or answer 503.
    KeysPending { provider: usize },
    /// The token is the provider's to introspect: an opaque token (the one
    /// provider with `introspection`), or a JWT of an issuer without keys.
    Introspect { provider: usize },
}

/// Checks the access token: exactly one `Authorization: Bearer` or `DPoP`
/// header, a JWT that verifies with the provider's keys (the verified-token
/// cache first), presented with a scheme its provider takes; and for a
/// token bound to a key, the request's DPoP proof, on every request (a
/// cached token needs a proof as much as a new one).
pub fn check_token(
    policy: &Policy,
    head: &RequestHead,
    keys: &KeyRing,
    cache: &mut VerifiedTokenCache,
    now_s: u64,
) -> TokenVerdict {
    let malformed = || {
        TokenVerdict::Refuse(invalid_token(
            policy,
            Scheme::Bearer,
            TokenErrorKind::Malformed,
        ))
    };
    let (scheme, token) = match token::presented(&head.header_values("authorization")) {
        Ok(credentials) => credentials,
        Err(BearerError::Missing) => {
            return TokenVerdict::Refuse(Refusal::new(
                answer::token_required(policy),
                Reason::NoToken,
            ))
        }
        Err(BearerError::Malformed) => return malformed(),
    };
    if let Some(provider) = introspecting_provider(policy, token) {
        if !token::is_b64token(token) {
            return malformed();
        }
        // The scheme is checked before any call: whether the token is bound
        // to a key is only known from the answer (`introspected`).
        return match (scheme, policy.providers[provider].dpop.mode) {
            (Scheme::DPoP, DpopMode::Off) | (Scheme::Bearer, DpopMode::Required) => {
                TokenVerdict::Refuse(invalid_token(policy, scheme, TokenErrorKind::Scheme))
            }
            _ => TokenVerdict::Introspect { provider },
        };
    }
    let (identity, cached) = match cache.get(policy.server_index, token, now_s, &keys.generations) {
        Some(identity) => (identity, true),
        // Only a token that verified is cached, and none verifies outside
        // the b64token alphabet: the alphabet is checked on a miss only.
        None if !token::is_b64token(token) => return malformed(),
        None => match verify(policy, token, scheme, keys, cache, now_s) {
            Ok(identity) => (identity, false),
            Err(verdict) => return *verdict,
        },
    };
    let Some(provider) = policy
        .providers
        .iter()
        .find(|p| p.issuer == identity.issuer)
    else {
        return TokenVerdict::Refuse(invalid_token(policy, scheme, TokenErrorKind::Issuer));
    };
    match check_binding(policy, head, (scheme, token), provider, &identity, now_s) {
        Ok(proof) => TokenVerdict::Verified {
            identity,
            cached,
            proof,
        },
        Err(refusal) => TokenVerdict::Refuse(*refusal),
    }
}

/// The scheme a token came with against its binding and its provider's
/// DPoP mode; for a token bound to a key (`cnf.jkt`, from the JWT or the
/// introspection answer), the request's DPoP proof.
fn check_binding(
    policy: &Policy,
    head: &RequestHead,
    (scheme, token): (Scheme, &str),
    provider: &Provider,
    identity: &Identity,
    now_s: u64,
) -> Result<Option<dpop::Accepted>, Box<Refusal>> {
    let refuse = |kind| Err(Box::new(invalid_token(policy, scheme, kind)));
    let config = &provider.dpop;
    match (scheme, identity.jkt.as_deref(), config.mode) {
        // A bound token without its proof: refused, whatever the mode.
        (Scheme::Bearer, Some(_), _) => refuse(TokenErrorKind::DpopBound),
        (Scheme::Bearer, None, DpopMode::Required) => refuse(TokenErrorKind::Scheme),
        (Scheme::Bearer, None, _) => Ok(None),
        (Scheme::DPoP, _, DpopMode::Off) => refuse(TokenErrorKind::Scheme),
        (Scheme::DPoP, None, _) => refuse(TokenErrorKind::KeyBinding),
        (Scheme::DPoP, Some(jkt), _) => {
            let origin = crate::uri::HttpUri::parse(&policy.resource)
                .map(|u| u.origin())
                .unwrap_or_default();
            let request = dpop::proof::Request {
                method: &head.method,
                path: &head.path,
                resource_origin: &origin,
                token,
                jkt,
                now_s,
            };
            dpop::proof::check(&head.header_values("dpop"), &request, config)
                .map(Some)
                .map_err(|e| Box::new(proof_refusal(policy, e)))
        }
    }
}

/// The caller, from claims introspection accepted (checked again at
/// `now_s`: a shared answer is checked each time it is used), with the
/// scopes its scopes imply; and, for a token bound to a key, the request's
/// DPoP proof, as for a JWT.
pub fn introspected(
    policy: &Policy,
    head: &RequestHead,
    provider: usize,
    claims: &serde_json::Map<String, serde_json::Value>,
    now_s: u64,
) -> Result<(Identity, Option<dpop::Accepted>), Box<Refusal>> {
    // The token was taken from this very header before the call was made.
    let credentials = token::credentials(&head.header_values("authorization")).map_err(|_| {
        Box::new(invalid_token(
            policy,
            Scheme::Bearer,
            TokenErrorKind::Malformed,
        ))
    })?;
    let provider = &policy.providers[provider];
    let mut identity = introspection::identity(claims, provider, now_s)
        .map_err(|kind| Box::new(invalid_token(policy, credentials.0, kind)))?;
    identity.implied_scopes = policy.scope_implies.implied_by(&identity.scopes);
    let proof = check_binding(policy, head, credentials, provider, &identity, now_s)?;
    Ok((identity, proof))
}

/// Verifies a token the cache did not hold, and caches it.
fn verify(
    policy: &Policy,
    token: &str,
    scheme: Scheme,
    keys: &KeyRing,
    cache: &mut VerifiedTokenCache,
    now_s: u64,
) -> Result<Rc<Identity>, Box<TokenVerdict>> {
    let sets: Vec<Option<&KeySet>> = keys.sets.iter().map(Option::as_deref).collect();
    match token::verify(token, &policy.providers, &sets, now_s) {
        Ok(mut identity) => {
            identity.implied_scopes = policy.scope_implies.implied_by(&identity.scopes);
            let identity = Rc::new(identity);
            if let Some(provider) = policy
                .providers
                .iter()
                .position(|p| p.issuer == identity.issuer)
            {
                let generation = keys.generations.get(provider).copied().unwrap_or(0);
                cache.insert(
                    policy.server_index,
                    token,
                    provider,
                    generation,
                    Rc::clone(&identity),
                );
            }
            Ok(identity)
        }
        Err(TokenError {
            kind: TokenErrorKind::KeysUnavailable,
            provider: Some(provider),
        }) => Err(Box::new(TokenVerdict::KeysPending { provider })),
        Err(TokenError {
            kind: TokenErrorKind::UnknownKey,
            provider: Some(provider),
        }) => Err(Box::new(TokenVerdict::UnknownKey {
            provider,
            refusal: invalid_token(policy, scheme, TokenErrorKind::UnknownKey),
        })),
        Err(e) => Err(Box::new(TokenVerdict::Refuse(invalid_token(
            policy, scheme, e.kind,
        )))),
    }
}

/// The refusal of a DPoP proof: `invalid_dpop_proof`, `invalid_token` when
/// the proof's key is not the token's, `use_dpop_nonce` with a new nonce.
pub fn proof_refusal(policy: &Policy, error: ProofError) -> Refusal {
    match (error.kind, error.nonce) {
        (ProofErrorKind::KeyBinding, _) => {
            invalid_token(policy, Scheme::DPoP, TokenErrorKind::KeyBinding)
        }
        (ProofErrorKind::Nonce, Some(nonce)) => {
            Refusal::new(answer::use_dpop_nonce(policy, &nonce), Reason::UseDpopNonce)
        }
        (kind, _) => Refusal::new(
            answer::invalid_dpop_proof(policy, kind.description()),
            Reason::InvalidDpopProof,
        )
        .with_class(Class::Proof(kind)),
    }
}

/// The provider that introspects `token`, if it is one to introspect. A
/// JWT of an issuer with keys keeps the local path; a JWT of an unknown
/// issuer is refused locally, never sent to an authorization server.
fn introspecting_provider(policy: &Policy, token: &str) -> Option<usize> {
    // An oversized token is refused as malformed by verification, before
    // any authorization server sees it.
    if token.len() > token::MAX_TOKEN_BYTES
        || !policy.providers.iter().any(|p| p.introspection.is_some())
    {
        return None;
    }
    match token::shape(token) {
        token::Shape::Opaque => policy
            .providers
            .iter()
            .position(|p| p.introspection.is_some()),
        token::Shape::Jwt { issuer } => {
            let index = policy
                .providers
                .iter()
                .position(|p| Some(p.issuer.as_str()) == issuer.as_deref())?;
            let provider = &policy.providers[index];
            (provider.introspection.is_some() && provider.jwks.is_none()).then_some(index)
        }
    }
}

/// 503: introspection could not tell whether the token is good.
pub fn introspection_unavailable(detail: String) -> Refusal {
    let mut refusal = Refusal::new(
        answer::authorization_server_unavailable(answer::RETRY_AFTER_SECONDS),
        Reason::IntrospectionUnavailable,
    );
    refusal.detail = Some(detail);
    refusal
}

/// 401 for a token introspection refused (the challenge on the scheme the
/// token came with).
pub fn token_refused(policy: &Policy, head: &RequestHead, kind: TokenErrorKind) -> Refusal {
    let scheme = token::credentials(&head.header_values("authorization"))
        .map_or(Scheme::Bearer, |(scheme, _)| scheme);
    invalid_token(policy, scheme, kind)
}

/// 503 once the wait for keys is over and none arrived.
pub fn keys_unavailable() -> Refusal {
    Refusal::new(
        answer::keys_unavailable(answer::RETRY_AFTER_SECONDS),
        Reason::KeysUnavailable,
    )
}

fn invalid_token(policy: &Policy, scheme: Scheme, kind: TokenErrorKind) -> Refusal {
    Refusal::new(
        answer::invalid_token(policy, scheme, kind.description()),
        Reason::InvalidToken,
    )
    .with_class(Class::Token(kind))
}
