//! Command line: validates what the user typed into [`Options`]; no syscalls.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use etcd_registrator::cli::{parse_registry, Registry};

use crate::model::Listen;

pub const HELP: &str = "\
haproxy example: keeps a local HAProxy in step with the registrator's keys in etcd

Usage: cargo run --example haproxy -- <registry-uri> [OPTIONS]

  registry-uri          etcd://host[:port][,host[:port]...]/prefix (plain HTTP;
                        etcd:///services = 127.0.0.1:2379, keys under /services)

Options:
  --public-bind ADDR    address of the HTTP frontend and the external ports (default 127.0.0.1)
  --private-bind ADDR   address of the internal ports (default 127.0.0.1)
  --http-port N         port of the HTTP frontend (default 80)
  --port-offset N       added to every external and internal port (default 0)
  --config PATH         HAProxy configuration to write (default ./haproxy-mesh.cfg)
  --pidfile PATH        HAProxy master's pidfile (default <config>.pid)
  --master-socket PATH  HAProxy master CLI socket (default <config>.sock)
  --haproxy PATH        HAProxy binary (default haproxy)
  -h, --help            this help

HAProxy runs in master-worker mode as a daemon and outlives this program; a restarted
consumer finds it through the pidfile and reloads it. Stop it with `kill $(cat <pidfile>)`.
Environment: RUST_LOG (default info).
";

#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Options),
    Help,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// `http://host:port` per etcd endpoint.
    pub endpoints: Vec<String>,
    /// Leading `/`, no trailing `/`.
    pub prefix: String,
    pub listen: Listen,
    pub config: PathBuf,
    pub pidfile: PathBuf,
    pub master_socket: PathBuf,
    pub haproxy: PathBuf,
}

pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    let mut p = pico_args::Arguments::from_vec(args);
    if p.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    let value =
        |p: &mut pico_args::Arguments, key: &'static str| -> Result<Option<String>, String> {
            p.opt_value_from_str::<_, String>(key)
                .map_err(|e| format!("{key}: {e}"))
        };
    let ip = |key: &str, v: Option<String>| -> Result<IpAddr, String> {
        match v {
            None => Ok(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Some(s) => s
                .parse()
                .map_err(|_| format!("{key} {s:?} is not an IP address")),
        }
    };
    let public = ip("--public-bind", value(&mut p, "--public-bind")?)?;
    let private = ip("--private-bind", value(&mut p, "--private-bind")?)?;
    let http_port = match value(&mut p, "--http-port")? {
        None => 80,
        Some(s) => s
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("--http-port {s:?} is not a port in 1-65535"))?,
    };
    let offset = match value(&mut p, "--port-offset")? {
        None => 0,
        Some(s) => s
            .parse::<u16>()
            .map_err(|_| format!("--port-offset {s:?} is not a number in 0-65535"))?,
    };
    let config =
        PathBuf::from(value(&mut p, "--config")?.unwrap_or_else(|| "haproxy-mesh.cfg".into()));
    let beside = |ext: &str| {
        let mut s = config.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    let pidfile = value(&mut p, "--pidfile")?
        .map(PathBuf::from)
        .unwrap_or_else(|| beside(".pid"));
    let master_socket = value(&mut p, "--master-socket")?
        .map(PathBuf::from)
        .unwrap_or_else(|| beside(".sock"));
    let haproxy = PathBuf::from(value(&mut p, "--haproxy")?.unwrap_or_else(|| "haproxy".into()));

    let mut free = p.finish();
    if let Some(unknown) = free.iter().find(|a| a.to_string_lossy().starts_with('-')) {
        return Err(format!(
            "unknown option {:?} (see --help)",
            unknown.to_string_lossy()
        ));
    }
    if free.len() != 1 {
        return Err("expected exactly one registry URI, e.g. etcd:///services (see --help)".into());
    }
    let uri = free
        .remove(0)
        .into_string()
        .map_err(|_| "registry URI is not valid UTF-8".to_string())?;
    let (endpoints, prefix) = parse_uri(&uri)?;
    Ok(Command::Run(Options {
        endpoints,
        prefix,
        listen: Listen {
            public,
            private,
            http_port,
            offset,
        },
        config,
        pidfile,
        master_socket,
        haproxy,
    }))
}

