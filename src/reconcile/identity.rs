//! This host's identity: one live process registers under a `--hostname` and prefix,
//! named by its instance key (`<idx>/instance/<host>`, see `keys.rs`) on its own lease.
//!
//! The rule, which never rests on how long something took (a stalled process is not a
//! dead one): register what this host's Docker shows at once, on a lease of our own;
//! touch another process's keys only once its lease has expired, or its holder released
//! it on exit; a lease that someone still refreshes is a twin's.
//!
//! So a new process reads the instance key. Free, released or its own: it takes it (a
//! guarded write), and with it every key of the host. Otherwise, until every other lease
//! on this host's keys is gone, it leaves the directories on them alone (set aside),
//! registers the rest (events meanwhile only register), and reads those leases again
//! between passes, about once a second: all expired -> it takes the identity; one
//! refreshed -> a twin holds it: this process revokes its own lease (one call removes
//! what it wrote meanwhile) and stops.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::pass::Read;
use super::{Reconciler, SyncError, Twin};
use crate::plan::Desired;
use crate::source::Source;
use crate::store::{Compare, Kv, LeaseTtl, Request, Store, StoreError};

/// What a process leaves in its instance key when it exits and keeps its services
/// registered: its successor takes over at once.
const RELEASED: &str = "released";

/// How often a process that waits for another's lease to expire reads it again...
pub(super) const SETTLE_STEP: Duration = Duration::from_secs(1);
/// ...and how often once it is due (etcd's whole seconds leave a second's doubt).
const DUE_STEP: Duration = Duration::from_millis(200);

/// This process's instance and whether it holds the host's identity.
#[derive(Debug)]
pub(super) struct Identity {
    pub id: String,
    pub held: bool,
    /// The etcd user may not use the instance key: the leases alone tell.
    pub keyless: bool,
    /// Live leases of other processes on this host's keys, each with its first reading.
    watched: BTreeMap<i64, Reading>,
}

/// A lease's TTL as read, and when the answer came (on the reconciler's clock).
#[derive(Debug, Clone, Copy)]
struct Reading {
    ttl: LeaseTtl,
    at: Duration,
}

impl Identity {
    /// Whether this process waits for another's lease before it holds the identity
    /// (`exclusive`: it seeks one at all).
    pub(super) fn waiting(&self, exclusive: bool) -> bool {
        exclusive && !self.held
    }

    pub(super) fn new() -> Identity {
        Identity {
            id: instance_id(),
            held: false,
            keyless: false,
            watched: BTreeMap::new(),
        }
    }
}

/// A value for this process's instance key: unique per process and start.
fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    format!("pid {} {:016x}", std::process::id(), h.finish())
}

/// Whether a lease read as `first` was refreshed by someone, given that it has `now`
/// seconds left at least `elapsed` later. Left alone, it counts down: etcd rounds down,
/// so it then has at most `first - floor(elapsed)` s left, and 0 while etcd is still
/// revoking it after it ran out (which takes etcd a moment). `elapsed` must not overstate
/// the time between the two readings (measure from the first answer to the second
/// request), or a lease no one refreshes could look refreshed.
fn refreshed(first: LeaseTtl, elapsed: Duration, now: LeaseTtl) -> bool {
    now.remaining > (first.remaining - elapsed.as_secs() as i64).max(0)
}

