//! The daemon's options: what the user typed (flags, `REGISTRATOR_<OPTION>` variables,
//! gliderlabs's spellings) checked into a [`Config`], nothing more.
//!
//! No syscalls here (no hostname lookup, no socket): those happen when the
//! registrator starts, so parsing stays a pure function that tests can table.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::args::{Args, Given};
use super::compat::{self, Retry};
use super::docker_host::{parse_docker_host, DockerHost};
use super::error::{usage, UsageError};
use super::registry::{parse_registry, redact, Registry};
use crate::logging::LogFormat;

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

/// Reads the daemon's options (once `--help` and `--version` were looked for); `env`
/// gives `DOCKER_HOST` (each option's own variable is read through `a`).
pub fn read(mut a: Args, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, UsageError> {
    let ip = address(a.value("--ip")?)?;
    let hostname = host_name(a.value("--hostname")?)?;
    let compat = compat::read(&mut a)?;
    let interval = period(a.value("--interval")?, compat.resync)?;
    let ttl = lease_ttl(a.value("--ttl")?)?;
    let claim_grace = grace(a.value("--claim-grace")?)?;
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
    let log_format = log_format(a.value("--log-format")?)?;
    let once = a.flag("--once")?;
    let internal = a.flag("--internal")?;
    let explicit = a.flag("--explicit")?;
    let dry_run = a.flag("--dry-run")?;
    let deregister_on_exit = a.flag("--deregister-on-exit")?;

    let registry = registry(a.finish("registry", "--help")?)?.with_files(cacert, cert, key)?;
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

    Ok(Config {
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
        metrics_addr,
        index_prefix,
        claim_grace,
        network,
        ip_label,
        retry: compat.retry,
        warnings: compat.warnings,
        log_format,
    })
}

/// `--ip`: an IP address.
fn address(g: Option<Given>) -> Result<Option<String>, UsageError> {
    if let Some(g) = &g {
        g.value
            .parse::<IpAddr>()
            .map_err(|_| usage(format!("{g} is not an IP address")))?;
    }
    Ok(g.map(|g| g.value))
}

/// `--hostname`: one key segment, printable.
fn host_name(g: Option<Given>) -> Result<Option<String>, UsageError> {
    if let Some(g) = &g {
        let h = &g.value;
        if h.is_empty() || h.contains('/') || h.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(usage(format!(
                "{g} must be non-empty, without '/', spaces or control characters"
            )));
        }
    }
    Ok(g.map(|g| g.value))
}

/// `--interval`, or gliderlabs's `-resync` (not both); 10 s when neither.
fn period(g: Option<Given>, resync: Option<Duration>) -> Result<Duration, UsageError> {
    match (g, resync) {
        (None, None) => Ok(Duration::from_secs(10)),
        (None, Some(resync)) => Ok(resync),
        (Some(g), Some(_)) => Err(usage(format!(
            "{g} and --resync set the same period: give one"
        ))),
        (Some(g), None) => match g.value.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
            _ => Err(usage(format!(
                "{g} is not a number of seconds in (0, 86400]"
            ))),
        },
    }
}

/// `--ttl`: whole seconds, at most a day.
fn lease_ttl(g: Option<Given>) -> Result<Option<u64>, UsageError> {
    let Some(g) = g else { return Ok(None) };
    match g.value.parse::<u64>() {
        Ok(v) if v <= 86_400 => Ok(Some(v)),
        _ => Err(usage(format!(
            "{g} is not a whole number of seconds in 0-86400"
        ))),
    }
}

/// `--claim-grace`: seconds, 0 included.
fn grace(g: Option<Given>) -> Result<Option<Duration>, UsageError> {
    let Some(g) = g else { return Ok(None) };
    match g.value.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => {
            Ok(Some(Duration::from_secs_f64(v)))
        }
        _ => Err(usage(format!(
            "{g} is not a number of seconds in [0, 86400]"
        ))),
    }
}

/// `--log-format`: `text` (the default) or `json`.
fn log_format(g: Option<Given>) -> Result<LogFormat, UsageError> {
    match g {
        None => Ok(LogFormat::Text),
        Some(f) => f
            .value
            .parse()
            .map_err(|()| usage(format!("{f}: expected text or json"))),
    }
}

/// The registry URI: the one free argument, else `REGISTRATOR_REGISTRY`.
fn registry(mut free: Vec<Given>) -> Result<Registry, UsageError> {
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
    parse_registry(&uri.value).map_err(|e| match uri.from_env() {
        true => usage(format!("{}: {e}", uri.origin)),
        false => e,
    })
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

/// Checks the form of a listen address, `HOST:PORT` (`[v6]:PORT`; `:PORT` means every
/// interface), and returns it as `ToSocketAddrs` reads it. Port 0 picks a free port.
/// The host name is resolved later, when the listener binds.
pub fn listen_addr(shown: &str, s: &str) -> Result<String, UsageError> {
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::registry::tests::leaks;
    use std::ffi::OsString;

    fn run(args: &[&str]) -> Result<Config, String> {
        run_env(args, &[])
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
            (vec!["consul://x/s"], "registry URI \"consul://x/s\""),
        ] {
            let e = run(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(!e.starts_with(':'), "{args:?}: {e}");
        }
    }

    fn run_env(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, String> {
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let a = Args::new(args.iter().map(OsString::from).collect(), &env).map_err(|e| e.0)?;
        read(a, &env).map_err(|e| e.0)
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
}
