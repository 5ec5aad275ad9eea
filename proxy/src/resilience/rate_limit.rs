//! A local token bucket (DESIGN.md §5, §6), per route or per inbound workload: a request that
//! finds it empty is answered 429 `rate-limited`.
//!
//! Tokens are counted in billionths, so that refilling `requests_per_second` tokens per second
//! adds exactly `requests_per_second` billionths per elapsed nanosecond: integer arithmetic
//! with no rounding drift.

use std::sync::{Mutex, PoisonError};

use skiff_api::traffic::RateLimit;
use tokio::time::Instant;

/// Billionths in one token.
const TOKEN: u64 = 1_000_000_000;

/// A token bucket holding at most `burst` tokens, refilled by `requests_per_second` per second.
#[derive(Debug)]
pub struct TokenBucket {
    config: RateLimit,
    /// `burst` tokens, in billionths.
    capacity: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Tokens in the bucket, in billionths.
    tokens: u64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket (`burst` tokens). With `burst` 0 it never holds a token and refuses
    /// everything; with `requests_per_second` 0 it never refills.
    pub fn new(config: &RateLimit, now: Instant) -> Self {
        let capacity = u64::from(config.burst) * TOKEN;
        TokenBucket {
            config: *config,
            capacity,
            state: Mutex::new(State {
                tokens: capacity,
                updated: now,
            }),
        }
    }

    /// Takes one token if there is one, after adding `requests_per_second` tokens per second
    /// since the last call (capped at `burst`). A `now` earlier than a previous one adds
    /// nothing.
    pub fn try_take(&self, now: Instant) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now > state.updated {
            let elapsed = u64::try_from((now - state.updated).as_nanos()).unwrap_or(u64::MAX);
            let refill = elapsed.saturating_mul(u64::from(self.config.requests_per_second));
            state.tokens = state.tokens.saturating_add(refill).min(self.capacity);
            state.updated = now;
        }
        if state.tokens >= TOKEN {
            state.tokens -= TOKEN;
            true
        } else {
            false
        }
    }

    /// The configuration this bucket was built from, to rebuild it when that changes.
    pub fn config(&self) -> RateLimit {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bucket(requests_per_second: u32, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket::new(
            &RateLimit {
                requests_per_second,
                burst,
            },
            now,
        )
    }

    fn take_all(bucket: &TokenBucket, now: Instant) -> u32 {
        let mut n = 0;
        while bucket.try_take(now) {
            n += 1;
            assert!(n < 1_000_000, "the bucket never ran out");
        }
        n
    }

    #[test]
    fn starts_full_with_the_burst() {
        let t0 = Instant::now();
        assert_eq!(take_all(&bucket(10, 25, t0), t0), 25);
        assert_eq!(take_all(&bucket(10, 0, t0), t0 + Duration::from_secs(5)), 0);
    }

    #[test]
    fn refills_at_the_rate() {
        let t0 = Instant::now();
        let bucket = bucket(10, 10, t0);
        take_all(&bucket, t0);
        // One token every 100 ms, not sooner.
        assert!(!bucket.try_take(t0 + Duration::from_millis(99)));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(100)));
        // Taking one request every millisecond for 10 s passes exactly 100.
        let mut passed = 0;
        for ms in 101..=10_100 {
            passed += u32::from(bucket.try_take(t0 + Duration::from_millis(ms)));
        }
        assert_eq!(passed, 100);
    }

    #[test]
    fn fractions_of_a_token_carry_over() {
        let t0 = Instant::now();
        // 3 per second: a token every 333.33… ms. (A burst of 2 so the cap never cuts a
        // refill short.)
        let bucket = bucket(3, 2, t0);
        take_all(&bucket, t0);
        let mut passed = 0;
        for tick in 1..=300 {
            // Every 10 ms for 3 s.
            passed += u32::from(bucket.try_take(t0 + Duration::from_millis(tick * 10)));
        }
        assert_eq!(passed, 9);
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let t0 = Instant::now();
        let bucket = bucket(100, 5, t0);
        take_all(&bucket, t0);
        assert_eq!(take_all(&bucket, t0 + Duration::from_secs(3600)), 5);
        // A very long idle period does not overflow.
        let bucket = TokenBucket::new(
            &RateLimit {
                requests_per_second: u32::MAX,
                burst: u32::MAX,
            },
            t0,
        );
        assert!(bucket.try_take(t0 + Duration::from_secs(100 * 365 * 24 * 3600)));
    }

    #[test]
    fn an_earlier_now_adds_nothing() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let bucket = bucket(1, 1, t0);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t0));
        assert!(!bucket.try_take(t1));
        assert!(bucket.try_take(t1 + Duration::from_secs(1)));
    }

    #[test]
    fn is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TokenBucket>();
        let t0 = Instant::now();
        let config = RateLimit {
            requests_per_second: 7,
            burst: 9,
        };
        assert_eq!(TokenBucket::new(&config, t0).config(), config);
    }
}
