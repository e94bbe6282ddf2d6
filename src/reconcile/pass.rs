//! One pass: read Docker, turn its containers into the desired services, read what
//! etcd holds for this host (its index and directories: O(own services)), plan the
//! difference, check port claims against the claimants of each port, write.

use std::collections::BTreeSet;

use super::claims::{self, Group};
use super::index::{self, HostIndex};
use super::{Outcome, Reconciler, SyncError};
use crate::plan::{self, Actual, ClaimOp, Desired, Op};
use crate::service::{self, Claim, Container, Problem};
use crate::source::Source;
use crate::store::{Kv, Store, StoreError, MAX_TXN_OPS};

/// How often a claim is written again after another claimant of the port wrote first.
const CLAIM_TRIES: usize = 5;

/// What a pass read from etcd.
pub(super) struct Read {
    /// This host's directories and the wanted ones (which may be another host's).
    pub actual: Actual,
    pub index: HostIndex,
}

/// A claim found free, with the read it was judged on.
struct Free {
    group: Group,
    revision: i64,
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// One full pass. Docker is read first: if that fails, etcd is not touched.
    pub fn sync(&mut self) -> Result<Outcome, SyncError> {
        let containers = self.read_containers()?;
        self.resolve_host(&containers);
        let (services, mut problems) = service::services(&containers, &self.settings);
        self.reports
            .notes(service::network_notes(&containers, &self.settings));
        let mut desired = plan::desired(&services, &self.opts.hostname);

        let mut read = self.read_actual(&desired)?;
        self.ensure_lease(&read)?;
        self.set_aside_others(&mut desired, &mut read);
        let lease = self.lease_to_write();
        let mut outcome = Outcome::default();
        let host = &self.opts.hostname;
        let (ops, plan_problems) =
            plan::plan(&desired, &read.actual, &read.index.services, host, lease);
        problems.extend(plan_problems);

        let claim_plan = self.plan_claims(&desired, &read, lease);
        let (ops, groups) = claims::split(ops, &desired, claim_plan.take);
        let before = problems.len();
        let (free, withdrawn) = self.check_claims(groups, &desired, &mut problems)?;
        let held = problems.len() - before;
        self.metrics.set_services(registered(
            &desired,
            &read.actual,
            &self.opts.hostname,
            held,
        ));
        self.reports.problems(problems, &self.metrics);

        self.writer().apply(&ops, &mut outcome)?;
        self.writer().apply(&withdrawn, &mut outcome)?;
        self.writer().apply_claims(&claim_plan.ops, &mut outcome)?;
        for f in free {
            self.take_claim(f, &desired, &mut outcome)?;
        }
        let refused = std::mem::take(&mut outcome.problems);
        self.reports.refused(refused, true, &self.metrics);
        self.retire_old_lease()?;
        self.seen.remember(containers, desired);
        // The first pass that got this far granted the lease every key of ours is on;
        // later passes also ask that lease which keys are ours.
        self.started = true;
        Ok(outcome)
    }

