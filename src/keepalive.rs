//! Keeps this host's lease alive on its own thread, so a slow or hung Docker (which
//! can hold up a pass) never lets the services expire while the host is alive.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::metrics;
use crate::reconcile::Wake;
use crate::store::Store;

/// Spawns the keepalive thread: every TTL/3 it refreshes the lease in `lease` (if
/// any), and reports a lease the store no longer knows as [`Wake::LeaseLost`].
pub fn spawn(
    mut store: impl Store + Send + 'static,
    lease: Arc<AtomicI64>,
    ttl: u64,
    tx: SyncSender<Wake>,
) -> std::io::Result<()> {
    let every = Duration::from_secs_f64((ttl as f64 / 3.0).max(0.2));
    // After a failure, retry soon (but not in a tight loop): the lease may be close to
    // expiring.
    let retry = every.min(Duration::from_millis(500));
    std::thread::Builder::new()
        .name("keepalive".into())
        .spawn(move || {
            let mut backoff = Backoff::new(retry, retry, log::Level::Warn);
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
                        metrics::global().lease_renewed(id);
                        backoff
                            .recovered(format_args!("etcd answers again; lease {id:x} kept alive"));
                    }
                    Ok(None) => {
                        metrics::global().lease_lost(id);
                        backoff.reset();
                        if tx.send(Wake::LeaseLost(id)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        metrics::global().keepalive_failed();
                        backoff.failed(format!("lease keepalive failed: {e}; retrying"));
                    }
                }
            }
        })?;
    Ok(())
}
