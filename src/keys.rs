//! The key layout, in one place: every key the registrator writes or reads is built or
//! parsed here (the reconciler, `ls`, the HAProxy example and the tests use it).
//!
//! Under the prefix `<prefix>` (what consumers read), one directory per service:
//!
//! - `<prefix>/<name>/<id>/<field>`: `address`, `port`, `mode`, `domains/<d>`,
//!   `external_port`, `internal_port`, and [`OWNER_FIELD`] naming the host.
//!
//! Beside it, under the index prefix `<idx>` (`--index-prefix`; by default
//! [`default_index_prefix`]: never under `<prefix>/`, and not even starting with the
//! prefix, so its readers never meet these keys):
//!
//! - `<idx>/hosts/<host>/services/<name>/<id>` = container: the host's index of its
//!   services, each written and deleted with its service, on its lease;
//! - `<idx>/hosts/<host>/claims/<field>/<port>` = service name: the host's own record of
//!   its port claims;
//! - `<idx>/claims/<field>/<port>/<host>` = service name: the claim as other hosts read
//!   it, one key per (port, host);
//! - `<idx>/instance/<host>` = the process that holds the host's identity.

use crate::service::Claim;

/// The field of a service directory that names the host owning it.
pub const OWNER_FIELD: &str = "node";

/// The index prefix beside `prefix`: `.registrator/<last>` under the same parent
/// (`/services` -> `/.registrator/services`, `/a/services` -> `/a/.registrator/services`),
/// so one permission on the parent covers both, yet a read of the prefix without its
/// trailing `/` never meets an index key.
pub fn default_index_prefix(prefix: &str) -> String {
    let (parent, last) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    format!("{parent}/.registrator/{last}")
}

/// Every service directory: `<prefix>/`.
pub fn services(prefix: &str) -> String {
    format!("{prefix}/")
}

/// The directory `<name>/<id>` of a service.
pub fn dir_of(name: &str, id: &str) -> String {
    format!("{name}/{id}")
}

/// Splits `<prefix>/<name>/<id>/<field>` into the directory `<name>/<id>` and the field;
/// None for keys of any other shape.
pub fn split_key(prefix: &str, key: &str) -> Option<(String, String)> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    let mut parts = rest.splitn(3, '/');
    let (name, id, field) = (parts.next()?, parts.next()?, parts.next()?);
    if name.is_empty() || id.is_empty() || field.is_empty() {
        return None;
    }
    Some((dir_of(name, id), field.to_string()))
}

/// `external_port` / `internal_port` and the port, as a claim.
pub fn claim_of(field: &str, port: &str) -> Option<Claim> {
    let port: u16 = port.trim().parse().ok().filter(|&p| p > 0)?;
    match field {
        "external_port" => Some(Claim::External(port)),
        "internal_port" => Some(Claim::Internal(port)),
        _ => None,
    }
}

/// One of a host's index keys, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey {
    /// The index entry of a service directory.
    Service(String),
    /// The host's own record of a claim.
    Claim(Claim),
}

/// The keys of one host, under one prefix and one index prefix.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    pub prefix: &'a str,
    pub index: &'a str,
    pub host: &'a str,
}

