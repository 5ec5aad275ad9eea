//! Endpoint selection for one destination (DESIGN.md §6): after routing has chosen a Service
//! port, the balancer chooses which of its endpoints an attempt goes to, and the attempt's
//! end reports back its latency and [`Outcome`].
//!
//! - [`Endpoints`] lives as long as the destination, across configuration snapshots: it holds
//!   the [`OutlierDetector`] and a registry handing out one [`EndpointHealth`] per address, so
//!   that an endpoint present in two successive snapshots keeps its latency and ejection
//!   state.
//! - [`EndpointHealth`] is one endpoint's state: peak-EWMA latency, requests in flight, and
//!   its [`OutlierState`].
//! - [`Endpoints::pick`] chooses by power of two choices over peak-EWMA cost (the default) or
//!   round-robin, skips ejected endpoints and those the request already tried, gives a
//!   half-open endpoint its probe first, and never leaves a caller without an endpoint while
//!   there are any (panic mode).
//! - [`Pick`] is the attempt in flight; [`Pick::finish`] reports how it went, dropping it
//!   cancels it.
//!
//! Interval work of outlier detection (decay, success rate) runs lazily inside `pick` and
//! `finish` when an interval has passed; there is no background task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use skiff_api::traffic::{LoadBalancer, OutlierDetection};
use tokio::time::Instant;

use super::outlier::{EjectionReason, EndpointState, Outcome, OutlierDetector, OutlierState};

/// Latency assumed for an endpoint without a sample yet (Linkerd's default), so that new
/// endpoints get traffic without being flooded.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Time constant of the peak-EWMA decay: a sample this old weighs 1/e.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// The endpoints of one destination (a Service port), long-lived across configuration
/// snapshots.
pub struct Endpoints {
    /// Behind its own `Arc` so that each [`Pick`] can reach the destination when it ends.
    shared: Arc<Shared>,
}

/// What [`Endpoints`] and its [`Pick`]s share (a `Pick` outlives the borrow of `Endpoints`
/// that made it).
struct Shared {
    detector: Arc<OutlierDetector>,
    /// Round-robin when set, else power of two choices over peak EWMA; replaced by
    /// `reconfigure`.
    round_robin: AtomicBool,
    /// Where round-robin looks next, an index into the candidates.
    cursor: AtomicUsize,
    /// Hands out the same state for an address while a snapshot holds it.
    registry: Mutex<Registry>,
}

/// Weak references to every endpoint state handed out: the state lives as long as some
/// snapshot holds it.
#[derive(Default)]
struct Registry {
    endpoints: HashMap<SocketAddr, Weak<EndpointHealth>>,
    /// Size at which dead entries are next pruned (twice the live count at the last prune),
    /// so pruning costs amortized O(1) per lookup.
    prune_at: usize,
}

/// One endpoint's state: what the balancer and outlier detection know about it.
pub struct EndpointHealth {
    /// Where the endpoint listens; the key of the registry and what `avoid` lists.
    pub addr: SocketAddr,
    /// Attempts picked and not yet finished or dropped; multiplies the latency cost.
    in_flight: AtomicUsize,
    /// The other factor of the cost; fed by [`Pick::finish`].
    latency: Mutex<PeakEwma>,
    /// Ejection state; decides whether `pick` may choose the endpoint.
    outlier: OutlierState,
}

/// Peak-EWMA latency (Finagle, Linkerd): a sample above the estimate replaces it at once, so
/// a slowing endpoint loses traffic quickly; below it, the estimate moves toward the sample
/// with weight `1 − exp(−elapsed / EWMA_DECAY)`.
#[derive(Default)]
struct PeakEwma {
    /// Estimate in nanoseconds and when it was last updated; `None` before the first sample.
    sample: Option<(f64, Instant)>,
}

impl PeakEwma {
    fn observe(&mut self, latency: Duration, now: Instant) {
        let rtt = latency.as_nanos() as f64;
        let estimate = match self.sample {
            Some((estimate, at)) if rtt < estimate => {
                let decay = (-elapsed_ratio(at, now)).exp();
                estimate * decay + rtt * (1.0 - decay)
            }
            _ => rtt,
        };
        self.sample = Some((estimate, now));
    }

    /// A failed attempt's latency: a peak counts like any sample; a lower one leaves the
    /// estimate where it was and restarts its decay, so an endpoint that fails fast never
    /// looks faster for it and draws more traffic (outlier detection deals with the failures).
    fn observe_failure(&mut self, latency: Duration, now: Instant) {
        match self.sample {
            Some((estimate, _)) if (latency.as_nanos() as f64) < estimate => {
                self.sample = Some((estimate, now));
            }
            _ => self.observe(latency, now),
        }
    }

