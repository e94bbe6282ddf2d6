//! Cluster-wide port claims (`SERVICE_EXTERNAL_PORT`, `SERVICE_INTERNAL_PORT`), as pure
//! checks: which claims this host wants, holds and may release, which ops wait for a
//! claim, who else holds a port (from that port's claimants only), and the problem that
//! reports it.
//!
//! A claim is one key per (port, host) in the ownership index, on the host's lease, with
//! the service name as value: services of the same name share the port (replicas on
//! several hosts); any other name holding it refuses the claim. A host keeps a claim
//! while one of its services claims the port, and for a grace period after the last
//! one went, so a restarting container finds its port still its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::index::{self, Claimant};
use crate::plan::{Actual, ClaimOp, Desired, Entry, Op};
use crate::service::{Claim, Problem, Refusal};

/// Claim -> the name of the service (of this host) that claims it.
pub(super) type Wanted = BTreeMap<Claim, String>;

/// The claims of the desired services this host may register (not those whose
/// directory another host owns). Conflicts on one host are settled before this: one
/// name per claim.
pub(super) fn wanted(desired: &Desired, actual: &Actual, hostname: &str) -> Wanted {
    desired
        .iter()
        .filter(|(dir, _)| actual.get(*dir).is_none_or(|s| s.owner() == Some(hostname)))
        .filter_map(|(dir, w)| Some((w.claim?, service_name(dir).to_string())))
        .collect()
}

/// The claims still shown by this host's stored directories that stay (those wanted),
/// with their service names: a claim is not released while a directory still shows it
/// (one whose update to another port was refused, say).
pub(super) fn recorded(
    actual: &Actual,
    desired: &Desired,
    hostname: &str,
) -> BTreeSet<(Claim, String)> {
    actual
        .iter()
        .filter(|(dir, s)| s.owner() == Some(hostname) && desired.contains_key(*dir))
        .filter_map(|(dir, s)| Some((index::claim_in(&s.fields)?, service_name(dir).to_string())))
        .collect()
}

/// The claims this host holds for a service that no longer claims them: each waits out
/// the grace period before it is released (or taken by another service of this host).
pub(super) fn unheld(
    wanted: &Wanted,
    recorded: &BTreeSet<(Claim, String)>,
    held: &BTreeMap<Claim, Entry>,
) -> BTreeSet<Claim> {
    held.iter()
        .filter(|(claim, e)| {
            wanted.get(claim) != Some(&e.value) && !recorded.contains(&(**claim, e.value.clone()))
        })
        .map(|(claim, _)| *claim)
        .collect()
}

/// What to do about this host's claims.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ClaimPlan {
    /// Claims put again (on a new lease) and claims released, written as they are.
    pub ops: Vec<ClaimOp>,
    /// Claims to take: each is checked against the port's claimants first.
    pub take: Vec<(Claim, String)>,
}

/// Plans this host's claims. `lease`: as for `plan::plan`. `expired`: whether an unheld
/// claim has waited out its grace period.
pub(super) fn plan(
    wanted: &Wanted,
    held: &BTreeMap<Claim, Entry>,
    unheld: &BTreeSet<Claim>,
    lease: Option<i64>,
    expired: impl Fn(Claim) -> bool,
) -> ClaimPlan {
    let mut out = ClaimPlan::default();
    for (claim, name) in wanted {
        match held.get(claim) {
            Some(e) if e.value == *name => {
                if lease.is_some_and(|l| e.lease != l) {
                    out.ops.push(ClaimOp::Hold {
                        claim: *claim,
                        name: name.clone(),
                    });
                }
            }
            // Held for another of this host's services, or not at all: checked first.
            _ => out.take.push((*claim, name.clone())),
        }
    }
    for claim in unheld {
        if wanted.contains_key(claim) || !expired(*claim) {
            continue;
        }
        if let Some(e) = held.get(claim) {
            out.ops.push(ClaimOp::Release {
                claim: *claim,
                name: e.value.clone(),
            });
        }
    }
    out
}

/// The claims this host holds but none of its services claims any more, and since
/// when: each is released once that is longer ago than the grace period.
#[derive(Debug, Default)]
pub(super) struct Releasing(BTreeMap<Claim, Instant>);

impl Releasing {
    /// Starts the grace period of each claim newly `unheld`, and forgets the others.
    pub(super) fn track(&mut self, unheld: &BTreeSet<Claim>) {
        self.0.retain(|c, _| unheld.contains(c));
        let now = Instant::now();
        for c in unheld {
            self.0.entry(*c).or_insert(now);
        }
    }

    /// Whether `claim` has waited out the grace period.
    pub(super) fn expired(&self, claim: Claim, grace: Duration) -> bool {
        self.0
            .get(&claim)
            .is_some_and(|since| since.elapsed() >= grace)
    }

    /// Another service of this host took `claim`: it is held again.
    pub(super) fn taken(&mut self, claim: Claim) {
        self.0.remove(&claim);
    }
}

