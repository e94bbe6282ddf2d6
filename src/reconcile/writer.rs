//! Writes ops to the store: each op as a guarded transaction, batched up to etcd's op
//! limit. The one place that honours `dry_run`: a dry run records the ops (and grants
//! and revokes nothing) instead of writing.
//!
//! One service never blocks another: a batch etcd refuses for its size is split in
//! halves, a contested one is written again op by op, and an op refused alone becomes
//! that service's problem. A service too big for one transaction is written in several,
//! the fields a consumer routes on last. A cluster-wide refusal (out of space, too many
//! requests) is never retried piece by piece: it ends the pass, which backs off.

use super::{Options, Outcome, Reconciler};
use crate::keys::OWNER_FIELD;
use crate::metrics::{Change, Metrics};
use crate::plan::{ClaimOp, Op};
use crate::service::{Problem, Refusal};
use crate::store::{Compare, Request, Store, StoreError, MAX_TXN_OPS};

/// The fields a consumer needs before it routes to a service: the example HAProxy
/// consumer (`tests/examples/haproxy/model.rs`, `instance`) skips a directory without
/// any of them. A service written in several transactions gets them in the last one,
/// so no consumer sees it routable before it is complete.
pub(super) const ROUTING_FIELDS: [&str; 3] = ["address", "port", "mode"];

/// The store, borrowed for the writes of one step, with the lease the keys get.
pub(super) struct Writer<'a, K> {
    store: &'a mut K,
    opts: &'a Options,
    lease: i64,
    metrics: &'a Metrics,
}

impl<S, K: Store> Reconciler<S, K> {
    /// A writer that puts keys on the lease in use now.
    pub(super) fn writer(&mut self) -> Writer<'_, K> {
        let lease = self.lease();
        Writer::new(&mut self.store, &self.opts, lease, &self.metrics)
    }
}

impl<'a, K: Store> Writer<'a, K> {
    /// A writer to `store` (the reconciler's, or the one `--deregister-on-exit` uses).
    pub(super) fn new(
        store: &'a mut K,
        opts: &'a Options,
        lease: i64,
        metrics: &'a Metrics,
    ) -> Self {
        Writer {
            store,
            opts,
            lease,
            metrics,
        }
    }
}

/// Whether a failed guard is news: the event fast path guesses, so its misses are
/// expected and only logged at debug (the full pass that follows settles them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    Expected,
    Guess,
}

/// How one transaction came out.
enum Written {
    Applied,
    /// A guard did not hold: another writer changed the directory meanwhile.
    Contested,
    /// etcd refused the request for what it carries (too many ops, too large).
    Refused(StoreError),
}

