//! The circuit breaker of one destination service (DESIGN.md §6): closed while calls mostly
//! succeed; open (every call refused at once, answered 503 `circuit-open`) when too many of
//! the recent calls failed; half-open after a wait, letting a few trial calls decide whether
//! to close again or to stay open for another wait.
//!
//! A call asks [`Breaker::try_acquire`] for a [`BreakerPermit`] and hands it back with its
//! outcome to [`Breaker::record`]. Every state change starts a new generation, and an outcome
//! counts only in the generation its permit was issued in: a slow call admitted before the
//! breaker opened cannot close it, nor count as a trial.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use skiff_api::traffic::CircuitBreaker;
use tokio::time::Instant;

/// Where the breaker is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// The value of the state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// The breaker refused the call; the caller answers 503 `circuit-open` at once.
#[derive(Debug, thiserror::Error)]
#[error("circuit breaker open")]
pub struct BreakerOpen;

/// The three-state breaker of one destination service.
#[derive(Debug)]
pub struct Breaker {
    config: CircuitBreaker,
    shared: Arc<Shared>,
}

/// What a half-open trial permit needs to give its slot back when dropped.
#[derive(Debug)]
struct Shared {
    /// `config.half_open_calls`, at least 1 (with none the breaker could never close).
    half_open_calls: u32,
    inner: Mutex<Inner>,
    /// Times the breaker entered each state, indexed by [`BreakerState::gauge`].
    transitions: [AtomicU64; 3],
}

#[derive(Debug)]
struct Inner {
    phase: Phase,
    /// Changes on every transition; see [`BreakerPermit`].
    generation: u64,
}

#[derive(Debug)]
enum Phase {
    Closed {
        /// The last `window` outcomes, oldest first; true is a failure.
        outcomes: VecDeque<bool>,
        failures: u32,
    },
    Open {
        since: Instant,
    },
    HalfOpen {
        /// Trial permits issued and not dropped unreported.
        admitted: u32,
        /// Trials that reported an outcome.
        reported: u32,
        failures: u32,
    },
}

/// Leave to make one call. Hand it back to [`Breaker::record`] with the outcome; dropping it
/// instead records nothing (a cancelled call is neither success nor failure), except that a
/// half-open trial gives its slot back for another trial.
#[must_use = "hand the permit back to Breaker::record with the call's outcome"]
#[derive(Debug)]
pub struct BreakerPermit {
    /// The breaker's generation when the permit was issued; 0 from a disabled breaker.
    generation: u64,
    /// Set for a half-open trial, whose slot is released if the permit is dropped unreported.
    trial: Option<Arc<Shared>>,
}

