#!/usr/bin/env bash
# `make image`: the FROM scratch image (Dockerfile) from the static binary that
# `make static` (tests/build-static.sh) produced, built against $DOCKER_HOST.
#
#   tests/build-image.sh [TAG]     default TAG: etcd-registrator:latest
#
# Needs no registry. Prints the image size and writes the image ID to
# target/x86_64-unknown-linux-musl/release/registrator.iid, so a test can run exactly
# the image it built even if another checkout moves the tag on a shared dockerd.
# Idempotent: an unchanged binary hits docker's build cache.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-${REG_REGISTRATOR_IMAGE:-etcd-registrator:latest}}
BIN=target/x86_64-unknown-linux-musl/release/registrator
IIDFILE=$BIN.iid
: "${DOCKER_HOST:?DOCKER_HOST is not set: run under tests/daemons.sh run, or export it}"

log() { echo "build-image: $*" >&2; }

if [ ! -x "$BIN" ]; then
    log "$BIN is missing: run make static (tests/build-static.sh) first"
    exit 1
fi

# The classic builder: it needs nothing from a registry (or buildx) for FROM scratch.
# Its output (and the CLI's notice that it is deprecated) only matters when it fails.
if ! out=$(DOCKER_BUILDKIT=0 docker build -q --iidfile "$IIDFILE" -t "$TAG" . 2>&1); then
    echo "$out" >&2
    exit 1
fi
id=$(cat "$IIDFILE")
size=$(docker image inspect -f '{{.Size}}' "$id")
echo "$TAG ($id): $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MB", s / 1000000 }'))"
if [ "$size" -ge 5000000 ]; then
    log "image is $size bytes, over the 5 MB budget"
    exit 1
fi
