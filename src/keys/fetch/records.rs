//! The records workers leave each other in shared data, as text: a
//! published key set, a failed fetch, the fetch lease.

/// What one worker publishes for the others: when, how fresh, and the body.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Published {
    pub(super) fetched_at_ms: u64,
    pub(super) max_age: Option<u64>,
    pub(super) body: Vec<u8>,
}

impl Published {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "{}\n{}\n",
            self.fetched_at_ms,
            self.max_age.map(|a| a.to_string()).unwrap_or_default()
        )
        .into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Published> {
        let mut parts = bytes.splitn(3, |b| *b == b'\n');
        let fetched_at_ms = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let max_age = std::str::from_utf8(parts.next()?).ok()?.parse().ok();
        Some(Published {
            fetched_at_ms,
            max_age,
            body: parts.next()?.to_vec(),
        })
    }
}

/// A failed fetch, as one worker records it for the others.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Failure {
    pub(super) at_ms: u64,
    pub(super) failures: u32,
}

impl Failure {
    pub(super) fn encode(&self) -> Vec<u8> {
        format!("{}\n{}", self.at_ms, self.failures).into_bytes()
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Failure> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (at, failures) = text.split_once('\n')?;
        Some(Failure {
            at_ms: at.parse().ok()?,
            failures: failures.parse().ok()?,
        })
    }
}

/// The lease value: the time (ms) until which a worker holds the fetch;
/// `0` is free.
pub(super) fn lease_value(until_ms: u64) -> Vec<u8> {
    until_ms.to_string().into_bytes()
}
