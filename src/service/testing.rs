//! Test fixtures of the mapping: settings, a container, the one service it gives.

use std::collections::BTreeMap;

use super::*;

/// Host `node1`, resolving to 10.0.0.5; no option set.
pub fn settings() -> Settings {
    Settings {
        hostname: "node1".into(),
        ip: None,
        host_address: Some("10.0.0.5".into()),
        internal: false,
        explicit: false,
        network: None,
        ip_label: None,
    }
}

/// A running container `name` of `nginx:1.25` on `bridge` (172.17.0.2), with `env` and
/// bindings `(port, proto, host IP, host port)`.
pub fn container(name: &str, env: &[&str], ports: &[(u16, &str, &str, u16)]) -> Container {
    Container {
        id: format!("id-{name}"),
        name: name.into(),
        image: "registry:5000/team/nginx:1.25".into(),
        created: (100, 0),
        running: true,
        paused: false,
        health: Health::None,
        env: env.iter().map(|s| s.to_string()).collect(),
        labels: BTreeMap::new(),
        exposed: Vec::new(),
        bindings: ports
            .iter()
            .map(|&(port, proto, ip, host_port)| Binding {
                port: Port {
                    number: port,
                    proto: Proto::parse(proto).unwrap(),
                },
                host_ip: ip.into(),
                host_port,
            })
            .collect(),
        networks: BTreeMap::from([("bridge".into(), "172.17.0.2".into())]),
        host_network: false,
    }
}

/// The one service `c` becomes under [`settings`], or its one problem.
pub fn one(c: Container) -> Result<Service, String> {
    let (mut svcs, mut problems) = services(&[c], &settings());
    match (svcs.len(), problems.len()) {
        (1, 0) => Ok(svcs.remove(0)),
        (0, 1) => Err(problems.remove(0).message),
        n => panic!("expected one service or one problem, got {n:?}: {svcs:?} {problems:?}"),
    }
}
