//! The ownership index: where a host records its services and port claims beside the
//! key prefix, so that restarts, passes, claims and deregistration read O(own services)
//! instead of the whole prefix. The keys are built and parsed here, nowhere else.
//!
//! Layout, under the index prefix `<idx>` (`--index-prefix`; default `/.registrator/services`
//! beside `/services`; never under `<prefix>/`, so consumers of the prefix see nothing
//! new):
//!
//! - `<idx>/hosts/<host>/services/<name>/<id>` = container name: one per service of the
//!   host, written and deleted in the same transaction as the service, on its lease.
//! - `<idx>/hosts/<host>/claims/<field>/<port>` = service name: the host's own port
//!   claims (so a restart finds a claim whose holder is gone), on the host's lease.
//! - `<idx>/claims/<field>/<port>/<host>` = service name: the claim as other hosts see
//!   it, one key per (port, host), on the host's lease: a claim check reads one port.
//! - `<idx>/instance/<host>` = the process holding the host's identity, on its lease
//!   (see `identity.rs`).
//!
//! A host reads its own keys and nothing else: there is no layout before this one.

use std::collections::BTreeMap;

use super::Options;
use crate::plan::{Desired, Entry, Index};
use crate::service::Claim;
use crate::store::Kv;

/// What the index holds for this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostIndex {
    /// Service directory -> container name.
    pub services: Index,
    /// Claim -> service name.
    pub claims: BTreeMap<Claim, Entry>,
}

/// One key under a claim's prefix (`<idx>/claims/<field>/<port>/<host>`): the host's
/// service of this name holds the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    pub host: String,
    pub name: String,
}

/// The keys of one host, under one prefix and one index prefix.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys<'a> {
    prefix: &'a str,
    index: &'a str,
    host: &'a str,
}

impl Options {
    /// This host's keys.
    pub(super) fn keys(&self) -> Keys<'_> {
        Keys {
            prefix: &self.prefix,
            index: &self.index_prefix,
            host: &self.hostname,
        }
    }
}

/// `external_port` / `internal_port` and the port, as a claim.
fn claim_of(field: &str, port: &str) -> Option<Claim> {
    let port: u16 = port.trim().parse().ok().filter(|&p| p > 0)?;
    match field {
        "external_port" => Some(Claim::External(port)),
        "internal_port" => Some(Claim::Internal(port)),
        _ => None,
    }
}