impl<K: Store> Writer<'_, K> {
    /// Applies ops in as few transactions as etcd's op limit allows (see
    /// [`Writer::apply_batch`]), so one contested or oversized service does not block
    /// others; an op too big for one transaction is written in parts.
    pub(super) fn apply(&mut self, ops: &[Op], outcome: &mut Outcome) -> Result<(), StoreError> {
        self.apply_ops(ops, outcome, Guard::Expected)
    }

    /// [`Writer::apply`] for the event fast path: a failed guard is logged at debug.
    pub(super) fn apply_guess(
        &mut self,
        ops: &[Op],
        outcome: &mut Outcome,
    ) -> Result<(), StoreError> {
        self.apply_ops(ops, outcome, Guard::Guess)
    }

    fn apply_ops(
        &mut self,
        ops: &[Op],
        outcome: &mut Outcome,
        guard: Guard,
    ) -> Result<(), StoreError> {
        if self.opts.dry_run {
            outcome.ops.extend(ops.iter().cloned());
            return Ok(());
        }
        for batch in batches(ops, MAX_TXN_OPS) {
            self.apply_batch(batch, outcome, guard)?;
        }
        Ok(())
    }

    /// Writes a batch in one transaction. One that etcd refuses for its size is split in
    /// halves, each written the same way (an etcd with a lower op or size limit costs a
    /// few more transactions, not one per op); one whose guard failed is written op by op
    /// to find the contested op; an op refused alone is that service's problem. Any
    /// other failure (etcd out of space, overloaded, unreachable) ends the write at once:
    /// every smaller request would fail alike.
    fn apply_batch(
        &mut self,
        batch: &[Op],
        outcome: &mut Outcome,
        guard: Guard,
    ) -> Result<(), StoreError> {
        if let [op] = batch {
            if op.size() > MAX_TXN_OPS {
                return self.apply_in_parts(op, outcome, guard);
            }
        }
        match self.write(batch)? {
            Written::Applied => {
                for op in batch {
                    log::info!(service = op.dir(), container = op.container(); "{op}");
                }
                outcome.applied += batch.len();
                self.count(batch);
            }
            // One op alone: its outcome is final.
            Written::Contested if batch.len() == 1 => {
                contested(&batch[0], guard, outcome, self.metrics)
            }
            Written::Refused(e) if batch.len() == 1 => refused(&batch[0], &e, outcome),
            Written::Contested => {
                for op in batch {
                    self.apply_batch(std::slice::from_ref(op), outcome, guard)?;
                }
            }
            Written::Refused(_) => {
                let (first, second) = batch.split_at(batch.len() / 2);
                self.apply_batch(first, outcome, guard)?;
                self.apply_batch(second, outcome, guard)?;
            }
        }
        Ok(())
    }

    /// Writes ops in one transaction. Err only when the store failed (unreachable...),
    /// which ends the pass: every other write would fail the same way.
    fn write(&mut self, ops: &[Op]) -> Result<Written, StoreError> {
        let (mut compares, mut requests) = (Vec::new(), Vec::new());
        for op in ops {
            self.txn_parts(op, &mut compares, &mut requests);
        }
        self.run_txn(&compares, &requests)
    }

    fn run_txn(
        &mut self,
        compares: &[Compare],
        requests: &[Request],
    ) -> Result<Written, StoreError> {
        match self.store.txn(compares, requests) {
            Ok(true) => Ok(Written::Applied),
            Ok(false) => Ok(Written::Contested),
            Err(e) if e.is_refused() => Ok(Written::Refused(e)),
            Err(e) => Err(e),
        }
    }

    /// Writes an op too big for one transaction in several (see [`parts`]). A part
    /// whose guard fails or that etcd refuses stops the op; the parts written so far
    /// leave the service unroutable, and the next pass completes it.
    fn apply_in_parts(
        &mut self,
        op: &Op,
        outcome: &mut Outcome,
        guard: Guard,
    ) -> Result<(), StoreError> {
        let (mut compares, mut requests) = (Vec::new(), Vec::new());
        self.txn_parts(op, &mut compares, &mut requests);
        let owner = self.opts.keys().field(op.dir(), OWNER_FIELD);
        let ours = Compare::ValueEquals(owner, self.opts.hostname.clone());
        let index = self.opts.keys().service(op.dir());
        let parts = parts(compares, requests, ours, &index, MAX_TXN_OPS);
        let n = parts.len();
        for (compares, requests) in parts {
            match self.run_txn(&compares, &requests)? {
                Written::Applied => {}
                Written::Contested => {
                    contested(op, guard, outcome, self.metrics);
                    return Ok(());
                }
                Written::Refused(e) => {
                    refused(op, &e, outcome);
                    return Ok(());
                }
            }
        }
        log::info!(service = op.dir(), container = op.container(); "{op} (in {n} transactions)");
        outcome.applied += 1;
        self.count(std::slice::from_ref(op));
        Ok(())
    }

    /// Takes a port claim: puts the claim's keys together with the ops of the services
    /// that claim it, in one transaction that only succeeds if no claimant of the port
    /// was added or changed after `revision` (the read that found the port free) and
    /// every op's own guard holds: one compare on the port's prefix, whatever it holds.
    /// Ok(false): something changed, and the caller checks again.
    pub(super) fn apply_claim_guarded(
        &mut self,
        hold: &ClaimOp,
        ops: &[Op],
        revision: i64,
        outcome: &mut Outcome,
    ) -> Result<bool, StoreError> {
        if self.opts.dry_run {
            outcome.claims.push(hold.clone());
            outcome.ops.extend(ops.iter().cloned());
            return Ok(true);
        }
        let ClaimOp::Hold { claim, .. } = hold else {
            return Ok(false);
        };
        let mut compares = vec![Compare::Unchanged {
            prefix: self.opts.keys().claimants(*claim),
            revision,
        }];
        let mut requests = claim_requests(hold, self.opts, self.lease);
        for op in ops {
            self.txn_parts(op, &mut compares, &mut requests);
        }
        if !self.store.txn(&compares, &requests)? {
            return Ok(false);
        }
        log::info!("{hold}");
        for op in ops {
            log::info!(service = op.dir(), container = op.container(); "{op}");
        }
        outcome.applied += ops.len();
        self.count(ops);
        Ok(true)
    }

    /// Puts claims again (on a new lease) and releases those whose holder is gone, one
    /// transaction each; a release only if the claim still names its holder.
    pub(super) fn apply_claims(
        &mut self,
        ops: &[ClaimOp],
        outcome: &mut Outcome,
    ) -> Result<(), StoreError> {
        if self.opts.dry_run {
            outcome.claims.extend(ops.iter().cloned());
            return Ok(());
        }
        for op in ops {
            let compares = match op {
                ClaimOp::Hold { .. } => vec![],
                ClaimOp::Release { claim, name } => vec![Compare::ValueEquals(
                    self.opts.keys().own_claim(*claim),
                    name.clone(),
                )],
            };
            if self
                .store
                .txn(&compares, &claim_requests(op, self.opts, self.lease))?
            {
                log::info!("{op}");
            }
        }
        Ok(())
    }

    /// One transaction of the caller's own (the instance key); a dry run writes
    /// nothing and reports it applied.
    pub(super) fn txn(
        &mut self,
        compares: &[Compare],
        requests: &[Request],
    ) -> Result<bool, StoreError> {
        if self.opts.dry_run {
            return Ok(true);
        }
        self.store.txn(compares, requests)
    }

    /// A new lease of `ttl` seconds; None in a dry run, which grants nothing.
    pub(super) fn grant(&mut self, ttl: u64) -> Result<Option<i64>, StoreError> {
        if self.opts.dry_run {
            return Ok(None);
        }
        self.store.grant(ttl).map(Some)
    }

    /// Revokes a lease and so deletes its keys; false in a dry run, which revokes nothing.
    pub(super) fn revoke(&mut self, id: i64) -> Result<bool, StoreError> {
        if self.opts.dry_run {
            return Ok(false);
        }
        self.store.revoke(id).map(|()| true)
    }

    /// Counts the ops of a transaction etcd applied.
    fn count(&self, ops: &[Op]) {
        for op in ops {
            self.metrics.applied(change(op));
        }
    }

    fn txn_parts(&self, op: &Op, compares: &mut Vec<Compare>, requests: &mut Vec<Request>) {
        txn_parts(op, self.opts, self.lease, compares, requests);
    }
}

