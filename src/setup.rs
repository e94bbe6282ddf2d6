//! From the parsed command line to the parts that run: this host's name, the etcd
//! credentials, the reconciler's settings and options, the Docker and etcd clients.
//!
//! Here are the syscalls parsing leaves out (the host name, files, the environment).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{self, Config, Registry};
use crate::docker::Docker;
use crate::etcd::Etcd;
use crate::hostaddr;
use crate::metrics::Metrics;
use crate::reconcile::{Options, Reconciler};
use crate::service::Settings;

/// The registrator, ready to run.
pub struct Setup {
    pub config: Config,
    /// This host's identity (`--hostname` or the system's).
    pub hostname: String,
    /// Lease TTL in seconds; 0: no lease.
    pub ttl: u64,
    pub reconciler: Reconciler<Docker, Etcd>,
    /// The reconciler's HTTP agents: shutting them down interrupts requests blocked in
    /// the loop's thread.
    pub agents: [ureq::Agent; 2],
    /// What the reconciler, its etcd client and the loop's threads record.
    pub metrics: Arc<Metrics>,
}

impl Setup {
    /// Resolves what the command line left open and builds the clients.
    pub fn new(mut config: Config) -> Result<Setup, Box<dyn Error>> {
        let hostname = match config.hostname.clone() {
            Some(h) => h,
            None => system_hostname()?,
        };
        credentials(&mut config, |name| std::env::var(name).ok())?;
        if let Some(warning) = cli::plaintext_password_warning(&config.registry) {
            log::warn!("{warning}");
        }
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        let ttl = ttl(&config);
        let (settings, opts) = options(&config, &hostname, ttl);
        let metrics = Arc::new(Metrics::new());
        let etcd = Etcd::new(&config.registry, Duration::from_secs(5))?
            .with_index_prefix(&opts.index_prefix)
            .with_metrics(Arc::clone(&metrics));
        let docker = Docker::new(&config.docker, Duration::from_secs(10))?;
        let agents = [docker.agent(), etcd.agent()];
        let reconciler = Reconciler::new(docker, etcd, settings, opts, hostaddr::host_address)
            .with_metrics(Arc::clone(&metrics));
        Ok(Setup {
            config,
            hostname,
            ttl,
            reconciler,
            agents,
            metrics,
        })
    }
}

/// This host's name: `/proc/sys/kernel/hostname`, as `hostname` prints it.
pub fn system_hostname() -> Result<String, String> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    read("/proc/sys/kernel/hostname")
        .or_else(|| read("/etc/hostname"))
        .ok_or_else(|| "cannot determine the host name; pass --hostname".to_string())
}

/// etcd credentials: the URI's, else ETCD_USERNAME / ETCD_PASSWORD (read through
/// `env`), the password possibly from `--etcd-password-file`.
pub fn credentials(
    config: &mut Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    registry_credentials(&mut config.registry, config.password_file.as_deref(), env)
}

/// [`credentials`] for a registry and a password file of their own (`registrator ls`).
pub fn registry_credentials(
    r: &mut Registry,
    password_file: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    if r.username.is_none() {
        r.username = env("ETCD_USERNAME").filter(|s| !s.is_empty());
    }
    if let Some(path) = password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --etcd-password-file {}: {e}", path.display()))?;
        r.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
    } else if r.password.is_none() {
        r.password = env("ETCD_PASSWORD");
    }
    if r.password.is_some() && r.username.is_none() {
        return Err(
            "an etcd password was given without a user name (ETCD_USERNAME or user@ in the URI)"
                .into(),
        );
    }
    Ok(())
}

/// The lease TTL: `--ttl`, else 30 s in the loop and none with `--once`.
pub fn ttl(config: &Config) -> u64 {
    match config.ttl {
        Some(t) => t,
        None if config.once => 0,
        None => 30,
    }
}

