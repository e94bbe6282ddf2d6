//! The reconciler: its state, options and results; the pass, the writer, the lease,
//! the claim checks, the event fast path and the loop each live in a file of their own.
//!
//! Every pass recomputes both sides: the desired set from Docker, the actual set from
//! etcd itself. An in-memory picture of etcd is never trusted over etcd.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::plan::{ClaimOp, Op};
use crate::service::{Problem, Settings};
use crate::source::SourceError;
use crate::store::StoreError;

mod claims;
mod event;
mod exit;
mod identity;
mod index;
mod lease;
mod pass;
mod report;
mod run;
mod writer;

#[cfg(test)]
mod fakes;

pub use run::{Shutdown, Wake};

/// Why a pass changed nothing.
#[derive(Debug)]
pub enum SyncError {
    /// The containers could not be read: the desired set is unknown, so nothing is
    /// touched.
    Source(SourceError),
    Store(StoreError),
    /// Another live registrator holds this host's identity: this one must stop.
    Twin(Twin),
}

/// Another live process registers under this host's name and prefix: two registrators
/// with one identity delete each other's services, so the one that finds the other
/// refuses (removes what it registered and exits).
#[derive(Debug)]
pub struct Twin {
    pub hostname: String,
    pub prefix: String,
    /// What shows the other process is alive.
    pub evidence: String,
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Source(e) => write!(f, "{e} (etcd left unchanged)"),
            SyncError::Store(e) => write!(f, "{e}"),
            SyncError::Twin(t) => write!(
                f,
                "another registrator is running as host {} under {} ({}); this one \
                 removes what it registered and exits: give each registrator its own --hostname \
                 (a cloned machine? a binary and a container with one --hostname?)",
                t.hostname, t.prefix, t.evidence
            ),
        }
    }
}

impl std::error::Error for SyncError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SyncError::Source(e) => Some(e),
            SyncError::Store(e) => Some(e),
            SyncError::Twin(_) => None,
        }
    }
}

impl From<SourceError> for SyncError {
    fn from(e: SourceError) -> Self {
        SyncError::Source(e)
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
    /// Whether keys already on some other lease are left there (`--once`: a loop of
    /// this host may hold them; new keys still go on this process's lease, if any).
    pub keep_foreign_leases: bool,
    /// Hold this host's identity and refuse to run beside a live twin (the loop with a
    /// lease does; see `identity.rs`).
    pub exclusive: bool,
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
    /// Services etcd refused to store (too large for it): reported, retried every pass.
    pub problems: Vec<Problem>,
}

/// This host's address for ports published on all interfaces: what the host name
/// resolves to, never a loopback one (see `hostaddr`); the error asks for `--ip`.
pub type Lookup = fn(&str) -> Result<crate::hostaddr::HostAddress, String>;

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
    /// keys are ours.
    started: bool,
    /// Claims this host holds but none of its services claims any more, and since when.
    releasing: claims::Releasing,
    /// Problems and notes logged and still true (each is logged once while it lasts).
    reports: report::Reports,
    /// Taken by the first pass that needs the host's address: DNS is asked at most once.
    lookup: Option<Lookup>,
    /// What the event fast path knows between passes.
    seen: event::Seen,
    /// This process's instance, and whether it holds the host's identity.
    identity: identity::Identity,
    /// The lease a predecessor released, which our keys are moving off; revoked once
    /// none is left on it.
    retiring: Option<i64>,
    /// A monotonic clock (for telling a refreshed lease); tests use a fake one.
    clock: fn() -> Duration,
    /// What passes, writes and leases are counted in.
    metrics: Arc<Metrics>,
}

/// Time since this process first asked: a monotonic clock.
fn monotonic() -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
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
            releasing: claims::Releasing::default(),
            reports: report::Reports::default(),
            lookup: Some(lookup),
            seen: event::Seen::default(),
            identity: identity::Identity::new(),
            retiring: None,
            clock: monotonic,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Counts into `metrics` (the process's), not a registry of its own.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
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
}
