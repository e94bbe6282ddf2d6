//! Containers -> services: turns one host's containers into the services it should
//! register, and the problems it refused.
//!
//! Everything here is pure: no network, clock or DNS. The engine's client builds
//! [`Container`]s, the caller resolves addresses beforehand and passes them in
//! [`Settings`], and [`services`] returns the services plus the problems it refused.
//! One file per part: [`model`] the types; [`meta`] the `SERVICE_*` variables and
//! labels; [`naming`] names and IDs; [`address`] which ports and which address.

pub mod address;
pub mod meta;
pub mod model;
pub mod naming;

use std::collections::BTreeMap;

pub use model::{
    Binding, Claim, Container, Health, Mode, Note, Port, Problem, Proto, Refusal, Refused, Service,
    Settings, MAX_DOMAINS, MAX_SEGMENT_BYTES,
};
pub use naming::image_base;

use address::{candidates, default_network, network_names, Candidate};
use meta::Meta;

#[cfg(test)]
mod testing;

/// Maps containers to services. Problems name the container, variable and value; each
/// skips only the service (or container) it concerns.
///
/// Conflicts on this host are settled by age: for a service directory or a claimed
/// external/internal port taken by two containers, the older container keeps it.
pub fn services(containers: &[Container], settings: &Settings) -> (Vec<Service>, Vec<Problem>) {
    let mut ordered: Vec<&Container> = containers.iter().collect();
    ordered.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.id.cmp(&b.id)));

    let mut out = Vec::new();
    let mut problems = Vec::new();
    // (name, id) -> container, claim -> (service name, container)
    let mut dirs: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut claims: BTreeMap<Claim, (String, String)> = BTreeMap::new();
    for c in ordered {
        for result in container_services(c, settings) {
            let svc = match result {
                Ok(svc) => svc,
                Err(Refused { kind, message }) => {
                    problems.push(Problem {
                        container: c.name.clone(),
                        message,
                        kind,
                    });
                    continue;
                }
            };
            let dir = (svc.name.clone(), svc.id.clone());
            if let Some(holder) = dirs.get(&dir) {
                problems.push(Problem {
                    container: c.name.clone(),
                    message: format!(
                        "service {}/{} is already registered by older container {holder}; not registered",
                        svc.name, svc.id
                    ),
                    kind: Refusal::Duplicate,
                });
                continue;
            }
            if let Some(claim) = svc.claim {
                if let Some((holder_name, holder)) = claims.get(&claim) {
                    if *holder_name != svc.name {
                        problems.push(Problem {
                            container: c.name.clone(),
                            message: format!(
                                "SERVICE_{}={}: {claim} is already held by service {holder_name} (older container {holder}); service {} not registered",
                                claim.field().to_uppercase(),
                                claim.port(),
                                svc.name
                            ),
                            kind: Refusal::PortTaken,
                        });
                        continue;
                    }
                } else {
                    claims.insert(claim, (svc.name.clone(), c.name.clone()));
                }
            }
            dirs.insert(dir, c.name.clone());
            out.push(svc);
        }
    }
    (out, problems)
}

/// Whether some service would need the address the host name resolves to (no `--ip`,
/// and a port published on all interfaces or a host-network container), so the caller
/// only looks the name up when it matters.
pub fn needs_host_address(containers: &[Container], s: &Settings) -> bool {
    s.ip.is_none()
        && containers.iter().any(|c| {
            c.running
                && (c.host_network
                    || (!s.internal
                        && c.bindings
                            .iter()
                            .any(|b| matches!(b.host_ip.as_str(), "" | "0.0.0.0" | "::"))))
        })
}
/// Whether the container is one to register: up, healthy if checked, not ignored, and
/// named if `--explicit`.
fn wanted(c: &Container, s: &Settings, meta: &Meta) -> bool {
    c.running
        && !c.paused
        && matches!(c.health, Health::None | Health::Healthy)
        && meta.vars.get("SERVICE_IGNORE").is_none_or(|v| v.is_empty())
        && (!s.explicit || meta.vars.contains_key("SERVICE_NAME"))
}

fn container_services(c: &Container, s: &Settings) -> Vec<Result<Service, Refused>> {
    let meta = Meta::of(c);
    if !wanted(c, s, &meta) {
        return Vec::new();
    }
    let candidates = candidates(c, s);
    let several = candidates.len() > 1;
    candidates
        .into_iter()
        .filter(|cand| {
            meta.get(cand.port.number, "IGNORE")
                .is_none_or(|(_, v)| v.is_empty())
        })
        .map(|cand| build(c, s, &meta, cand, several))
        .collect()
}

