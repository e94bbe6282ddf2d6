#!/usr/bin/env bash
# The benchmark of issue 4: runs the #[ignore]d scenarios of tests/bench.rs in order
# against the daemons that `tests/daemons.sh run` started, then prints one table (in
# Markdown) with the date and the machine. Run it as `make bench`, or against a daemon
# set of your own:
#
#   REG_TEST_DIR=/tmp/reg-bench REG_ETCD_PORT=25790 REG_ETCD_PEER_PORT=25800 \
#   REG_BRIDGE=regbench0 REG_BRIDGE_CIDR=172.31.1.1/24 tests/daemons.sh run tests/bench.sh
#
# Other traffic on the same daemons spoils the figures. Knobs: BENCH_RUNS (20),
# BENCH_CPU_SECS (60), BENCH_QUIET_CYCLES (10), BENCH_REPLAY (1000,10000), and
# BENCH_ONLY (a test-name filter, e.g. b1_latency), BENCH_FLEET (fleet sizes,
# 1000x30,5000x30; none skips the fleet section). About 10 minutes in all, plus a
# static build when one is out of date. The table is also written to
# target/bench/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

for v in DOCKER_HOST REG_ETCD REG_IMAGE; do
    if [ -z "${!v:-}" ]; then
        echo "bench: $v is not set; run under tests/daemons.sh run (make bench)" >&2
        exit 2
    fi
done

out=target/bench
mkdir -p "$out"
export BENCH_RESULTS="$PWD/$out/results.tsv"
: >"$BENCH_RESULTS"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then commit="$commit + uncommitted changes (src, Cargo.toml or Cargo.lock)"; fi
started=$(date -u '+%Y-%m-%d %H:%M UTC')
machine="$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo)"
versions="etcd $(etcd --version 2>/dev/null | awk '/etcd Version/ {print $3}'), dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?')"
if [ -n "${REG_PODMAN_HOST:-}" ]; then versions="$versions, Podman $(podman --version | awk '{print $3}') (rootful)"; fi

# The static musl binary (size and memory rows): brought up to date when `make static`
# could do so without installing anything; otherwise measured as found, or skipped.
if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl &&
    { command -v x86_64-linux-musl-gcc || command -v musl-gcc; } >/dev/null && command -v file >/dev/null; then
    if tests/build-static.sh >&2; then export BENCH_STATIC_FRESH=1; fi
fi

load_start=$(cut -d' ' -f1 /proc/loadavg)
status=0
cargo test --release --test bench -- --ignored --nocapture --test-threads=1 ${BENCH_ONLY:-} >&2 || status=$?
# The fleet section (issues 11 and 17, tests/fleet_bench.rs): BENCH_FLEET=none skips it.
export BENCH_FLEET_TABLE="$PWD/$out/fleet.md"
rm -f "$BENCH_FLEET_TABLE"
if [ "${BENCH_FLEET:-}" != none ]; then
    cargo test --release --test fleet_bench -- --ignored --nocapture >&2 || status=$?
fi

load_end=$(cut -d' ' -f1 /proc/loadavg)
{
    echo "Measured $started on $machine; $versions; registrator commit $commit."
    echo "Load average (1 min) $load_start at the start, $load_end at the end: anything above 0 is"
    echo "other work on the machine, which shows up mostly in the latency maxima."
    echo
    echo "| measurement | result | target (issue 4; old Go registrator) | Docker |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r what figure target daemons; do
        echo "| $what | $figure | $target | $daemons |"
    done <"$BENCH_RESULTS"
    echo
    echo "\"replay\": a fake Docker API on a unix socket answering /_ping, /containers/json and"
    echo "/containers/{id}/json from responses recorded from the real dockerd (tests/fixtures),"
    echo "cloned N times; it sends no events. etcd is always the real one. Requests are counted"
    echo "by proxies in front of the Docker socket and etcd; latencies poll etcd every 2 ms."
    if [ -s "$BENCH_FLEET_TABLE" ]; then
        echo
        echo "Fleet (issues 11 and 17): one host of 10 containers in a prefix that other hosts"
        echo "fill (tests/fleet_bench.rs), each phase at each fleet size: no figure should grow"
        echo "with the fleet. \"Bytes from etcd\" is what etcd sent the registrator."
        echo
        cat "$BENCH_FLEET_TABLE"
    fi
} >"$out/table.md"

echo
cat "$out/table.md"
if [ "$status" -ne 0 ]; then
    echo >&2
    echo "bench: some scenarios failed (see above); their rows are missing" >&2
fi
exit "$status"
