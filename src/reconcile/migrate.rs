//! Indexing a host that has no index yet: one read of the whole prefix, in pages at one
//! revision, keeping only this host's directories (and the port claims of other hosts'
//! directories, which older registrators record nowhere else), so memory stays bounded
//! whatever the fleet's size. Afterwards the legacy claims are left as hints and the
//! marker says that this host never needs to read the whole prefix again.

use std::mem;

use super::index::{Keys, FORMAT, HINT};
use super::{Options, Reconciler};
use crate::plan::{self, Fields, OWNER_FIELD};
use crate::service::Claim;
use crate::source::Source;
use crate::store::{Kv, Store, StoreError};

/// Keys per page of the full read: about 200 KB of answer.
const PAGE: usize = 1000;

/// A port claim recorded only in another host's service directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Legacy {
    pub claim: Claim,
    pub host: String,
    pub dir: String,
}

/// What the full read found.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Every key of this host's directories.
    pub own: Vec<Kv>,
    /// Other hosts' directories that claim a port.
    pub legacy: Vec<Legacy>,
    /// Keys read in all.
    pub keys: usize,
}

/// Collects one directory at a time (a directory's keys are adjacent in key order) and
/// keeps it only if it is this host's or claims a port.
struct Collector<'a> {
    prefix: &'a str,
    hostname: &'a str,
    dir: Option<String>,
    /// The current directory's (field, key) pairs.
    kvs: Vec<(String, Kv)>,
    scan: Scan,
}

impl Collector<'_> {
    fn push(&mut self, kv: Kv) {
        self.scan.keys += 1;
        let split = plan::split_key(self.prefix, &kv.key);
        if split.as_ref().map(|(d, _)| d) != self.dir.as_ref() {
            self.flush();
            self.dir = split.as_ref().map(|(d, _)| d.clone());
        }
        if let Some((_, field)) = split {
            self.kvs.push((field, kv));
        }
    }

    fn flush(&mut self) {
        let kvs = mem::take(&mut self.kvs);
        let Some(dir) = self.dir.take() else {
            return;
        };
        let owner = kvs
            .iter()
            .find(|(f, _)| f == OWNER_FIELD)
            .map(|(_, kv)| kv.value.clone());
        match owner {
            Some(h) if h == self.hostname => {
                self.scan.own.extend(kvs.into_iter().map(|(_, kv)| kv));
            }
            Some(host) => {
                let fields: Fields = kvs.into_iter().map(|(f, kv)| (f, kv.value)).collect();
                if let Some(claim) = Keys::claim_in(&fields) {
                    self.scan.legacy.push(Legacy { claim, host, dir });
                }
            }
            None => {}
        }
    }
}

/// Reads the whole prefix once, in pages, and keeps this host's directories and other
/// hosts' claims.
pub(super) fn scan<K: Store>(store: &mut K, opts: &Options) -> Result<Scan, StoreError> {
    let mut c = Collector {
        prefix: &opts.prefix,
        hostname: &opts.hostname,
        dir: None,
        kvs: Vec::new(),
        scan: Scan::default(),
    };
    store.scan_prefix(&opts.keys().services(), PAGE, &mut |page| {
        for kv in page {
            c.push(kv);
        }
    })?;
    c.flush();
    Ok(c.scan)
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// The full read of a host that has no index yet.
    pub(super) fn scan_for_index(&mut self) -> Result<Scan, StoreError> {
        let scan = scan(&mut self.store, &self.opts)?;
        log::info!(
            "no index of host {} under {} yet: read the whole prefix once ({} keys) and \
             found {} keys of this host",
            self.opts.hostname,
            self.opts.index_prefix,
            scan.keys,
            scan.own.len()
        );
        Ok(scan)
    }

    /// After the pass that indexed this host: leaves other hosts' legacy claims as hints
    /// and writes the marker, last, so an interrupted migration runs again.
    pub(super) fn finish_migration(&mut self, legacy: &[Legacy]) -> Result<(), StoreError> {
        let keys = self.opts.keys();
        let mut pairs: Vec<(String, String)> = legacy
            .iter()
            .map(|l| (keys.hint(l.claim, &l.host, &l.dir), HINT.to_string()))
            .collect();
        pairs.push((keys.marker(), FORMAT.to_string()));
        let host = keys.host();
        self.writer().put_unleased(&pairs)?;
        if !self.opts.dry_run {
            log::info!(
                "indexed host {} under {host}; from now on it reads only its own keys",
                self.opts.hostname
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fakes::FakeEtcd;

    #[test]
    fn the_full_read_keeps_own_directories_and_others_claims_only() {
        let mut etcd = FakeEtcd::default();
        let mut put = |k: &str, v: &str| {
            etcd.kv.insert(k.into(), (v.into(), 0, 1));
        };
        for host in ["a", "h", "z"] {
            for svc in ["db", "web"] {
                let dir = format!("/s/{svc}/{host}:c:80");
                put(&format!("{dir}/node"), host);
                put(&format!("{dir}/port"), "80");
                if svc == "db" {
                    put(&format!("{dir}/external_port"), "5432");
                }
            }
        }
        put("/s/stray", "x");
        let opts = crate::reconcile::fakes::options("h", 30);
        let s = scan(&mut etcd, &opts).unwrap();
        let own: Vec<&str> = s.own.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            own,
            [
                "/s/db/h:c:80/external_port",
                "/s/db/h:c:80/node",
                "/s/db/h:c:80/port",
                "/s/web/h:c:80/node",
                "/s/web/h:c:80/port"
            ]
        );
        let legacy: Vec<(&str, &str)> = s
            .legacy
            .iter()
            .map(|l| (l.host.as_str(), l.dir.as_str()))
            .collect();
        assert_eq!(legacy, [("a", "db/a:c:80"), ("z", "db/z:c:80")]);
        assert_eq!(s.keys, 16);
        assert!(
            etcd.pages > 0 && etcd.largest_page <= PAGE,
            "read in pages of at most {PAGE} keys"
        );
    }
}