impl Keys<'_> {
    /// A service directory's keys: `<prefix>/<dir>/`.
    pub fn dir(&self, dir: &str) -> String {
        format!("{}/{dir}/", self.prefix)
    }

    /// Everything the index holds for this host: `<idx>/hosts/<host>/`.
    pub fn host(&self) -> String {
        format!("{}/hosts/{}/", self.index, self.host)
    }

    /// The index key of a service directory of this host.
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

    /// Reads this host's index keys (others are ignored).
    pub fn host_index(&self, kvs: &[Kv]) -> HostIndex {
        let host = self.host();
        let mut index = HostIndex::default();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(&host) else {
                continue;
            };
            let entry = || Entry {
                value: kv.value.clone(),
                lease: kv.lease,
            };
            if let Some(dir) = rest.strip_prefix("services/") {
                if crate::plan::split_key("", &format!("/{dir}/x")).is_some() {
                    index.services.insert(dir.to_string(), entry());
                }
            } else if let Some((field, port)) =
                rest.strip_prefix("claims/").and_then(|c| c.split_once('/'))
            {
                if let Some(claim) = claim_of(field, port) {
                    index.claims.insert(claim, entry());
                }
            }
        }
        index
    }

    /// This host's index as the keys on its lease show it. An entry there was written with its service, so it
    /// is taken to name the container that service wants; claims have their keys only
    /// (their values need a read of [`Keys::own_claims`]).
    pub fn index_on_lease(&self, keys: &[String], lease: i64, desired: &Desired) -> HostIndex {
        let host = self.host();
        let mut index = HostIndex::default();
        for key in keys {
            let Some(rest) = key.strip_prefix(&host) else {
                continue;
            };
            if let Some(dir) = rest.strip_prefix("services/") {
                let value = desired
                    .get(dir)
                    .map(|w| w.container.clone())
                    .unwrap_or_default();
                index
                    .services
                    .insert(dir.to_string(), Entry { value, lease });
            } else if let Some((field, port)) =
                rest.strip_prefix("claims/").and_then(|c| c.split_once('/'))
            {
                // Held only while the claim key other hosts read is there too.
                let claim = claim_of(field, port).filter(|c| keys.contains(&self.claim(*c)));
                if let Some(claim) = claim {
                    let value = String::new();
                    index.claims.insert(claim, Entry { value, lease });
                }
            }
        }
        index
    }

    /// Reads the claim keys under a claim's prefix (other keys are ignored).
    pub fn claimants_of(&self, claim: Claim, kvs: &[Kv]) -> Vec<Claimant> {
        let prefix = self.claimants(claim);
        kvs.iter()
            .filter_map(|kv| {
                let host = kv.key.strip_prefix(&prefix)?;
                (!host.is_empty() && !host.contains('/')).then(|| Claimant {
                    host: host.to_string(),
                    name: kv.value.clone(),
                })
            })
            .collect()
    }

    /// The claim a stored service directory's fields record, if any.
    pub fn claim_in(fields: &crate::plan::Fields) -> Option<Claim> {
        ["external_port", "internal_port"]
            .iter()
            .find_map(|f| claim_of(f, fields.get(*f)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        crate::reconcile::fakes::options("h", 30)
    }

    fn kv(key: &str, value: &str, lease: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    #[test]
    fn the_documented_layout() {
        let o = opts();
        let k = o.keys();
        let ext = Claim::External(8080);
        assert_eq!(k.host(), "/s.index/hosts/h/");
        assert_eq!(k.instance(), "/s.index/instance/h");
        assert_eq!(
            k.service("web/h:c:80"),
            "/s.index/hosts/h/services/web/h:c:80"
        );
        assert_eq!(
            k.own_claim(ext),
            "/s.index/hosts/h/claims/external_port/8080"
        );
        assert_eq!(k.claimants(ext), "/s.index/claims/external_port/8080/");
        assert_eq!(k.claim(ext), "/s.index/claims/external_port/8080/h");
        assert!(
            !k.host().starts_with("/s/") && !k.instance().starts_with("/s/"),
            "never under the prefix"
        );
    }

    #[test]
    fn host_index_reads_services_and_claims_and_nothing_else() {
        let o = opts();
        let index = o.keys().host_index(&[
            kv("/s.index/hosts/h/services/web/h:c:80", "c", 7),
            kv("/s.index/hosts/h/services/bad", "c", 7),
            kv("/s.index/hosts/h/claims/internal_port/9000", "db", 7),
            kv("/s.index/hosts/h/claims/internal_port/zero", "db", 7),
            kv("/s.index/hosts/h2/services/web/h2:c:80", "c", 9),
            kv("/s/web/h:c:80/node", "h", 7),
        ]);
        let services: Vec<&str> = index.services.keys().map(String::as_str).collect();
        assert_eq!(services, ["web/h:c:80"]);
        assert_eq!(index.services["web/h:c:80"].lease, 7);
        assert_eq!(
            index.claims.keys().copied().collect::<Vec<_>>(),
            [Claim::Internal(9000)]
        );
    }

    #[test]
    fn claimants_are_host_keys() {
        let o = opts();
        let ext = Claim::External(80);
        let got = o.keys().claimants_of(
            ext,
            &[
                kv("/s.index/claims/external_port/80/a", "web", 1),
                kv("/s.index/claims/external_port/80/b/db/b:c:80", "legacy", 0),
                kv("/s.index/claims/external_port/800/c", "x", 1),
            ],
        );
        assert_eq!(
            got,
            [Claimant {
                host: "a".into(),
                name: "web".into()
            }]
        );
    }
}
