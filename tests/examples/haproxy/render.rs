//! The model -> HAProxy configuration text. Pure: the same model gives the same
//! bytes, so an unchanged model never causes a reload.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::model::{Mesh, Server, Side};

const DOMAINS_PER_LINE: usize = 32;

/// The whole configuration.
pub fn config(mesh: &Mesh, prefix: &str) -> String {
    let mut names = Names::default();
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Rendered by the etcd-registrator haproxy example from the keys under {prefix}/."
    );
    let _ = writeln!(
        w,
        "# Do not edit: it is rewritten on every change. HAProxy runs it with -W (master-worker)."
    );
    let _ = writeln!(w, "global");
    let _ = writeln!(w);
    let _ = writeln!(w, "defaults");
    let _ = writeln!(w, "    timeout connect 1s");
    let _ = writeln!(w, "    timeout client 60s");
    let _ = writeln!(w, "    timeout server 60s");
    let _ = writeln!(w, "    timeout http-request 10s");
    let _ = writeln!(
        w,
        "    # An instance that went away since the last change: try another one."
    );
    let _ = writeln!(w, "    retries 3");
    let _ = writeln!(w, "    option redispatch 1");
    let _ = writeln!(
        w,
        "    # Host names are resolved at start; \
         one that does not resolve disables its server only."
    );
    let _ = writeln!(w, "    default-server init-addr last,libc,none");

    // Backend names first, so the frontend can refer to them.
    let backends: Vec<(String, &String)> = mesh
        .http
        .keys()
        .map(|name| (names.unique(&format!("http_{}", ident(name))), name))
        .collect();
    let _ = writeln!(w);
    let _ = writeln!(w, "frontend http");
    let _ = writeln!(w, "    mode http");
    let _ = writeln!(w, "    bind {}", mesh.http_bind);
    let _ = writeln!(
        w,
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower"
    );
    let mut wildcards = Vec::new();
    for (backend, name) in &backends {
        let domains = &mesh.http[*name].domains;
        let exact: Vec<&str> = domains
            .iter()
            .filter(|d| !d.starts_with("*."))
            .map(String::as_str)
            .collect();
        // HAProxy reads at most 64 words per line.
        for chunk in exact.chunks(DOMAINS_PER_LINE) {
            let _ = writeln!(
                w,
                "    use_backend {backend} if {{ var(txn.host) -m str {} }}",
                chunk.join(" ")
            );
        }
        for d in domains.iter().filter_map(|d| d.strip_prefix("*.")) {
            wildcards.push((d, backend));
        }
    }
    // Exact names win over wildcards: their rules come first.
    for (suffix, backend) in wildcards {
        let _ = writeln!(
            w,
            "    use_backend {backend} if {{ var(txn.host) -m reg ^[^.]+\\.{} }}",
            suffix.replace('.', "\\.") + "$"
        );
    }
    let _ = writeln!(
        w,
        "    # Unknown hosts, and domains whose last instance is gone: 503."
    );
    let _ = writeln!(w, "    default_backend no_service");
    let _ = writeln!(w);
    let _ = writeln!(w, "backend no_service");
    let _ = writeln!(w, "    mode http");

    for (backend, name) in &backends {
        let _ = writeln!(w);
        let _ = writeln!(w, "# service {name}");
        let _ = writeln!(w, "backend {backend}");
        let _ = writeln!(w, "    mode http");
        let _ = writeln!(w, "    balance roundrobin");
        let _ = writeln!(
            w,
            "    # Retry safe requests on another instance when one has just gone away."
        );
        let _ = writeln!(w, "    retry-on conn-failure empty-response");
        let _ = writeln!(w, "    http-request disable-l7-retry if !METH_GET");
        servers(w, &mesh.http[*name].servers);
    }

    for (bind, tcp) in &mesh.tcp {
        let (side, field) = match tcp.side {
            Side::Public => ("public", "external_port"),
            Side::Private => ("private", "internal_port"),
        };
        let _ = writeln!(w);
        let _ = writeln!(w, "# service {}, {field} {}", tcp.name, tcp.port);
        let _ = writeln!(
            w,
            "listen {}",
            names.unique(&format!("tcp_{side}_{}", bind.port()))
        );
        let _ = writeln!(w, "    mode tcp");
        let _ = writeln!(w, "    bind {bind}");
        let _ = writeln!(w, "    balance roundrobin");
        servers(w, &tcp.servers);
    }
    out
}

fn servers(w: &mut String, servers: &BTreeSet<Server>) {
    let mut names = Names::default();
    for s in servers {
        let address = if s.address.contains(':') {
            format!("[{}]", s.address)
        } else {
            s.address.clone()
        };
        let _ = writeln!(
            w,
            "    server {} {address}:{}",
            names.unique(&ident(&s.id)),
            s.port
        );
    }
}

