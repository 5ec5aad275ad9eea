//! The retry budget of one destination (DESIGN.md §6): before a retry or a hedge goes out,
//! it withdraws from a budget that original requests fill, so that when every request fails
//! retries add at most a share of the load (20% plus a small floor by default) instead of
//! multiplying it.
//!
//! Requests and retries are counted in a ring of [`SLOTS`] time slots spanning the window;
//! a slot is forgotten once it is a whole window old, so counts expire in steps of
//! `window / SLOTS`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use skiff_api::traffic::RetryBudget as RetryBudgetConfig;
use tokio::time::Instant;

/// Time slots in the window.
pub const SLOTS: usize = 10;

/// Retries to one destination allowed by its recent requests.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    /// Where slot 0 begins; slot `n` covers `[start + n × slot, start + (n+1) × slot)`.
    start: Instant,
    /// `window / SLOTS` (at least 1 ms, so a zero window still works).
    slot: Duration,
    /// Retries any window allows with no requests at all: `min_per_second × window`.
    floor: u64,
    ring: Mutex<Ring>,
    /// For metrics: retries allowed so far.
    withdrawn: AtomicU64,
    /// For metrics: retries refused so far.
    refused: AtomicU64,
}

/// The counts of the last [`SLOTS`] slots.
#[derive(Debug, Default)]
struct Ring {
    slots: [Slot; SLOTS],
    /// The newest slot number seen, so that a caller with a slightly stale `now` counts in
    /// the current slot rather than wiping a newer one.
    latest: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Which slot number the counts belong to; a slot with an older number is stale.
    number: u64,
    requests: u64,
    retries: u64,
}

impl Ring {
    /// The current slot, emptied first if it still holds counts from a window ago.
    fn current(&mut self, number: u64) -> &mut Slot {
        self.latest = self.latest.max(number);
        let number = self.latest;
        let slot = &mut self.slots[(number % SLOTS as u64) as usize];
        if slot.number != number {
            *slot = Slot {
                number,
                ..Slot::default()
            };
        }
        slot
    }

    /// (requests, retries) in the window that ends with the current slot.
    fn totals(&self) -> (u64, u64) {
        self.slots
            .iter()
            .filter(|slot| slot.number + SLOTS as u64 > self.latest)
            .fold((0, 0), |(requests, retries), slot| {
                (requests + slot.requests, retries + slot.retries)
            })
    }
}

