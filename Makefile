# The two commands of the README. Both need root (network namespaces, iptables).
.PHONY: demo test

# The local mesh demo (`skiff demo`): a client and two versions of a service in network
# namespaces, each with a sidecar, the control plane watching examples/demo/, and a live view
# of the traffic split. Edit examples/demo/route.yaml while it runs; Ctrl-C to stop.
demo:
	scripts/install-test-deps.sh
	cargo build -p skiff-proxy -p skiff-control
	"$${CARGO_TARGET_DIR:-target}/debug/skiff" demo

# The whole test suite: formatting, lints, unit tests and the end-to-end tests in namespaces.
test:
	scripts/install-test-deps.sh
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo build -p skiff-proxy -p skiff-control
	cargo nextest run --workspace --no-fail-fast

# The benchmark (not part of `make test`; needs root): direct vs one and two Skiff hops (two
# also with mTLS, identities from skiff-control) vs nginx and haproxy, side by side, and mTLS
# handshakes per second per core. Installs what it needs, builds release binaries, writes
# bench/results/. `make bench ARGS=--quick` for a short development run; see bench/README.md.
.PHONY: bench
bench:
	bench/install-deps.sh
	cargo build --release -p skiff-proxy -p skiff-control -p skiff-bench
	"$$(bench/setup-venv.sh)/bin/python" bench/run.py $(ARGS)

# The control plane's fan-out (not part of `make test`; no root needed): 1,000 and 10,000
# simulated proxies on one skiff-control, time from a policy edit until every proxy has ACKed it,
# and memory per connected proxy. Writes bench/results/fanout.md; see bench/README.md.
.PHONY: bench-fanout
bench-fanout:
	cargo build --release -p skiff-control -p skiff-bench
	python3 bench/fanout.py $(ARGS)

# The fuzz targets (not part of `make test` or CI, whose time budget they would eat; no root
# needed): every parser under libFuzzer for FUZZ_SECONDS each (default 60), one after another.
# Needs the nightly toolchain; installs cargo-fuzz if missing. See fuzz/README.md.
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) fuzz/run.sh $(TARGETS)
