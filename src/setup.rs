//! From the parsed command line to the parts that run, once: this host's name, the etcd
//! credentials, the reconciler with its settings and options, the clients and agents
//! the loop's threads use, and what `app` runs (one pass or the loop). `app` reads
//! these parts, never the [`Config`] again.
//!
//! Here are the syscalls parsing leaves out (the host name, files, the environment).

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::{self, Config, DockerHost, Registry, Retry};
use crate::docker::Docker;
use crate::etcd::Etcd;
use crate::hostaddr;
use crate::metrics::Metrics;
use crate::reconcile::{Options, Reconciler};
use crate::service::Settings;

/// Per-request timeout of the exit's own etcd client: a hung endpoint is left in time to
/// try the next one before the deadline.
const EXIT_TIMEOUT: Duration = Duration::from_secs(2);

/// The registrator, ready to run.
pub struct Setup {
    /// `--retry-attempts` / `--retry-interval`: reach etcd first.
    pub reach: Option<Reach>,
    pub reconciler: Reconciler<Docker, Etcd>,
    /// The reconciler's HTTP agents: shutting them down interrupts requests blocked in
    /// the loop's thread.
    pub agents: [ureq::Agent; 2],
    pub mode: Mode,
}

/// `--retry-attempts` / `--retry-interval`: a client to try etcd with at start, and how.
pub struct Reach {
    pub etcd: Etcd,
    /// The key prefix, with its trailing `/`, one key of which is read.
    pub prefix: String,
    pub retry: Retry,
}

/// What runs.
pub enum Mode {
    /// One pass (`--once`); `dry_run`: print the ops it would write, their keys under
    /// `prefix`.
    Once { dry_run: bool, prefix: String },
    /// The loop and its threads until a signal.
    Loop(Box<Loop>),
}

/// The loop's parts beside the reconciler.
pub struct Loop {
    /// This host's identity (`--hostname` or the system's).
    pub hostname: String,
    /// Lease TTL in seconds; 0: no lease.
    pub ttl: u64,
    /// The full pass's period (`--interval`).
    pub interval: Duration,
    /// The Docker API whose event stream wakes the loop.
    pub docker: DockerHost,
    /// The registry URI as logged (no password).
    pub registry: String,
    /// With a lease: the keepalive thread's own client.
    pub keepalive: Option<Etcd>,
    /// `--deregister-on-exit`: the exit's own client (the signal thread interrupts the
    /// loop's).
    pub exit_store: Option<Etcd>,
    /// `--metrics-addr`: where to serve `/metrics` and `/healthz`.
    pub metrics_addr: Option<String>,
    /// What the reconciler, its etcd clients and the loop's threads record.
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
        let reach = match config.retry {
            Some(retry) => Some(Reach {
                etcd: Etcd::new(&config.registry, Duration::from_secs(5))?,
                prefix: format!("{}/", config.registry.prefix),
                retry,
            }),
            None => None,
        };
        let mode = if config.once {
            Mode::Once {
                dry_run: config.dry_run,
                prefix: config.registry.prefix.clone(),
            }
        } else {
            let index_prefix = &opts.index_prefix;
            let parts = the_loop(&config, hostname, ttl, index_prefix, Arc::clone(&metrics))?;
            Mode::Loop(Box::new(parts))
        };
        let reconciler = Reconciler::new(docker, etcd, settings, opts, hostaddr::host_address)
            .with_metrics(metrics);
        Ok(Setup {
            reach,
            reconciler,
            agents,
            mode,
        })
    }
}

/// The loop's parts: its clients of its own beside the reconciler's.
fn the_loop(
    config: &Config,
    hostname: String,
    ttl: u64,
    index_prefix: &str,
    metrics: Arc<Metrics>,
) -> Result<Loop, Box<dyn Error>> {
    let keepalive = match ttl {
        0 => None,
        // A keepalive is tiny: a short timeout moves on to the next endpoint in time
        // (a follower can hold a request through an election for longer than the TTL).
        _ => {
            let timeout = Duration::from_secs_f64((ttl as f64 / 4.0).clamp(1.0, 5.0));
            Some(Etcd::new(&config.registry, timeout)?.with_metrics(Arc::clone(&metrics)))
        }
    };
    let exit_store = match config.deregister_on_exit {
        true => Some(
            Etcd::new(&config.registry, EXIT_TIMEOUT)?
                .with_index_prefix(index_prefix)
                .with_metrics(Arc::clone(&metrics)),
        ),
        false => None,
    };
    Ok(Loop {
        hostname,
        ttl,
        interval: config.interval,
        docker: config.docker.clone(),
        registry: config.registry.to_string(),
        keepalive,
        exit_store,
        metrics_addr: config.metrics_addr.clone(),
        metrics,
    })
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
        keep_foreign_leases: config.once,
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
                keep_foreign_leases: true,
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

    /// What each mode gets, built once from the options (no connection is made here).
    #[test]
    fn the_parts_each_mode_needs() {
        let setup = |args: &[&str]| {
            let args = [&["--hostname", "n1"], args].concat();
            Setup::new(config(&args)).unwrap()
        };
        for (args, want_dry_run) in [(&["--once"], false), (&["--dry-run"], true)] {
            let s = setup(&[args[0], "etcd:///s"]);
            match s.mode {
                Mode::Once { dry_run, prefix } => {
                    assert_eq!((dry_run, prefix.as_str()), (want_dry_run, "/s"))
                }
                Mode::Loop(_) => panic!("{args:?}: one pass"),
            }
            assert!(s.reach.is_none(), "{args:?}");
        }
        let Mode::Loop(l) = setup(&["etcd://127.0.0.1:1/s"]).mode else {
            panic!("the loop")
        };
        assert_eq!((l.hostname.as_str(), l.ttl), ("n1", 30));
        assert_eq!(
            (l.interval, l.registry.as_str()),
            (Duration::from_secs(10), "etcd://127.0.0.1:1/s")
        );
        assert!(l.keepalive.is_some() && l.exit_store.is_none() && l.metrics_addr.is_none());
        let s = setup(&[
            "--ttl",
            "0",
            "--deregister-on-exit",
            "--metrics-addr",
            "127.0.0.1:0",
            "--retry-attempts",
            "3",
            "etcd:///s",
        ]);
        let reach = s.reach.expect("--retry-attempts");
        assert_eq!(
            (reach.prefix.as_str(), reach.retry.attempts),
            ("/s/", Some(3))
        );
        let Mode::Loop(l) = s.mode else {
            panic!("the loop")
        };
        assert!(l.keepalive.is_none(), "no lease, no keepalive");
        assert!(l.exit_store.is_some());
        assert_eq!(l.metrics_addr.as_deref(), Some("127.0.0.1:0"));
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
