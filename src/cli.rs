//! Command line: validates what the user typed into a [`Config`], nothing more.
//!
//! No syscalls here (no hostname lookup, no socket): those happen when the
//! registrator starts, so parsing stays a pure function that tests can table.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli_args::{Args, Given};
use crate::cli_compat::{self, Retry};
use crate::logging::LogFormat;

/// What `main` should do.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    /// `registrator healthcheck`: probe a running registrator's `/healthz`.
    Healthcheck {
        /// The `--metrics-addr` the daemon listens on (`host:port`).
        addr: String,
        timeout: Duration,
    },
    /// `registrator ls`: list the services under a prefix.
    Ls(Box<LsConfig>),
    /// `--help` of a subcommand: the text to print.
    SubcommandHelp(&'static str),
    Help,
    Version,
}

/// One etcd endpoint (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The parsed registry URI: where etcd is and which key prefix is ours.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    pub endpoints: Vec<Endpoint>,
    /// `etcds://`: talk TLS to every endpoint.
    pub tls: bool,
    /// Leading `/`, no trailing `/` (`/services`).
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Never prints the password.
impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URI as a person should see it in logs: no password.
impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        let user = self
            .username
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let hosts: Vec<String> = self.endpoints.iter().map(|e| e.to_string()).collect();
        write!(f, "{scheme}://{user}{}{}", hosts.join(","), self.prefix)
    }
}

/// Where the Docker Engine API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
    /// `host:port` over TLS (`DOCKER_TLS_VERIFY`): the daemon's certificate is checked
    /// against `certs/ca.pem`; `certs/cert.pem` and `key.pem`, if there, are ours.
    Tls {
        addr: String,
        certs: PathBuf,
    },
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerHost::Tcp(a) => write!(f, "tcp://{a}"),
            DockerHost::Tls { addr, .. } => write!(f, "tcp://{addr} (TLS)"),
        }
    }
}

/// Everything the registrator needs to run, as the user asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub registry: Registry,
    pub docker: DockerHost,
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub once: bool,
    pub interval: Duration,
    pub internal: bool,
    pub explicit: bool,
    pub dry_run: bool,
    /// Lease TTL in seconds; None: the default (30 in the loop, no lease with `--once`).
    pub ttl: Option<u64>,
    pub deregister_on_exit: bool,
    pub password_file: Option<PathBuf>,
    /// `--metrics-addr`: where to serve `/metrics` and `/healthz` (`host:port`, as
    /// `ToSocketAddrs` reads it); None: no listener.
    pub metrics_addr: Option<String>,
    /// `--index-prefix`: where the ownership index lives; None: see
    /// [`Config::index_prefix`].
    pub index_prefix: Option<String>,
    /// `--claim-grace`: how long a port claim outlives its last service; None: one
    /// `--interval`.
    pub claim_grace: Option<Duration>,
    /// `--network`: whose address `--internal` registers for a container on several
    /// networks that sets no `SERVICE_NETWORK`.
    pub network: Option<String>,
    /// `--use-ip-from-label`: the container label whose value is the address to register.
    pub ip_label: Option<String>,
    /// `--retry-attempts` / `--retry-interval`: how often to try etcd at start.
    pub retry: Option<Retry>,
    /// Options accepted but not followed (gliderlabs's `-tags`, ...): one line each.
    pub warnings: Vec<String>,
    /// `--log-format`: text lines (the default) or JSON objects.
    pub log_format: LogFormat,
}

impl Config {
    /// The ownership index's prefix: `--index-prefix`, else `.registrator/<last>` beside
    /// the prefix's last segment (`/services` -> `/.registrator/services`, `/a/services`
    /// -> `/a/.registrator/services`): under the same parent, so one permission on the
    /// parent covers both, yet not starting with the prefix, so even a read of the
    /// prefix without its trailing `/` never meets an index key.
    pub fn index_prefix(&self) -> String {
        self.index_prefix
            .clone()
            .unwrap_or_else(|| crate::keys::default_index_prefix(&self.registry.prefix))
    }
}

/// A mistake on the command line: printed as one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

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

