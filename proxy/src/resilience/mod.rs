//! The state machines that keep one failing or slow destination from taking its callers down
//! (DESIGN.md §6). Each is a plain type driven by `tokio::time::Instant` and, where it needs
//! chance, a caller-provided [`fastrand::Rng`], so its tests run on paused time with a seed.
//!
//! - [`backoff`]: exponential back-off with full jitter between retries.
//! - [`budget`]: the retry budget of a destination (retries ≤ a share of requests plus a floor).
//! - [`breaker`]: the three-state circuit breaker of a destination service.
//! - [`bulkhead`]: limits on connections, pending requests, requests and retries in flight.
//! - [`rate_limit`]: a local token bucket.
//! - [`outlier`]: per-endpoint ejection (consecutive failures, success rate, half-open probes).
//! - [`balancer`]: picks an endpoint: power of two choices over peak-EWMA, or round-robin.
//! - [`destination`]: all of the above per destination, kept across configuration snapshots.

pub mod backoff;
pub mod balancer;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod destination;
pub mod outlier;
pub mod rate_limit;
