//! The reconciler: its state, options and results; the pass, the writer, the lease,
//! the claim checks, the event fast path and the loop each live in a file of their own.
//!
//! Every pass recomputes both sides: the desired set from Docker, the actual set from
//! etcd itself. An in-memory picture of etcd is never trusted over etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::docker::DockerError;
use crate::plan::{ClaimOp, Op};
use crate::service::{Claim, Problem, Settings};
use crate::store::StoreError;

mod claims;
mod event;
mod exit;
mod index;
mod lease;
mod migrate;
mod pass;
mod run;
mod writer;

#[cfg(test)]
mod fakes;

pub use run::{Shutdown, Wake};

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
    /// Prefix of the ownership index (`/services.index`; see `index.rs`), never under
    /// `prefix/`.
    pub index_prefix: String,
    pub hostname: String,
    /// Plan and record, write nothing (see the writer).
    pub dry_run: bool,
    /// Lease TTL in seconds; 0: keys carry no lease.
    pub ttl: u64,
    /// Take over a predecessor's live lease (the loop does; `--once` does not).
    pub adopt: bool,
    /// Whether keys already on some other lease are left there (`--once` without `--ttl`).
    pub keep_foreign_leases: bool,
    /// How long a port claim outlives the last service that claimed it (a container
    /// restarting keeps its port); zero releases it on the first pass that sees it go.
    pub claim_grace: Duration,
}

/// What a pass did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// A dry run's ops, recorded instead of written (printed by `--dry-run`).
    pub ops: Vec<Op>,
    /// A dry run's claim ops, recorded instead of written.
    pub claims: Vec<ClaimOp>,
    pub applied: usize,
    /// Ops that another writer made impossible meanwhile; retried on the next pass.
    pub failed: usize,
}

/// Resolves a host name to an address (DNS), for ports published on all interfaces.
pub type Lookup = fn(&str) -> Option<String>;

/// Reconciles one host's containers with its services in etcd.
pub struct Reconciler<S, K> {
    source: S,
    store: K,
    settings: Settings,
    opts: Options,
    /// The lease our keys carry (0: none yet or none at all), shared with the
    /// keepalive thread.
    lease: Arc<AtomicI64>,
    /// Set by the first pass that got through: later passes also ask the lease which
    /// keys are ours (the first adopts a predecessor's lease from the index instead).
    started: bool,
    /// Claims this host holds but none of its services claims any more, and since when:
    /// each is released once that is longer ago than the grace period.
    releasing: BTreeMap<Claim, Instant>,
    /// Problems logged and still present: each is logged once while it persists.
    reported: BTreeSet<Problem>,
    /// Taken by the first pass that needs the host's address: DNS is asked at most once.
    lookup: Option<Lookup>,
    /// What the event fast path knows between passes.
    seen: event::Seen,
}

impl<S, K> Reconciler<S, K> {
    /// A reconciler that reads `source`, writes `store` and looks the host name up with
    /// `lookup` (at most once, when a service needs the host's address).
    pub fn new(source: S, store: K, settings: Settings, opts: Options, lookup: Lookup) -> Self {
        Reconciler {
            source,
            store,
            settings,
            opts,
            lease: Arc::new(AtomicI64::new(0)),
            started: false,
            releasing: BTreeMap::new(),
            reported: BTreeSet::new(),
            lookup: Some(lookup),
            seen: event::Seen::default(),
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

    /// Logs each problem once while it persists.
    fn report(&mut self, problems: Vec<Problem>) {
        let now: BTreeSet<Problem> = problems.into_iter().collect();
        for p in now.difference(&self.reported) {
            log::error!("{p}");
        }
        self.reported = now;
    }

    /// Logs a problem found between passes (unless already logged) and keeps it.
    fn report_one(&mut self, problem: Problem) {
        if self.reported.insert(problem.clone()) {
            log::error!("{problem}");
        }
    }
}