/// HAProxy identifiers allow letters, digits and `-_.:`; anything else becomes `_`.
fn ident(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Hands out identifiers, numbering the ones that two raw names would share.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl Names {
    fn unique(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 1;
        while !self.0.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HttpService, TcpService};
    use std::collections::BTreeMap;

    fn server(id: &str, address: &str, port: u16) -> Server {
        Server {
            id: id.into(),
            address: address.into(),
            port,
        }
    }

    fn body(text: &str) -> String {
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .skip_while(|l| !l.starts_with("frontend"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn renders_host_routing_backends_and_tcp_listeners() {
        let mut http = BTreeMap::new();
        http.insert(
            "web".to_string(),
            HttpService {
                domains: ["example.com", "www.example.com", "*.apps.example.com"]
                    .iter()
                    .map(|d| d.to_string())
                    .collect(),
                servers: [
                    server("h:a:80", "127.0.0.1", 32768),
                    server("h:b:80", "::1", 32769),
                ]
                .into(),
            },
        );
        http.insert(
            "my api".to_string(),
            HttpService {
                domains: ["api.example.com".to_string()].into(),
                servers: [server("h:c 80", "10.0.0.5", 8080)].into(),
            },
        );
        let mut tcp = BTreeMap::new();
        tcp.insert(
            "127.0.0.1:55432".parse().unwrap(),
            TcpService {
                name: "db".into(),
                side: Side::Public,
                port: 15432,
                servers: [server("h:d:5432", "10.0.0.5", 32770)].into(),
            },
        );
        tcp.insert(
            "127.0.0.2:56379".parse().unwrap(),
            TcpService {
                name: "cache".into(),
                side: Side::Private,
                port: 16379,
                servers: [server("h:e:6379", "db.internal", 32771)].into(),
            },
        );
        let mesh = Mesh {
            http_bind: "127.0.0.1:8080".parse().unwrap(),
            http,
            tcp,
        };
        let text = config(&mesh, "/services");
        assert!(text.starts_with(
            "# Rendered by the etcd-registrator haproxy example from the keys under /services/."
        ));
        assert!(text.contains("\ndefaults\n"));
        let want = r"frontend http
    mode http
    bind 127.0.0.1:8080
    http-request set-var(txn.host) req.hdr(host),field(1,:),lower
    use_backend http_my_api if { var(txn.host) -m str api.example.com }
    use_backend http_web if { var(txn.host) -m str example.com www.example.com }
    use_backend http_web if { var(txn.host) -m reg ^[^.]+\.apps\.example\.com$ }
    default_backend no_service

backend no_service
    mode http

backend http_my_api
    mode http
    balance roundrobin
    retry-on conn-failure empty-response
    http-request disable-l7-retry if !METH_GET
    server h:c_80 10.0.0.5:8080

backend http_web
    mode http
    balance roundrobin
    retry-on conn-failure empty-response
    http-request disable-l7-retry if !METH_GET
    server h:a:80 127.0.0.1:32768
    server h:b:80 [::1]:32769

listen tcp_public_55432
    mode tcp
    bind 127.0.0.1:55432
    balance roundrobin
    server h:d:5432 10.0.0.5:32770

listen tcp_private_56379
    mode tcp
    bind 127.0.0.2:56379
    balance roundrobin
    server h:e:6379 db.internal:32771";
        assert_eq!(body(&text), want, "\n{text}");
        assert!(text.contains("# service my api\n"));
        assert!(text.contains("# service db, external_port 15432\n"));
        assert_eq!(
            config(&mesh, "/services"),
            text,
            "rendering is deterministic"
        );
    }

    #[test]
    fn many_domains_are_split_across_lines() {
        let domains: BTreeSet<String> = (0..70).map(|i| format!("d{i:02}.example")).collect();
        let http = BTreeMap::from([(
            "web".to_string(),
            HttpService {
                domains,
                servers: [server("i", "10.0.0.1", 80)].into(),
            },
        )]);
        let mesh = Mesh {
            http_bind: "127.0.0.1:80".parse().unwrap(),
            http,
            tcp: BTreeMap::new(),
        };
        let text = config(&mesh, "/s");
        let rules: Vec<&str> = text.lines().filter(|l| l.contains("use_backend")).collect();
        assert_eq!(rules.len(), 3);
        assert!(
            rules.iter().all(|l| l.split_whitespace().count() <= 64),
            "{rules:?}"
        );
        assert!(rules[2].ends_with("d68.example d69.example }"), "{rules:?}");
    }

    #[test]
    fn names_that_sanitize_alike_stay_distinct() {
        let mut n = Names::default();
        assert_eq!(n.unique(&ident("a b")), "a_b");
        assert_eq!(n.unique(&ident("a/b")), "a_b_2");
        assert_eq!(n.unique(&ident("a_b")), "a_b_3");
    }

    #[test]
    fn an_empty_mesh_still_answers_503_on_the_http_port() {
        let mesh = Mesh {
            http_bind: "0.0.0.0:80".parse().unwrap(),
            http: BTreeMap::new(),
            tcp: BTreeMap::new(),
        };
        let text = config(&mesh, "/s");
        assert!(text.contains("    bind 0.0.0.0:80\n"));
        assert!(text.contains("    default_backend no_service\n"));
        assert!(!text.contains("use_backend"));
    }
}
