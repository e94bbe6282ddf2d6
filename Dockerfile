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
#
# Health, for those who run the metrics listener (it is off by default, hence the
# comment): the binary probes its own /healthz and exits 0 (200) or 1 (503, or no
# answer), as the image has no curl. Use the exec form: `docker run --health-cmd`
# runs a shell, which the image does not have. In a Dockerfile FROM this image:
#
#   HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
#       CMD ["/registrator", "healthcheck", "--metrics-addr", "127.0.0.1:9480"]
#
# or in a compose file: healthcheck: test: ["CMD", "/registrator", "healthcheck",
# "--metrics-addr", "127.0.0.1:9480"]; and run the registrator with the same address:
#
#   docker run ... etcd-registrator --metrics-addr 127.0.0.1:9480 etcd://...
FROM scratch
COPY target/x86_64-unknown-linux-musl/release/registrator /registrator
ENV DOCKER_HOST=unix:///tmp/docker.sock
ENTRYPOINT ["/registrator"]