/// Parses the arguments (without the program name). Every option may come from its
/// `REGISTRATOR_<OPTION>` variable instead (see `cli_args`), looked up with `env`, which
/// also gives `DOCKER_HOST`.
pub fn parse(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    match args.first().and_then(|a| a.to_str()) {
        Some("ls") => return parse_ls(args[1..].to_vec()),
        Some("healthcheck") => return parse_healthcheck(args[1..].to_vec()),
        _ => {}
    }
    let mut a = Args::new(args, env)?;
    if a.has(&["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if a.has(&["-V", "--version"]) {
        return Ok(Command::Version);
    }
    let ip = a.value("--ip")?;
    if let Some(g) = &ip {
        g.value
            .parse::<IpAddr>()
            .map_err(|_| usage(format!("{g} is not an IP address")))?;
    }
    let hostname = a.value("--hostname")?;
    if let Some(g) = &hostname {
        let h = &g.value;
        if h.is_empty() || h.contains('/') || h.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(usage(format!(
                "{g} must be non-empty, without '/', spaces or control characters"
            )));
        }
    }
    let compat = cli_compat::read(&mut a)?;
    let interval = match (a.value("--interval")?, compat.resync) {
        (None, None) => Duration::from_secs(10),
        (None, Some(resync)) => resync,
        (Some(g), Some(_)) => {
            return Err(usage(format!(
                "{g} and --resync set the same period: give one"
            )))
        }
        (Some(g), None) => match g.value.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Duration::from_secs_f64(v),
            _ => {
                return Err(usage(format!(
                    "{g} is not a number of seconds in (0, 86400]"
                )))
            }
        },
    };
    let ttl = match a.value("--ttl")? {
        None => None,
        Some(g) => match g.value.parse::<u64>() {
            Ok(v) if v <= 86_400 => Some(v),
            _ => {
                return Err(usage(format!(
                    "{g} is not a whole number of seconds in 0-86400"
                )))
            }
        },
    };
    let claim_grace = match a.value("--claim-grace")? {
        None => None,
        Some(g) => match g.value.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => {
                Some(Duration::from_secs_f64(v))
            }
            _ => {
                return Err(usage(format!(
                    "{g} is not a number of seconds in [0, 86400]"
                )))
            }
        },
    };
    let index_prefix = a.value("--index-prefix")?;
    let network = non_empty(a.value("--network")?)?;
    let ip_label = non_empty(a.value("--use-ip-from-label")?)?;
    let path = |g: Option<Given>| g.map(|g| PathBuf::from(g.value));
    let cacert = path(a.value("--etcd-cacert")?);
    let cert = path(a.value("--etcd-cert")?);
    let key = path(a.value("--etcd-key")?);
    let password_file = path(a.value("--etcd-password-file")?);
    let metrics_addr = a
        .value("--metrics-addr")?
        .map(|g| listen_addr(&g.to_string(), &g.value))
        .transpose()?;
    let log_format = match a.value("--log-format")? {
        None => LogFormat::Text,
        Some(f) => f
            .value
            .parse()
            .map_err(|()| usage(format!("{f}: expected text or json")))?,
    };
    let once = a.flag("--once")?;
    let internal = a.flag("--internal")?;
    let explicit = a.flag("--explicit")?;
    let dry_run = a.flag("--dry-run")?;
    let deregister_on_exit = a.flag("--deregister-on-exit")?;

    let mut free = a.finish("registry", "--help")?;
    if free.len() > 1 {
        // An unquoted space in a password splits the URI: the tail arrives here.
        let extra: Vec<String> = free[1..].iter().map(|a| redact(&a.value)).collect();
        return Err(usage(format!(
            "unexpected argument(s) after the registry URI: {}",
            extra.join(" ")
        )));
    }
    let Some(uri) = free.pop() else {
        return Err(usage(
            "missing registry URI, e.g. etcd:///services (see --help)",
        ));
    };
    let mut registry = parse_registry(&uri.value).map_err(|e| match uri.from_env() {
        true => usage(format!("{}: {e}", uri.origin)),
        false => e,
    })?;
    registry.cacert = cacert.or(registry.cacert);
    registry.cert = cert.or(registry.cert);
    registry.key = key.or(registry.key);
    if registry.cert.is_some() != registry.key.is_some() {
        return Err(usage("--etcd-cert and --etcd-key must be given together"));
    }
    if metrics_addr.is_some() && (once || dry_run) {
        return Err(usage(
            "--metrics-addr serves the loop's metrics and health: it does not go with --once \
             or --dry-run",
        ));
    }
    let docker_host = env("DOCKER_HOST").filter(|s| !s.is_empty());
    let docker = parse_docker_host(
        docker_host
            .as_deref()
            .unwrap_or("unix:///var/run/docker.sock"),
    )?;
    let index_prefix = index_prefix
        .map(|g| check_index_prefix(&g, &registry.prefix).map(|()| g.value))
        .transpose()?;

    Ok(Command::Run(Box::new(Config {
        registry,
        docker,
        ip: ip.map(|g| g.value),
        hostname: hostname.map(|g| g.value),
        once: once || dry_run,
        interval,
        internal,
        explicit,
        dry_run,
        ttl,
        deregister_on_exit,
        password_file,
        metrics_addr,
        index_prefix,
        claim_grace,
        network,
        ip_label,
        retry: compat.retry,
        warnings: compat.warnings,
        log_format,
    })))
}

/// A value that must not be empty (an empty variable counts as unset already).
fn non_empty(g: Option<Given>) -> Result<Option<String>, UsageError> {
    match g {
        Some(g) if g.value.trim().is_empty() => Err(usage(format!("{g} must not be empty"))),
        g => Ok(g.map(|g| g.value)),
    }
}

/// `--index-prefix` has the registry prefix's shape and lies beside it: neither under
/// the other, so consumers of `<prefix>/` never see index keys.
fn check_index_prefix(given: &Given, prefix: &str) -> Result<(), UsageError> {
    let index = given.value.as_str();
    let bad = |why: &str| usage(format!("{given} {why}"));
    if !index.starts_with('/') || index.len() < 2 || index.ends_with('/') {
        return Err(bad("must start with '/' and not end with '/'"));
    }
    if index
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || index.chars().any(|c| c.is_control())
    {
        return Err(bad(
            "has an empty, '.' or '..' segment or a control character",
        ));
    }
    if index == prefix
        || index.starts_with(&format!("{prefix}/"))
        || prefix.starts_with(&format!("{index}/"))
    {
        return Err(bad(&format!(
            "must lie beside the key prefix {prefix:?}, not on or under it (nor above it)"
        )));
    }
    Ok(())
}

/// What `registrator ls` lists, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LsConfig {
    pub registry: Registry,
    /// `--node`: only this host's services (`*` matches any run of characters).
    pub node: Option<String>,
    /// `--name`: only services of this name (`*` as for `--node`).
    pub name: Option<String>,
    /// `--json`: an array of objects instead of the table.
    pub json: bool,
    pub password_file: Option<PathBuf>,
}

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

/// `healthcheck --timeout` when not given: well inside Docker's default 30 s.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A subcommand's arguments: read as the daemon's, without the environment.
fn subcommand_args(args: Vec<OsString>) -> Result<Args<'static>, UsageError> {
    Args::new(args, &|_| None)
}

/// The free arguments left after the options of a subcommand; an unknown option is an
/// error that points at the subcommand's help.
fn subcommand_rest(a: Args, sub: &str) -> Result<Vec<String>, UsageError> {
    let help = format!("registrator {sub} --help");
    let free = a
        .finish("", &help)
        .map_err(|e| usage(format!("{sub}: {e}")))?;
    Ok(free.into_iter().map(|g| g.value).collect())
}

