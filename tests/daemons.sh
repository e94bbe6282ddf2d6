#!/usr/bin/env bash
# Installs and runs the real daemons the tests need, on loopback and a private unix
# socket, plus a local busybox image. Two pairs, chosen by REG_DAEMONS:
#   trixie (default)  etcd 3.5.16 and dockerd 26.1.5 from Debian trixie's packages, unpacked
#                     (not installed) under $REG_DAEMONS_CACHE (/var/cache/registrator-daemons)
#                     and put first on PATH for the daemons and the command `run` runs
#   bookworm          etcd 3.4.23 and dockerd 20.10.24, installed from Debian bookworm
# Both use bookworm's containerd, runc, docker CLI and busybox; etcdctl comes with each pair.
#
#   tests/daemons.sh install      apt-get install what is missing
#   tests/daemons.sh up           start etcd + dockerd (idempotent), import the image
#   tests/daemons.sh down         stop what `up` started, by PID; remove leftovers
#   tests/daemons.sh env          print the exports the tests read
#   tests/daemons.sh run CMD...   up (unless already up), run CMD, down (if it started them)
#
# Everything lives under $REG_TEST_DIR (default /tmp/registrator-test). Ports:
# etcd client 127.0.0.1:$REG_ETCD_PORT (23790), peer $REG_ETCD_PEER_PORT (23800), and
# dockerd's TLS listener $REG_DOCKER_TLS_PORT (the etcd port + 20), whose CA and client
# certificate (made with openssl) are in $REG_TEST_DIR/docker-tls, as DOCKER_CERT_PATH wants.
set -euo pipefail

DIR=${REG_TEST_DIR:-/tmp/registrator-test}
ETCD_PORT=${REG_ETCD_PORT:-23790}
ETCD_PEER_PORT=${REG_ETCD_PEER_PORT:-23800}
DOCKER_TLS_PORT=${REG_DOCKER_TLS_PORT:-$((ETCD_PORT + 20))}
TLS=$DIR/docker-tls
IMAGE=local/busybox:latest
# A second set of daemons (fault tests) needs its own bridge: REG_BRIDGE=name and
# REG_BRIDGE_CIDR=172.31.0.1/24. Default: dockerd's own docker0.
BRIDGE=${REG_BRIDGE:-}
BRIDGE_CIDR=${REG_BRIDGE_CIDR:-172.31.0.1/24}
PACKAGES="etcd-server etcd-client docker.io busybox-static curl iproute2 ca-certificates haproxy openssl"
PAIR=${REG_DAEMONS:-trixie}
CACHE=${REG_DAEMONS_CACHE:-/var/cache/registrator-daemons}
TRIXIE=$CACHE/trixie
case "$PAIR" in
    trixie) PATH="$TRIXIE/root/usr/bin:$TRIXIE/root/usr/sbin:$PATH" ;;
    bookworm) ;;
    *) echo "daemons: REG_DAEMONS=$PAIR: expected trixie or bookworm" >&2; exit 2 ;;
esac

log() { echo "daemons: $*" >&2; }

install() {
    local missing=""
    command -v etcd >/dev/null || missing=1
    command -v etcdctl >/dev/null || missing=1
    command -v dockerd >/dev/null || missing=1
    command -v docker >/dev/null || missing=1
    [ -x /bin/busybox ] || command -v busybox >/dev/null || missing=1
    command -v curl >/dev/null || missing=1
    command -v ip >/dev/null || missing=1
    command -v haproxy >/dev/null || missing=1
    command -v openssl >/dev/null || missing=1
    if [ -n "$missing" ]; then
        log "installing $PACKAGES"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
    fi
    install_trixie
}

