//! This host's lease: each process grants its own and never takes over another's, so
//! a lease that someone still refreshes is always a live process's (see `identity.rs`).
//! Also: dropping the lease when etcd lost it, and retiring the lease a predecessor
//! released once this host's keys have moved off it (revoking on exit is exit.rs's job).

use super::{Reconciler, SyncError};
use crate::source::Source;
use crate::store::{Store, StoreError};

impl<S: Source, K: Store> Reconciler<S, K> {
    /// Makes sure keys get a lease when they need one (a new one of this process's
    /// own), and with `exclusive` settles who holds this host's identity.
    pub(super) fn ensure_lease(&mut self, read: &super::pass::Read) -> Result<(), SyncError> {
        if self.opts.ttl == 0 {
            return Ok(());
        }
        if self.lease() == 0 {
            self.grant_lease()?;
        }
        if self.exclusive() && !self.identity.held {
            self.settle_identity(read)?;
        }
        Ok(())
    }

    /// Whether this process claims its host's identity (the loop with a lease).
    pub(super) fn exclusive(&self) -> bool {
        self.opts.exclusive && !self.opts.dry_run
    }

    fn grant_lease(&mut self) -> Result<(), StoreError> {
        let ttl = self.opts.ttl;
        if let Some(granted) = self.writer().grant(ttl)? {
            self.set_lease(granted);
            log::debug!("granted lease {granted:x} (TTL {ttl} s)");
            self.metrics.lease_granted(granted);
        }
        Ok(())
    }

    /// After the pass that took over a released identity (and moved this host's keys
    /// onto our lease: same key, new lease, so a watcher sees a PUT, never a DELETE):
    /// revokes the lease the predecessor released. Whatever is still on it is no service
    /// this host wants (a key the index lost): it goes with it, once.
    pub(super) fn retire_old_lease(&mut self) -> Result<(), StoreError> {
        let Some(old) = self.retiring.take() else {
            return Ok(());
        };
        if self.writer().revoke(old)? {
            log::info!("revoked lease {old:x}, released by the previous registrator");
        }
        Ok(())
    }

    /// The lease the plan expects keys on: None when keys keep whatever lease they
    /// have (`--once` without `--ttl`).
    pub(super) fn lease_to_write(&self) -> Option<i64> {
        (!self.opts.keep_foreign_leases).then(|| self.lease())
    }

    /// The keepalive thread found `id` gone: the next pass grants a new lease and
    /// writes everything again.
    pub fn lease_lost(&mut self, id: i64) {
        if self.lease() == id {
            log::warn!("lease {id:x} expired; granting a new one and registering again");
            self.set_lease(0);
            // The instance key was on it.
            self.identity.held = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};

    fn two_containers() -> FakeDocker {
        FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        }
    }

    #[test]
    fn expired_lease_is_replaced_and_everything_re_put() {
        let mut r = reconciler(two_containers(), FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let old = r.lease();
        r.store.expire(old);
        let left: Vec<&str> = r.store.kv.keys().map(String::as_str).collect();
        assert!(left.is_empty(), "every key was on the lease: {left:?}");
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 2);
        assert_ne!(r.lease(), old);
        assert!(r.store.kv.values().all(|(_, l, _)| *l == r.lease()));
    }

    #[test]
    fn a_restart_with_another_ttl_puts_the_keys_on_a_lease_of_that_ttl() {
        for (before, after) in [(60, 6), (6, 60)] {
            let mut first = reconciler(two_containers(), FakeEtcd::default(), "h", before);
            first.sync().unwrap();
            let old = first.lease();
            let etcd = std::mem::take(&mut first.store);
            let mut second = reconciler(two_containers(), etcd, "h", after);
            assert_eq!(second.sync().unwrap().applied, 2, "{before} -> {after}");
            let new = second.lease();
            assert_eq!(second.store.granted(new), Some(after));
            assert!(second.store.kv.values().all(|(_, l, _)| *l == new));
            assert_ne!(new, old);
            assert_eq!(second.sync().unwrap().applied, 0, "then quiet");
        }
    }
}