    /// The containers, with a fresh inspect of those events named since the last pass:
    /// Docker's list lags behind its events (after `die` it shows the container running
    /// until its cleanup finishes).
    fn read_containers(&mut self) -> Result<Vec<Container>, SyncError> {
        let mut containers = self.source.containers()?;
        for c in containers
            .iter_mut()
            .filter(|c| self.seen.touched.contains(&c.id))
        {
            match self.source.inspect(&c.id)? {
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

    /// Reads what etcd holds for this host: its index, the directories the index (and
    /// the lease) name, and the wanted directories, in one request when nothing is
    /// stale.
    fn read_actual(&mut self, desired: &Desired) -> Result<Read, SyncError> {
        let mut dirs: BTreeSet<String> = desired.keys().cloned().collect();
        let lease_keys = self.lease_keys()?;
        let keys = self.opts.keys();
        // With a lease, its keys show this host's index entries (and directories): the
        // index itself is read only for the values of its claims, if it has any.
        let on_lease = lease_keys
            .as_ref()
            .map(|k| index::index_on_lease(keys, k, self.lease(), desired));
        let mut prefixes = match &on_lease {
            Some(index) if index.claims.is_empty() => vec![],
            Some(_) => vec![keys.own_claims()],
            None => vec![keys.host()],
        };
        if let Some(k) = &lease_keys {
            dirs.extend(k.iter().filter_map(|k| self.dir_of_key(k)));
        }
        prefixes.extend(dirs.iter().map(|d| keys.dir(d)));
        // In the same request: whether this process still holds its identity.
        prefixes.extend(self.held_instance_key());
        let all = if prefixes.is_empty() {
            Vec::new()
        } else {
            self.store.range_prefixes(&prefixes)?
        };
        let all = self.check_identity(all)?;
        let keys = self.opts.keys();
        let (index_kvs, kvs): (Vec<Kv>, Vec<Kv>) =
            all.into_iter().partition(|kv| keys.is_host_key(&kv.key));
        let read = index::host_index(keys, &index_kvs);
        let index = match on_lease {
            Some(mut index) => {
                index.claims.retain(|c, _| read.claims.contains_key(c));
                for (claim, entry) in index.claims.iter_mut() {
                    entry.value.clone_from(&read.claims[claim].value);
                }
                index
            }
            None => read,
        };
        let mut actual = self.group(kvs);
        let missing: Vec<String> = index
            .services
            .keys()
            .filter(|d| !dirs.contains(*d))
            .map(|d| keys.dir(d))
            .collect();
        if !missing.is_empty() {
            let kvs = self.store.range_prefixes(&missing)?;
            actual.extend(self.group(kvs));
        }
        Ok(Read { actual, index })
    }

    /// The keys on our lease, once the first pass has granted it (they show
    /// a directory of ours whose index entry was deleted by hand). None before that and
    /// without a lease; a lease found gone is dropped, so a new one is granted.
    fn lease_keys(&mut self) -> Result<Option<Vec<String>>, StoreError> {
        if !self.started || self.lease() == 0 {
            return Ok(None);
        }
        let keys = self.store.lease_keys(self.lease())?;
        if keys.is_none() {
            self.metrics.lease_lost(self.lease());
            log::warn!(
                "lease {:x} is gone (expired or revoked); granting a new one and registering \
                 again",
                self.lease()
            );
            self.set_lease(0);
            // The instance key was on it: whoever holds the identity now, this process
            // must settle it again before it touches another lease's keys.
            self.identity.held = false;
        }
        Ok(keys)
    }

    /// The service directory a key of ours belongs to: a service key, or an index entry.
    fn dir_of_key(&self, key: &str) -> Option<String> {
        if let Some(dir) = key.strip_prefix(&self.opts.keys().service("")) {
            return Some(dir.to_string()).filter(|d| d.contains('/'));
        }
        crate::keys::split_key(&self.opts.prefix, key).map(|(dir, _)| dir)
    }

    pub(super) fn group(&self, kvs: Vec<Kv>) -> Actual {
        plan::group(
            &self.opts.prefix,
            kvs.into_iter().map(|kv| (kv.key, kv.value, kv.lease)),
        )
    }

    /// Plans this host's claims, and starts or stops the grace period of each claim it
    /// holds for a service that no longer claims the port.
    fn plan_claims(
        &mut self,
        desired: &Desired,
        read: &Read,
        lease: Option<i64>,
    ) -> claims::ClaimPlan {
        let wanted = claims::wanted(desired, &read.actual, &self.opts.hostname);
        let recorded = claims::recorded(&read.actual, desired, &self.opts.hostname);
        let unheld = claims::unheld(&wanted, &recorded, &read.index.claims);
        self.releasing.track(&unheld);
        claims::plan(&wanted, &read.index.claims, &unheld, lease, |c| {
            self.expired(c)
        })
    }

    /// Whether a claim this host holds for a service that no longer claims it has waited
    /// out the grace period.
    fn expired(&self, claim: Claim) -> bool {
        self.releasing.expired(claim, self.opts.claim_grace)
    }

    /// Checks each claim to take against the claimants of its port; a held one becomes
    /// a problem (its services are not written, and those registered before with
    /// other values are withdrawn: returned as deregistrations), a free one is taken
    /// after the other writes.
    fn check_claims(
        &mut self,
        groups: Vec<Group>,
        desired: &Desired,
        problems: &mut Vec<Problem>,
    ) -> Result<(Vec<Free>, Vec<Op>), StoreError> {
        let mut free = Vec::new();
        let mut withdrawn = Vec::new();
        for group in groups {
            let (holder, revision) = self.judge_claim(group.claim, &group.name)?;
            match holder {
                Some(h) => {
                    problems.extend(claims::refused(group.claim, desired, &h));
                    withdrawn.extend(claims::withdrawn(&group.ops));
                }
                None => free.push(Free { group, revision }),
            }
        }
        Ok((free, withdrawn))
    }

    /// Reads a port's claimants and tells who holds it against service `name` (None:
    /// free), with the revision of that read: O(that port), never the prefix.
    fn judge_claim(
        &mut self,
        claim: Claim,
        name: &str,
    ) -> Result<(Option<String>, i64), StoreError> {
        let keys = self.opts.keys();
        let (kvs, revision) = self.store.range_prefix(&keys.claimants(claim))?;
        let claimants = index::claimants_of(keys, claim, &kvs);
        let holder = claims::holder(&claimants, &self.opts.hostname, name, self.expired(claim));
        Ok((holder, revision))
    }

    /// Takes a claim found free, with the services that wait for it, in one transaction
    /// guarded by the read that found it free. On a lost race, reads the port again.
    fn take_claim(
        &mut self,
        mut free: Free,
        desired: &Desired,
        outcome: &mut Outcome,
    ) -> Result<(), SyncError> {
        let Group { claim, name, ops } = free.group;
        // Room for the claim's two keys, whatever else the port's prefix holds; more ops
        // follow once the claim is ours.
        let mut room = MAX_TXN_OPS - 2;
        let fit = ops
            .iter()
            .take_while(|op| {
                let ok = op.size() <= room;
                room = room.saturating_sub(op.size());
                ok
            })
            .count();
        let (inside, after) = ops.split_at(fit);
        let hold = ClaimOp::Hold {
            claim,
            name: name.clone(),
        };
        for _ in 0..CLAIM_TRIES {
            if self
                .writer()
                .apply_claim_guarded(&hold, inside, free.revision, outcome)?
            {
                self.releasing.taken(claim);
                self.writer().apply(after, outcome)?;
                return Ok(());
            }
            let (holder, revision) = self.judge_claim(claim, &name)?;
            if let Some(h) = holder {
                for p in claims::refused(claim, desired, &h) {
                    self.reports.one(p, &self.metrics);
                }
                self.writer().apply(&claims::withdrawn(&ops), outcome)?;
                return Ok(());
            }
            free.revision = revision;
        }
        log::warn!("{claim}: its claimants kept changing; retrying on the next pass");
        outcome.failed += ops.len().max(1);
        Ok(())
    }
}

/// The services of `desired` that end up registered after a pass: all but those whose
/// directory another host owns in `actual` and the `held` ones whose port claim another
/// service holds.
fn registered(desired: &Desired, actual: &Actual, hostname: &str, held: usize) -> usize {
    let elsewhere = desired
        .keys()
        .filter(|dir| {
            actual
                .get(*dir)
                .is_some_and(|s| s.owner() != Some(hostname))
        })
        .count();
    desired.len().saturating_sub(elsewhere + held)
}

#[cfg(test)]
mod tests {
    //! The pass against an in-memory etcd and a scripted Docker: what each pass asks
    //! of them, and what it writes.
    use super::*;
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};

    /// Puts a service directory of `host` (no index entry: as an older registrator, or
    /// a host not yet upgraded, left it).
    fn legacy_dir(etcd: &mut FakeEtcd, dir: &str, host: &str, extra: &[(&str, &str)]) {
        let fields = [
            ("node", host),
            ("port", "1"),
            ("address", "x"),
            ("mode", "tcp"),
        ];
        for (k, v) in fields.iter().chain(extra) {
            etcd.kv
                .insert(format!("/s/{dir}/{k}"), (v.to_string(), 0, etcd.rev + 1));
        }
        etcd.rev += 1;
    }

    /// A fleet of `hosts` other hosts with three services each.
    fn fleet(hosts: usize) -> FakeEtcd {
        let mut etcd = FakeEtcd::default();
        for h in 0..hosts {
            for svc in ["api", "db", "web"] {
                legacy_dir(
                    &mut etcd,
                    &format!("{svc}/o{h}:c:80"),
                    &format!("o{h}"),
                    &[],
                );
            }
        }
        etcd
    }

    fn docker(n: usize) -> FakeDocker {
        FakeDocker {
            containers: (1..=n).map(|i| container(i, &[])).collect(),
            ..Default::default()
        }
    }

    /// Every read of the whole prefix (its first page) since the counters were cleared.
    fn whole_prefix_reads(etcd: &FakeEtcd) -> usize {
        etcd.reads.iter().filter(|p| *p == "[/s/, /s0)").count()
    }

    /// The keys under a prefix.
    fn keys_under(etcd: &FakeEtcd, prefix: &str) -> Vec<String> {
        etcd.kv
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    #[test]
    fn cold_pass_writes_each_service_once_in_few_txns_and_quiet_pass_reads_only_own_keys() {
        let mut r = reconciler(docker(100), FakeEtcd::default(), "h", 30);
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 100);
        // 100 services x (4 keys + index entry) = 500 puts: 4 txns of at most 128 ops.
        assert_eq!(r.store.calls["txn"], 4, "{:?}", r.store.calls);
        assert_eq!(r.store.kv.len(), 400 + 100);
        r.store.calls.clear();
        r.store.reads.clear();
        r.source.lists = 0;
        let out = r.sync().unwrap();
        assert_eq!((out.applied, out.ops.len()), (0, 0));
        assert_eq!(r.source.lists, 1);
        assert!(
            r.store.reads.iter().all(|p| p.starts_with("/s/img/h:c")),
            "the lease shows the index: only the directories are read"
        );
        let calls: Vec<_> = r.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            calls,
            [("lease_keys", 1), ("range_prefixes", 1)],
            "a quiet pass: no prefix read, no write"
        );
    }

    #[test]
    fn docker_down_touches_nothing() {
        let mut r = reconciler(docker(1), FakeEtcd::default(), "h", 0);
        r.sync().unwrap();
        let before = r.store.kv.clone();
        r.source.down = true;
        r.store.calls.clear();
        assert!(matches!(r.sync(), Err(SyncError::Source(_))));
        assert!(r.store.calls.is_empty(), "{:?}", r.store.calls);
        assert_eq!(r.store.kv, before);
    }

    #[test]
    fn another_hosts_services_are_never_changed() {
        let mut etcd = FakeEtcd::default();
        legacy_dir(&mut etcd, "img/other:c9:80", "other", &[]);
        let before = etcd.kv.clone();
        let mut r = reconciler(FakeDocker::default(), etcd, "h", 0);
        r.sync().unwrap();
        assert_eq!(r.store.kv, before);
    }

    #[test]
    fn the_index_stays_exact_when_keys_are_deleted_by_hand() {
        let mut r = reconciler(docker(2), FakeEtcd::default(), "h", 0);
        r.sync().unwrap();
        let entry = "/s.index/hosts/h/services/img/h:c1:80";
        // An index entry deleted by hand is put again.
        r.store.kv.remove(entry);
        assert_eq!(r.sync().unwrap().applied, 1);
        assert!(r.store.kv.contains_key(entry));
        // A service directory deleted by hand is registered again.
        r.store.kv.retain(|k, _| !k.starts_with("/s/img/h:c1:80/"));
        assert_eq!(r.sync().unwrap().applied, 1);
        assert_eq!(keys_under(&r.store, "/s/img/h:c1:80/").len(), 4);
        // A directory deleted by hand whose container is gone too: its entry goes.
        r.store.kv.retain(|k, _| !k.starts_with("/s/img/h:c2:80/"));
        r.source.containers.retain(|c| c.id != "id2");
        assert_eq!(r.sync().unwrap().applied, 1);
        assert_eq!(
            keys_under(&r.store, "/s.index/hosts/h/services/"),
            [entry],
            "only the live service is indexed"
        );
        assert_eq!(r.sync().unwrap().applied, 0, "and it stays so");
    }

    /// Container `n` claiming external port 8080 as service `name`.
    fn claiming(n: usize, name: &str) -> Container {
        container(
            n,
            &[
                &format!("SERVICE_NAME={name}"),
                "SERVICE_EXTERNAL_PORT=8080",
            ],
        )
    }

    fn refusals(r: &Reconciler<FakeDocker, FakeEtcd>) -> Vec<String> {
        r.reports
            .reported
            .iter()
            .map(|p| p.message.clone())
            .collect()
    }

    #[test]
    fn a_claim_reads_only_its_port_and_refuses_another_name() {
        let mut etcd = fleet(20);
        etcd.kv.insert(
            "/s.index/claims/external_port/8080/other".into(),
            ("theirs".into(), 0, 1),
        );
        let mut r = reconciler(docker(1), etcd, "h", 0);
        r.sync().unwrap();
        r.store.reads.clear();
        r.source.containers.push(claiming(2, "mine"));
        assert_eq!(r.sync().unwrap().applied, 0);
        assert_eq!(
            refusals(&r),
            [
                "SERVICE_EXTERNAL_PORT=8080: external port 8080 is already held by service \
              theirs on host other; mine/h:c2:80 not registered (retried every sync)"
            ]
        );
        assert_eq!(whole_prefix_reads(&r.store), 0, "{:?}", r.store.reads);
        assert!(r
            .store
            .reads
            .contains(&"/s.index/claims/external_port/8080/".to_string()));
        // The holder goes: the claim is taken with the service, in one transaction.
        r.store
            .kv
            .remove("/s.index/claims/external_port/8080/other");
        r.store.calls.clear();
        assert_eq!(r.sync().unwrap().applied, 1);
        assert_eq!(r.store.calls["txn"], 1);
        assert_eq!(
            r.store.kv["/s.index/claims/external_port/8080/h"].0, "mine",
            "the claim key names the service"
        );
        assert!(r
            .store
            .kv
            .contains_key("/s.index/hosts/h/claims/external_port/8080"));
        // A replica of the same name on another host shares it.
        let mut other = reconciler(
            FakeDocker {
                containers: vec![claiming(3, "mine")],
                ..Default::default()
            },
            std::mem::take(&mut r.store),
            "h2",
            0,
        );
        assert_eq!(other.sync().unwrap().applied, 1);
    }

    #[test]
    fn a_claim_key_deleted_by_hand_is_taken_again() {
        for ttl in [30, 0] {
            let mut r = reconciler(docker(0), FakeEtcd::default(), "h", ttl);
            r.source.containers.push(claiming(1, "mine"));
            r.sync().unwrap();
            let claim_key = "/s.index/claims/external_port/8080/h";
            r.store.kv.remove(claim_key);
            r.store
                .kv
                .remove("/s.index/hosts/h/claims/external_port/8080");
            r.sync().unwrap();
            assert!(r.store.kv.contains_key(claim_key), "ttl {ttl}");
            assert!(r
                .store
                .kv
                .contains_key("/s.index/hosts/h/claims/external_port/8080"));
        }
    }

    #[test]
    fn a_claim_outlives_its_container_for_the_grace_period_only() {
        let mut r = reconciler(docker(0), FakeEtcd::default(), "h", 30);
        r.opts.claim_grace = std::time::Duration::from_millis(200);
        r.source.containers.push(claiming(1, "mine"));
        assert_eq!(r.sync().unwrap().applied, 1);
        // The container stops (docker restart): the service goes, the claim stays.
        r.source.containers.clear();
        assert_eq!(r.sync().unwrap().applied, 1);
        let claim_key = "/s.index/claims/external_port/8080/h";
        assert!(r.store.kv.contains_key(claim_key));
        // Another host's other service cannot take the port meanwhile.
        let etcd = std::mem::take(&mut r.store);
        let mut b = reconciler(
            FakeDocker {
                containers: vec![claiming(2, "theirs")],
                ..Default::default()
            },
            etcd,
            "b",
            30,
        );
        assert_eq!(b.sync().unwrap().applied, 0);
        assert!(refusals(&b)[0].contains("held by service mine on host h"));
        // The container is back: registered at once, without a check of the port.
        r.store = std::mem::take(&mut b.store);
        r.store.reads.clear();
        r.source.containers.push(claiming(1, "mine"));
        assert_eq!(r.sync().unwrap().applied, 1);
        assert!(!r
            .store
            .reads
            .iter()
            .any(|p| p.starts_with("/s.index/claims/")));
        // It stops for good: after the grace period the claim is released.
        r.source.containers.clear();
        r.sync().unwrap();
        assert!(r.store.kv.contains_key(claim_key), "not yet");
        std::thread::sleep(std::time::Duration::from_millis(250));
        r.sync().unwrap();
        assert!(!r.store.kv.contains_key(claim_key), "released");
        assert!(keys_under(&r.store, "/s.index/hosts/h/claims/").is_empty());
        b.store = std::mem::take(&mut r.store);
        assert_eq!(b.sync().unwrap().applied, 1, "now the other host gets it");
    }

    #[test]
    fn a_lost_race_for_a_free_port_reads_it_again_and_gives_up() {
        let mut a = reconciler(docker(0), FakeEtcd::default(), "a", 0);
        a.sync().unwrap();
        a.source.containers.push(claiming(1, "alpha"));
        // Host a judged the port free at this revision...
        let desired = plan::desired(&service::services(&a.source.containers, &a.settings).0, "a");
        let rev = a.store.rev;
        // ...then host b took it.
        a.store.kv.insert(
            "/s.index/claims/external_port/8080/b".into(),
            ("beta".into(), 0, rev + 1),
        );
        a.store.rev += 1;
        let (dir, want) = desired.iter().next().unwrap();
        let free = Free {
            group: Group {
                claim: Claim::External(8080),
                name: "alpha".into(),
                ops: vec![plan::Op::Register {
                    dir: dir.clone(),
                    fields: want.fields.clone(),
                    container: want.container.clone(),
                }],
            },
            revision: rev,
        };
        let mut out = Outcome::default();
        a.take_claim(free, &desired, &mut out).unwrap();
        assert_eq!(out.applied, 0);
        assert!(refusals(&a)[0].contains("held by service beta on host b"));
        assert!(keys_under(&a.store, "/s/alpha/").is_empty());
    }

    #[test]
    fn a_claim_prefix_full_of_other_keys_costs_one_compare() {
        let mut etcd = FakeEtcd::default();
        for h in 0..300 {
            // Replicas of hosts long gone (--ttl 0), and keys of no known shape.
            let port = "/s.index/claims/external_port/8080";
            etcd.kv
                .insert(format!("{port}/gone{h}"), ("mine".into(), 0, 1));
            etcd.kv.insert(
                format!("{port}/old{h}/theirs/old{h}:1:80"),
                ("legacy".into(), 0, 1),
            );
        }
        etcd.rev = 1;
        let d = FakeDocker {
            containers: vec![claiming(1, "mine")],
            ..Default::default()
        };
        let mut r = reconciler(d, etcd, "h", 0);
        assert_eq!(r.sync().unwrap().applied, 1, "{:?}", refusals(&r));
        assert!(r
            .store
            .kv
            .contains_key("/s.index/claims/external_port/8080/h"));
    }

    #[test]
    fn a_first_start_reads_only_this_hosts_keys() {
        let mut d = docker(2);
        d.containers.push(claiming(3, "mine"));
        let mut r = reconciler(d, fleet(50), "h", 0);
        assert_eq!(r.sync().unwrap().applied, 3);
        assert!(
            r.store
                .reads
                .iter()
                .all(|p| p.starts_with("/s.index/hosts/h/")
                    || p.contains("/h:c")
                    || p.starts_with("/s.index/claims/external_port/8080/")),
            "only this host's index, directories and claimed ports: {:?}",
            r.store.reads
        );
    }

    #[test]
    fn a_refused_claim_withdraws_the_old_registration_of_its_service() {
        let mut a = reconciler(docker(0), FakeEtcd::default(), "a", 0);
        let mut c = claiming(1, "alpha");
        a.source.containers.push(c.clone());
        assert_eq!(a.sync().unwrap().applied, 1);
        // Host b holds 9090; the container is recreated claiming it.
        a.store.kv.insert(
            "/s.index/claims/external_port/9090/b".into(),
            ("beta".into(), 0, a.store.rev + 1),
        );
        a.store.rev += 1;
        for e in c.env.iter_mut() {
            if e.starts_with("SERVICE_EXTERNAL_PORT=") {
                *e = "SERVICE_EXTERNAL_PORT=9090".into();
            }
        }
        a.source.containers = vec![c];
        a.sync().unwrap();
        assert!(refusals(&a)[0].contains("held by service beta on host b"));
        assert!(
            keys_under(&a.store, "/s/alpha/").is_empty(),
            "the old registration is gone: {:?}",
            keys_under(&a.store, "/s/")
        );
    }

    /// The value of a series in the exposition text.
    fn series(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_string))
    }

    #[test]
    fn what_a_pass_records() {
        use crate::metrics::Metrics;
        use std::sync::Arc;
        let m = Arc::new(Metrics::new());
        let mut etcd = FakeEtcd::default();
        etcd.kv.insert(
            "/s.index/claims/external_port/8080/b".into(),
            ("beta".into(), 0, 1),
        );
        etcd.rev = 1;
        let mut d = docker(2);
        d.containers.push(claiming(3, "alpha"));
        let mut r = reconciler(d, etcd, "h", 30).with_metrics(Arc::clone(&m));
        r.sync().unwrap();
        let t = m.render();
        for (name, want) in [
            ("registrator_registrations_total", "2"),
            ("registrator_services", "2"),
            ("registrator_lease_grants_total", "1"),
            (r#"registrator_refused_services{reason="port_taken"}"#, "1"),
            (
                r#"registrator_refused_services{reason="invalid_config"}"#,
                "0",
            ),
        ] {
            assert_eq!(series(&t, name).as_deref(), Some(want), "{name}\n{t}");
        }
        // The holder goes: the claim is taken, the refusal cleared.
        r.store.kv.remove("/s.index/claims/external_port/8080/b");
        r.sync().unwrap();
        let t = m.render();
        for (name, want) in [
            ("registrator_registrations_total", "3"),
            ("registrator_services", "3"),
            (r#"registrator_refused_services{reason="port_taken"}"#, "0"),
        ] {
            assert_eq!(series(&t, name).as_deref(), Some(want), "{name}");
        }
    }
}
