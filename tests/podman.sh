#!/usr/bin/env bash
# Installs and runs a rootful Podman 4.3 (Debian) serving the Docker Engine API on a
# private unix socket, with its own config, storage and event log, plus a local busybox
# image: the second real engine the registrator is tested against.
#
#   tests/podman.sh install      apt-get install what is missing
#   tests/podman.sh up           write the configs, start the API service, import the image
#   tests/podman.sh down         remove the containers, stop the service by PID, clean up
#   tests/podman.sh env          print the exports the tests read
#   tests/podman.sh run CMD...   up (unless already up), run CMD, down (if it started it)
#
# Everything lives under $REG_PODMAN_DIR (default /tmp/registrator-podman). The host
# firewall and ip_forward are left alone: containers publish ports through slirp4netns
# (`podman run --network slirp4netns -p 127.0.0.1:P:80`), never through the netavark
# bridge. Containers created through the Docker API (e.g. by the docker CLI) get the
# bridge, which would add iptables chains: create test containers with the podman CLI.
# `run` leaves DOCKER_HOST alone, so it nests inside `tests/daemons.sh run` (etcd).
set -euo pipefail

DIR=${REG_PODMAN_DIR:-/tmp/registrator-podman}
IMAGE=local/busybox:latest
PACKAGES="podman runc conmon netavark aardvark-dns slirp4netns catatonit
    golang-github-containers-common"
# Paths outside $DIR that rootful Podman may create: down removes those that `up` found
# missing (recorded in $DIR/created-outside), once they are empty.
OUTSIDE="/run/netns /run/containers /var/lib/containers $(ls -d /sys/fs/cgroup/*/ 2>/dev/null \
    | sed 's|$|libpod_parent|')"

export CONTAINERS_CONF=$DIR/containers.conf
export CONTAINERS_STORAGE_CONF=$DIR/storage.conf
export CONTAINERS_REGISTRIES_CONF=$DIR/registries.conf

log() { echo "podman: $*" >&2; }

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

