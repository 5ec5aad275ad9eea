//! Outlier detection (DESIGN.md §6): the per-endpoint ejection state machine behind the
//! balancer. Each finished attempt on an endpoint reports an [`Outcome`]; too many failures in
//! a row, or a success rate far below its peers', take the endpoint out of rotation for a
//! while. Semantics follow Envoy's outlier detection, with one addition: when its ejection
//! time has passed an endpoint is *half-open* and gets exactly one probe request, whose
//! outcome readmits it or ejects it again for longer.
//!
//! ```text
//!              failures / success rate            time passes
//!   healthy ─────────────────────────► ejected ──────────────► half-open
//!      ▲      (if the ejection cap allows)  ▲                      │ one probe
//!      │                                    │  probe failed        │
//!      │                                    └──────────────────────┤
//!      └───────────────────────────────────────────────────────────┘ probe succeeded
//! ```
//!
//! [`OutlierDetector`] is the destination's part (its configuration, the count of ejected
//! endpoints the cap needs, the interval clock and the metrics); [`OutlierState`] is one
//! endpoint's part. The balancer owns one detector per destination and one state per endpoint,
//! and runs the interval work ([`OutlierDetector::run_interval`]) lazily when
//! [`OutlierDetector::interval_due`] says so, since there is no background task.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use skiff_api::traffic::OutlierDetection;
use tokio::time::Instant;

/// How one attempt on an endpoint ended, as outlier detection and the balancer see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Any response that is not a 5xx.
    Success,
    /// A 5xx other than 502/503/504.
    ServerError,
    /// Connect failure or timeout, reset, per-try timeout, 502, 503, 504.
    GatewayFailure,
}

/// Why an endpoint was ejected; a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EjectionReason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    SuccessRate,
    /// The one request a half-open endpoint got after its ejection failed.
    FailedProbe,
}

impl EjectionReason {
    /// Every reason, in declaration order (the order of the per-reason counters).
    pub const ALL: [EjectionReason; 4] = [
        EjectionReason::Consecutive5xx,
        EjectionReason::ConsecutiveGatewayFailure,
        EjectionReason::SuccessRate,
        EjectionReason::FailedProbe,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectionReason::Consecutive5xx => "consecutive-5xx",
            EjectionReason::ConsecutiveGatewayFailure => "consecutive-gateway-failure",
            EjectionReason::SuccessRate => "success-rate",
            EjectionReason::FailedProbe => "failed-probe",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Where an endpoint stands in the ejection state machine at some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// In rotation.
    Healthy,
    /// Out of rotation until `until`.
    Ejected {
        until: Instant,
        reason: EjectionReason,
    },
    /// The ejection time has passed; the endpoint waits for its one probe request (`probing`
    /// while that request is in flight) to be readmitted or ejected again.
    HalfOpen { probing: bool },
}

/// The destination's part of outlier detection: its configuration, the ejection cap's count
/// and the interval clock. Shared (through an `Arc`) by the [`OutlierState`] of every
/// endpoint of the destination.
pub struct OutlierDetector {
    /// Replaced by [`OutlierDetector::reconfigure`]; copied out under the lock, never held.
    config: Mutex<OutlierDetection>,
    /// Endpoints ejected or half-open right now (not yet readmitted), for the cap. An
    /// endpoint adds itself when ejected and removes itself when readmitted or dropped.
    ejected: AtomicUsize,
    /// Ejections so far, by [`EjectionReason::index`], for metrics.
    ejections: [AtomicU64; 4],
    /// When the interval work last ran (`None` until the first outcome or pick starts the
    /// clock).
    last_interval: Mutex<Option<Instant>>,
}

impl OutlierDetector {
    pub fn new(config: &OutlierDetection) -> Arc<Self> {
        Arc::new(OutlierDetector {
            config: Mutex::new(config.clone()),
            ejected: AtomicUsize::new(0),
            ejections: Default::default(),
            last_interval: Mutex::new(None),
        })
    }