/// `registrator ls [OPTIONS] <registry-uri>`. DOCKER_HOST plays no part.
fn parse_ls(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut a = subcommand_args(args)?;
    if a.has(&["-h", "--help"]) {
        return Ok(Command::SubcommandHelp(HELP_LS));
    }
    let mut text = |key: &str| -> Result<Option<String>, UsageError> {
        a.value(key)
            .map(|g| g.map(|g| g.value))
            .map_err(|e| usage(format!("ls: {e}")))
    };
    let node = text("--node")?;
    let name = text("--name")?;
    let cacert = text("--etcd-cacert")?.map(PathBuf::from);
    let cert = text("--etcd-cert")?.map(PathBuf::from);
    let key = text("--etcd-key")?.map(PathBuf::from);
    let password_file = text("--etcd-password-file")?.map(PathBuf::from);
    let json = a.flag("--json").map_err(|e| usage(format!("ls: {e}")))?;
    for (option, v) in [("--node", &node), ("--name", &name)] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(usage(format!("ls: {option} needs a non-empty value")));
        }
    }
    let free = subcommand_rest(a, "ls")?;
    let uri = match free.as_slice() {
        [uri] => uri,
        [] => {
            return Err(usage(
                "ls: missing registry URI, e.g. registrator ls etcd:///services",
            ))
        }
        [_, extra @ ..] => {
            // An unquoted space in a password splits the URI: the tail arrives here.
            let extra: Vec<String> = extra.iter().map(|a| redact(a)).collect();
            return Err(usage(format!(
                "ls: unexpected argument(s) after the registry URI: {}",
                extra.join(" ")
            )));
        }
    };
    let mut registry = parse_registry(uri)?;
    registry.cacert = cacert.or(registry.cacert);
    registry.cert = cert.or(registry.cert);
    registry.key = key.or(registry.key);
    if registry.cert.is_some() != registry.key.is_some() {
        return Err(usage("--etcd-cert and --etcd-key must be given together"));
    }
    Ok(Command::Ls(Box::new(LsConfig {
        registry,
        node,
        name,
        json,
        password_file,
    })))
}

/// `registrator healthcheck --metrics-addr HOST:PORT [--timeout SECS]`.
fn parse_healthcheck(args: Vec<OsString>) -> Result<Command, UsageError> {
    let mut a = subcommand_args(args)?;
    if a.has(&["-h", "--help"]) {
        return Ok(Command::SubcommandHelp(HELP_HEALTHCHECK));
    }
    let mut text = |key: &str| -> Result<Option<String>, UsageError> {
        a.value(key)
            .map(|g| g.map(|g| g.value))
            .map_err(|e| usage(format!("healthcheck: {e}")))
    };
    let addr = text("--metrics-addr")?;
    let timeout = match text("--timeout")? {
        None => HEALTHCHECK_TIMEOUT,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 300.0 => Duration::from_secs_f64(v),
            _ => {
                return Err(usage(format!(
                    "healthcheck: --timeout {s:?} is not a number of seconds in (0, 300]"
                )))
            }
        },
    };
    let free = subcommand_rest(a, "healthcheck")?;
    if let Some(extra) = free.first() {
        return Err(usage(format!(
            "healthcheck: unexpected argument {:?} (the address goes after --metrics-addr)",
            redact(extra)
        )));
    }
    let Some(addr) = addr else {
        return Err(usage(
            "healthcheck: --metrics-addr HOST:PORT is required (the registrator's own)",
        ));
    };
    let addr = listen_addr(&format!("--metrics-addr {addr:?}"), &addr)?;
    if addr.ends_with(":0") {
        return Err(usage(
            "healthcheck: --metrics-addr needs the port the registrator listens on, not 0",
        ));
    }
    Ok(Command::Healthcheck { addr, timeout })
}

/// Checks the form of a listen address, `HOST:PORT` (`[v6]:PORT`; `:PORT` means every
/// interface), and returns it as `ToSocketAddrs` reads it. Port 0 picks a free port.
/// The host name is resolved later, when the listener binds.
fn listen_addr(shown: &str, s: &str) -> Result<String, UsageError> {
    let bad = |why: &str| {
        usage(format!(
            "{shown}: {why}; expected HOST:PORT, e.g. 127.0.0.1:9480"
        ))
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    port.parse::<u16>()
        .map_err(|_| bad("the port is not a number in 0-65535"))?;
    if host.is_empty() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .ok_or_else(|| bad("malformed IPv6 address"))?;
    } else if host.contains(':') {
        return Err(bad("an IPv6 address needs brackets, as in [::1]:9480"));
    } else if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '[' || c == ']')
    {
        return Err(bad("malformed host"));
    }
    Ok(s.to_string())
}

/// Parses `etcd://[user:pass@]host[:port][,host[:port]...]/prefix[?cacert=..&cert=..&key=..]`.
///
/// A mistake is reported with the URI's password masked (see [`redact`]); when the URI
/// may hold a password, the message names the faulty part without quoting it.
pub fn parse_registry(uri: &str) -> Result<Registry, UsageError> {
    let shown = redact(uri);
    let secret = secret_span(uri);
    // A password with an unescaped '/' or '?' spills into the host list or the query,
    // and the masked URI then looks right: say what may be wrong.
    let hint = match &secret {
        Some(r) if uri[r.clone()].contains(['/', '?']) => {
            "; a '/' or '?' in the password must be percent-encoded (%2F, %3F)"
        }
        _ => "",
    };
    let bad = |why: &str| usage(format!("registry URI {shown:?}: {why}{hint}"));
    // Pieces of the URI are quoted only when none of it can be a password.
    let quote = secret.is_none();
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("malformed; expected etcd://host:port/prefix"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "etcd" => false,
        "etcds" => true,
        "" => {
            return Err(bad(
                "malformed; missing scheme, expected etcd://host:port/prefix",
            ))
        }
        other => {
            return Err(bad(&format!(
                "scheme {other:?} is not supported (only etcd:// and etcds://)"
            )))
        }
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pass) = match u.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (u, None),
            };
            if user.is_empty() {
                return Err(bad("empty user name before '@'"));
            }
            (
                Some(percent_decode(user).map_err(|e| bad(&e))?),
                pass.map(percent_decode).transpose().map_err(|e| bad(&e))?,
            )
        }
    };
    let default_port = 2379;
    let mut endpoints = Vec::new();
    if hosts.is_empty() {
        endpoints.push(Endpoint {
            host: "127.0.0.1".into(),
            port: default_port,
        });
    } else {
        for h in hosts.split(',') {
            endpoints.push(parse_endpoint(h, default_port, quote).map_err(|e| bad(&e))?);
        }
    }
    let prefix = path.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(bad("no key prefix; add a path, e.g. etcd:///services"));
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("key prefix has an empty, '.' or '..' segment"));
    }
    if prefix.chars().any(|c| c.is_control()) {
        return Err(bad("key prefix contains a control character"));
    }
    let mut registry = Registry {
        endpoints,
        tls,
        prefix: prefix.to_string(),
        username,
        password,
        cacert: None,
        cert: None,
        key: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(&format!("query parameter{} has no value", q(pair, quote))))?;
        let v = PathBuf::from(percent_decode(v).map_err(|e| bad(&e))?);
        match k {
            "cacert" => registry.cacert = Some(v),
            "cert" => registry.cert = Some(v),
            "key" => registry.key = Some(v),
            _ => {
                return Err(bad(&format!(
                    "unknown query parameter{} (known: cacert, cert, key)",
                    q(k, quote)
                )))
            }
        }
    }
    Ok(registry)
}

