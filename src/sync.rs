//! The reconciler: one level-triggered pass (Docker -> desired -> plan -> etcd), and
//! the loop around it (interval, wake-ups from events and signals, lease, backoff).
//!
//! Every pass recomputes both sides: the desired set from Docker, the actual set from
//! etcd itself. An in-memory picture of etcd is never trusted over etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::docker::{Docker, DockerError};
use crate::plan::{self, Actual, Desired, Op, OWNER_FIELD};
use crate::service::{self, Claim, Container, Problem, Settings};
use crate::store::{Compare, Kv, Request, Store, StoreError};

/// Reads the containers of this host.
pub trait Source {
    fn containers(&mut self) -> Result<Vec<Container>, DockerError>;
    /// One container, fresh; None when it no longer exists.
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError>;
}

impl Source for Docker {
    fn containers(&mut self) -> Result<Vec<Container>, DockerError> {
        Docker::containers(self)
    }
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError> {
        Docker::inspect(self, id)
    }
}

/// Why a pass changed nothing.
#[derive(Debug)]
pub enum SyncError {
    /// Docker could not be read: the desired set is unknown, so nothing is touched.
    Docker(DockerError),
    Store(StoreError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Docker(e) => write!(f, "{e} (etcd left unchanged)"),
            SyncError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Docker(e) => Some(e),
            SyncError::Store(e) => Some(e),
        }
    }
}

impl From<StoreError> for SyncError {
    fn from(e: StoreError) -> Self {
        SyncError::Store(e)
    }
}

/// How the reconciler writes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Key prefix, `/services`.
    pub prefix: String,
    pub hostname: String,
    pub dry_run: bool,
    /// Lease TTL in seconds; 0: keys carry no lease.
    pub ttl: u64,
    /// Take over a predecessor's live lease (the loop does; `--once` does not).
    pub adopt: bool,
    /// Whether keys already on some other lease are left there (`--once` without `--ttl`).
    pub keep_foreign_leases: bool,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The planned ops (printed by `--dry-run`).
    pub ops: Vec<Op>,
    pub applied: usize,
    /// Ops that another writer made impossible meanwhile; retried on the next pass.
    pub failed: usize,
}

/// Reconciles one host's containers with its services in etcd.
pub struct Reconciler<S, K> {
    source: S,
    store: K,
    settings: Settings,
    opts: Options,
    /// The lease our keys carry (0: none yet or none at all), shared with the
    /// keepalive thread.
    lease: Arc<AtomicI64>,
    /// The first pass reads the whole prefix (to adopt and to clean up after a
    /// predecessor); later passes read only this host's services when a lease allows.
    started: bool,
    reported: BTreeSet<Problem>,
    /// The containers and desired services of the last pass: only the event fast path
    /// uses them, to know what a container had registered; the next full pass checks.
    containers: Vec<Container>,
    last_desired: Desired,
    /// Resolves the host name (DNS): called at most once, and only when a service
    /// needs the host's address.
    lookup: fn(&str) -> Option<String>,
    looked_up: bool,
    /// Containers named by events since the last pass. Docker's list lags behind its
    /// events (after `die` it shows the container running until cleanup finishes), so
    /// the next pass inspects these few for their live state.
    touched: BTreeSet<String>,
}

impl<S: Source, K: Store> Reconciler<S, K> {
    pub fn new(
        source: S,
        store: K,
        settings: Settings,
        opts: Options,
        lookup: fn(&str) -> Option<String>,
    ) -> Self {
        Reconciler {
            source,
            store,
            settings,
            opts,
            lease: Arc::new(AtomicI64::new(0)),
            started: false,
            reported: BTreeSet::new(),
            containers: Vec::new(),
            last_desired: Desired::new(),
            lookup,
            looked_up: false,
            touched: BTreeSet::new(),
        }
    }

    /// The lease in use (0: none).
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    fn set_lease(&self, id: i64) {
        self.lease.store(id, Ordering::SeqCst);
    }

