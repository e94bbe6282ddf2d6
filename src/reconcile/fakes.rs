//! Test doubles of the reconciler's two sides: an in-memory etcd and a scripted Docker.
//! They model what the reconciler relies on (revisions, leases, guarded transactions;
//! a list that lags behind inspect) and count calls, so tests assert what a pass asks.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Options, Reconciler};
use crate::service::{Binding, Container, Health, Port, Proto, Settings};
use crate::source::{Source, SourceError};
use crate::store::{Compare, Kv, LeaseTtl, Request, Store, StoreError, MAX_TXN_OPS};

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
    fn containers(&mut self) -> Result<Vec<Container>, SourceError> {
        self.lists += 1;
        if self.down {
            return Err(SourceError::new(
                "list containers at unix:///nonexistent: refused",
            ));
        }
        Ok(self.containers.clone())
    }
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, SourceError> {
        self.inspects += 1;
        let mut c = self.containers.iter().find(|c| c.id == id).cloned();
        if let Some(c) = c.as_mut() {
            c.running &= !self.dead.contains(id);
        }
        Ok(c)
    }
}

thread_local! {
    /// The fake clock: lease expiry is measured on it, and only [`pause`] moves it, so
    /// a test that waits for a lease's TTL takes no time. Each test has its own thread.
    static NOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The reconciler's pause in tests: moves the fake clock instead of sleeping.
pub fn pause(d: Duration) {
    NOW.with(|n| n.set(n.get() + d));
}

/// The fake clock's time.
pub fn now() -> Duration {
    NOW.with(Cell::get)
}

/// A granted lease on the fake clock.
#[derive(Debug, Clone, Copy)]
pub struct FakeLease {
    pub granted: u64,
    pub expires: Duration,
}

/// etcd semantics that matter here: revisions, leases with TTLs that run out on the fake
/// clock, guarded txns, and the limits etcd puts on one txn.
pub struct FakeEtcd {
    /// Key -> (value, lease, revision of its last change).
    pub kv: BTreeMap<String, (String, i64, i64)>,
    pub rev: i64,
    pub leases: BTreeMap<i64, FakeLease>,
    pub next_lease: i64,
    /// Leases another process keeps alive: refreshed whenever the fake clock is read.
    pub kept_by_twin: BTreeSet<i64>,
    /// The raft term answers carry (a leader change increments it).
    pub term: u64,
    /// Largest txn (bytes of keys and values) accepted, as etcd's `--max-request-bytes`.
    pub max_txn_bytes: usize,
    /// Most requests in one txn, as etcd's `--max-txn-ops`.
    pub max_txn_ops: usize,
    /// Out of space (etcd's NOSPACE alarm): every txn that puts is refused.
    pub full: bool,
    /// Keys under this prefix are outside the user's role: permission denied.
    pub denied: Option<String>,
    /// How often each store method was called, and the calls in order.
    pub calls: BTreeMap<&'static str, usize>,
    pub log: Vec<&'static str>,
    /// Every prefix read, in order (each prefix of a `range_prefixes` too).
    pub reads: Vec<String>,
}

impl Default for FakeEtcd {
    fn default() -> Self {
        FakeEtcd {
            kv: BTreeMap::new(),
            rev: 0,
            leases: BTreeMap::new(),
            next_lease: 0,
            kept_by_twin: BTreeSet::new(),
            term: 1,
            max_txn_bytes: 1536 * 1024,
            max_txn_ops: MAX_TXN_OPS,
            full: false,
            denied: None,
            calls: BTreeMap::new(),
            log: Vec::new(),
            reads: Vec::new(),
        }
    }
}

impl FakeEtcd {
    /// Counts a call, and lets the fake clock act first: a twin refreshes its leases,
    /// leases past their TTL expire with their keys.
    fn count(&mut self, what: &'static str) {
        *self.calls.entry(what).or_default() += 1;
        self.log.push(what);
        let t = now();
        for (id, l) in self.leases.iter_mut() {
            if self.kept_by_twin.contains(id) {
                l.expires = t + Duration::from_secs(l.granted);
            }
        }
        let gone: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= t)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.expire(id);
        }
    }

    fn check_permission<'a>(
        &self,
        mut keys: impl Iterator<Item = &'a String>,
    ) -> Result<(), StoreError> {
        match &self.denied {
            Some(d) if keys.any(|k| k.starts_with(d.as_str())) => {
                Err(StoreError::denied(format!("permission denied on {d}")))
            }
            _ => Ok(()),
        }
    }

    /// A lease of `ttl` s granted now (by another process, say), with its ID.
    pub fn grant_lease(&mut self, ttl: u64) -> i64 {
        self.next_lease += 1;
        let lease = FakeLease {
            granted: ttl,
            expires: now() + Duration::from_secs(ttl),
        };
        self.leases.insert(self.next_lease, lease);
        self.next_lease
    }

    /// The granted TTL of a live lease.
    pub fn granted(&self, id: i64) -> Option<u64> {
        self.leases.get(&id).map(|l| l.granted)
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
        self.kept_by_twin.remove(&lease);
        self.kv.retain(|_, (_, l, _)| *l != lease);
    }
}