/// A claim to take and the ops of the services that wait for it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Group {
    pub claim: Claim,
    pub name: String,
    pub ops: Vec<Op>,
}

/// Splits ops into those that wait for no claim and one group per claim to take.
pub(super) fn split(
    ops: Vec<Op>,
    desired: &Desired,
    take: Vec<(Claim, String)>,
) -> (Vec<Op>, Vec<Group>) {
    let mut groups: Vec<Group> = take
        .into_iter()
        .map(|(claim, name)| Group {
            claim,
            name,
            ops: Vec::new(),
        })
        .collect();
    let mut plain = Vec::new();
    for op in ops {
        let claim = match &op {
            Op::Register { dir, .. } | Op::Update { dir, .. } => {
                desired.get(dir).and_then(|w| w.claim)
            }
            Op::Deregister { .. } | Op::Unindex { .. } => None,
        };
        match groups.iter_mut().find(|g| Some(g.claim) == claim) {
            Some(g) => g.ops.push(op),
            None => plain.push(op),
        }
    }
    (plain, groups)
}

/// Who holds a port against service `name` of host `me`, as `service NAME on host
/// HOST`; None: the port is free. `mine_expired`: a claim this host holds for another
/// of its services has waited out its grace period (so it no longer counts).
pub(super) fn holder(
    claimants: &[Claimant],
    me: &str,
    name: &str,
    mine_expired: bool,
) -> Option<String> {
    claimants
        .iter()
        .find(|c| c.name != name && !(c.host == me && mine_expired))
        .map(|c| format!("service {} on host {}", c.name, c.host))
}

/// The services of a refused claim that are registered with other values (a recreated
/// container that claims another port, say): deregistered, so that what stays
/// routable is never an old registration the log calls "not registered".
pub(super) fn withdrawn(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Update { dir, .. } => Some(Op::Deregister { dir: dir.clone() }),
            _ => None,
        })
        .collect()
}

/// The `<name>` of a `<name>/<id>` directory.
fn service_name(dir: &str) -> &str {
    dir.split('/').next().unwrap_or("")
}

