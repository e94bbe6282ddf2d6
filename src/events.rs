//! Follows Docker's container event stream on its own thread and wakes the loop with
//! each change it reports (the stream and its vocabulary are in `docker/events.rs`).
//!
//! Events only trigger passes; each pass is a full level-triggered sync, so a missed
//! or coalesced event loses nothing. When the stream ends (dockerd restarted) or
//! fails, it reconnects with backoff (growing until a stream has stayed up for
//! `STABLE`) and wakes the loop for one full sync per reconnect.

use std::error::Error;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::cli::DockerHost;
use crate::docker::{Docker, Events};
use crate::metrics::Metrics;
use crate::reconcile::Wake;

/// Spawns the watcher thread, with a client of its own; events and reconnects are
/// counted in `metrics`. It ends when the loop's receiver is gone.
pub fn spawn(
    host: &DockerHost,
    tx: SyncSender<Wake>,
    metrics: Arc<Metrics>,
) -> Result<(), Box<dyn Error>> {
    let docker = Docker::new(host, Duration::from_secs(10))?;
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || watch(docker, tx, &metrics))?;
    Ok(())
}

/// The loop's receiver is gone: the thread ends.
struct Closed;

/// How long a stream must stay up before a reconnect starts from the shortest wait
/// again: a stream that ends at once (a proxy in front of Docker that closes it) must
/// not turn into a hot loop of reconnects and full passes.
const STABLE: Duration = Duration::from_secs(30);

fn watch(mut docker: Docker, tx: SyncSender<Wake>, metrics: &Metrics) {
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        log::Level::Warn,
    );
    let mut connected_before = false;
    // Whether the last try could not connect at all (logged once, and its end logged).
    let mut unreachable = false;
    loop {
        match docker.events(Duration::from_secs(300)) {
            Ok(stream) => {
                let was_failing = backoff.is_failing();
                if std::mem::take(&mut unreachable) {
                    log::info!("docker event stream reconnected");
                }
                // Anything may have happened while we were not listening.
                if connected_before {
                    metrics.event_stream_reconnect();
                }
                if (connected_before || was_failing) && tx.send(Wake::Changed).is_err() {
                    return;
                }
                connected_before = true;
                let up = Instant::now();
                let Ok(why) = forward(stream, &tx, metrics) else {
                    return;
                };
                if up.elapsed() >= STABLE {
                    backoff.reset();
                    log::warn!("{why}; reconnecting");
                } else {
                    backoff.failed(format!("{why} (after {:.1?}); reconnecting", up.elapsed()));
                }
            }
            Err(e) => {
                unreachable = true;
                backoff.failed(format!("{e}; retrying"));
            }
        }
        std::thread::sleep(backoff.delay());
    }
}

/// Sends the stream's events to the loop until the stream breaks; returns why.
fn forward(mut stream: Events, tx: &SyncSender<Wake>, metrics: &Metrics) -> Result<String, Closed> {
    loop {
        match stream.next_event() {
            Ok(Some(event)) => {
                metrics.docker_event();
                tx.send(Wake::Event(event)).map_err(|_| Closed)?;
            }
            Ok(None) => {}
            Err(e) => return Ok(e.to_string()),
        }
    }
}