# etcd-server, etcd-client and docker.io of Debian trixie, unpacked under $TRIXIE/root with
# a private sources list and apt state (the system's apt is left alone). Idempotent; a
# lock keeps concurrent callers (the fault suite's own `up`) from unpacking twice.
install_trixie() {
    [ -x "$TRIXIE/root/usr/sbin/dockerd" ] && [ -x "$TRIXIE/root/usr/bin/etcd" ] && return 0
    mkdir -p "$TRIXIE"
    (
        flock 9
        [ -x "$TRIXIE/root/usr/sbin/dockerd" ] && [ -x "$TRIXIE/root/usr/bin/etcd" ] && exit 0
        log "unpacking etcd and dockerd from Debian trixie under $TRIXIE"
        local uri
        uri=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
        rm -rf "$TRIXIE/apt" "$TRIXIE/root" "$TRIXIE/root.tmp" "$TRIXIE/debs"
        mkdir -p "$TRIXIE/apt/lists/partial" "$TRIXIE/apt/cache/archives/partial" "$TRIXIE/debs"
        echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${uri:-http://deb.debian.org/debian} trixie main" \
            >"$TRIXIE/apt/sources.list"
        local opts=(-o "Dir::Etc::SourceList=$TRIXIE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$TRIXIE/apt/lists" -o "Dir::Cache=$TRIXIE/apt/cache"
            -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
        apt-get "${opts[@]}" update -qq >/dev/null
        (cd "$TRIXIE/debs" && apt-get "${opts[@]}" download -qq etcd-server etcd-client docker.io >/dev/null)
        for deb in "$TRIXIE"/debs/*.deb; do dpkg -x "$deb" "$TRIXIE/root.tmp"; done
        mv "$TRIXIE/root.tmp" "$TRIXIE/root"
        rm -rf "$TRIXIE/apt" "$TRIXIE/debs"
    ) 9>"$TRIXIE/.lock"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # what, command...
    local what=$1; shift
    for _ in $(seq 1 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    log "$what did not become ready"; return 1
}

start_etcd() {
    if alive "$DIR/etcd.pid"; then return 0; fi
    mkdir -p "$DIR"
    rm -rf "$DIR/etcd-data"
    etcd --name t --data-dir "$DIR/etcd-data" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "t=http://127.0.0.1:$ETCD_PEER_PORT" \
        >"$DIR/etcd.log" 2>&1 &
    echo $! >"$DIR/etcd.pid"
    wait_for etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"
    log "etcd up on 127.0.0.1:$ETCD_PORT (pid $(cat "$DIR/etcd.pid"))"
}

start_dockerd() {
    if alive "$DIR/dockerd.pid"; then return 0; fi
    # A data root that the other pair's dockerd wrote is not one to open (it only caches
    # the imported image): start it afresh.
    if [ -d "$DIR/docker-data" ] && [ "$(cat "$DIR/docker-data.pair" 2>/dev/null)" != "$PAIR" ]; then
        while mountpoint -q "$DIR/docker-data" 2>/dev/null; do umount "$DIR/docker-data" || break; done
        rm -rf "$DIR/docker-data"
    fi
    mkdir -p "$DIR/docker-data" "$DIR/docker-exec"
    echo "$PAIR" >"$DIR/docker-data.pair"
    rm -f "$DIR/docker.sock"
    local bridge_args=()
    if [ -n "$BRIDGE" ]; then
        if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
            ip link add "$BRIDGE" type bridge
            ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
            ip link set "$BRIDGE" up
        fi
        bridge_args=(--bridge "$BRIDGE")
    fi
    make_certs
    dockerd "${bridge_args[@]}" -H "unix://$DIR/docker.sock" --data-root "$DIR/docker-data" \
        -H "tcp://127.0.0.1:$DOCKER_TLS_PORT" --tlsverify --tlscacert "$TLS/ca.pem" \
        --tlscert "$TLS/server-cert.pem" --tlskey "$TLS/server-key.pem" \
        --exec-root "$DIR/docker-exec" --pidfile "$DIR/dockerd.pid" \
        --storage-driver=overlay2 --iptables=false --ip-forward=false --ip-masq=false \
        >"$DIR/dockerd.log" 2>&1 &
    echo $! >"$DIR/dockerd.pid.launch"
    wait_for dockerd curl -sf --unix-socket "$DIR/docker.sock" http://docker/_ping
    echo "$(cat "$DIR/dockerd.pid.launch")" >"$DIR/dockerd.pid"
    log "dockerd up on unix://$DIR/docker.sock (pid $(cat "$DIR/dockerd.pid"))"
}

# A CA, dockerd's server certificate (IP:127.0.0.1) and a client certificate, named as
# DOCKER_CERT_PATH wants them (ca.pem, cert.pem, key.pem). Made once per $REG_TEST_DIR.
make_certs() {
    [ -f "$TLS/key.pem" ] && return 0
    rm -rf "$TLS.tmp" && mkdir -p "$TLS.tmp"
    (
        cd "$TLS.tmp"
        local key="openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        $key -x509 -days 3650 -keyout ca-key.pem -out ca.pem -subj /CN=registrator-test-ca
        $key -keyout server-key.pem -out server.csr -subj /CN=dockerd
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 3650 -extfile server.ext -out server-cert.pem
        $key -keyout key.pem -out client.csr -subj /CN=registrator
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
            -days 3650 -extfile client.ext -out cert.pem
    ) >/dev/null 2>&1
    mv "$TLS.tmp" "$TLS"
}

import_image() {
    export DOCKER_HOST="unix://$DIR/docker.sock"
    if docker image inspect "$IMAGE" >/dev/null 2>&1; then return 0; fi
    local rootfs="$DIR/rootfs"
    local bb
    bb=$(command -v busybox || echo /bin/busybox)
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp" "$rootfs/etc"
    cp "$bb" "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
    echo "hello from busybox" >"$rootfs/www/index.html"
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    log "imported $IMAGE"
}

up() {
    install
    mkdir -p "$DIR"
    start_etcd
    start_dockerd
    import_image
}

# What the running daemons say they are, e.g. `etcd 3.5.16, dockerd 26.1.5 (API 1.45)`.
versions() {
    local etcd docker
    etcd=$(curl -sf "http://127.0.0.1:$ETCD_PORT/version" | sed -n 's/.*"etcdserver":"\([^"]*\)".*/\1/p')
    docker=$(curl -sf --unix-socket "$DIR/docker.sock" http://docker/version |
        sed -n 's/.*"Version":"\([^"]*\)","ApiVersion":"\([^"]*\)".*/\1 (API \2)/p')
    echo "etcd ${etcd:-?}, dockerd ${docker:-?}"
}

stop_pid() { # pidfile
    local f=$1
    if alive "$f"; then
        local pid
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    if alive "$DIR/dockerd.pid"; then
        export DOCKER_HOST="unix://$DIR/docker.sock"
        local ids
        ids=$(docker ps -aq 2>/dev/null || true)
        [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
    fi
    stop_pid "$DIR/dockerd.pid"
    stop_pid "$DIR/etcd.pid"
    # dockerd leaves its netns bind mount and the docker0 bridge behind.
    for m in "$DIR"/docker-exec/netns/*; do
        [ -e "$m" ] || continue
        umount "$m" 2>/dev/null || true
    done
    if mountpoint -q "$DIR/docker-data/overlay2" 2>/dev/null; then umount "$DIR/docker-data/overlay2" || true; fi
    # dockerd also bind-mounts its data root onto itself.
    while mountpoint -q "$DIR/docker-data" 2>/dev/null; do umount "$DIR/docker-data" || break; done
    ip link delete "${BRIDGE:-docker0}" 2>/dev/null || true
    rm -rf "$DIR/etcd-data" "$DIR/docker-exec" "$DIR/docker.sock"
    log "down"
}

env_exports() {
    echo "export REG_TEST_DIR=$DIR"
    echo "export REG_ETCD=http://127.0.0.1:$ETCD_PORT"
    echo "export ETCDCTL_API=3"
    echo "export DOCKER_HOST=unix://$DIR/docker.sock"
    echo "export REG_IMAGE=$IMAGE"
    echo "export REG_DOCKER_TLS_HOST=tcp://127.0.0.1:$DOCKER_TLS_PORT"
    echo "export REG_DOCKER_CERT_PATH=$TLS"
    echo "export REG_DAEMONS=$PAIR"
    echo "export PATH=$PATH"
}

case "${1:-}" in
    install) install ;;
    up) up; log "$PAIR: $(versions)"; env_exports ;;
    down) down ;;
    env) env_exports ;;
    run)
        shift
        started=""
        if ! alive "$DIR/etcd.pid" || ! alive "$DIR/dockerd.pid"; then started=1; fi
        up >/dev/null
        if [ -n "$started" ]; then trap down EXIT; fi
        log "$PAIR: $(versions)"
        eval "$(env_exports)"
        "$@"
        ;;
    *) echo "usage: $0 install|up|down|env|run CMD..." >&2; exit 2 ;;
esac