/// How services are mapped, and how the reconciler writes, for this host.
pub fn options(config: &Config, hostname: &str, ttl: u64) -> (Settings, Options) {
    let settings = Settings {
        hostname: hostname.to_string(),
        ip: config.ip.clone(),
        // Looked up by the reconciler, only if a service needs it.
        host_address: None,
        internal: config.internal,
        explicit: config.explicit,
        network: config.network.clone(),
        ip_label: config.ip_label.clone(),
    };
    let opts = Options {
        prefix: config.registry.prefix.clone(),
        index_prefix: config.index_prefix(),
        hostname: hostname.to_string(),
        dry_run: config.dry_run,
        ttl,
        keep_foreign_leases: config.once && config.ttl.is_none(),
        exclusive: !config.once && ttl > 0,
        // A single pass has no later pass to release a claim in.
        claim_grace: match config.claim_grace {
            _ if config.once => Duration::ZERO,
            Some(g) => g,
            None => config.interval,
        },
    };
    (settings, opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command};
    use std::ffi::OsString;

    fn config(args: &[&str]) -> Config {
        match cli::parse(args.iter().map(OsString::from).collect(), &|_| None) {
            Ok(Command::Run(c)) => *c,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn ttl_and_lease_options_by_mode() {
        struct Case {
            args: &'static [&'static str],
            ttl: u64,
            exclusive: bool,
            keep_foreign_leases: bool,
        }
        let cases = [
            Case {
                args: &["etcd:///s"],
                ttl: 30,
                exclusive: true,
                keep_foreign_leases: false,
            },
            Case {
                args: &["--ttl", "6", "etcd:///s"],
                ttl: 6,
                exclusive: true,
                keep_foreign_leases: false,
            },
            Case {
                args: &["--once", "etcd:///s"],
                ttl: 0,
                exclusive: false,
                keep_foreign_leases: true,
            },
            Case {
                args: &["--once", "--ttl", "20", "etcd:///s"],
                ttl: 20,
                exclusive: false,
                keep_foreign_leases: false,
            },
        ];
        for case in cases {
            let c = config(case.args);
            let t = ttl(&c);
            let (settings, opts) = options(&c, "node1", t);
            let got = (t, opts.exclusive, opts.keep_foreign_leases);
            let want = (case.ttl, case.exclusive, case.keep_foreign_leases);
            assert_eq!(got, want, "{:?}", case.args);
            assert_eq!((opts.ttl, opts.prefix.as_str()), (t, "/s"));
            assert_eq!(
                (settings.hostname, opts.hostname),
                ("node1".into(), "node1".into())
            );
            assert_eq!(settings.host_address, None, "looked up later, if needed");
        }
    }

    #[test]
    fn credentials_table() {
        struct Case {
            name: &'static str,
            uri: &'static str,
            env: &'static [(&'static str, &'static str)],
            user: Option<&'static str>,
            password: Option<&'static str>,
            error: bool,
        }
        let cases = [
            Case {
                name: "none",
                uri: "etcd:///s",
                env: &[],
                user: None,
                password: None,
                error: false,
            },
            Case {
                name: "from the environment",
                uri: "etcd:///s",
                env: &[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "p")],
                user: Some("u"),
                password: Some("p"),
                error: false,
            },
            Case {
                name: "the URI's win",
                uri: "etcd://a:b@127.0.0.1/s",
                env: &[("ETCD_USERNAME", "u"), ("ETCD_PASSWORD", "p")],
                user: Some("a"),
                password: Some("b"),
                error: false,
            },
            Case {
                name: "an empty user name is none",
                uri: "etcd:///s",
                env: &[("ETCD_USERNAME", "")],
                user: None,
                password: None,
                error: false,
            },
            Case {
                name: "a password without a user name",
                uri: "etcd:///s",
                env: &[("ETCD_PASSWORD", "p")],
                user: None,
                password: Some("p"),
                error: true,
            },
        ];
        for case in cases {
            let mut c = config(&[case.uri]);
            let env = |name: &str| {
                case.env
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            };
            let result = credentials(&mut c, env);
            assert_eq!(result.is_err(), case.error, "{}: {result:?}", case.name);
            let r = &c.registry;
            assert_eq!(r.username.as_deref(), case.user, "{}", case.name);
            assert_eq!(r.password.as_deref(), case.password, "{}", case.name);
        }
    }
}