/// The problems of a claim that `holder` holds: one per desired service that claims it.
pub(super) fn refused(claim: Claim, desired: &Desired, holder: &str) -> Vec<Problem> {
    desired
        .iter()
        .filter(|(_, w)| w.claim == Some(claim))
        .map(|(dir, w)| Problem {
            container: w.container.clone(),
            message: format!(
                "SERVICE_{}={}: {claim} is already held by {holder}; {dir} not registered \
                 (retried every sync)",
                claim.field().to_uppercase(),
                claim.port(),
            ),
            kind: Refusal::PortTaken,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::OWNER_FIELD;
    use crate::plan::{Fields, Stored, Want};

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn want(claim: Option<Claim>) -> Want {
        Want {
            fields: fields(&[("port", "80")]),
            claim,
            container: "c1".into(),
        }
    }

    fn stored(owner: &str, pairs: &[(&str, &str)]) -> Stored {
        let mut f = fields(pairs);
        f.insert(OWNER_FIELD.into(), owner.into());
        Stored {
            fields: f,
            leases: Default::default(),
        }
    }

    fn entry(name: &str, lease: i64) -> Entry {
        Entry {
            value: name.into(),
            lease,
        }
    }

    const EXT: Claim = Claim::External(8080);

    #[test]
    fn claim_plan_table() {
        struct Case {
            name: &'static str,
            wanted: Vec<(Claim, &'static str)>,
            held: Vec<(Claim, Entry)>,
            unheld: Vec<Claim>,
            expired: bool,
            ops: Vec<&'static str>,
            take: Vec<(Claim, &'static str)>,
        }
        let cases = [
            Case {
                name: "a new claim is taken (after a check)",
                wanted: vec![(EXT, "db")],
                held: vec![],
                unheld: vec![],
                expired: false,
                ops: vec![],
                take: vec![(EXT, "db")],
            },
            Case {
                name: "a claim held on our lease: nothing to do",
                wanted: vec![(EXT, "db")],
                held: vec![(EXT, entry("db", 7))],
                unheld: vec![],
                expired: false,
                ops: vec![],
                take: vec![],
            },
            Case {
                name: "a claim held on an old lease is put again, unchecked",
                wanted: vec![(EXT, "db")],
                held: vec![(EXT, entry("db", 3))],
                unheld: vec![],
                expired: false,
                ops: vec!["claim external port 8080 for service db"],
                take: vec![],
            },
            Case {
                name: "within the grace period nothing is released",
                wanted: vec![],
                held: vec![(EXT, entry("db", 7))],
                unheld: vec![EXT],
                expired: false,
                ops: vec![],
                take: vec![],
            },
            Case {
                name: "after the grace period the claim is released",
                wanted: vec![],
                held: vec![(EXT, entry("db", 7))],
                unheld: vec![EXT],
                expired: true,
                ops: vec!["release external port 8080 (service db no longer claims it)"],
                take: vec![],
            },
            Case {
                name: "another service of this host wants it: checked (our old claim counts \
                       until it expires)",
                wanted: vec![(EXT, "web")],
                held: vec![(EXT, entry("db", 7))],
                unheld: vec![EXT],
                expired: true,
                ops: vec![],
                take: vec![(EXT, "web")],
            },
        ];
        for case in cases {
            let wanted: Wanted = case
                .wanted
                .iter()
                .map(|(c, n)| (*c, n.to_string()))
                .collect();
            let held: BTreeMap<Claim, Entry> = case.held.into_iter().collect();
            let unheld: BTreeSet<Claim> = case.unheld.into_iter().collect();
            let got = plan(&wanted, &held, &unheld, Some(7), |_| case.expired);
            let ops: Vec<String> = got.ops.iter().map(ClaimOp::to_string).collect();
            assert_eq!(ops, case.ops, "{}", case.name);
            let take: Vec<(Claim, String)> =
                case.take.iter().map(|(c, n)| (*c, n.to_string())).collect();
            assert_eq!(got.take, take, "{}", case.name);
        }
    }

    #[test]
    fn a_service_another_host_owns_wants_no_claim() {
        let desired: Desired = [
            ("db/a".to_string(), want(Some(EXT))),
            ("db/b".to_string(), want(Some(Claim::Internal(1)))),
        ]
        .into();
        let actual: Actual = [("db/b".to_string(), stored("n2", &[]))].into();
        assert_eq!(
            wanted(&desired, &actual, "n1"),
            [(EXT, "db".to_string())].into()
        );
    }

    #[test]
    fn unheld_claims_are_those_no_wanted_or_stored_service_shows() {
        let held: BTreeMap<Claim, Entry> = [
            (Claim::External(1), entry("a", 7)),
            (Claim::External(2), entry("b", 7)),
            (Claim::External(3), entry("c", 7)),
            (Claim::External(4), entry("d", 7)),
        ]
        .into();
        let wanted: Wanted = [
            (Claim::External(1), "a".to_string()),
            (Claim::External(4), "x".to_string()),
        ]
        .into();
        let recorded: BTreeSet<(Claim, String)> = [(Claim::External(2), "b".to_string())].into();
        let got: Vec<Claim> = unheld(&wanted, &recorded, &held).into_iter().collect();
        assert_eq!(got, [Claim::External(3), Claim::External(4)]);
    }

    #[test]
    fn ops_of_services_waiting_for_a_claim_are_grouped() {
        let desired: Desired = [
            ("db/a".to_string(), want(Some(EXT))),
            ("web/b".to_string(), want(None)),
        ]
        .into();
        let reg = |dir: &str| Op::Register {
            dir: dir.into(),
            fields: Fields::new(),
            container: "c1".into(),
        };
        let ops = vec![
            reg("db/a"),
            reg("web/b"),
            Op::Deregister { dir: "db/a".into() },
        ];
        let (plain, groups) = split(ops, &desired, vec![(EXT, "db".into())]);
        assert_eq!(plain, [reg("web/b"), Op::Deregister { dir: "db/a".into() }]);
        assert_eq!(
            groups,
            [Group {
                claim: EXT,
                name: "db".into(),
                ops: vec![reg("db/a")]
            }]
        );
        let (plain, groups) = split(vec![reg("db/a")], &desired, vec![]);
        assert_eq!((plain.len(), groups.len()), (1, 0), "a claim already held");
    }

    #[test]
    fn holder_table() {
        let host = |h: &str, n: &str| Claimant {
            host: h.into(),
            name: n.into(),
        };
        let cases = [
            ("nobody", vec![], false, None),
            (
                "another service on another host",
                vec![host("n2", "web")],
                false,
                Some("service web on host n2"),
            ),
            (
                "a replica of the same service shares the port",
                vec![host("n2", "db")],
                false,
                None,
            ),
            (
                "our own other service, within its grace period",
                vec![host("me", "web")],
                false,
                Some("service web on host me"),
            ),
            (
                "our own other service, past its grace period",
                vec![host("me", "web")],
                true,
                None,
            ),
        ];
        for (name, claimants, mine_expired, want) in cases {
            let got = holder(&claimants, "me", "db", mine_expired);
            assert_eq!(got.as_deref(), want, "{name}");
        }
    }

    #[test]
    fn a_refused_claim_names_the_container_the_port_and_the_holder() {
        let desired: Desired = [("db/a".to_string(), want(Some(EXT)))].into();
        assert_eq!(
            refused(EXT, &desired, "web/o:1:80 on host n2"),
            [Problem {
                container: "c1".into(),
                message: "SERVICE_EXTERNAL_PORT=8080: external port 8080 is already held by \
                          web/o:1:80 on host n2; db/a not registered (retried every sync)"
                    .into(),
                kind: Refusal::PortTaken,
            }]
        );
    }
}
