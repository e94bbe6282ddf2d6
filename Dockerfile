# The registrator as a sidecar image: nothing but the static binary.
#
# Build the binary first, then the image (no registry needed; this is what
# `make image` does):
#
#   make static     # target/x86_64-unknown-linux-musl/release/registrator
#   docker build -t etcd-registrator .
#
# Run it with the host's Docker socket mounted where DOCKER_HOST points, and host
# networking so it reaches etcd on the host and registers the host's addresses:
#
#   docker run -d --name registrator --net host -h "$(hostname)" \
#       -v /var/run/docker.sock:/tmp/docker.sock \
#       etcd-registrator etcd://127.0.0.1:2379/services
#
# Every argument after the image is the registrator's (`--help` lists them); with
# none it exits 2 and says that the registry URI is missing. The image has no shell,
# no libc and no CA files: TLS uses the Mozilla roots built into the binary, or the
# CA bundle given with --etcd-cacert (mount it read-only). The binary is owned by
# root and executable by anyone, and nothing is written to the file system, so the
# container also runs with --read-only, --cap-drop ALL and any --user that may read
# the socket (e.g. --user 65534:<docker group id>).
FROM scratch
COPY target/x86_64-unknown-linux-musl/release/registrator /registrator
ENV DOCKER_HOST=unix:///tmp/docker.sock
ENTRYPOINT ["/registrator"]
