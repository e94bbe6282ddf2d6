//! A proxy-mesh consumer of the registrator's keys: follows an etcd prefix and keeps a
//! running HAProxy in step with it.
//!
//! ```text
//! cargo run --example haproxy -- etcd://127.0.0.1:2379/services --http-port 8080
//! ```
//!
//! It reads the prefix once, then follows it with the etcd v3 gateway's `/v3/watch`
//! stream, resuming from the last revision it saw when the stream drops and reading
//! everything again when that revision has been compacted. Every watch response is
//! applied whole (the registrator writes each service in one transaction, and etcd never
//! splits a revision across responses), so a half-written service is never rendered.
//! When the rendered configuration changed, it is checked with `haproxy -c`, swapped in,
//! and HAProxy's master process reloads it on SIGUSR2: HAProxy runs in master-worker
//! mode, so the old worker finishes the connections it holds while the new one accepts.
//!
//! HAProxy runs as a daemon with a pidfile and outlives this program: if the consumer
//! crashes, traffic keeps flowing on the last configuration, and a restarted consumer
//! adopts the running HAProxy instead of starting a second one.
//!
//! Mapping (keys under `<prefix>/<name>/<id>/`):
//! - `mode=http`: one HTTP frontend on `--public-bind:--http-port` routes by Host header
//!   to one backend per service name holding every instance's `address:port`. Unknown
//!   hosts, and domains whose last instance is gone, get HAProxy's 503.
//! - `mode=tcp` with `external_port`: a TCP listener on `--public-bind`, port
//!   `external_port + --port-offset`; with `internal_port`: the same on `--private-bind`.
//! - A domain or port claimed by two services goes to the one registered first.
//! - An incomplete or malformed instance is skipped with one warning; the rest is served.
//!
//! Layout: `cli` (arguments), `model` (keys -> what to serve, pure), `render` (model ->
//! HAProxy text, pure), `etcd` (range and watch through the JSON gateway), `haproxy`
//! (check, start, reload); here, `Proxy` (model -> running HAProxy) and the loop in `run`.
//! Key encoding, URI parsing and the key layout come from the `etcd_registrator` library,
//! so the consumer reads exactly what the registrator writes.

mod cli;
mod etcd;
mod haproxy;
mod model;
mod render;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Display;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use model::{Keys, Listen, Stored};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let options = match cli::parse(args) {
        Ok(cli::Command::Run(o)) => o,
        Ok(cli::Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("haproxy example: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    run(options)
}

/// Reads, follows and applies, forever. Failures are logged and retried with backoff:
/// while etcd cannot be read, HAProxy keeps serving what it has.
fn run(options: cli::Options) -> ! {
    let dir = format!("{}/", options.prefix);
    let mut etcd = etcd::Client::new(options.endpoints.clone());
    let mut proxy = Proxy::new(&options);
    let mut retry = Retry::default();
    loop {
        // Read everything: the starting point, and the way back from a compacted revision.
        let (mut keys, mut revision) = match etcd.range(&dir) {
            Ok((kvs, revision)) => (keys_from(&dir, kvs), revision),
            Err(e) => {
                retry.failed(&e);
                continue;
            }
        };
        retry.recovered(etcd.endpoint());
        log::info!(
            "read {} keys under {dir} at revision {revision}",
            keys.len()
        );
        proxy.apply(&keys);

        // Follow, resuming after the last revision seen, until that revision is compacted.
        'follow: loop {
            let mut watch = match etcd.watch(&dir, revision + 1) {
                Ok(w) => w,
                Err(e) => {
                    retry.failed(&e);
                    continue;
                }
            };
            let mut dirty = false;
            loop {
                match watch.next() {
                    Ok(Some(etcd::Message::Created)) => retry.recovered(etcd.endpoint()),
                    Ok(Some(etcd::Message::Changes {
                        changes,
                        revision: at,
                    })) => {
                        for change in changes {
                            apply_change(&dir, &mut keys, change);
                        }
                        revision = revision.max(at);
                        dirty = true;
                        // Responses that already arrived are applied before rendering:
                        // one reload for a burst of transactions.
                        if !watch.has_line() {
                            proxy.apply(&keys);
                            dirty = false;
                        }
                    }
                    Ok(Some(etcd::Message::Compacted(at))) => {
                        log::info!(
                            "revision {} was compacted (etcd keeps {at} and later); \
                             reading {dir} again",
                            revision + 1
                        );
                        break 'follow;
                    }
                    Ok(Some(etcd::Message::Canceled(why))) => {
                        retry.failed(&format!("etcd canceled the watch on {dir}: {why}"));
                        break;
                    }
                    Ok(None) => {
                        // Quiet for a while: reconnect from the same revision, so a stream
                        // that silently died cannot hide changes; retry a failed install.
                        log::debug!("watch idle; reconnecting from revision {}", revision + 1);
                        proxy.apply(&keys);
                        break;
                    }
                    Err(e) => {
                        retry.failed(&e);
                        break;
                    }
                }
            }
            if dirty {
                proxy.apply(&keys);
            }
        }
    }
}

/// Keys relative to `dir` (`<prefix>/`) with what the model needs of them.
fn keys_from(dir: &str, kvs: Vec<etcd::Kv>) -> Keys {
    kvs.into_iter()
        .filter_map(|kv| {
            let rel = kv.key.strip_prefix(dir)?.to_string();
            Some((
                rel,
                Stored {
                    value: kv.value,
                    created: kv.created,
                },
            ))
        })
        .collect()
}

fn apply_change(dir: &str, keys: &mut Keys, change: etcd::Change) {
    match change {
        etcd::Change::Put(kv) => {
            if let Some(rel) = kv.key.strip_prefix(dir) {
                keys.insert(
                    rel.to_string(),
                    Stored {
                        value: kv.value,
                        created: kv.created,
                    },
                );
            }
        }
        etcd::Change::Delete(key) => {
            if let Some(rel) = key.strip_prefix(dir) {
                keys.remove(rel);
            }
        }
    }
}

/// Backoff for the loop: logs a failure once and the recovery once.
struct Retry {
    delay: Duration,
    failing: bool,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            delay: Duration::from_millis(200),
            failing: false,
        }
    }
}

