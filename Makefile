# etcd-registrator. `make test` installs (apt) and starts everything the tests need.
SHELL := /bin/bash
CARGO ?= cargo
export REGISTRATOR_GIT_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DAEMONS := tests/daemons.sh
PODMAN := tests/podman.sh

.PHONY: all build release lint test unit demo bench fault-test static image clean daemons-up daemons-down

all: build

build:
	$(CARGO) build

release:
	$(CARGO) build --release

# Formatting and lints, as CI checks them (before `make test`).
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Unit tests only (the library, the binary and the HAProxy example): no daemons needed.
unit:
	$(CARGO) test --lib --bins --examples

# The previous pair (Debian bookworm's etcd 3.4.23 and dockerd 20.10.24), as a daemon set
# of its own: same ports, run after the first set is down, another directory.
OLD_DAEMONS := REG_DAEMONS=bookworm REG_TEST_DIR=$${REG_TEST_DIR:-/tmp/registrator-test}-bookworm

# Everything: unit tests, then integration tests against a real etcd and dockerd that
# tests/daemons.sh installs from Debian's packages and starts on loopback (and stops),
# and against Podman, which tests/podman.sh installs and starts beside them (a Podman
# test without Podman fails here, REG_PODMAN_REQUIRED=1, rather than skips): on etcd
# 3.5.16 and dockerd 26.1.5 (Debian trixie's); then the core and lease suites, Docker
# over TLS and the log formats again on the previous pair, so both stay proven.
test:
	$(DAEMONS) install
	$(PODMAN) install
	$(CARGO) build --tests
	REG_PODMAN_REQUIRED=1 $(DAEMONS) run $(PODMAN) run $(CARGO) test -- --test-threads=4
	$(OLD_DAEMONS) $(DAEMONS) run $(CARGO) test --test core --test leases --test docker_tls --test logs -- --test-threads=4

# Brings up the local etcd and dockerd, starts the three README examples, runs the
# registrator once and prints the keys. Leaves the daemons running: `make daemons-down`.
demo:
	$(DAEMONS) install
	$(CARGO) build --release
	tests/demo.sh

# Benchmark (not a timed test): prints one table of latency, bursts, idle cost, size;
# latency and bursts on Podman too.
bench:
	$(DAEMONS) install
	$(PODMAN) install
	$(CARGO) build --release
	$(DAEMONS) run $(PODMAN) run tests/bench.sh

# Fault-injection suite with its own etcd/dockerd instances; prints a summary table.
fault-test:
	$(DAEMONS) install
	$(CARGO) build --tests
	$(DAEMONS) run $(CARGO) test --test faults -- --test-threads=1 --nocapture

# A statically linked x86_64 musl binary: target/x86_64-unknown-linux-musl/release/registrator
static:
	tests/build-static.sh

# The scratch image from the static binary, built by your Docker ($DOCKER_HOST, else the
# docker CLI's current context), as `docker build -t etcd-registrator .` would.
image: static
	tests/build-image.sh

daemons-up:
	$(DAEMONS) up

daemons-down:
	$(DAEMONS) down

clean:
	$(CARGO) clean
