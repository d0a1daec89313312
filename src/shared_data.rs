//! Proxy-wasm shared data, as the core sees it: entries every worker of one
//! Envoy reads and writes, each with a version for compare-and-swap. The
//! authorization server's shared answers and the DPoP replay memory both
//! live there.

use std::collections::HashMap;

/// How shared data is reached (proxy-wasm's, for the filter; a map, in
/// tests and `explain`).
pub trait SharedData {
    /// A shared-data entry (visible to every worker of the proxy): its value
    /// and version, `(None, None)` when absent.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes a shared-data entry; with `cas`, only if its version is still
    /// `cas`. Whether it was written.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Shared data in memory, as proxy-wasm keeps it: a version per entry,
/// compare-and-swap against it, version 0 never given out. For tests and
/// `explain`.
#[derive(Debug, Default, Clone)]
pub struct SharedMap {
    entries: HashMap<String, (Vec<u8>, u32)>,
}

impl SharedData for SharedMap {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.entries.get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let current = self.entries.get(key).map(|(_, c)| *c);
        if let (Some(expected), Some(current)) = (cas, current) {
            if expected != current {
                return false;
            }
        }
        let next = current.unwrap_or(0).wrapping_add(1).max(1);
        self.entries.insert(key.to_string(), (value.to_vec(), next));
        true
    }
}

impl SharedMap {
    /// Whether any entry holds `needle`, in its key or its value (tests: a
    /// token must never be stored).
    pub fn contains(&self, needle: &[u8]) -> bool {
        self.entries.iter().any(|(k, (v, _))| {
            k.as_bytes().windows(needle.len()).any(|w| w == needle)
                || v.windows(needle.len()).any(|w| w == needle)
        })
    }
}
