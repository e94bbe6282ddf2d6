//! The help texts: the daemon's (`--help`), `ls --help` and `healthcheck --help`.

/// `registrator --help`.
pub const HELP: &str = "\
registrator: registers the published ports of this host's Docker containers in etcd v3

Usage: registrator [OPTIONS] <registry-uri>

  registry-uri  etcd://[user:pass@]host[:port][,host[:port]...]/prefix  (etcds:// for TLS)
                etcd:///services = etcd at 127.0.0.1:2379, keys under /services

Options:
  --ip ADDR              address registered for every published port
  --hostname NAME        this host's identity in service IDs (default: system hostname)
  --once                 sync once and exit (0: etcd matches Docker, 1: it could not)
  --interval SECS        full resync period (default 10)
  --ttl SECS             lease TTL of every key (default 30; 0: no lease;
                         --once writes no lease unless --ttl is given)
  --deregister-on-exit   remove this host's services on SIGTERM/SIGINT (within 5 s)
  --internal             register container IPs and exposed ports
  --network NAME         the network whose IP --internal registers (or SERVICE_NETWORK)
  --use-ip-from-label L  register the IP address in container label L, if set
  --explicit             register only containers that set SERVICE_NAME
  --dry-run              print the puts and deletes of one sync, change nothing
  --index-prefix PREFIX  where this host indexes its services and port claims
                         (default: /.registrator/services for /services)
  --claim-grace SECS     how long a claimed port stays reserved after its last
                         container stopped (default: --interval)
  --etcd-cacert FILE     CA bundle for etcds:// (also ?cacert= in the URI)
  --etcd-cert FILE       client certificate (also ?cert=)
  --etcd-key FILE        client key (also ?key=)
  --etcd-password-file F etcd password (or ETCD_USERNAME / ETCD_PASSWORD)
  --metrics-addr H:P     serve /metrics and /healthz there (off by default; loop only)
  --retry-attempts N     at start, give up on etcd after N retries (default -1: never)
  --retry-interval MS    the wait between those retries (default 2000)
  --log-format FORMAT    text (default; RFC 3339 UTC times) or json (an object a line)
  -h, --help             this help
  -V, --version          version and git commit

Environment: each option as REGISTRATOR_<OPTION>, the command line winning
  (REGISTRATOR_TTL=60, REGISTRATOR_DRY_RUN=1, REGISTRATOR_REGISTRY=<registry-uri>);
  DOCKER_HOST (default unix:///var/run/docker.sock), DOCKER_TLS_VERIFY,
  DOCKER_CERT_PATH (as docker), RUST_LOG (default info).
gliderlabs/registrator's options (-resync, -cleanup, -tags, ...) work too: see README.
Exit codes: 0 ok, 1 runtime failure, 2 usage error.

Example:
  registrator --ip 10.0.0.5 etcd://10.0.0.1:2379/services

Subcommands (each has --help):
  registrator ls [OPTIONS] <registry-uri>       list the services in etcd
  registrator healthcheck --metrics-addr H:P    probe a running registrator's /healthz
";

/// `registrator ls --help`.
pub const HELP_LS: &str = "\
registrator ls: lists the services registered under a prefix, read from etcd alone
(read-only; Docker is not needed)

Usage: registrator ls [OPTIONS] <registry-uri>

  One line per service, sorted by name then ID: name, ID, address:port, mode, domains
  (http) or cluster-wide TCP port (tcp), the host that registered it, and what is left
  of its lease (-: no lease; expired: the lease is gone and the keys with it).

Options:
  --node PATTERN         only services registered by this host (* matches anything)
  --name PATTERN         only services of this name (web, web-*)
  --json                 a JSON array of objects instead of the table
  --etcd-cacert FILE     CA bundle for etcds:// (also ?cacert= in the URI)
  --etcd-cert FILE       client certificate (also ?cert=)
  --etcd-key FILE        client key (also ?key=)
  --etcd-password-file F etcd password (or ETCD_USERNAME / ETCD_PASSWORD)
  -h, --help             this help

Exit codes: 0 listed (also when nothing matched), 1 etcd failed, 2 usage error.

Example:
  registrator ls --node web-1 etcd://10.0.0.1:2379/services
";

/// `registrator healthcheck --help`.
pub const HELP_HEALTHCHECK: &str = "\
registrator healthcheck: asks a running registrator's /healthz whether it is doing its
job (for Docker's HEALTHCHECK: the image has no curl)

Usage: registrator healthcheck --metrics-addr HOST:PORT [--timeout SECS]

  Prints the answer's one line. Exit 0: healthy (HTTP 200); 1: unhealthy (503, with
  the reason), or nothing answered. An address on all interfaces (0.0.0.0:P, :P, [::]:P)
  is probed on loopback.

Options:
  --metrics-addr H:P     the address the registrator serves (its --metrics-addr)
  --timeout SECS         for each of connect, send and receive (default 3)
  -h, --help             this help

Example (Dockerfile, exec form):
  HEALTHCHECK CMD [\"/registrator\", \"healthcheck\", \"--metrics-addr\", \"127.0.0.1:9480\"]
";