impl Retry {
    fn failed(&mut self, e: &dyn Display) {
        if self.failing {
            log::debug!("{e}; retrying in {:?}", self.delay);
        } else {
            log::warn!("{e}; retrying");
        }
        self.failing = true;
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
    }

    fn recovered(&mut self, endpoint: &str) {
        if self.failing {
            log::info!("etcd at {endpoint} answers again");
        }
        *self = Retry::default();
    }
}

/// Keeps HAProxy running the configuration rendered from the current keys.
struct Proxy {
    haproxy: haproxy::Haproxy,
    listen: Listen,
    prefix: String,
    /// The text HAProxy was last seen to load; None: install at the next chance.
    running: Option<String>,
    /// The last text `haproxy -c` refused: not tried again.
    rejected: Option<String>,
    /// The last failure to start or reload, so a persisting one is logged once.
    failure: Option<String>,
    /// Warnings of the last render, so each is logged once while it persists.
    warnings: BTreeSet<String>,
}

impl Proxy {
    fn new(options: &cli::Options) -> Proxy {
        Proxy {
            haproxy: haproxy::Haproxy::new(options),
            listen: options.listen,
            prefix: options.prefix.clone(),
            running: None,
            rejected: None,
            failure: None,
            warnings: BTreeSet::new(),
        }
    }

    fn apply(&mut self, keys: &Keys) {
        let (mesh, warnings) = model::build(keys, &self.listen);
        for w in warnings.difference(&self.warnings) {
            log::warn!("{w}");
        }
        self.warnings = warnings;
        let text = render::config(&mesh, &self.prefix);
        if self.haproxy.master().is_none() {
            self.running = None;
        }
        if self.running.as_ref() == Some(&text) || self.rejected.as_ref() == Some(&text) {
            return;
        }
        let started = Instant::now();
        match self.haproxy.install(&text) {
            Ok(how) => {
                let ms = started.elapsed().as_millis();
                log::info!(
                    "haproxy {how} in {ms} ms: {} HTTP services, {} TCP listeners",
                    mesh.http.len(),
                    mesh.tcp.len()
                );
                self.running = Some(text);
                self.rejected = None;
                self.failure = None;
            }
            Err(e @ haproxy::Error::Invalid(_)) => {
                log::error!("{e}; HAProxy keeps its current configuration");
                self.rejected = Some(text);
            }
            Err(e) => {
                // Tried again at the next watch response or idle reconnect (a port in
                // use may be free by then), whatever the text is.
                let message = e.to_string();
                if self.failure.as_ref() != Some(&message) {
                    log::error!("{message}; trying again");
                }
                self.failure = Some(message);
                self.running = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_changes_apply_to_the_keys_under_the_prefix_only() {
        let mut keys = keys_from(
            "/s/",
            vec![etcd::Kv {
                key: "/s/a/1/port".into(),
                value: "80".into(),
                created: 3,
            }],
        );
        apply_change(
            "/s/",
            &mut keys,
            etcd::Change::Put(etcd::Kv {
                key: "/s/a/1/mode".into(),
                value: "tcp".into(),
                created: 4,
            }),
        );
        apply_change("/s/", &mut keys, etcd::Change::Delete("/s/a/1/port".into()));
        apply_change(
            "/s/",
            &mut keys,
            etcd::Change::Put(etcd::Kv {
                key: "/other".into(),
                value: "x".into(),
                created: 5,
            }),
        );
        let want: Keys = [(
            "a/1/mode".to_string(),
            Stored {
                value: "tcp".into(),
                created: 4,
            },
        )]
        .into();
        assert_eq!(keys, want);
    }
}
