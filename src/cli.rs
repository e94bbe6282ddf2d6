//! Command line: validates what the user typed into a [`Config`], nothing more.
//!
//! No syscalls here (no hostname lookup, no socket): those happen when the
//! registrator starts, so parsing stays a pure function that tests can table.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What `main` should do.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
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
}

impl fmt::Display for DockerHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerHost::Tcp(a) => write!(f, "tcp://{a}"),
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
    /// `--index-prefix`: where the ownership index lives; None: see
    /// [`Config::index_prefix`].
    pub index_prefix: Option<String>,
    /// `--claim-grace`: how long a port claim outlives its last service; None: one
    /// `--interval`.
    pub claim_grace: Option<Duration>,
}

impl Config {
    /// The ownership index's prefix: `--index-prefix`, else `.registrator/<last>` beside
    /// the prefix's last segment (`/services` -> `/.registrator/services`, `/a/services`
    /// -> `/a/.registrator/services`): under the same parent, so one permission on the
    /// parent covers both, yet not starting with the prefix, so even a read of the
    /// prefix without its trailing `/` never meets an index key.
    pub fn index_prefix(&self) -> String {
        self.index_prefix.clone().unwrap_or_else(|| {
            let prefix = &self.registry.prefix;
            let (parent, last) = prefix.rsplit_once('/').unwrap_or(("", prefix));
            format!("{parent}/.registrator/{last}")
        })
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
  --deregister-on-exit   remove this host's services on SIGTERM/SIGINT (within 5 s;
                         a second signal exits at once)
  --internal             register container IPs and exposed ports
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
  -h, --help             this help
  -V, --version          version and git commit

Environment: DOCKER_HOST (default unix:///var/run/docker.sock), RUST_LOG (default info).
Exit codes: 0 ok, 1 runtime failure, 2 usage error.

Example:
  registrator --ip 10.0.0.5 etcd://10.0.0.1:2379/services
";

/// Options that take a value, by long name.
const VALUE_OPTIONS: &[&str] = &[
    "ip",
    "hostname",
    "interval",
    "ttl",
    "etcd-cacert",
    "etcd-cert",
    "etcd-key",
    "etcd-password-file",
    "index-prefix",
    "claim-grace",
];
/// Flags, by long name.
const FLAGS: &[&str] = &[
    "once",
    "internal",
    "explicit",
    "dry-run",
    "deregister-on-exit",
    "help",
    "version",
];

/// The seed's Go-style `-ip` / `-internal` spellings become `--ip` / `--internal`
/// (pico-args only knows one-character short keys).
fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s) if s.starts_with('-') && !s.starts_with("--") && s.len() > 2 => {
                let name = s[1..].split('=').next().unwrap_or("");
                if VALUE_OPTIONS.contains(&name) || FLAGS.contains(&name) {
                    OsString::from(format!("-{s}"))
                } else {
                    a
                }
            }
            _ => a,
        })
        .collect()
}

