//! Signing keys: JWKS documents turned into typed keys (`jwks`), finding an
//! issuer's key set (`discovery`), fetching it through an Envoy cluster and
//! sharing it between workers (`fetch`), when to fetch it again
//! (`schedule`), and when a request held for keys may go on (`wait`).

pub mod discovery;
pub mod fetch;
pub mod jwks;
pub mod schedule;
pub mod wait;