/// The kind of change an op makes, as counted.
fn change(op: &Op) -> Change {
    match op {
        Op::Register { .. } => Change::Register,
        Op::Update { .. } => Change::Update,
        Op::Deregister { .. } => Change::Deregister,
        // Only a stale index entry goes: a repair of this host's own records.
        Op::Unindex { .. } => Change::Update,
    }
}

/// An op whose guard failed: retried on the next pass.
fn contested(op: &Op, guard: Guard, outcome: &mut Outcome, metrics: &Metrics) {
    match guard {
        Guard::Guess => log::debug!(
            "{}: fast path skipped (state differs); the full pass decides",
            op.dir()
        ),
        Guard::Expected => {
            log::warn!(
                service = op.dir(), container = op.container();
                "{} changed under us (another host, or our own write whose answer was lost); \
                 checking again on the next pass",
                op.dir()
            );
            metrics.write_conflict();
        }
    }
    outcome.failed += 1;
}

/// An op etcd refused even alone: that service's problem (logged once while it lasts),
/// not the pass's.
fn refused(op: &Op, e: &StoreError, outcome: &mut Outcome) {
    outcome.problems.push(Problem {
        container: op.container().to_string(),
        message: format!(
            "service {} not written: etcd refused it ({e}); retried every sync",
            op.dir()
        ),
        kind: Refusal::TooLarge,
    });
}

