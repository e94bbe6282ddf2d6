//! Runs the registrator as the command line asked: one pass (`--once`, `--dry-run`),
//! or the loop with its threads (signals, Docker events, keepalive) until a signal.
//! A failure comes back as the error line `main` logs before it exits with 1.

use std::error::Error;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::LsConfig;
use crate::docker::Docker;
use crate::etcd::codec::prefix_end;
use crate::etcd::Etcd;
use crate::ls::{self, Filter};
use crate::metrics::Metrics;
use crate::reconcile::Reconciler;
use crate::setup::{self, Loop, Mode, Reach, Setup};
use crate::store::StoreError;
use crate::{events, http, keepalive, signals};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs until done (`--once`) or until a signal; Err: exit code 1.
pub fn run(setup: Setup) -> Result<(), Box<dyn Error>> {
    let Setup {
        reach,
        reconciler,
        agents,
        mode,
    } = setup;
    if let Some(reach) = reach {
        reach_etcd(reach)?;
    }
    match mode {
        Mode::Once { dry_run, prefix } => once(reconciler, dry_run, &prefix),
        Mode::Loop(parts) => serve(reconciler, agents, *parts),
    }
}

/// One pass. A dry run prints the ops it would write (keys under `prefix`); otherwise
/// any service left unwritten is a failure (etcd does not match Docker).
fn once(
    mut reconciler: Reconciler<Docker, Etcd>,
    dry_run: bool,
    prefix: &str,
) -> Result<(), Box<dyn Error>> {
    let outcome = reconciler.sync().map_err(|e| format!("sync failed: {e}"))?;
    if dry_run {
        for op in &outcome.ops {
            println!("{}", op.display(prefix));
        }
        for op in &outcome.claims {
            println!("# {op}");
        }
        if outcome.ops.is_empty() && outcome.claims.is_empty() {
            println!("# nothing to change");
        }
        return Ok(());
    }
    if outcome.failed > 0 {
        return Err(format!(
            "{} service(s) could not be written; etcd does not match Docker",
            outcome.failed
        )
        .into());
    }
    Ok(())
}

/// `--retry-attempts` / `--retry-interval`, as gliderlabs/registrator: try etcd (one
/// read of at most one key under the prefix) until it answers, `interval` apart, and
/// give up after `attempts` retries. (Without them the loop retries for ever, with
/// backoff, and `--once` tries once.)
fn reach_etcd(reach: Reach) -> Result<(), Box<dyn Error>> {
    let Reach {
        mut etcd,
        prefix,
        retry,
    } = reach;
    let end = String::from_utf8_lossy(&prefix_end(&prefix)).into_owned();
    let mut logged = None;
    for attempt in 1.. {
        let e = match etcd.range_page(&prefix, &end, 1, 0) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        if let Some(n) = retry.attempts.filter(|&n| attempt > n) {
            return Err(format!(
                "etcd did not answer {attempt} attempt(s), {} ms apart \
                 (--retry-attempts {n}): {e}",
                retry.interval.as_millis()
            )
            .into());
        }
        if logged.as_ref() != Some(&e) {
            log::warn!(
                "etcd did not answer (attempt {attempt}): {e}; retrying every {} ms, {}",
                retry.interval.as_millis(),
                match retry.attempts {
                    Some(n) => format!("{n} retries at most"),
                    None => "until it answers".into(),
                }
            );
            logged = Some(e);
        }
        std::thread::sleep(retry.interval);
    }
    Ok(())
}

/// The most wake-ups (mostly Docker events) waiting for the loop. The loop merges what
/// is queued per container, so this only bounds memory while a pass is slow; when it is
/// full the event thread waits (Docker keeps the rest of its stream meanwhile).
const WAKE_QUEUE: usize = 1024;