/// `etcd://host[:port][,host[:port]...]/prefix` -> (`http://host:port` each, `/prefix`).
/// The registrator's own parser reads it, so both agree on hosts, ports and the prefix;
/// what this plain-HTTP example cannot use (TLS, credentials, certificates) is refused.
pub fn parse_uri(uri: &str) -> Result<(Vec<String>, String), String> {
    let bad = |why: &str| format!("registry URI {uri:?}: {why}");
    // The scheme first, so a TLS or foreign URI gets this example's advice.
    match uri.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("etcd") => {}
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("etcds") => {
            return Err(bad(
                "etcds:// (TLS) is not supported by this example; use etcd://",
            ))
        }
        _ => return Err(bad("expected etcd://host:port/prefix")),
    }
    let registry = parse_registry(uri).map_err(|e| e.0)?;
    let Registry {
        endpoints,
        prefix,
        username,
        password,
        cacert,
        cert,
        key,
        tls: _,
    } = registry;
    if username.is_some()
        || password.is_some()
        || cacert.is_some()
        || cert.is_some()
        || key.is_some()
    {
        return Err(bad(
            "credentials and query parameters are not supported by this example",
        ));
    }
    let endpoints = endpoints.iter().map(|e| format!("http://{e}")).collect();
    Ok((endpoints, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_defaults_and_options() {
        let args = |s: &[&str]| s.iter().map(OsString::from).collect::<Vec<_>>();
        let Command::Run(o) = parse(args(&["etcd:///services"])).unwrap() else {
            panic!()
        };
        assert_eq!(o.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(o.prefix, "/services");
        assert_eq!(o.listen.http_port, 80);
        assert_eq!(o.pidfile, std::path::PathBuf::from("haproxy-mesh.cfg.pid"));
        let Command::Run(o) = parse(args(&[
            "--public-bind",
            "0.0.0.0",
            "--http-port=8080",
            "--port-offset",
            "40000",
            "--config",
            "/tmp/m.cfg",
            "etcd://h1,h2:4001,[::1]:2379/a/b/",
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            o.endpoints,
            vec!["http://h1:2379", "http://h2:4001", "http://[::1]:2379"]
        );
        assert_eq!(o.prefix, "/a/b");
        assert_eq!(
            (
                o.listen.public.to_string(),
                o.listen.http_port,
                o.listen.offset
            ),
            ("0.0.0.0".into(), 8080, 40000)
        );
        assert_eq!(o.master_socket, std::path::PathBuf::from("/tmp/m.cfg.sock"));
        assert_eq!(parse(args(&["-h"])), Ok(Command::Help));
    }

    #[test]
    fn cli_usage_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "exactly one registry URI"),
            (&["etcd://h"], "no key prefix"),
            (&["etcds://h/s"], "TLS"),
            (&["consul://h/s"], "expected etcd://"),
            (&["etcd://u:p@h/s"], "credentials"),
            (&["etcd://h:0/s"], "port \"0\""),
            (&["--http-port", "0", "etcd:///s"], "--http-port"),
            (&["--port-offset", "-1", "etcd:///s"], "--port-offset"),
            (
                &["--public-bind", "localhost", "etcd:///s"],
                "not an IP address",
            ),
            (&["--bogus", "etcd:///s"], "unknown option"),
        ];
        for (argv, want) in cases {
            let err = parse(argv.iter().map(OsString::from).collect()).unwrap_err();
            assert!(err.contains(want), "{argv:?}: {err}");
        }
    }
}
