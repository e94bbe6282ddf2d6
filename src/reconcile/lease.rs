//! This host's lease: adopting the one a predecessor left or granting one, dropping it
//! when etcd lost it (revoking it on exit is exit.rs's job).
//!
//! And this host's identity (`--hostname` under the prefix): one live process holds it,
//! named by an instance key on its lease. A successor takes it over (and the lease with
//! it) from a predecessor that released it on exit, or whose lease no one refreshes
//! any more; a second live process (a twin) finds the lease kept alive and refuses.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Reconciler, SyncError, Twin};
use crate::plan::Actual;
use crate::source::Source;
use crate::store::{Compare, Kv, Request, Store, StoreError};

/// How often a watched lease's TTL is read while telling a twin from a predecessor.
const WATCH_STEP: Duration = Duration::from_millis(250);

/// What a process leaves in its instance key when it exits and keeps its services
/// registered: its successor takes over at once, without watching the lease.
const RELEASED: &str = "released";

/// Where the registrators of `prefix` keep their instance keys: beside the prefix, not
/// under it and not starting with it (`/.registrator/services/` for `/services`,
/// `/a/.registrator/b/` for `/a/b`), so no reader of the prefix sees them, with or
/// without its trailing slash.
pub fn identity_root(prefix: &str) -> String {
    let (parent, last) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    format!("{parent}/.registrator/{last}/")
}

/// The key naming the process that holds `hostname`'s identity under `prefix`
/// (`/.registrator/services/instance/<host>` for `/services`).
pub fn instance_key(prefix: &str, hostname: &str) -> String {
    format!("{}instance/{hostname}", identity_root(prefix))
}

/// A value for this process's instance key: unique per process and start.
pub(super) fn instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    format!("pid {} {:016x}", std::process::id(), h.finish())
}

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

/// Who keeps a watched lease alive, as far as its TTL readings tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keeper {
    /// A live process refreshes it: a twin.
    Someone,
    /// No one: its holder is gone (killed, or exited without releasing).
    NoOne,
    /// Not yet known: read it again.
    Unknown,
}

