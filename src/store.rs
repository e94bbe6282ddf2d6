//! The store the reconciler writes to, in its own words: keys with values and leases,
//! guarded transactions, leases. The etcd client implements it; the reconciler's unit
//! tests implement it in memory.

use std::fmt;

/// The most operations one transaction may carry (etcd's default `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// 0: no lease.
    pub lease: i64,
}

/// A compare of a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key holds exactly this value.
    ValueEquals(String, String),
    /// The key does not exist.
    Missing(String),
    /// No key under the prefix was created or changed after this revision.
    Unchanged { prefix: String, revision: i64 },
}

/// A request inside a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    Delete {
        key: String,
    },
    /// Every key that starts with this prefix.
    DeletePrefix {
        prefix: String,
    },
}

/// Why a store operation failed: the backend's error, whole (it names the operation,
/// the key and the endpoint).
#[derive(Debug)]
pub struct StoreError {
    inner: Box<dyn std::error::Error + Send + Sync>,
    cause: Cause,
}

/// What the reconciler does differently depending on the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Other,
    Refused,
    Denied,
    Cluster,
}

impl StoreError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError {
            inner: e.into(),
            cause: Cause::Other,
        }
    }

    /// The store answered and refused this request for what it carries (too many
    /// operations, too large): a smaller request may pass, and the store itself is fine.
    pub fn refused(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError {
            inner: e.into(),
            cause: Cause::Refused,
        }
    }

    /// The store's user may not read or write the key the request was about.
    pub fn denied(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError {
            inner: e.into(),
            cause: Cause::Denied,
        }
    }

    /// The store as a whole cannot take requests now (out of space, too many requests, no
    /// leader): any other request would fail alike, so the caller backs off rather than
    /// retrying piece by piece, which only adds to the load.
    pub fn cluster(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError {
            inner: e.into(),
            cause: Cause::Cluster,
        }
    }

    /// Whether the request was refused for what it carries (see [`StoreError::refused`]).
    pub fn is_refused(&self) -> bool {
        self.cause == Cause::Refused
    }

    /// Whether the user lacks permission on the key (see [`StoreError::denied`]).
    pub fn is_denied(&self) -> bool {
        self.cause == Cause::Denied
    }

    /// Whether the whole store asked to be left alone (see [`StoreError::cluster`]).
    pub fn is_cluster(&self) -> bool {
        self.cause == Cause::Cluster
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

/// What etcd says of a live lease: seconds left (rounded down) and the TTL it was
/// granted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTtl {
    pub remaining: i64,
    pub granted: i64,
    /// The raft term of the answer: a new leader extends every lease, so readings of
    /// two terms do not compare.
    pub term: u64,
}

/// The operations the reconciler needs from its store.
pub trait Store {
    /// Every key under `prefix` and the revision of that read.
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError>;
    /// Every key under each of several prefixes, in one request where possible.
    fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError>;
    /// Runs the requests if every compare holds; Ok(false) when one did not.
    fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, StoreError>;
    /// A new lease of `ttl` seconds.
    fn grant(&mut self, ttl: u64) -> Result<i64, StoreError>;
    /// Refreshes a lease; Ok(None) when it is gone.
    fn keepalive(&mut self, id: i64) -> Result<Option<i64>, StoreError>;
    /// Revokes a lease and deletes its keys; a lease already gone is fine.
    fn revoke(&mut self, id: i64) -> Result<(), StoreError>;
    /// The keys attached to a lease; Ok(None) when it is gone.
    fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, StoreError>;
    /// A lease's remaining and granted TTL, without refreshing it; Ok(None) when gone.
    fn time_to_live(&mut self, id: i64) -> Result<Option<LeaseTtl>, StoreError>;
}
