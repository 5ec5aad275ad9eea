//! Where policy comes from. Each source validates what it reads and publishes every valid
//! policy to the [`Store`](crate::store::Store); an invalid one is logged, counted, and the
//! last good snapshot stays in force.
//!
//! - [`file`]: a directory of YAML files (local mode, `skiff-control --policy DIR`).
//! - `kube` (later): the Kubernetes API.

pub mod file;
