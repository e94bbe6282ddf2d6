//! Keeps this host's lease alive on its own thread, so a slow or hung Docker (which
//! can hold up a pass) never lets the services expire while the host is alive.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use crate::etcd::Etcd;
use crate::store::Store;
use crate::sync::Wake;

/// Spawns the keepalive thread: every TTL/3 it refreshes the lease in `lease` (if
/// any), and reports a lease etcd no longer knows as [`Wake::LeaseLost`].
pub fn spawn(
    mut etcd: Etcd,
    lease: Arc<AtomicI64>,
    ttl: u64,
    tx: Sender<Wake>,
) -> std::io::Result<()> {
    let every = Duration::from_secs_f64((ttl as f64 / 3.0).max(0.2));
    std::thread::Builder::new()
        .name("keepalive".into())
        .spawn(move || {
            let mut failing = false;
            loop {
                std::thread::sleep(if failing {
                    every.min(Duration::from_millis(500))
                } else {
                    every
                });
                let id = lease.load(Ordering::SeqCst);
                if id == 0 {
                    continue;
                }
                match etcd.keepalive(id) {
                    Ok(Some(_)) => {
                        if failing {
                            log::info!("etcd answers again; lease {id:x} kept alive");
                        }
                        failing = false;
                    }
                    Ok(None) => {
                        failing = false;
                        if tx.send(Wake::LeaseLost(id)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        if !failing {
                            log::warn!("lease keepalive failed: {e}; retrying");
                        }
                        failing = true;
                    }
                }
            }
        })?;
    Ok(())
}
