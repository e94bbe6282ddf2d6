//! The service model: turns one host's containers into the services it should register.
//!
//! Everything here is pure: no network, clock or DNS. The Docker client builds
//! [`Container`]s, the caller resolves addresses beforehand and passes them in
//! [`Settings`], and [`services`] returns the services plus the problems it refused.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Transport protocol of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// Parses Docker's spelling (`tcp`, `udp`, `sctp`).
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            "sctp" => Some(Proto::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        })
    }
}

/// A port inside the container (`80/tcp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    pub number: u16,
    pub proto: Proto,
}

impl Port {
    /// Parses Docker's `80/tcp` form (a bare number means tcp).
    pub fn parse(s: &str) -> Option<Port> {
        let (n, p) = s.split_once('/').unwrap_or((s, "tcp"));
        Some(Port {
            number: n.parse().ok()?,
            proto: Proto::parse(p)?,
        })
    }
}

/// One published binding of a container port on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub port: Port,
    /// Host address the port is bound to: `0.0.0.0`, `::` or a specific one.
    pub host_ip: String,
    pub host_port: u16,
}

/// Whether the container runs, and whether its healthcheck (if any) passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No healthcheck configured.
    None,
    Starting,
    Healthy,
    Unhealthy,
}

/// What the registrator knows of one container, from Docker's list and inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    /// Creation time as `(seconds since epoch, nanoseconds)`: the older container wins
    /// a conflict.
    pub created: (i64, u32),
    pub running: bool,
    pub paused: bool,
    pub health: Health,
    /// `KEY=value` entries of the container's environment.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (from the image and `--expose`), published or not.
    pub exposed: Vec<Port>,
    /// Published bindings; IPv4 and IPv6 bindings of one port appear separately.
    pub bindings: Vec<Binding>,
    /// The container's own address on each of its networks that gives it one
    /// (network name -> IP).
    pub networks: BTreeMap<String, String>,
    /// `--net=host`: the container's ports are the host's ports.
    pub host_network: bool,
}

/// How the proxy mesh serves a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    Http,
    Tcp,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        })
    }
}

/// A cluster-wide TCP port a service claims on the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    External(u16),
    Internal(u16),
}

impl Claim {
    /// The key under the service directory that records the claim.
    pub fn field(&self) -> &'static str {
        match self {
            Claim::External(_) => "external_port",
            Claim::Internal(_) => "internal_port",
        }
    }
    pub fn port(&self) -> u16 {
        match self {
            Claim::External(p) | Claim::Internal(p) => *p,
        }
    }
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::External(p) => write!(f, "external port {p}"),
            Claim::Internal(p) => write!(f, "internal port {p}"),
        }
    }
}

/// One service to register: what ends up under `<prefix>/<name>/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub id: String,
    pub address: String,
    pub port: u16,
    pub mode: Mode,
    /// Sorted and de-duplicated; only for `http`.
    pub domains: Vec<String>,
    pub claim: Option<Claim>,
    /// Name of the container it came from, for messages.
    pub container: String,
}

/// A container or port that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub container: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {}: {}", self.container, self.message)
    }
}

/// The longest service name or ID, in bytes (a DNS name's limit). Every key of a service
/// names both, so this bounds the size of its keys and of the transactions that write it.
pub const MAX_SEGMENT_BYTES: usize = 253;

/// The most domains one `http` service may list. Each domain is one key: a service of
/// 1,000 domains is written in 8 transactions of at most 128 keys (about 1 MB in all,
/// each transaction well under etcd's 1.5 MiB request limit).
pub const MAX_DOMAINS: usize = 1000;

