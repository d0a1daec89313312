//! Signing keys: finding an issuer's key set (`discovery`), fetching it
//! through an Envoy cluster and sharing it between workers (`fetch`), and
//! when to fetch it again (`schedule`). Parsing JWKS documents into typed
//! keys is `crate::jwks`.

pub mod discovery;
pub mod fetch;
pub mod schedule;
