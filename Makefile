# The two commands of the README. Both need root (network namespaces, iptables).
.PHONY: demo test

# The local mesh demo: two pods in network namespaces, each with a sidecar, and traffic
# between them through both sidecars.
demo:
	scripts/install-test-deps.sh
	cargo build -p skiff-proxy
	cargo run -q -p skiff-tests --bin skiff-demo

# The whole test suite: formatting, lints, unit tests and the end-to-end tests in namespaces.
test:
	scripts/install-test-deps.sh
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build -p skiff-proxy
	cargo nextest run --workspace --no-fail-fast
