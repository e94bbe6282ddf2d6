//! Cluster-wide port claims (`SERVICE_EXTERNAL_PORT`, `SERVICE_INTERNAL_PORT`), as pure
//! checks: which op claims a port, who else holds it, and the problem that reports it.

use crate::plan::{Actual, Desired, Op};
use crate::service::{Claim, Problem};

/// The claim an op would newly write, if any.
pub(super) fn claim_of(op: &Op, desired: &Desired) -> Option<Claim> {
    match op {
        Op::Register { dir, .. } => desired.get(dir)?.claim,
        Op::Update { dir, put, .. } => {
            let claim = desired.get(dir)?.claim?;
            put.contains_key(claim.field()).then_some(claim)
        }
        Op::Deregister { .. } => None,
    }
}

/// Splits ops into those that claim no port and those that do, with their claim.
pub(super) fn split(ops: Vec<Op>, desired: &Desired) -> (Vec<Op>, Vec<(Op, Claim)>) {
    let mut plain = Vec::new();
    let mut claiming = Vec::new();
    for op in ops {
        match claim_of(&op, desired) {
            Some(claim) => claiming.push((op, claim)),
            None => plain.push(op),
        }
    }
    (plain, claiming)
}

/// Keeps the claims no other service holds in `actual` (which must span the whole
/// prefix); the others become problems.
pub(super) fn check(
    claiming: Vec<(Op, Claim)>,
    actual: &Actual,
) -> (Vec<(Op, Claim)>, Vec<Problem>) {
    let mut free = Vec::new();
    let mut problems = Vec::new();
    for (op, claim) in claiming {
        match holder(actual, op.dir(), claim) {
            Some(h) => problems.push(claim_problem(&op, claim, &h)),
            None => free.push((op, claim)),
        }
    }
    (free, problems)
}

/// Another service (by name) that holds the same claim, as `name/id on host`. Services
/// of the same name share their port (replicas on several hosts).
pub(super) fn holder(actual: &Actual, dir: &str, claim: Claim) -> Option<String> {
    let name = service_name(dir);
    actual.iter().find_map(|(d, stored)| {
        let holds = stored
            .fields
            .get(claim.field())
            .is_some_and(|v| v.trim() == claim.port().to_string());
        (service_name(d) != name && holds)
            .then(|| format!("{d} on host {}", stored.owner().unwrap_or("?")))
    })
}

/// The `<name>` of a `<name>/<id>` directory.
fn service_name(dir: &str) -> &str {
    dir.split('/').next().unwrap_or("")
}

/// The problem of a claim that `holder` already holds.
pub(super) fn claim_problem(op: &Op, claim: Claim, holder: &str) -> Problem {
    Problem {
        container: op.container().to_string(),
        message: format!(
            "SERVICE_{}={}: {claim} is already held by {holder}; {} not registered \
             (retried every sync)",
            claim.field().to_uppercase(),
            claim.port(),
            op.dir()
        ),
    }
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

    fn register(dir: &str) -> Op {
        Op::Register {
            dir: dir.into(),
            fields: Fields::new(),
            container: "c1".into(),
        }
    }

    fn update(dir: &str, put: &[(&str, &str)]) -> Op {
        Op::Update {
            dir: dir.into(),
            put: fields(put),
            delete: vec![],
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

    #[test]
    fn claim_of_table() {
        struct Case {
            name: &'static str,
            op: Op,
            want: Option<Claim>,
            claim: Option<Claim>,
        }
        let ext = Some(Claim::External(8080));
        let cases = [
            Case {
                name: "a new service claims its port",
                op: register("db/a"),
                want: ext,
                claim: ext,
            },
            Case {
                name: "a new service without a claim",
                op: register("db/a"),
                want: None,
                claim: None,
            },
            Case {
                name: "an update that writes the claim",
                op: update("db/a", &[("external_port", "8080")]),
                want: ext,
                claim: ext,
            },
            Case {
                name: "an update of other keys claims nothing new",
                op: update("db/a", &[("address", "10.0.0.6")]),
                want: ext,
                claim: None,
            },
            Case {
                name: "a deregistration claims nothing",
                op: Op::Deregister { dir: "db/a".into() },
                want: ext,
                claim: None,
            },
        ];
        for case in cases {
            let desired: Desired = [("db/a".to_string(), want(case.want))].into();
            assert_eq!(claim_of(&case.op, &desired), case.claim, "{}", case.name);
            let (plain, claiming) = split(vec![case.op.clone()], &desired);
            assert_eq!(
                (plain.len(), claiming.len()),
                if case.claim.is_some() { (0, 1) } else { (1, 0) },
                "{}",
                case.name
            );
        }
        assert_eq!(
            claim_of(&register("other/b"), &Desired::new()),
            None,
            "an op for a directory not desired claims nothing"
        );
    }

    #[test]
    fn holder_table() {
        struct Case {
            name: &'static str,
            actual: Vec<(&'static str, Stored)>,
            holder: Option<&'static str>,
        }
        let cases = [
            Case {
                name: "nobody",
                actual: vec![],
                holder: None,
            },
            Case {
                name: "another service on another host",
                actual: vec![("web/o:1:80", stored("n2", &[("external_port", "8080")]))],
                holder: Some("web/o:1:80 on host n2"),
            },
            Case {
                name: "the same value with stray whitespace",
                actual: vec![("web/o:1:80", stored("n2", &[("external_port", " 8080\n")]))],
                holder: Some("web/o:1:80 on host n2"),
            },
            Case {
                name: "a replica of the same service shares the port",
                actual: vec![("db/o:1:80", stored("n2", &[("external_port", "8080")]))],
                holder: None,
            },
            Case {
                name: "another port",
                actual: vec![("web/o:1:80", stored("n2", &[("external_port", "8081")]))],
                holder: None,
            },
            Case {
                name: "the same port as an internal claim",
                actual: vec![("web/o:1:80", stored("n2", &[("internal_port", "8080")]))],
                holder: None,
            },
            Case {
                name: "no owner marker",
                actual: vec![(
                    "web/o:1:80",
                    Stored {
                        fields: fields(&[("external_port", "8080")]),
                        leases: Default::default(),
                    },
                )],
                holder: Some("web/o:1:80 on host ?"),
            },
        ];
        for case in cases {
            let actual: Actual = case
                .actual
                .into_iter()
                .map(|(d, s)| (d.to_string(), s))
                .collect();
            let got = holder(&actual, "db/n1:a:80", Claim::External(8080));
            assert_eq!(got.as_deref(), case.holder, "{}", case.name);
        }
    }

    #[test]
    fn check_keeps_free_claims_and_reports_held_ones() {
        let actual: Actual = [(
            "web/o:1:80".to_string(),
            stored("n2", &[("external_port", "8080")]),
        )]
        .into();
        let claiming = vec![
            (register("db/a"), Claim::External(8080)),
            (register("db/b"), Claim::External(8081)),
        ];
        let (free, problems) = check(claiming, &actual);
        assert_eq!(free, [(register("db/b"), Claim::External(8081))]);
        assert_eq!(
            problems,
            [Problem {
                container: "c1".into(),
                message: "SERVICE_EXTERNAL_PORT=8080: external port 8080 is already held by \
                          web/o:1:80 on host n2; db/a not registered (retried every sync)"
                    .into(),
            }]
        );
    }
}
