//! `--deregister-on-exit`: removes this host's services through a store client of its
//! own (the loop's may have been interrupted by the signal), reading only this host's
//! index and directories, so it takes the same few requests on any fleet.

use super::index;
use super::writer::Writer;
use super::{Outcome, Reconciler, SyncError};
use crate::plan::{self, Actual, ClaimOp, Desired};
use crate::store::Store;

impl<S, K> Reconciler<S, K> {
    /// Removes this host's services, index entries and claims through `store`: revokes
    /// the lease (one request; every key of ours is on it), or without one deletes the
    /// directories the index names, each guarded by its owner marker. Returns how many
    /// services were removed (with a lease: how many the last pass wanted).
    pub fn deregister_all<T: Store>(&mut self, store: &mut T) -> Result<usize, SyncError> {
        let lease = self.lease();
        if lease != 0 {
            if Writer::new(store, &self.opts, lease, &self.metrics).revoke(lease)? {
                log::info!("revoked lease {lease:x}: this host's services are deregistered");
                self.set_lease(0);
            }
            return Ok(self.seen.desired.len());
        }
        let keys = self.opts.keys();
        let index = index::host_index(keys, &store.range_prefixes(&[keys.host()])?);
        let dirs: Vec<String> = index.services.keys().map(|d| keys.dir(d)).collect();
        let kvs = if dirs.is_empty() {
            Vec::new()
        } else {
            store.range_prefixes(&dirs)?
        };
        let actual: Actual = plan::group(
            &self.opts.prefix,
            kvs.into_iter().map(|kv| (kv.key, kv.value, kv.lease)),
        );
        let host = &self.opts.hostname;
        let (ops, _) = plan::plan(&Desired::new(), &actual, &index.services, host, None);
        let releases: Vec<ClaimOp> = index
            .claims
            .iter()
            .map(|(claim, e)| ClaimOp::Release {
                claim: *claim,
                name: e.value.clone(),
            })
            .collect();
        let mut outcome = Outcome::default();
        let mut writer = Writer::new(store, &self.opts, 0, &self.metrics);
        writer.apply(&ops, &mut outcome)?;
        writer.apply_claims(&releases, &mut outcome)?;
        Ok(ops
            .iter()
            .filter(|op| matches!(op, plan::Op::Deregister { .. }))
            .count())
    }
}

#[cfg(test)]
mod tests {
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};

    fn docker() -> FakeDocker {
        FakeDocker {
            containers: vec![
                container(1, &[]),
                container(2, &["SERVICE_NAME=db", "SERVICE_EXTERNAL_PORT=5432"]),
            ],
            ..Default::default()
        }
    }

    /// Another host's service, to be left alone.
    fn with_other_host(etcd: &mut FakeEtcd) {
        for (k, v) in [("node", "other"), ("port", "1")] {
            etcd.kv
                .insert(format!("/s/o/other:1:80/{k}"), (v.into(), 0, 1));
        }
    }

    #[test]
    fn without_a_lease_it_reads_only_the_index_and_deletes_everything_of_ours() {
        let mut etcd = FakeEtcd::default();
        with_other_host(&mut etcd);
        let mut r = reconciler(docker(), etcd, "h", 0);
        r.sync().unwrap();
        assert!(r.store.kv.len() > 2);
        let mut store = std::mem::take(&mut r.store);
        store.calls.clear();
        store.reads.clear();
        assert_eq!(r.deregister_all(&mut store).unwrap(), 2);
        let left: Vec<&str> = store.kv.keys().map(String::as_str).collect();
        assert_eq!(
            left,
            ["/s/o/other:1:80/node", "/s/o/other:1:80/port"],
            "services, index entries and claims are gone; others' services stay"
        );
        assert!(
            !store.reads.iter().any(|r| r.starts_with("[/s/")),
            "no read of the whole prefix: {:?}",
            store.reads
        );
    }

    #[test]
    fn with_a_lease_it_revokes_it_in_one_request() {
        let mut r = reconciler(docker(), FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let mut store = std::mem::take(&mut r.store);
        store.calls.clear();
        assert_eq!(r.deregister_all(&mut store).unwrap(), 2);
        let calls: Vec<_> = store.calls.keys().copied().collect();
        assert_eq!(calls, ["revoke"]);
        assert!(store.kv.is_empty(), "{:?}", store.kv.keys());
    }
}
