//! When to fetch a remote JWKS: the refresh timetable, backoff after
//! failures, and the rate limit on refetches asked for by unknown `kid`s.
//! Pure state over a millisecond clock, so it is tested natively; the host
//! does the fetching.

/// Shortest spacing between refetches forced by tokens naming an unknown key:
/// a flood of forged `kid`s must not turn into a flood of JWKS requests.
pub const UNKNOWN_KEY_REFETCH_MS: u64 = 30_000;
/// While no key set was ever fetched, a waiting request may start a fetch this
/// often.
pub const NO_KEYS_RETRY_MS: u64 = 1_000;
/// The floor under `Cache-Control: max-age`, so an issuer answering
/// `max-age=0` does not get fetched on every tick.
pub const MIN_MAX_AGE_SECONDS: u64 = 30;
/// Backoff after failed fetches: 1 s, 2 s, 4 s ... capped here.
pub const MAX_BACKOFF_MS: u64 = 30_000;

/// The refresh state of one provider's remote key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    refresh_ms: u64,
    /// When the next periodic fetch is due.
    next_due_ms: u64,
    /// Consecutive failures since the last success.
    failures: u32,
    /// Whether a key set was ever fetched (here or by another worker).
    has_keys: bool,
    /// When the key set in use was fetched.
    last_success_ms: Option<u64>,
    /// When an unknown `kid` last forced a fetch.
    last_unknown_key_ms: Option<u64>,
    /// When a request waiting for a first key set last forced a fetch.
    last_keys_needed_ms: Option<u64>,
    /// A fetch was asked for and not yet started.
    wanted: bool,
}

impl Schedule {
    /// A schedule whose first fetch is due at once.
    pub fn new(refresh_seconds: u64, now_ms: u64) -> Schedule {
        Schedule {
            refresh_ms: refresh_seconds.saturating_mul(1000),
            next_due_ms: now_ms,
            failures: 0,
            has_keys: false,
            last_success_ms: None,
            last_unknown_key_ms: None,
            last_keys_needed_ms: None,
            wanted: false,
        }
    }

    /// Whether a fetch should start now (the caller checks that none is in
    /// flight and that it holds the fetch lease).
    pub fn due(&self, now_ms: u64) -> bool {
        self.wanted || now_ms >= self.next_due_ms
    }

    /// Whether a request asked for a fetch that has not started yet.
    pub fn wanted(&self) -> bool {
        self.wanted
    }

    /// A fetch started: whatever was wanted is being done.
    pub fn started(&mut self) {
        self.wanted = false;
    }

    /// A fetch succeeded. `max_age_seconds` is the answer's
    /// `Cache-Control: max-age`, which may shorten the refresh interval.
    pub fn succeeded(&mut self, now_ms: u64, max_age_seconds: Option<u64>) {
        self.failures = 0;
        self.has_keys = true;
        self.last_success_ms = Some(now_ms);
        let interval = match max_age_seconds {
            Some(age) => age
                .max(MIN_MAX_AGE_SECONDS)
                .saturating_mul(1000)
                .min(self.refresh_ms),
            None => self.refresh_ms,
        };
        self.next_due_ms = now_ms.saturating_add(interval);
    }

    /// Another worker fetched the keys: the same as our own success.
    pub fn adopted(&mut self, fetched_at_ms: u64, max_age_seconds: Option<u64>) {
        self.wanted = false;
        self.succeeded(fetched_at_ms, max_age_seconds);
    }

    /// A fetch failed: keep the last good keys (the caller does) and retry
    /// with exponential backoff.
    pub fn failed(&mut self, now_ms: u64) {
        self.failures = self.failures.saturating_add(1);
        self.next_due_ms = now_ms.saturating_add(self.backoff_ms());
    }

    /// Another worker's fetch failed at `failed_at_ms`, its `failures`-th
    /// failure in a row: back off as if it had been ours, and end the wait
    /// of any request here that asked for a fetch (that fetch was the other
    /// worker's, and it failed). Ignored when our keys are newer.
    pub fn failure_adopted(&mut self, failed_at_ms: u64, failures: u32) {
        if self.last_success_ms.is_some_and(|at| at >= failed_at_ms) {
            return;
        }
        self.wanted = false;
        self.failures = self.failures.max(failures).max(1);
        self.next_due_ms = failed_at_ms.saturating_add(self.backoff_ms());
    }

    fn backoff_ms(&self) -> u64 {
        1000u64
            .saturating_mul(1u64 << self.failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF_MS)
            .min(self.refresh_ms.max(1000))
    }

    /// A request met a `kid` the key set lacks. Returns whether a refetch was
    /// granted (at most one per [`UNKNOWN_KEY_REFETCH_MS`]).
    pub fn unknown_key(&mut self, now_ms: u64) -> bool {
        let mut last = self.last_unknown_key_ms;
        let granted = self.force(&mut last, now_ms, UNKNOWN_KEY_REFETCH_MS);
        self.last_unknown_key_ms = last;
        granted
    }

