//! `skiff-proxy`: the Skiff sidecar, as a library. The `skiff-proxy` binary (`main.rs`) is its
//! command line; fuzz targets (`fuzz/`) and benchmarks call the parsers and the configuration
//! client here. Modules the outside has no use for stay private.
//!
//! Map of the crate, in the order a connection meets it (ARCHITECTURE.md, "The path of a
//! request"):
//! - [`capture`]: `skiff-proxy init` installs the iptables rules that send the pod's TCP here.
//! - `listener`: binds ports, recovers the original destination, accepts.
//! - `outbound` / `inbound`: plan a connection from the [`policy`] snapshot. Inbound, the first
//!   bytes say whether a sidecar is calling ([`tls::inspect_client_hello`]), whose mTLS is
//!   terminated ([`tls`]).
//! - [`detect`]: settles the protocol from the port's declaration or the first bytes.
//! - `connection`: serves the connection: `tcp` copies opaque bytes (inbound, `authz` first);
//!   [`http`] serves requests, routes them (`route`), normalises inbound paths
//!   ([`http::path`]) for `authz`, and forwards them over pooled upstream connections (mTLS
//!   between sidecars, [`tls`]).
//! - `resilience`: per-destination state machines the forwarder consults: retry budget,
//!   back-off, circuit breaker, bulkheads, rate limits, outlier ejection, the balancer.
//! - `error`: the failure classification every response, flag and metric label uses.
//! - `metrics`, `admin`: what operators see; `drain` and `idle`: how connections end.
//! - [`control`]: the configuration stream from the control plane, which replaces the
//!   [`policy`] snapshot; [`tls::renew`] keeps the workload certificate fresh.
//! - [`app`]: wires it all together from validated settings.

pub mod capture;
mod listener;

mod inbound;
mod outbound;
pub mod policy;

pub mod detect;

mod authz;
mod connection;
pub mod http;
pub mod resilience;
mod route;
mod tcp;
pub mod tls;

mod error;

mod admin;
mod drain;
mod idle;
mod metrics;

pub mod control;

pub mod app;