/// Removes from a pass what sits on `leases` (another process's): its directories,
/// index entries and claims, and the desired services they would touch, so the pass
/// neither moves, changes nor deletes any of it.
fn set_aside(desired: &mut Desired, read: &mut Read, leases: &BTreeSet<i64>) {
    let foreign = |l: &i64| leases.contains(l);
    let dirs: BTreeSet<String> = read
        .actual
        .iter()
        .filter(|(_, s)| s.leases.values().any(foreign))
        .map(|(d, _)| d.clone())
        .chain(
            read.index
                .services
                .iter()
                .filter(|(_, e)| foreign(&e.lease))
                .map(|(d, _)| d.clone()),
        )
        .collect();
    let claims: BTreeSet<_> = read
        .index
        .claims
        .iter()
        .filter(|(_, e)| foreign(&e.lease))
        .map(|(c, _)| *c)
        .collect();
    read.actual.retain(|d, _| !dirs.contains(d));
    read.index.services.retain(|d, _| !dirs.contains(d));
    read.index.claims.retain(|c, _| !claims.contains(c));
    desired.retain(|d, w| !dirs.contains(d) && !w.claim.is_some_and(|c| claims.contains(&c)));
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// Takes this host's identity if no other process may hold it (see the module
    /// doc); else watches the other leases, and refuses once one is seen refreshed.
    pub(super) fn settle_identity(&mut self, read: &Read) -> Result<(), SyncError> {
        let key = self.opts.keys().instance();
        let holder = self.read_instance(&key)?;
        let value = holder.as_ref().map(|kv| kv.value.clone());
        if value.as_deref() == Some(self.identity.id.as_str()) {
            // Our own claim, whose answer was lost.
            self.identity.held = true;
            return Ok(());
        }
        let released = holder
            .as_ref()
            .filter(|kv| kv.value == RELEASED)
            .map(|kv| kv.lease);
        let mut others: BTreeSet<i64> = read
            .actual
            .values()
            .filter(|s| s.owner() == Some(self.opts.hostname.as_str()))
            .flat_map(|s| s.leases.values().copied())
            .chain(read.index.services.values().map(|e| e.lease))
            .chain(read.index.claims.values().map(|e| e.lease))
            .chain(holder.as_ref().map(|kv| kv.lease))
            .collect();
        others.retain(|&l| l != 0 && l != self.lease() && Some(l) != released);
        self.watch(&others, value.as_deref().unwrap_or("none"))?;
        if !self.identity.watched.is_empty() {
            return Ok(());
        }
        self.take(&key, value, released)
    }

    /// Writes our instance into the instance key, guarded by what was read there. When
    /// the guard fails, reads it again: gone (its lease just ended) or released, it tries
    /// once more; held by another instance, that one won a race of two starts: refuse.
    fn take(
        &mut self,
        key: &str,
        mut seen: Option<String>,
        mut released: Option<i64>,
    ) -> Result<(), SyncError> {
        for _ in 0..3 {
            if self.claim(key, seen.as_deref())? {
                self.identity.held = true;
                self.retiring = released.filter(|&l| l != 0 && l != self.lease());
                return Ok(());
            }
            let now = self.read_instance(key)?;
            match now.as_ref().map(|kv| kv.value.as_str()) {
                None => released = None,
                Some(RELEASED) => released = now.as_ref().map(|kv| kv.lease),
                Some(v) => {
                    let evidence = format!("another process ({v}) just took {key}");
                    return Err(self.refuse(evidence));
                }
            }
            seen = now.map(|kv| kv.value);
        }
        Err(self.refuse(format!("{key} keeps changing hands")))
    }

    /// Reads each of `leases` and of those already watched (without refreshing them):
    /// forgets a lease only once it is read as gone (a pass need not see its keys again),
    /// remembers the first reading of each new one, and refuses if one was refreshed
    /// since. A reading from another raft term starts over: a new leader extends every
    /// lease, which is no one's keepalive.
    fn watch(&mut self, leases: &BTreeSet<i64>, holder: &str) -> Result<(), SyncError> {
        let all: BTreeSet<i64> = leases
            .iter()
            .chain(self.identity.watched.keys())
            .copied()
            .collect();
        for l in all {
            let sent = (self.clock)();
            let Some(ttl) = self.store.time_to_live(l)? else {
                self.identity.watched.remove(&l);
                continue;
            };
            match self.identity.watched.get(&l) {
                Some(first) if first.ttl.term != ttl.term => {
                    let at = (self.clock)();
                    self.identity.watched.insert(l, Reading { ttl, at });
                }
                Some(first) if refreshed(first.ttl, sent.saturating_sub(first.at), ttl) => {
                    let (was, after) = (first.ttl.remaining, sent.saturating_sub(first.at));
                    return Err(self.refuse(format!(
                        "lease {l:x} on its keys is being kept alive: {was} s left, {} s \
                         left {:.1} s later (instance key: {holder})",
                        ttl.remaining,
                        after.as_secs_f64()
                    )));
                }
                Some(_) => {}
                None => {
                    log::info!(
                        "host {}: lease {l:x} of another registrator of this host (instance \
                         key: {holder}) is alive: its services are left alone until it \
                         expires (in at most {} s) while new containers are registered; \
                         if it is refreshed meanwhile, that registrator is alive and this \
                         one stops",
                        self.opts.hostname,
                        ttl.remaining + 1
                    );
                    let at = (self.clock)();
                    self.identity.watched.insert(l, Reading { ttl, at });
                }
            }
        }
        Ok(())
    }

    /// While another process's lease is still being watched: how soon the next pass
    /// should look again (None: the identity is settled, or not sought). Every second,
    /// and more often once a lease is due to expire, so that the services it takes
    /// with it are registered again within a fraction of a second.
    pub fn settling(&self) -> Option<Duration> {
        if !self.exclusive() || self.identity.held || self.lease() == 0 {
            return None;
        }
        let now = (self.clock)();
        let due = self
            .identity
            .watched
            .values()
            .map(|r| r.at + Duration::from_secs(r.ttl.remaining as u64))
            .min();
        Some(match due {
            Some(due) if due > now => (due - now).clamp(DUE_STEP, SETTLE_STEP),
            Some(_) => DUE_STEP,
            None => SETTLE_STEP,
        })
    }

    /// Between passes, while the identity is not settled: reads the watched leases
    /// only (a request each); true when one is gone or was refreshed, so that a pass
    /// settles it now.
    pub fn settle_due(&mut self) -> Result<bool, StoreError> {
        let watched: Vec<(i64, Reading)> = self
            .identity
            .watched
            .iter()
            .map(|(l, r)| (*l, *r))
            .collect();
        for (l, first) in watched {
            let sent = (self.clock)();
            match self.store.time_to_live(l)? {
                None => return Ok(true),
                // Another term: the pass reads it again from scratch.
                Some(ttl) if ttl.term != first.ttl.term => return Ok(true),
                Some(ttl) if refreshed(first.ttl, sent.saturating_sub(first.at), ttl) => {
                    return Ok(true)
                }
                Some(_) => {}
            }
        }
        // Nothing watched (the pass that found none failed after): its retry settles it.
        Ok(false)
    }

    /// Leaves alone what another live process may own (see [`set_aside`]), until this
    /// process holds the identity.
    pub(super) fn set_aside_others(&self, desired: &mut Desired, read: &mut Read) {
        if self.exclusive() && !self.identity.held {
            let leases = self.identity.watched.keys().copied().collect();
            set_aside(desired, read, &leases);
        }
    }

    /// A twin holds the identity: revokes our own lease (what this process wrote
    /// meanwhile goes with it; nothing of the twin's is on it) and says why.
    fn refuse(&mut self, evidence: String) -> SyncError {
        let lease = self.lease();
        if lease != 0 {
            if let Err(e) = self.writer().revoke(lease) {
                log::warn!("could not revoke lease {lease:x}: {e}; its keys expire with it");
            }
            self.set_lease(0);
        }
        self.identity.held = false;
        SyncError::Twin(Twin {
            hostname: self.opts.hostname.clone(),
            prefix: self.opts.prefix.clone(),
            evidence,
        })
    }

    /// Writes our instance into the instance key, on our lease, if it still holds
    /// `seen`; false when someone changed it meanwhile. Without permission on the key,
    /// carries on keyless (true).
    fn claim(&mut self, key: &str, seen: Option<&str>) -> Result<bool, StoreError> {
        if self.identity.keyless {
            return Ok(true);
        }
        let guard = match seen {
            None => Compare::Missing(key.to_string()),
            Some(v) => Compare::ValueEquals(key.to_string(), v.to_string()),
        };
        let put = Request::Put {
            key: key.to_string(),
            value: self.identity.id.clone(),
            lease: self.lease(),
        };
        match self.writer().txn(&[guard], &[put]) {
            Ok(false) => return Ok(false),
            Ok(true) => log::debug!("holding {key} = {}", self.identity.id),
            Err(e) if e.is_denied() => self.go_keyless(key, &e),
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// The etcd user may not use the instance key (a role that covers only the prefix):
    /// carry on without it. A twin is still found by watching the leases on this host's
    /// keys; what is lost is a successor's quick takeover after a graceful exit, and the
    /// tie between two processes started at once.
    fn go_keyless(&mut self, key: &str, e: &StoreError) {
        if !self.identity.keyless {
            log::warn!(
                "cannot use {key} ({e}): another registrator with this host name is told \
                 from a crashed predecessor by watching the leases only; grant the etcd user \
                 readwrite on {}/ as well",
                self.opts.index_prefix
            );
        }
        self.identity.keyless = true;
    }

    /// The instance key and its value and lease, if it exists (None when keyless).
    fn read_instance(&mut self, key: &str) -> Result<Option<Kv>, StoreError> {
        if self.identity.keyless {
            return Ok(None);
        }
        // A plain range, not a txn: a pass that cannot write fails at its first write.
        match self.store.range_prefix(key) {
            Ok((kvs, _)) => Ok(kvs.into_iter().find(|kv| kv.key == key)),
            Err(e) if e.is_denied() => {
                self.go_keyless(key, &e);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The instance key to read along with this host's services, while it is held.
    pub(super) fn held_instance_key(&self) -> Option<String> {
        (self.exclusive() && self.identity.held && !self.identity.keyless)
            .then(|| self.opts.keys().instance())
    }

    /// Checks what a read found of the instance key (see
    /// [`Reconciler::held_instance_key`]) and returns the other keys. Another instance
    /// in it took the identity over (our lease had expired): refuse. Gone (with a lease
    /// that expired meanwhile, or deleted by hand): settle it again.
    pub(super) fn check_identity(&mut self, kvs: Vec<Kv>) -> Result<Vec<Kv>, SyncError> {
        let Some(key) = self.held_instance_key() else {
            return Ok(kvs);
        };
        let (ours, rest): (Vec<Kv>, Vec<Kv>) = kvs.into_iter().partition(|kv| kv.key == key);
        // Read as a prefix, the key also shows the instance keys of hosts whose names
        // start with ours.
        let instances = self.opts.keys().instances();
        let rest = rest
            .into_iter()
            .filter(|kv| !kv.key.starts_with(&instances));
        match ours.first() {
            Some(kv) if kv.value == self.identity.id => {}
            Some(kv) => {
                let value = kv.value.clone();
                return Err(self.refuse(format!("{key} now names {value:?}, not this process")));
            }
            None => self.identity.held = false,
        }
        Ok(rest.collect())
    }

    /// On an exit that leaves the services registered: marks the identity released,
    /// so a successor takes over at once instead of waiting for the lease.
    pub fn release(&mut self) -> Result<(), SyncError> {
        if !self.identity.held || self.identity.keyless || self.lease() == 0 {
            return Ok(());
        }
        let key = self.opts.keys().instance();
        let guard = Compare::ValueEquals(key.clone(), self.identity.id.clone());
        let put = Request::Put {
            key,
            value: RELEASED.into(),
            lease: self.lease(),
        };
        self.writer().txn(&[guard], &[put])?;
        self.identity.held = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fakes::{container, pause, reconciler, FakeDocker, FakeEtcd};
    use crate::source::Change;

    const KEY: &str = "/s.index/instance/h";

    fn ttl(remaining: i64) -> LeaseTtl {
        LeaseTtl {
            remaining,
            granted: 30,
            term: 1,
        }
    }

    #[test]
    fn refreshed_table() {
        let s = Duration::from_secs_f64;
        for (name, first, elapsed, now, want) in [
            ("no time, same reading", 29, s(0.0), 29, false),
            ("counted down", 29, s(10.2), 19, false),
            ("counted down, read early", 29, s(10.9), 18, false),
            ("refreshed to the full TTL", 20, s(0.5), 29, true),
            ("one second more than left alone", 25, s(3.1), 23, true),
            (
                "last second, then gone is not refreshed",
                1,
                s(0.9),
                0,
                false,
            ),
        ] {
            assert_eq!(refreshed(ttl(first), elapsed, ttl(now)), want, "{name}");
        }
    }

    /// A reconciler that holds its host's identity, as the loop does.
    fn exclusive(docker: FakeDocker, etcd: FakeEtcd) -> Reconciler<FakeDocker, FakeEtcd> {
        let mut r = reconciler(docker, etcd, "h", 30);
        r.opts.exclusive = true;
        r
    }

    fn containers(ids: &[usize]) -> FakeDocker {
        FakeDocker {
            containers: ids.iter().map(|&n| container(n, &[])).collect(),
            ..Default::default()
        }
    }

    /// The first process of host h ran one pass with containers 1 and 2: its store
    /// (calls cleared), its instance and its lease.
    fn predecessor() -> (FakeEtcd, String, i64) {
        let mut first = exclusive(containers(&[1, 2]), FakeEtcd::default());
        first.sync().unwrap();
        let (id, lease) = (first.identity.id.clone(), first.lease());
        assert_eq!(
            (&first.store.kv[KEY].0, first.store.kv[KEY].1),
            (&id, lease)
        );
        let mut etcd = std::mem::take(&mut first.store);
        etcd.calls.clear();
        (etcd, id, lease)
    }

    /// The service keys and their leases.
    fn services(etcd: &FakeEtcd) -> Vec<(String, i64)> {
        etcd.kv
            .iter()
            .filter(|(k, _)| k.starts_with("/s/"))
            .map(|(k, (_, l, _))| (k.clone(), *l))
            .collect()
    }

    #[test]
    fn a_successor_after_a_graceful_exit_takes_over_at_once() {
        let mut first = exclusive(containers(&[1, 2]), FakeEtcd::default());
        first.sync().unwrap();
        first.release().unwrap();
        let old = first.lease();
        let etcd = std::mem::take(&mut first.store);
        assert_eq!(etcd.kv[KEY].0, RELEASED);
        let mut second = exclusive(containers(&[1, 2]), etcd);
        let out = second.sync().unwrap();
        assert!(second.identity.held);
        assert_eq!(second.store.kv[KEY].0, second.identity.id);
        assert!(!second.store.calls.contains_key("time_to_live"), "no wait");
        assert_eq!(
            out.applied, 2,
            "both moved onto the new lease (puts, no delete)"
        );
        assert!(services(&second.store)
            .iter()
            .all(|(_, l)| *l == second.lease()));
        assert_eq!(
            second.store.granted(old),
            None,
            "the released lease is revoked"
        );
        assert_eq!(second.settling(), None);
    }

    #[test]
    fn after_kill_9_new_containers_register_at_once_and_the_rest_once_the_lease_expired() {
        let (etcd, _, old) = predecessor();
        let before = services(&etcd);
        let mut second = exclusive(containers(&[1, 2, 3]), etcd);
        assert_eq!(second.sync().unwrap().applied, 1, "container 3 at once");
        assert!(!second.identity.held);
        assert_eq!(second.settling(), Some(SETTLE_STEP));
        let ours = second.lease();
        assert_ne!(ours, old);
        let now = services(&second.store);
        assert!(
            before.iter().all(|k| now.contains(k)),
            "the predecessor's untouched"
        );
        assert!(now
            .iter()
            .any(|(k, l)| k.starts_with("/s/img/h:c3:") && *l == ours));
        // Once a second, as the loop does, until the old lease expires (our own is kept
        // alive by the keepalive thread).
        for _ in 0..29 {
            pause(SETTLE_STEP);
            second.store.keepalive(ours).unwrap();
            assert_eq!(second.sync().unwrap().applied, 0);
            assert!(!second.identity.held);
        }
        pause(SETTLE_STEP);
        second.store.keepalive(ours).unwrap();
        let out = second.sync().unwrap();
        assert!(second.identity.held);
        assert_eq!(out.applied, 2, "containers 1 and 2 again, on our lease");
        assert_eq!(second.store.kv[KEY].0, second.identity.id);
        assert_eq!(second.store.kv[KEY].1, ours);
        assert!(services(&second.store).iter().all(|(_, l)| *l == ours));
        assert_eq!(services(&second.store).len(), 12);
    }

    #[test]
    fn a_twin_keeping_its_lease_alive_is_refused_and_what_the_newcomer_wrote_is_removed() {
        let (mut etcd, id, lease) = predecessor();
        etcd.kept_by_twin.insert(lease);
        let kv = etcd.kv.clone();
        // The twin sees another container too.
        let mut twin = exclusive(containers(&[1, 3]), etcd);
        assert_eq!(twin.sync().unwrap().applied, 1);
        let mut err = None;
        for _ in 0..12 {
            pause(SETTLE_STEP);
            if let Err(e) = twin.sync() {
                err = Some(e);
                break;
            }
        }
        let text = err.expect("refused within TTL/3 + 2 s").to_string();
        assert!(
            text.starts_with("another registrator is running as host h under /s"),
            "{text}"
        );
        assert!(text.contains(&format!("lease {lease:x}")), "{text}");
        assert_eq!(twin.lease(), 0);
        assert_eq!(
            twin.store.kv, kv,
            "the live twin's keys as they were; ours gone"
        );
        assert_eq!(twin.store.kv[KEY].0, id);
    }

    #[test]
    fn between_passes_one_read_per_watched_lease_tells_when_to_pass() {
        let (etcd, _, lease) = predecessor();
        let mut second = exclusive(containers(&[1, 2]), etcd);
        second.sync().unwrap();
        second.store.calls.clear();
        pause(SETTLE_STEP);
        assert!(!second.settle_due().unwrap(), "still counting down");
        let calls: Vec<_> = second.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(calls, [("time_to_live", 1)], "no pass");
        second.store.keepalive(lease).unwrap();
        pause(SETTLE_STEP);
        assert!(second.settle_due().unwrap(), "refreshed: a pass refuses");
        assert!(matches!(second.sync(), Err(SyncError::Twin(_))));
    }

    #[test]
    fn a_stalled_process_is_not_a_dead_one() {
        let (etcd, _, lease) = predecessor();
        let kv = etcd.kv.clone();
        let mut newcomer = exclusive(containers(&[1, 2]), etcd);
        newcomer.sync().unwrap();
        // The first one is paused for 14 s (a VM stopped): no keepalive meanwhile.
        for _ in 0..14 {
            pause(SETTLE_STEP);
            newcomer.sync().unwrap();
            assert!(!newcomer.identity.held);
        }
        // It resumes: its keepalive refreshes the lease.
        newcomer.store.keepalive(lease).unwrap();
        pause(SETTLE_STEP);
        assert!(matches!(newcomer.sync(), Err(SyncError::Twin(_))));
        assert_eq!(
            newcomer.store.kv, kv,
            "nothing of the first one's is touched"
        );
    }

    #[test]
    fn a_process_whose_identity_was_taken_over_stops() {
        let mut r = exclusive(containers(&[1, 2]), FakeEtcd::default());
        r.sync().unwrap();
        r.sync().unwrap();
        let lease = r.lease();
        r.store.kv.insert(KEY.into(), ("pid 9 abc".into(), 77, 99));
        let err = r.sync().unwrap_err().to_string();
        assert!(err.contains("now names \"pid 9 abc\""), "{err}");
        assert_eq!(r.store.granted(lease), None, "its own lease revoked");
    }

    #[test]
    fn a_lost_lease_is_replaced_and_the_identity_taken_again() {
        let mut r = exclusive(containers(&[1, 2]), FakeEtcd::default());
        r.sync().unwrap();
        let old = r.lease();
        r.store.expire(old);
        assert!(r.store.kv.is_empty());
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 2);
        assert_ne!(r.lease(), old);
        assert!(r.identity.held);
        assert_eq!(r.store.kv[KEY].1, r.lease());
    }

    #[test]
    fn without_permission_on_the_instance_key_the_leases_alone_tell() {
        let denied = || FakeEtcd {
            denied: Some("/s.index/instance/".into()),
            ..Default::default()
        };
        let mut first = exclusive(containers(&[1, 2]), denied());
        assert_eq!(first.sync().unwrap().applied, 2, "registers as before");
        assert!(first.identity.keyless && first.identity.held);
        first.store.calls.clear();
        first.sync().unwrap();
        let calls: Vec<_> = first.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(calls, [("lease_keys", 1), ("range_prefixes", 1)]);
        let lease = first.lease();
        let mut etcd = std::mem::take(&mut first.store);
        // A twin is still refused...
        etcd.kept_by_twin.insert(lease);
        let mut twin = exclusive(containers(&[1, 2]), etcd);
        twin.sync().unwrap();
        pause(Duration::from_secs(11));
        assert!(matches!(twin.sync(), Err(SyncError::Twin(_))));
        // ...and a successor takes over once the lease expired.
        let mut etcd = std::mem::take(&mut twin.store);
        etcd.kept_by_twin.clear();
        let mut second = exclusive(containers(&[1, 2]), etcd);
        second.sync().unwrap();
        assert!(!second.identity.held);
        pause(Duration::from_secs(31));
        assert_eq!(second.sync().unwrap().applied, 2);
        assert!(second.identity.held);
    }

    #[test]
    fn while_waiting_events_register_only_and_never_delete_the_others_keys() {
        let (etcd, _, lease) = predecessor();
        let kv = etcd.kv.clone();
        let mut second = exclusive(containers(&[1, 2]), etcd);
        second.sync().unwrap();
        assert!(!second.identity.held);
        // One of the first one's containers crash-loops: start, then die, before a pass.
        second.on_event(Change::Up, "id1").unwrap();
        second.source.dead.insert("id1".into());
        second.on_event(Change::Down, "id1").unwrap();
        second.store.keepalive(lease).unwrap();
        let theirs: Vec<_> = kv.keys().filter(|k| k.starts_with("/s/")).collect();
        for k in theirs {
            assert!(second.store.kv.contains_key(k), "{k} deleted");
        }
    }

    #[test]
    fn a_keyless_twin_with_other_containers_is_still_watched_after_the_first_pass() {
        let denied = || FakeEtcd {
            denied: Some("/s.index/instance/".into()),
            ..Default::default()
        };
        let mut first = exclusive(containers(&[1]), denied());
        first.sync().unwrap();
        let mut etcd = std::mem::take(&mut first.store);
        etcd.kept_by_twin.insert(first.lease());
        let mut twin = exclusive(containers(&[2]), etcd);
        let mut refused = false;
        for _ in 0..12 {
            match twin.sync() {
                Err(SyncError::Twin(_)) => {
                    refused = true;
                    break;
                }
                r => assert!(!twin.identity.held, "took over a live lease: {r:?}"),
            }
            pause(SETTLE_STEP);
        }
        assert!(refused, "never refused");
    }

    #[test]
    fn a_new_leader_extending_the_lease_is_no_keepalive() {
        let (etcd, _, lease) = predecessor();
        let mut second = exclusive(containers(&[1, 2]), etcd);
        second.sync().unwrap();
        pause(Duration::from_secs(5));
        // A leader election: every lease is extended, in a new term.
        second.store.keepalive(lease).unwrap();
        second.store.term += 1;
        assert!(second.settle_due().unwrap(), "a pass reads it again");
        second.sync().unwrap();
        assert!(!second.identity.held, "still waiting, not refused");
        pause(SETTLE_STEP);
        assert!(!second.settle_due().unwrap());
    }

    #[test]
    fn the_released_lease_is_revoked_after_the_takeover_pass_whatever_is_left_on_it() {
        let mut first = exclusive(containers(&[1, 2]), FakeEtcd::default());
        first.sync().unwrap();
        first.release().unwrap();
        let old = first.lease();
        let mut etcd = std::mem::take(&mut first.store);
        // A key the index does not name (an interrupted write, say).
        etcd.kv
            .insert("/s/orphan/h:x:80/node".into(), ("h".into(), old, 1));
        let mut second = exclusive(containers(&[1, 2]), etcd);
        second.sync().unwrap();
        assert_eq!(second.store.granted(old), None, "revoked");
        assert!(!second.store.kv.contains_key("/s/orphan/h:x:80/node"));
    }
}
