//! The plan: desired keys from services, stored keys from etcd, and the difference as ops.
//!
//! Pure functions over ordered maps, so a plan is stable, printable (`--dry-run`) and
//! asserted in tests. Directories are relative to the key prefix: `<name>/<id>`.

use std::collections::BTreeMap;
use std::fmt;

use crate::keys::{dir_of, split_key, OWNER_FIELD};
use crate::service::{Claim, Problem, Refusal, Service};

/// Field (path under the service directory) -> value.
pub type Fields = BTreeMap<String, String>;

/// A service as this host wants it in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub fields: Fields,
    pub claim: Option<Claim>,
    /// Container name, for messages.
    pub container: String,
}

/// Directory (`<name>/<id>`) -> wanted service.
pub type Desired = BTreeMap<String, Want>;

/// A service directory as found in etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    pub fields: Fields,
    /// Lease of each key (0: none).
    pub leases: BTreeMap<String, i64>,
}

impl Stored {
    /// The host named by the ownership marker, if any.
    pub fn owner(&self) -> Option<&str> {
        self.fields.get(OWNER_FIELD).map(String::as_str)
    }
}

/// Directory -> stored service.
pub type Actual = BTreeMap<String, Stored>;

/// One key of the ownership index as read: its value and lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: String,
    pub lease: i64,
}

/// This host's index of its services: directory -> container name (see
/// `reconcile/index.rs` for where it lives).
pub type Index = BTreeMap<String, Entry>;

/// The keys each service should have, including the ownership marker.
pub fn desired(services: &[Service], hostname: &str) -> Desired {
    services
        .iter()
        .map(|s| {
            let mut f = Fields::new();
            f.insert("address".into(), s.address.clone());
            f.insert("port".into(), s.port.to_string());
            f.insert("mode".into(), s.mode.to_string());
            for d in &s.domains {
                f.insert(format!("domains/{d}"), d.clone());
            }
            if let Some(claim) = s.claim {
                f.insert(claim.field().into(), claim.port().to_string());
            }
            f.insert(OWNER_FIELD.into(), hostname.into());
            (
                dir_of(&s.name, &s.id),
                Want {
                    fields: f,
                    claim: s.claim,
                    container: s.container.clone(),
                },
            )
        })
        .collect()
}

/// Groups raw `(key, value, lease)` entries under `prefix` by service directory.
/// Keys that do not have the `<prefix>/<name>/<id>/<field>` shape are ignored.
pub fn group(prefix: &str, kvs: impl IntoIterator<Item = (String, String, i64)>) -> Actual {
    let mut actual = Actual::new();
    for (key, value, lease) in kvs {
        let Some((dir, field)) = split_key(prefix, &key) else {
            continue;
        };
        let stored = actual.entry(dir).or_default();
        stored.leases.insert(field.clone(), lease);
        stored.fields.insert(field, value);
    }
    actual
}

/// One change to etcd. Each op is applied atomically and guarded by the owner marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A new service: every key, only if no host owns the directory yet.
    Register {
        dir: String,
        fields: Fields,
        container: String,
    },
    /// An existing own service: changed keys put, vanished keys deleted.
    Update {
        dir: String,
        put: Fields,
        delete: Vec<String>,
        container: String,
    },
    /// An own service that should no longer exist: the whole directory.
    Deregister { dir: String },
    /// An index entry of a directory that is not this host's service (deleted by hand,
    /// or taken by another host): the entry alone.
    Unindex { dir: String },
}

/// A change to one of this host's port claims (its claim key and its own record of it,
/// both in the ownership index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOp {
    /// Puts the claim's keys: a new claim (checked first), or one put again on the lease.
    Hold { claim: Claim, name: String },
    /// Deletes the claim's keys: no service of the holder has claimed the port for the
    /// grace period.
    Release { claim: Claim, name: String },
}

impl fmt::Display for ClaimOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClaimOp::Hold { claim, name } => write!(f, "claim {claim} for service {name}"),
            ClaimOp::Release { claim, name } => {
                write!(f, "release {claim} (service {name} no longer claims it)")
            }
        }
    }
}

impl Op {
    pub fn dir(&self) -> &str {
        match self {
            Op::Register { dir, .. }
            | Op::Update { dir, .. }
            | Op::Deregister { dir }
            | Op::Unindex { dir } => dir,
        }
    }