    /// New configuration for the same destination. Ejections in progress keep their end
    /// time; when detection is turned off the caller readmits every endpoint
    /// ([`OutlierState::readmit`]).
    pub fn reconfigure(&self, config: &OutlierDetection) {
        *lock(&self.config) = config.clone();
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> OutlierDetection {
        lock(&self.config).clone()
    }

    /// Endpoints ejected or half-open now: those the ejection cap counts.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Ejections so far for `reason` (a counter).
    pub fn ejections(&self, reason: EjectionReason) -> u64 {
        self.ejections[reason.index()].load(Ordering::Relaxed)
    }

    /// How many whole intervals have passed since the interval work last ran, if at least
    /// one has; the clock then moves on by that many intervals, so exactly one caller gets
    /// `Some` and must call [`OutlierDetector::run_interval`]. The first call starts the clock.
    /// A zero interval never comes due.
    pub fn interval_due(&self, now: Instant) -> Option<u32> {
        let interval = lock(&self.config).interval;
        let mut last = lock(&self.last_interval);
        let Some(start) = *last else {
            *last = Some(now);
            return None;
        };
        if interval.is_zero() {
            return None;
        }
        let elapsed = now.saturating_duration_since(start);
        let intervals = (elapsed.as_nanos() / interval.as_nanos()).min(u128::from(u32::MAX));
        if intervals == 0 {
            return None;
        }
        let intervals = intervals as u32;
        *last = Some(start + interval * intervals);
        Some(intervals)
    }

    /// The work of `intervals` elapsed intervals over every endpoint of the destination:
    /// ejection counts of healthy endpoints decay by one per interval, then success-rate
    /// ejection compares the endpoints that had enough requests since the last run, and the
    /// interval's counts start again from zero. `n` is the number of endpoints the
    /// destination has now, for the ejection cap.
    pub fn run_interval(
        &self,
        endpoints: &[&OutlierState],
        intervals: u32,
        n: usize,
        now: Instant,
    ) {
        let config = self.config();
        // (endpoint, success rate in percent) of the endpoints with enough volume.
        let mut rates = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            let mut state = endpoint.lock();
            let (successes, total) = (state.successes, state.total);
            state.successes = 0;
            state.total = 0;
            if state.ejected.is_none() {
                state.ejections = state.ejections.saturating_sub(intervals);
                if total > 0 && total >= u64::from(config.success_rate_request_volume) {
                    rates.push((i, successes as f64 * 100.0 / total as f64));
                }
            }
        }
        if !config.enabled
            || rates.is_empty()
            || rates.len() < config.success_rate_minimum_hosts as usize
        {
            return;
        }
        let count = rates.len() as f64;
        let mean = rates.iter().map(|&(_, rate)| rate).sum::<f64>() / count;
        let variance = rates
            .iter()
            .map(|&(_, rate)| (rate - mean) * (rate - mean))
            .sum::<f64>()
            / count;
        let threshold =
            mean - variance.sqrt() * f64::from(config.success_rate_stdev_factor) / 1000.0;
        for (i, rate) in rates {
            if rate < threshold {
                let endpoint = endpoints[i];
                let mut state = endpoint.lock();
                if state.ejected.is_none() {
                    endpoint.eject(&mut state, &config, EjectionReason::SuccessRate, n, now);
                }
            }
        }
    }

    /// Takes one place under the cap for a new ejection: at most
    /// max(1, ⌊n × max_ejection_percent / 100⌋) endpoints ejected, and never the last of the
    /// `n` that is not.
    fn try_reserve(&self, config: &OutlierDetection, n: usize) -> bool {
        let cap = (n.saturating_mul(config.max_ejection_percent as usize) / 100).max(1);
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |ejected| {
                (ejected < cap && ejected + 1 < n).then_some(ejected + 1)
            })
            .is_ok()
    }