/// Generations are unique across breakers, so a permit recorded on a breaker rebuilt after a
/// configuration change (not the one that issued it) is ignored rather than miscounted.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Breaker {
    /// A closed breaker. With `enabled: false` it always admits and never opens.
    pub fn new(config: &CircuitBreaker) -> Self {
        Breaker {
            config: config.clone(),
            shared: Arc::new(Shared {
                half_open_calls: config.half_open_calls.max(1),
                inner: Mutex::new(Inner {
                    phase: closed(),
                    generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
                }),
                transitions: Default::default(),
            }),
        }
    }

    /// The configuration this breaker was built from, to rebuild it when that changes.
    pub fn config(&self) -> &CircuitBreaker {
        &self.config
    }

    /// Closed: admits. Open: refuses until `open_for` has passed since it opened, then becomes
    /// HalfOpen. HalfOpen: admits at most `half_open_calls` trial calls (at least 1) in this
    /// half-open period, counting those in flight and those that reported; a trial permit
    /// dropped without reporting frees its slot. Refuses the others.
    pub fn try_acquire(&self, now: Instant) -> Result<BreakerPermit, BreakerOpen> {
        if !self.config.enabled {
            return Ok(BreakerPermit {
                generation: 0,
                trial: None,
            });
        }
        let mut inner = self.shared.lock();
        self.advance(&mut inner, now);
        let generation = inner.generation;
        match &mut inner.phase {
            Phase::Closed { .. } => Ok(BreakerPermit {
                generation,
                trial: None,
            }),
            Phase::Open { .. } => Err(BreakerOpen),
            Phase::HalfOpen { admitted, .. } if *admitted < self.shared.half_open_calls => {
                *admitted += 1;
                Ok(BreakerPermit {
                    generation,
                    trial: Some(self.shared.clone()),
                })
            }
            Phase::HalfOpen { .. } => Err(BreakerOpen),
        }
    }

    /// The outcome of an admitted call, counted only if the breaker has not changed state
    /// since the permit was issued.
    ///
    /// Closed: a count-based sliding window of the last `window` outcomes (at least 1); when
    /// it holds at least `minimum_calls` (capped at `window`) and
    /// `failures × 100 ≥ failure_percent × calls` with at least one failure → Open, and the
    /// window is cleared. HalfOpen: once all `half_open_calls` trials have reported, the same
    /// test over the trials → Open again (for a new `open_for`), otherwise → Closed with a
    /// fresh window.
    pub fn record(&self, mut permit: BreakerPermit, success: bool, now: Instant) {
        // Reported, so the drop must not release a trial slot.
        permit.trial = None;
        if !self.config.enabled {
            return;
        }
        let mut inner = self.shared.lock();
        if permit.generation != inner.generation {
            return;
        }
        let next = match &mut inner.phase {
            Phase::Closed { outcomes, failures } => {
                outcomes.push_back(!success);
                *failures += u32::from(!success);
                if outcomes.len() > self.config.window.max(1) as usize {
                    *failures -= u32::from(outcomes.pop_front() == Some(true));
                }
                let calls = outcomes.len() as u32;
                let minimum = self.config.minimum_calls.min(self.config.window.max(1));
                (calls >= minimum && self.tripped(*failures, calls))
                    .then_some(Phase::Open { since: now })
            }
            Phase::HalfOpen {
                reported, failures, ..
            } => {
                *reported += 1;
                *failures += u32::from(!success);
                if *reported < self.shared.half_open_calls {
                    None
                } else if self.tripped(*failures, *reported) {
                    Some(Phase::Open { since: now })
                } else {
                    Some(closed())
                }
            }
            // Opening starts a new generation, so no permit matches an open breaker.
            Phase::Open { .. } => None,
        };
        if let Some(next) = next {
            self.enter(&mut inner, next);
        }
    }

    /// The current state; an open breaker whose `open_for` has passed becomes half-open here.
    pub fn state(&self, now: Instant) -> BreakerState {
        let mut inner = self.shared.lock();
        self.advance(&mut inner, now);
        inner.phase.state()
    }

    /// How many times the breaker has entered `state` (for
    /// `skiff_circuit_breaker_transitions_total`); starting closed does not count.
    pub fn transitions_into(&self, state: BreakerState) -> u64 {
        self.shared.transitions[state.gauge() as usize].load(Ordering::Relaxed)
    }

    /// Open → HalfOpen once `open_for` has passed.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if let Phase::Open { since } = inner.phase {
            if now.saturating_duration_since(since) >= self.config.open_for {
                let trials = Phase::HalfOpen {
                    admitted: 0,
                    reported: 0,
                    failures: 0,
                };
                self.enter(inner, trials);
            }
        }
    }

    fn enter(&self, inner: &mut Inner, phase: Phase) {
        self.shared.transitions[phase.state().gauge() as usize].fetch_add(1, Ordering::Relaxed);
        inner.phase = phase;
        inner.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `failures` of `calls` reach the failure threshold.
    fn tripped(&self, failures: u32, calls: u32) -> bool {
        failures > 0
            && u64::from(failures) * 100
                >= u64::from(self.config.failure_percent) * u64::from(calls)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Phase {
    fn state(&self) -> BreakerState {
        match self {
            Phase::Closed { .. } => BreakerState::Closed,
            Phase::Open { .. } => BreakerState::Open,
            Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }
}

fn closed() -> Phase {
    Phase::Closed {
        outcomes: VecDeque::new(),
        failures: 0,
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        let Some(shared) = self.trial.take() else {
            return;
        };
        let mut inner = shared.lock();
        if inner.generation == self.generation {
            if let Phase::HalfOpen { admitted, .. } = &mut inner.phase {
                *admitted -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    /// Opens at 50% failures over the last 10 calls, once 4 were made; 3 trials.
    fn config() -> CircuitBreaker {
        CircuitBreaker {
            enabled: true,
            failure_percent: 50,
            window: 10,
            minimum_calls: 4,
            open_for: OPEN_FOR,
            half_open_calls: 3,
        }
    }

    fn call(breaker: &Breaker, success: bool, now: Instant) {
        let permit = breaker.try_acquire(now).expect("admitted");
        breaker.record(permit, success, now);
    }

    /// A breaker that has just opened at `now`.
    fn opened(now: Instant) -> Breaker {
        let breaker = Breaker::new(&config());
        for _ in 0..4 {
            call(&breaker, false, now);
        }
        assert_eq!(breaker.state(now), BreakerState::Open);
        breaker
    }

    #[test]
    fn state_names() {
        let states = [
            (BreakerState::Closed, "closed", 0),
            (BreakerState::Open, "open", 1),
            (BreakerState::HalfOpen, "half-open", 2),
        ];
        for (state, name, gauge) in states {
            assert_eq!((state.as_str(), state.gauge()), (name, gauge));
        }
    }

    #[test]
    fn closed_opens_at_the_failure_rate_once_minimum_calls_were_made() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&config());
        // Three failures: 100%, but fewer than minimum_calls.
        for _ in 0..3 {
            call(&breaker, false, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        assert_eq!(breaker.transitions_into(BreakerState::Open), 0);
        // The fourth call makes 3 of 4 failures: open, and calls are refused.
        call(&breaker, true, t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
        assert_eq!(breaker.transitions_into(BreakerState::Open), 1);
        assert!(breaker.try_acquire(t0).is_err());
    }

    #[test]
    fn closed_stays_closed_below_the_threshold() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&config());
        // 4 failures in 9 calls is 44%.
        for success in [true, true, true, true, true, false, false, false, false] {
            call(&breaker, success, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        // The fifth failure makes 5 of 10: exactly the threshold opens.
        call(&breaker, false, t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn minimum_calls_above_the_window_is_the_window() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&CircuitBreaker {
            minimum_calls: 20,
            ..config()
        });
        for _ in 0..9 {
            call(&breaker, false, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        // A full window of 10 calls is as many as it can ever hold.
        call(&breaker, false, t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn the_window_slides_over_the_last_calls() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&config());
        // 4 failures in 10 calls, then successes push them out of the 10-call window...
        for success in [
            true, true, true, false, true, false, true, false, true, false,
        ] {
            call(&breaker, success, t0);
        }
        for _ in 0..10 {
            call(&breaker, true, t0);
        }
        // ...so 4 new failures make 4 of 10 (not 8 of 24), and a fifth makes 5 of 10 (not
        // 9 of 25).
        for _ in 0..4 {
            call(&breaker, false, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        call(&breaker, false, t0);
        assert_eq!(breaker.state(t0), BreakerState::Open);
    }

    #[test]
    fn open_refuses_until_open_for_then_half_opens() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        let almost = t0 + OPEN_FOR - Duration::from_millis(1);
        assert!(breaker.try_acquire(almost).is_err());
        assert_eq!(breaker.state(almost), BreakerState::Open);
        assert_eq!(breaker.state(t0 + OPEN_FOR), BreakerState::HalfOpen);
        assert_eq!(breaker.transitions_into(BreakerState::HalfOpen), 1);
    }

    #[test]
    fn half_open_admits_exactly_half_open_calls() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        let permits: Vec<_> = (0..3)
            .map(|_| breaker.try_acquire(t1).expect("trial"))
            .collect();
        assert!(breaker.try_acquire(t1).is_err());
        // Reporting does not free a slot: the limit is per half-open period, not in flight.
        let mut permits = permits.into_iter();
        breaker.record(permits.next().unwrap(), true, t1);
        assert!(breaker.try_acquire(t1).is_err());
        // A trial dropped without an outcome (a cancelled call) frees its slot.
        drop(permits.next());
        let replacement = breaker.try_acquire(t1).expect("freed slot");
        assert!(breaker.try_acquire(t1).is_err());
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        breaker.record(permits.next().unwrap(), true, t1);
        breaker.record(replacement, true, t1);
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn half_open_closes_below_the_threshold() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        let t1 = t0 + OPEN_FOR;
        let trials: Vec<_> = (0..3).map(|_| breaker.try_acquire(t1).unwrap()).collect();
        for (permit, success) in trials.into_iter().zip([true, false, true]) {
            assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
            breaker.record(permit, success, t1);
        }
        // 1 of 3 is below 50%.
        assert_eq!(breaker.state(t1), BreakerState::Closed);
        assert_eq!(breaker.transitions_into(BreakerState::Closed), 1);
        // The window is fresh: the failures from before the opening are gone, and three
        // failures are again below minimum_calls.
        for _ in 0..3 {
            call(&breaker, false, t1);
        }
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn half_open_reopens_at_the_threshold_for_a_new_open_for() {
        let t0 = Instant::now();
        let breaker = opened(t0);
        let t1 = t0 + OPEN_FOR + Duration::from_secs(1);
        let trials: Vec<_> = (0..3).map(|_| breaker.try_acquire(t1).unwrap()).collect();
        for (permit, success) in trials.into_iter().zip([false, true, false]) {
            breaker.record(permit, success, t1);
        }
        assert_eq!(breaker.state(t1), BreakerState::Open);
        assert_eq!(breaker.transitions_into(BreakerState::Open), 2);
        // open_for counts from the reopening, not from the first opening.
        assert!(breaker
            .try_acquire(t1 + OPEN_FOR - Duration::from_millis(1))
            .is_err());
        assert!(breaker.try_acquire(t1 + OPEN_FOR).is_ok());
    }

    #[test]
    fn permits_from_an_earlier_generation_are_ignored() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&config());
        // Slow calls admitted while closed.
        let slow: Vec<_> = (0..6).map(|_| breaker.try_acquire(t0).unwrap()).collect();
        for _ in 0..4 {
            call(&breaker, false, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Open);
        let t1 = t0 + OPEN_FOR;
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        let mut slow = slow.into_iter();
        // Their successes neither count as trials nor close the breaker...
        for permit in slow.by_ref().take(3) {
            breaker.record(permit, true, t1);
        }
        assert_eq!(breaker.state(t1), BreakerState::HalfOpen);
        // ...and dropping them does not free trial slots.
        let trials: Vec<_> = (0..3).map(|_| breaker.try_acquire(t1).unwrap()).collect();
        drop(slow.next());
        assert!(breaker.try_acquire(t1).is_err());
        // A trial from this half-open period still counts after a stale failure.
        breaker.record(slow.next().unwrap(), false, t1);
        for permit in trials {
            breaker.record(permit, true, t1);
        }
        assert_eq!(breaker.state(t1), BreakerState::Closed);
        // The new closed window ignores the last slow call: with it, these would be 4 of 4.
        breaker.record(slow.next().unwrap(), false, t1);
        for _ in 0..3 {
            call(&breaker, false, t1);
        }
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn permits_from_another_breaker_are_ignored() {
        let t0 = Instant::now();
        let old = Breaker::new(&config());
        let new = Breaker::new(&config());
        for _ in 0..4 {
            let permit = old.try_acquire(t0).unwrap();
            new.record(permit, false, t0);
        }
        assert_eq!(new.state(t0), BreakerState::Closed);
        assert_eq!(old.state(t0), BreakerState::Closed);
    }

    #[test]
    fn disabled_always_admits() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&CircuitBreaker {
            enabled: false,
            ..config()
        });
        for _ in 0..100 {
            call(&breaker, false, t0);
        }
        assert_eq!(breaker.state(t0), BreakerState::Closed);
        assert_eq!(breaker.transitions_into(BreakerState::Open), 0);
    }

    #[test]
    fn zero_half_open_calls_still_allows_one_trial() {
        let t0 = Instant::now();
        let breaker = Breaker::new(&CircuitBreaker {
            half_open_calls: 0,
            ..config()
        });
        for _ in 0..4 {
            call(&breaker, false, t0);
        }
        let t1 = t0 + OPEN_FOR;
        let trial = breaker.try_acquire(t1).unwrap();
        assert!(breaker.try_acquire(t1).is_err());
        breaker.record(trial, true, t1);
        assert_eq!(breaker.state(t1), BreakerState::Closed);
    }

    #[test]
    fn is_shareable() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Breaker>();
        assert_send_sync::<BreakerPermit>();
    }
}