impl Store for FakeEtcd {
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        self.count("range_prefix");
        self.reads.push(prefix.to_string());
        Ok((self.under(prefix), self.rev))
    }
    fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError> {
        self.count("range_prefixes");
        self.check_permission(prefixes.iter())?;
        self.reads.extend(prefixes.iter().cloned());
        Ok(prefixes.iter().flat_map(|p| self.under(p)).collect())
    }
    fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, StoreError> {
        self.count("txn");
        let bytes: usize = requests
            .iter()
            .map(|r| match r {
                Request::Put { key, value, .. } => key.len() + value.len(),
                Request::Delete { key } => key.len(),
                Request::DeletePrefix { prefix } => prefix.len(),
            })
            .sum();
        let keys = requests.iter().map(|r| match r {
            Request::Put { key, .. } | Request::Delete { key } => key,
            Request::DeletePrefix { prefix } => prefix,
        });
        let compared = compares.iter().map(|c| match c {
            Compare::ValueEquals(k, _) | Compare::Missing(k) => k,
            Compare::Unchanged { prefix, .. } => prefix,
        });
        self.check_permission(keys.chain(compared))?;
        if requests.len() > self.max_txn_ops || compares.len() > self.max_txn_ops {
            return Err(StoreError::refused("too many operations in txn request"));
        }
        if self.full && requests.iter().any(|r| matches!(r, Request::Put { .. })) {
            return Err(StoreError::cluster("mvcc: database space exceeded"));
        }
        if bytes > self.max_txn_bytes {
            return Err(StoreError::refused("request is too large"));
        }
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
    fn grant(&mut self, ttl: u64) -> Result<i64, StoreError> {
        self.count("grant");
        if self.full {
            return Err(StoreError::cluster("mvcc: database space exceeded"));
        }
        Ok(self.grant_lease(ttl))
    }
    fn keepalive(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
        self.count("keepalive");
        let t = now();
        Ok(self.leases.get_mut(&id).map(|l| {
            l.expires = t + Duration::from_secs(l.granted);
            l.granted as i64
        }))
    }
    fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
        self.count("revoke");
        self.expire(id);
        Ok(())
    }
    fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, StoreError> {
        self.count("lease_keys");
        if !self.leases.contains_key(&id) {
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
    fn time_to_live(&mut self, id: i64) -> Result<Option<LeaseTtl>, StoreError> {
        self.count("time_to_live");
        let t = now();
        Ok(self.leases.get(&id).map(|l| LeaseTtl {
            // etcd rounds down.
            remaining: l.expires.saturating_sub(t).as_secs() as i64,
            granted: l.granted as i64,
            term: self.term,
        }))
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
        networks: BTreeMap::new(),
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
        network: None,
        ip_label: None,
    };
    let mut r = Reconciler::new(docker, etcd, settings, options(host, ttl), |_| {
        Err("no lookup in tests".into())
    });
    r.clock = now;
    r
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
        keep_foreign_leases: false,
        exclusive: false,
        claim_grace: std::time::Duration::ZERO,
    }
}
