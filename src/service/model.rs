//! The service model: the containers the engine reports, the services they become,
//! the problems refused, and the host-level settings of the mapping.

use std::collections::BTreeMap;
use std::fmt;

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

/// Why a service is not registered: its kind, given where the refusal is made (the
/// metrics count by it; no one reads the wording to find it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// A `SERVICE_*` value (or label) that is malformed or does not fit the mode.
    InvalidConfig,
    /// Two containers of this host want the same service directory.
    Duplicate,
    /// Another host owns the service directory.
    OwnedElsewhere,
    /// A cluster-wide TCP port held by another service name.
    PortTaken,
    /// No address to register (unresolvable host name, or no container IP).
    NoAddress,
    /// etcd refused to store the service (too many keys or bytes for one request).
    TooLarge,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::InvalidConfig,
        Refusal::Duplicate,
        Refusal::OwnedElsewhere,
        Refusal::PortTaken,
        Refusal::NoAddress,
        Refusal::TooLarge,
    ];
}

/// A service refused while it was being built: its kind and the one line that says why
/// (a plain message is a configuration error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub kind: Refusal,
    pub message: String,
}

impl From<String> for Refused {
    fn from(message: String) -> Refused {
        Refused {
            kind: Refusal::InvalidConfig,
            message,
        }
    }
}

/// A container or port that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    pub container: String,
    pub message: String,
    pub kind: Refusal,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "container {}: {}", self.container, self.message)
    }
}

/// Something worth one line about a container that is registered all the same (its
/// network picked among several).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Note {
    pub container: String,
    pub message: String,
}

impl fmt::Display for Note {
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
