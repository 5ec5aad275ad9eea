//! The benchmark harness of Skiff's data path. It is built by the benchmark issue (issue 3):
//! direct vs one and two sidecar hops vs nginx and haproxy, reported as ratios.

fn main() -> std::process::ExitCode {
    eprintln!("skiff-bench: the benchmark suite is not built yet (see bench/README.md)");
    std::process::ExitCode::FAILURE
}