    /// The lease cell, for the keepalive thread.
    pub fn lease_cell(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.lease)
    }

    fn key(&self, dir: &str, field: &str) -> String {
        format!("{}/{dir}/{field}", self.opts.prefix)
    }

    /// One full pass. Docker is read first: if that fails, etcd is not touched.
    pub fn sync(&mut self) -> Result<Outcome, SyncError> {
        let mut containers = self.source.containers().map_err(SyncError::Docker)?;
        for c in containers
            .iter_mut()
            .filter(|c| self.touched.contains(&c.id))
        {
            match self.source.inspect(&c.id).map_err(SyncError::Docker)? {
                Some(live) => *c = live,
                None => c.running = false,
            }
        }
        self.touched.clear();
        if !self.looked_up
            && self.settings.host_address.is_none()
            && service::needs_host_address(&containers, &self.settings)
        {
            self.looked_up = true;
            self.settings.host_address = (self.lookup)(&self.settings.hostname);
            match &self.settings.host_address {
                Some(a) => log::info!("host name {:?} resolves to {a}: registered for ports published on all interfaces", self.settings.hostname),
                None => log::warn!("cannot resolve host name {:?}; ports published on all interfaces need --ip", self.settings.hostname),
            }
        }
        let (services, mut problems) = service::services(&containers, &self.settings);
        let desired = plan::desired(&services, &self.opts.hostname);

        let (mut actual, mut revision) = self.read_actual(&desired)?;
        if self.opts.ttl > 0 && self.lease() == 0 {
            self.take_lease(&actual)?;
        }
        let lease = if self.opts.keep_foreign_leases {
            None
        } else {
            Some(self.lease())
        };
        let (ops, plan_problems) = plan::plan(&desired, &actual, &self.opts.hostname, lease);
        problems.extend(plan_problems);

        // Cluster-wide port claims need the whole prefix, but only when a service is
        // about to claim a port: never on a quiet pass.
        let (claiming, ops): (Vec<Op>, Vec<Op>) = ops
            .into_iter()
            .partition(|op| claim_of(op, &desired).is_some());
        if !claiming.is_empty() && revision.is_none() {
            let (all, rev) = self.read_prefix()?;
            actual = all;
            revision = Some(rev);
        }
        let mut claim_ops = Vec::new();
        for op in claiming {
            let claim = claim_of(&op, &desired).expect("partitioned on it");
            match holder(&actual, op.dir(), claim) {
                Some(h) => problems.push(claim_problem(&op, claim, &h)),
                None => claim_ops.push((op, claim)),
            }
        }

        self.report(problems);
        self.containers = containers;
        self.last_desired = desired;
        let mut outcome = Outcome::default();
        if self.opts.dry_run {
            outcome.ops = ops;
            outcome.ops.extend(claim_ops.into_iter().map(|(op, _)| op));
            self.started = true;
            return Ok(outcome);
        }
        self.apply(&ops, &mut outcome)?;
        for (op, claim) in claim_ops {
            self.apply_claim(op, claim, revision.unwrap_or(0), &mut outcome)?;
        }
        // Only a pass that got this far has seen (and moved onto our lease) everything
        // of ours under the prefix; until then every pass reads the whole prefix.
        self.started = true;
        Ok(outcome)
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
                    let prefixes: Vec<String> = dirs
                        .iter()
                        .map(|d| format!("{}/{d}/", self.opts.prefix))
                        .collect();
                    let kvs = if prefixes.is_empty() {
                        Vec::new()
                    } else {
                        self.store.range_prefixes(&prefixes)?
                    };
                    return Ok((self.group(kvs), None));
                }
                None => {
                    log::warn!("lease {:x} is gone (expired or revoked); granting a new one and registering again", self.lease());
                    self.set_lease(0);
                }
            }
        }
        let (actual, rev) = self.read_prefix()?;
        Ok((actual, Some(rev)))
    }

    /// Every service under the prefix (all hosts), and the revision of the read.
    fn read_prefix(&mut self) -> Result<(Actual, i64), StoreError> {
        let (kvs, rev) = self.store.range_prefix(&format!("{}/", self.opts.prefix))?;
        Ok((self.group(kvs), rev))
    }

    fn group(&self, kvs: Vec<Kv>) -> Actual {
        plan::group(
            &self.opts.prefix,
            kvs.into_iter().map(|kv| (kv.key, kv.value, kv.lease)),
        )
    }

    /// Adopts the live lease a predecessor on this hostname left on its keys, or grants
    /// a new one.
    fn take_lease(&mut self, actual: &Actual) -> Result<(), SyncError> {
        if self.opts.adopt && !self.started {
            let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
            for stored in actual
                .values()
                .filter(|s| s.owner() == Some(self.opts.hostname.as_str()))
            {
                for &l in stored.leases.values().filter(|&&l| l != 0) {
                    *counts.entry(l).or_default() += 1;
                }
            }
            let mut candidates: Vec<(usize, i64)> =
                counts.into_iter().map(|(l, n)| (n, l)).collect();
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            for (_, l) in candidates {
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
        if self.opts.dry_run {
            return Ok(());
        }
        let granted = self.store.grant(self.opts.ttl)?;
        self.set_lease(granted);
        log::debug!("granted lease {:x} (TTL {} s)", self.lease(), self.opts.ttl);
        Ok(())
    }

    /// The keepalive thread found `id` gone: the next pass grants a new lease and
    /// writes everything again.
    pub fn lease_lost(&mut self, id: i64) {
        if self.lease() == id {
            log::warn!("lease {id:x} expired; granting a new one and registering again");
            self.set_lease(0);
        }
    }

    /// `--deregister-on-exit`: removes this host's services (revokes the lease, or
    /// deletes the keys when there is none).
    pub fn deregister_all(&mut self) -> Result<usize, SyncError> {
        let lease = self.lease();
        if lease != 0 {
            // Every key this process wrote (or adopted) is on the lease: one request.
            self.store.revoke(lease)?;
            log::info!("revoked lease {lease:x}: this host's services are deregistered");
            self.set_lease(0);
            return Ok(self.last_desired.len());
        }
        let (actual, _) = self.read_prefix()?;
        let (ops, _) = plan::plan(&Desired::new(), &actual, &self.opts.hostname, None);
        let mut outcome = Outcome::default();
        self.apply(&ops, &mut outcome)?;
        Ok(outcome.applied)
    }

    /// Logs each problem once while it persists.
    fn report(&mut self, problems: Vec<Problem>) {
        let now: BTreeSet<Problem> = problems.into_iter().collect();
        for p in now.difference(&self.reported) {
            log::error!("{p}");
        }
        self.reported = now;
    }

    fn txn_parts(&self, op: &Op, compares: &mut Vec<Compare>, requests: &mut Vec<Request>) {
        let owner_key = self.key(op.dir(), OWNER_FIELD);
        let lease = self.lease();
        match op {
            Op::Register { dir, fields, .. } => {
                compares.push(Compare::Missing(owner_key));
                for (f, v) in fields {
                    requests.push(Request::Put {
                        key: self.key(dir, f),
                        value: v.clone(),
                        lease,
                    });
                }
            }
            Op::Update {
                dir, put, delete, ..
            } => {
                compares.push(Compare::ValueEquals(owner_key, self.opts.hostname.clone()));
                for (f, v) in put {
                    requests.push(Request::Put {
                        key: self.key(dir, f),
                        value: v.clone(),
                        lease,
                    });
                }
                for f in delete {
                    requests.push(Request::Delete {
                        key: self.key(dir, f),
                    });
                }
            }
            Op::Deregister { dir } => {
                compares.push(Compare::ValueEquals(owner_key, self.opts.hostname.clone()));
                requests.push(Request::DeletePrefix {
                    prefix: format!("{}/{dir}/", self.opts.prefix),
                });
            }
        }
    }

    /// Applies ops in as few transactions as etcd's op limit allows. A batch whose
    /// guard fails is retried op by op, so one contested service does not block others.
    fn apply(&mut self, ops: &[Op], outcome: &mut Outcome) -> Result<(), SyncError> {
        self.apply_ops(ops, outcome, false)
    }

    /// `quiet`: a failed guard is expected (the event fast path guesses) and only logged
    /// at debug; the full pass that follows settles it.
    fn apply_ops(
        &mut self,
        ops: &[Op],
        outcome: &mut Outcome,
        quiet: bool,
    ) -> Result<(), SyncError> {
        for batch in plan::batches(ops, MAX_TXN_OPS) {
            let (mut compares, mut requests) = (Vec::new(), Vec::new());
            for op in batch {
                self.txn_parts(op, &mut compares, &mut requests);
            }
            if self.store.txn(&compares, &requests)? {
                for op in batch {
                    log::info!("{op}");
                }
                outcome.applied += batch.len();
                continue;
            }
            for op in batch {
                let (mut compares, mut requests) = (Vec::new(), Vec::new());
                self.txn_parts(op, &mut compares, &mut requests);
                if batch.len() > 1 && self.store.txn(&compares, &requests)? {
                    log::info!("{op}");
                    outcome.applied += 1;
                } else {
                    if quiet {
                        log::debug!(
                            "{}: fast path skipped (state differs); the full pass decides",
                            op.dir()
                        );
                    } else {
                        log::warn!(
                            "{} changed under us (another host, or our own write whose answer was lost); checking again on the next pass",
                            op.dir()
                        );
                    }
                    outcome.failed += 1;
                }
            }
        }
        Ok(())
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
        for _ in 0..5 {
            let (mut compares, mut requests) = (Vec::new(), Vec::new());
            self.txn_parts(&op, &mut compares, &mut requests);
            compares.push(Compare::Unchanged {
                prefix: format!("{}/", self.opts.prefix),
                revision,
            });
            if self.store.txn(&compares, &requests)? {
                log::info!("{op}");
                outcome.applied += 1;
                return Ok(());
            }
            let (actual, rev) = self.read_prefix()?;
            if let Some(h) = holder(&actual, op.dir(), claim) {
                let p = claim_problem(&op, claim, &h);
                if self.reported.insert(p.clone()) {
                    log::error!("{p}");
                }
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

    /// The fast path for one container event: inspects only that container and writes
    /// only its services (or deletes them), in one transaction, so a change is visible
    /// in milliseconds. It reuses the last pass's container list for host-level
    /// conflicts and leaves anything subtle (cluster-wide port claims, changed
    /// services) to the full pass that always follows.
    pub fn on_event(&mut self, action: &str, id: &str) -> Result<(), SyncError> {
        let gone = matches!(action, "die" | "stop" | "destroy" | "pause");
        // dockerd updates its list only after it logs these (and health changes); a
        // start is listed before it is logged.
        if gone || action.starts_with("health_status") {
            self.touched.insert(id.to_string());
        }
        if self.opts.dry_run || !self.started || (self.opts.ttl > 0 && self.lease() == 0) {
            return Ok(());
        }
        let fresh = if gone {
            None
        } else {
            self.source.inspect(id).map_err(SyncError::Docker)?
        };
        let Some(name) = fresh.as_ref().map(|c| c.name.clone()).or_else(|| {
            self.containers
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.name.clone())
        }) else {
            return Ok(());
        };
        self.containers.retain(|c| c.id != id);
        self.containers.extend(fresh);
        let (services, _) = service::services(&self.containers, &self.settings);
        let mine: Desired = plan::desired(&services, &self.opts.hostname)
            .into_iter()
            .filter(|(_, w)| w.container == name)
            .collect();
        let mut ops = Vec::new();
        for (dir, want) in &self.last_desired {
            if want.container == name && !mine.contains_key(dir) {
                ops.push(Op::Deregister { dir: dir.clone() });
            }
        }
        for (dir, want) in &mine {
            if want.claim.is_none() && !self.last_desired.contains_key(dir) {
                ops.push(Op::Register {
                    dir: dir.clone(),
                    fields: want.fields.clone(),
                    container: name.clone(),
                });
            }
        }
        self.last_desired.retain(|_, w| w.container != name);
        self.last_desired.extend(mine);
        let mut outcome = Outcome::default();
        self.apply_ops(&ops, &mut outcome, true)
    }

    /// The loop: a pass at start, on every wake-up and every `interval`. Returns on
    /// shutdown. (The lease is kept alive by its own thread: see `lease.rs`.)
    pub fn run(&mut self, wake: &Receiver<Wake>, interval: Duration) -> Shutdown {
        let mut next_sync = Instant::now();
        let mut backoff = Duration::from_millis(200);
        let mut failing: Option<String> = None;
        loop {
            if Instant::now() >= next_sync {
                match self.sync() {
                    Ok(_) => {
                        if failing.take().is_some() {
                            log::info!("sync succeeded again");
                        }
                        backoff = Duration::from_millis(200);
                        next_sync = Instant::now() + interval;
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if failing.as_ref() != Some(&msg) {
                            log::error!("sync failed: {msg}; retrying");
                        }
                        failing = Some(msg);
                        next_sync = Instant::now() + backoff.min(interval);
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            match wake.recv_timeout(next_sync.saturating_duration_since(Instant::now())) {
                Ok(Wake::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Shutdown,
                Ok(Wake::Changed) => next_sync = Instant::now(),
                Ok(Wake::LeaseLost(id)) => {
                    self.lease_lost(id);
                    next_sync = Instant::now();
                }
                Ok(Wake::Event { action, id }) => {
                    // Each event takes the fast path; a burst then coalesces into one
                    // full pass shortly after the last event.
                    let mut pending = vec![(action, id)];
                    loop {
                        for (action, id) in pending.drain(..) {
                            if let Err(e) = self.on_event(&action, &id) {
                                log::debug!("event fast path for {id}: {e}");
                            }
                        }
                        match wake.try_recv() {
                            Ok(Wake::Shutdown) => return Shutdown,
                            Ok(Wake::Event { action, id }) => pending.push((action, id)),
                            Ok(Wake::LeaseLost(id)) => self.lease_lost(id),
                            Ok(Wake::Changed) => {}
                            Err(_) => break,
                        }
                    }
                    next_sync = next_sync.min(Instant::now() + EVENT_SETTLE);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }
}

/// Returned by [`Reconciler::run`] when a signal asked it to stop.
#[derive(Debug)]
pub struct Shutdown;

/// Why the loop wakes up before its interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Docker reported a change to this container.
    Event { action: String, id: String },
    /// Something may have changed (the event stream reconnected): run a full pass.
    Changed,
    /// The keepalive thread found this lease gone.
    LeaseLost(i64),
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// How long after an event burst the confirming full pass runs.
const EVENT_SETTLE: Duration = Duration::from_millis(100);

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;

/// The claim an op would newly write, if any.
fn claim_of(op: &Op, desired: &Desired) -> Option<Claim> {
    match op {
        Op::Register { dir, .. } => desired.get(dir)?.claim,
        Op::Update { dir, put, .. } => {
            let claim = desired.get(dir)?.claim?;
            put.contains_key(claim.field()).then_some(claim)
        }
        Op::Deregister { .. } => None,
    }
}

/// Another service (by name) that holds the same claim, as `name/id on host`.
fn holder(actual: &Actual, dir: &str, claim: Claim) -> Option<String> {
    let name = dir.split('/').next().unwrap_or("");
    actual.iter().find_map(|(d, stored)| {
        let other = d.split('/').next().unwrap_or("");
        let holds = stored
            .fields
            .get(claim.field())
            .is_some_and(|v| v.trim() == claim.port().to_string());
        (other != name && holds).then(|| format!("{d} on host {}", stored.owner().unwrap_or("?")))
    })
}

fn claim_problem(op: &Op, claim: Claim, holder: &str) -> Problem {
    Problem {
        container: op.container().to_string(),
        message: format!(
            "SERVICE_{}={}: {claim} is already held by {holder}; {} not registered (retried every sync)",
            claim.field().to_uppercase(),
            claim.port(),
            op.dir()
        ),
    }
}

#[cfg(test)]
mod tests {
    //! The reconciler against an in-memory etcd and a scripted Docker: what each pass
    //! asks of them, and what it writes.
    use super::*;
    use crate::service::{Binding, Health, Port, Proto};
    use std::collections::BTreeMap;

    #[derive(Default)]
    struct FakeDocker {
        containers: Vec<Container>,
        down: bool,
        lists: usize,
        inspects: usize,
        /// IDs that inspect reports as stopped while the list still shows them running.
        dead: BTreeSet<String>,
    }

    impl Source for FakeDocker {
        fn containers(&mut self) -> Result<Vec<Container>, DockerError> {
            self.lists += 1;
            if self.down {
                return Err(crate::docker::test_error());
            }
            Ok(self.containers.clone())
        }
        fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError> {
            self.inspects += 1;
            let mut c = self.containers.iter().find(|c| c.id == id).cloned();
            if let Some(c) = c.as_mut() {
                c.running &= !self.dead.contains(id);
            }
            Ok(c)
        }
    }

    /// etcd semantics that matter here: revisions, leases, guarded txns.
    #[derive(Default)]
    struct FakeEtcd {
        kv: BTreeMap<String, (String, i64, i64)>,
        rev: i64,
        leases: BTreeSet<i64>,
        next_lease: i64,
        calls: BTreeMap<&'static str, usize>,
    }

    impl FakeEtcd {
        fn count(&mut self, what: &'static str) {
            *self.calls.entry(what).or_default() += 1;
        }
        fn under(&self, prefix: &str) -> Vec<Kv> {
            self.kv
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, l, _))| Kv {
                    key: k.clone(),
                    value: v.clone(),
                    lease: *l,
                })
                .collect()
        }
        fn expire(&mut self, lease: i64) {
            self.leases.remove(&lease);
            self.kv.retain(|_, (_, l, _)| *l != lease);
        }
    }

    impl Store for FakeEtcd {
        fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
            self.count("range_prefix");
            Ok((self.under(prefix), self.rev))
        }
        fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError> {
            self.count("range_prefixes");
            Ok(prefixes.iter().flat_map(|p| self.under(p)).collect())
        }
        fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, StoreError> {
            self.count("txn");
            let ok = compares.iter().all(|c| match c {
                Compare::ValueEquals(k, v) => self.kv.get(k).is_some_and(|(x, _, _)| x == v),
                Compare::Missing(k) => !self.kv.contains_key(k),
                Compare::Unchanged { prefix, revision } => self
                    .kv
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix.as_str()))
                    .all(|(_, (_, _, m))| m <= revision),
            });
            if !ok {
                return Ok(false);
            }
            self.rev += 1;
            for r in requests {
                match r {
                    Request::Put { key, value, lease } => {
                        self.kv
                            .insert(key.clone(), (value.clone(), *lease, self.rev));
                    }
                    Request::Delete { key } => {
                        self.kv.remove(key);
                    }
                    Request::DeletePrefix { prefix } => {
                        self.kv.retain(|k, _| !k.starts_with(prefix.as_str()))
                    }
                }
            }
            Ok(true)
        }
        fn grant(&mut self, _ttl: u64) -> Result<i64, StoreError> {
            self.count("grant");
            self.next_lease += 1;
            self.leases.insert(self.next_lease);
            Ok(self.next_lease)
        }
        fn keepalive(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
            self.count("keepalive");
            Ok(self.leases.contains(&id).then_some(30))
        }
        fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
            self.count("revoke");
            self.expire(id);
            Ok(())
        }
        fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, StoreError> {
            self.count("lease_keys");
            if !self.leases.contains(&id) {
                return Ok(None);
            }
            Ok(Some(
                self.kv
                    .iter()
                    .filter(|(_, (_, l, _))| *l == id)
                    .map(|(k, _)| k.clone())
                    .collect(),
            ))
        }
    }

    fn container(n: usize, env: &[&str]) -> Container {
        Container {
            id: format!("id{n}"),
            name: format!("c{n}"),
            image: "img".into(),
            created: (n as i64, 0),
            running: true,
            paused: false,
            health: Health::None,
            env: env.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            exposed: vec![],
            bindings: vec![Binding {
                port: Port {
                    number: 80,
                    proto: Proto::Tcp,
                },
                host_ip: "127.0.0.1".into(),
                host_port: 30000 + n as u16,
            }],
            ip: None,
            host_network: false,
        }
    }

    fn reconciler(
        docker: FakeDocker,
        etcd: FakeEtcd,
        host: &str,
        ttl: u64,
    ) -> Reconciler<FakeDocker, FakeEtcd> {
        let settings = Settings {
            hostname: host.into(),
            ip: None,
            host_address: Some("10.0.0.5".into()),
            internal: false,
            explicit: false,
        };
        let opts = Options {
            prefix: "/s".into(),
            hostname: host.into(),
            dry_run: false,
            ttl,
            adopt: true,
            keep_foreign_leases: false,
        };
        Reconciler::new(docker, etcd, settings, opts, |_| None)
    }

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
    fn expired_lease_is_replaced_and_everything_re_put() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        let old = r.lease();
        r.store.expire(old);
        assert!(r.store.kv.is_empty());
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 2);
        assert_ne!(r.lease(), old);
        assert!(r.store.kv.values().all(|(_, l, _)| *l == r.lease()));
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
        let want = r.last_desired.values().next().unwrap().clone();
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
    fn a_pass_after_die_trusts_inspect_over_the_lagging_list() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        assert_eq!(r.store.kv.len(), 8);
        // Container 1 died: inspect knows, the list still says running (as dockerd's
        // does until its cleanup finishes).
        r.source.dead.insert("id1".into());
        r.on_event("die", "id1").unwrap();
        assert_eq!(r.store.kv.len(), 4, "the fast path deregistered it");
        r.source.inspects = 0;
        let out = r.sync().unwrap();
        assert_eq!(
            out.applied, 0,
            "no flap: the dead container is not registered again"
        );
        assert_eq!(r.store.kv.len(), 4);
        assert_eq!(
            r.source.inspects, 1,
            "only the container the event named is inspected"
        );
        r.source.inspects = 0;
        r.sync().unwrap();
        assert_eq!(r.source.inspects, 0, "a quiet pass inspects nothing");
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