impl Layout<'_> {
    /// A service directory's keys: `<prefix>/<dir>/`.
    pub fn dir(&self, dir: &str) -> String {
        format!("{}/{dir}/", self.prefix)
    }

    /// One key of a service directory: `<prefix>/<dir>/<field>`.
    pub fn field(&self, dir: &str, field: &str) -> String {
        format!("{}/{dir}/{field}", self.prefix)
    }

    /// Everything the index holds for this host: `<idx>/hosts/<host>/`.
    pub fn host(&self) -> String {
        format!("{}/hosts/{}/", self.index, self.host)
    }

    /// The index entry of a service directory of this host.
    pub fn service(&self, dir: &str) -> String {
        format!("{}services/{dir}", self.host())
    }

    /// This host's own records of its claims.
    pub fn own_claims(&self) -> String {
        format!("{}claims/", self.host())
    }

    /// This host's own record of a claim.
    pub fn own_claim(&self, claim: Claim) -> String {
        format!("{}claims/{}/{}", self.host(), claim.field(), claim.port())
    }

    /// Every claimant of a port: `<idx>/claims/<field>/<port>/`.
    pub fn claimants(&self, claim: Claim) -> String {
        format!("{}/claims/{}/{}/", self.index, claim.field(), claim.port())
    }

    /// This host's claim key as other hosts read it.
    pub fn claim(&self, claim: Claim) -> String {
        format!("{}{}", self.claimants(claim), self.host)
    }

    /// The key naming the process that holds this host's identity.
    pub fn instance(&self) -> String {
        format!("{}/instance/{}", self.index, self.host)
    }

    /// Every host's instance key.
    pub fn instances(&self) -> String {
        format!("{}/instance/", self.index)
    }

    /// Whether `key` is one of this host's index keys (not a service key).
    pub fn is_host_key(&self, key: &str) -> bool {
        key.starts_with(&self.host())
    }

    /// Parses one of this host's index keys; None for any other key.
    pub fn host_key(&self, key: &str) -> Option<HostKey> {
        let rest = key.strip_prefix(&self.host())?;
        if let Some(dir) = rest.strip_prefix("services/") {
            return split_key("", &format!("/{dir}/x")).map(|_| HostKey::Service(dir.into()));
        }
        let (field, port) = rest.strip_prefix("claims/")?.split_once('/')?;
        claim_of(field, port).map(HostKey::Claim)
    }

    /// The host a key under a claim's prefix names; None for keys of another shape.
    pub fn claimant<'k>(&self, claim: Claim, key: &'k str) -> Option<&'k str> {
        let host = key.strip_prefix(&self.claimants(claim))?;
        (!host.is_empty() && !host.contains('/')).then_some(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Layout = Layout {
        prefix: "/s",
        index: "/s.index",
        host: "h",
    };

    #[test]
    fn the_documented_layout() {
        let ext = Claim::External(8080);
        assert_eq!(default_index_prefix("/services"), "/.registrator/services");
        assert_eq!(default_index_prefix("/a/b/s"), "/a/b/.registrator/s");
        assert_eq!(L.dir("web/h:c:80"), "/s/web/h:c:80/");
        assert_eq!(L.field("web/h:c:80", OWNER_FIELD), "/s/web/h:c:80/node");
        assert_eq!(L.host(), "/s.index/hosts/h/");
        assert_eq!(L.instance(), "/s.index/instance/h");
        assert_eq!(
            L.service("web/h:c:80"),
            "/s.index/hosts/h/services/web/h:c:80"
        );
        assert_eq!(
            L.own_claim(ext),
            "/s.index/hosts/h/claims/external_port/8080"
        );
        assert_eq!(L.claimants(ext), "/s.index/claims/external_port/8080/");
        assert_eq!(L.claim(ext), "/s.index/claims/external_port/8080/h");
        let p = "/services";
        let index = default_index_prefix(p);
        let l = Layout {
            prefix: p,
            index: &index,
            host: "h",
        };
        for key in [l.host(), l.instance(), l.claimants(ext)] {
            assert!(!key.starts_with(p), "{key} starts with the prefix");
        }
    }

    #[test]
    fn keys_parse_back() {
        let ext = Claim::External(8080);
        assert_eq!(
            split_key("/s", "/s/web/h:c:80/domains/a.b"),
            Some(("web/h:c:80".into(), "domains/a.b".into()))
        );
        for bad in ["/s/web", "/s/web/x", "/s//x/port", "/sx/a/b/c", "/s/a/b/"] {
            assert_eq!(split_key("/s", bad), None, "{bad}");
        }
        let service = L.service("web/h:c:80");
        assert_eq!(
            L.host_key(&service),
            Some(HostKey::Service("web/h:c:80".into()))
        );
        assert_eq!(L.host_key(&L.own_claim(ext)), Some(HostKey::Claim(ext)));
        assert_eq!(L.host_key("/s.index/hosts/h/services/bad"), None);
        assert_eq!(
            L.host_key("/s.index/hosts/h/claims/internal_port/zero"),
            None
        );
        assert_eq!(L.host_key("/s.index/hosts/h2/services/web/h2:c:80"), None);
        assert_eq!(L.claimant(ext, &L.claim(ext)), Some("h"));
        assert_eq!(
            L.claimant(ext, "/s.index/claims/external_port/8080/b/x/y"),
            None
        );
        assert_eq!(
            L.claimant(ext, "/s.index/claims/external_port/80800/b"),
            None
        );
    }
}
