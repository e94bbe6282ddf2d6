//! Follows Docker's container event stream on its own thread and wakes the loop.
//!
//! Events only trigger passes; each pass is a full level-triggered sync, so a missed
//! or coalesced event loses nothing. When the stream ends (dockerd restarted) or
//! fails, it reconnects with backoff and wakes the loop for a full sync.

use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::cli::DockerHost;
use crate::docker::Docker;
use crate::sync::Wake;

/// Actions that can change what should be registered.
pub fn relevant(action: &str) -> bool {
    matches!(
        action,
        "start" | "die" | "stop" | "destroy" | "pause" | "unpause" | "restart"
    ) || action.starts_with("health_status")
}

/// Spawns the watcher thread. It ends when the loop's receiver is gone.
pub fn spawn(host: DockerHost, tx: Sender<Wake>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || watch(host, tx))?;
    Ok(())
}

fn watch(host: DockerHost, tx: Sender<Wake>) {
    let mut docker = Docker::new(&host, Duration::from_secs(10));
    let mut backoff = Duration::from_millis(200);
    let mut connected_before = false;
    let mut failing = false;
    loop {
        match docker.events(Duration::from_secs(300)) {
            Ok(mut stream) => {
                if failing {
                    log::info!("docker event stream reconnected");
                }
                failing = false;
                backoff = Duration::from_millis(200);
                // Anything may have happened while we were not listening.
                if connected_before && tx.send(Wake::Changed).is_err() {
                    return;
                }
                connected_before = true;
                loop {
                    match stream.next_event() {
                        Ok(Some(ev)) if relevant(&ev.action) => {
                            log::debug!(
                                "docker event {} {}",
                                ev.action,
                                &ev.id[..ev.id.len().min(12)]
                            );
                            if tx
                                .send(Wake::Event {
                                    action: ev.action,
                                    id: ev.id,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            log::warn!("{e}; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !failing {
                    log::warn!("{e}; retrying");
                }
                failing = true;
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if tx.send(Wake::Changed).is_err() {
            return;
        }
    }
}
