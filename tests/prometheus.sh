#!/usr/bin/env bash
# A real Prometheus server for the metrics tests: Debian's `prometheus` package, run on
# loopback with a generated configuration that scrapes one target every second.
#
#   tests/prometheus.sh install                  apt-get install prometheus if missing
#   tests/prometheus.sh start DIR PORT TARGET    scrape TARGET (host:port, path /metrics)
#                                                as job "registrator"; listen on
#                                                127.0.0.1:PORT; config, data, log and
#                                                PID in DIR; returns once it is ready
#   tests/prometheus.sh stop DIR                 stop it by the PID in DIR, remove DIR
#   tests/prometheus.sh check-metrics FILE       promtool check metrics < FILE
#
# Debian's package ships a service that is not started here (no init system; the
# test starts its own server and stops only that one, by PID).
set -euo pipefail

log() { echo "prometheus: $*" >&2; }

install() {
    if command -v prometheus >/dev/null && command -v promtool >/dev/null; then return 0; fi
    log "apt-get install prometheus"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    fi
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() { # DIR PORT TARGET
    local dir=$1 port=$2 target=$3
    install
    if alive "$dir/prometheus.pid"; then
        log "already running in $dir (pid $(cat "$dir/prometheus.pid"))"
        return 1
    fi
    mkdir -p "$dir"
    rm -rf "$dir/data"
    cat >"$dir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: registrator
    static_configs:
      - targets: ['$target']
EOF
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
    echo $! >"$dir/prometheus.pid"
    for _ in $(seq 1 300); do
        if ! alive "$dir/prometheus.pid"; then
            log "exited at start:"; tail -20 "$dir/prometheus.log" >&2; return 1
        fi
        if curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
            log "up on 127.0.0.1:$port (pid $(cat "$dir/prometheus.pid")), scraping $target"
            return 0
        fi
        sleep 0.1
    done
    log "not ready after 30 s:"; tail -20 "$dir/prometheus.log" >&2
    stop "$dir"
    return 1
}

stop() { # DIR
    local dir=$1 f=$1/prometheus.pid
    if alive "$f"; then
        local pid
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    install) install ;;
    start) [ $# -eq 4 ] || { echo "usage: $0 start DIR PORT TARGET" >&2; exit 2; }; start "$2" "$3" "$4" ;;
    stop) [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }; stop "$2" ;;
    check-metrics)
        [ $# -eq 2 ] || { echo "usage: $0 check-metrics FILE" >&2; exit 2; }
        install
        promtool check metrics <"$2"
        ;;
    *) echo "usage: $0 install|start DIR PORT TARGET|stop DIR|check-metrics FILE" >&2; exit 2 ;;
esac
