//! The loop: a pass at start, after events and at least once every interval, backing
//! off while passes fail; and [`Wake`], what the event watcher, the keepalive thread
//! and the signal thread send it.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{Outcome, Reconciler, SyncError};
use crate::backoff::Backoff;
use crate::metrics::PassOutcome;
use crate::source::{Event, Source};
use crate::store::Store;

/// Why the loop wakes up before its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// The source reported a change to this container.
    Event(Event),
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

/// How soon a pass runs again after another writer contested some of its ops (a
/// process that lost a race for a directory of this host's takes it back quickly).
const CONTESTED_RETRY: Duration = Duration::from_secs(1);

/// How long after an event burst the confirming full pass runs.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

impl<S: Source, K: Store> Reconciler<S, K> {
    /// The loop: a pass at start, shortly after events and at least once every
    /// `interval`, however many events arrive. While passes fail it backs off (jittered,
    /// see `backoff.rs`): nothing brings the next pass forward, and events take no fast
    /// path, only noted for that pass. Returns on shutdown, or with the error when
    /// another live registrator holds this host's identity. (The lease is kept alive by
    /// its own thread: see `keepalive.rs`.)
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
        // Ops that another writer contested are retried soon, then less and less often.
        let first = CONTESTED_RETRY.min(interval);
        let mut contested = Backoff::new(first, interval, log::Level::Debug);
        // While another process's lease is waited out: when to read it again.
        let mut next_check: Option<Instant> = None;
        loop {
            if next_check.is_some_and(|c| Instant::now() >= c) {
                // One read per watched lease, not a pass: a pass when it changed.
                match self.settle_due() {
                    // While passes fail, the backoff decides when the next one runs.
                    Ok(true) if !backoff.is_failing() => next_sync = Instant::now(),
                    Ok(_) => {}
                    Err(e) => log::debug!("reading the leases waited out: {e}"),
                }
                next_check = self.settling().map(|s| Instant::now() + s);
            }
            if Instant::now() >= next_sync {
                let started = Instant::now();
                let result = self.sync();
                self.metrics.pass(pass_outcome(&result), started.elapsed());
                let wait = match result {
                    Ok(outcome) => {
                        backoff.recovered("sync succeeded again");
                        let mut wait = interval;
                        if outcome.failed > 0 {
                            contested.failed("ops contested".into());
                            wait = contested.delay();
                        } else {
                            contested.reset();
                        }
                        wait
                    }
                    Err(e @ SyncError::Twin(_)) => return Err(e),
                    Err(e) => {
                        backoff.failed(format!("sync failed: {e}; retrying"));
                        backoff.delay().min(interval)
                    }
                };
                next_sync = Instant::now() + wait;
                next_check = self.settling().map(|s| Instant::now() + s);
            }
            let failing = backoff.is_failing();
            let until = next_check.map_or(next_sync, |c| c.min(next_sync));
            match wake.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Ok(Shutdown),
                Ok(Wake::Changed) if !failing => next_sync = Instant::now(),
                Ok(Wake::Changed) => {}
                Ok(Wake::LeaseLost(id)) => {
                    self.lease_lost(id);
                    next_sync = Instant::now();
                }
                Ok(Wake::Event(event)) => {
                    // Fast paths until the pass is due (while passes fail, it is).
                    let until = if failing { Instant::now() } else { next_sync };
                    if self.on_events(event, wake, until).is_some() {
                        return Ok(Shutdown);
                    }
                    if !failing {
                        next_sync = next_sync.min(Instant::now() + EVENT_SETTLE);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Each container named by events takes the fast path once, with its latest
    /// change: a burst of events for one container (die, stop, destroy) costs one
    /// inspect and one transaction, not one each. Wake-ups that arrive meanwhile are
    /// merged in, and a shutdown is seen between two fast paths, never behind a queue.
    /// The burst then coalesces into one full pass shortly after its last event.
    ///
    /// At `until` (the full pass is due) or once etcd refuses requests cluster-wide,
    /// the events left are only noted for the pass, which settles them all: a steady
    /// stream of events never holds the pass off, and a cluster that asked to be left
    /// alone gets no request per event. Some on shutdown.
    fn on_events(
        &mut self,
        first: Event,
        wake: &Receiver<Wake>,
        mut until: Instant,
    ) -> Option<Shutdown> {
        let mut pending = Pending::default();
        pending.add(first);
        loop {
            loop {
                match wake.try_recv() {
                    Ok(Wake::Shutdown) => return Some(Shutdown),
                    Ok(Wake::Event(event)) => pending.add(event),
                    Ok(Wake::LeaseLost(id)) => self.lease_lost(id),
                    Ok(Wake::Changed) => {}
                    Err(_) => break,
                }
            }
            let Event { change, id } = pending.next()?;
            if Instant::now() >= until {
                self.note_event(change, &id);
                continue;
            }
            match self.on_event(change, &id) {
                Ok(()) => {}
                Err(SyncError::Store(e)) if e.is_cluster() => {
                    log::debug!("event fast path for {id}: {e}; the rest waits for the pass");
                    until = Instant::now();
                }
                Err(e) => log::debug!("event fast path for {id}: {e}"),
            }
        }
    }
}

/// How a pass ended, as counted: some op left unwritten (its guard failed) is a
/// conflict; an error is Docker's or etcd's.
fn pass_outcome(result: &Result<Outcome, SyncError>) -> PassOutcome {
    match result {
        Ok(o) if o.failed > 0 => PassOutcome::Conflict,
        Ok(_) => PassOutcome::Ok,
        Err(SyncError::Source(_)) => PassOutcome::DockerError,
        Err(SyncError::Store(_)) => PassOutcome::EtcdError,
        Err(SyncError::Twin(_)) => PassOutcome::Twin,
    }
}

/// Events waiting for the fast path, merged per container: one entry per container in
/// the order first seen, with its latest change (the one that says what the container
/// is now; the fast path inspects it anyway unless it is gone).
#[derive(Debug, Default)]
struct Pending {
    queue: std::collections::VecDeque<Event>,
}

impl Pending {
    fn add(&mut self, event: Event) {
        match self.queue.iter_mut().find(|e| e.id == event.id) {
            Some(entry) => entry.change = event.change,
            None => self.queue.push_back(event),
        }
    }

    fn next(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};
    use crate::source::Change::{self, Down, Health, Up};
    use std::sync::mpsc;

    fn event(change: Change, id: &str) -> Event {
        let id = id.to_string();
        Event { change, id }
    }

    #[test]
    fn a_burst_for_one_container_costs_one_inspect_and_shutdown_is_not_queued_behind() {
        let docker = FakeDocker {
            containers: vec![container(1, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let (tx, rx) = mpsc::channel();
        for change in [Up, Health, Up, Up] {
            tx.send(Wake::Event(event(change, "id1"))).unwrap();
        }
        r.source.inspects = 0;
        assert!(r.on_events(first(&rx), &rx, later()).is_none());
        assert_eq!(r.source.inspects, 1, "four events, one fast path");

        for n in 0..50 {
            tx.send(Wake::Event(event(Up, &format!("id{n}")))).unwrap();
        }
        tx.send(Wake::Shutdown).unwrap();
        r.source.inspects = 0;
        assert!(
            r.on_events(first(&rx), &rx, later()).is_some(),
            "shutdown seen"
        );
        assert_eq!(r.source.inspects, 0, "no fast path ran before the shutdown");
    }

    /// A time the tests never reach.
    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    /// The next event queued, as the loop receives it.
    fn first(rx: &mpsc::Receiver<Wake>) -> Event {
        let Ok(Wake::Event(event)) = rx.recv() else {
            panic!("an event first")
        };
        event
    }

    #[test]
    fn once_the_pass_is_due_events_are_left_to_it() {
        let docker = FakeDocker {
            containers: (1..=3).map(|n| container(n, &[])).collect(),
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let (tx, rx) = mpsc::channel();
        for (change, id) in [(Down, "id1"), (Up, "id4"), (Health, "id2")] {
            tx.send(Wake::Event(event(change, id))).unwrap();
        }
        r.source.containers.push(container(4, &[]));
        r.source.dead.insert("id1".into());
        let (txns, inspects) = (r.store.calls["txn"], r.source.inspects);
        assert!(r.on_events(first(&rx), &rx, Instant::now()).is_none());
        assert_eq!(
            r.store.calls["txn"], txns,
            "no fast path after the due time"
        );
        assert_eq!(r.source.inspects, inspects);
        // The pass inspects what the events named (the list lags behind them).
        let out = r.sync().unwrap();
        assert_eq!(r.source.inspects - inspects, 2, "die and health_status");
        assert_eq!(out.applied, 2, "container 1 deregistered, 4 registered");
    }

    #[test]
    fn a_cluster_wide_refusal_leaves_the_rest_of_a_burst_to_the_pass() {
        let mut r = reconciler(FakeDocker::default(), FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        r.store.full = true;
        let (tx, rx) = mpsc::channel();
        for n in 1..=5 {
            r.source.containers.push(container(n, &[]));
            tx.send(Wake::Event(event(Up, &format!("id{n}")))).unwrap();
        }
        let txns = r.store.calls.get("txn").copied().unwrap_or(0);
        assert!(r.on_events(first(&rx), &rx, later()).is_none());
        assert_eq!(r.store.calls["txn"] - txns, 1, "one refusal, not five");
    }

    #[test]
    fn events_merge_per_container_keeping_order_and_the_latest_change() {
        let mut p = Pending::default();
        for (change, id) in [(Up, "a"), (Up, "b"), (Health, "a"), (Down, "a")] {
            p.add(event(change, id));
        }
        assert_eq!(p.next(), Some(event(Down, "a")));
        assert_eq!(p.next(), Some(event(Up, "b")));
        assert_eq!(p.next(), None);
    }
}