/// Parses the arguments (without the program name). `docker_host` is `$DOCKER_HOST`.
pub fn parse(args: Vec<OsString>, docker_host: Option<&str>) -> Result<Command, UsageError> {
    let mut p = pico_args::Arguments::from_vec(normalize(args));
    if p.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if p.contains(["-V", "--version"]) {
        return Ok(Command::Version);
    }
    let text =
        |p: &mut pico_args::Arguments, key: &'static str| -> Result<Option<String>, UsageError> {
            p.opt_value_from_str::<_, String>(key)
                .map_err(|e| usage(pico_error(key, e)))
        };
    let ip = text(&mut p, "--ip")?;
    if let Some(ip) = &ip {
        ip.parse::<IpAddr>()
            .map_err(|_| usage(format!("--ip {ip:?} is not an IP address")))?;
    }
    let hostname = text(&mut p, "--hostname")?;
    if let Some(h) = &hostname {
        if h.is_empty() || h.contains('/') || h.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(usage(format!(
                "--hostname {h:?} must be non-empty, without '/', spaces or control characters"
            )));
        }
    }
    let interval = match text(&mut p, "--interval")? {
        None => Duration::from_secs(10),
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Duration::from_secs_f64(v),
            _ => {
                return Err(usage(format!(
                    "--interval {s:?} is not a number of seconds in (0, 86400]"
                )))
            }
        },
    };
    let ttl = match text(&mut p, "--ttl")? {
        None => None,
        Some(s) => match s.parse::<u64>() {
            Ok(v) if v <= 86_400 => Some(v),
            _ => {
                return Err(usage(format!(
                    "--ttl {s:?} is not a whole number of seconds in 0-86400"
                )))
            }
        },
    };
    let claim_grace = match text(&mut p, "--claim-grace")? {
        None => None,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => {
                Some(Duration::from_secs_f64(v))
            }
            _ => {
                return Err(usage(format!(
                    "--claim-grace {s:?} is not a number of seconds in [0, 86400]"
                )))
            }
        },
    };
    let index_prefix = text(&mut p, "--index-prefix")?;
    let cacert = text(&mut p, "--etcd-cacert")?.map(PathBuf::from);
    let cert = text(&mut p, "--etcd-cert")?.map(PathBuf::from);
    let key = text(&mut p, "--etcd-key")?.map(PathBuf::from);
    let password_file = text(&mut p, "--etcd-password-file")?.map(PathBuf::from);
    let once = p.contains("--once");
    let internal = p.contains("--internal");
    let explicit = p.contains("--explicit");
    let dry_run = p.contains("--dry-run");
    let deregister_on_exit = p.contains("--deregister-on-exit");

    let mut free = p.finish();
    if let Some(unknown) = free.iter().find(|a| a.to_string_lossy().starts_with('-')) {
        return Err(usage(format!(
            "unknown option {:?} (see --help)",
            unknown.to_string_lossy()
        )));
    }
    if free.len() > 1 {
        let extra: Vec<String> = free[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return Err(usage(format!(
            "unexpected argument(s) after the registry URI: {}",
            extra.join(" ")
        )));
    }
    let uri = match free.pop() {
        Some(u) => u
            .into_string()
            .map_err(|_| usage("registry URI is not valid UTF-8"))?,
        None => {
            return Err(usage(
                "missing registry URI, e.g. etcd:///services (see --help)",
            ))
        }
    };
    let mut registry = parse_registry(&uri)?;
    registry.cacert = cacert.or(registry.cacert);
    registry.cert = cert.or(registry.cert);
    registry.key = key.or(registry.key);
    if registry.cert.is_some() != registry.key.is_some() {
        return Err(usage("--etcd-cert and --etcd-key must be given together"));
    }
    let docker = parse_docker_host(docker_host.unwrap_or("unix:///var/run/docker.sock"))?;
    let index_prefix = index_prefix
        .map(|i| check_index_prefix(&i, &registry.prefix).map(|()| i))
        .transpose()?;

    Ok(Command::Run(Box::new(Config {
        registry,
        docker,
        ip,
        hostname,
        once: once || dry_run,
        interval,
        internal,
        explicit,
        dry_run,
        ttl,
        deregister_on_exit,
        password_file,
        index_prefix,
        claim_grace,
    })))
}

/// `--index-prefix` has the registry prefix's shape and lies beside it: neither under
/// the other, so consumers of `<prefix>/` never see index keys.
fn check_index_prefix(index: &str, prefix: &str) -> Result<(), UsageError> {
    let bad = |why: &str| usage(format!("--index-prefix {index:?} {why}"));
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

fn pico_error(key: &str, e: pico_args::Error) -> String {
    match e {
        pico_args::Error::OptionWithoutAValue(_) => format!("{key} needs a value"),
        other => format!("{key}: {other}"),
    }
}

/// Parses `etcd://[user:pass@]host[:port][,host[:port]...]/prefix[?cacert=..&cert=..&key=..]`.
pub fn parse_registry(uri: &str) -> Result<Registry, UsageError> {
    let bad = |why: &str| usage(format!("registry URI {uri:?}: {why}"));
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
            endpoints.push(parse_endpoint(h, default_port).map_err(|e| bad(&e))?);
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
            .ok_or_else(|| bad(&format!("query parameter {pair:?} has no value")))?;
        let v = PathBuf::from(percent_decode(v).map_err(|e| bad(&e))?);
        match k {
            "cacert" => registry.cacert = Some(v),
            "cert" => registry.cert = Some(v),
            "key" => registry.key = Some(v),
            _ => {
                return Err(bad(&format!(
                    "unknown query parameter {k:?} (known: cacert, cert, key)"
                )))
            }
        }
    }
    Ok(registry)
}

fn parse_endpoint(h: &str, default_port: u16) -> Result<Endpoint, String> {
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("endpoint {h:?} has an unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("endpoint {h:?} is malformed"))?,
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
        return Err(format!("endpoint {h:?} has no valid host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "endpoint {h:?}: port {p:?} is not a number in 1-65535"
                ))
            }
        },
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
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
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(usage(format!("DOCKER_HOST {s:?}: unix socket path must be absolute (unix:///var/run/docker.sock)")));
        }
        return Ok(DockerHost::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = s
        .strip_prefix("tcp://")
        .or_else(|| s.strip_prefix("http://"))
    {
        let addr = addr.trim_end_matches('/');
        let ok = addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(usage(format!(
                "DOCKER_HOST {s:?}: expected tcp://host:port"
            )));
        }
        return Ok(DockerHost::Tcp(addr.to_string()));
    }
    Err(usage(format!(
        "DOCKER_HOST {s:?} is not supported: use unix:///path or tcp://host:port"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from).collect(), None) {
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
        ] {
            let e = run(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        assert_eq!(parse(vec!["--help".into()], None), Ok(Command::Help));
        assert_eq!(parse(vec!["-V".into()], None), Ok(Command::Version));
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
        for bad in ["unix://rel.sock", "tcp://host", "ssh://x"] {
            assert!(parse_docker_host(bad).is_err(), "{bad}");
        }
    }
}
