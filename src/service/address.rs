//! Where a service is reached: which ports of a container count (published bindings,
//! or exposed ports with `--internal` and `--net=host`), and the address registered for
//! each (a label, the container's own address on the chosen network, `--ip`, the
//! binding's address or the host's).

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::meta::{shown, Meta};
use super::model::{Binding, Container, Port, Refusal, Refused, Settings};

/// A port to register, with the address and port number the mesh should use.
pub struct Candidate {
    pub port: Port,
    /// The binding's own address (a specific host IP), if any.
    pub address: Option<String>,
    /// The port number registered: the host port, or the container's own.
    pub number: u16,
}

/// One candidate per exposed port: published bindings normally, exposed ports with
/// `--net=host` or `--internal`. IPv4 and IPv6 bindings of one port collapse to one.
pub fn candidates(c: &Container, s: &Settings) -> Vec<Candidate> {
    let mut by_port: BTreeMap<Port, Candidate> = BTreeMap::new();
    if s.internal || c.host_network {
        let mut ports: Vec<Port> = c.exposed.clone();
        ports.extend(c.bindings.iter().map(|b| b.port));
        for port in ports {
            // --internal: the container's own address, chosen in `build`.
            by_port.entry(port).or_insert(Candidate {
                port,
                address: None,
                number: port.number,
            });
        }
        return by_port.into_values().collect();
    }
    // Preference when one port has several bindings: a specific IPv4 address, then
    // the wildcards, then a specific IPv6 address.
    let rank = |ip: &str| match ip {
        "" | "0.0.0.0" | "::" => 1,
        _ if ip.contains(':') => 2,
        _ => 0,
    };
    let mut best: BTreeMap<Port, &Binding> = BTreeMap::new();
    for b in &c.bindings {
        if best
            .get(&b.port)
            .is_none_or(|held| rank(&b.host_ip) < rank(&held.host_ip))
        {
            best.insert(b.port, b);
        }
    }
    best.into_values()
        .map(|b| Candidate {
            port: b.port,
            address: (rank(&b.host_ip) != 1).then(|| b.host_ip.clone()),
            number: b.host_port,
        })
        .collect()
}

/// The address registered for a candidate: the `--use-ip-from-label` label's, else with
/// `--internal` the container's own, else `--ip`, the binding's or the host's.
pub fn address(
    c: &Container,
    s: &Settings,
    meta: &Meta,
    cand: &Candidate,
    name: &str,
) -> Result<String, Refused> {
    let p = cand.port.number;
    Ok(match label_address(c, s, name)? {
        Some(a) => a,
        // --internal: the container's own address, whatever --ip says.
        None if s.internal && !c.host_network => own_address(c, s, meta, p, name)?,
        None => match (&cand.address, &s.ip, &s.host_address) {
            (_, Some(ip), _) => ip.clone(),
            (Some(a), None, _) => a.clone(),
            (None, None, Some(h)) => h.clone(),
            (None, None, None) => {
                return Err(Refused {
                    kind: Refusal::NoAddress,
                    message: format!(
                        "cannot resolve host name {:?} to an address; pass --ip; service \
                         {name} not registered",
                        s.hostname
                    ),
                })
            }
        },
    })
}

/// `--use-ip-from-label`: the address in that label of the container, when it is set
/// (as gliderlabs/registrator, a `/prefix-length` after it is dropped).
fn label_address(c: &Container, s: &Settings, name: &str) -> Result<Option<String>, String> {
    let Some(label) = &s.ip_label else {
        return Ok(None);
    };
    let Some(v) = c.labels.get(label).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let ip = v.split('/').next().unwrap_or_default().trim();
    match ip.parse::<IpAddr>() {
        Ok(ip) => Ok(Some(ip.to_string())),
        Err(_) => Err(format!(
            "label {label}={} is not an IP address (--use-ip-from-label); service {name} \
             not registered",
            shown(v)
        )),
    }
}

/// `--internal`: the container's address on the network `SERVICE_NETWORK` names (an
/// error when it is not on it), else on the default one (see [`default_network`]).
fn own_address(
    c: &Container,
    s: &Settings,
    meta: &Meta,
    p: u16,
    name: &str,
) -> Result<String, Refused> {
    if let Some((var, net)) = meta.get(p, "NETWORK") {
        return c.networks.get(net).cloned().ok_or_else(|| {
            format!(
                "{var}={}: the container has no address on that network (it has on: {}); \
                 service {name} not registered",
                shown(net),
                network_names(c)
            )
            .into()
        });
    }
    match default_network(c, s) {
        Some((_, ip)) => Ok(ip.clone()),
        None => Err(Refused {
            kind: Refusal::NoAddress,
            message: format!(
                "has no IP address on its network; service {name} not registered (--internal)"
            ),
        }),
    }
}

