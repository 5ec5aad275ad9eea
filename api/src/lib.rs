//! Skiff's shared vocabulary: the policy resources both the control plane and the sidecar read.
//!
//! Map of the crate:
//! - [`k8s`]: the Kubernetes resources Skiff consumes as Kubernetes defines them (`v1 Service`,
//!   `discovery.k8s.io/v1 EndpointSlice`), so a user can paste them from a cluster.
//! - [`document`]: turns YAML text into typed resources, naming the file, line and field of
//!   every problem.
//! - [`config`]: the configuration one proxy runs, as the control plane streams it.
//!
//! Serde types only: no sockets, no files. Nothing Kubernetes-client-specific enters here.

pub mod config;
pub mod document;
pub mod k8s;

pub use document::{parse_documents, DocumentError, Resource};
