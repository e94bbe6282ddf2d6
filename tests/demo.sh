#!/usr/bin/env bash
# `make demo`: the README's three examples against the local etcd and dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tests/daemons.sh up)"
BIN=${REGISTRATOR:-target/release/registrator}
URI="etcd://127.0.0.1:${REG_ETCD_PORT:-23790}/services"

for n in demo-web demo-db demo-cache; do docker rm -f "$n" >/dev/null 2>&1 || true; done
# 1. Public HTTP, routed by domain.
docker run -d --pull never --init --name demo-web -p 127.0.0.1::80 \
    -e SERVICE_NAME=web -e SERVICE_MODE=http -e SERVICE_DOMAINS=example.com,www.example.com \
    "$REG_IMAGE" httpd -f -p 80 -h /www 2> >(grep -v "IPv4 forwarding" >&2) >/dev/null
# 2. Public TCP on external port 15432.
docker run -d --pull never --init --name demo-db -p 127.0.0.1::5432 \
    -e SERVICE_NAME=db -e SERVICE_EXTERNAL_PORT=15432 \
    "$REG_IMAGE" httpd -f -p 5432 -h /www 2> >(grep -v "IPv4 forwarding" >&2) >/dev/null
# 3. Private TCP on internal port 16379.
docker run -d --pull never --init --name demo-cache -p 127.0.0.1::6379 \
    -e SERVICE_NAME=cache -e SERVICE_INTERNAL_PORT=16379 \
    "$REG_IMAGE" httpd -f -p 6379 -h /www 2> >(grep -v "IPv4 forwarding" >&2) >/dev/null

echo "+ $BIN --once $URI"
"$BIN" --once "$URI"
echo "+ etcdctl get --prefix /services   (shown as key = value)"
ETCDCTL_API=3 etcdctl --endpoints="$REG_ETCD" get --prefix /services | paste -d '\t' - - | sed 's/\t/ = /'
echo
echo "The daemons keep running. To use them: eval \"\$(tests/daemons.sh env)\" (sets DOCKER_HOST,"
echo "REG_ETCD, ETCDCTL_API); stop them with: make daemons-down"
