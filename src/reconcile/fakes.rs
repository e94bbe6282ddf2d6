//! Test doubles of the reconciler's two sides: an in-memory etcd and a scripted Docker.
//! They model what the reconciler relies on (revisions, leases, guarded transactions;
//! a list that lags behind inspect) and count calls, so tests assert what a pass asks.

use std::collections::{BTreeMap, BTreeSet};

use super::{Options, Reconciler};
use crate::docker::DockerError;
use crate::service::{Binding, Container, Health, Port, Proto, Settings};
use crate::source::Source;
use crate::store::{Compare, Kv, Page, Request, Store, StoreError};

#[derive(Default)]
pub struct FakeDocker {
    pub containers: Vec<Container>,
    /// Every call fails, as with dockerd stopped.
    pub down: bool,
    pub lists: usize,
    pub inspects: usize,
    /// IDs that inspect reports as stopped while the list still shows them running.
    pub dead: BTreeSet<String>,
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
pub struct FakeEtcd {
    /// Key -> (value, lease, revision of its last change).
    pub kv: BTreeMap<String, (String, i64, i64)>,
    pub rev: i64,
    pub leases: BTreeSet<i64>,
    pub next_lease: i64,
    /// How often each store method was called, and the calls in order.
    pub calls: BTreeMap<&'static str, usize>,
    pub log: Vec<&'static str>,
    /// Every prefix read, in order (each prefix of a `range_prefixes` too).
    pub reads: Vec<String>,
    /// The most keys in one page of `range_page`, and how many keys its pages walked
    /// in all (etcd 3.4 walks the whole rest of a range for each page).
    pub largest_page: usize,
    pub walked: usize,
}

impl FakeEtcd {
    fn count(&mut self, what: &'static str) {
        *self.calls.entry(what).or_default() += 1;
        self.log.push(what);
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
    /// How many service keys (under `/s/`) and index entries of services (of any host)
    /// there are.
    pub fn counts(&self) -> (usize, usize) {
        let services = self.kv.keys().filter(|k| k.starts_with("/s/")).count();
        let entries = self
            .kv
            .keys()
            .filter(|k| k.starts_with("/s.index/hosts/") && k.contains("/services/"))
            .count();
        (services, entries)
    }
    /// The lease runs out: it and its keys are gone.
    pub fn expire(&mut self, lease: i64) {
        self.leases.remove(&lease);
        self.kv.retain(|_, (_, l, _)| *l != lease);
    }
}

impl Store for FakeEtcd {
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        self.count("range_prefix");
        self.reads.push(prefix.to_string());
        Ok((self.under(prefix), self.rev))
    }
    fn range_page(
        &mut self,
        start: &str,
        end: &str,
        limit: usize,
        _revision: i64,
    ) -> Result<Page, StoreError> {
        self.count("range_page");
        self.reads.push(format!("[{start}, {end})"));
        let in_range: Vec<Kv> = self
            .kv
            .range(start.to_string()..end.to_string())
            .map(|(k, (v, l, _))| Kv {
                key: k.clone(),
                value: v.clone(),
                lease: *l,
            })
            .collect();
        // etcd 3.4 walks the whole rest of the range for every page.
        self.walked += in_range.len();
        let kvs: Vec<Kv> = in_range.iter().take(limit).cloned().collect();
        self.largest_page = self.largest_page.max(kvs.len());
        Ok(Page {
            more: in_range.len() > kvs.len(),
            kvs,
            revision: self.rev,
        })
    }
    fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError> {
        self.count("range_prefixes");
        self.reads.extend(prefixes.iter().cloned());
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

/// Container `n`: `id<n>`, `c<n>`, port 80 published on 127.0.0.1:3000<n>.
pub fn container(n: usize, env: &[&str]) -> Container {
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

/// A reconciler of host `host` over the fakes, keys under `/s`, with a lease of `ttl` s.
pub fn reconciler(
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
    Reconciler::new(docker, etcd, settings, options(host, ttl), |_| None)
}

/// The options of [`reconciler`]: keys under `/s`, the index under `/s.index`, claims
/// released as soon as no service claims them.
pub fn options(host: &str, ttl: u64) -> Options {
    Options {
        prefix: "/s".into(),
        index_prefix: "/s.index".into(),
        hostname: host.into(),
        dry_run: false,
        ttl,
        adopt: true,
        keep_foreign_leases: false,
        claim_grace: std::time::Duration::ZERO,
    }
}