/// Judges a lease granted for `granted` s that had `first` s left when the watch began
/// and has `now` s left `elapsed` later (etcd rounds both down). Its holder refreshes it
/// every `granted`/3 s, to `granted`:
///
/// - Left alone, a lease counts down: `now` is at most `first - floor(elapsed)`. More
///   than that: someone refreshed it. (Never wrong about a lease no one refreshes.)
/// - A kept lease never has less than `granted - granted/3` s left (its holder's
///   keepalive is a few ms late at most); less than one second under that: no one has
///   refreshed it for longer than a keepalive period.
/// - A lease no one refreshes falls under that line within `granted/3 + 1` s; one that
///   has not after `granted/3 + 1.5` s is kept (this decides for TTLs of 3 s and less,
///   where whole seconds hide the first rule).
///
/// So a successor after `kill -9` waits at most about TTL/3 + 1.25 s.
pub(super) fn judge(granted: i64, first: i64, elapsed: Duration, now: i64) -> Keeper {
    let period = granted as f64 / 3.0;
    let e = elapsed.as_secs_f64();
    if now > first - e.floor() as i64 {
        Keeper::Someone
    } else if (now as f64) < granted as f64 - period - 1.0 {
        Keeper::NoOne
    } else if e >= period + 1.5 {
        Keeper::Someone
    } else {
        Keeper::Unknown
    }
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// Makes sure keys get a lease when they need one: adopts the live lease a
    /// predecessor on this hostname left on its keys, or grants a new one. With
    /// `exclusive`, also takes this host's identity, or refuses beside a live twin.
    pub(super) fn ensure_lease(&mut self, actual: &Actual) -> Result<(), SyncError> {
        if self.opts.ttl == 0 {
            return Ok(());
        }
        if self.exclusive() {
            // A lease gone (expired, revoked) took the instance key with it.
            if !self.identity.held || self.lease() == 0 {
                self.take_identity(actual)?;
            }
            return Ok(());
        }
        if self.lease() != 0 {
            return Ok(());
        }
        if self.opts.adopt && !self.started {
            for l in adoption_candidates(actual, &self.opts.hostname) {
                if let Some(granted) = self.store.keepalive(l)? {
                    self.adopt(l, granted)?;
                    return Ok(());
                }
            }
        }
        self.grant_lease()?;
        Ok(())
    }

    /// Whether this process claims its host's identity (the loop with a lease).
    fn exclusive(&self) -> bool {
        self.opts.exclusive && !self.opts.dry_run
    }

    fn grant_lease(&mut self) -> Result<(), StoreError> {
        let ttl = self.opts.ttl;
        if let Some(granted) = self.writer().grant(ttl)? {
            self.set_lease(granted);
            log::debug!("granted lease {granted:x} (TTL {ttl} s)");
            crate::metrics::global().lease_granted(granted);
        }
        Ok(())
    }

    /// Takes over lease `id` (kept alive just now, granted for `granted` s). A lease of
    /// another TTL than `--ttl` is only kept until this host's keys have moved onto a
    /// new one of the right TTL: the plan puts every key again on the lease in use
    /// (same key, new lease: a watcher sees a PUT, never a DELETE).
    fn adopt(&mut self, id: i64, granted: i64) -> Result<(), StoreError> {
        self.set_lease(id);
        crate::metrics::global().lease_adopted(id);
        log::info!(
            "adopted lease {id:x} left by the previous registrator of host {}",
            self.opts.hostname
        );
        let ttl = self.opts.ttl;
        if u64::try_from(granted).is_ok_and(|g| g == ttl) {
            return Ok(());
        }
        self.grant_lease()?;
        if self.lease() != id {
            log::info!(
                "lease {id:x} has a TTL of {granted} s and --ttl is {ttl} s: moving this \
                 host's keys onto lease {:x} (none is deleted), then revoking {id:x}",
                self.lease()
            );
            self.retiring = Some(id);
        }
        Ok(())
    }

    /// After a pass: revokes the lease the keys moved off (see [`Reconciler::adopt`])
    /// once no key is left on it, and keeps it alive until then.
    pub(super) fn retire_old_lease(&mut self) -> Result<(), StoreError> {
        let Some(old) = self.retiring else {
            return Ok(());
        };
        match self.store.lease_keys(old)? {
            Some(keys) if !keys.is_empty() => {
                log::debug!("{} key(s) still on lease {old:x}; kept alive", keys.len());
                self.store.keepalive(old)?;
            }
            Some(_) => {
                if self.writer().revoke(old)? {
                    log::info!(
                        "revoked lease {old:x}: every key moved onto lease {:x}",
                        self.lease()
                    );
                }
                self.retiring = None;
            }
            None => self.retiring = None,
        }
        Ok(())
    }

    /// Takes this host's identity: reads the instance key; unless its holder released
    /// it, watches the leases of its holder and of this host's keys for someone who
    /// keeps them alive (a twin: refuse) or no one (adopt the lease); then writes our
    /// instance on our lease in a transaction guarded by what was read, so of two
    /// processes starting at once one wins and the other sees it live.
    fn take_identity(&mut self, actual: &Actual) -> Result<(), SyncError> {
        let key = instance_key(&self.opts.prefix, &self.opts.hostname);
        self.identity.held = false;
        for attempt in 0..3 {
            let holder = self.read_instance(&key)?;
            let value = holder.as_ref().map(|kv| kv.value.clone());
            if value.as_deref() == Some(self.identity.id.as_str()) && self.lease() != 0 {
                // Our own claim, whose answer was lost.
                self.identity.held = true;
                return Ok(());
            }
            let released = value.as_deref() == Some(RELEASED);
            if let (true, false, Some(v)) = (attempt > 0, released, &value) {
                // Another process claimed it between our read and our write.
                self.set_lease(0);
                return Err(self.twin(format!("it just took {key} ({v})")));
            }
            let holder_lease = holder.filter(|_| !released).map_or(0, |kv| kv.lease);
            if self.lease() == 0 {
                self.take_lease(actual, holder_lease, !released)?;
            } else if holder_lease != 0 && holder_lease != self.lease() {
                // Someone holds the identity on a lease of its own (taken while ours
                // was gone, say): refuse if it is alive.
                if let Some(l) = self.kept_by_another(&[holder_lease])? {
                    self.set_lease(0);
                    return Err(self.twin(format!("it holds {key} on lease {l:x}, kept alive")));
                }
            }
            if self.claim(&key, value.as_deref())? {
                return Ok(());
            }
        }
        self.set_lease(0);
        Err(self.twin(format!("{key} keeps changing hands")))
    }

    /// Takes a lease: the first live one of the instance holder's (`holder_lease`, 0
    /// for none) and this host's keys', unless (with `watch`) a live process keeps one
    /// of them alive; else a new one.
    fn take_lease(
        &mut self,
        actual: &Actual,
        holder_lease: i64,
        watch: bool,
    ) -> Result<(), SyncError> {
        let mut candidates: Vec<i64> = Vec::new();
        if holder_lease != 0 {
            candidates.push(holder_lease);
        }
        for l in adoption_candidates(actual, &self.opts.hostname) {
            if !candidates.contains(&l) {
                candidates.push(l);
            }
        }
        // Without a holder that released it, a live lease may be a twin's.
        if watch {
            if let Some(l) = self.kept_by_another(&candidates)? {
                return Err(self.twin(format!("lease {l:x} on its services is being kept alive")));
            }
        }
        for l in candidates {
            if let Some(granted) = self.store.keepalive(l)? {
                self.adopt(l, granted)?;
                return Ok(());
            }
        }
        self.grant_lease()?;
        Ok(())
    }

    /// Writes our instance into the instance key, on our lease, if it still holds
    /// `seen`; false when someone changed it meanwhile. Without permission on the key,
    /// carries on keyless (true).
    fn claim(&mut self, key: &str, seen: Option<&str>) -> Result<bool, StoreError> {
        if self.identity.keyless {
            self.identity.held = true;
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
        match self.store.txn(&[guard], &[put]) {
            Ok(false) => return Ok(false),
            Ok(true) => log::debug!("holding {key} = {}", self.identity.id),
            Err(e) if e.is_denied() => self.go_keyless(key, &e),
            Err(e) => return Err(e),
        }
        self.identity.held = true;
        Ok(true)
    }

    /// The etcd user may not use the instance key (a role that covers only the prefix):
    /// carry on without it. A twin started after this process is still found by
    /// watching the lease; what is lost is a successor's quick takeover after a
    /// graceful exit, the tie between two processes started at once, and the check that
    /// no successor took over while this process's keepalives failed.
    fn go_keyless(&mut self, key: &str, e: &StoreError) {
        if !self.identity.keyless {
            log::warn!(
                "cannot use {key} ({e}): another registrator with this host name is told \
                 from a crashed predecessor by watching the lease only; grant the etcd user \
                 readwrite on {} as well",
                identity_root(&self.opts.prefix)
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

    /// Watches the live ones of `leases` (without refreshing them) until each is known
    /// to be kept alive by someone or by no one (see [`judge`]); the first one that is
    /// kept, if any.
    fn kept_by_another(&mut self, leases: &[i64]) -> Result<Option<i64>, StoreError> {
        let mut watched = Vec::new();
        for &l in leases {
            if let Some(first) = self.store.time_to_live(l)? {
                watched.push((l, first));
            }
        }
        let mut elapsed = Duration::ZERO;
        loop {
            let mut undecided = Vec::new();
            for (l, first) in watched {
                let now = if elapsed.is_zero() {
                    Some(first)
                } else {
                    self.store.time_to_live(l)?
                };
                let Some(now) = now else { continue };
                match judge(first.granted, first.remaining, elapsed, now.remaining) {
                    Keeper::Someone => return Ok(Some(l)),
                    Keeper::NoOne => {}
                    Keeper::Unknown => undecided.push((l, first)),
                }
            }
            if undecided.is_empty() {
                return Ok(None);
            }
            if elapsed.is_zero() {
                log::info!(
                    "host {}: watching lease {:x} for a keepalive (another registrator \
                     with this host name?) for up to {} s",
                    self.opts.hostname,
                    undecided[0].0,
                    undecided[0].1.granted / 3 + 2
                );
            }
            watched = undecided;
            (self.pause)(WATCH_STEP);
            elapsed += WATCH_STEP;
        }
    }

    fn twin(&self, evidence: String) -> SyncError {
        SyncError::Twin(Twin {
            hostname: self.opts.hostname.clone(),
            prefix: self.opts.prefix.clone(),
            evidence,
        })
    }

    /// The instance key to read along with this host's services, while it is held.
    pub(super) fn held_instance_key(&self) -> Option<String> {
        (self.exclusive() && self.identity.held && !self.identity.keyless)
            .then(|| instance_key(&self.opts.prefix, &self.opts.hostname))
    }

    /// Checks what a read found of the instance key (see
    /// [`Reconciler::held_instance_key`]) and returns the other keys: another instance
    /// in it took the identity over (it found our lease unrefreshed, while our
    /// keepalives failed): refuse. Gone (with a lease that expired meanwhile, or
    /// deleted by hand): take it again.
    pub(super) fn check_identity(&mut self, kvs: Vec<Kv>) -> Result<Vec<Kv>, SyncError> {
        let Some(key) = self.held_instance_key() else {
            return Ok(kvs);
        };
        let root = identity_root(&self.opts.prefix);
        let (ours, rest): (Vec<Kv>, Vec<Kv>) = kvs.into_iter().partition(|kv| kv.key == key);
        let instances = format!("{root}instance/");
        let rest = rest
            .into_iter()
            .filter(|kv| !kv.key.starts_with(&instances));
        match ours.first() {
            Some(kv) if kv.value == self.identity.id => {}
            Some(kv) => {
                let value = kv.value.clone();
                self.set_lease(0);
                self.identity.held = false;
                return Err(self.twin(format!("{key} now names {value:?}, not this process")));
            }
            None => self.identity.held = false,
        }
        Ok(rest.collect())
    }

    /// On an exit that leaves the services registered: marks the identity released,
    /// so a successor takes over at once instead of watching the lease.
    pub fn release(&mut self) -> Result<(), SyncError> {
        if !self.identity.held || self.identity.keyless || self.lease() == 0 {
            return Ok(());
        }
        let key = instance_key(&self.opts.prefix, &self.opts.hostname);
        let guard = Compare::ValueEquals(key.clone(), self.identity.id.clone());
        let put = Request::Put {
            key,
            value: RELEASED.into(),
            lease: self.lease(),
        };
        self.store.txn(&[guard], &[put])?;
        self.identity.held = false;
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
    use super::*;
    use crate::plan::{Stored, OWNER_FIELD};
    use crate::reconcile::fakes::{container, now as fake_now, reconciler, FakeDocker, FakeEtcd};
    use crate::reconcile::Reconciler;

    const KEY: &str = "/.registrator/s/instance/h";

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

    #[test]
    fn instance_keys_live_beside_the_prefix() {
        for (prefix, key) in [
            ("/services", "/.registrator/services/instance/h"),
            ("/a/b", "/a/.registrator/b/instance/h"),
            ("/t/x-1-2", "/t/.registrator/x-1-2/instance/h"),
        ] {
            assert_eq!(instance_key(prefix, "h"), key);
            assert!(!key.starts_with(prefix), "{key} would show under {prefix}");
        }
    }

    #[test]
    fn judge_table() {
        let ms = Duration::from_millis;
        // (case, granted, first, elapsed, now, verdict)
        let cases = [
            ("just started: unknown", 30, 30, ms(0), 30, Keeper::Unknown),
            (
                "counting down like a dead lease",
                30,
                28,
                ms(5250),
                22,
                Keeper::Unknown,
            ),
            (
                "went back up: refreshed",
                30,
                28,
                ms(5250),
                29,
                Keeper::Someone,
            ),
            (
                "less than a dead lease after 1 s",
                30,
                28,
                ms(1000),
                28,
                Keeper::Someone,
            ),
            (
                "rounding: 0.75 s may leave the same second",
                30,
                28,
                ms(750),
                28,
                Keeper::Unknown,
            ),
            (
                "under the line: no keepalive for a period",
                30,
                28,
                ms(9250),
                18,
                Keeper::NoOne,
            ),
            (
                "under the line at once (a slow restart)",
                30,
                12,
                ms(0),
                12,
                Keeper::NoOne,
            ),
            (
                "TTL 3: 2 left after 0.5 s",
                3,
                2,
                ms(500),
                2,
                Keeper::Unknown,
            ),
            (
                "TTL 3: still 2 left after 2.25 s",
                3,
                2,
                ms(2250),
                2,
                Keeper::Someone,
            ),
            (
                "TTL 3, alive past the window",
                3,
                2,
                ms(2500),
                2,
                Keeper::Someone,
            ),
            ("TTL 3, dead: 0 left", 3, 2, ms(2000), 0, Keeper::NoOne),
            (
                "TTL 6, refreshed within a period",
                6,
                4,
                ms(2250),
                5,
                Keeper::Someone,
            ),
            ("TTL 6, dead", 6, 5, ms(2250), 2, Keeper::NoOne),
        ];
        for (case, granted, first, elapsed, now, want) in cases {
            assert_eq!(judge(granted, first, elapsed, now), want, "{case}");
        }
        // A lease no one refreshes is never judged kept, whatever it had left and
        // however the reads fall (each read up to 30 ms late).
        for granted in [2, 3, 4, 5, 6, 7, 10, 30, 60] {
            for left_ms in (0..granted * 1000).step_by(50) {
                let mut elapsed = Duration::ZERO;
                let first = left_ms / 1000;
                let mut real = 0;
                loop {
                    let left = left_ms - real;
                    if left <= 0 {
                        break;
                    }
                    let verdict = judge(granted, first, elapsed, left / 1000);
                    assert_ne!(verdict, Keeper::Someone, "TTL {granted}, {left_ms} ms left");
                    if verdict == Keeper::NoOne {
                        break;
                    }
                    elapsed += WATCH_STEP;
                    real += 250 + 30;
                }
            }
        }
        // A kept lease (refreshed every TTL/3, 20 ms late) is never judged abandoned.
        for granted in [2, 3, 4, 5, 6, 7, 10, 30, 60] {
            let period = granted * 1000 / 3 + 20;
            for phase in (0..period).step_by(50) {
                let left = |t: i64| granted * 1000 - (t + phase) % period;
                let first = left(0) / 1000;
                let mut elapsed = Duration::ZERO;
                let mut real = 0;
                loop {
                    let verdict = judge(granted, first, elapsed, left(real) / 1000);
                    assert_ne!(verdict, Keeper::NoOne, "TTL {granted}, phase {phase}");
                    if verdict == Keeper::Someone {
                        break;
                    }
                    elapsed += WATCH_STEP;
                    real += 250 + 5;
                }
            }
        }
    }

    /// A reconciler that holds its host's identity, as the loop does.
    fn exclusive(docker: FakeDocker, etcd: FakeEtcd, ttl: u64) -> Reconciler<FakeDocker, FakeEtcd> {
        let mut r = reconciler(docker, etcd, "h", ttl);
        r.opts.exclusive = true;
        r
    }

    fn two_containers() -> FakeDocker {
        FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        }
    }

    /// The first process of host h ran one pass; its store, its instance and lease.
    fn predecessor(ttl: u64) -> (FakeEtcd, String, i64) {
        let mut first = exclusive(two_containers(), FakeEtcd::default(), ttl);
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

    /// How long the fake clock moved while `f` ran.
    fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let before = fake_now();
        let out = f();
        (out, fake_now() - before)
    }

    #[test]
    fn a_successor_after_a_graceful_exit_takes_over_at_once() {
        let (mut etcd, _, lease) = {
            let mut first = exclusive(two_containers(), FakeEtcd::default(), 30);
            first.sync().unwrap();
            first.release().unwrap();
            let lease = first.lease();
            (std::mem::take(&mut first.store), 0, lease)
        };
        assert_eq!(etcd.kv[KEY].0, RELEASED);
        etcd.calls.clear();
        let rev = etcd.rev;
        let mut second = exclusive(two_containers(), etcd, 30);
        let out = second.sync().unwrap();
        assert_eq!(second.lease(), lease, "adopted");
        assert_eq!(out.applied, 0, "nothing rewritten");
        assert!(!second.store.calls.contains_key("time_to_live"), "no watch");
        assert_eq!(second.store.rev, rev + 1, "one write: the instance key");
        assert_eq!(second.store.kv[KEY].0, second.identity.id);
    }

    #[test]
    fn a_successor_after_kill_9_watches_about_a_third_of_the_ttl_then_adopts() {
        let (etcd, id, lease) = predecessor(30);
        let rev = etcd.rev;
        let mut second = exclusive(two_containers(), etcd, 30);
        let (out, waited) = timed(|| second.sync().unwrap());
        assert_eq!(second.lease(), lease, "adopted");
        assert_eq!(out.applied, 0, "nothing rewritten: no flap");
        assert_eq!(second.store.rev, rev + 1, "one write: the instance key");
        assert_ne!(second.identity.id, id);
        assert_eq!(second.store.kv[KEY].0, second.identity.id);
        assert!(
            waited <= Duration::from_millis(10_000 + 1_250),
            "watched for {waited:?}"
        );
        assert!(waited >= Duration::from_secs(10), "watched for {waited:?}");
    }

    #[test]
    fn a_twin_keeping_the_lease_alive_is_refused_and_nothing_is_written() {
        let (mut etcd, id, lease) = predecessor(30);
        etcd.kept_by_twin.insert(lease);
        let (kv, rev) = (etcd.kv.clone(), etcd.rev);
        // The twin sees other containers: it would delete the first one's services.
        let docker = FakeDocker {
            containers: vec![container(3, &[])],
            ..Default::default()
        };
        let mut twin = exclusive(docker, etcd, 30);
        let (err, waited) = timed(|| twin.sync().unwrap_err());
        let text = err.to_string();
        assert!(
            text.starts_with("another registrator is running as host h under /s"),
            "{text}"
        );
        assert!(text.contains(&format!("lease {lease:x}")), "{text}");
        assert_eq!(
            (twin.store.rev, &twin.store.kv),
            (rev, &kv),
            "nothing written"
        );
        assert_eq!(twin.lease(), 0);
        assert!(!twin.store.calls.contains_key("grant"));
        assert!(waited <= Duration::from_secs(2), "{waited:?}");
        assert_eq!(twin.store.kv[KEY].0, id);
    }

    #[test]
    fn a_twin_of_ttl_3_is_refused_too() {
        let (mut etcd, _, lease) = predecessor(3);
        etcd.kept_by_twin.insert(lease);
        let mut twin = exclusive(two_containers(), etcd, 3);
        assert!(matches!(twin.sync(), Err(SyncError::Twin(_))));
    }

    #[test]
    fn a_process_whose_identity_was_taken_over_stops() {
        let mut r = exclusive(two_containers(), FakeEtcd::default(), 30);
        r.sync().unwrap();
        r.sync().unwrap();
        let lease = r.lease();
        // A successor found our lease unrefreshed (our keepalives were failing) and
        // took the identity.
        r.store
            .kv
            .insert(KEY.into(), ("pid 9 abc".into(), lease, 99));
        r.store.calls.clear();
        let err = r.sync().unwrap_err().to_string();
        assert!(err.contains("now names \"pid 9 abc\""), "{err}");
        let calls: Vec<_> = r.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(
            calls,
            [("lease_keys", 1), ("range_prefixes", 1)],
            "no write"
        );
    }

    #[test]
    fn a_lost_lease_is_replaced_and_the_identity_taken_again() {
        let mut r = exclusive(two_containers(), FakeEtcd::default(), 30);
        r.sync().unwrap();
        let old = r.lease();
        r.store.expire(old);
        // Only the unleased index marker outlives the lease.
        assert!(r.store.kv.values().all(|(_, l, _)| *l == 0));
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 2);
        assert_ne!(r.lease(), old);
        assert_eq!(
            r.store.kv[KEY],
            (r.identity.id.clone(), r.lease(), r.store.rev - 1)
        );
    }

    #[test]
    fn a_restart_with_another_ttl_moves_the_keys_onto_a_new_lease_without_deleting() {
        for (before, after) in [(60, 6), (6, 60)] {
            let (etcd, _, old) = predecessor(before);
            let keys: Vec<(String, String)> = etcd
                .kv
                .iter()
                .filter(|(k, _)| k.starts_with("/s/"))
                .map(|(k, (v, _, _))| (k.clone(), v.clone()))
                .collect();
            let mut second = exclusive(two_containers(), etcd, after);
            let out = second.sync().unwrap();
            let new = second.lease();
            assert_ne!(new, old, "{before} -> {after}");
            assert_eq!(second.store.granted(new), Some(after));
            assert_eq!(out.applied, 2, "both services put again on the new lease");
            assert!(second.store.granted(old).is_none(), "old lease revoked");
            let now: Vec<(String, String)> = second
                .store
                .kv
                .iter()
                .filter(|(k, _)| k.starts_with("/s/"))
                .map(|(k, (v, _, _))| (k.clone(), v.clone()))
                .collect();
            assert_eq!(now, keys, "{before} -> {after}: same keys and values");
            // Every leased key (all but the unleased index marker) is on the new lease.
            assert!(second
                .store
                .kv
                .values()
                .filter(|(_, l, _)| *l != 0)
                .all(|(_, l, _)| *l == new));
            assert_eq!(second.sync().unwrap().applied, 0, "then quiet");
        }
    }

    #[test]
    fn a_pass_that_could_not_move_every_key_keeps_the_old_lease() {
        let (mut etcd, _, old) = predecessor(60);
        // A key of ours that no pass moves (the plan only knows fields it wants).
        etcd.kv.insert("/s/other-key".into(), ("x".into(), old, 1));
        let mut second = exclusive(two_containers(), etcd, 6);
        second.sync().unwrap();
        assert_eq!(
            second.store.granted(old),
            Some(60),
            "kept alive, not revoked"
        );
        assert_eq!(second.retiring, Some(old));
        second.store.kv.remove("/s/other-key");
        second.sync().unwrap();
        assert_eq!(second.store.granted(old), None);
        assert_eq!(second.retiring, None);
    }

    #[test]
    fn without_permission_on_the_instance_key_the_lease_watch_alone_tells() {
        let denied = || FakeEtcd {
            denied: Some("/.registrator/".into()),
            ..Default::default()
        };
        let mut first = exclusive(two_containers(), denied(), 30);
        assert_eq!(first.sync().unwrap().applied, 2, "registers as before");
        assert!(first.identity.keyless && first.identity.held);
        first.store.calls.clear();
        first.sync().unwrap();
        let calls: Vec<_> = first.store.calls.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(calls, [("lease_keys", 1), ("range_prefixes", 1)]);
        first.release().unwrap();
        let lease = first.lease();
        let mut etcd = std::mem::take(&mut first.store);
        // A twin is still refused...
        etcd.kept_by_twin.insert(lease);
        let mut twin = exclusive(two_containers(), etcd, 30);
        assert!(matches!(twin.sync(), Err(SyncError::Twin(_))));
        // ...and a successor still adopts, after watching the lease.
        let mut etcd = std::mem::take(&mut twin.store);
        etcd.kept_by_twin.clear();
        let mut second = exclusive(two_containers(), etcd, 30);
        let (out, waited) = timed(|| second.sync().unwrap());
        assert_eq!((second.lease(), out.applied), (lease, 0));
        assert!(waited > Duration::ZERO);
    }
}
