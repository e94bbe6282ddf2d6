//! One pass: read Docker, turn its containers into the desired services, read what
//! etcd holds, plan the difference, check port claims, write.

use std::collections::BTreeSet;

use super::{claims, Outcome, Reconciler, SyncError};
use crate::plan::{self, Actual, Desired, Op};
use crate::service::{self, Claim, Container};
use crate::source::Source;
use crate::store::{Kv, Store, StoreError};

/// How often a claim is written again after someone else changed the prefix meanwhile.
const CLAIM_TRIES: usize = 5;

impl<S: Source, K: Store> Reconciler<S, K> {
    /// One full pass. Docker is read first: if that fails, etcd is not touched.
    pub fn sync(&mut self) -> Result<Outcome, SyncError> {
        let containers = self.read_containers()?;
        self.resolve_host(&containers);
        let (services, mut problems) = service::services(&containers, &self.settings);
        let desired = plan::desired(&services, &self.opts.hostname);

        let (mut actual, revision) = self.read_actual(&desired)?;
        self.ensure_lease(&actual)?;
        let (ops, plan_problems) = plan::plan(
            &desired,
            &actual,
            &self.opts.hostname,
            self.lease_to_write(),
        );
        problems.extend(plan_problems);

        let (ops, claiming) = claims::split(ops, &desired);
        // Cluster-wide port claims need the whole prefix, but only when a service is
        // about to claim a port: never on a quiet pass.
        let revision = match revision {
            Some(rev) => rev,
            None if claiming.is_empty() => 0,
            None => {
                let (all, rev) = self.read_prefix()?;
                actual = all;
                rev
            }
        };
        let (claiming, held) = claims::check(claiming, &actual);
        crate::metrics::global().planned(&desired, &actual, &self.opts.hostname, held.len());
        problems.extend(held);
        self.report(problems);
        self.seen.remember(containers, desired);

        let mut outcome = Outcome::default();
        self.writer().apply(&ops, &mut outcome)?;
        for (op, claim) in claiming {
            self.apply_claim(op, claim, revision, &mut outcome)?;
        }
        self.report_refused(std::mem::take(&mut outcome.problems), true);
        self.retire_old_lease()?;
        // Only a pass that got this far has seen (and moved onto our lease) everything
        // of ours under the prefix; until then every pass reads the whole prefix.
        self.started = true;
        Ok(outcome)
    }

    /// The containers, with a fresh inspect of those events named since the last pass:
    /// Docker's list lags behind its events (after `die` it shows the container running
    /// until its cleanup finishes).
    fn read_containers(&mut self) -> Result<Vec<Container>, SyncError> {
        let mut containers = self.source.containers().map_err(SyncError::Docker)?;
        for c in containers
            .iter_mut()
            .filter(|c| self.seen.touched.contains(&c.id))
        {
            match self.source.inspect(&c.id).map_err(SyncError::Docker)? {
                Some(live) => *c = live,
                None => c.running = false,
            }
        }
        self.seen.touched.clear();
        Ok(containers)
    }

    /// Looks the host name up, once, when a service first needs the host's address.
    fn resolve_host(&mut self, containers: &[Container]) {
        if self.settings.host_address.is_some()
            || !service::needs_host_address(containers, &self.settings)
        {
            return;
        }
        let Some(lookup) = self.lookup.take() else {
            return;
        };
        match lookup(&self.settings.hostname) {
            Ok(a) => {
                log::info!("{a}: registered for ports published on all interfaces");
                self.settings.host_address = Some(a.ip.to_string());
            }
            Err(e) => log::warn!("{e}"),
        }
    }

    /// Reads what etcd holds for this host. Returns the revision when the whole prefix
    /// was read (which also shows other hosts' claims).
    fn read_actual(&mut self, desired: &Desired) -> Result<(Actual, Option<i64>), SyncError> {
        if self.started && self.lease() != 0 {
            match self.store.lease_keys(self.lease())? {
                Some(keys) => {
                    // Our keys (from the lease) plus every directory we want (which may
                    // belong to another host): one request, O(own services).
                    let mut dirs: BTreeSet<String> = desired.keys().cloned().collect();
                    dirs.extend(
                        keys.iter()
                            .filter_map(|k| plan::split_key(&self.opts.prefix, k))
                            .map(|(dir, _)| dir),
                    );
                    let mut prefixes: Vec<String> = dirs
                        .iter()
                        .map(|d| format!("{}/{d}/", self.opts.prefix))
                        .collect();
                    // In the same request: whether this process still holds its identity.
                    prefixes.extend(self.held_instance_key());
                    let kvs = if prefixes.is_empty() {
                        Vec::new()
                    } else {
                        self.store.range_prefixes(&prefixes)?
                    };
                    let kvs = self.check_identity(kvs)?;
                    return Ok((self.group(kvs), None));
                }
                None => {
                    crate::metrics::global().lease_lost(self.lease());
                    log::warn!(
                        "lease {:x} is gone (expired or revoked); granting a new one and \
                         registering again",
                        self.lease()
                    );
                    self.set_lease(0);
                }
            }
        }
        let (actual, rev) = self.read_prefix()?;
        Ok((actual, Some(rev)))
    }

