#!/usr/bin/env bash
# `make image`: the FROM scratch image (Dockerfile) from the static binary that
# `make static` (tests/build-static.sh) produced, built by the Docker the docker CLI
# talks to: $DOCKER_HOST, else its current context (by default
# unix:///var/run/docker.sock), exactly as `docker build` would. The tests build into
# their own daemon by passing its DOCKER_HOST (tests/image.rs).
#
#   tests/build-image.sh [TAG]     default TAG: etcd-registrator:latest
#
# Needs no registry. Prints the image size and writes the image ID to
# target/x86_64-unknown-linux-musl/release/registrator.iid, so a test can run exactly
# the image it built even if another checkout moves the tag on a shared dockerd.
# Idempotent: an unchanged binary hits docker's build cache.
#
# Builder: DOCKER_BUILDKIT as you set it; otherwise BuildKit when the docker CLI has
# buildx (what `docker build` uses then, with --load so the image lands in the
# daemon), else the classic builder (which FROM scratch needs nothing more for).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-${REG_REGISTRATOR_IMAGE:-etcd-registrator:latest}}
BIN=target/x86_64-unknown-linux-musl/release/registrator
IIDFILE=$BIN.iid

log() { echo "build-image: $*" >&2; }

if [ ! -x "$BIN" ]; then
    log "$BIN is missing: run make static (tests/build-static.sh) first"
    exit 1
fi
if ! command -v docker >/dev/null; then
    log "no docker CLI on PATH: install Docker, or build into the tests' own daemon with" \
        "tests/daemons.sh run tests/build-image.sh"
    exit 1
fi
where=${DOCKER_HOST:-"docker context $(docker context show 2>/dev/null || echo default)"}
if ! err=$(docker version --format '{{.Server.Version}}' 2>&1 >/dev/null); then
    log "cannot reach the Docker daemon ($where): ${err##*$'\n'}"
    log "start Docker or set DOCKER_HOST (the tests' own daemon: tests/daemons.sh run tests/build-image.sh)"
    exit 1
fi

args=(-q --iidfile "$IIDFILE" -t "$TAG")
if [ -z "${DOCKER_BUILDKIT+set}" ]; then
    if docker buildx version >/dev/null 2>&1; then
        args+=(--load)
    else
        export DOCKER_BUILDKIT=0
    fi
fi
rm -f "$IIDFILE"
# Its output (and the classic builder's notice that it is deprecated) only matters
# when it fails.
if ! out=$(docker build "${args[@]}" . 2>&1); then
    echo "$out" >&2
    exit 1
fi
id=$(cat "$IIDFILE")
size=$(docker image inspect -f '{{.Size}}' "$id")
echo "$TAG ($id) on $where: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MB", s / 1000000 }'))"
if [ "$size" -ge 5000000 ]; then
    log "image is $size bytes, over the 5 MB budget"
    exit 1
fi
