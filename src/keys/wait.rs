//! When a request held for a provider's keys may go on: the provider's keys
//! changed (a fetch brought a new set, here or in another worker), no fetch
//! is pending any more (it ended, well or badly, and a failure shared by
//! another worker counts), or the wait ran out. The request then decides
//! with whatever keys there are (`exchange::Exchange::on_keys_settled`).
//!
//! The host keeps one [`KeyWaits`] per worker, adds a request when the core
//! asks it to wait, and on every tick resumes the requests this module says
//! are settled; it decides nothing itself.

use super::fetch::KeySlot;

/// Where one provider's keys stand, as far as a wait is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyProgress {
    /// Changes whenever the provider's key set changes.
    pub generation: u64,
    /// A fetch is asked for or under way.
    pub fetch_pending: bool,
    /// How long a request may wait for a fetch.
    pub wait_ms: u64,
}

impl KeyProgress {
    /// The progress of every provider's keys, in provider order.
    pub fn of(slots: &[KeySlot]) -> Vec<KeyProgress> {
        slots
            .iter()
            .map(|slot| KeyProgress {
                generation: slot.generation,
                fetch_pending: slot.fetch_pending(),
                wait_ms: slot.wait_ms(),
            })
            .collect()
    }
}

/// One request's wait for a provider's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyWait {
    provider: usize,
    /// The key set's generation when the wait began.
    generation: u64,
    deadline_ms: u64,
}

impl KeyWait {
    /// A wait for `provider`'s keys, from `now_ms`.
    pub fn start(provider: usize, progress: &[KeyProgress], now_ms: u64) -> KeyWait {
        let (generation, wait_ms) = progress
            .get(provider)
            .map_or((0, 0), |p| (p.generation, p.wait_ms));
        KeyWait {
            provider,
            generation,
            deadline_ms: now_ms.saturating_add(wait_ms),
        }
    }

    /// Whether the wait is over: the keys changed, no fetch is pending, or
    /// the deadline passed. A provider this worker does not know (never the
    /// case with one policy) ends the wait at once: holding for keys that
    /// cannot come would only delay the refusal.
    pub fn settled(&self, progress: &[KeyProgress], now_ms: u64) -> bool {
        match progress.get(self.provider) {
            Some(p) => {
                p.generation != self.generation || !p.fetch_pending || now_ms >= self.deadline_ms
            }
            None => true,
        }
    }
}

/// The requests of one worker waiting for keys; `T` is how the host finds
/// a request again.
#[derive(Debug)]
pub struct KeyWaits<T> {
    waiting: Vec<(KeyWait, T)>,
}

impl<T> Default for KeyWaits<T> {
    fn default() -> Self {
        KeyWaits {
            waiting: Vec::new(),
        }
    }
}

impl<T> KeyWaits<T> {
    pub fn new() -> KeyWaits<T> {
        KeyWaits::default()
    }

    /// `request` waits for `provider`'s keys from `now_ms`.
    pub fn add(&mut self, request: T, provider: usize, progress: &[KeyProgress], now_ms: u64) {
        self.waiting
            .push((KeyWait::start(provider, progress, now_ms), request));
    }

    /// Takes out the requests whose wait is over, in the order they began
    /// to wait, and forgets those that are `gone` (their stream ended
    /// meanwhile) without handing them back.
    pub fn take_settled(
        &mut self,
        progress: &[KeyProgress],
        now_ms: u64,
        gone: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        let mut settled = Vec::new();
        let mut still = Vec::with_capacity(self.waiting.len());
        for (wait, request) in self.waiting.drain(..) {
            if gone(&request) {
                continue;
            }
            if wait.settled(progress, now_ms) {
                settled.push(request);
            } else {
                still.push((wait, request));
            }
        }
        self.waiting = still;
        settled
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(generation: u64, fetch_pending: bool) -> KeyProgress {
        KeyProgress {
            generation,
            fetch_pending,
            wait_ms: 1_000,
        }
    }

    #[test]
    fn a_wait_lasts_while_a_fetch_is_pending_and_the_keys_stay_the_same() {
        let before = [remote(3, true)];
        let wait = KeyWait::start(0, &before, 10_000);
        assert!(!wait.settled(&before, 10_000));
        assert!(!wait.settled(&before, 10_999));
    }

    #[test]
    fn new_keys_end_the_wait_even_while_another_fetch_is_pending() {
        let wait = KeyWait::start(0, &[remote(3, true)], 10_000);
        assert!(wait.settled(&[remote(4, true)], 10_001));
    }

    #[test]
    fn a_fetch_that_ended_without_new_keys_ends_the_wait() {
        // It failed, or brought the same keys: the request is refused or
        // decided with what there is, at once rather than at the deadline.
        let wait = KeyWait::start(0, &[remote(3, true)], 10_000);
        assert!(wait.settled(&[remote(3, false)], 10_001));
    }

    #[test]
    fn the_deadline_ends_the_wait() {
        let progress = [remote(3, true)];
        let wait = KeyWait::start(0, &progress, 10_000);
        assert!(!wait.settled(&progress, 10_999));
        assert!(wait.settled(&progress, 11_000));
        assert!(wait.settled(&progress, u64::MAX));
    }

    #[test]
    fn a_deadline_near_the_end_of_time_does_not_overflow() {
        let progress = [remote(0, true)];
        let wait = KeyWait::start(0, &progress, u64::MAX - 10);
        assert!(!wait.settled(&progress, u64::MAX - 1));
        assert!(wait.settled(&progress, u64::MAX));
    }

    #[test]
    fn inline_keys_and_unknown_providers_end_the_wait_at_once() {
        let inline = KeyProgress {
            generation: 1,
            fetch_pending: false,
            wait_ms: 0,
        };
        let wait = KeyWait::start(0, &[inline], 10_000);
        assert!(wait.settled(&[inline], 10_000));
        let unknown = KeyWait::start(5, &[inline], 10_000);
        assert!(unknown.settled(&[inline], 10_000));
    }

    #[test]
    fn settled_requests_come_out_in_order_and_the_others_stay() {
        let mut waits = KeyWaits::new();
        let progress = [remote(1, true), remote(7, true)];
        waits.add("a0", 0, &progress, 0);
        waits.add("b0", 1, &progress, 0);
        waits.add("a1", 0, &progress, 500);
        assert!(waits.take_settled(&progress, 900, |_| false).is_empty());
        assert_eq!(waits.len(), 3);
        // Provider 0's keys arrive: both of its requests go on, in order.
        let progress = [remote(2, false), remote(7, true)];
        assert_eq!(waits.take_settled(&progress, 950, |_| false), ["a0", "a1"]);
        assert_eq!(waits.len(), 1);
        // Provider 1's wait runs out.
        assert!(waits.take_settled(&progress, 999, |_| false).is_empty());
        assert_eq!(waits.take_settled(&progress, 1_000, |_| false), ["b0"]);
        assert!(waits.is_empty());
    }

    #[test]
    fn requests_that_went_away_are_dropped_and_never_handed_back() {
        let mut waits = KeyWaits::new();
        let progress = [remote(1, true)];
        waits.add("gone", 0, &progress, 0);
        waits.add("here", 0, &progress, 0);
        assert!(waits
            .take_settled(&progress, 10, |r| *r == "gone")
            .is_empty());
        assert_eq!(waits.len(), 1, "the request that went away is forgotten");
        let settled = waits.take_settled(&[remote(2, false)], 20, |_| false);
        assert_eq!(settled, ["here"]);
    }
}
