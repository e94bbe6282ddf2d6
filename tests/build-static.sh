#!/usr/bin/env bash
# `make static`: a statically linked x86_64 musl build of the registrator,
#   target/x86_64-unknown-linux-musl/release/registrator
#
# Installs what is missing first (the rustup musl target; Debian's musl-tools, whose
# musl-gcc compiles ring's C and assembly for rustls), then checks with `file` that
# the result needs no dynamic loader and prints its size. Idempotent: when nothing
# changed, cargo does nothing and this takes well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
BIN=target/$TARGET/release/registrator
CARGO=${CARGO:-cargo}

log() { echo "build-static: $*" >&2; }

# The musl standard library.
if command -v rustup >/dev/null; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET" >&2
    fi
else
    log "rustup not found: assuming the $TARGET standard library is installed"
fi

# A musl C compiler for ring (cc-rs looks for x86_64-linux-musl-gcc).
if ! command -v x86_64-linux-musl-gcc >/dev/null && ! command -v musl-gcc >/dev/null; then
    log "apt-get install musl-tools"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends musl-tools >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
    fi
fi
# `file` for the check below.
if ! command -v file >/dev/null; then
    log "apt-get install file"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends file >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends file >/dev/null
    fi
fi

# `registrator --version` shows the commit (src/main.rs reads it at compile time).
if [ -z "${REGISTRATOR_GIT_COMMIT:-}" ]; then
    REGISTRATOR_GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
fi
export REGISTRATOR_GIT_COMMIT

"$CARGO" build --release --target "$TARGET" >&2

desc=$(file -b "$BIN")
case "$desc" in
    *"statically linked"* | *"static-pie linked"*) ;;
    *) log "$BIN is not statically linked: $desc"; exit 1 ;;
esac
case "$desc" in
    *"interpreter"*) log "$BIN asks for a dynamic loader: $desc"; exit 1 ;;
esac

size=$(stat -c %s "$BIN")
echo "$BIN: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f MiB", s / 1048576 }')), $desc"
