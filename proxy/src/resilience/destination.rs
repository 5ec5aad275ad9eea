//! The resilience state of every destination, kept across configuration snapshots: a new
//! snapshot picks up the budget, breaker, bulkheads and endpoint health its destinations
//! already had, so a configuration push does not forgive an ejected endpoint or reset a
//! breaker. State lives as long as some snapshot refers to it (the registry holds weak
//! references), and is rebuilt when the destination's TrafficConfig changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use skiff_api::traffic::{RateLimit, TrafficConfig};
use tokio::time::Instant;

use super::balancer::{EndpointHealth, Endpoints};
use super::breaker::Breaker;
use super::budget::RetryBudget;
use super::bulkhead::Bulkhead;
use super::rate_limit::TokenBucket;

/// Why a request was sent again; the `reason` label of `skiff_retries_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    /// The upstream cannot have seen the request (connect failure, refused stream).
    NothingSent,
    /// A configured condition matched (status, reset, timeout, gRPC status).
    Configured,
    /// A hedge: the first attempt was slow.
    Hedge,
}

impl RetryReason {
    pub const ALL: [RetryReason; 3] = [
        RetryReason::NothingSent,
        RetryReason::Configured,
        RetryReason::Hedge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::NothingSent => "nothing-sent",
            RetryReason::Configured => "configured",
            RetryReason::Hedge => "hedge",
        }
    }
}

/// One port of one Service, as a caller protects it.
pub struct DestinationState {
    /// `namespace/name:port`, the metric label.
    pub label: Arc<str>,
    pub config: TrafficConfig,
    pub budget: RetryBudget,
    pub breaker: Breaker,
    pub bulkhead: Bulkhead,
    /// Per-endpoint health and the balancer; kept when the config changes.
    pub endpoints: Arc<Endpoints>,
    retries: [AtomicU64; 3],
    /// Retries the budget (or the retries bulkhead) refused.
    pub retries_refused: AtomicU64,
}

impl DestinationState {
    pub fn count_retry(&self, reason: RetryReason) {
        self.retries[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries[reason as usize].load(Ordering::Relaxed)
    }

    /// The health handle of each of `addrs`, in order.
    pub fn health(&self, addrs: impl Iterator<Item = SocketAddr>) -> Vec<Arc<EndpointHealth>> {
        addrs.map(|addr| self.endpoints.endpoint(addr)).collect()
    }
}

/// Every destination's state, and the token buckets of routes and of the inbound side.
#[derive(Default)]
pub struct Destinations {
    services: Mutex<HashMap<(String, u16), Weak<DestinationState>>>,
    /// Per route rule id (or per service, for its default), by their configuration.
    buckets: Mutex<HashMap<String, Weak<TokenBucket>>>,
}

impl Destinations {
    /// The state of `service` port `port` under `config`: the one in use when its config is
    /// unchanged; otherwise a new one that keeps the endpoint health.
    pub fn destination(
        &self,
        service: &str,
        port: u16,
        config: &TrafficConfig,
        now: Instant,
    ) -> Arc<DestinationState> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services.retain(|_, state| state.strong_count() > 0);
        let key = (service.to_string(), port);
        let existing = services.get(&key).and_then(Weak::upgrade);
        if let Some(state) = &existing {
            if state.config == *config {
                return state.clone();
            }
        }
        let endpoints = match existing {
            Some(state) => {
                state
                    .endpoints
                    .reconfigure(&config.outlier_detection, config.load_balancer);
                state.endpoints.clone()
            }
            None => Endpoints::new(&config.outlier_detection, config.load_balancer),
        };
        let state = Arc::new(DestinationState {
            label: Arc::from(format!("{service}:{port}")),
            config: config.clone(),
            budget: RetryBudget::new(&config.retry_budget, now),
            breaker: Breaker::new(&config.circuit_breaker),
            bulkhead: Bulkhead::new(&config.limits),
            endpoints,
            retries: Default::default(),
            retries_refused: AtomicU64::new(0),
        });
        services.insert(key, Arc::downgrade(&state));
        state
    }

    /// The token bucket named `key` with `limit`: the same bucket while its limit is
    /// unchanged and some snapshot holds it.
    pub fn bucket(&self, key: &str, limit: &RateLimit, now: Instant) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.retain(|_, bucket| bucket.strong_count() > 0);
        if let Some(bucket) = buckets.get(key).and_then(Weak::upgrade) {
            if bucket.config() == *limit {
                return bucket;
            }
        }
        let bucket = Arc::new(TokenBucket::new(limit, now));
        buckets.insert(key.to_string(), Arc::downgrade(&bucket));
        bucket
    }

    /// Every destination some snapshot still uses, by label, for the metrics.
    pub fn live(&self) -> Vec<Arc<DestinationState>> {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<_> = services.values().filter_map(Weak::upgrade).collect();
        live.sort_by(|a, b| a.label.cmp(&b.label));
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_new_snapshot_and_is_rebuilt_when_its_config_changes() {
        let destinations = Destinations::default();
        let now = Instant::now();
        let config = TrafficConfig::default();
        let first = destinations.destination("default/web", 80, &config, now);
        let again = destinations.destination("default/web", 80, &config, now);
        assert!(Arc::ptr_eq(&first, &again));

        let mut changed = config.clone();
        changed.circuit_breaker.failure_percent = 10;
        let rebuilt = destinations.destination("default/web", 80, &changed, now);
        assert!(!Arc::ptr_eq(&first, &rebuilt));
        assert!(Arc::ptr_eq(&first.endpoints, &rebuilt.endpoints));

        drop((first, again, rebuilt));
        assert!(destinations.live().is_empty());
    }

    #[test]
    fn buckets_are_shared_by_key_and_limit() {
        let destinations = Destinations::default();
        let now = Instant::now();
        let limit = RateLimit {
            requests_per_second: 1,
            burst: 1,
        };
        let a = destinations.bucket("default/r#0", &limit, now);
        let b = destinations.bucket("default/r#0", &limit, now);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.try_take(now));
        assert!(!b.try_take(now), "one bucket, one token");
    }
}
