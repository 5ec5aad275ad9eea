//! Skiff's shared vocabulary: the policy resources both the control plane and the sidecar read.
//!
//! Map of the crate:
//! - [`k8s`]: the Kubernetes resources Skiff consumes as Kubernetes defines them (`v1 Service`,
//!   `discovery.k8s.io/v1 EndpointSlice`), so a user can paste them from a cluster.
//! - [`gateway`]: Gateway API `HTTPRoute`, every standard and experimental field.
//! - [`skiff_kinds`]: Skiff's own `skiff.dev/v1alpha1` kinds (`Workload`, `TrafficPolicy`,
//!   `InboundPolicy`).
//! - [`document`]: turns YAML text into typed resources; [`index`] maps field paths to lines so
//!   every problem names its file, line and field.
//! - [`load`] ([`validate`]): every file at once → a validated [`Policy`] ([`policy`]) or every
//!   problem, each as `file:line path: message` ([`Problem`]).
//! - [`proxy_config`] ([`view`]): from the policy, what one workload's proxy needs, in the
//!   shape of [`config`], the configuration the control plane streams to proxies.
//! - [`duration`], [`timestamp`]: the Gateway API's duration strings and Kubernetes times.
//! - [`stream`]: the proxy ⇄ control plane messages and their newline-delimited JSON framing.
//! - [`traffic`]: the resilience settings of a destination (timeouts, retries, outlier
//!   detection, breaker, bulkheads, balancer, rate limits, hedging, faults), defaults filled.
//! - [`identity`]: SPIFFE IDs and the certificate-signing exchange with the control plane.
//!
//! Serde types and pure functions only: no sockets, no files (callers pass file names and
//! texts). Nothing Kubernetes-client-specific enters here.

pub mod config;
pub mod document;
pub mod duration;
pub mod gateway;
pub mod identity;
pub mod index;
pub mod k8s;
pub mod policy;
pub mod problem;
pub mod skiff_kinds;
pub mod stream;
pub mod timestamp;
pub mod traffic;
pub mod validate;
pub mod view;

pub use config::{ProxyConfig, WorkloadRef};
pub use document::{parse_documents, DocumentError, Resource, MAX_FILE_BYTES};
pub use policy::Policy;
pub use problem::{Problem, Severity};
pub use validate::{load, Loaded};
pub use view::proxy_config;