/// One service of a container: the candidate port's name, ID, mode and domains, claim
/// and address, each read and checked in turn (the first problem refuses it).
fn build(
    c: &Container,
    s: &Settings,
    meta: &Meta,
    cand: Candidate,
    several: bool,
) -> Result<Service, Refused> {
    let p = cand.port.number;
    let name = naming::name(c, meta, p, several)?;
    let id = naming::id(c, &s.hostname, meta, cand.port)?;
    let mode = meta.mode(p, &name)?;
    let domains = meta.domains(p, mode, &name)?;
    let claim = meta.claim(p, mode, &name)?;
    let address = address::address(c, s, meta, &cand, &name)?;
    Ok(Service {
        name,
        id,
        address,
        port: cand.number,
        mode,
        domains,
        claim,
        container: c.name.clone(),
    })
}

/// With `--internal`, a line for each container on several networks that nothing chose
/// among (no `SERVICE_NETWORK`, not on `--network`): its networks and the pick. The
/// caller logs each once while it lasts.
pub fn network_notes(containers: &[Container], s: &Settings) -> Vec<Note> {
    if !s.internal {
        return Vec::new();
    }
    let mut notes = Vec::new();
    for c in containers {
        let meta = Meta::of(c);
        let chosen = meta
            .vars
            .keys()
            .any(|k| k.starts_with("SERVICE_") && k.ends_with("NETWORK"))
            || s.network
                .as_ref()
                .is_some_and(|n| c.networks.contains_key(n));
        if c.host_network || c.networks.len() < 2 || chosen || !wanted(c, s, &meta) {
            continue;
        }
        if let Some((net, ip)) = default_network(c, s) {
            notes.push(Note {
                container: c.name.clone(),
                message: format!(
                    "is on networks {}: --internal registers its address on {net} ({ip}); \
                     choose with SERVICE_NETWORK or --network",
                    network_names(c)
                ),
            });
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::testing::{container, one, settings};
    use super::*;

    #[test]
    fn each_refusal_has_its_kind_where_it_is_made() {
        let web = |name: &str, env: &[&str], created: i64| {
            let mut c = container(name, env, &[(80, "tcp", "0.0.0.0", 8080)]);
            c.created = (created, 0);
            c
        };
        let claim = "SERVICE_EXTERNAL_PORT=9000";
        let containers = [
            web("bad", &["SERVICE_MODE=udp"], 1),
            web("first", &["SERVICE_NAME=a", "SERVICE_ID=x"], 2),
            web("twice", &["SERVICE_NAME=a", "SERVICE_ID=x"], 3),
            web("holder", &["SERVICE_NAME=db", claim], 4),
            web("other", &["SERVICE_NAME=cache", claim], 5),
        ];
        let (_, problems) = services(&containers, &settings());
        let kinds: Vec<(&str, Refusal)> = problems
            .iter()
            .map(|p| (p.container.as_str(), p.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("bad", Refusal::InvalidConfig),
                ("twice", Refusal::Duplicate),
                ("other", Refusal::PortTaken),
            ]
        );
        let mut unresolved = settings();
        unresolved.host_address = None;
        let (_, problems) = services(&[web("c", &[], 1)], &unresolved);
        assert_eq!(problems[0].kind, Refusal::NoAddress, "{}", problems[0]);
        let mut internal = settings();
        internal.internal = true;
        let mut c = container("n", &[], &[]);
        c.exposed = vec![Port {
            number: 80,
            proto: Proto::Tcp,
        }];
        c.networks.clear();
        let (_, problems) = services(&[c], &internal);
        assert_eq!(problems[0].kind, Refusal::NoAddress, "{}", problems[0]);
    }

    #[test]
    fn defaults_from_image_host_and_binding() {
        let s = one(container(
            "nginx.0",
            &[],
            &[(80, "tcp", "0.0.0.0", 32768), (80, "tcp", "::", 32768)],
        ))
        .unwrap();
        assert_eq!(
            s,
            Service {
                name: "nginx".into(),
                id: "node1:nginx.0:80".into(),
                address: "10.0.0.5".into(),
                port: 32768,
                mode: Mode::Tcp,
                domains: vec![],
                claim: None,
                container: "nginx.0".into(),
            }
        );
    }

    #[test]
    fn table_of_single_service_cases() {
        // (case, env, label, expected Ok(fields) or Err(substring))
        type Check = fn(&Service) -> bool;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(&str, Vec<&str>, Vec<(&str, &str)>, Result<Check, &str>)> = vec![
            (
                "name from env",
                vec!["SERVICE_NAME=web"],
                vec![],
                Ok(|s| s.name == "web"),
            ),
            (
                "label wins over env",
                vec!["SERVICE_NAME=web"],
                vec![("SERVICE_NAME", "api")],
                Ok(|s| s.name == "api"),
            ),
            (
                "port-specific wins",
                vec!["SERVICE_NAME=web", "SERVICE_80_NAME=front"],
                vec![],
                Ok(|s| s.name == "front"),
            ),
            (
                "explicit id",
                vec!["SERVICE_ID=abc"],
                vec![],
                Ok(|s| s.id == "abc"),
            ),
            (
                "http domains trimmed lowered deduped",
                vec![
                    "SERVICE_MODE=http",
                    "SERVICE_DOMAINS= B.example.com,a.example.com , b.example.com,*.c.io",
                ],
                vec![],
                Ok(|s| {
                    s.mode == Mode::Http
                        && s.domains == ["*.c.io", "a.example.com", "b.example.com"]
                }),
            ),
            (
                "mode is case-insensitive",
                vec!["SERVICE_MODE=TCP"],
                vec![],
                Ok(|s| s.mode == Mode::Tcp),
            ),
            (
                "external port",
                vec!["SERVICE_EXTERNAL_PORT=8080"],
                vec![],
                Ok(|s| s.claim == Some(Claim::External(8080))),
            ),
            (
                "internal port",
                vec!["SERVICE_INTERNAL_PORT= 8090 "],
                vec![],
                Ok(|s| s.claim == Some(Claim::Internal(8090))),
            ),
            (
                "unknown mode",
                vec!["SERVICE_MODE=ftp"],
                vec![],
                Err("SERVICE_MODE=\"ftp\" is not http or tcp"),
            ),
            (
                "http without domains",
                vec!["SERVICE_MODE=http"],
                vec![],
                Err("SERVICE_MODE=http needs SERVICE_DOMAINS"),
            ),
            (
                "bad domain",
                vec!["SERVICE_MODE=http", "SERVICE_DOMAINS=ok.com,bad_domain.com"],
                vec![],
                Err("\"bad_domain.com\" is not a valid DNS name"),
            ),
            (
                "wildcard only in front",
                vec!["SERVICE_MODE=http", "SERVICE_DOMAINS=a.*.com"],
                vec![],
                Err("not a valid DNS name"),
            ),
            (
                "domains on tcp",
                vec!["SERVICE_DOMAINS=a.com"],
                vec![],
                Err("applies only to SERVICE_MODE=http"),
            ),
            (
                "port not a number",
                vec!["SERVICE_EXTERNAL_PORT=http"],
                vec![],
                Err("SERVICE_EXTERNAL_PORT=\"http\" is not a port number"),
            ),
            (
                "port zero",
                vec!["SERVICE_INTERNAL_PORT=0"],
                vec![],
                Err("SERVICE_INTERNAL_PORT=\"0\" is not a port number"),
            ),
            (
                "port too big",
                vec!["SERVICE_EXTERNAL_PORT=65536"],
                vec![],
                Err("is not a port number in 1-65535"),
            ),
            (
                "both ports",
                vec!["SERVICE_EXTERNAL_PORT=1", "SERVICE_INTERNAL_PORT=2"],
                vec![],
                Err("both set"),
            ),
            (
                "external port on http",
                vec![
                    "SERVICE_MODE=http",
                    "SERVICE_DOMAINS=a.com",
                    "SERVICE_EXTERNAL_PORT=81",
                ],
                vec![],
                Err("applies only to SERVICE_MODE=tcp"),
            ),
            (
                "empty name",
                vec!["SERVICE_NAME="],
                vec![],
                Err("SERVICE_NAME=\"\" is empty"),
            ),
            (
                "dot-dot name",
                vec!["SERVICE_NAME=.."],
                vec![],
                Err("not a usable key segment"),
            ),
            (
                "slash in name",
                vec!["SERVICE_NAME=a/b"],
                vec![],
                Err("contains '/'"),
            ),
            (
                "slash in id",
                vec!["SERVICE_ID=../../etc"],
                vec![],
                Err("SERVICE_ID=\"../../etc\" contains '/'"),
            ),
            (
                "control char in id",
                vec!["SERVICE_ID=a\u{7}b"],
                vec![],
                Err("control character"),
            ),
        ];
        for (case, env, labels, want) in cases {
            let mut c = container("web.0", &env, &[(80, "tcp", "0.0.0.0", 32768)]);
            for (k, v) in labels {
                c.labels.insert(k.into(), v.into());
            }
            match (one(c), want) {
                (Ok(s), Ok(check)) => assert!(check(&s), "{case}: {s:?}"),
                (Err(e), Err(want)) => {
                    assert!(e.contains(want), "{case}: {e:?} lacks {want:?}");
                }
                (got, _) => panic!("{case}: unexpected {got:?}"),
            }
        }
    }

    #[test]
    fn lengths_and_domain_counts_are_bounded() {
        let long = |n: usize| "x".repeat(n);
        let domains = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("d{i}.example.com")).collect();
            format!("SERVICE_DOMAINS={}", list.join(","))
        };
        let http = "SERVICE_MODE=http".to_string();
        let long_name = "c".repeat(250);
        // (case, env, labels, container name, Ok(check) or Err(every substring))
        type Check = fn(&Service) -> bool;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Vec<String>,
            Vec<(&str, String)>,
            &str,
            Result<Check, Vec<&str>>,
        )> = vec![
            (
                "name of 253 bytes",
                vec![format!("SERVICE_NAME={}", long(253))],
                vec![],
                "web.0",
                Ok(|s| s.name.len() == 253),
            ),
            (
                "name of 254 bytes",
                vec![format!("SERVICE_NAME={}", long(254))],
                vec![],
                "web.0",
                Err(vec![
                    "SERVICE_NAME=\"xxx",
                    "(254 bytes)",
                    "254 bytes long, more than the 253",
                ]),
            ),
            (
                "a 60 KB SERVICE_ID label",
                vec![],
                vec![("SERVICE_ID", long(60_000))],
                "web.0",
                Err(vec![
                    "SERVICE_ID=\"xxx",
                    "60000 bytes long, more than the 253",
                ]),
            ),
            (
                "an ID of 253 bytes",
                vec![format!("SERVICE_ID={}", long(253))],
                vec![],
                "web.0",
                Ok(|s| s.id.len() == 253),
            ),
            (
                "default ID from a long container name",
                vec![],
                vec![],
                &long_name,
                Err(vec![
                    "service ID \"node1:ccc",
                    "bytes long, more than the 253",
                ]),
            ),
            (
                "1,000 domains",
                vec![http.clone(), domains(1000)],
                vec![],
                "web.0",
                Ok(|s| s.domains.len() == 1000),
            ),
            (
                "1,001 domains",
                vec![http.clone(), domains(1001)],
                vec![],
                "web.0",
                Err(vec![
                    "SERVICE_DOMAINS lists 1001 domains, more than the 1000",
                ]),
            ),
            (
                "duplicates count once",
                vec![http.clone(), format!("{},d0.example.com", domains(1000))],
                vec![],
                "web.0",
                Ok(|s| s.domains.len() == 1000),
            ),
            (
                "a long bad mode is quoted short",
                vec![format!("SERVICE_MODE={}", long(5000))],
                vec![],
                "web.0",
                Err(vec![
                    "SERVICE_MODE=\"xxx",
                    "(5000 bytes) is not http or tcp",
                ]),
            ),
        ];
        for (case, env, labels, name, want) in cases {
            let env: Vec<&str> = env.iter().map(String::as_str).collect();
            let mut c = container(name, &env, &[(80, "tcp", "0.0.0.0", 32768)]);
            for (k, v) in labels {
                c.labels.insert(k.into(), v);
            }
            match (one(c), want) {
                (Ok(s), Ok(check)) => assert!(check(&s), "{case}"),
                (Err(e), Err(parts)) => {
                    for part in parts {
                        assert!(e.contains(part), "{case}: {e:?} lacks {part:?}");
                    }
                    assert!(
                        e.len() < 300,
                        "{case}: a long error line: {} bytes",
                        e.len()
                    );
                }
                (got, _) => panic!("{case}: unexpected {:?}", got.map(|s| s.name.len())),
            }
        }
    }

    #[test]
    fn several_ports_get_suffixed_names_and_udp_ids() {
        let mut c = container(
            "dns",
            &["SERVICE_NAME=dns", "SERVICE_8080_NAME=admin"],
            &[
                (53, "udp", "0.0.0.0", 5353),
                (53, "tcp", "0.0.0.0", 5353),
                (8080, "tcp", "127.0.0.1", 18080),
            ],
        );
        c.labels.insert("SERVICE_9_IGNORE".into(), "".into());
        let (svcs, problems) = services(&[c], &settings());
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<(&str, &str, &str, u16)> = svcs
            .iter()
            .map(|s| (s.name.as_str(), s.id.as_str(), s.address.as_str(), s.port))
            .collect();
        assert_eq!(
            got,
            vec![
                ("dns-53", "node1:dns:53", "10.0.0.5", 5353),
                ("dns-53", "node1:dns:53:udp", "10.0.0.5", 5353),
                ("admin", "node1:dns:8080", "127.0.0.1", 18080),
            ]
        );
    }

    #[test]
    fn ignore_skips_container_or_port() {
        let c = container("a", &["SERVICE_IGNORE=1"], &[(80, "tcp", "", 1)]);
        assert_eq!(services(&[c], &settings()).0.len(), 0);
        let c = container("a", &["SERVICE_IGNORE="], &[(80, "tcp", "", 1)]);
        assert_eq!(
            services(&[c], &settings()).0.len(),
            1,
            "empty SERVICE_IGNORE does not ignore"
        );
        let c = container(
            "a",
            &["SERVICE_443_IGNORE=yes"],
            &[(80, "tcp", "", 1), (443, "tcp", "", 2)],
        );
        let (svcs, _) = services(&[c], &settings());
        assert_eq!(svcs.iter().map(|s| s.port).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn state_and_health_gate_registration() {
        let base = container("a", &[], &[(80, "tcp", "", 1)]);
        for (case, change, registered) in [
            (
                "running",
                (|_: &mut Container| {}) as fn(&mut Container),
                true,
            ),
            ("paused", |c| c.paused = true, false),
            ("stopped", |c| c.running = false, false),
            ("healthy", |c| c.health = Health::Healthy, true),
            ("starting", |c| c.health = Health::Starting, false),
            ("unhealthy", |c| c.health = Health::Unhealthy, false),
        ] {
            let mut c = base.clone();
            change(&mut c);
            assert_eq!(
                services(&[c], &settings()).0.len() == 1,
                registered,
                "{case}"
            );
        }
    }

    #[test]
    fn explicit_needs_service_name() {
        let s = Settings {
            explicit: true,
            ..settings()
        };
        assert!(services(&[container("a", &[], &[(80, "tcp", "", 1)])], &s)
            .0
            .is_empty());
        assert_eq!(
            services(
                &[container("a", &["SERVICE_NAME=x"], &[(80, "tcp", "", 1)])],
                &s
            )
            .0
            .len(),
            1
        );
    }

    #[test]
    fn older_container_keeps_claimed_port_and_directory() {
        let mut old = container(
            "old",
            &["SERVICE_NAME=a", "SERVICE_EXTERNAL_PORT=9000"],
            &[(80, "tcp", "", 1)],
        );
        old.created = (100, 5);
        let mut new = container(
            "new",
            &["SERVICE_NAME=b", "SERVICE_EXTERNAL_PORT=9000"],
            &[(80, "tcp", "", 2)],
        );
        new.created = (100, 7);
        let mut replica = container(
            "rep",
            &["SERVICE_NAME=a", "SERVICE_EXTERNAL_PORT=9000"],
            &[(80, "tcp", "", 3)],
        );
        replica.created = (200, 0);
        let mut dup = container(
            "dup",
            &["SERVICE_NAME=a", "SERVICE_ID=node1:old:80"],
            &[(80, "tcp", "", 4)],
        );
        dup.created = (300, 0);
        let (svcs, problems) = services(&[dup, replica, new, old], &settings());
        assert_eq!(
            svcs.iter()
                .map(|s| s.container.as_str())
                .collect::<Vec<_>>(),
            ["old", "rep"]
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.container == "new"
            && p.message.contains(
                "external port 9000 is already held by service a (older container old)"
            )));
        assert!(problems.iter().any(|p| p.container == "dup"
            && p.message
                .contains("already registered by older container old")));
    }
}
