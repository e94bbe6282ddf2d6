//! registrator: keeps the published ports of one Docker host's containers registered
//! in etcd v3. `main` parses, wires the parts together and is the only place that exits.

use std::error::Error;
use std::ffi::OsString;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use etcd_registrator::cli::{self, Command, Config};
use etcd_registrator::docker::Docker;
use etcd_registrator::etcd::Etcd;
use etcd_registrator::service::Settings;
use etcd_registrator::sync::{Options, Reconciler};
use etcd_registrator::{events, lease, signals};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: Option<&str> = option_env!("REGISTRATOR_GIT_COMMIT");

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let docker_host = std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty());
    let config = match cli::parse(args, docker_host.as_deref()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!(
                "registrator {VERSION} (commit {})",
                COMMIT.unwrap_or("unknown")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("registrator: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(config) {
        Ok(code) => code,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// This host's name: `/proc/sys/kernel/hostname`, as `hostname` prints it.
fn system_hostname() -> Result<String, String> {
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

/// The address the host name resolves to (IPv4 preferred), if any.
fn resolve(hostname: &str) -> Option<String> {
    let addrs: Vec<_> = (hostname, 0u16)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .map(|ip| ip.to_string())
}

/// etcd credentials: the URI's, else ETCD_USERNAME / ETCD_PASSWORD, the password
/// possibly from `--etcd-password-file`.
fn credentials(config: &mut Config) -> Result<(), String> {
    let r = &mut config.registry;
    if r.username.is_none() {
        r.username = std::env::var("ETCD_USERNAME")
            .ok()
            .filter(|s| !s.is_empty());
    }
    if let Some(path) = &config.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --etcd-password-file {}: {e}", path.display()))?;
        r.password = Some(text.trim_end_matches(['\n', '\r']).to_string());
    } else if r.password.is_none() {
        r.password = std::env::var("ETCD_PASSWORD").ok();
    }
    if r.password.is_some() && r.username.is_none() {
        return Err(
            "an etcd password was given without a user name (ETCD_USERNAME or user@ in the URI)"
                .into(),
        );
    }
    Ok(())
}

fn run(mut config: Config) -> Result<ExitCode, Box<dyn Error>> {
    let hostname = match config.hostname.clone() {
        Some(h) => h,
        None => system_hostname()?,
    };
    credentials(&mut config)?;
    let settings = Settings {
        hostname: hostname.clone(),
        ip: config.ip.clone(),
        // Looked up by the reconciler, only if a service needs it.
        host_address: None,
        internal: config.internal,
        explicit: config.explicit,
    };
    let ttl = match config.ttl {
        Some(t) => t,
        None if config.once => 0,
        None => 30,
    };
    let opts = Options {
        prefix: config.registry.prefix.clone(),
        hostname: hostname.clone(),
        dry_run: config.dry_run,
        ttl,
        adopt: !config.once,
        keep_foreign_leases: config.once && config.ttl.is_none(),
    };
    let etcd = Etcd::new(&config.registry, Duration::from_secs(5))?;
    let docker = Docker::new(&config.docker, Duration::from_secs(10));
    let agents = (docker.agent(), etcd.agent());
    let mut reconciler = Reconciler::new(docker, etcd, settings, opts, resolve);

    if config.once {
        return Ok(match reconciler.sync() {
            Ok(outcome) if config.dry_run => {
                for op in &outcome.ops {
                    println!("{}", op.display(&config.registry.prefix));
                }
                if outcome.ops.is_empty() {
                    println!("# nothing to change");
                }
                ExitCode::SUCCESS
            }
            Ok(outcome) if outcome.failed > 0 => {
                log::error!(
                    "{} service(s) could not be written; etcd does not match Docker",
                    outcome.failed
                );
                ExitCode::from(1)
            }
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("sync failed: {e}");
                ExitCode::from(1)
            }
        });
    }

    signals::block()?;
    let (tx, rx) = mpsc::channel();
    signals::forward(tx.clone(), move || {
        agents.0.shutdown();
        agents.1.shutdown();
    })?;
    events::spawn(config.docker.clone(), tx.clone())?;
    if ttl > 0 {
        // A keepalive is tiny: a short timeout moves on to the next endpoint in time
        // (a follower can hold a request through an election for longer than the TTL).
        let timeout = Duration::from_secs_f64((ttl as f64 / 4.0).clamp(1.0, 5.0));
        lease::spawn(
            Etcd::new(&config.registry, timeout)?,
            reconciler.lease_cell(),
            ttl,
            tx,
        )?;
    }
    log::info!(
        "registrator {VERSION}: host {hostname}, {} -> {}, resync every {:?}, {}",
        config.docker,
        config.registry,
        config.interval,
        if ttl > 0 {
            format!("lease TTL {ttl} s")
        } else {
            "no lease".into()
        }
    );
    reconciler.run(&rx, config.interval);
    if config.deregister_on_exit {
        match reconciler.deregister_all() {
            Ok(_) => log::info!("deregistered this host's services; exiting"),
            Err(e) => {
                log::error!("could not deregister on exit: {e}");
                return Ok(ExitCode::from(1));
            }
        }
    } else if reconciler.lease() != 0 {
        log::info!(
            "exiting; services stay registered until lease {:x} expires or the next registrator adopts it",
            reconciler.lease()
        );
    } else {
        log::info!("exiting; services stay registered");
    }
    Ok(ExitCode::SUCCESS)
}