/// Splits one op's transaction into parts of at most `max_ops` requests each, in an
/// order that never shows a consumer a half-written service: the owner marker first,
/// with the service's `index` entry (the first part carries the op's own guards, so it
/// claims the directory, and the index finds whatever an interrupted write left), then
/// the other fields and deletes, and the [`ROUTING_FIELDS`] last, all in the last part.
/// Every later part is guarded by `ours` (the owner marker still names this host).
fn parts(
    compares: Vec<Compare>,
    requests: Vec<Request>,
    ours: Compare,
    index: &str,
    max_ops: usize,
) -> Vec<(Vec<Compare>, Vec<Request>)> {
    let field_is = |r: &Request, fields: &[&str]| match r {
        Request::Put { key, .. } => fields
            .iter()
            .any(|f| key.rsplit_once('/').is_some_and(|(_, last)| last == *f)),
        _ => false,
    };
    let first = |r: &Request| match r {
        Request::Put { key, .. } => key == index,
        _ => false,
    };
    let (owner, rest): (Vec<Request>, Vec<Request>) = requests
        .into_iter()
        .partition(|r| field_is(r, &[OWNER_FIELD]) || first(r));
    let (routing, middle): (Vec<Request>, Vec<Request>) =
        rest.into_iter().partition(|r| field_is(r, &ROUTING_FIELDS));
    let mut chunks: Vec<Vec<Request>> = Vec::new();
    for r in owner.into_iter().chain(middle) {
        match chunks.last_mut() {
            Some(c) if c.len() < max_ops => c.push(r),
            _ => chunks.push(vec![r]),
        }
    }
    match chunks.last_mut() {
        Some(c) if c.len() + routing.len() <= max_ops => c.extend(routing),
        _ if routing.is_empty() => {}
        _ => chunks.push(routing),
    }
    let mut first = Some(compares);
    chunks
        .into_iter()
        .map(|c| (first.take().unwrap_or_else(|| vec![ours.clone()]), c))
        .collect()
}

/// The transaction of one op: a compare on the directory's owner marker (missing for a
/// new service, this host for one of ours), its puts and deletes, puts on `lease`, and
/// the service's index entry put or deleted with it (so the two never disagree).
fn txn_parts(
    op: &Op,
    opts: &Options,
    lease: i64,
    compares: &mut Vec<Compare>,
    requests: &mut Vec<Request>,
) {
    let keys = opts.keys();
    let key = |dir: &str, field: &str| keys.field(dir, field);
    let owner_key = key(op.dir(), OWNER_FIELD);
    let ours = || Compare::ValueEquals(owner_key.clone(), opts.hostname.clone());
    let index_key = opts.keys().service(op.dir());
    let put_index = |container: &str| Request::Put {
        key: index_key.clone(),
        value: container.to_string(),
        lease,
    };
    match op {
        Op::Register {
            dir,
            fields,
            container,
        } => {
            compares.push(Compare::Missing(owner_key.clone()));
            requests.extend(fields.iter().map(|(f, v)| Request::Put {
                key: key(dir, f),
                value: v.clone(),
                lease,
            }));
            requests.push(put_index(container));
        }
        Op::Update {
            dir,
            put,
            delete,
            container,
        } => {
            compares.push(ours());
            requests.extend(put.iter().map(|(f, v)| Request::Put {
                key: key(dir, f),
                value: v.clone(),
                lease,
            }));
            requests.extend(delete.iter().map(|f| Request::Delete { key: key(dir, f) }));
            requests.push(put_index(container));
        }
        Op::Deregister { dir } => {
            compares.push(ours());
            requests.push(Request::DeletePrefix {
                prefix: keys.dir(dir),
            });
            requests.push(Request::Delete {
                key: index_key.clone(),
            });
        }
        Op::Unindex { .. } => requests.push(Request::Delete {
            key: index_key.clone(),
        }),
    }
}

/// The requests of a claim op: this host's claim key and its own record of the claim,
/// put on `lease` or deleted.
fn claim_requests(op: &ClaimOp, opts: &Options, lease: i64) -> Vec<Request> {
    let keys = opts.keys();
    match op {
        ClaimOp::Hold { claim, name } => [keys.claim(*claim), keys.own_claim(*claim)]
            .into_iter()
            .map(|key| Request::Put {
                key,
                value: name.clone(),
                lease,
            })
            .collect(),
        ClaimOp::Release { claim, .. } => [keys.claim(*claim), keys.own_claim(*claim)]
            .into_iter()
            .map(|key| Request::Delete { key })
            .collect(),
    }
}

