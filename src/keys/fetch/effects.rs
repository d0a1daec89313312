//! What the key fetcher takes in and gives out: snapshots of a slot's
//! shared-data entries, the effects the host carries out, and what comes of
//! them.

use super::KeySlot;
use crate::counters::Counter;
use crate::exchange::Level;
use crate::shared_data::SharedData;

/// A shared-data entry as read: its value and version, `(None, None)` when
/// absent.
pub type Entry = (Option<Vec<u8>>, Option<u32>);

/// A slot's shared-data entries, as the host read them just now.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The key set a worker published.
    pub published: Entry,
    /// The last failed fetch a worker recorded.
    pub failure: Entry,
    /// The fetch lease.
    pub lease: Entry,
}

impl Snapshot {
    /// Reads `slot`'s entries (none for a slot without remote keys).
    pub fn read(slot: &KeySlot, shared: &dyn SharedData) -> Snapshot {
        match &slot.remote {
            Some(r) => Snapshot {
                published: shared.shared_get(&r.published_key),
                failure: shared.shared_get(&r.failure_key),
                lease: shared.shared_get(&r.lease_key),
            },
            None => Snapshot::default(),
        }
    }
}

/// A GET through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
}

/// A write to a shared-data entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub key: String,
    pub value: Vec<u8>,
}

/// One thing for the host to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start this fetch; answer with [`Outcome::Dispatched`].
    Dispatch(Fetch),
    /// Take the fetch lease: write only if the entry's version is still
    /// `cas`; answer with [`Outcome::LeaseClaimed`].
    ClaimLease {
        write: Write,
        cas: u32,
    },
    /// Mark the fetch lease free (after a fetch, or to create it).
    ReleaseLease(Write),
    /// Publish a fetched key set for every worker; answer with
    /// [`Outcome::Published`].
    Publish(Write),
    /// Record a failed fetch for every worker; answer with
    /// [`Outcome::FailureRecorded`].
    RecordFailure(Write),
    Log(Level, String),
    Count(Counter),
    /// The slot's keys changed (a new generation): requests waiting for
    /// them may go on.
    KeysChanged,
}

/// What came of an effect that asks for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call's token, or why it could not start.
    Dispatched(Result<u32, String>),
    /// Whether the lease was taken.
    LeaseClaimed(bool),
    /// The key set was written.
    Published,
    /// The failure was written.
    FailureRecorded,
}
