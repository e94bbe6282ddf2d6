//! The loop: a pass at start, on every wake-up and every interval, backing off while
//! passes fail; and [`Wake`], what the event watcher, the keepalive thread and the
//! signal thread send it.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{Reconciler, SyncError};
use crate::backoff::Backoff;
use crate::source::Source;
use crate::store::Store;

/// Why the loop wakes up before its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Docker reported a change to this container.
    Event { action: String, id: String },
    /// Something may have changed (the event stream reconnected): run a full pass.
    Changed,
    /// The keepalive thread found this lease gone.
    LeaseLost(i64),
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// Returned by [`Reconciler::run`] when a signal asked it to stop.
#[derive(Debug)]
pub struct Shutdown;

/// How long after an event burst the confirming full pass runs.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

impl<S: Source, K: Store> Reconciler<S, K> {
    /// The loop: a pass at start, on every wake-up and every `interval`. Returns on
    /// shutdown, or with the error when another live registrator holds this host's
    /// identity. (The lease is kept alive by its own thread: see `keepalive.rs`.)
    pub fn run(
        &mut self,
        wake: &Receiver<Wake>,
        interval: Duration,
    ) -> Result<Shutdown, SyncError> {
        let mut next_sync = Instant::now();
        let mut backoff = Backoff::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
            log::Level::Error,
        );
        loop {
            if Instant::now() >= next_sync {
                let wait = match self.sync() {
                    Ok(_) => {
                        backoff.recovered("sync succeeded again");
                        interval
                    }
                    Err(e @ SyncError::Twin(_)) => return Err(e),
                    Err(e) => {
                        backoff.failed(format!("sync failed: {e}; retrying"));
                        backoff.delay().min(interval)
                    }
                };
                next_sync = Instant::now() + wait;
            }
            match wake.recv_timeout(next_sync.saturating_duration_since(Instant::now())) {
                Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Ok(Shutdown),
                Ok(Wake::Changed) => next_sync = Instant::now(),
                Ok(Wake::LeaseLost(id)) => {
                    self.lease_lost(id);
                    next_sync = Instant::now();
                }
                Ok(Wake::Event { action, id }) => {
                    if self.on_events(action, id, wake).is_some() {
                        return Ok(Shutdown);
                    }
                    next_sync = next_sync.min(Instant::now() + EVENT_SETTLE);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Each event takes the fast path; a burst then coalesces into one full pass
    /// shortly after its last event. Some on shutdown.
    fn on_events(&mut self, action: String, id: String, wake: &Receiver<Wake>) -> Option<Shutdown> {
        let mut pending = vec![(action, id)];
        loop {
            for (action, id) in pending.drain(..) {
                if let Err(e) = self.on_event(&action, &id) {
                    log::debug!("event fast path for {id}: {e}");
                }
            }
            match wake.try_recv() {
                Ok(Wake::Shutdown) => return Some(Shutdown),
                Ok(Wake::Event { action, id }) => pending.push((action, id)),
                Ok(Wake::LeaseLost(id)) => self.lease_lost(id),
                Ok(Wake::Changed) => {}
                Err(_) => return None,
            }
        }
    }
}