    fn release(&self) {
        self.ejected.fetch_sub(1, Ordering::AcqRel);
    }

    fn count(&self, reason: EjectionReason) {
        self.ejections[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// One endpoint's part of outlier detection.
pub struct OutlierState {
    /// The destination's configuration and cap, shared with the other endpoints.
    detector: Arc<OutlierDetector>,
    /// Mirrors `Counters::ejected.is_some()` so that the balancer's common case, a healthy
    /// endpoint, costs one atomic load rather than a lock.
    out: AtomicBool,
    /// Everything else, changed together under one short lock.
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    /// Failures of either kind since the last success.
    consecutive_5xx: u32,
    /// Gateway failures since the last success or other 5xx.
    consecutive_gateway: u32,
    /// Times ejected, which multiplies the ejection time; decays while healthy.
    ejections: u32,
    /// Set while ejected or half-open (`now >= until`).
    ejected: Option<Ejection>,
    /// Bumped by every ejection and readmission, so a probe from an earlier ejection cannot
    /// settle or free the probe slot of a later one.
    epoch: u64,
    /// Outcomes since the last interval, for success-rate ejection (healthy time only).
    successes: u64,
    total: u64,
}

#[derive(Clone, Copy)]
struct Ejection {
    until: Instant,
    reason: EjectionReason,
    /// The half-open probe is in flight.
    probing: bool,
}

impl OutlierState {
    pub fn new(detector: Arc<OutlierDetector>) -> Self {
        OutlierState {
            detector,
            out: AtomicBool::new(false),
            counters: Mutex::default(),
        }
    }

    /// Healthy, in the common case without taking a lock.
    pub fn is_healthy(&self) -> bool {
        !self.out.load(Ordering::Acquire)
    }

    pub fn state(&self, now: Instant) -> EndpointState {
        if self.is_healthy() {
            return EndpointState::Healthy;
        }
        match self.lock().ejected {
            None => EndpointState::Healthy,
            Some(ejection) if now < ejection.until => EndpointState::Ejected {
                until: ejection.until,
                reason: ejection.reason,
            },
            Some(ejection) => EndpointState::HalfOpen {
                probing: ejection.probing,
            },
        }
    }

    /// Takes the probe slot of a half-open endpoint whose probe is free; the returned epoch
    /// goes back into [`OutlierState::record`] or [`OutlierState::cancel_probe`].
    pub fn try_start_probe(&self, now: Instant) -> Option<u64> {
        if self.is_healthy() {
            return None;
        }
        let mut state = self.lock();
        let epoch = state.epoch;
        match &mut state.ejected {
            Some(ejection) if now >= ejection.until && !ejection.probing => {
                ejection.probing = true;
                Some(epoch)
            }
            _ => None,
        }
    }

    /// The probe taken at `epoch` ended without an outcome: the slot is free again.
    pub fn cancel_probe(&self, epoch: u64) {
        let mut state = self.lock();
        if state.epoch == epoch {
            if let Some(ejection) = &mut state.ejected {
                ejection.probing = false;
            }
        }
    }

    /// An attempt ended. `probe` is the epoch from [`OutlierState::try_start_probe`] when the
    /// attempt was the half-open probe: its success readmits the endpoint, its failure ejects
    /// it again at once. Outcomes of other attempts count only while the endpoint is healthy
    /// (those that were in flight when it was ejected, or sent in panic, are ignored).
    /// Reaching a consecutive-failure threshold ejects when the cap allows; when it does
    /// not, each further failure tries again. `n` is the number of endpoints the destination
    /// has, for the cap.
    pub fn record(&self, outcome: Outcome, probe: Option<u64>, n: usize, now: Instant) {
        let config = self.detector.config();
        let mut state = self.lock();
        if !config.enabled {
            return;
        }
        if let (Some(epoch), Some(ejection)) = (probe, state.ejected) {
            if epoch == state.epoch {
                if outcome == Outcome::Success {
                    self.readmit_locked(&mut state);
                } else {
                    state.ejections = state.ejections.saturating_add(1);
                    state.epoch += 1;
                    state.ejected = Some(Ejection {
                        until: now + ejection_time(&config, state.ejections),
                        reason: EjectionReason::FailedProbe,
                        probing: false,
                    });
                    debug_assert!(ejection.probing);
                    self.detector.count(EjectionReason::FailedProbe);
                }
            }
            return;
        }
        if state.ejected.is_some() {
            return;
        }
        state.total += 1;
        match outcome {
            Outcome::Success => {
                state.successes += 1;
                state.consecutive_5xx = 0;
                state.consecutive_gateway = 0;
                return;
            }
            Outcome::ServerError => {
                state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
                // As in Envoy: gateway failures count only when nothing else came between.
                state.consecutive_gateway = 0;
            }
            Outcome::GatewayFailure => {
                state.consecutive_5xx = state.consecutive_5xx.saturating_add(1);
                state.consecutive_gateway = state.consecutive_gateway.saturating_add(1);
            }
        }
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        let reason = if reached(
            state.consecutive_gateway,
            config.consecutive_gateway_failure,
        ) {
            EjectionReason::ConsecutiveGatewayFailure
        } else if reached(state.consecutive_5xx, config.consecutive_5xx) {
            EjectionReason::Consecutive5xx
        } else {
            return;
        };
        self.eject(&mut state, &config, reason, n, now);
    }

    /// Back in rotation with fresh counters (after a successful probe, or when detection
    /// is turned off). Nothing happens to a healthy endpoint.
    pub fn readmit(&self) {
        let mut state = self.lock();
        self.readmit_locked(&mut state);
    }

    fn readmit_locked(&self, state: &mut Counters) {
        if state.ejected.take().is_some() {
            state.epoch += 1;
            state.consecutive_5xx = 0;
            state.consecutive_gateway = 0;
            state.successes = 0;
            state.total = 0;
            self.out.store(false, Ordering::Release);
            self.detector.release();
        }
    }

    /// Ejects a healthy endpoint if the cap allows.
    fn eject(
        &self,
        state: &mut Counters,
        config: &OutlierDetection,
        reason: EjectionReason,
        n: usize,
        now: Instant,
    ) {
        if !config.enabled || !self.detector.try_reserve(config, n) {
            return;
        }
        state.ejections = state.ejections.saturating_add(1);
        state.epoch += 1;
        state.consecutive_5xx = 0;
        state.consecutive_gateway = 0;
        state.ejected = Some(Ejection {
            until: now + ejection_time(config, state.ejections),
            reason,
            probing: false,
        });
        self.out.store(true, Ordering::Release);
        self.detector.count(reason);
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        lock(&self.counters)
    }
}

impl Drop for OutlierState {
    /// An endpoint that leaves while ejected gives its place under the cap back.
    fn drop(&mut self) {
        let state = self
            .counters
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if state.ejected.is_some() {
            self.detector.release();
        }
    }
}

/// `base_ejection_time × ejections`, capped at `max_ejection_time` (but never below one base
/// time, as in Envoy).
fn ejection_time(config: &OutlierDetection, ejections: u32) -> Duration {
    let cap = config.max_ejection_time.max(config.base_ejection_time);
    config
        .base_ejection_time
        .checked_mul(ejections)
        .map_or(cap, |time| time.min(cap))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierDetection {
        OutlierDetection::default()
    }

    /// `count` endpoints of one destination.
    fn endpoints(
        config: &OutlierDetection,
        count: usize,
    ) -> (Arc<OutlierDetector>, Vec<OutlierState>) {
        let detector = OutlierDetector::new(config);
        let states = (0..count)
            .map(|_| OutlierState::new(detector.clone()))
            .collect();
        (detector, states)
    }

    fn fail(state: &OutlierState, outcome: Outcome, times: usize, n: usize, now: Instant) {
        for _ in 0..times {
            state.record(outcome, None, n, now);
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Runs the probe of a half-open endpoint to its end.
    fn probe(state: &OutlierState, outcome: Outcome, n: usize, now: Instant) {
        let epoch = state.try_start_probe(now).expect("probe slot free");
        state.record(outcome, Some(epoch), n, now);
    }

    #[test]
    fn reasons_have_labels() {
        let labels: Vec<_> = EjectionReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "consecutive-5xx",
                "consecutive-gateway-failure",
                "success-rate",
                "failed-probe"
            ]
        );
        for (i, reason) in EjectionReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
    }

    #[test]
    fn five_consecutive_gateway_failures_eject() {
        let now = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        fail(&states[0], Outcome::GatewayFailure, 4, 3, now);
        assert_eq!(states[0].state(now), EndpointState::Healthy);
        fail(&states[0], Outcome::GatewayFailure, 1, 3, now);
        assert_eq!(
            states[0].state(now),
            EndpointState::Ejected {
                until: now + secs(30),
                reason: EjectionReason::ConsecutiveGatewayFailure
            }
        );
        assert!(!states[0].is_healthy());
        assert_eq!(detector.ejected(), 1);
        assert_eq!(
            detector.ejections(EjectionReason::ConsecutiveGatewayFailure),
            1
        );
        assert_eq!(detector.ejections(EjectionReason::Consecutive5xx), 0);
    }

    #[test]
    fn server_errors_count_for_5xx_only() {
        let now = Instant::now();
        let config = OutlierDetection {
            consecutive_5xx: 0,
            ..OutlierDetection::default()
        };
        let (_, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::ServerError, 20, 3, now);
        assert!(states[0].is_healthy(), "5xx detector is off");

        let config = OutlierDetection {
            consecutive_gateway_failure: 0,
            ..OutlierDetection::default()
        };
        let (detector, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::ServerError, 3, 3, now);
        fail(&states[0], Outcome::GatewayFailure, 2, 3, now);
        assert!(!states[0].is_healthy());
        assert_eq!(detector.ejections(EjectionReason::Consecutive5xx), 1);
    }

    #[test]
    fn a_server_error_interrupts_gateway_failures() {
        let now = Instant::now();
        let config = OutlierDetection {
            consecutive_5xx: 0,
            ..OutlierDetection::default()
        };
        let (_, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::GatewayFailure, 4, 3, now);
        fail(&states[0], Outcome::ServerError, 1, 3, now);
        fail(&states[0], Outcome::GatewayFailure, 4, 3, now);
        assert!(states[0].is_healthy());
        fail(&states[0], Outcome::GatewayFailure, 1, 3, now);
        assert!(!states[0].is_healthy());
    }

    #[test]
    fn a_success_resets_the_counts() {
        let now = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        for _ in 0..10 {
            fail(&states[0], Outcome::GatewayFailure, 4, 3, now);
            states[0].record(Outcome::Success, None, 3, now);
        }
        assert!(states[0].is_healthy());
        assert_eq!(detector.ejected(), 0);
    }

    #[test]
    fn disabled_never_ejects() {
        let now = Instant::now();
        let config = OutlierDetection {
            enabled: false,
            ..OutlierDetection::default()
        };
        let (detector, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::GatewayFailure, 50, 3, now);
        assert!(states[0].is_healthy());
        assert_eq!(detector.ejected(), 0);
    }

    #[test]
    fn ejection_time_grows_and_is_capped() {
        let config = config();
        assert_eq!(ejection_time(&config, 1), secs(30));
        assert_eq!(ejection_time(&config, 2), secs(60));
        assert_eq!(ejection_time(&config, 10), secs(300));
        assert_eq!(ejection_time(&config, 11), secs(300));
        assert_eq!(ejection_time(&config, u32::MAX), secs(300));

        let mut now = Instant::now();
        let (detector, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        let mut expected = 30;
        for round in 1..=12 {
            let EndpointState::Ejected { until, .. } = states[0].state(now) else {
                panic!("round {round}: not ejected");
            };
            assert_eq!(until - now, secs(expected), "round {round}");
            now = until;
            probe(&states[0], Outcome::GatewayFailure, 3, now);
            expected = (expected + 30).min(300);
        }
        assert_eq!(detector.ejections(EjectionReason::FailedProbe), 12);
        assert_eq!(detector.ejected(), 1, "a failed probe takes no new place");
    }

    #[test]
    fn half_open_gets_one_probe_and_success_readmits() {
        let start = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        let state = &states[0];
        fail(state, Outcome::GatewayFailure, 5, 3, start);
        assert_eq!(
            state.try_start_probe(start + secs(29)),
            None,
            "still ejected"
        );

        let now = start + secs(30);
        assert_eq!(state.state(now), EndpointState::HalfOpen { probing: false });
        let epoch = state.try_start_probe(now).expect("probe");
        assert_eq!(state.state(now), EndpointState::HalfOpen { probing: true });
        assert_eq!(state.try_start_probe(now), None, "exactly one probe");
        // An attempt sent before the ejection ends now: it does not decide anything.
        state.record(Outcome::Success, None, 3, now);
        assert_eq!(state.state(now), EndpointState::HalfOpen { probing: true });

        state.record(Outcome::Success, Some(epoch), 3, now);
        assert_eq!(state.state(now), EndpointState::Healthy);
        assert_eq!(detector.ejected(), 0);
        // Counters start again: four more failures do not eject.
        fail(state, Outcome::GatewayFailure, 4, 3, now);
        assert!(state.is_healthy());
    }

    #[test]
    fn failed_probe_ejects_again_for_longer() {
        let start = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        let state = &states[0];
        fail(state, Outcome::GatewayFailure, 5, 3, start);
        let now = start + secs(30);
        probe(state, Outcome::ServerError, 3, now);
        assert_eq!(
            state.state(now),
            EndpointState::Ejected {
                until: now + secs(60),
                reason: EjectionReason::FailedProbe
            }
        );
        assert_eq!(detector.ejections(EjectionReason::FailedProbe), 1);
        assert_eq!(detector.ejected(), 1);
    }

    #[test]
    fn cancelled_probe_frees_the_slot_but_a_stale_one_does_not() {
        let start = Instant::now();
        let (_, states) = endpoints(&config(), 3);
        let state = &states[0];
        fail(state, Outcome::GatewayFailure, 5, 3, start);
        let now = start + secs(30);
        let epoch = state.try_start_probe(now).unwrap();
        state.cancel_probe(epoch);
        let second = state.try_start_probe(now).expect("slot freed");
        assert_eq!(second, epoch);

        // The second probe fails; a late cancel from the first ejection must not free the
        // new ejection's probe slot.
        state.record(Outcome::GatewayFailure, Some(second), 3, now);
        let later = now + secs(60);
        let third = state.try_start_probe(later).unwrap();
        state.cancel_probe(epoch);
        assert_eq!(state.try_start_probe(later), None);
        state.cancel_probe(third);
        assert!(state.try_start_probe(later).is_some());
    }

    #[test]
    fn outcomes_while_ejected_are_ignored() {
        let now = Instant::now();
        let config = OutlierDetection {
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (detector, states) = endpoints(&config, 3);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        let ejected = states[0].state(now);
        // Attempts that were in flight, or sent in panic mode, end while it is ejected.
        fail(&states[0], Outcome::GatewayFailure, 10, 3, now + secs(10));
        states[0].record(Outcome::Success, None, 3, now + secs(10));
        assert_eq!(states[0].state(now), ejected);
        assert_eq!(detector.ejected(), 1);
        assert_eq!(
            detector.ejections(EjectionReason::ConsecutiveGatewayFailure),
            1
        );
    }

    #[test]
    fn a_probe_from_an_earlier_ejection_decides_nothing() {
        let start = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        let state = &states[0];
        fail(state, Outcome::GatewayFailure, 5, 3, start);
        let now = start + secs(30);
        let stale = state.try_start_probe(now).unwrap();
        // Readmitted meanwhile (detection turned off and on), then ejected again.
        state.readmit();
        fail(state, Outcome::GatewayFailure, 5, 3, now);
        let ejected = state.state(now);
        assert!(matches!(ejected, EndpointState::Ejected { .. }));
        state.record(Outcome::Success, Some(stale), 3, now);
        assert_eq!(state.state(now), ejected);
        assert_eq!(detector.ejected(), 1);
    }

    #[test]
    fn cap_allows_one_of_three_at_ten_percent() {
        let now = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        fail(&states[1], Outcome::GatewayFailure, 5, 3, now);
        assert!(!states[0].is_healthy());
        assert!(states[1].is_healthy(), "10 % of 3 still allows only one");
        assert_eq!(detector.ejected(), 1);

        // Once the first is readmitted, the next failure of the second ejects it.
        probe(&states[0], Outcome::Success, 3, now + secs(30));
        fail(&states[1], Outcome::GatewayFailure, 1, 3, now + secs(30));
        assert!(!states[1].is_healthy());
    }

    #[test]
    fn cap_never_ejects_the_last_endpoint() {
        let now = Instant::now();
        let config = OutlierDetection {
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (detector, states) = endpoints(&config, 3);
        for state in &states {
            fail(state, Outcome::GatewayFailure, 5, 3, now);
        }
        assert_eq!(detector.ejected(), 2);
        assert!(states[2].is_healthy());

        let (detector, states) = endpoints(&config, 1);
        fail(&states[0], Outcome::GatewayFailure, 100, 1, now);
        assert!(states[0].is_healthy(), "a lone endpoint is never ejected");
        assert_eq!(detector.ejected(), 0);
    }

    #[test]
    fn cap_follows_the_percentage() {
        let now = Instant::now();
        let config = OutlierDetection {
            max_ejection_percent: 30,
            ..OutlierDetection::default()
        };
        let (detector, states) = endpoints(&config, 10);
        for state in &states {
            fail(state, Outcome::GatewayFailure, 5, 10, now);
        }
        assert_eq!(detector.ejected(), 3);
    }

    #[test]
    fn dropping_an_ejected_endpoint_frees_its_place() {
        let now = Instant::now();
        let (detector, mut states) = endpoints(&config(), 3);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        assert_eq!(detector.ejected(), 1);
        states.remove(0);
        assert_eq!(detector.ejected(), 0);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        assert!(!states[0].is_healthy());
    }

    #[test]
    fn readmit_when_turned_off() {
        let now = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        fail(&states[0], Outcome::GatewayFailure, 5, 3, now);
        states[0].readmit();
        assert!(states[0].is_healthy());
        assert_eq!(states[0].state(now), EndpointState::Healthy);
        assert_eq!(detector.ejected(), 0);
    }

    #[test]
    fn interval_comes_due_once_per_interval() {
        let start = Instant::now();
        let (detector, _) = endpoints(&config(), 1);
        assert_eq!(detector.interval_due(start), None, "starts the clock");
        assert_eq!(detector.interval_due(start + secs(9)), None);
        assert_eq!(detector.interval_due(start + secs(10)), Some(1));
        assert_eq!(
            detector.interval_due(start + secs(10)),
            None,
            "only one caller"
        );
        assert_eq!(detector.interval_due(start + secs(19)), None);
        assert_eq!(detector.interval_due(start + secs(45)), Some(3));
        assert_eq!(detector.interval_due(start + secs(49)), None);
        assert_eq!(detector.interval_due(start + secs(50)), Some(1));
    }

    #[test]
    fn ejection_count_decays_while_healthy() {
        let start = Instant::now();
        let (detector, states) = endpoints(&config(), 3);
        let state = &states[0];
        let all: Vec<&OutlierState> = states.iter().collect();
        // Ejected twice: 30 s, then 60 s after a failed probe; readmitted at 90 s.
        fail(state, Outcome::GatewayFailure, 5, 3, start);
        probe(state, Outcome::GatewayFailure, 3, start + secs(30));
        // Intervals while ejected do not decay.
        detector.run_interval(&all, 5, 3, start + secs(60));
        let now = start + secs(90);
        probe(state, Outcome::Success, 3, now);

        // One interval healthy: count 2 → 1, so the next ejection lasts 60 s (1 + 1).
        detector.run_interval(&all, 1, 3, now);
        fail(state, Outcome::GatewayFailure, 5, 3, now);
        let EndpointState::Ejected { until, .. } = state.state(now) else {
            panic!("not ejected");
        };
        assert_eq!(until - now, secs(60));

        // Readmitted, then many intervals: the count decays to zero (ejection back to 30 s).
        let now = until;
        probe(state, Outcome::Success, 3, now);
        detector.run_interval(&all, 10, 3, now);
        fail(state, Outcome::GatewayFailure, 5, 3, now);
        let EndpointState::Ejected { until, .. } = state.state(now) else {
            panic!("not ejected");
        };
        assert_eq!(until - now, secs(30));
    }

    /// Six endpoints with 200 requests each in the interval, one of them failing half (in
    /// alternation, so never five in a row).
    fn six_with_one_failing_half(
        config: &OutlierDetection,
    ) -> (Arc<OutlierDetector>, Vec<OutlierState>) {
        let now = Instant::now();
        let (detector, states) = endpoints(config, 6);
        for (i, state) in states.iter().enumerate() {
            for request in 0..200 {
                let outcome = if i == 5 && request % 2 == 0 {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                state.record(outcome, None, 6, now);
            }
        }
        (detector, states)
    }

    #[test]
    fn success_rate_ejects_the_outlier() {
        let now = Instant::now();
        let (detector, states) = six_with_one_failing_half(&config());
        assert!(states.iter().all(OutlierState::is_healthy));
        let all: Vec<&OutlierState> = states.iter().collect();
        detector.run_interval(&all, 1, 6, now);
        for (i, state) in states.iter().enumerate() {
            assert_eq!(state.is_healthy(), i != 5, "endpoint {i}");
        }
        assert_eq!(
            states[5].state(now),
            EndpointState::Ejected {
                until: now + secs(30),
                reason: EjectionReason::SuccessRate
            }
        );
        assert_eq!(detector.ejections(EjectionReason::SuccessRate), 1);

        // The counts started again: the next interval has no volume, so nothing changes.
        states[5].readmit();
        detector.run_interval(&all, 1, 6, now);
        assert!(states.iter().all(OutlierState::is_healthy));
    }

    #[test]
    fn success_rate_needs_enough_hosts_and_volume() {
        let now = Instant::now();
        let config = OutlierDetection {
            success_rate_minimum_hosts: 7,
            ..OutlierDetection::default()
        };
        let (detector, states) = six_with_one_failing_half(&config);
        let all: Vec<&OutlierState> = states.iter().collect();
        detector.run_interval(&all, 1, 6, now);
        assert!(states.iter().all(OutlierState::is_healthy), "only 6 hosts");

        let config = OutlierDetection {
            success_rate_request_volume: 201,
            ..OutlierDetection::default()
        };
        let (detector, states) = six_with_one_failing_half(&config);
        let all: Vec<&OutlierState> = states.iter().collect();
        detector.run_interval(&all, 1, 6, now);
        assert!(
            states.iter().all(OutlierState::is_healthy),
            "too few requests"
        );
    }
}