/// Host-level inputs of the mapping, resolved by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// This host's identity, used in default service IDs.
    pub hostname: String,
    /// `--ip`: the address registered for every published port.
    pub ip: Option<String>,
    /// What the hostname resolved to, when `--ip` is not given (None: unresolvable).
    pub host_address: Option<String>,
    /// `--internal`: register the container's own IP and exposed ports.
    pub internal: bool,
    /// `--explicit`: only containers that set `SERVICE_NAME`.
    pub explicit: bool,
    /// `--network`: whose address `--internal` registers for a container that sets no
    /// `SERVICE_NETWORK` (if it is on that network).
    pub network: Option<String>,
    /// `--use-ip-from-label`: a container label whose value, when set, is the address.
    pub ip_label: Option<String>,
}

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
                Err(message) => {
                    problems.push(Problem {
                        container: c.name.clone(),
                        message,
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

/// The `SERVICE_*` metadata of a container: environment first, labels override.
struct Meta<'a> {
    vars: BTreeMap<&'a str, &'a str>,
}

impl<'a> Meta<'a> {
    fn of(c: &'a Container) -> Meta<'a> {
        let mut vars = BTreeMap::new();
        for e in &c.env {
            if let Some((k, v)) = e.split_once('=') {
                if k.starts_with("SERVICE_") {
                    vars.insert(k, v);
                }
            }
        }
        for (k, v) in &c.labels {
            if k.starts_with("SERVICE_") {
                vars.insert(k.as_str(), v.as_str());
            }
        }
        Meta { vars }
    }

    /// `SERVICE_<port>_<key>` if set, else `SERVICE_<key>`; returns the variable's name too.
    fn get(&self, port: u16, key: &str) -> Option<(String, &'a str)> {
        let specific = format!("SERVICE_{port}_{key}");
        if let Some(v) = self.vars.get(specific.as_str()) {
            return Some((specific, v));
        }
        let general = format!("SERVICE_{key}");
        self.vars.get(general.as_str()).map(|v| (general, *v))
    }

    fn has_specific(&self, port: u16, key: &str) -> bool {
        self.vars
            .contains_key(format!("SERVICE_{port}_{key}").as_str())
    }
}

/// A port to register, with the address and port number the mesh should use.
struct Candidate {
    port: Port,
    address: Option<String>,
    number: u16,
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

fn container_services(c: &Container, s: &Settings) -> Vec<Result<Service, String>> {
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

/// One candidate per exposed port: published bindings normally, exposed ports with
/// `--net=host` or `--internal`. IPv4 and IPv6 bindings of one port collapse to one.
fn candidates(c: &Container, s: &Settings) -> Vec<Candidate> {
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

fn build(
    c: &Container,
    s: &Settings,
    meta: &Meta,
    cand: Candidate,
    several: bool,
) -> Result<Service, String> {
    let p = cand.port.number;
    if let (None, Some(short)) = (meta.get(p, "NAME"), image_id(&c.image)) {
        return Err(format!(
            "created from image ID {short}, not an image name: set SERVICE_NAME to register it"
        ));
    }
    let (name, name_var) = match meta.get(p, "NAME") {
        Some((var, v)) if several && !meta.has_specific(p, "NAME") => (format!("{v}-{p}"), var),
        Some((var, v)) => (v.to_string(), var),
        None if several => (format!("{}-{p}", image_base(&c.image)), "image".to_string()),
        None => (image_base(&c.image).to_string(), "image".to_string()),
    };
    check_segment(&name).map_err(|why| {
        if name_var == "image" {
            format!(
                "service name {} derived from image {} {why}",
                shown(&name),
                shown(&c.image)
            )
        } else {
            format!("{name_var}={} {why}", shown(&name))
        }
    })?;
    let id = match meta.get(p, "ID") {
        Some((var, v)) => {
            check_segment(v).map_err(|why| format!("{var}={} {why}", shown(v)))?;
            v.to_string()
        }
        None => {
            let mut id = format!("{}:{}:{}", s.hostname, c.name, p);
            if cand.port.proto != Proto::Tcp {
                id = format!("{id}:{}", cand.port.proto);
            }
            check_segment(&id).map_err(|why| format!("service ID {} {why}", shown(&id)))?;
            id
        }
    };
    let mode = match meta.get(p, "MODE") {
        None => Mode::Tcp,
        Some((var, v)) => match v.trim().to_ascii_lowercase().as_str() {
            "tcp" => Mode::Tcp,
            "http" => Mode::Http,
            _ => {
                return Err(format!(
                    "{var}={} is not http or tcp; service {name} not registered",
                    shown(v)
                ))
            }
        },
    };
    let mut domains = Vec::new();
    if let Some((var, v)) = meta.get(p, "DOMAINS") {
        if mode != Mode::Http {
            return Err(format!(
                "{var}={} applies only to SERVICE_MODE=http; service {name} not registered",
                shown(v)
            ));
        }
        for d in v
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
        {
            if !valid_domain(&d) {
                return Err(format!(
                    "{var}={}: {} is not a valid DNS name; service {name} not registered",
                    shown(v),
                    shown(&d)
                ));
            }
            domains.push(d);
        }
        domains.sort();
        domains.dedup();
        if domains.len() > MAX_DOMAINS {
            return Err(format!(
                "{var} lists {} domains, more than the {MAX_DOMAINS} a service may have; \
                 service {name} not registered",
                domains.len()
            ));
        }
    }
    if mode == Mode::Http && domains.is_empty() {
        return Err(format!(
            "SERVICE_MODE=http needs SERVICE_DOMAINS; service {name} not registered"
        ));
    }
    let external = port_var(meta, p, "EXTERNAL_PORT", &name)?;
    let internal = port_var(meta, p, "INTERNAL_PORT", &name)?;
    let claim = match (external, internal) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "SERVICE_EXTERNAL_PORT and SERVICE_INTERNAL_PORT are both set; choose one; service {name} not registered"
            ))
        }
        (Some((var, e)), None) | (None, Some((var, e))) if mode == Mode::Http => {
            return Err(format!("{var}={e} applies only to SERVICE_MODE=tcp; service {name} not registered"))
        }
        (Some((_, e)), None) => Some(Claim::External(e)),
        (None, Some((_, i))) => Some(Claim::Internal(i)),
        (None, None) => None,
    };
    let address = match label_address(c, s, &name)? {
        Some(a) => a,
        // --internal: the container's own address, whatever --ip says.
        None if s.internal && !c.host_network => own_address(c, s, meta, p, &name)?,
        None => match (cand.address, &s.ip, &s.host_address) {
            (_, Some(ip), _) => ip.clone(),
            (Some(a), None, _) => a,
            (None, None, Some(h)) => h.clone(),
            (None, None, None) => {
                return Err(format!(
                    "cannot resolve host name {:?} to an address; pass --ip; service {name} \
                     not registered",
                    s.hostname
                ))
            }
        },
    };
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
) -> Result<String, String> {
    if let Some((var, net)) = meta.get(p, "NETWORK") {
        return c.networks.get(net).cloned().ok_or_else(|| {
            format!(
                "{var}={}: the container has no address on that network (it has on: {}); \
                 service {name} not registered",
                shown(net),
                network_names(c)
            )
        });
    }
    match default_network(c, s) {
        Some((_, ip)) => Ok(ip.clone()),
        None => Err(format!(
            "has no IP address on its network; service {name} not registered (--internal)"
        )),
    }
}

/// The network whose address `--internal` registers when the container names none:
/// `--network`'s if the container is on it, else `bridge`, else the first by name.
fn default_network<'a>(c: &'a Container, s: &Settings) -> Option<(&'a String, &'a String)> {
    s.network
        .as_deref()
        .and_then(|n| c.networks.get_key_value(n))
        .or_else(|| c.networks.get_key_value("bridge"))
        .or_else(|| c.networks.iter().next())
}

fn network_names(c: &Container) -> String {
    let names: Vec<&str> = c.networks.keys().map(String::as_str).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// With `--internal`, a line for each container on several networks that nothing chose
/// among (no `SERVICE_NETWORK`, not on `--network`): its networks and the pick. The
/// caller logs each once while it lasts.
pub fn network_notes(containers: &[Container], s: &Settings) -> Vec<Problem> {
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
            notes.push(Problem {
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

fn port_var(meta: &Meta, p: u16, key: &str, name: &str) -> Result<Option<(String, u16)>, String> {
    match meta.get(p, key) {
        None => Ok(None),
        Some((var, v)) => match v.trim().parse::<u16>() {
            Ok(n) if n >= 1 => Ok(Some((var, n))),
            _ => Err(format!(
                "{var}={} is not a port number in 1-65535; service {name} not registered",
                shown(v)
            )),
        },
    }
}

/// A service name or ID becomes one key segment: it must not escape its directory, and
/// it must be short enough that every key of the service fits etcd's request limit.
fn check_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        Err("is empty".into())
    } else if s == "." || s == ".." {
        Err("is not a usable key segment".into())
    } else if s.contains('/') {
        Err("contains '/'".into())
    } else if s.chars().any(char::is_control) {
        Err("contains a control character".into())
    } else if s.len() > MAX_SEGMENT_BYTES {
        Err(format!(
            "is {} bytes long, more than the {MAX_SEGMENT_BYTES} a service name or ID may have",
            s.len()
        ))
    } else {
        Ok(())
    }
}

/// A value as an error line quotes it: whole when short, else its start and its length
/// (a 60 KB label must not become a 60 KB log line).
fn shown(v: &str) -> String {
    const SHOWN: usize = 64;
    if v.len() <= SHOWN {
        return format!("{v:?}");
    }
    let mut end = SHOWN;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &v[..end], v.len())
}

/// A DNS name, lower-case, with an optional leading `*.` wildcard.
fn valid_domain(d: &str) -> bool {
    let rest = d.strip_prefix("*.").unwrap_or(d);
    !rest.is_empty()
        && d.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// The short ID (12 hex digits) when `image` is an image ID (`sha256:<hex>`), which
/// names no service: a container created from an ID, not a name.
fn image_id(image: &str) -> Option<&str> {
    let hex = image.strip_prefix("sha256:")?;
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| &hex[..hex.len().min(12)])
}

/// The image's base name: no registry, path, tag or digest.
/// `registry:5000/team/nginx:1.25` -> `nginx`.
pub fn image_base(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
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

    fn container(name: &str, env: &[&str], ports: &[(u16, &str, &str, u16)]) -> Container {
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

    fn one(c: Container) -> Result<Service, String> {
        let (mut svcs, mut problems) = services(&[c], &settings());
        match (svcs.len(), problems.len()) {
            (1, 0) => Ok(svcs.remove(0)),
            (0, 1) => Err(problems.remove(0).message),
            n => panic!("expected one service or one problem, got {n:?}: {svcs:?} {problems:?}"),
        }
    }

    #[test]
    fn image_base_names() {
        for (image, base) in [
            ("nginx", "nginx"),
            ("nginx:1.25", "nginx"),
            ("registry:5000/team/nginx:1.25", "nginx"),
            ("team/nginx@sha256:abcd", "nginx"),
            ("localhost:5000/a/b/c:latest@sha256:00", "c"),
        ] {
            assert_eq!(image_base(image), base, "{image}");
        }
    }

    #[test]
    fn an_image_id_names_no_service() {
        let id = "sha256:0dee4c1501b61f460285a553e319b6a54ce84dc680648f9003f749f1813a86da";
        let bound = [(80, "tcp", "0.0.0.0", 32768)];
        let mut c = container("x", &[], &bound);
        c.image = id.into();
        let e = one(c).unwrap_err();
        assert!(
            e.contains("image ID 0dee4c1501b6") && e.contains("set SERVICE_NAME"),
            "{e}"
        );
        let mut c = container("x", &["SERVICE_80_NAME=web"], &bound);
        c.image = id.into();
        assert_eq!(one(c).unwrap().name, "web");
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