/// Parses `host[:port]` or `[v6]:port`. `quote`: the message may quote the text (it
/// holds no part of a password).
fn parse_endpoint(h: &str, default_port: u16, quote: bool) -> Result<Endpoint, String> {
    let qh = q(h, quote);
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("endpoint{qh} has an unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("endpoint{qh} is malformed"))?,
                ),
            ),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!("endpoint{qh} has no valid host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "endpoint{qh}: port{} is not a number in 1-65535",
                    q(p, quote)
                ))
            }
        },
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// ` "text"` when it may be quoted, else nothing.
fn q(text: &str, quote: bool) -> String {
    if quote {
        format!(" {text:?}")
    } else {
        String::new()
    }
}

/// Where a password may sit in a URI-like `s`, as a byte range: from the first ':'
/// after the scheme's `://` to the last '@'. Generous on purpose: it also covers a
/// password with an unescaped '/', '?' or '@' (and, harmlessly, a port when '@' only
/// appears in the path or query). Without `://`, `s` may be the tail of a URI that a
/// space split: everything before its last '@'.
fn secret_span(s: &str) -> Option<std::ops::Range<usize>> {
    let start = s.find("://").map_or(0, |i| i + 3);
    let at = start + s[start..].rfind('@')?;
    match s[start..at].find(':') {
        Some(colon) => Some(start + colon + 1..at),
        None if start == 0 => Some(0..at),
        // `user@host`: a user name, no password.
        None => None,
    }
}

/// `s` with anything that may be a password replaced by `***`
/// (`etcd://u:***@host/p`), for messages that quote what the user typed.
pub fn redact(s: &str) -> String {
    match secret_span(s) {
        Some(r) => format!("{}***{}", &s[..r.start], &s[r.end..]),
        None => s.to_string(),
    }
}

/// A warning for a password that `registry` would send in the clear: `etcd://` (not
/// `etcds://`) to an endpoint that is not on this machine. Pure: a host name other
/// than `localhost` counts as remote, as it is not resolved here.
pub fn plaintext_password_warning(registry: &Registry) -> Option<String> {
    if registry.tls || registry.password.is_none() {
        return None;
    }
    let remote: Vec<String> = registry
        .endpoints
        .iter()
        .filter(|e| !is_loopback_host(&e.host))
        .map(|e| e.to_string())
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(format!(
        "the etcd password is sent unencrypted (etcd://) to {}: anyone on the path can read \
         it; use etcds://",
        remote.join(", ")
    ))
}

fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes are not UTF-8".to_string())
}

/// Parses `DOCKER_HOST`: `unix:///path` or `tcp://host:port`.
pub fn parse_docker_host(s: &str) -> Result<DockerHost, UsageError> {
    let shown = redact(s);
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(usage(format!(
                "DOCKER_HOST {shown:?}: unix socket path must be absolute \
                 (unix:///var/run/docker.sock)"
            )));
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s
        .strip_prefix("tcp://")
        .or_else(|| s.strip_prefix("http://"))
    {
        let addr = addr.trim_end_matches('/');
        if addr.contains('@') {
            // It would be logged with every Docker error, and Docker takes no password.
            return Err(usage(format!(
                "DOCKER_HOST {shown:?}: credentials are not supported; expected tcp://host:port"
            )));
        }
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(usage(format!(
                "DOCKER_HOST {shown:?}: expected tcp://host:port"
            )));
        }
        return Ok(DockerHost::Tcp(addr.to_string()));
    }
    Err(usage(format!(
        "DOCKER_HOST {shown:?} is not supported: use unix:///path or tcp://host:port"
    )))
}