    /// A request needs keys and none were ever fetched. Returns whether a
    /// fetch was asked for (at most one per [`NO_KEYS_RETRY_MS`]).
    pub fn keys_needed(&mut self, now_ms: u64) -> bool {
        if self.has_keys {
            return false;
        }
        let mut last = self.last_keys_needed_ms;
        let granted = self.force(&mut last, now_ms, NO_KEYS_RETRY_MS);
        self.last_keys_needed_ms = last;
        granted
    }

    /// Asks for a fetch unless one of this kind was forced less than
    /// `spacing_ms` ago. Each kind keeps its own clock: the fetch forced by the
    /// first request after start must not hold back the refetch for a key
    /// rotated in a few seconds later.
    fn force(&mut self, last: &mut Option<u64>, now_ms: u64, spacing_ms: u64) -> bool {
        if self.wanted {
            return true;
        }
        if let Some(last) = *last {
            if now_ms < last.saturating_add(spacing_ms) {
                return false;
            }
        }
        *last = Some(now_ms);
        self.wanted = true;
        true
    }

    /// How many fetches in a row failed.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `Cache-Control: max-age=N` from a header value, if present and well formed.
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            value.trim().trim_matches('"').parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fetch_is_due_at_once_then_every_refresh() {
        let mut s = Schedule::new(300, 1_000);
        assert!(s.due(1_000));
        s.started();
        s.succeeded(1_000, None);
        assert!(!s.due(300_999));
        assert!(s.due(301_000));
    }

    #[test]
    fn smaller_max_age_shortens_refresh_within_bounds() {
        let mut s = Schedule::new(300, 0);
        s.succeeded(0, Some(60));
        assert!(!s.due(59_999));
        assert!(s.due(60_000));
        s.succeeded(0, Some(0));
        assert!(!s.due(29_999), "max-age=0 is raised to the floor");
        assert!(s.due(30_000));
        s.succeeded(0, Some(100_000));
        assert!(
            s.due(300_000),
            "a larger max-age never lengthens the refresh"
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_cap() {
        let mut s = Schedule::new(300, 0);
        s.failed(0);
        assert!(!s.due(999));
        assert!(s.due(1_000));
        s.failed(0);
        assert!(s.due(2_000) && !s.due(1_999));
        for _ in 0..20 {
            s.failed(0);
        }
        assert!(s.due(MAX_BACKOFF_MS) && !s.due(MAX_BACKOFF_MS - 1));
        assert_eq!(s.failures(), 22);
        s.succeeded(0, None);
        assert_eq!(s.failures(), 0);
    }

    #[test]
    fn another_workers_failure_backs_off_here_and_ends_the_wait() {
        let mut s = Schedule::new(300, 0);
        assert!(s.keys_needed(0));
        s.failure_adopted(500, 3);
        assert!(!s.wanted(), "the fetch asked for was done, and failed");
        assert_eq!(s.failures(), 3);
        assert!(!s.due(4_499) && s.due(4_500), "backoff of the 3rd failure");
        s.failed(5_000);
        assert_eq!(s.failures(), 4);
        // A failure older than the keys in use changes nothing.
        s.adopted(10_000, None);
        s.failure_adopted(9_000, 7);
        assert_eq!(s.failures(), 0);
        assert!(!s.due(10_000 + 299_999));
    }

    #[test]
    fn unknown_key_refetch_is_rate_limited() {
        let mut s = Schedule::new(300, 0);
        s.succeeded(0, None);
        assert!(s.unknown_key(1_000));
        assert!(s.due(1_000));
        s.started();
        s.succeeded(1_100, None);
        assert!(
            !s.unknown_key(2_000),
            "second forced refetch within 30 s refused"
        );
        assert!(!s.due(2_000));
        assert!(s.unknown_key(31_000));
    }

    #[test]
    fn first_fetch_forced_by_a_request_does_not_hold_back_an_unknown_key_refetch() {
        let mut s = Schedule::new(300, 0);
        assert!(s.keys_needed(10));
        s.started();
        s.succeeded(50, None);
        assert!(s.unknown_key(2_000), "a key rotated in right after start");
        assert!(s.due(2_000));
    }

    #[test]
    fn keys_needed_only_before_the_first_success() {
        let mut s = Schedule::new(300, 0);
        s.started();
        s.failed(0);
        assert!(s.keys_needed(10));
        s.started();
        s.failed(20);
        assert!(!s.keys_needed(500), "at most one forced fetch per second");
        assert!(s.keys_needed(1_010));
        s.adopted(2_000, None);
        assert!(!s.keys_needed(5_000));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=120"), Some(120));
        assert_eq!(max_age("Max-Age = 5"), Some(5));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }
}
