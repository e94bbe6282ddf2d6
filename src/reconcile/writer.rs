//! Writes ops to the store: each op as a guarded transaction, batched up to etcd's op
//! limit. The one place that honours `dry_run`: a dry run records the ops (and grants
//! and revokes nothing) instead of writing.

use super::{Options, Outcome, Reconciler};
use crate::plan::{Op, OWNER_FIELD};
use crate::store::{Compare, Request, Store, StoreError};

/// The store, borrowed for the writes of one step, with the lease the keys get.
pub(super) struct Writer<'a, K> {
    store: &'a mut K,
    opts: &'a Options,
    lease: i64,
}

impl<S, K: Store> Reconciler<S, K> {
    /// A writer that puts keys on the lease in use now.
    pub(super) fn writer(&mut self) -> Writer<'_, K> {
        let lease = self.lease();
        Writer {
            store: &mut self.store,
            opts: &self.opts,
            lease,
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

impl<K: Store> Writer<'_, K> {
    /// Applies ops in as few transactions as etcd's op limit allows. A batch whose
    /// guard fails is retried op by op, so one contested service does not block others.
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
        for batch in batches(ops, crate::store::MAX_TXN_OPS) {
            let (mut compares, mut requests) = (Vec::new(), Vec::new());
            for op in batch {
                self.txn_parts(op, &mut compares, &mut requests);
            }
            if self.store.txn(&compares, &requests)? {
                for op in batch {
                    log::info!("{op}");
                }
                outcome.applied += batch.len();
                crate::metrics::global().applied_ops(batch);
                continue;
            }
            for op in batch {
                let (mut compares, mut requests) = (Vec::new(), Vec::new());
                self.txn_parts(op, &mut compares, &mut requests);
                if batch.len() > 1 && self.store.txn(&compares, &requests)? {
                    log::info!("{op}");
                    outcome.applied += 1;
                    crate::metrics::global().applied_ops(std::slice::from_ref(op));
                    continue;
                }
                match guard {
                    Guard::Guess => log::debug!(
                        "{}: fast path skipped (state differs); the full pass decides",
                        op.dir()
                    ),
                    Guard::Expected => log::warn!(
                        "{} changed under us (another host, or our own write whose answer \
                         was lost); checking again on the next pass",
                        op.dir()
                    ),
                }
                if guard == Guard::Expected {
                    crate::metrics::global().write_conflict();
                }
                outcome.failed += 1;
            }
        }
        Ok(())
    }

    /// Writes one op only if nothing under the prefix was created or changed after
    /// `revision` (a port claim checked against that read). Ok(false): something was,
    /// and the caller checks again.
    pub(super) fn apply_unchanged_since(
        &mut self,
        op: &Op,
        revision: i64,
        outcome: &mut Outcome,
    ) -> Result<bool, StoreError> {
        if self.opts.dry_run {
            outcome.ops.push(op.clone());
            return Ok(true);
        }
        let (mut compares, mut requests) = (Vec::new(), Vec::new());
        self.txn_parts(op, &mut compares, &mut requests);
        compares.push(Compare::Unchanged {
            prefix: format!("{}/", self.opts.prefix),
            revision,
        });
        if !self.store.txn(&compares, &requests)? {
            return Ok(false);
        }
        log::info!("{op}");
        outcome.applied += 1;
        crate::metrics::global().applied_ops(std::slice::from_ref(op));
        Ok(true)
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

    fn txn_parts(&self, op: &Op, compares: &mut Vec<Compare>, requests: &mut Vec<Request>) {
        txn_parts(op, self.opts, self.lease, compares, requests);
    }
}

/// The transaction of one op: a compare on the directory's owner marker (missing for a
/// new service, this host for one of ours) and its puts and deletes, puts on `lease`.
fn txn_parts(
    op: &Op,
    opts: &Options,
    lease: i64,
    compares: &mut Vec<Compare>,
    requests: &mut Vec<Request>,
) {
    let key = |dir: &str, field: &str| format!("{}/{dir}/{field}", opts.prefix);
    let owner_key = key(op.dir(), OWNER_FIELD);
    let ours = || Compare::ValueEquals(owner_key.clone(), opts.hostname.clone());
    match op {
        Op::Register { dir, fields, .. } => {
            compares.push(Compare::Missing(owner_key.clone()));
            requests.extend(fields.iter().map(|(f, v)| Request::Put {
                key: key(dir, f),
                value: v.clone(),
                lease,
            }));
        }
        Op::Update {
            dir, put, delete, ..
        } => {
            compares.push(ours());
            requests.extend(put.iter().map(|(f, v)| Request::Put {
                key: key(dir, f),
                value: v.clone(),
                lease,
            }));
            requests.extend(delete.iter().map(|f| Request::Delete { key: key(dir, f) }));
        }
        Op::Deregister { dir } => {
            compares.push(ours());
            requests.push(Request::DeletePrefix {
                prefix: format!("{}/{dir}/", opts.prefix),
            });
        }
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

    fn opts(dry_run: bool) -> Options {
        Options {
            prefix: "/s".into(),
            hostname: "h".into(),
            dry_run,
            ttl: 30,
            adopt: true,
            keep_foreign_leases: false,
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
                requests: vec![put("/s/web/a/node", "h", 7), put("/s/web/a/port", "80", 7)],
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
                ],
            },
            Case {
                name: "deregister: the whole directory, only if still ours",
                op: Op::Deregister {
                    dir: "web/a".into(),
                },
                compares: vec![Compare::ValueEquals("/s/web/a/node".into(), "h".into())],
                requests: vec![Request::DeletePrefix {
                    prefix: "/s/web/a/".into(),
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
        let ops = vec![reg(5), reg(5), reg(5), reg(20), reg(1)];
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
        assert_eq!(calls, ["range_prefix"], "one read, no write");
        let mut w = r.writer();
        assert_eq!(w.grant(30).unwrap(), None);
        assert!(!w.revoke(1).unwrap());
        assert!(r.store.kv.is_empty());
    }
}
