//! Signing keys: JWKS documents turned into typed keys (`jwks`), finding an
//! issuer's key set (`discovery`), fetching it through an Envoy cluster and
//! sharing it between workers (`fetch`), and when to fetch it again
//! (`schedule`).

pub mod discovery;
pub mod fetch;
pub mod jwks;
pub mod schedule;
