//! Where the Docker Engine API listens: `DOCKER_HOST`, and Docker's TLS variables
//! (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`) read as Docker's own client reads them.

use std::fmt;
use std::path::PathBuf;

use super::error::{usage, UsageError};
use super::registry::redact;

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
