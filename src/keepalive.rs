//! Keeps this host's lease alive on its own thread, so a slow or hung Docker (which
//! can hold up a pass) never lets the services expire while the host is alive.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::reconcile::Wake;
use crate::store::Store;

/// Spawns the keepalive thread: every TTL/3 it refreshes the lease in `lease` (if
/// any), and reports a lease the store no longer knows as [`Wake::LeaseLost`]; each
/// outcome is counted in `metrics`.
pub fn spawn(
    mut store: impl Store + Send + 'static,
    lease: Arc<AtomicI64>,
    ttl: u64,
    tx: SyncSender<Wake>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let every = Duration::from_secs_f64((ttl as f64 / 3.0).max(0.2));
    let (first, cap) = retries(every);
    std::thread::Builder::new()
        .name("keepalive".into())
        .spawn(move || {
            let mut backoff = Backoff::new(first, cap, log::Level::Warn);
            loop {
                std::thread::sleep(if backoff.is_failing() {
                    backoff.delay()
                } else {
                    every
                });
                let id = lease.load(Ordering::SeqCst);
                if id == 0 {
                    continue;
                }
                match store.keepalive(id) {
                    Ok(Some(_)) => {
                        metrics.lease_renewed(id);
                        backoff
                            .recovered(format_args!("etcd answers again; lease {id:x} kept alive"));
                    }
                    Ok(None) => {
                        metrics.lease_lost(id);
                        backoff.reset();
                        if tx.send(Wake::LeaseLost(id)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        metrics.keepalive_failed();
                        backoff.failed(format!("lease keepalive failed: {e}; retrying"));
                    }
                }
            }
        })?;
    Ok(())
}

/// The first step and the cap of the retries after a failed keepalive, for a refresh
/// every `every` (TTL/3). A failure finds the lease with about 2 x `every` left; the
/// steps (each jittered to between half and all of it, see `backoff.rs`) start at
/// `every`/4, at most 0.5 s, and double up to `every`/2, so at least four tries start
/// within that time (the unit test counts them), and 1,000 hosts that lost etcd together
/// do not retry at the same moments.
fn retries(every: Duration) -> (Duration, Duration) {
    let first = (every / 4).min(Duration::from_millis(500));
    (first, (every / 2).max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_come_well_within_the_ttl_jittered_and_bounded() {
        for ttl in [1, 2, 3, 5, 10, 30, 60, 300, 3600] {
            let every = Duration::from_secs_f64((ttl as f64 / 3.0).max(0.2));
            let (first, cap) = retries(every);
            assert!(
                first <= Duration::from_millis(500) && cap >= first,
                "TTL {ttl}"
            );
            assert!(
                cap <= every.max(first),
                "TTL {ttl}: bounded by the refresh period"
            );
            // The latest each try can come (every delay at the top of its jitter range):
            // how many fit before a lease last refreshed `every` ago expires.
            let left = Duration::from_secs(ttl).saturating_sub(every);
            let (mut step, mut at, mut tries) = (first, first, 0);
            while at < left {
                tries += 1;
                step = (step * 2).min(cap);
                at += step;
            }
            assert!(
                tries >= 4,
                "TTL {ttl}: {tries} tries before the lease expires"
            );
        }
    }
}
