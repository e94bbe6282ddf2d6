//! Indexing a host that has no index yet: one read of the whole prefix, in pages at one
//! revision, keeping only this host's directories (and the port claims of other hosts'
//! directories, which older registrators record nowhere else), so memory stays bounded
//! whatever the fleet's size. Afterwards the legacy claims are left as hints and the
//! marker says that this host never needs to read the whole prefix again.

use std::mem;

use super::index::{Keys, FORMAT, HINT};
use super::pass::Read;
use super::{Options, Outcome, Reconciler, SyncError};
use crate::plan::{self, Desired, Fields, Op, OWNER_FIELD};
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
    /// Keys read in all, and the requests that took.
    pub keys: usize,
    pub pages: usize,
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

/// Reads the whole prefix once, in pages at one revision, and keeps this host's
/// directories and other hosts' claims.
///
/// etcd 3.4 walks the whole rest of a range to answer each page of it, so pages of an
/// open range would cost O(prefix) each. A page that ends inside a service name's keys
/// is therefore continued within that name only (`<prefix>/<name>/` .. `<prefix>/<name>0`):
/// only the first page after each name walks the rest of the prefix.
pub(super) fn scan<K: Store>(store: &mut K, opts: &Options) -> Result<Scan, StoreError> {
    let mut c = Collector {
        prefix: &opts.prefix,
        hostname: &opts.hostname,
        dir: None,
        kvs: Vec::new(),
        scan: Scan::default(),
    };
    let all_end = format!("{}0", opts.prefix);
    let mut start = opts.keys().services();
    let mut end = all_end.clone();
    let mut revision = 0;
    loop {
        let page = store.range_page(&start, &end, PAGE, revision)?;
        revision = page.revision;
        c.scan.pages += 1;
        let last = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            c.push(kv);
        }
        match last {
            Some(last) if page.more => {
                end = name_end(&opts.prefix, &last).unwrap_or_else(|| all_end.clone());
                start = format!("{last}\0");
            }
            // A name's keys are all read: on with the rest of the prefix.
            _ if end != all_end => start = mem::replace(&mut end, all_end.clone()),
            _ => break,
        }
    }
    c.flush();
    Ok(c.scan)
}

/// The end of the keys of the service name `key` is under: `<prefix>/<name>0` (`0`
/// follows `/`), None for a key of another shape.
fn name_end(prefix: &str, key: &str) -> Option<String> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let (name, _) = rest.split_once('/')?;
    (!name.is_empty()).then(|| format!("{prefix}/{name}0"))
}

impl<S: Source, K: Store> Reconciler<S, K> {
    /// Indexes a host that has no index yet. What is wanted and claims no port is
    /// registered first, from the wanted directories alone, so a big fleet does not
    /// hold registration up; then the whole prefix is read once for the rest: this
    /// host's stale directories, and the port claims of hosts not yet upgraded.
    pub(super) fn index_this_host(
        &mut self,
        desired: &Desired,
        read: &mut Read,
        lease: Option<i64>,
        outcome: &mut Outcome,
    ) -> Result<(), SyncError> {
        let (ops, _) = plan::plan(
            desired,
            &read.actual,
            &read.index.services,
            &self.opts.hostname,
            lease,
        );
        let early: Vec<Op> = ops
            .into_iter()
            .filter(|op| matches!(op, Op::Register { .. } | Op::Update { .. }))
            .filter(|op| desired.get(op.dir()).is_some_and(|w| w.claim.is_none()))
            .collect();
        // A dry run writes nothing, so its plan comes once, after the full read.
        if !early.is_empty() && !self.opts.dry_run {
            self.writer().apply(&early, outcome)?;
            let keys = self.opts.keys();
            let kvs = self.store.range_prefixes(&[keys.host()])?;
            read.index = keys.host_index(&kvs);
        }
        let scan = self.scan_for_index()?;
        read.actual.extend(self.group(scan.own));
        read.legacy = Some(scan.legacy);
        Ok(())
    }

    /// The full read of a host that has no index yet.
    fn scan_for_index(&mut self) -> Result<Scan, StoreError> {
        let scan = scan(&mut self.store, &self.opts)?;
        log::info!(
            "no index of host {} under {} yet: read the whole prefix once ({} keys in {} \
             pages) and found {} keys of this host",
            self.opts.hostname,
            self.opts.index_prefix,
            scan.keys,
            scan.pages,
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
    }

    #[test]
    fn pages_continue_within_a_name_so_few_walk_the_rest_of_the_prefix() {
        let mut etcd = FakeEtcd::default();
        // 4 names x 2,500 directories x 2 keys: 20,000 keys, 20 pages.
        for name in ["a", "a-b", "b", "c"] {
            for i in 0..2500 {
                for f in ["node", "port"] {
                    etcd.kv
                        .insert(format!("/s/{name}/o{i:04}:c:80/{f}"), ("o".into(), 0, 1));
                }
            }
        }
        etcd.kv.insert("/s/zz".into(), ("stray".into(), 0, 1));
        let opts = crate::reconcile::fakes::options("h", 30);
        let s = scan(&mut etcd, &opts).unwrap();
        assert_eq!(s.keys, 20_001, "every key once");
        assert!(etcd.largest_page <= PAGE);
        assert!(s.pages <= 20 + 4 + 1, "{} pages", s.pages);
        // Open-ended pages would walk about 20 x 10,000 keys; these walk each name
        // (5,000 keys) about twice and the rest of the prefix once per name.
        assert!(etcd.walked < 100_000, "walked {} keys", etcd.walked);
    }

    #[test]
    fn name_ends() {
        assert_eq!(
            name_end("/s", "/s/web/h:c:80/port").as_deref(),
            Some("/s/web0")
        );
        assert_eq!(name_end("/s", "/s/stray"), None);
        assert_eq!(name_end("/s", "/t/web/x/port"), None);
    }
}