    /// The estimate now, in nanoseconds. Between samples it decays toward zero with the same
    /// time constant (as Linkerd's does), so an endpoint that once was slow and is no longer
    /// picked gets tried again after a while instead of being starved forever.
    fn estimate(&self, now: Instant) -> f64 {
        match self.sample {
            Some((estimate, at)) => estimate * (-elapsed_ratio(at, now)).exp(),
            None => DEFAULT_RTT.as_nanos() as f64,
        }
    }
}

/// `(now − at) / EWMA_DECAY`.
fn elapsed_ratio(at: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(at).as_secs_f64() / EWMA_DECAY.as_secs_f64()
}

/// One attempt on an endpoint, in flight until [`Pick::finish`] or drop.
#[must_use = "an attempt is in flight until the pick is finished or dropped"]
pub struct Pick {
    /// Index of the endpoint in the candidates given to [`Endpoints::pick`].
    pub index: usize,
    /// The attempt is the one probe of a half-open endpoint: its outcome readmits the
    /// endpoint or ejects it again.
    pub probe: bool,
    endpoint: Arc<EndpointHealth>,
    /// For the lazy interval work when the attempt ends.
    shared: Arc<Shared>,
    /// The epoch of the probe slot, when `probe`.
    probe_epoch: Option<u64>,
    /// Number of candidates when picked: the `n` of the ejection cap.
    candidates: usize,
    /// Set by `finish`, so that drop does not count a cancellation.
    finished: bool,
}

impl Endpoints {
    pub fn new(outlier: &OutlierDetection, balancer: LoadBalancer) -> Arc<Self> {
        Arc::new(Endpoints {
            shared: Arc::new(Shared {
                detector: OutlierDetector::new(outlier),
                round_robin: AtomicBool::new(balancer == LoadBalancer::RoundRobin),
                cursor: AtomicUsize::new(0),
                registry: Mutex::default(),
            }),
        })
    }

    /// New configuration for the same destination; endpoint state is kept (ejections in
    /// progress keep their end time), except that turning outlier detection off readmits
    /// every endpoint at once.
    pub fn reconfigure(&self, outlier: &OutlierDetection, balancer: LoadBalancer) {
        let shared = &self.shared;
        shared.detector.reconfigure(outlier);
        shared
            .round_robin
            .store(balancer == LoadBalancer::RoundRobin, Ordering::Relaxed);
        if !outlier.enabled {
            for endpoint in shared.live() {
                endpoint.outlier.readmit();
            }
        }
    }

    /// The state of the endpoint at `addr`: the same `Arc` while any snapshot still holds
    /// it, a fresh (healthy, unmeasured) one otherwise.
    pub fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointHealth> {
        let mut registry = self.shared.lock_registry();
        if let Some(endpoint) = registry.endpoints.get(&addr).and_then(Weak::upgrade) {
            return endpoint;
        }
        if registry.endpoints.len() >= registry.prune_at {
            registry.endpoints.retain(|_, weak| weak.strong_count() > 0);
            registry.prune_at = (registry.endpoints.len() * 2).max(16);
        }
        let endpoint = Arc::new(EndpointHealth {
            addr,
            in_flight: AtomicUsize::new(0),
            latency: Mutex::default(),
            outlier: OutlierState::new(self.shared.detector.clone()),
        });
        registry.endpoints.insert(addr, Arc::downgrade(&endpoint));
        endpoint
    }

    /// Chooses among `candidates` (the snapshot's endpoints of this destination, whose
    /// number is the `n` of the ejection cap), skipping ejected endpoints and those in
    /// `avoid` (addresses this request already tried).
    ///
    /// A half-open endpoint whose probe slot is free (and that is not avoided) is picked
    /// first, as the probe. Otherwise, among the eligible endpoints: with peak EWMA, two
    /// distinct ones at random and the one with the lower cost, latency estimate ×
    /// (in flight + 1); with round-robin, the next one after the cursor. When none is
    /// eligible, the same choice is made among the healthy avoided ones (so a request can
    /// be retried on the only endpoint there is), then among the not avoided ones whatever
    /// their state, then among all ("panic": the service stays reachable while every
    /// endpoint is ejected). `None` only when `candidates` is empty.
    pub fn pick(
        &self,
        candidates: &[Arc<EndpointHealth>],
        avoid: &[SocketAddr],
        now: Instant,
        rng: &mut fastrand::Rng,
    ) -> Option<Pick> {
        if candidates.is_empty() {
            return None;
        }
        let shared = &self.shared;
        shared.run_interval_if_due(candidates.len(), now);
        let avoided = |endpoint: &EndpointHealth| avoid.contains(&endpoint.addr);

        for (index, endpoint) in candidates.iter().enumerate() {
            if endpoint.outlier.is_healthy() || avoided(endpoint) {
                continue;
            }
            if let Some(epoch) = endpoint.outlier.try_start_probe(now) {
                return Some(start(shared, candidates, index, Some(epoch)));
            }
        }

        let tiers: [&dyn Fn(&EndpointHealth) -> bool; 4] = [
            &|e| e.outlier.is_healthy() && !avoided(e),
            &|e| e.outlier.is_healthy(),
            &|e| !avoided(e),
            &|_| true,
        ];
        let mut eligible = Vec::with_capacity(candidates.len());
        for tier in tiers {
            eligible.clear();
            eligible.extend((0..candidates.len()).filter(|&i| tier(&candidates[i])));
            if !eligible.is_empty() {
                break;
            }
        }
        let index = if shared.round_robin.load(Ordering::Relaxed) {
            shared.next_in_turn(candidates.len(), &eligible)
        } else {
            power_of_two_choices(candidates, &eligible, now, rng)
        };
        Some(start(shared, candidates, index, None))
    }

