//! This host's lease: adopting the one a predecessor left or granting one, dropping it
//! when etcd lost it (revoking it on exit is exit.rs's job).

use std::collections::BTreeMap;

use super::{Reconciler, SyncError};
use crate::plan::Actual;
use crate::source::Source;
use crate::store::Store;

/// The leases on `hostname`'s stored keys, the one on most keys first (ties: the higher
/// ID, so the order is stable): the predecessor wrote with the first live one.
pub(super) fn adoption_candidates(actual: &Actual, hostname: &str) -> Vec<i64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for stored in actual.values().filter(|s| s.owner() == Some(hostname)) {
        for &l in stored.leases.values().filter(|&&l| l != 0) {
            *counts.entry(l).or_default() += 1;
        }
    }
    let mut ranked: Vec<(usize, i64)> = counts.into_iter().map(|(l, n)| (n, l)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, l)| l).collect()
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// Makes sure keys get a lease when they need one: adopts the live lease a
    /// predecessor on this hostname left on its keys, or grants a new one.
    pub(super) fn ensure_lease(&mut self, actual: &Actual) -> Result<(), SyncError> {
        if self.opts.ttl == 0 || self.lease() != 0 {
            return Ok(());
        }
        if self.opts.adopt && !self.started {
            for l in adoption_candidates(actual, &self.opts.hostname) {
                if self.store.keepalive(l)?.is_some() {
                    log::info!(
                        "adopted lease {l:x} left by the previous registrator of host {}",
                        self.opts.hostname
                    );
                    self.set_lease(l);
                    return Ok(());
                }
            }
        }
        let ttl = self.opts.ttl;
        if let Some(granted) = self.writer().grant(ttl)? {
            self.set_lease(granted);
            log::debug!("granted lease {granted:x} (TTL {ttl} s)");
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Stored, OWNER_FIELD};
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};

    /// A stored service of `owner` whose keys carry these leases.
    fn stored(owner: &str, leases: &[i64]) -> Stored {
        let mut s = Stored::default();
        s.fields.insert(OWNER_FIELD.into(), owner.into());
        for (i, &l) in leases.iter().enumerate() {
            s.leases.insert(format!("k{i}"), l);
        }
        s
    }

    #[test]
    fn adoption_vote_table() {
        struct Case {
            name: &'static str,
            actual: Vec<Stored>,
            candidates: Vec<i64>,
        }
        let cases = [
            Case {
                name: "nothing stored",
                actual: vec![],
                candidates: vec![],
            },
            Case {
                name: "keys without a lease",
                actual: vec![stored("h", &[0, 0])],
                candidates: vec![],
            },
            Case {
                name: "the lease on most keys first",
                actual: vec![stored("h", &[5, 5, 9]), stored("h", &[5])],
                candidates: vec![5, 9],
            },
            Case {
                name: "a tie: the higher ID first",
                actual: vec![stored("h", &[3, 4])],
                candidates: vec![4, 3],
            },
            Case {
                name: "other hosts' leases do not count",
                actual: vec![stored("h", &[2]), stored("other", &[7, 7, 7])],
                candidates: vec![2],
            },
        ];
        for case in cases {
            let actual: Actual = case
                .actual
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("svc/{i}"), s))
                .collect();
            assert_eq!(
                adoption_candidates(&actual, "h"),
                case.candidates,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn expired_lease_is_replaced_and_everything_re_put() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let old = r.lease();
        r.store.expire(old);
        let left: Vec<&str> = r.store.kv.keys().map(String::as_str).collect();
        assert_eq!(
            left,
            ["/s.index/hosts/h/migrated"],
            "only the marker has no lease"
        );
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 2);
        assert_ne!(r.lease(), old);
        assert!(r
            .store
            .kv
            .iter()
            .filter(|(k, _)| !k.ends_with("/migrated"))
            .all(|(_, (_, l, _))| *l == r.lease()));
    }

    #[test]
    fn successor_adopts_a_live_lease_without_rewriting_and_drops_stale_services() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut first = reconciler(docker, FakeEtcd::default(), "h", 30);
        first.sync().unwrap();
        let lease = first.lease();
        let mut etcd = std::mem::take(&mut first.store);
        etcd.calls.clear();
        let rev = etcd.rev;
        let docker = FakeDocker {
            containers: vec![container(1, &[])],
            ..Default::default()
        };
        let mut second = reconciler(docker, etcd, "h", 30);
        let out = second.sync().unwrap();
        assert_eq!(second.lease(), lease, "adopted");
        assert_eq!(out.applied, 1, "only the stale service is deleted");
        assert_eq!(second.store.rev, rev + 1);
        assert!(!second.store.calls.contains_key("grant"));
    }
}
