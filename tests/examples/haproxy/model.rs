//! The registrator's keys -> what HAProxy should serve. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use etcd_registrator::keys;

/// One key's value and the revision that created it (its age, for conflicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: String,
    pub created: i64,
}

/// Every key under `<prefix>/`, by its path relative to it (`web/h:c:80/port`).
pub type Keys = BTreeMap<String, Stored>;

/// Where HAProxy listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub public: IpAddr,
    pub private: IpAddr,
    pub http_port: u16,
    /// Added to every external and internal port.
    pub offset: u16,
}

/// One instance's address, named by its service ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Server {
    pub id: String,
    pub address: String,
    pub port: u16,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct HttpService {
    /// Lower-case names; `*.example.com` matches one label below `example.com`.
    pub domains: BTreeSet<String>,
    pub servers: BTreeSet<Server>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Public,
    Private,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TcpService {
    pub name: String,
    pub side: Side,
    /// The `external_port` or `internal_port` as registered (before the offset).
    pub port: u16,
    pub servers: BTreeSet<Server>,
}

/// What HAProxy should serve.
#[derive(Debug, PartialEq, Eq)]
pub struct Mesh {
    pub http_bind: SocketAddr,
    /// By service name.
    pub http: BTreeMap<String, HttpService>,
    /// By the address HAProxy listens on.
    pub tcp: BTreeMap<SocketAddr, TcpService>,
}

#[derive(Debug, PartialEq)]
enum Route {
    Http(BTreeSet<String>),
    Tcp {
        external: Option<u16>,
        internal: Option<u16>,
    },
}

#[derive(Debug, PartialEq)]
struct Instance {
    name: String,
    id: String,
    /// The oldest create revision of its keys.
    created: i64,
    server: Server,
    route: Route,
}

/// The keys of one `<name>/<id>` directory.
#[derive(Default)]
struct Dir<'a> {
    fields: BTreeMap<&'a str, &'a str>,
    domains: Vec<&'a str>,
    created: Option<i64>,
}

