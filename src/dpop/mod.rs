//! Sender-constrained access tokens: DPoP (RFC 9449) as the MCP DPoP
//! extension (SEP-1932) profiles it. A token bound to a key (`cnf.jkt`, the
//! key's RFC 7638 thumbprint) is only good with the `DPoP` authorization
//! scheme and, on every request, a fresh proof signed with that key.
//!
//! - [`proof`]: the proof JWT read strictly, every check of RFC 9449 §4.3;
//! - [`thumbprint`]: RFC 7638 thumbprints of the proof's public key;
//! - [`htu`]: the `htu` claim against the request's URI, as RFC 3986
//!   normalises both;
//! - [`nonce`]: stateless server nonces (a MACed timestamp), RFC 9449 §9;
//! - [`replay`]: the proxy's memory of proofs already used (`jti`), in
//!   proxy-wasm shared data.
//!
//! Plain functions over values: "now" is a parameter, shared data is asked
//! of a [`crate::shared_data::SharedData`]. The order they run in is the token step's
//! (`gate::check_token`, then the exchange's replay check).

pub mod htu;
pub mod nonce;
pub mod proof;
pub mod replay;
pub mod thumbprint;

use crate::config::Provider;
use crate::keys::jwks::Algorithm;

pub use nonce::NonceKeys;
pub use proof::{Accepted, ProofError, ProofErrorKind};

/// Whether a provider's tokens may or must be bound with DPoP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Bearer tokens only. A token bound to a key is still refused as a
    /// bearer token: presenting it without a proof is the downgrade attack.
    #[default]
    Off,
    /// Bearer tokens, and DPoP-bound tokens with the `DPoP` scheme and a
    /// proof.
    Allowed,
    /// DPoP-bound tokens with a proof only.
    Required,
}

impl Mode {
    /// The mode's name, as `dpop` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Allowed => "allowed",
            Mode::Required => "required",
        }
    }
}

/// One provider's DPoP settings (`providers[].dpop*`).
#[derive(Debug, Clone)]
pub struct DpopPolicy {
    pub mode: Mode,
    /// Accepted proof algorithms (asymmetric only: `none` and HMAC are never
    /// accepted).
    pub algorithms: Vec<Algorithm>,
    /// How far a proof's `iat` may be from now, either way.
    pub iat_window_seconds: u64,
    /// Server nonces, when configured.
    pub nonce: Option<NonceKeys>,
}

impl Default for DpopPolicy {
    fn default() -> Self {
        DpopPolicy {
            mode: Mode::Off,
            algorithms: Algorithm::ALL.to_vec(),
            iat_window_seconds: crate::config::defaults::DPOP_IAT_WINDOW_SECONDS,
            nonce: None,
        }
    }
}

impl DpopPolicy {
    /// Whether DPoP-bound tokens are accepted at all.
    pub fn accepts_dpop(&self) -> bool {
        self.mode != Mode::Off
    }
}

/// How the client presented its token (`Authorization: <scheme> <token>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    DPoP,
}

impl Scheme {
    /// The scheme's name in a challenge.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Bearer => "Bearer",
            Scheme::DPoP => "DPoP",
        }
    }
}

/// Whether some provider takes bearer tokens (its `dpop` is not
/// `required`).
pub fn bearer_accepted(providers: &[Provider]) -> bool {
    providers.iter().any(|p| p.dpop.mode != Mode::Required)
}

/// Whether some provider takes DPoP-bound tokens.
pub fn dpop_accepted(providers: &[Provider]) -> bool {
    providers.iter().any(|p| p.dpop.accepts_dpop())
}

/// The proof algorithms some provider that takes DPoP accepts, in the order
/// algorithms are listed to users.
pub fn algorithms(providers: &[Provider]) -> Vec<Algorithm> {
    Algorithm::ALL
        .into_iter()
        .filter(|alg| {
            providers
                .iter()
                .any(|p| p.dpop.accepts_dpop() && p.dpop.algorithms.contains(alg))
        })
        .collect()
}
