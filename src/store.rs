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

/// One page of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// More keys follow in the range.
    pub more: bool,
    /// The revision the page was read at.
    pub revision: i64,
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
pub struct StoreError(Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError(e.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The operations the reconciler needs from its store.
pub trait Store {
    /// Every key under `prefix` and the revision of that read.
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError>;
    /// At most `limit` keys of [`start`, `end`) in key order, read at `revision` (0: the
    /// latest), so that a huge prefix can be read page by page in bounded memory.
    fn range_page(
        &mut self,
        start: &str,
        end: &str,
        limit: usize,
        revision: i64,
    ) -> Result<Page, StoreError>;
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
}