install() {
    local t0 missing=""
    t0=$(now)
    for pkg in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        log "installing$missing"
        apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            $missing >/dev/null
        log "install took $(took "$t0") s"
    fi
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

write_configs() {
    mkdir -p "$DIR/storage" "$DIR/run" "$DIR/tmp" "$DIR/libpod" "$DIR/volumes" \
        "$DIR/networks" "$DIR/copy-tmp"
    # The defaults fail here: setrlimit beyond the hard limit, journald and systemd
    # absent, crun refuses hybrid cgroups. File locks keep the lock table out of /dev/shm.
    cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
init_path = "/usr/bin/catatonit"
netns = "slirp4netns"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
runtime = "runc"
lock_type = "file"
tmp_dir = "$DIR/tmp"
static_dir = "$DIR/libpod"
volume_path = "$DIR/volumes"
image_copy_tmp_dir = "$DIR/copy-tmp"

[network]
network_backend = "netavark"
network_config_dir = "$DIR/networks"
default_subnet = "10.89.6.0/24"
EOF
    cat >"$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
EOF
    # No registry to search: a short name that is not local fails instead of resolving.
    cat >"$CONTAINERS_REGISTRIES_CONF" <<EOF
unqualified-search-registries = []
short-name-mode = "enforcing"
EOF
}

record_outside() {
    [ -f "$DIR/created-outside" ] && return 0
    : >"$DIR/created-outside"
    for p in $OUTSIDE; do
        [ -e "$p" ] || echo "$p" >>"$DIR/created-outside"
    done
}

start_service() {
    if alive "$DIR/service.pid"; then return 0; fi
    rm -f "$DIR/podman.sock"
    podman system service --time=0 "unix://$DIR/podman.sock" >"$DIR/service.log" 2>&1 &
    echo $! >"$DIR/service.pid"
    wait_for "podman service" curl -sf --unix-socket "$DIR/podman.sock" http://podman/_ping
    log "podman API up on unix://$DIR/podman.sock (pid $(cat "$DIR/service.pid"))"
}

import_image() {
    if podman image exists "$IMAGE" 2>/dev/null; then return 0; fi
    local rootfs="$DIR/rootfs" bb
    bb=$(command -v busybox || echo /bin/busybox)
    rm -rf "$rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/www" "$rootfs/tmp" "$rootfs/etc"
    cp "$bb" "$rootfs/bin/busybox"
    for applet in $("$rootfs/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
    done
    echo "root:x:0:0:root:/:/bin/sh" >"$rootfs/etc/passwd"
    echo "hello from busybox" >"$rootfs/www/index.html"
    # Podman stores it as localhost/local/busybox:latest; `local/busybox` finds it.
    tar -C "$rootfs" -c . | podman import -q -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    rm -rf "$rootfs"
    log "imported $IMAGE"
}

up() {
    local t0
    install
    t0=$(now)
    mkdir -p "$DIR"
    record_outside
    write_configs
    start_service
    import_image
    log "up took $(took "$t0") s"
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

# Unmounts everything mounted at or below $1, deepest first.
umount_below() {
    local m
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo \
        | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

# PIDs of processes still at work on this Podman's storage: conmon, and the `podman
# container cleanup` each conmon starts when its container exits (after `rm -f` has
# returned). Their command lines name $DIR; waited for, never signalled.
busy_pids() {
    local pid
    # The grep names $DIR too: it has exited by the time its PID is checked.
    for pid in $(grep -laF -- "$DIR/" /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3); do
        [ -d "/proc/$pid" ] && echo "$pid"
    done
    return 0
}

down() {
    local t0
    t0=$(now)
    if [ -f "$CONTAINERS_CONF" ]; then
        podman rm -f -a -t 1 >/dev/null 2>&1 || true
        podman pod rm -f -a >/dev/null 2>&1 || true
    fi
    stop_pid "$DIR/service.pid"
    # A late cleanup would mount the storage again and write under $DIR once it is gone.
    for _ in $(seq 1 200); do [ -z "$(busy_pids)" ] && break; sleep 0.05; done
    [ -z "$(busy_pids)" ] || log "still busy after 10 s: pids $(busy_pids | tr '\n' ' ')"
    umount_below "$DIR"
    if [ -f "$DIR/created-outside" ]; then
        while read -r p; do
            [ -n "$p" ] || continue
            [ -e "$p" ] || continue
            umount_below "$p"
            case "$p" in
                # Only Podman writes there (e.g. the bridge's ipam.db and blob cache).
                /run/containers | /var/lib/containers) rm -rf "$p" ;;
                # Shared with others: only what is empty (a cgroup directory goes with
                # rmdir once it holds no process).
                *) find "$p" -depth -type d -exec rmdir {} \; 2>/dev/null || true ;;
            esac
        done <"$DIR/created-outside"
    fi
    rm -rf "$DIR"
    log "down took $(took "$t0") s"
}

env_exports() {
    echo "export REG_PODMAN_DIR=$DIR"
    echo "export REG_PODMAN_SOCK=$DIR/podman.sock"
    echo "export REG_PODMAN_HOST=unix://$DIR/podman.sock"
    echo "export REG_PODMAN_IMAGE=$IMAGE"
    echo "export CONTAINERS_CONF=$CONTAINERS_CONF"
    echo "export CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
    echo "export CONTAINERS_REGISTRIES_CONF=$CONTAINERS_REGISTRIES_CONF"
}

case "${1:-}" in
    install) install ;;
    up) up; env_exports ;;
    down) down ;;
    env) env_exports ;;
    run)
        shift
        started=""
        if ! alive "$DIR/service.pid"; then started=1; fi
        up >/dev/null
        if [ -n "$started" ]; then trap down EXIT; fi
        eval "$(env_exports)"
        "$@"
        ;;
    *) echo "usage: $0 install|up|down|env|run CMD..." >&2; exit 2 ;;
esac