    /// Every service under the prefix (all hosts), and the revision of the read.
    pub(super) fn read_prefix(&mut self) -> Result<(Actual, i64), StoreError> {
        let (kvs, rev) = self.store.range_prefix(&format!("{}/", self.opts.prefix))?;
        Ok((self.group(kvs), rev))
    }

    fn group(&self, kvs: Vec<Kv>) -> Actual {
        plan::group(
            &self.opts.prefix,
            kvs.into_iter().map(|kv| (kv.key, kv.value, kv.lease)),
        )
    }

    /// Registers a service that claims a cluster-wide port, in one transaction with the
    /// check: it only succeeds if nothing under the prefix changed since the read that
    /// found the port free. On a lost race, reads again and re-checks.
    fn apply_claim(
        &mut self,
        op: Op,
        claim: Claim,
        mut revision: i64,
        outcome: &mut Outcome,
    ) -> Result<(), SyncError> {
        for _ in 0..CLAIM_TRIES {
            if self
                .writer()
                .apply_unchanged_since(&op, revision, outcome)?
            {
                return Ok(());
            }
            let (actual, rev) = self.read_prefix()?;
            if let Some(h) = claims::holder(&actual, op.dir(), claim) {
                self.report_one(claims::claim_problem(&op, claim, &h));
                return Ok(());
            }
            revision = rev;
        }
        log::warn!(
            "{}: the prefix kept changing; retrying on the next pass",
            op.dir()
        );
        outcome.failed += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The pass against an in-memory etcd and a scripted Docker: what each pass asks
    //! of them, and what it writes.
    use super::*;
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};

    #[test]
    fn cold_pass_writes_each_service_once_in_few_txns_and_quiet_pass_reads_only_own_keys() {
        let docker = FakeDocker {
            containers: (0..100).map(|n| container(n, &[])).collect(),
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 100);
        // 100 services x 4 keys = 400 puts: 4 txns of at most 128 ops.
        assert_eq!(r.store.calls["txn"], 4, "{:?}", r.store.calls);
        assert_eq!(r.store.kv.len(), 400);
        r.store.calls.clear();
        r.source.lists = 0;
        let out = r.sync().unwrap();
        assert_eq!((out.applied, out.ops.len()), (0, 0));
        assert_eq!(r.source.lists, 1);
        let calls: Vec<_> = r.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            calls,
            [("lease_keys", 1), ("range_prefixes", 1)],
            "a quiet pass: no prefix read, no write"
        );
    }

    #[test]
    fn docker_down_touches_nothing() {
        let docker = FakeDocker {
            containers: vec![container(1, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 0);
        r.sync().unwrap();
        let before = r.store.kv.clone();
        r.source.down = true;
        r.store.calls.clear();
        assert!(matches!(r.sync(), Err(SyncError::Docker(_))));
        assert!(r.store.calls.is_empty(), "{:?}", r.store.calls);
        assert_eq!(r.store.kv, before);
    }

    #[test]
    fn claim_is_checked_against_other_hosts_and_lost_races_re_check() {
        let mut etcd = FakeEtcd::default();
        for (k, v) in [
            ("external_port", "8080"),
            ("node", "other"),
            ("port", "1"),
            ("address", "x"),
            ("mode", "tcp"),
        ] {
            etcd.kv
                .insert(format!("/s/theirs/o:1:80/{k}"), (v.into(), 0, 1));
        }
        etcd.rev = 1;
        let docker = FakeDocker {
            containers: vec![container(
                1,
                &["SERVICE_NAME=mine", "SERVICE_EXTERNAL_PORT=8080"],
            )],
            ..Default::default()
        };
        let mut r = reconciler(docker, etcd, "h", 0);
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 0);
        assert!(r.reported.iter().any(|p| p
            .message
            .contains("external port 8080 is already held by theirs/o:1:80 on host other")));
        r.store.kv.retain(|k, _| !k.starts_with("/s/theirs/"));
        assert_eq!(
            r.sync().unwrap().applied,
            1,
            "registers once the holder is gone"
        );
        // A stale revision (someone wrote meanwhile) makes the guarded write fail and re-check.
        let mut o = Outcome::default();
        let want = r.seen.desired.values().next().unwrap().clone();
        let op = Op::Register {
            dir: "mine/x".into(),
            fields: want.fields,
            container: "c1".into(),
        };
        r.apply_claim(op, want.claim.unwrap(), 0, &mut o).unwrap();
        assert_eq!(
            o.applied, 1,
            "after the re-read shows the port is ours (same name), the write goes through"
        );
    }

    #[test]
    fn another_hosts_services_are_never_changed() {
        let mut etcd = FakeEtcd::default();
        etcd.kv
            .insert("/s/img/other:c9:80/node".into(), ("other".into(), 0, 1));
        etcd.kv
            .insert("/s/img/other:c9:80/port".into(), ("1".into(), 0, 1));
        let mut r = reconciler(FakeDocker::default(), etcd, "h", 0);
        r.sync().unwrap();
        assert_eq!(r.store.kv.len(), 2);
        assert!(!r.store.calls.contains_key("txn"));
    }
}