/// The model and the warnings about what was left out (one line each).
pub fn build(keys: &Keys, listen: &Listen) -> (Mesh, BTreeSet<String>) {
    let mut warnings = BTreeSet::new();
    let mut dirs: BTreeMap<(&str, &str), Dir> = BTreeMap::new();
    for (key, stored) in keys {
        let Some((name, id, field)) = split(key) else {
            warnings.insert(format!("ignoring key {key:?}: not <name>/<id>/<field>"));
            continue;
        };
        let dir = dirs.entry((name, id)).or_default();
        dir.created = Some(
            dir.created
                .map_or(stored.created, |c| c.min(stored.created)),
        );
        match field.strip_prefix("domains/") {
            Some(domain) => dir.domains.push(domain),
            None => {
                dir.fields.insert(field, &stored.value);
            }
        }
    }

    let mut instances = Vec::new();
    for ((name, id), dir) in &dirs {
        match instance(name, id, dir) {
            Ok(Some(i)) => instances.push(i),
            Ok(None) => {}
            Err(why) => {
                warnings.insert(format!("skipping service {name}/{id}: {why}"));
            }
        }
    }
    // Claims on a domain or a port are granted oldest first.
    instances.sort_by(|a, b| (a.created, &a.name, &a.id).cmp(&(b.created, &b.name, &b.id)));

    let http_bind = SocketAddr::new(listen.public, listen.http_port);
    let mut mesh = Mesh {
        http_bind,
        http: BTreeMap::new(),
        tcp: BTreeMap::new(),
    };
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for inst in &instances {
        let who = format!("service {}/{}", inst.name, inst.id);
        match &inst.route {
            Route::Http(domains) => {
                let mut won = Vec::new();
                for d in domains {
                    let owner = *owners.entry(d).or_insert(&inst.name);
                    if owner == inst.name {
                        won.push(d.clone());
                    } else {
                        warnings.insert(format!(
                            "{who}: domain {d} is served by service {owner}, registered first"
                        ));
                    }
                }
                if !won.is_empty() {
                    let svc = mesh.http.entry(inst.name.clone()).or_default();
                    svc.domains.extend(won);
                    svc.servers.insert(inst.server.clone());
                }
            }
            Route::Tcp { external, internal } => {
                let ports = [
                    (Side::Public, "external_port", *external),
                    (Side::Private, "internal_port", *internal),
                ];
                for (side, field, port) in ports {
                    let Some(port) = port else { continue };
                    let ip = if side == Side::Public {
                        listen.public
                    } else {
                        listen.private
                    };
                    let Some(listen_port) = port.checked_add(listen.offset) else {
                        warnings.insert(format!(
                            "{who}: {field} {port} + offset {} is above 65535",
                            listen.offset
                        ));
                        continue;
                    };
                    let bind = SocketAddr::new(ip, listen_port);
                    if let Some(tcp) = mesh.tcp.get_mut(&bind) {
                        if tcp.name == inst.name {
                            tcp.servers.insert(inst.server.clone());
                        } else {
                            warnings.insert(format!(
                                "{who}: {field} {port} is served by service {}, registered first",
                                tcp.name
                            ));
                        }
                        continue;
                    }
                    let taken = if overlaps(bind, http_bind) {
                        Some("the HTTP frontend".to_string())
                    } else {
                        mesh.tcp
                            .iter()
                            .find(|(b, _)| overlaps(**b, bind))
                            .map(|(b, t)| format!("service {} on {b}", t.name))
                    };
                    if let Some(taken) = taken {
                        warnings.insert(format!(
                            "{who}: {field} {port} would listen on {bind}, taken by {taken}"
                        ));
                        continue;
                    }
                    let servers = BTreeSet::from([inst.server.clone()]);
                    mesh.tcp.insert(
                        bind,
                        TcpService {
                            name: inst.name.clone(),
                            side,
                            port,
                            servers,
                        },
                    );
                }
            }
        }
    }
    (mesh, warnings)
}

/// `<name>/<id>/<field>` of a key relative to the prefix, read by the registrator's own
/// [`keys::split_key`]; None for keys of any other shape (an empty part included).
fn split(key: &str) -> Option<(&str, &str, &str)> {
    // split_key reads `<prefix>/<name>/<id>/<field>`: a relative key sits under the
    // empty prefix. Its directory `<name>/<id>` is the start of the key.
    let (dir, _) = keys::split_key("", &format!("/{key}"))?;
    let (name, id) = key.get(..dir.len())?.split_once('/')?;
    let field = key.get(dir.len() + 1..)?;
    Some((name, id, field))
}

/// One instance from its directory; Ok(None): complete but not on the mesh (a TCP
/// service with neither an external nor an internal port, the registrator's default).
fn instance(name: &str, id: &str, dir: &Dir) -> Result<Option<Instance>, String> {
    if name.chars().chain(id.chars()).any(char::is_control) {
        return Err("its name or ID contains a control character".into());
    }
    let field = |f: &str| {
        dir.fields
            .get(f)
            .copied()
            .ok_or(format!("incomplete, no {f}"))
    };
    let (address, port, mode) = (field("address")?, field("port")?, field("mode")?);
    if address.parse::<IpAddr>().is_err() && !is_hostname(address) {
        return Err(format!(
            "address {address:?} is neither an IP address nor a host name"
        ));
    }
    let port = parse_port("port", port)?;
    let route = match mode {
        "http" => {
            if dir.domains.is_empty() {
                return Err("incomplete, mode http without domains".into());
            }
            let mut domains = BTreeSet::new();
            for d in &dir.domains {
                let lower = d.to_ascii_lowercase();
                if !is_domain(&lower) {
                    return Err(format!("domain {d:?} is not a DNS name"));
                }
                domains.insert(lower);
            }
            Route::Http(domains)
        }
        "tcp" => {
            let optional = |f: &str| dir.fields.get(f).map(|v| parse_port(f, v)).transpose();
            let (external, internal) = (optional("external_port")?, optional("internal_port")?);
            if external.is_none() && internal.is_none() {
                return Ok(None);
            }
            Route::Tcp { external, internal }
        }
        other => return Err(format!("mode {other:?} is neither http nor tcp")),
    };
    let server = Server {
        id: id.to_string(),
        address: address.to_string(),
        port,
    };
    Ok(Some(Instance {
        name: name.into(),
        id: id.into(),
        created: dir.created.unwrap_or(0),
        server,
        route,
    }))
}