/// The network whose address `--internal` registers when the container names none:
/// `--network`'s if the container is on it, else `bridge`, else the first by name.
pub fn default_network<'a>(c: &'a Container, s: &Settings) -> Option<(&'a String, &'a String)> {
    s.network
        .as_deref()
        .and_then(|n| c.networks.get_key_value(n))
        .or_else(|| c.networks.get_key_value("bridge"))
        .or_else(|| c.networks.iter().next())
}

/// The container's networks by name (`none` when it has none), for messages.
pub fn network_names(c: &Container) -> String {
    let names: Vec<&str> = c.networks.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::service::testing::{container, one, settings};
    use crate::service::*;
    use std::collections::BTreeMap;

    #[test]
    fn addresses_ip_flag_binding_host_internal() {
        let c = container("a", &[], &[(80, "tcp", "127.0.0.1", 8080)]);
        assert_eq!(one(c.clone()).unwrap().address, "127.0.0.1");
        let s = Settings {
            ip: Some("192.0.2.1".into()),
            ..settings()
        };
        assert_eq!(
            services(std::slice::from_ref(&c), &s).0[0].address,
            "192.0.2.1"
        );
        let s = Settings {
            internal: true,
            ..settings()
        };
        let svc = &services(std::slice::from_ref(&c), &s).0[0];
        assert_eq!((svc.address.as_str(), svc.port), ("172.17.0.2", 80));
        let s = Settings {
            internal: true,
            ip: Some("192.0.2.1".into()),
            ..settings()
        };
        assert_eq!(
            services(std::slice::from_ref(&c), &s).0[0].address,
            "172.17.0.2",
            "--internal wins over --ip"
        );
        let mut hostnet = container("h", &[], &[]);
        (hostnet.host_network, hostnet.networks, hostnet.exposed) =
            (true, BTreeMap::new(), vec![Port::parse("9000").unwrap()]);
        let s = Settings {
            internal: true,
            ip: Some("192.0.2.1".into()),
            ..settings()
        };
        assert_eq!(
            services(&[hostnet], &s).0[0].address,
            "192.0.2.1",
            "host network uses the host's address"
        );
        let both = container(
            "b",
            &[],
            &[
                (80, "tcp", "::", 8080),
                (80, "tcp", "0.0.0.0", 8080),
                (80, "tcp", "127.0.0.1", 9090),
            ],
        );
        let (svcs, _) = services(&[both], &settings());
        assert_eq!(
            (svcs.len(), svcs[0].address.as_str(), svcs[0].port),
            (1, "127.0.0.1", 9090)
        );
        let s = Settings {
            host_address: None,
            ..settings()
        };
        let c = container("a", &[], &[(80, "tcp", "0.0.0.0", 8080)]);
        let (_, problems) = services(&[c], &s);
        assert!(
            problems[0]
                .message
                .contains("cannot resolve host name \"node1\""),
            "{problems:?}"
        );
    }

    /// `--internal` on several networks: SERVICE_NETWORK (per port too), else
    /// `--network` if the container is on it, else bridge, else the first by name.
    #[test]
    fn internal_address_by_network() {
        let mut c = container("a", &[], &[(80, "tcp", "127.0.0.1", 8080)]);
        c.networks = BTreeMap::from([
            ("front".into(), "10.1.0.2".into()),
            ("back".into(), "10.2.0.2".into()),
        ]);
        let internal = |network: Option<&str>| Settings {
            internal: true,
            network: network.map(String::from),
            ..settings()
        };
        let address = |c: &Container, s: &Settings| {
            let (svcs, problems) = services(std::slice::from_ref(c), s);
            svcs.first()
                .map(|svc| svc.address.clone())
                .ok_or_else(|| problems[0].message.clone())
        };
        let notes = |c: &Container, s: &Settings| network_notes(std::slice::from_ref(c), s);
        // No choice: the first by name, and one note naming both and the pick.
        assert_eq!(address(&c, &internal(None)).unwrap(), "10.2.0.2");
        let n = notes(&c, &internal(None));
        assert_eq!(
            n[0].to_string(),
            "container a: is on networks back, front: --internal registers its address on \
             back (10.2.0.2); choose with SERVICE_NETWORK or --network"
        );
        assert_eq!(notes(&c, &settings()), vec![], "not --internal: no note");
        // --network, when the container is on it.
        assert_eq!(address(&c, &internal(Some("front"))).unwrap(), "10.1.0.2");
        assert_eq!(notes(&c, &internal(Some("front"))), vec![]);
        assert_eq!(address(&c, &internal(Some("other"))).unwrap(), "10.2.0.2");
        assert_eq!(notes(&c, &internal(Some("other"))).len(), 1);
        // SERVICE_NETWORK wins over --network; per port too.
        c.env = vec!["SERVICE_NETWORK=front".into()];
        assert_eq!(address(&c, &internal(Some("back"))).unwrap(), "10.1.0.2");
        assert_eq!(notes(&c, &internal(None)), vec![]);
        c.env = vec![
            "SERVICE_NETWORK=front".into(),
            "SERVICE_80_NETWORK=back".into(),
        ];
        assert_eq!(address(&c, &internal(None)).unwrap(), "10.2.0.2");
        c.env = vec!["SERVICE_NETWORK=nope".into()];
        assert_eq!(
            address(&c, &internal(None)).unwrap_err(),
            "SERVICE_NETWORK=\"nope\": the container has no address on that network (it has \
             on: back, front); service nginx not registered"
        );
        // bridge before the first by name.
        c.env.clear();
        c.networks.insert("bridge".into(), "172.17.0.9".into());
        assert_eq!(address(&c, &internal(None)).unwrap(), "172.17.0.9");
        // One network: nothing to choose, no note.
        c.networks = BTreeMap::from([("back".into(), "10.2.0.2".into())]);
        assert_eq!(notes(&c, &internal(None)), vec![]);
    }

    #[test]
    fn address_from_a_label() {
        let s = Settings {
            ip_label: Some("addr".into()),
            ip: Some("192.0.2.1".into()),
            ..settings()
        };
        let mut c = container("a", &[], &[(80, "tcp", "127.0.0.1", 8080)]);
        let address = |c: &Container, s: &Settings| {
            let (svcs, problems) = services(std::slice::from_ref(c), s);
            svcs.first()
                .map(|svc| (svc.address.clone(), svc.port))
                .ok_or_else(|| problems[0].to_string())
        };
        assert_eq!(address(&c, &s).unwrap().0, "192.0.2.1", "no label: --ip");
        for (value, want) in [
            ("10.9.8.7", "10.9.8.7"),
            ("10.9.8.7/24", "10.9.8.7"),
            ("fd00::7", "fd00::7"),
        ] {
            c.labels.insert("addr".into(), value.into());
            assert_eq!(address(&c, &s).unwrap(), (want.into(), 8080), "{value}");
        }
        let internal = Settings {
            internal: true,
            ..s.clone()
        };
        assert_eq!(address(&c, &internal).unwrap(), ("fd00::7".into(), 80));
        c.labels.insert("addr".into(), "nope".into());
        assert_eq!(
            address(&c, &s).unwrap_err(),
            "container a: label addr=\"nope\" is not an IP address (--use-ip-from-label); \
             service nginx not registered"
        );
        c.env = vec!["addr=10.0.0.1".into()];
        c.labels.clear();
        assert_eq!(address(&c, &s).unwrap().0, "192.0.2.1", "a label, not env");
    }

    #[test]
    fn host_address_is_needed_only_for_wildcard_bindings_and_host_network() {
        let s = Settings {
            host_address: None,
            ..settings()
        };
        let specific = container("a", &[], &[(80, "tcp", "127.0.0.1", 1)]);
        let wildcard = container("b", &[], &[(80, "tcp", "0.0.0.0", 2)]);
        let mut hostnet = container("h", &[], &[]);
        hostnet.host_network = true;
        assert!(!needs_host_address(std::slice::from_ref(&specific), &s));
        assert!(needs_host_address(
            &[specific.clone(), wildcard.clone()],
            &s
        ));
        assert!(needs_host_address(&[hostnet.clone()], &s));
        assert!(!needs_host_address(
            std::slice::from_ref(&wildcard),
            &Settings {
                internal: true,
                ..s.clone()
            }
        ));
        assert!(!needs_host_address(
            &[wildcard, hostnet],
            &Settings {
                ip: Some("192.0.2.1".into()),
                ..s
            }
        ));
    }

    #[test]
    fn host_network_registers_exposed_ports() {
        let mut c = container("h", &[], &[]);
        c.host_network = true;
        c.networks.clear();
        c.exposed = vec![Port::parse("9999/tcp").unwrap()];
        let svc = one(c).unwrap();
        assert_eq!(
            (svc.address.as_str(), svc.port, svc.id.as_str()),
            ("10.0.0.5", 9999, "node1:h:9999")
        );
    }
}