    /// Endpoints out of rotation now, ejected or half-open and not yet readmitted (a gauge).
    /// Counts every endpoint some snapshot still holds.
    pub fn ejected(&self, now: Instant) -> usize {
        self.shared
            .live()
            .iter()
            .filter(|endpoint| endpoint.is_ejected(now))
            .count()
    }

    /// Ejections so far for `reason` (a counter).
    pub fn ejections(&self, reason: EjectionReason) -> u64 {
        self.shared.detector.ejections(reason)
    }
}

/// Puts an attempt on `candidates[index]` in flight.
fn start(
    shared: &Arc<Shared>,
    candidates: &[Arc<EndpointHealth>],
    index: usize,
    probe: Option<u64>,
) -> Pick {
    let endpoint = candidates[index].clone();
    endpoint.in_flight.fetch_add(1, Ordering::AcqRel);
    Pick {
        index,
        probe: probe.is_some(),
        endpoint,
        shared: shared.clone(),
        probe_epoch: probe,
        candidates: candidates.len(),
        finished: false,
    }
}

impl Shared {
    /// The round-robin choice: the first eligible index at or after the cursor (modulo the
    /// number of candidates); the cursor moves past it.
    fn next_in_turn(&self, len: usize, eligible: &[usize]) -> usize {
        let mut cursor = self.cursor.load(Ordering::Relaxed);
        loop {
            let start = cursor % len;
            let index = eligible
                .iter()
                .copied()
                .find(|&i| i >= start)
                .unwrap_or(eligible[0]);
            match self.cursor.compare_exchange_weak(
                cursor,
                index + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return index,
                Err(actual) => cursor = actual,
            }
        }
    }

    /// Runs the outlier interval work if an interval has passed, over every live endpoint.
    fn run_interval_if_due(&self, candidates: usize, now: Instant) {
        if let Some(intervals) = self.detector.interval_due(now) {
            let live = self.live();
            let states: Vec<&OutlierState> = live.iter().map(|e| &e.outlier).collect();
            self.detector
                .run_interval(&states, intervals, candidates, now);
        }
    }

    /// Every endpoint some snapshot still holds; dead registry entries are pruned.
    fn live(&self) -> Vec<Arc<EndpointHealth>> {
        let mut registry = self.lock_registry();
        let mut live = Vec::with_capacity(registry.endpoints.len());
        registry.endpoints.retain(|_, weak| match weak.upgrade() {
            Some(endpoint) => {
                live.push(endpoint);
                true
            }
            None => false,
        });
        registry.prune_at = (registry.endpoints.len() * 2).max(16);
        drop(registry);
        live
    }

    fn lock_registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Power of two choices: two distinct random indices of `eligible` (or its only one), the
/// lower cost wins (the first on a tie, itself random).
fn power_of_two_choices(
    candidates: &[Arc<EndpointHealth>],
    eligible: &[usize],
    now: Instant,
    rng: &mut fastrand::Rng,
) -> usize {
    if eligible.len() == 1 {
        return eligible[0];
    }
    let first = rng.usize(..eligible.len());
    let mut second = rng.usize(..eligible.len() - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (eligible[first], eligible[second]);
    if candidates[b].cost(now) < candidates[a].cost(now) {
        b
    } else {
        a
    }
}

impl EndpointHealth {
    /// Out of rotation: ejected, or half-open and not yet readmitted by a successful probe.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.state(now) != EndpointState::Healthy
    }

    /// Where the endpoint stands in outlier detection.
    pub fn state(&self, now: Instant) -> EndpointState {
        self.outlier.state(now)
    }

    /// Attempts in flight on this endpoint.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The peak-EWMA latency estimate now ([`DEFAULT_RTT`] before the first sample).
    pub fn latency(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.lock_latency().estimate(now) as u64)
    }