fn parse_port(field: &str, v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or(format!("{field} {v:?} is not a port in 1-65535"))
}

/// A DNS name, optionally `*.` and a name (one label wildcard). Lower case only.
pub fn is_domain(d: &str) -> bool {
    let name = d.strip_prefix("*.").unwrap_or(d);
    is_hostname(name) && !name.bytes().any(|b| b.is_ascii_uppercase())
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Two listening addresses on one port collide when they are equal or one is a wildcard.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn listen() -> Listen {
        Listen {
            public: LOOPBACK,
            private: "127.0.0.2".parse().unwrap(),
            http_port: 8080,
            offset: 40000,
        }
    }

    /// Keys from `(relative key, value)`, each created at revision `created`.
    fn keys(created: i64, pairs: &[(&str, &str)]) -> Keys {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Stored {
                        value: v.to_string(),
                        created,
                    },
                )
            })
            .collect()
    }

    fn web(id: &str, port: &str, domains: &[&str]) -> Vec<(String, String)> {
        let mut out = vec![
            (format!("web/{id}/address"), "127.0.0.1".to_string()),
            (format!("web/{id}/port"), port.to_string()),
            (format!("web/{id}/mode"), "http".to_string()),
            (format!("web/{id}/node"), "h1".to_string()),
        ];
        for d in domains {
            out.push((format!("web/{id}/domains/{d}"), d.to_string()));
        }
        out
    }

    fn owned(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn server(id: &str, port: u16) -> Server {
        Server {
            id: id.into(),
            address: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn http_replicas_share_one_backend_with_the_union_of_their_domains() {
        let mut k = keys(
            5,
            &owned(&web("h:a:80", "32768", &["example.com", "www.example.com"])),
        );
        k.extend(keys(6, &owned(&web("h:b:80", "32769", &["example.com"]))));
        let (mesh, warnings) = build(&k, &listen());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(mesh.http_bind, "127.0.0.1:8080".parse().unwrap());
        let svc = &mesh.http["web"];
        assert_eq!(
            svc.domains,
            BTreeSet::from(["example.com".into(), "www.example.com".into()])
        );
        assert_eq!(
            svc.servers,
            BTreeSet::from([server("h:a:80", 32768), server("h:b:80", 32769)])
        );
        assert!(mesh.tcp.is_empty());
    }

    #[test]
    fn tcp_ports_listen_on_their_side_with_the_offset() {
        let k = keys(
            3,
            &[
                ("db/h:d:5432/address", "10.0.0.5"),
                ("db/h:d:5432/port", "32770"),
                ("db/h:d:5432/mode", "tcp"),
                ("db/h:d:5432/external_port", "15432"),
                ("cache/h:c:6379/address", "10.0.0.6"),
                ("cache/h:c:6379/port", "32771"),
                ("cache/h:c:6379/mode", "tcp"),
                ("cache/h:c:6379/internal_port", "16379"),
                // The registrator's default: TCP without a mesh port is not routed.
                ("plain/h:p:22/address", "10.0.0.7"),
                ("plain/h:p:22/port", "32772"),
                ("plain/h:p:22/mode", "tcp"),
            ],
        );
        let (mesh, warnings) = build(&k, &listen());
        assert!(warnings.is_empty(), "{warnings:?}");
        let db = &mesh.tcp[&"127.0.0.1:55432".parse().unwrap()];
        assert_eq!(
            (db.name.as_str(), db.side, db.port),
            ("db", Side::Public, 15432)
        );
        assert_eq!(
            db.servers,
            BTreeSet::from([Server {
                id: "h:d:5432".into(),
                address: "10.0.0.5".into(),
                port: 32770
            }])
        );
        let cache = &mesh.tcp[&"127.0.0.2:56379".parse().unwrap()];
        assert_eq!((cache.name.as_str(), cache.side), ("cache", Side::Private));
        assert_eq!(mesh.tcp.len(), 2);
        assert!(mesh.http.is_empty());
    }

    #[test]
    fn incomplete_and_malformed_instances_are_skipped_with_one_warning_each() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                "no port",
                &[("s/i/address", "127.0.0.1"), ("s/i/mode", "tcp")],
                "incomplete, no port",
            ),
            (
                "no address",
                &[("s/i/port", "80"), ("s/i/mode", "tcp")],
                "incomplete, no address",
            ),
            (
                "http without domains",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "80"),
                    ("s/i/mode", "http"),
                ],
                "mode http without domains",
            ),
            (
                "bad port",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "80x"),
                    ("s/i/mode", "tcp"),
                    ("s/i/external_port", "1"),
                ],
                "port \"80x\" is not a port",
            ),
            (
                "port zero",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "0"),
                    ("s/i/mode", "tcp"),
                    ("s/i/external_port", "1"),
                ],
                "port \"0\" is not a port",
            ),
            (
                "bad external port",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "80"),
                    ("s/i/mode", "tcp"),
                    ("s/i/external_port", "99999"),
                ],
                "external_port \"99999\"",
            ),
            (
                "bad mode",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "80"),
                    ("s/i/mode", "udp"),
                ],
                "mode \"udp\"",
            ),
            (
                "address with a newline (config injection)",
                &[
                    ("s/i/address", "127.0.0.1\n    bind :1"),
                    ("s/i/port", "80"),
                    ("s/i/mode", "tcp"),
                    ("s/i/external_port", "1"),
                ],
                "neither an IP address nor a host name",
            ),
            (
                "bad domain",
                &[
                    ("s/i/address", "127.0.0.1"),
                    ("s/i/port", "80"),
                    ("s/i/mode", "http"),
                    ("s/i/domains/a b", "a b"),
                ],
                "domain \"a b\" is not a DNS name",
            ),
            (
                "control character in the ID",
                &[
                    ("s/i\u{7}/address", "127.0.0.1"),
                    ("s/i\u{7}/port", "80"),
                    ("s/i\u{7}/mode", "tcp"),
                ],
                "control character",
            ),
        ];
        for (case, pairs, want) in cases {
            let mut k = keys(1, pairs);
            k.extend(keys(2, &owned(&web("good", "8000", &["ok.example"]))));
            let (mesh, warnings) = build(&k, &listen());
            assert_eq!(warnings.len(), 1, "{case}: {warnings:?}");
            let w = warnings.iter().next().unwrap();
            assert!(
                w.contains(want) && w.starts_with("skipping service s/"),
                "{case}: {w}"
            );
            assert_eq!(
                mesh.http["web"].servers.len(),
                1,
                "{case}: the good service is still served"
            );
            assert!(mesh.tcp.is_empty(), "{case}");
        }
    }

    #[test]
    fn stray_keys_are_reported_and_unknown_fields_ignored() {
        let mut k = keys(1, &[("loose", "x"), ("web/h:a:80/weight", "7")]);
        k.extend(keys(1, &owned(&web("h:a:80", "80", &["a.example"]))));
        let (mesh, warnings) = build(&k, &listen());
        assert_eq!(
            warnings.into_iter().collect::<Vec<_>>(),
            vec!["ignoring key \"loose\": not <name>/<id>/<field>".to_string()]
        );
        assert_eq!(mesh.http["web"].servers.len(), 1);
    }

    #[test]
    fn the_service_registered_first_keeps_a_contested_domain_or_port() {
        let mut k = keys(
            9,
            &owned(&web("h:a:80", "80", &["shared.example", "web.example"])),
        );
        k.extend(keys(
            4,
            &[
                ("api/h:b:80/address", "127.0.0.1"),
                ("api/h:b:80/port", "81"),
                ("api/h:b:80/mode", "http"),
                ("api/h:b:80/domains/shared.example", "shared.example"),
                ("db/h:d:1/address", "127.0.0.1"),
                ("db/h:d:1/port", "82"),
                ("db/h:d:1/mode", "tcp"),
                ("db/h:d:1/external_port", "15432"),
                ("zdb/h:z:1/address", "127.0.0.1"),
                ("zdb/h:z:1/port", "83"),
                ("zdb/h:z:1/mode", "tcp"),
                ("zdb/h:z:1/external_port", "15432"),
            ],
        ));
        let (mesh, warnings) = build(&k, &listen());
        assert_eq!(
            mesh.http["api"].domains,
            BTreeSet::from(["shared.example".to_string()])
        );
        assert_eq!(
            mesh.http["web"].domains,
            BTreeSet::from(["web.example".to_string()])
        );
        assert_eq!(mesh.tcp[&"127.0.0.1:55432".parse().unwrap()].name, "db");
        let w: Vec<&String> = warnings.iter().collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("web/h:a:80: domain shared.example is served by service api"),
            "{w:?}"
        );
        assert!(
            w[1].contains("zdb/h:z:1: external_port 15432 is served by service db"),
            "{w:?}"
        );
    }

    #[test]
    fn ports_that_overflow_or_hit_the_http_frontend_are_refused() {
        let tcp = |name: &str, field: &str, port: &str| {
            vec![
                (format!("{name}/i/address"), "127.0.0.1".to_string()),
                (format!("{name}/i/port"), "80".to_string()),
                (format!("{name}/i/mode"), "tcp".to_string()),
                (format!("{name}/i/{field}"), port.to_string()),
            ]
        };
        let mut k = keys(1, &owned(&tcp("big", "external_port", "30000")));
        k.extend(keys(1, &owned(&tcp("clash", "external_port", "1"))));
        k.extend(keys(1, &owned(&tcp("priv", "internal_port", "1"))));
        let l = Listen {
            public: LOOPBACK,
            private: "0.0.0.0".parse().unwrap(),
            http_port: 40001,
            offset: 40000,
        };
        let (mesh, warnings) = build(&k, &l);
        let w: Vec<&String> = warnings.iter().collect();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].contains("big/i: external_port 30000 + offset 40000 is above 65535"),
            "{w:?}"
        );
        assert!(
            w[1].contains(
                "clash/i: external_port 1 would listen on 127.0.0.1:40001, \
                 taken by the HTTP frontend"
            ),
            "{w:?}"
        );
        assert!(
            w[2].contains("priv/i: internal_port 1 would listen on 0.0.0.0:40001"),
            "{w:?}"
        );
        assert!(mesh.tcp.is_empty());
    }

    #[test]
    fn domains_are_lower_cased_and_wildcards_allowed() {
        assert!(is_domain("*.example.com"));
        assert!(is_domain("localhost"));
        assert!(!is_domain("*.*.example.com"));
        assert!(!is_domain("Example.com"));
        assert!(!is_domain("-a.example"));
        assert!(!is_domain("a..b"));
        assert!(!is_domain("a.example/x"));
        let k = keys(1, &owned(&web("i", "80", &["WWW.Example.com"])));
        let (mesh, warnings) = build(&k, &listen());
        assert!(warnings.is_empty());
        assert_eq!(
            mesh.http["web"].domains,
            BTreeSet::from(["www.example.com".to_string()])
        );
    }
}