    /// The container a service comes from (empty for a deregistration).
    pub fn container(&self) -> &str {
        match self {
            Op::Register { container, .. } | Op::Update { container, .. } => container,
            Op::Deregister { .. } | Op::Unindex { .. } => "",
        }
    }

    /// Number of etcd operations (puts and deletes) this op needs in a transaction,
    /// its index entry included.
    pub fn size(&self) -> usize {
        match self {
            Op::Register { fields, .. } => fields.len() + 1,
            Op::Update { put, delete, .. } => put.len() + delete.len() + 1,
            Op::Deregister { .. } => 2,
            Op::Unindex { .. } => 1,
        }
    }

    /// Formats the op with absolute keys under `prefix`, one key per line (`--dry-run`).
    pub fn display<'a>(&'a self, prefix: &'a str) -> impl fmt::Display + 'a {
        OpDisplay { op: self, prefix }
    }
}

struct OpDisplay<'a> {
    op: &'a Op,
    prefix: &'a str,
}

impl fmt::Display for OpDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.prefix;
        match self.op {
            Op::Register { dir, fields, .. } => {
                let mut first = true;
                for (k, v) in fields {
                    if !first {
                        writeln!(f)?;
                    }
                    first = false;
                    write!(f, "put {p}/{dir}/{k} = {v}")?;
                }
                Ok(())
            }
            Op::Update {
                dir, put, delete, ..
            } => {
                let lines = put
                    .iter()
                    .map(|(k, v)| format!("put {p}/{dir}/{k} = {v}"))
                    .chain(delete.iter().map(|k| format!("delete {p}/{dir}/{k}")));
                write!(f, "{}", lines.collect::<Vec<_>>().join("\n"))
            }
            Op::Deregister { dir } => write!(f, "delete {p}/{dir}/ (prefix)"),
            Op::Unindex { dir } => write!(f, "unindex {dir} (the index entry only)"),
        }
    }
}

