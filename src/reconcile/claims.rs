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

use super::index::{Claimant, Keys};
use crate::plan::{Actual, ClaimOp, Desired, Entry, Op};
use crate::service::{Claim, Problem};

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
        .filter_map(|(dir, s)| Some((Keys::claim_in(&s.fields)?, service_name(dir).to_string())))
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

/// The service directories of legacy hints to read before judging: those of hosts
/// that have no claim key for the port (a host's own key speaks for it).
pub(super) fn to_confirm(claimants: &[Claimant]) -> Vec<String> {
    let hosts: BTreeSet<&str> = claimants
        .iter()
        .filter_map(|c| match c {
            Claimant::Host { host, .. } => Some(host.as_str()),
            Claimant::Hint { .. } => None,
        })
        .collect();
    claimants
        .iter()
        .filter_map(|c| match c {
            Claimant::Hint { host, dir, .. } if !hosts.contains(host.as_str()) => Some(dir.clone()),
            _ => None,
        })
        .collect()
}

/// Who holds a port against service `name` of host `me`, and the legacy hints found
/// stale on the way.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// As `service NAME on host HOST` or `DIR on host HOST`; None: the port is free.
    pub holder: Option<String>,
    /// Keys of legacy hints whose directory no longer claims the port.
    pub stale: Vec<String>,
}

/// Judges a port's claimants for service `name` of host `me`. `confirmed`: the hinted
/// directories as read now. `mine_expired`: a claim this host holds for another of its
/// services has waited out its grace period (so it no longer counts).
pub(super) fn judge(
    claimants: &[Claimant],
    confirmed: &Actual,
    claim: Claim,
    me: &str,
    name: &str,
    mine_expired: bool,
) -> Verdict {
    let to_read = to_confirm(claimants);
    let mut verdict = Verdict::default();
    for c in claimants {
        let holder = match c {
            Claimant::Host { host, name: n } => (n != name && !(host == me && mine_expired))
                .then(|| format!("service {n} on host {host}")),
            Claimant::Hint { host, dir, key } => {
                if !to_read.contains(dir) {
                    continue;
                }
                let holds = confirmed.get(dir).is_some_and(|s| {
                    s.owner() == Some(host.as_str()) && Keys::claim_in(&s.fields) == Some(claim)
                });
                if !holds {
                    verdict.stale.push(key.clone());
                }
                (holds && service_name(dir) != name).then(|| format!("{dir} on host {host}"))
            }
        };
        if verdict.holder.is_none() {
            verdict.holder = holder;
        }
    }
    verdict
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
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Fields, Stored, Want, OWNER_FIELD};

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
    fn judge_table() {
        let host = |h: &str, n: &str| Claimant::Host {
            host: h.into(),
            name: n.into(),
        };
        let hint = |h: &str, dir: &str| Claimant::Hint {
            host: h.into(),
            dir: dir.into(),
            key: format!("hint:{dir}"),
        };
        struct Case {
            name: &'static str,
            claimants: Vec<Claimant>,
            confirmed: Vec<(&'static str, Stored)>,
            mine_expired: bool,
            holder: Option<&'static str>,
            stale: Vec<&'static str>,
        }
        let cases = [
            Case {
                name: "nobody",
                claimants: vec![],
                confirmed: vec![],
                mine_expired: false,
                holder: None,
                stale: vec![],
            },
            Case {
                name: "another service on another host",
                claimants: vec![host("n2", "web")],
                confirmed: vec![],
                mine_expired: false,
                holder: Some("service web on host n2"),
                stale: vec![],
            },
            Case {
                name: "a replica of the same service shares the port",
                claimants: vec![host("n2", "db")],
                confirmed: vec![],
                mine_expired: false,
                holder: None,
                stale: vec![],
            },
            Case {
                name: "our own other service, within its grace period",
                claimants: vec![host("me", "web")],
                confirmed: vec![],
                mine_expired: false,
                holder: Some("service web on host me"),
                stale: vec![],
            },
            Case {
                name: "our own other service, past its grace period",
                claimants: vec![host("me", "web")],
                confirmed: vec![],
                mine_expired: true,
                holder: None,
                stale: vec![],
            },
            Case {
                name: "a legacy directory that still claims the port",
                claimants: vec![hint("old", "web/old:1:80")],
                confirmed: vec![(
                    "web/old:1:80",
                    stored("old", &[("external_port", " 8080\n")]),
                )],
                mine_expired: false,
                holder: Some("web/old:1:80 on host old"),
                stale: vec![],
            },
            Case {
                name: "a legacy directory that is gone: the hint is stale",
                claimants: vec![hint("old", "web/old:1:80")],
                confirmed: vec![],
                mine_expired: false,
                holder: None,
                stale: vec!["hint:web/old:1:80"],
            },
            Case {
                name: "a legacy directory that claims another port: stale",
                claimants: vec![hint("old", "web/old:1:80")],
                confirmed: vec![("web/old:1:80", stored("old", &[("external_port", "8081")]))],
                mine_expired: false,
                holder: None,
                stale: vec!["hint:web/old:1:80"],
            },
            Case {
                name: "a legacy replica of the same name",
                claimants: vec![hint("old", "db/old:1:80")],
                confirmed: vec![("db/old:1:80", stored("old", &[("external_port", "8080")]))],
                mine_expired: false,
                holder: None,
                stale: vec![],
            },
            Case {
                name: "a hint of a host with a claim key: the key speaks",
                claimants: vec![host("old", "db"), hint("old", "web/old:1:80")],
                confirmed: vec![],
                mine_expired: false,
                holder: None,
                stale: vec![],
            },
        ];
        for case in cases {
            let confirmed: Actual = case
                .confirmed
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect();
            let v = judge(
                &case.claimants,
                &confirmed,
                EXT,
                "me",
                "db",
                case.mine_expired,
            );
            assert_eq!(v.holder.as_deref(), case.holder, "{}", case.name);
            assert_eq!(v.stale, case.stale, "{}", case.name);
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
            }]
        );
    }
}