    /// What the power of two choices compares: latency estimate × (in flight + 1). An
    /// endpoint without a sample costs nothing while idle, so a new endpoint gets a request as
    /// soon as it is drawn even when its peers are faster than [`DEFAULT_RTT`]; while that
    /// first request is pending it is estimated at `DEFAULT_RTT`, so it is not flooded.
    fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let latency = self.lock_latency();
        if latency.sample.is_none() && in_flight == 0 {
            return 0.0;
        }
        latency.estimate(now) * (in_flight + 1) as f64
    }

    fn lock_latency(&self) -> MutexGuard<'_, PeakEwma> {
        self.latency.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pick {
    /// The attempt ended. Its latency feeds the endpoint's peak EWMA (for a failure only
    /// when it is a new peak, so failing fast never pulls the estimate down and draws more
    /// traffic to a broken endpoint), its outcome feeds outlier detection, and it is no longer in
    /// flight.
    pub fn finish(mut self, outcome: Outcome, latency: Duration, now: Instant) {
        self.finished = true;
        let endpoint = &self.endpoint;
        {
            let mut ewma = endpoint.lock_latency();
            if outcome == Outcome::Success {
                ewma.observe(latency, now);
            } else {
                ewma.observe_failure(latency, now);
            }
        }
        self.shared.run_interval_if_due(self.candidates, now);
        endpoint
            .outlier
            .record(outcome, self.probe_epoch, self.candidates, now);
        // Drop takes the attempt out of flight.
    }

    /// The endpoint the attempt goes to.
    pub fn endpoint(&self) -> &Arc<EndpointHealth> {
        &self.endpoint
    }
}

