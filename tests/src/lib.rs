//! The end-to-end tests (`tests/tests/*.rs`) run against the lab: pods as network namespaces,
//! real sidecars and a real control plane ([`skiff_lab`], in `lab/`). This crate re-exports it
//! whole, so a test says `skiff_tests::Mesh` or `skiff_tests::process::run`.

pub use skiff_lab::*;

pub mod certs;