/// Docker's TLS variables, read through `env` as Docker's own client reads them: with
/// a `tcp://` DOCKER_HOST, a non-empty `DOCKER_TLS_VERIFY` means TLS, verified against
/// the certificates in `DOCKER_CERT_PATH` (default `~/.docker`). TLS without verifying
/// the daemon (`DOCKER_TLS`, or `DOCKER_CERT_PATH` alone) is refused; a unix socket
/// takes no TLS.
pub fn docker_tls(
    host: DockerHost,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DockerHost, UsageError> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let DockerHost::Tcp(addr) = host else {
        return Ok(host);
    };
    let cert_path = set("DOCKER_CERT_PATH");
    if set("DOCKER_TLS_VERIFY").is_none() {
        if set("DOCKER_TLS").is_some() || cert_path.is_some() {
            return Err(usage(
                "DOCKER_TLS or DOCKER_CERT_PATH without DOCKER_TLS_VERIFY means TLS without \
                 checking the daemon's certificate, which registrator does not do: set \
                 DOCKER_TLS_VERIFY=1",
            ));
        }
        return Ok(DockerHost::Tcp(addr));
    }
    let certs = match (cert_path, set("HOME")) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(home)) => PathBuf::from(home).join(".docker"),
        (None, None) => {
            return Err(usage(
                "DOCKER_TLS_VERIFY is set but DOCKER_CERT_PATH is not (nor HOME, for \
                 ~/.docker): the directory of ca.pem, cert.pem and key.pem",
            ))
        }
    };
    Ok(DockerHost::Tls { addr, certs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from).collect(), &|_| None) {
            Ok(Command::Run(c)) => Ok(*c),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn registry_uris() {
        let ep = |h: &str, p| Endpoint {
            host: h.into(),
            port: p,
        };
        for (uri, endpoints, prefix) in [
            ("etcd:///services", vec![ep("127.0.0.1", 2379)], "/services"),
            (
                "etcd://10.0.0.5/services",
                vec![ep("10.0.0.5", 2379)],
                "/services",
            ),
            ("etcd://h:4001/a/b/", vec![ep("h", 4001)], "/a/b"),
            (
                "etcd://h1:1,h2,[::1]:3/s",
                vec![ep("h1", 1), ep("h2", 2379), ep("::1", 3)],
                "/s",
            ),
        ] {
            let r = parse_registry(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(
                (r.endpoints, r.prefix.as_str()),
                (endpoints, prefix),
                "{uri}"
            );
        }
        let r = parse_registry("etcds://bob:s%40cret@h/s?cacert=/ca.pem").unwrap();
        assert_eq!(
            (r.tls, r.username.as_deref(), r.password.as_deref()),
            (true, Some("bob"), Some("s@cret"))
        );
        assert_eq!(r.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            r.to_string(),
            "etcds://bob@h:2379/s",
            "display hides the password"
        );
        assert!(!format!("{r:?}").contains("cret"));
    }

    #[test]
    fn bad_registry_uris() {
        for (uri, want) in [
            ("services", "malformed"),
            ("zookeeper://h/s", "scheme \"zookeeper\" is not supported"),
            ("consul://h/s", "not supported"),
            ("etcd://h", "no key prefix"),
            ("etcd://h/", "no key prefix"),
            ("etcd://h:0/s", "not a number in 1-65535"),
            ("etcd://h:x/s", "not a number"),
            ("etcd://h//s", "empty"),
            ("etcd://h/s?foo=1", "unknown query parameter \"foo\""),
            ("etcd://[::1/s", "unclosed"),
        ] {
            let e = parse_registry(uri).unwrap_err().0;
            assert!(e.contains(want), "{uri}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn options_and_go_style_spellings() {
        let c = run(&[
            "-ip",
            "10.0.0.5",
            "-internal",
            "--hostname",
            "n1",
            "--interval",
            "2.5",
            "--once",
            "etcd:///s",
        ])
        .unwrap();
        assert_eq!(c.ip.as_deref(), Some("10.0.0.5"));
        assert!(c.internal && c.once && !c.explicit);
        assert_eq!(c.hostname.as_deref(), Some("n1"));
        assert_eq!(c.interval, Duration::from_millis(2500));
        let c = run(&["-ip=10.0.0.6", "--dry-run", "--ttl", "0", "etcd:///s"]).unwrap();
        assert_eq!(c.ip.as_deref(), Some("10.0.0.6"));
        assert!(c.dry_run && c.once, "--dry-run is a single pass");
        assert_eq!(c.ttl, Some(0));
        assert_eq!(c.docker, DockerHost::Unix("/var/run/docker.sock".into()));
        assert_eq!(c.index_prefix(), "/.registrator/s", "beside the prefix");
        let c = run(&["etcd:///a/b/s"]).unwrap();
        assert_eq!(c.index_prefix(), "/a/b/.registrator/s");
        assert_eq!(c.claim_grace, None, "one --interval, decided at start");
        assert_eq!(c.log_format, LogFormat::Text);
        let c = run(&["--log-format", "json", "etcd:///s"]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let c = run(&[
            "--index-prefix",
            "/idx/s",
            "--claim-grace",
            "0",
            "etcd:///s",
        ])
        .unwrap();
        assert_eq!(c.index_prefix(), "/idx/s");
        assert_eq!(c.claim_grace, Some(Duration::ZERO));
    }

    #[test]
    fn usage_errors() {
        for (args, want) in [
            (vec![], "missing registry URI"),
            (vec!["--bogus", "etcd:///s"], "unknown option \"--bogus\""),
            (
                vec!["--ip", "nope", "etcd:///s"],
                "--ip \"nope\" is not an IP address",
            ),
            (vec!["--ip"], "--ip needs a value"),
            (vec!["--interval", "0", "etcd:///s"], "--interval \"0\""),
            (vec!["--ttl", "-1", "etcd:///s"], "--ttl"),
            (vec!["etcd:///s", "extra"], "unexpected argument"),
            (vec!["--hostname", "a/b", "etcd:///s"], "--hostname"),
            (vec!["--etcd-cert", "c.pem", "etcd:///s"], "together"),
            (vec!["--index-prefix", "/s/i", "etcd:///s"], "beside"),
            (vec!["--index-prefix", "/s", "etcd:///s"], "beside"),
            (vec!["--index-prefix", "/a", "etcd:///a/s"], "beside"),
            (
                vec!["--index-prefix", "rel", "etcd:///s"],
                "must start with '/'",
            ),
            (vec!["--claim-grace", "-1", "etcd:///s"], "--claim-grace"),
            (
                vec!["--log-format", "xml", "etcd:///s"],
                "--log-format \"xml\": expected text or json",
            ),
        ] {
            let e = run(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert_eq!(parse(vec!["--help".into()], &|_| None), Ok(Command::Help));
        assert_eq!(parse(vec!["-V".into()], &|_| None), Ok(Command::Version));
    }

    fn run_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        match parse(args.iter().map(OsString::from).collect(), &env) {
            Ok(Command::Run(c)) => Ok(*c),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn options_from_the_environment() {
        let vars = [
            ("REGISTRATOR_REGISTRY", "etcd://h/env"),
            ("REGISTRATOR_TTL", "7"),
            ("REGISTRATOR_DRY_RUN", "1"),
            ("REGISTRATOR_NETWORK", "back"),
            ("REGISTRATOR_USE_IP_FROM_LABEL", "addr"),
            ("REGISTRATOR_RESYNC", "3"),
            ("DOCKER_HOST", "tcp://127.0.0.1:2375"),
        ];
        let c = run_env(&[], &vars).unwrap();
        assert_eq!(c.registry.prefix, "/env");
        assert_eq!((c.ttl, c.dry_run, c.once), (Some(7), true, true));
        assert_eq!(c.network.as_deref(), Some("back"));
        assert_eq!(c.ip_label.as_deref(), Some("addr"));
        assert_eq!(c.interval, Duration::from_secs(3));
        assert_eq!(c.docker, DockerHost::Tcp("127.0.0.1:2375".into()));
        // The command line wins.
        let c = run_env(&["--ttl", "9", "-dry-run=false", "etcd:///cli"], &vars).unwrap();
        assert_eq!(
            (c.ttl, c.dry_run, c.registry.prefix.as_str()),
            (Some(9), false, "/cli")
        );
        for (var, value, want) in [
            (
                "REGISTRATOR_TTL",
                "abc",
                "REGISTRATOR_TTL=\"abc\" is not a whole number",
            ),
            (
                "REGISTRATOR_ONCE",
                "maybe",
                "REGISTRATOR_ONCE=\"maybe\" is not true or false",
            ),
            (
                "REGISTRATOR_IP",
                "x",
                "REGISTRATOR_IP=\"x\" is not an IP address",
            ),
            (
                "REGISTRATOR_METRICS_ADDR",
                "9",
                "REGISTRATOR_METRICS_ADDR=\"9\": no port",
            ),
            (
                "REGISTRATOR_INDEX_PREFIX",
                "/s",
                "REGISTRATOR_INDEX_PREFIX=\"/s\" must lie",
            ),
            (
                "REGISTRATOR_DEREGISTER",
                "on-success",
                "REGISTRATOR_DEREGISTER=\"on-success\"",
            ),
            (
                "REGISTRATOR_REGISTRY",
                "etcd://u:Pw9secret@h:0/s",
                "REGISTRATOR_REGISTRY: registry URI \"etcd://u:***@h:0/s\"",
            ),
        ] {
            let args: &[&str] = if var == "REGISTRATOR_REGISTRY" {
                &[]
            } else {
                &["etcd:///s"]
            };
            let e = run_env(args, &[(var, value)]).unwrap_err();
            assert!(e.starts_with(want), "{var}: {e}");
            assert!(!leaks(&e), "{e}");
        }
    }

    /// gliderlabs/registrator's documented command lines parse as they are.
    #[test]
    fn gliderlabs_command_lines() {
        let c = run(&[
            "-cleanup",
            "-deregister",
            "always",
            "-resync",
            "10",
            "-tags",
            "example-tag",
            "-ip",
            "10.0.0.5",
            "etcd://10.0.0.1:2379/services",
        ])
        .unwrap();
        assert_eq!(c.ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(c.interval, Duration::from_secs(10));
        assert_eq!(c.warnings.len(), 1, "-tags: {:?}", c.warnings);
        let c = run(&[
            "-internal",
            "-ttl=120",
            "-ttl-refresh=90",
            "-useIpFromLabel",
            "ip",
            "-explicit",
            "-retry-attempts",
            "-1",
            "-retry-interval",
            "500",
            "etcd:///s",
        ])
        .unwrap();
        assert!(c.internal && c.explicit);
        assert_eq!((c.ttl, c.ip_label.as_deref()), (Some(120), Some("ip")));
        assert_eq!(
            c.retry.map(|r| (r.attempts, r.interval)),
            Some((None, Duration::from_millis(500)))
        );
        let e = run(&["-resync", "5", "--interval", "5", "etcd:///s"]).unwrap_err();
        assert!(e.contains("same period"), "{e}");
    }

    /// Every password in these URIs starts with `Pw9` and holds `cret`: neither may
    /// appear in any message, whatever else is wrong with the URI.
    const MALFORMED_WITH_PASSWORDS: &[&str] = &[
        "etcd://u:Pw9secret%zz@host/p",
        "etcd://u:Pw9secret%4@host/p",
        "etcd://u:Pw9sec%ffret@host/p",
        "etcd://u:Pw9secret@host:99999/p",
        "etcd://u:Pw9secret@host:0/p",
        "etcd://u:Pw9secret@host:x/p",
        "etcd://u:Pw9secret@host/p?foo=1",
        "etcd://u:Pw9secret@host/p?cacert",
        "etcd://u:Pw9secret@host/p?cacert=%zz",
        "etcd://u:Pw9secret@host",
        "etcd://u:Pw9secret@host/",
        "etcd://u:Pw9secret@host//p",
        "etcd://u:Pw9secret@host/p/../q",
        "etcd://u:Pw9secret@[::1/p",
        "etcd://u:Pw9secret@[::1]x/p",
        "etcd://u:Pw9secret@h1,,h2/p",
        "etcd://u:Pw9secret@ho st/p",
        "etcd://:Pw9secret@host/p",
        "etcd://u%zz:Pw9secret@host/p",
        "zookeeper://u:Pw9secret@host/p",
        "://u:Pw9secret@host/p",
        "etcd:/u:Pw9secret@host/p",
        "etcd://u:Pw9:secret@host:x/p",
        "etcd://u:Pw9/secret@host/p",
        "etcd://u:Pw9/secret@host:1/p",
        "etcd://u:Pw9?secret@host/p",
        "etcd://u:Pw9?sec=ret@host/p",
        "etcd://u:Pw9@secret@host:0/p",
        "etcd://u:Pw9,secret@host:0/p",
        "etcd://u:Pw9secret@host:1/p\u{7}",
        "etcds://u:Pw9secret@host:65536/p?key=/k.pem",
    ];

    fn leaks(text: &str) -> bool {
        text.contains("Pw9") || text.contains("cret")
    }

    #[test]
    fn no_usage_error_shows_the_password() {
        for uri in MALFORMED_WITH_PASSWORDS {
            let e = parse_registry(uri).expect_err(uri).0;
            assert!(!leaks(&e), "{uri}: {e}");
            assert!(
                e.contains("***"),
                "{uri}: the URI is still quoted, masked: {e}"
            );
            let e = run(&[uri]).expect_err(uri);
            assert!(!leaks(&e), "{uri}: {e}");
        }
        for args in [
            // An unquoted space splits the URI; a second URI; a guessed option.
            &["etcd://u:Pw9", "secret@host/p"][..],
            &["etcd://u:Pw9secret@host/p", "etcd://u:Pw9secret@h2/p"],
            &["--etcd-password=Pw9secret", "etcd://u@host/p"],
            &["-etcd-password=Pw9secret", "etcd://u@host/p"],
            &["--etcd-password", "Pw9secret", "etcd://u@host/p"],
            &["--etcd-cert", "c.pem", "etcd://u:Pw9secret@host/p"],
        ] {
            let e = run(args).expect_err("usage error");
            assert!(!leaks(&e), "{args:?}: {e}");
        }
        for host in [
            "tcp://u:Pw9secret@h:2375",
            "http://u:Pw9secret@h",
            "ssh://u:Pw9secret@h",
        ] {
            let e = parse_docker_host(host).expect_err(host).0;
            assert!(!leaks(&e), "{host}: {e}");
        }
    }

    #[test]
    fn without_a_password_the_faulty_part_is_quoted() {
        for (uri, want) in [
            ("etcd://u@h:0/p", "port \"0\""),
            ("etcd://h:x/p", "endpoint \"h:x\": port \"x\""),
            ("etcd://u@h/p?foo=1", "parameter \"foo\""),
        ] {
            let e = parse_registry(uri).unwrap_err().0;
            assert!(e.contains(want), "{uri}: {e}");
        }
        let e = parse_registry("etcd://u:pw@h:0/p").unwrap_err().0;
        assert_eq!(
            e,
            "registry URI \"etcd://u:***@h:0/p\": endpoint: port is not a number in 1-65535"
        );
        let e = parse_registry("etcd://u:p/w@h/p").unwrap_err().0;
        assert!(e.ends_with("must be percent-encoded (%2F, %3F)"), "{e}");
    }

    #[test]
    fn redaction() {
        for (text, want) in [
            ("etcd://u:pw@h/p", "etcd://u:***@h/p"),
            ("etcd://u:p@w@h/p", "etcd://u:***@h/p"),
            ("etcd://u:p/w@h/p", "etcd://u:***@h/p"),
            ("etcd://u@h/p", "etcd://u@h/p"),
            ("etcd://h:1/p", "etcd://h:1/p"),
            ("etcd:///p", "etcd:///p"),
            ("sword@host/p", "***@host/p"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn secrets_stay_out_of_display_and_debug() {
        let c = run(&["etcds://bob:Pw9secret@h1,h2:1/s?cacert=/ca.pem"]).unwrap();
        let cmd = Command::Run(Box::new(c.clone()));
        for text in [
            c.registry.to_string(),
            format!("{:?}", c.registry),
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{cmd:?}"),
        ] {
            assert!(!leaks(&text), "{text}");
            assert!(text.contains("bob@h1:2379,h2:1/s"), "{text}");
        }
    }

    #[test]
    fn plaintext_password_warnings() {
        let warn = |uri: &str| plaintext_password_warning(&parse_registry(uri).unwrap());
        for uri in [
            "etcd://u:pw@127.0.0.1/s",
            "etcd://u:pw@127.0.1.1:1,localhost,[::1]/s",
            "etcd://u:pw@LOCALHOST./s",
            "etcd://u:pw@[::ffff:127.0.0.1]/s",
            "etcd:///s",
            "etcd://u@10.0.0.1/s",
            "etcd://10.0.0.1/s",
            "etcds://u:pw@10.0.0.1/s",
        ] {
            assert_eq!(warn(uri), None, "{uri}");
        }
        assert_eq!(
            warn("etcd://u:pw@127.0.0.1,10.0.0.1,etcd.example:4001/s").as_deref(),
            Some(
                "the etcd password is sent unencrypted (etcd://) to 10.0.0.1:2379, \
                 etcd.example:4001: anyone on the path can read it; use etcds://"
            )
        );
        // A password from the environment or a file counts the same once it is set.
        let mut r = parse_registry("etcd://u@10.0.0.1/s").unwrap();
        r.password = Some(String::new());
        assert!(plaintext_password_warning(&r).is_some_and(|w| w.contains("10.0.0.1:2379")));
    }

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        let env = |name: &str| (name == "DOCKER_HOST").then(|| "nonsense://x".to_string());
        parse(args.iter().map(OsString::from).collect(), &env)
    }

    #[test]
    fn metrics_addr_forms() {
        // (value, as bound, or words of the error)
        let cases = [
            ("127.0.0.1:9480", Ok("127.0.0.1:9480")),
            (":9480", Ok("0.0.0.0:9480")),
            ("[::1]:9480", Ok("[::1]:9480")),
            ("localhost:0", Ok("localhost:0")),
            ("9480", Err("no port")),
            ("127.0.0.1:x", Err("not a number in 0-65535")),
            ("127.0.0.1:65536", Err("not a number")),
            ("::1:9480", Err("needs brackets")),
            ("[::1:9480", Err("malformed IPv6")),
            ("a b:1", Err("malformed host")),
        ];
        for (value, want) in cases {
            let got = run(&["--metrics-addr", value, "etcd:///s"]).map(|c| c.metrics_addr);
            match (got, want) {
                (Ok(Some(a)), Ok(w)) => assert_eq!(a, w, "{value}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{value}: {e}");
                    assert!(e.starts_with("--metrics-addr"), "{value}: {e}");
                }
                (got, want) => panic!("{value}: {got:?}, want {want:?}"),
            }
        }
        assert_eq!(
            run(&["etcd:///s"]).unwrap().metrics_addr,
            None,
            "off by default"
        );
        for mode in ["--once", "--dry-run"] {
            let e = run(&[mode, "--metrics-addr", ":1", "etcd:///s"]).unwrap_err();
            assert!(e.contains("does not go with --once or --dry-run"), "{e}");
        }
    }

    #[test]
    fn healthcheck_subcommand() {
        assert_eq!(
            parse_strs(&["healthcheck", "--metrics-addr", "127.0.0.1:9480"]),
            Ok(Command::Healthcheck {
                addr: "127.0.0.1:9480".into(),
                timeout: HEALTHCHECK_TIMEOUT
            })
        );
        assert_eq!(
            parse_strs(&["healthcheck", "--timeout", "0.5", "--metrics-addr=:9"]),
            Ok(Command::Healthcheck {
                addr: "0.0.0.0:9".into(),
                timeout: Duration::from_millis(500)
            })
        );
        assert_eq!(
            parse_strs(&["healthcheck", "--help"]),
            Ok(Command::SubcommandHelp(HELP_HEALTHCHECK))
        );
        for (args, want) in [
            (vec!["healthcheck"], "--metrics-addr HOST:PORT is required"),
            (vec!["healthcheck", "--metrics-addr"], "needs a value"),
            (vec!["healthcheck", "--metrics-addr", "h:0"], "not 0"),
            (vec!["healthcheck", "--metrics-addr", "h"], "no port"),
            (
                vec!["healthcheck", "--metrics-addr", "h:1", "--timeout", "0"],
                "--timeout \"0\"",
            ),
            (vec!["healthcheck", "--bogus"], "unknown option \"--bogus\""),
            (vec!["healthcheck", "h:1"], "unexpected argument"),
        ] {
            let e = parse_strs(&args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(
                e.starts_with("healthcheck: ") || e.starts_with("--metrics"),
                "{e}"
            );
        }
    }

    #[test]
    fn ls_subcommand() {
        let ls = |args: &[&str]| match parse_strs(args) {
            Ok(Command::Ls(c)) => Ok(*c),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.0),
        };
        let c = ls(&["ls", "etcd://u:p@h:1/s"]).unwrap();
        assert_eq!(c.registry.prefix, "/s");
        assert_eq!(c.registry.password.as_deref(), Some("p"));
        assert_eq!((c.node, c.name, c.json), (None, None, false));
        let c = ls(&[
            "ls",
            "--node",
            "a",
            "--name=web-*",
            "--json",
            "--etcd-cacert",
            "/ca.pem",
            "--etcd-password-file",
            "/pw",
            "etcds://h/s?cert=/c.pem&key=/k.pem",
        ])
        .unwrap();
        assert_eq!(c.node.as_deref(), Some("a"));
        assert_eq!(c.name.as_deref(), Some("web-*"));
        assert!(c.json && c.registry.tls);
        assert_eq!(c.registry.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.registry.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.password_file, Some(PathBuf::from("/pw")));
        assert_eq!(
            parse_strs(&["ls", "-h"]),
            Ok(Command::SubcommandHelp(HELP_LS))
        );
        // Secrets typed in the wrong place are not echoed (see `redact`).
        for args in [
            vec!["ls", "etcd://u:Pw9se@h/s", "cret@h/s"],
            vec!["ls", "--etcd-password=Pw9secret", "etcd:///s"],
            vec![
                "healthcheck",
                "--metrics-addr",
                "h:1",
                "etcd://u:Pw9secret@h/s",
            ],
            vec!["ls", "etcd://u:Pw9secret@h:x/s"],
        ] {
            let e = parse_strs(&args).unwrap_err().0;
            assert!(!leaks(&e), "{args:?}: {e}");
        }
        for (args, want) in [
            (vec!["ls"], "ls: missing registry URI"),
            (vec!["ls", "etcd:///s", "x"], "unexpected argument(s)"),
            (
                vec!["ls", "--ip", "1.2.3.4", "etcd:///s"],
                "unknown option \"--ip\"",
            ),
            (vec!["ls", "--node", "", "etcd:///s"], "non-empty"),
            (vec!["ls", "--etcd-cert", "c", "etcd:///s"], "together"),
            (vec!["ls", "consul://h/s"], "not supported"),
        ] {
            let e = ls(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn docker_hosts() {
        assert_eq!(
            parse_docker_host("unix:///tmp/d.sock").unwrap(),
            DockerHost::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            parse_docker_host("tcp://127.0.0.1:2375").unwrap(),
            DockerHost::Tcp("127.0.0.1:2375".into())
        );
        for bad in ["unix://rel.sock", "tcp://host", "ssh://x", "tcp://u@h:2375"] {
            assert!(parse_docker_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_tls_variables() {
        let tcp = || DockerHost::Tcp("h:2376".into());
        let tls = |certs: &str| DockerHost::Tls {
            addr: "h:2376".into(),
            certs: certs.into(),
        };
        let unix = DockerHost::Unix("/d.sock".into());
        type Vars<'a> = &'a [(&'a str, &'a str)];
        let ok: [(DockerHost, Vars, DockerHost); 6] = [
            (tcp(), &[], tcp()),
            (tcp(), &[("DOCKER_TLS_VERIFY", "")], tcp()),
            (
                tcp(),
                &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", "/c")],
                tls("/c"),
            ),
            // Any value turns it on, as with docker.
            (
                tcp(),
                &[("DOCKER_TLS_VERIFY", "0"), ("HOME", "/root")],
                tls("/root/.docker"),
            ),
            (
                unix.clone(),
                &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", "/c")],
                unix.clone(),
            ),
            (
                tcp(),
                &[
                    ("DOCKER_TLS_VERIFY", "1"),
                    ("DOCKER_CERT_PATH", ""),
                    ("HOME", "/h"),
                ],
                tls("/h/.docker"),
            ),
        ];
        for (host, vars, want) in ok {
            let env = |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            assert_eq!(docker_tls(host, env), Ok(want), "{vars:?}");
        }
        let bad: [(Vars, &str); 3] = [
            (&[("DOCKER_CERT_PATH", "/c")], "set DOCKER_TLS_VERIFY=1"),
            (&[("DOCKER_TLS", "1")], "set DOCKER_TLS_VERIFY=1"),
            (&[("DOCKER_TLS_VERIFY", "1")], "DOCKER_CERT_PATH is not"),
        ];
        for (vars, want) in bad {
            let env = |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            };
            let e = docker_tls(tcp(), env).unwrap_err().0;
            assert!(e.contains(want), "{vars:?}: {e}");
        }
    }
}