/// Splits ops into batches of at most `max_ops` etcd operations each (an op never
/// straddles two batches). An op larger than `max_ops` gets a batch of its own.
fn batches(ops: &[Op], max_ops: usize) -> Vec<&[Op]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, op) in ops.iter().enumerate() {
        // Each op also carries one owner compare; etcd limits compares separately.
        let n = op.size();
        if i > start && (size + n > max_ops || i - start + 1 > max_ops) {
            out.push(&ops[start..i]);
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < ops.len() {
        out.push(&ops[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fakes::{container, reconciler, FakeDocker, FakeEtcd};
    use crate::reconcile::SyncError;
    use crate::source::Change;

    fn opts(dry_run: bool) -> Options {
        Options {
            prefix: "/s".into(),
            index_prefix: "/s.index".into(),
            hostname: "h".into(),
            dry_run,
            ttl: 30,
            keep_foreign_leases: false,
            exclusive: false,
            claim_grace: std::time::Duration::ZERO,
        }
    }

    fn put(key: &str, value: &str, lease: i64) -> Request {
        Request::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    #[test]
    fn each_op_becomes_an_owner_guarded_txn() {
        struct Case {
            name: &'static str,
            op: Op,
            compares: Vec<Compare>,
            requests: Vec<Request>,
        }
        let cases = [
            Case {
                name: "register: only if no host owns the directory",
                op: Op::Register {
                    dir: "web/a".into(),
                    fields: [("node", "h"), ("port", "80")]
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .into(),
                    container: "c".into(),
                },
                compares: vec![Compare::Missing("/s/web/a/node".into())],
                requests: vec![
                    put("/s/web/a/node", "h", 7),
                    put("/s/web/a/port", "80", 7),
                    put("/s.index/hosts/h/services/web/a", "c", 7),
                ],
            },
            Case {
                name: "update: only if still ours",
                op: Op::Update {
                    dir: "web/a".into(),
                    put: [("port".to_string(), "81".to_string())].into(),
                    delete: vec!["domains/x".into()],
                    container: "c".into(),
                },
                compares: vec![Compare::ValueEquals("/s/web/a/node".into(), "h".into())],
                requests: vec![
                    put("/s/web/a/port", "81", 7),
                    Request::Delete {
                        key: "/s/web/a/domains/x".into(),
                    },
                    put("/s.index/hosts/h/services/web/a", "c", 7),
                ],
            },
            Case {
                name: "deregister: the whole directory and its index entry, only if still ours",
                op: Op::Deregister {
                    dir: "web/a".into(),
                },
                compares: vec![Compare::ValueEquals("/s/web/a/node".into(), "h".into())],
                requests: vec![
                    Request::DeletePrefix {
                        prefix: "/s/web/a/".into(),
                    },
                    Request::Delete {
                        key: "/s.index/hosts/h/services/web/a".into(),
                    },
                ],
            },
            Case {
                name: "unindex: the index entry alone",
                op: Op::Unindex {
                    dir: "web/a".into(),
                },
                compares: vec![],
                requests: vec![Request::Delete {
                    key: "/s.index/hosts/h/services/web/a".into(),
                }],
            },
        ];
        for case in cases {
            let (mut compares, mut requests) = (Vec::new(), Vec::new());
            txn_parts(&case.op, &opts(false), 7, &mut compares, &mut requests);
            assert_eq!(compares, case.compares, "{}", case.name);
            assert_eq!(requests, case.requests, "{}", case.name);
        }
    }

    #[test]
    fn batches_respect_the_op_limit() {
        let reg = |n: usize| Op::Register {
            dir: format!("s/{n}"),
            fields: (0..n).map(|i| (i.to_string(), String::new())).collect(),
            container: String::new(),
        };
        // Sizes 5, 5, 5, 21, 2: each op also puts its index entry.
        let ops = vec![reg(4), reg(4), reg(4), reg(20), reg(1)];
        let sizes: Vec<usize> = batches(&ops, 10).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1, 1]);
        let many: Vec<Op> = (0..300)
            .map(|_| Op::Deregister { dir: "x".into() })
            .collect();
        assert!(batches(&many, 128).iter().all(|b| b.len() <= 128));
        assert_eq!(
            batches(&many, 128).iter().map(|b| b.len()).sum::<usize>(),
            300
        );
    }

    #[test]
    fn an_op_too_big_for_one_txn_is_split_with_the_routing_fields_last() {
        const INDEX: &str = "/s.index/hosts/h/services/web/a";
        let key = |f: &str| format!("/s/web/a/{f}");
        let ours = Compare::ValueEquals(key("node"), "h".into());
        let fields = |n: usize| -> Vec<Request> {
            let mut r: Vec<Request> = ["address", "mode", "port", "node"]
                .iter()
                .map(|f| put(&key(f), "v", 7))
                .collect();
            r.extend((0..n).map(|i| put(&key(&format!("domains/d{i}")), "d", 7)));
            r.push(put(INDEX, "c", 7));
            r
        };
        struct Case {
            name: &'static str,
            requests: Vec<Request>,
            sizes: Vec<usize>,
        }
        let cases = [
            Case {
                name: "130 domains: owner, index entry, 126, then the rest and the routing fields",
                requests: fields(130),
                sizes: vec![128, 7],
            },
            Case {
                name: "the routing fields do not fit the last part: a part of their own",
                requests: fields(126),
                sizes: vec![128, 3],
            },
            Case {
                name: "1,000 domains: 8 parts",
                requests: fields(1000),
                sizes: vec![128, 128, 128, 128, 128, 128, 128, 109],
            },
        ];
        for case in cases {
            let all = case.requests.clone();
            let first_guard = vec![Compare::Missing(key("node"))];
            let parts = parts(first_guard.clone(), case.requests, ours.clone(), INDEX, 128);
            let sizes: Vec<usize> = parts.iter().map(|(_, r)| r.len()).collect();
            assert_eq!(sizes, case.sizes, "{}", case.name);
            assert_eq!(parts[0].0, first_guard, "{}: first part claims", case.name);
            assert_eq!(parts[0].1[0], put(&key("node"), "v", 7), "{}", case.name);
            assert_eq!(
                parts[0].1[1],
                put(INDEX, "c", 7),
                "{}: index entry",
                case.name
            );
            for (compares, _) in &parts[1..] {
                assert_eq!(compares, &vec![ours.clone()], "{}", case.name);
            }
            let (_, last) = parts.last().unwrap();
            for f in ROUTING_FIELDS {
                assert!(last.contains(&put(&key(f), "v", 7)), "{}: {f}", case.name);
            }
            let mut written: Vec<&Request> = parts.iter().flat_map(|(_, r)| r).collect();
            let mut want: Vec<&Request> = all.iter().collect();
            written.sort_by_key(|r| format!("{r:?}"));
            want.sort_by_key(|r| format!("{r:?}"));
            assert_eq!(written, want, "{}: every request once", case.name);
        }
    }

    /// Container `n` as an http service with `domains` domains.
    fn http(n: usize, domains: usize) -> crate::service::Container {
        let list: Vec<String> = (0..domains).map(|i| format!("d{i}.example.com")).collect();
        let env = [
            format!("SERVICE_NAME=web{n}"),
            "SERVICE_MODE=http".into(),
            format!("SERVICE_DOMAINS={}", list.join(",")),
        ];
        let env: Vec<&str> = env.iter().map(String::as_str).collect();
        container(n, &env)
    }

    #[test]
    fn a_service_of_130_domains_is_written_whole_and_blocks_no_one() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), http(2, 130), container(3, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        let out = r.sync().unwrap();
        assert_eq!((out.applied, out.failed), (3, 0));
        assert!(r.reports.reported.is_empty() && r.reports.refused.is_empty());
        let dir = "/s/web2/h:c2:80";
        let rev = |f: &str| r.store.kv[&format!("{dir}/{f}")].2;
        assert_eq!(
            r.store.kv.keys().filter(|k| k.starts_with(dir)).count(),
            134
        );
        // The routing fields come in the last transaction, with or after every domain;
        // the owner marker in the first.
        let domains_rev = (0..130)
            .map(|i| rev(&format!("domains/d{i}.example.com")))
            .max()
            .unwrap();
        for f in ROUTING_FIELDS {
            assert_eq!(rev(f), domains_rev, "{f} written before the last domains");
            assert!(rev(f) > rev("node"), "{f} in the first transaction");
        }
        assert_eq!(r.sync().unwrap().applied, 0, "a quiet pass after");
    }

    #[test]
    fn a_service_etcd_refuses_is_its_problem_and_the_pass_goes_on() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), http(2, 50), container(3, &[])],
            ..Default::default()
        };
        // Small enough that service 2 alone is too large; the others fit.
        let etcd = FakeEtcd {
            max_txn_bytes: 1000,
            ..Default::default()
        };
        let mut r = reconciler(docker, etcd, "h", 30);
        let out = r.sync().unwrap();
        assert_eq!((out.applied, out.failed), (2, 0));
        let refused: Vec<String> = r.reports.refused.iter().map(|p| p.to_string()).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0]
                .starts_with("container c2: service web2/h:c2:80 not written: etcd refused it"),
            "{refused:?}"
        );
        assert!(r.store.kv.keys().all(|k| !k.contains("web2")));
        assert!(r.started, "the pass counts as done");
        // The event fast path is on: a new container is registered at once.
        r.source.containers.push(container(4, &[]));
        r.on_event(Change::Up, "id4").unwrap();
        assert!(r.store.kv.contains_key("/s/img/h:c4:80/port"));
        // Refused again on the next pass: still one problem, not logged again.
        let out = r.sync().unwrap();
        assert_eq!(out.applied, 0);
        assert_eq!(r.reports.refused.len(), 1);
        // Once the container is gone, so is its problem.
        r.source.containers.retain(|c| c.id != "id2");
        r.sync().unwrap();
        assert!(r.reports.refused.is_empty());
    }

    #[test]
    fn a_batch_refused_for_its_size_is_halved_not_written_op_by_op() {
        let mut r = reconciler(FakeDocker::default(), FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        // An etcd with --max-txn-ops 40; 20 services of 5 requests each.
        r.store.max_txn_ops = 40;
        r.source.containers = (1..=20).map(|n| container(n, &[])).collect();
        let txns = r.store.calls.get("txn").copied().unwrap_or(0);
        let out = r.sync().unwrap();
        assert_eq!((out.applied, out.failed), (20, 0));
        assert_eq!(r.store.counts(), (80, 20));
        assert_eq!(
            r.store.calls["txn"] - txns,
            7,
            "100 requests refused, 2 x 50 refused, 4 x 25 written (op by op: 21)"
        );
    }

    #[test]
    fn a_cluster_wide_refusal_ends_the_pass_after_one_write() {
        let docker = FakeDocker {
            containers: vec![container(1, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.sync().unwrap();
        r.store.full = true;
        r.source.containers = (1..=10).map(|n| container(n, &[])).collect();
        let txns = r.store.calls.get("txn").copied().unwrap_or(0);
        let Err(SyncError::Store(e)) = r.sync() else {
            panic!("the pass must fail")
        };
        assert!(e.is_cluster(), "{e}");
        assert_eq!(r.store.calls["txn"] - txns, 1, "no retry op by op");
        assert!(r.reports.refused.is_empty(), "no service blamed for it");
        let Err(SyncError::Store(e)) = r.on_event(Change::Up, "id5") else {
            panic!("the fast path fails too")
        };
        assert!(e.is_cluster(), "{e}");
        assert_eq!(r.store.calls["txn"] - txns, 2);
    }

    #[test]
    fn a_dry_run_records_the_ops_and_writes_grants_and_revokes_nothing() {
        let docker = FakeDocker {
            containers: vec![container(1, &[]), container(2, &[])],
            ..Default::default()
        };
        let mut r = reconciler(docker, FakeEtcd::default(), "h", 30);
        r.opts.dry_run = true;
        let out = r.sync().unwrap();
        assert_eq!(out.ops.len(), 2);
        assert_eq!((out.applied, out.failed), (0, 0));
        assert_eq!(r.lease(), 0, "no lease granted");
        let calls: Vec<_> = r.store.calls.keys().copied().collect();
        assert_eq!(
            calls,
            ["range_prefixes"],
            "one read (this host's index and wanted directories), no write"
        );
        let mut w = r.writer();
        assert_eq!(w.grant(30).unwrap(), None);
        assert!(!w.revoke(1).unwrap());
        assert!(r.store.kv.is_empty());
    }
}
