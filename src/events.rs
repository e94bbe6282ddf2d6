//! Follows Docker's container event stream on its own thread and wakes the loop.
//!
//! Events only trigger passes; each pass is a full level-triggered sync, so a missed
//! or coalesced event loses nothing. When the stream ends (dockerd restarted) or
//! fails, it reconnects with backoff and wakes the loop for a full sync.

use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::cli::DockerHost;
use crate::docker::{Docker, Events};
use crate::reconcile::Wake;

/// Actions that can change what should be registered, in dockerd's or Podman's words
/// ([`crate::docker::classify`] knows both).
pub fn relevant(action: &str) -> bool {
    crate::docker::classify(action) != crate::docker::EventKind::Other
}

/// Spawns the watcher thread. It ends when the loop's receiver is gone.
pub fn spawn(host: DockerHost, tx: Sender<Wake>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || watch(host, tx))?;
    Ok(())
}

/// The loop's receiver is gone: the thread ends.
struct Closed;

fn watch(host: DockerHost, tx: Sender<Wake>) {
    let mut docker = Docker::new(&host, Duration::from_secs(10));
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(5),
        log::Level::Warn,
    );
    let mut connected_before = false;
    loop {
        match docker.events(Duration::from_secs(300)) {
            Ok(stream) => {
                backoff.recovered("docker event stream reconnected");
                // Anything may have happened while we were not listening.
                if connected_before && tx.send(Wake::Changed).is_err() {
                    return;
                }
                connected_before = true;
                if forward(stream, &tx).is_err() {
                    return;
                }
            }
            Err(e) => {
                backoff.failed(format!("{e}; retrying"));
            }
        }
        std::thread::sleep(backoff.delay());
        if tx.send(Wake::Changed).is_err() {
            return;
        }
    }
}

/// Sends the stream's relevant events to the loop until the stream breaks.
fn forward(mut stream: Events, tx: &Sender<Wake>) -> Result<(), Closed> {
    loop {
        match stream.next_event() {
            Ok(Some(ev)) if relevant(&ev.action) => {
                log::debug!(
                    "docker event {} {}",
                    ev.action,
                    ev.id.get(..12).unwrap_or(&ev.id)
                );
                let wake = Wake::Event {
                    action: ev.action,
                    id: ev.id,
                };
                tx.send(wake).map_err(|_| Closed)?;
            }
            Ok(_) => {}
            Err(e) => {
                log::warn!("{e}; reconnecting");
                return Ok(());
            }
        }
    }
}