impl Drop for Pick {
    /// Dropped without `finish`: a cancelled attempt (lost a hedge race, the client went
    /// away). No outcome is recorded; a probe gives its slot back.
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            if let Some(epoch) = self.probe_epoch {
                self.endpoint.outlier.cancel_probe(epoch);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i as u8], 8080))
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A destination with `count` endpoints and the snapshot list of their handles.
    fn destination(
        outlier: &OutlierDetection,
        balancer: LoadBalancer,
        count: usize,
    ) -> (Arc<Endpoints>, Vec<Arc<EndpointHealth>>) {
        let endpoints = Endpoints::new(outlier, balancer);
        let candidates = (0..count).map(|i| endpoints.endpoint(addr(i))).collect();
        (endpoints, candidates)
    }

    /// Finishes `times` attempts on endpoint `target` with `outcome`, picked by avoiding every
    /// other endpoint.
    fn hit(
        endpoints: &Endpoints,
        candidates: &[Arc<EndpointHealth>],
        target: usize,
        outcome: Outcome,
        times: usize,
        now: Instant,
    ) {
        let mut rng = fastrand::Rng::with_seed(3);
        let others: Vec<SocketAddr> = candidates
            .iter()
            .filter(|e| e.addr != candidates[target].addr)
            .map(|e| e.addr)
            .collect();
        for _ in 0..times {
            let pick = endpoints.pick(candidates, &others, now, &mut rng).unwrap();
            assert_eq!(pick.index, target);
            pick.finish(outcome, ms(1), now);
        }
    }

    /// Shares of `picks` picks, each finished at once with its endpoint's latency, one
    /// millisecond apart.
    fn shares(
        endpoints: &Endpoints,
        candidates: &[Arc<EndpointHealth>],
        latencies: &[Duration],
        picks: usize,
        start: Instant,
        rng: &mut fastrand::Rng,
    ) -> Vec<f64> {
        let mut counts = vec![0; candidates.len()];
        for i in 0..picks {
            let now = start + ms(i as u64);
            let pick = endpoints.pick(candidates, &[], now, rng).unwrap();
            counts[pick.index] += 1;
            let latency = latencies[pick.index];
            pick.finish(Outcome::Success, latency, now);
        }
        counts.iter().map(|&c| c as f64 / picks as f64).collect()
    }

    #[test]
    fn registry_keeps_live_endpoints_and_forgets_dropped_ones() {
        let endpoints = Endpoints::new(&OutlierDetection::default(), LoadBalancer::PeakEwma);
        let first = endpoints.endpoint(addr(1));
        let again = endpoints.endpoint(addr(1));
        assert!(Arc::ptr_eq(&first, &again));
        assert!(!Arc::ptr_eq(&first, &endpoints.endpoint(addr(2))));

        // State follows the handle: an ejected endpoint is still ejected in the next snapshot.
        let now = Instant::now();
        let others: Vec<_> = (2..5).map(|i| endpoints.endpoint(addr(i))).collect();
        let mut candidates = vec![first.clone()];
        candidates.extend(others.iter().cloned());
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        assert!(endpoints.endpoint(addr(1)).is_ejected(now));

        drop((first, again, candidates));
        let fresh = endpoints.endpoint(addr(1));
        assert!(
            !fresh.is_ejected(now),
            "a fresh state after every handle was dropped"
        );
        assert_eq!(fresh.in_flight(), 0);
        assert_eq!(fresh.latency(now), DEFAULT_RTT);
        assert_eq!(endpoints.ejected(now), 0);
    }

    #[test]
    fn registry_prunes_dead_entries() {
        let endpoints = Endpoints::new(&OutlierDetection::default(), LoadBalancer::PeakEwma);
        for i in 0..1000 {
            let port = 1000 + i as u16;
            drop(endpoints.endpoint(SocketAddr::from(([10, 0, 0, 1], port))));
        }
        let kept = endpoints.endpoint(addr(1));
        assert!(endpoints.shared.lock_registry().endpoints.len() <= 32);
        assert_eq!(endpoints.shared.live().len(), 1);
        drop(kept);
    }

    #[test]
    fn no_candidates_no_pick() {
        let endpoints = Endpoints::new(&OutlierDetection::default(), LoadBalancer::PeakEwma);
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(endpoints.pick(&[], &[], Instant::now(), &mut rng).is_none());
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays_toward_lower_samples() {
        let start = Instant::now();
        let mut ewma = PeakEwma::default();
        assert_eq!(ewma.estimate(start), DEFAULT_RTT.as_nanos() as f64);
        ewma.observe(ms(100), start);
        assert_eq!(ewma.estimate(start), 100e6);
        ewma.observe(ms(500), start);
        assert_eq!(ewma.estimate(start), 500e6, "a peak replaces the estimate");
        // 10 s later (one time constant) a 100 ms sample: 500/e + 100 (1 − 1/e).
        let later = start + EWMA_DECAY;
        ewma.observe(ms(100), later);
        let expected = 500e6 / std::f64::consts::E + 100e6 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((ewma.estimate(later) - expected).abs() < 1.0);
        // Right after a peak, a lower sample barely moves it.
        ewma.observe(ms(400), later);
        ewma.observe(ms(10), later + ms(1));
        assert!(ewma.estimate(later + ms(1)) > 399e6);
        // Unread, the estimate decays toward zero so a slow endpoint is retried eventually.
        let idle = later + ms(1) + EWMA_DECAY * 3;
        assert!(ewma.estimate(idle) < 400e6 / 19.0);
    }

    #[test]
    fn p2c_sends_little_to_a_slow_endpoint() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 5);
        let mut latencies = vec![ms(10); 5];
        latencies[2] = ms(100);
        let mut rng = fastrand::Rng::with_seed(42);
        // Warm-up: every endpoint gets a sample.
        shares(&endpoints, &candidates, &latencies, 100, start, &mut rng);
        let shares = shares(
            &endpoints,
            &candidates,
            &latencies,
            10_000,
            start + secs(1),
            &mut rng,
        );
        assert!(shares[2] < 0.10, "slow endpoint got {shares:?}");
        for (i, share) in shares.iter().enumerate() {
            if i != 2 {
                assert!(*share > 0.20, "fast endpoint {i} got {shares:?}");
            }
        }
    }

    #[test]
    fn p2c_with_equal_latencies_is_even() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 4);
        let latencies = vec![ms(20); 4];
        let mut rng = fastrand::Rng::with_seed(7);
        let shares = shares(&endpoints, &candidates, &latencies, 10_000, start, &mut rng);
        for share in &shares {
            assert!((share - 0.25).abs() < 0.03, "shares {shares:?}");
        }
    }

    #[test]
    fn p2c_gives_a_new_endpoint_one_request_at_once() {
        let now = Instant::now();
        let (endpoints, mut candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 1);
        let mut rng = fastrand::Rng::with_seed(13);
        endpoints
            .pick(&candidates, &[], now, &mut rng)
            .unwrap()
            .finish(Outcome::Success, ms(1), now);
        candidates.push(endpoints.endpoint(addr(1)));
        // With two endpoints P2C compares both: the new one wins although its peer answers in
        // 1 ms, well under DEFAULT_RTT.
        let first = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert_eq!(first.index, 1);
        // While that request is pending, the new one is estimated at DEFAULT_RTT × 2.
        for _ in 0..20 {
            let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
            assert_eq!(pick.index, 0);
            pick.finish(Outcome::Success, ms(1), now);
        }
        first.finish(Outcome::Success, ms(1), now);
        let picks: Vec<_> = (0..100)
            .map(|_| {
                let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
                let index = pick.index;
                pick.finish(Outcome::Success, ms(1), now);
                index
            })
            .collect();
        assert!(picks.iter().filter(|&&i| i == 1).count() > 30, "{picks:?}");
    }

    #[test]
    fn p2c_weighs_requests_in_flight() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 2);
        let mut rng = fastrand::Rng::with_seed(9);
        let mut held = Vec::new();
        // Both at the default latency: each new pick goes to the one with fewer in flight.
        for _ in 0..10 {
            held.push(endpoints.pick(&candidates, &[], now, &mut rng).unwrap());
        }
        assert_eq!(candidates[0].in_flight(), 5);
        assert_eq!(candidates[1].in_flight(), 5);

        // Endpoint 0 answers in 10 ms, 1 in 35 ms: 0 wins while it has at most 2 in flight
        // (cost 30 against 35), then 1 wins (40 against 35).
        drop(held);
        assert_eq!(candidates[0].in_flight(), 0);
        endpoints
            .pick(&candidates[..1], &[], now, &mut rng)
            .unwrap()
            .finish(Outcome::Success, ms(10), now);
        let pick = endpoints
            .pick(&candidates[1..], &[], now, &mut rng)
            .unwrap();
        pick.finish(Outcome::Success, ms(35), now);
        let held: Vec<_> = (0..3)
            .map(|_| {
                let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
                assert_eq!(pick.index, 0, "the fast one while its cost stays lower");
                pick
            })
            .collect();
        let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert_eq!(pick.index, 1, "4 × 10 ms costs more than 1 × 35 ms");
        drop((held, pick));
    }

    #[test]
    fn round_robin_cycles_and_skips_ejected() {
        let now = Instant::now();
        let outlier = OutlierDetection {
            max_ejection_percent: 50,
            ..OutlierDetection::default()
        };
        let (endpoints, candidates) = destination(&outlier, LoadBalancer::RoundRobin, 4);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut order = |endpoints: &Endpoints, count: usize| -> Vec<usize> {
            (0..count)
                .map(|_| {
                    let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
                    let index = pick.index;
                    pick.finish(Outcome::Success, ms(1), now);
                    index
                })
                .collect()
        };
        assert_eq!(order(&endpoints, 8), [0, 1, 2, 3, 0, 1, 2, 3]);

        hit(&endpoints, &candidates, 1, Outcome::GatewayFailure, 5, now);
        assert!(candidates[1].is_ejected(now));
        let next = order(&endpoints, 6);
        assert!(!next.contains(&1), "{next:?}");
        // In turn, each remaining one once per cycle.
        let mut cycle = next[..3].to_vec();
        cycle.sort_unstable();
        assert_eq!(cycle, [0, 2, 3]);
        assert_eq!(next[..3], next[3..]);

        // Switching to peak EWMA keeps the ejection.
        endpoints.reconfigure(&outlier, LoadBalancer::PeakEwma);
        assert!(order(&endpoints, 200).iter().all(|&i| i != 1));
    }

    #[test]
    fn avoid_skips_tried_endpoints_unless_nothing_else_is_left() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 3);
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..100 {
            let pick = endpoints
                .pick(&candidates, &[addr(0), addr(2)], now, &mut rng)
                .unwrap();
            assert_eq!(pick.index, 1);
        }
        // Everything tried: retry among them rather than fail.
        let avoid = [addr(0), addr(1), addr(2)];
        assert!(endpoints.pick(&candidates, &avoid, now, &mut rng).is_some());
        // The only endpoint there is: the retry goes to it again.
        let pick = endpoints
            .pick(&candidates[..1], &[addr(0)], now, &mut rng)
            .unwrap();
        assert_eq!(pick.index, 0);
        assert!(!pick.probe);
    }

    #[test]
    fn avoided_healthy_beats_ejected() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 2);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        assert!(candidates[0].is_ejected(now));
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..50 {
            let pick = endpoints
                .pick(&candidates, &[addr(1)], now, &mut rng)
                .unwrap();
            assert_eq!(
                pick.index, 1,
                "retry on the healthy one, not the ejected one"
            );
        }
    }

    #[test]
    fn panic_mode_when_everything_is_ejected() {
        let now = Instant::now();
        let outlier = OutlierDetection {
            max_ejection_percent: 100,
            ..OutlierDetection::default()
        };
        let (endpoints, candidates) = destination(&outlier, LoadBalancer::PeakEwma, 3);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        hit(&endpoints, &candidates, 1, Outcome::GatewayFailure, 5, now);
        assert_eq!(endpoints.ejected(now), 2);
        // The snapshot now has only the two ejected endpoints: they still get traffic.
        let snapshot = &candidates[..2];
        let mut rng = fastrand::Rng::with_seed(5);
        let mut seen = [0; 2];
        for _ in 0..100 {
            let pick = endpoints.pick(snapshot, &[], now, &mut rng).unwrap();
            assert!(!pick.probe);
            seen[pick.index] += 1;
        }
        assert!(seen.iter().all(|&count| count > 20), "{seen:?}");
        // Avoided ones last, even in panic.
        for _ in 0..20 {
            let pick = endpoints.pick(snapshot, &[addr(0)], now, &mut rng).unwrap();
            assert_eq!(pick.index, 1);
        }
    }

    #[test]
    fn half_open_gets_exactly_one_probe() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 3);
        hit(
            &endpoints,
            &candidates,
            1,
            Outcome::GatewayFailure,
            5,
            start,
        );
        let mut rng = fastrand::Rng::with_seed(11);
        let now = start + secs(30);
        let probe = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert_eq!((probe.index, probe.probe), (1, true));
        for _ in 0..100 {
            let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
            assert_ne!(
                pick.index, 1,
                "not picked again while the probe is in flight"
            );
            assert!(!pick.probe);
        }
        assert!(candidates[1].is_ejected(now));
        assert_eq!(endpoints.ejected(now), 1);
        probe.finish(Outcome::Success, ms(5), now);
        assert!(!candidates[1].is_ejected(now));
        assert_eq!(endpoints.ejected(now), 0);
        // Every endpoint answers in 5 ms now, so the readmitted one gets its share.
        let picks: Vec<_> = (0..100)
            .map(|_| {
                let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
                let index = pick.index;
                pick.finish(Outcome::Success, ms(5), now);
                index
            })
            .collect();
        assert!(picks.iter().filter(|&&i| i == 1).count() > 15, "{picks:?}");
    }

    #[test]
    fn failed_probe_ejects_for_longer() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::RoundRobin, 3);
        hit(
            &endpoints,
            &candidates,
            1,
            Outcome::GatewayFailure,
            5,
            start,
        );
        let mut rng = fastrand::Rng::with_seed(11);
        let now = start + secs(30);
        let probe = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert!(probe.probe);
        probe.finish(Outcome::GatewayFailure, ms(5), now);
        assert_eq!(
            candidates[1].state(now),
            EndpointState::Ejected {
                until: now + secs(60),
                reason: EjectionReason::FailedProbe
            }
        );
        assert_eq!(endpoints.ejections(EjectionReason::FailedProbe), 1);
        assert_eq!(
            endpoints.ejections(EjectionReason::ConsecutiveGatewayFailure),
            1
        );
        let probe = endpoints
            .pick(&candidates, &[], now + secs(60), &mut rng)
            .unwrap();
        assert_eq!((probe.index, probe.probe), (1, true));
    }

    #[test]
    fn dropped_probe_frees_the_slot() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 3);
        hit(
            &endpoints,
            &candidates,
            0,
            Outcome::GatewayFailure,
            5,
            start,
        );
        let mut rng = fastrand::Rng::with_seed(2);
        let now = start + secs(30);
        let probe = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert!(probe.probe);
        assert_eq!(candidates[0].in_flight(), 1);
        drop(probe);
        assert_eq!(candidates[0].in_flight(), 0);
        assert!(
            candidates[0].is_ejected(now),
            "a cancelled probe decides nothing"
        );
        let probe = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert_eq!((probe.index, probe.probe), (0, true));
        // A probe is not sent to an endpoint the request already tried.
        drop(probe);
        let pick = endpoints
            .pick(&candidates, &[addr(0)], now, &mut rng)
            .unwrap();
        assert!(!pick.probe);
        assert_ne!(pick.index, 0);
    }

    #[test]
    fn finish_and_drop_leave_flight() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 1);
        let mut rng = fastrand::Rng::with_seed(2);
        let a = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        let b = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert!(Arc::ptr_eq(a.endpoint(), &candidates[0]));
        assert_eq!(candidates[0].in_flight(), 2);
        a.finish(Outcome::Success, ms(80), now);
        assert_eq!(candidates[0].in_flight(), 1);
        assert_eq!(candidates[0].latency(now), ms(80));
        drop(b);
        assert_eq!(candidates[0].in_flight(), 0);
    }

    #[test]
    fn failures_do_not_make_an_endpoint_look_fast() {
        let now = Instant::now();
        let outlier = OutlierDetection {
            enabled: false,
            ..OutlierDetection::default()
        };
        let (endpoints, candidates) = destination(&outlier, LoadBalancer::PeakEwma, 1);
        let mut rng = fastrand::Rng::with_seed(2);
        let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        pick.finish(Outcome::Success, ms(100), now);
        for i in 1..=10 {
            let later = now + secs(i);
            let pick = endpoints.pick(&candidates, &[], later, &mut rng).unwrap();
            pick.finish(Outcome::GatewayFailure, ms(1), later);
        }
        // Fast failures neither average in nor let the estimate decay.
        assert_eq!(candidates[0].latency(now + secs(10)), ms(100));
        // A success does average in: after 1 s, weight 1 − e^(−0.1) for 1 ms.
        let later = now + secs(11);
        let pick = endpoints.pick(&candidates, &[], later, &mut rng).unwrap();
        pick.finish(Outcome::Success, ms(1), later);
        let expected = 100.0 * (-0.1f64).exp() + 1.0 * (1.0 - (-0.1f64).exp());
        let got = candidates[0].latency(later).as_secs_f64() * 1000.0;
        assert!(
            (got - expected).abs() < 0.01,
            "{got} ms, expected {expected} ms"
        );
        let pick = endpoints.pick(&candidates, &[], later, &mut rng).unwrap();
        pick.finish(Outcome::GatewayFailure, ms(500), later);
        assert_eq!(
            candidates[0].latency(later),
            ms(500),
            "a slow failure counts"
        );
    }

    #[test]
    fn success_rate_ejection_runs_lazily_each_interval() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::RoundRobin, 6);
        let mut rng = fastrand::Rng::with_seed(4);
        // Round-robin over 6: 1 200 picks in the first interval give each 200 attempts;
        // endpoint 5 fails every other one of its own.
        let mut failures = 0;
        for i in 0..1200 {
            let now = start + ms(i);
            let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
            let outcome = if pick.index == 5 {
                failures += 1;
                if failures % 2 == 0 {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                }
            } else {
                Outcome::Success
            };
            pick.finish(outcome, ms(1), now);
        }
        assert_eq!(
            endpoints.ejected(start + secs(9)),
            0,
            "not before the interval ends"
        );
        let now = start + secs(10);
        let pick = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        assert_ne!(pick.index, 5);
        assert!(candidates[5].is_ejected(now));
        assert_eq!(endpoints.ejections(EjectionReason::SuccessRate), 1);
        drop(pick);
    }

    #[test]
    fn ejection_count_decays_through_picks() {
        let start = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::RoundRobin, 3);
        let mut rng = fastrand::Rng::with_seed(4);
        hit(
            &endpoints,
            &candidates,
            0,
            Outcome::GatewayFailure,
            5,
            start,
        );
        let now = start + secs(30);
        let probe = endpoints.pick(&candidates, &[], now, &mut rng).unwrap();
        probe.finish(Outcome::Success, ms(1), now);
        // Next interval boundary (40 s) passes while healthy: the count decays 1 → 0, and a
        // new ejection lasts 30 s rather than 60 s.
        let now = start + secs(41);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        let EndpointState::Ejected { until, .. } = candidates[0].state(now) else {
            panic!("not ejected");
        };
        assert_eq!(until - now, secs(30));

        // Without the decay (no interval passed) the second ejection would last 60 s.
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::RoundRobin, 3);
        hit(
            &endpoints,
            &candidates,
            0,
            Outcome::GatewayFailure,
            5,
            start,
        );
        let now = start + secs(30);
        endpoints
            .pick(&candidates, &[], now, &mut rng)
            .unwrap()
            .finish(Outcome::Success, ms(1), now);
        // The clock started at `start`; intervals at 10, 20, 30 s passed while ejected.
        let now = start + secs(39);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        let EndpointState::Ejected { until, .. } = candidates[0].state(now) else {
            panic!("not ejected");
        };
        assert_eq!(until - now, secs(60));
    }

    #[test]
    fn turning_detection_off_readmits() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 3);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 5, now);
        assert_eq!(endpoints.ejected(now), 1);
        let off = OutlierDetection {
            enabled: false,
            ..OutlierDetection::default()
        };
        endpoints.reconfigure(&off, LoadBalancer::PeakEwma);
        assert_eq!(endpoints.ejected(now), 0);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 20, now);
        assert!(!candidates[0].is_ejected(now));
    }

    #[test]
    fn lone_endpoint_is_never_ejected() {
        let now = Instant::now();
        let (endpoints, candidates) =
            destination(&OutlierDetection::default(), LoadBalancer::PeakEwma, 1);
        hit(&endpoints, &candidates, 0, Outcome::GatewayFailure, 50, now);
        assert!(!candidates[0].is_ejected(now));
        assert_eq!(
            endpoints.ejections(EjectionReason::ConsecutiveGatewayFailure),
            0
        );
    }

    #[test]
    fn types_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Endpoints>();
        assert_send_sync::<EndpointHealth>();
        assert_send_sync::<Pick>();
    }
}