/// A one-line summary of an op for the log.
impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |fields: &Fields| {
            fields
                .iter()
                .filter(|(k, _)| k.as_str() != OWNER_FIELD)
                .map(|(k, v)| {
                    if k.starts_with("domains/") {
                        format!("domain={v}")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Op::Register {
                dir,
                fields,
                container,
            } => {
                write!(
                    f,
                    "register {dir} (container {container}): {}",
                    show(fields)
                )
            }
            Op::Update {
                dir,
                put,
                delete,
                container,
            } => {
                write!(f, "update {dir} (container {container}): {}", show(put))?;
                if !delete.is_empty() {
                    write!(f, " removed {}", delete.join(","))?;
                }
                if put.is_empty() && delete.is_empty() {
                    f.write_str("index entry restored")?;
                }
                Ok(())
            }
            Op::Deregister { dir } => write!(f, "deregister {dir}"),
            Op::Unindex { dir } => write!(f, "unindex {dir} (not a service of this host)"),
        }
    }
}

/// Diffs what this host wants against what etcd holds.
///
/// `actual` may hold other hosts' directories (from a prefix read) or only this host's
/// and the wanted ones (from its index): only directories whose owner marker names
/// `hostname` are changed or deleted. A wanted directory owned by another host is
/// refused as a problem. `lease` is the lease this host writes with (`Some(0)`: none);
/// keys on another lease are put again so they end up on ours. `None` accepts whatever
/// lease a key has.
///
/// `index` is this host's index entries. Every op writes a service's index entry along
/// with it (an update always puts it again), so an own service whose entry is missing,
/// wrong or on another lease gets an update, and an entry of a directory that is not an
/// own service gets [`Op::Unindex`].
pub fn plan(
    desired: &Desired,
    actual: &Actual,
    index: &Index,
    hostname: &str,
    lease: Option<i64>,
) -> (Vec<Op>, Vec<Problem>) {
    let mut ops = Vec::new();
    let mut problems = Vec::new();
    let ours = |dir: &str| actual.get(dir).is_some_and(|s| s.owner() == Some(hostname));
    for (dir, want) in desired {
        match actual.get(dir) {
            None => ops.push(Op::Register {
                dir: dir.clone(),
                fields: want.fields.clone(),
                container: want.container.clone(),
            }),
            Some(stored) if stored.owner() == Some(hostname) => {
                let put: Fields = want
                    .fields
                    .iter()
                    .filter(|(k, v)| {
                        stored.fields.get(*k) != Some(*v)
                            || lease
                                .is_some_and(|l| stored.leases.get(*k).copied().unwrap_or(0) != l)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let delete: Vec<String> = stored
                    .fields
                    .keys()
                    .filter(|k| !want.fields.contains_key(*k))
                    .cloned()
                    .collect();
                let indexed = index.get(dir).is_some_and(|e| {
                    e.value == want.container && lease.is_none_or(|l| e.lease == l)
                });
                if !put.is_empty() || !delete.is_empty() || !indexed {
                    ops.push(Op::Update {
                        dir: dir.clone(),
                        put,
                        delete,
                        container: want.container.clone(),
                    });
                }
            }
            Some(stored) => problems.push(Problem {
                container: want.container.clone(),
                message: format!(
                    "service {dir} is already registered by host {}; not registered",
                    stored.owner().unwrap_or("(unknown: no owner marker)")
                ),
                kind: Refusal::OwnedElsewhere,
            }),
        }
    }
    for (dir, stored) in actual {
        if stored.owner() == Some(hostname) && !desired.contains_key(dir) {
            ops.push(Op::Deregister { dir: dir.clone() });
        }
    }
    for dir in index.keys() {
        let registered = desired.contains_key(dir) && !actual.contains_key(dir);
        if !ours(dir) && !registered {
            ops.push(Op::Unindex { dir: dir.clone() });
        }
    }
    (ops, problems)
}

/// The fast path's plan for one container after its event. `before`: the desired set
/// of the last pass (all containers); `now`: the container's services as they are now.
/// Deregisters what the container had and no longer has, and registers what it has that
/// no one registered yet. Changed services and port claims are left to the full pass
/// that follows (a claim needs the whole prefix read).
pub fn plan_event(before: &Desired, now: &Desired, container: &str) -> Vec<Op> {
    let gone = before
        .iter()
        .filter(|(dir, w)| w.container == container && !now.contains_key(*dir))
        .map(|(dir, _)| Op::Deregister { dir: dir.clone() });
    let new = now
        .iter()
        .filter(|(dir, w)| {
            w.container == container && w.claim.is_none() && !before.contains_key(*dir)
        })
        .map(|(dir, w)| Op::Register {
            dir: dir.clone(),
            fields: w.fields.clone(),
            container: w.container.clone(),
        });
    gone.chain(new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Mode;

    fn svc(name: &str, id: &str, port: u16) -> Service {
        Service {
            name: name.into(),
            id: id.into(),
            address: "10.0.0.5".into(),
            port,
            mode: Mode::Tcp,
            domains: vec![],
            claim: None,
            container: format!("c-{id}"),
        }
    }

    fn stored(owner: &str, fields: &[(&str, &str)], lease: i64) -> Stored {
        let mut s = Stored::default();
        for (k, v) in fields.iter().copied().chain([(OWNER_FIELD, owner)]) {
            s.fields.insert(k.into(), v.into());
            s.leases.insert(k.into(), lease);
        }
        s
    }

    #[test]
    fn desired_keys_are_exactly_the_documented_layout() {
        let mut http = svc("web", "node1:web.0:80", 32768);
        http.mode = Mode::Http;
        http.domains = vec!["a.example.com".into(), "b.example.com".into()];
        let mut tcp = svc("db", "node1:db:5432", 5432);
        tcp.claim = Some(Claim::External(15432));
        let d = desired(&[http, tcp], "node1");
        let keys: Vec<String> = d
            .iter()
            .flat_map(|(dir, w)| w.fields.iter().map(move |(k, v)| format!("{dir}/{k}={v}")))
            .collect();
        assert_eq!(
            keys,
            [
                "db/node1:db:5432/address=10.0.0.5",
                "db/node1:db:5432/external_port=15432",
                "db/node1:db:5432/mode=tcp",
                "db/node1:db:5432/node=node1",
                "db/node1:db:5432/port=5432",
                "web/node1:web.0:80/address=10.0.0.5",
                "web/node1:web.0:80/domains/a.example.com=a.example.com",
                "web/node1:web.0:80/domains/b.example.com=b.example.com",
                "web/node1:web.0:80/mode=http",
                "web/node1:web.0:80/node=node1",
                "web/node1:web.0:80/port=32768",
            ]
        );
    }

    #[test]
    fn group_parses_keys_and_ignores_foreign_shapes() {
        let a = group(
            "/services",
            [
                (
                    "/services/web/id1/address".to_string(),
                    "1.2.3.4".to_string(),
                    7,
                ),
                ("/services/web/id1/domains/a.com".into(), "a.com".into(), 7),
                ("/services/web/id1".into(), "x".into(), 0),
                ("/servicesX/web/id1/port".into(), "1".into(), 0),
                ("/services//id/port".into(), "1".into(), 0),
            ],
        );
        assert_eq!(a.len(), 1);
        let s = &a["web/id1"];
        assert_eq!(s.fields["domains/a.com"], "a.com");
        assert_eq!(s.leases["address"], 7);
    }

    /// One case of [`plan`]: this host is `n1` and writes with `lease`.
    struct PlanCase {
        name: &'static str,
        desired: Desired,
        actual: Vec<(&'static str, Stored)>,
        /// This host's index entries: (directory, container, lease).
        index: Vec<(&'static str, &'static str, i64)>,
        lease: i64,
        /// Every op, as the log prints it.
        ops: Vec<&'static str>,
        /// Every problem, as the log prints it.
        problems: Vec<&'static str>,
    }

    #[test]
    fn plan_table() {
        let want = desired(&[svc("web", "n1:w:80", 1000)], "n1");
        let same = stored(
            "n1",
            &[("address", "10.0.0.5"), ("port", "1000"), ("mode", "tcp")],
            0,
        );
        let cases = vec![
            PlanCase {
                name: "nothing to do",
                desired: want.clone(),
                actual: vec![("web/n1:w:80", same.clone())],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec![],
                problems: vec![],
            },
            PlanCase {
                name: "new service",
                desired: want.clone(),
                actual: vec![],
                index: vec![],
                lease: 0,
                ops: vec![
                    "register web/n1:w:80 (container c-n1:w:80): \
                     address=10.0.0.5 mode=tcp port=1000",
                ],
                problems: vec![],
            },
            PlanCase {
                name: "changed port, stale key",
                desired: want.clone(),
                actual: vec![(
                    "web/n1:w:80",
                    stored(
                        "n1",
                        &[
                            ("address", "10.0.0.5"),
                            ("port", "999"),
                            ("mode", "tcp"),
                            ("external_port", "1"),
                        ],
                        0,
                    ),
                )],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec![
                    "update web/n1:w:80 (container c-n1:w:80): port=1000 removed external_port",
                ],
                problems: vec![],
            },
            PlanCase {
                name: "own stale service",
                desired: Desired::new(),
                actual: vec![("web/n1:w:80", same.clone())],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec!["deregister web/n1:w:80"],
                problems: vec![],
            },
            PlanCase {
                name: "other host's service untouched",
                desired: Desired::new(),
                actual: vec![("web/n2:w:80", stored("n2", &[], 0))],
                index: vec![],
                lease: 0,
                ops: vec![],
                problems: vec![],
            },
            PlanCase {
                name: "dir owned by another host",
                desired: want.clone(),
                actual: vec![("web/n1:w:80", stored("n2", &[], 0))],
                index: vec![],
                lease: 0,
                ops: vec![],
                problems: vec![
                    "container c-n1:w:80: service web/n1:w:80 is already registered by host n2; \
                     not registered",
                ],
            },
            PlanCase {
                name: "keys on an old lease are put again",
                desired: want.clone(),
                actual: vec![(
                    "web/n1:w:80",
                    stored(
                        "n1",
                        &[("address", "10.0.0.5"), ("port", "1000"), ("mode", "tcp")],
                        5,
                    ),
                )],
                index: vec![("web/n1:w:80", "c-n1:w:80", 5)],
                lease: 9,
                ops: vec![
                    "update web/n1:w:80 (container c-n1:w:80): address=10.0.0.5 mode=tcp port=1000",
                ],
                problems: vec![],
            },
            PlanCase {
                name: "a missing index entry is put again",
                desired: want.clone(),
                actual: vec![("web/n1:w:80", same.clone())],
                index: vec![],
                lease: 0,
                ops: vec!["update web/n1:w:80 (container c-n1:w:80): index entry restored"],
                problems: vec![],
            },
            PlanCase {
                name: "an index entry on another lease is moved",
                desired: want.clone(),
                actual: vec![("web/n1:w:80", same.clone())],
                index: vec![("web/n1:w:80", "c-n1:w:80", 4)],
                lease: 0,
                ops: vec!["update web/n1:w:80 (container c-n1:w:80): index entry restored"],
                problems: vec![],
            },
            PlanCase {
                name: "a directory deleted by hand is registered again",
                desired: want.clone(),
                actual: vec![],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec![
                    "register web/n1:w:80 (container c-n1:w:80): \
                     address=10.0.0.5 mode=tcp port=1000",
                ],
                problems: vec![],
            },
            PlanCase {
                name: "the entry of a directory deleted by hand, not wanted, goes",
                desired: Desired::new(),
                actual: vec![],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec!["unindex web/n1:w:80 (not a service of this host)"],
                problems: vec![],
            },
            PlanCase {
                name: "the entry of a directory another host took goes",
                desired: want.clone(),
                actual: vec![("web/n1:w:80", stored("n2", &[], 0))],
                index: vec![("web/n1:w:80", "c-n1:w:80", 0)],
                lease: 0,
                ops: vec!["unindex web/n1:w:80 (not a service of this host)"],
                problems: vec![
                    "container c-n1:w:80: service web/n1:w:80 is already registered by host n2; \
                     not registered",
                ],
            },
        ];
        for case in cases {
            let actual: Actual = case
                .actual
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect();
            let index: Index = case
                .index
                .into_iter()
                .map(|(d, c, lease)| {
                    let value = c.to_string();
                    (d.to_string(), Entry { value, lease })
                })
                .collect();
            let (ops, problems) = plan(&case.desired, &actual, &index, "n1", Some(case.lease));
            let ops: Vec<String> = ops.iter().map(Op::to_string).collect();
            assert_eq!(ops, case.ops, "{}", case.name);
            let problems: Vec<String> = problems.iter().map(Problem::to_string).collect();
            assert_eq!(problems, case.problems, "{}", case.name);
        }
    }

    /// One case of [`plan_event`] for container `c-a`.
    struct EventCase {
        name: &'static str,
        /// The last pass's desired set.
        before: Vec<Service>,
        /// The container's services now.
        now: Vec<Service>,
        ops: Vec<&'static str>,
    }

    #[test]
    fn plan_event_table() {
        let a = svc("web", "a", 1000);
        let mut a_moved = svc("web", "a", 1001);
        a_moved.id = "a2".into();
        a_moved.container = "c-a".into();
        let mut a_claiming = svc("db", "a", 1002);
        a_claiming.container = "c-a".into();
        a_claiming.claim = Some(Claim::External(5432));
        let b = svc("web", "b", 2000);
        let mut a_changed = a.clone();
        a_changed.port = 1005;
        let cases = vec![
            EventCase {
                name: "a start registers the new service",
                before: vec![b.clone()],
                now: vec![a.clone()],
                ops: vec!["register web/a (container c-a): address=10.0.0.5 mode=tcp port=1000"],
            },
            EventCase {
                name: "a die deregisters what the container had, nothing of others",
                before: vec![a.clone(), b.clone()],
                now: vec![],
                ops: vec!["deregister web/a"],
            },
            EventCase {
                name: "already registered: nothing (a changed port waits for the full pass)",
                before: vec![a.clone()],
                now: vec![a_changed],
                ops: vec![],
            },
            EventCase {
                name: "a new ID: the old one goes, the new one comes",
                before: vec![a.clone()],
                now: vec![a_moved],
                ops: vec![
                    "deregister web/a",
                    "register web/a2 (container c-a): address=10.0.0.5 mode=tcp port=1001",
                ],
            },
            EventCase {
                name: "a port claim waits for the full pass",
                before: vec![],
                now: vec![a_claiming],
                ops: vec![],
            },
            EventCase {
                name: "another container's services are not this event's",
                before: vec![],
                now: vec![b],
                ops: vec![],
            },
        ];
        for case in cases {
            let before = desired(&case.before, "n1");
            let now = desired(&case.now, "n1");
            let ops: Vec<String> = plan_event(&before, &now, "c-a")
                .iter()
                .map(Op::to_string)
                .collect();
            assert_eq!(ops, case.ops, "{}", case.name);
        }
    }

    #[test]
    fn dry_run_display_lists_absolute_keys() {
        let op = Op::Update {
            dir: "web/n1:w:80".into(),
            put: [("port".to_string(), "1".to_string())].into(),
            delete: vec!["domains/a.com".into()],
            container: "w".into(),
        };
        assert_eq!(
            op.display("/services").to_string(),
            "put /services/web/n1:w:80/port = 1\ndelete /services/web/n1:w:80/domains/a.com"
        );
        assert_eq!(
            Op::Deregister { dir: "a/b".into() }
                .display("/s")
                .to_string(),
            "delete /s/a/b/ (prefix)"
        );
    }
}