/// The loop and its threads until SIGTERM or SIGINT; then, with
/// `--deregister-on-exit`, removes this host's services through a client of its own
/// (the signal thread interrupts the loop's), within [`signals::EXIT_DEADLINE`].
fn serve(
    mut reconciler: Reconciler<Docker, Etcd>,
    agents: [ureq::Agent; 2],
    parts: Loop,
) -> Result<(), Box<dyn Error>> {
    let Loop {
        hostname,
        ttl,
        interval,
        docker,
        registry,
        keepalive,
        mut exit_store,
        metrics_addr,
        metrics,
    } = parts;
    signals::block()?;
    operator_listener(interval, ttl, metrics_addr.as_deref(), &metrics)?;
    let exit_agent = exit_store.as_ref().map(Etcd::agent);
    let (tx, rx) = mpsc::sync_channel(WAKE_QUEUE);
    signals::forward(
        tx.clone(),
        move || {
            for agent in agents {
                agent.shutdown();
            }
        },
        move || {
            if let Some(agent) = exit_agent {
                agent.shutdown();
            }
        },
    )?;
    events::spawn(&docker, tx.clone(), Arc::clone(&metrics))?;
    if let Some(etcd) = keepalive {
        keepalive::spawn(etcd, reconciler.lease_cell(), ttl, tx, metrics)?;
    }
    log::info!(
        "registrator {VERSION}: host {hostname}, {docker} -> {registry}, resync every \
         {interval:?}, {}",
        if ttl > 0 {
            format!("lease TTL {ttl} s")
        } else {
            "no lease".into()
        }
    );
    reconciler.run(&rx, interval)?;
    if let Some(store) = exit_store.as_mut() {
        reconciler
            .deregister_all(store)
            .map_err(|e| format!("could not deregister on exit: {e}"))?;
        log::info!("deregistered this host's services; exiting");
        return Ok(());
    }
    if reconciler.lease() != 0 {
        // The successor may then take over at once (without this, it leaves these
        // services alone until the lease expires). Through the loop's client: if the
        // signal had to interrupt it (etcd hung), the exit does not wait for etcd.
        if let Err(e) = reconciler.release() {
            log::warn!("could not mark this host's identity released: {e}");
        }
        log::info!(
            "exiting; services stay registered until lease {:x} expires or the next \
             registrator takes over",
            reconciler.lease()
        );
    } else {
        log::info!("exiting; services stay registered");
    }
    Ok(())
}

/// The loop's metrics (configured whether or not they are served), and with
/// `--metrics-addr` the listener of `/metrics` and `/healthz`. Called after the signals
/// are blocked, so its threads leave SIGTERM to the signal thread.
fn operator_listener(
    interval: Duration,
    ttl: u64,
    addr: Option<&str>,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    metrics.configure(interval, ttl);
    if let Some(addr) = addr {
        let bound = http::spawn(addr, Arc::clone(metrics))
            .map_err(|e| format!("cannot listen on --metrics-addr {addr}: {e}"))?;
        log::info!("serving /metrics and /healthz on http://{bound}");
    }
    Ok(())
}

/// `registrator ls`: reads the services under the prefix (never Docker, never a
/// write, no lease kept alive) and prints them; Err: exit code 1.
pub fn ls(mut config: LsConfig) -> Result<(), Box<dyn Error>> {
    setup::registry_credentials(
        &mut config.registry,
        config.password_file.as_deref(),
        |name| std::env::var(name).ok(),
    )?;
    if let Some(warning) = crate::cli::plaintext_password_warning(&config.registry) {
        log::warn!("{warning}");
    }
    let mut etcd = Etcd::new(&config.registry, Duration::from_secs(10))?;
    let filter = Filter {
        node: config.node.clone(),
        name: config.name.clone(),
    };
    let prefix = &config.registry.prefix;
    let listing = ls::read(&mut etcd, prefix, &filter, |etcd, id| {
        etcd.lease_ttl(id).map_err(StoreError::from)
    })
    .map_err(|e| format!("cannot list {}: {e}", config.registry))?;
    if config.json {
        print!("{}", ls::json(&listing));
    } else {
        print!("{}", ls::text(&listing, prefix, &filter));
    }
    Ok(())
}