impl RetryBudget {
    pub fn new(config: &RetryBudgetConfig, now: Instant) -> Self {
        let slot = (config.window / SLOTS as u32).max(Duration::from_millis(1));
        let window_millis = u64::try_from(config.window.as_millis()).unwrap_or(u64::MAX);
        RetryBudget {
            config: config.clone(),
            start: now,
            slot,
            floor: u64::from(config.min_per_second).saturating_mul(window_millis) / 1000,
            ring: Mutex::default(),
            withdrawn: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The configuration this budget was built from, to rebuild it when that changes.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// An original request to the destination (deposits into the budget).
    pub fn record_request(&self, now: Instant) {
        let number = self.slot_number(now);
        self.lock().current(number).requests += 1;
    }

    /// A retry or hedge wants to go: true (and counted) when retries in the window, this one
    /// included, stay within `percent` % of the requests in the window plus
    /// `min_per_second × window` (each term rounded down); false when the budget is spent.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let number = self.slot_number(now);
        let mut ring = self.lock();
        ring.current(number);
        let (requests, retries) = ring.totals();
        let allowed = requests.saturating_mul(u64::from(self.config.percent)) / 100 + self.floor;
        if retries < allowed {
            ring.current(number).retries += 1;
            self.withdrawn.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Retries allowed so far (for metrics).
    pub fn withdrawn(&self) -> u64 {
        self.withdrawn.load(Ordering::Relaxed)
    }

    /// Retries refused so far (for metrics).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn slot_number(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        u64::try_from(elapsed / self.slot.as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(percent: u32, min_per_second: u32, window_secs: u64) -> RetryBudgetConfig {
        RetryBudgetConfig {
            percent,
            min_per_second,
            window: Duration::from_secs(window_secs),
        }
    }

    fn withdraw_all(budget: &RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while budget.try_withdraw(now) {
            n += 1;
            assert!(n < 1_000_000, "the budget never ran out");
        }
        n
    }

    #[test]
    fn full_outage_gets_a_fifth_of_the_requests_plus_the_floor() {
        // Defaults: 20%, 10 per second, 10 s. 100 requests per second, each failing and
        // wanting a retry, for 30 s.
        let t0 = Instant::now();
        let budget = RetryBudget::new(&RetryBudgetConfig::default(), t0);
        let mut retries_per_second = Vec::new();
        for second in 0..30u64 {
            let mut retries = 0;
            for i in 0..100 {
                let now = t0 + Duration::from_secs(second) + Duration::from_millis(i * 10);
                budget.record_request(now);
                retries += u64::from(budget.try_withdraw(now));
            }
            retries_per_second.push(retries);
        }
        // In steady state, the last 10 s (1000 requests) got about 20% × 1000 + 10 × 10.
        let steady: u64 = retries_per_second[20..].iter().sum();
        assert!((280..=300).contains(&steady), "{steady} retries in 10 s");
        // The first second spends the floor on top of its share.
        assert_eq!(retries_per_second[0], 100);
        assert_eq!(budget.withdrawn(), retries_per_second.iter().sum::<u64>());
        assert_eq!(budget.refused(), 3000 - budget.withdrawn());
    }

    #[test]
    fn the_floor_allows_retries_without_requests() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(&config(20, 10, 10), t0);
        assert_eq!(withdraw_all(&budget, t0), 100);
        assert_eq!((budget.withdrawn(), budget.refused()), (100, 1));

        let budget = RetryBudget::new(&config(20, 0, 10), t0);
        assert!(!budget.try_withdraw(t0));
    }

    #[test]
    fn retries_are_a_share_of_requests() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(&config(20, 0, 10), t0);
        for _ in 0..14 {
            budget.record_request(t0);
        }
        // 20% of 14, rounded down.
        assert_eq!(withdraw_all(&budget, t0), 2);
        budget.record_request(t0);
        assert_eq!(withdraw_all(&budget, t0), 1);
    }

    #[test]
    fn requests_and_retries_expire_after_the_window() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(&config(50, 1, 10), t0);
        for _ in 0..100 {
            budget.record_request(t0);
        }
        assert_eq!(withdraw_all(&budget, t0), 60);

        // Still inside the window (its last slot): still spent.
        let late = t0 + Duration::from_millis(9_999);
        assert!(!budget.try_withdraw(late));

        // Once a window has passed the requests and retries are forgotten (here in a slot
        // that does not reuse theirs): only the floor is left.
        let next = t0 + Duration::from_secs(12);
        assert_eq!(withdraw_all(&budget, next), 10);

        // The retries spent at `next` expire one window after `next`, not sooner.
        assert!(!budget.try_withdraw(next + Duration::from_millis(9_999)));
        assert_eq!(withdraw_all(&budget, next + Duration::from_secs(13)), 10);
    }

    #[test]
    fn a_stale_now_does_not_wipe_newer_counts() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(&config(0, 1, 10), t0);
        let later = t0 + Duration::from_secs(11);
        assert_eq!(withdraw_all(&budget, later), 10);
        // Slot 1 (t0 + 1 s) shares its place in the ring with slot 11 (t0 + 11 s): a caller
        // whose `now` is that stale counts in slot 11 and sees the budget spent.
        assert!(!budget.try_withdraw(t0 + Duration::from_secs(1)));
    }

    #[test]
    fn zero_window_does_not_panic() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(&config(20, 10, 0), t0);
        budget.record_request(t0);
        assert!(!budget.try_withdraw(t0));
    }

    #[test]
    fn is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RetryBudget>();
    }
}
