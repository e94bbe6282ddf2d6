//! The ownership index, as the reconciler reads it: what this host's index keys say
//! (its services and claims, read from the keys or from its lease's key list) and who
//! claims a port. The keys themselves are built and parsed in `crate::keys` (the layout
//! is documented there), so that restarts, passes, claims and deregistration read
//! O(own services), never the whole prefix. A host reads its own keys and nothing else:
//! there is no layout before this one.

use std::collections::BTreeMap;

use super::Options;
use crate::keys::{self, HostKey, Layout};
use crate::plan::{Desired, Entry, Fields, Index};
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

impl Options {
    /// This host's keys.
    pub(super) fn keys(&self) -> Layout<'_> {
        Layout {
            prefix: &self.prefix,
            index: &self.index_prefix,
            host: &self.hostname,
        }
    }
}

/// Reads this host's index keys (others are ignored).
pub(super) fn host_index(keys: Layout, kvs: &[Kv]) -> HostIndex {
    let mut index = HostIndex::default();
    for kv in kvs {
        let entry = Entry {
            value: kv.value.clone(),
            lease: kv.lease,
        };
        match keys.host_key(&kv.key) {
            Some(HostKey::Service(dir)) => {
                index.services.insert(dir, entry);
            }
            Some(HostKey::Claim(claim)) => {
                index.claims.insert(claim, entry);
            }
            None => {}
        }
    }
    index
}

/// This host's index as the keys on its lease show it. An entry there was written with
/// its service, so it is taken to name the container that service wants; claims have
/// their keys only (their values need a read of [`Layout::own_claims`]), and count only
/// while the claim key other hosts read is on the lease too.
pub(super) fn index_on_lease(
    keys: Layout,
    on_lease: &[String],
    lease: i64,
    desired: &Desired,
) -> HostIndex {
    let mut index = HostIndex::default();
    for key in on_lease {
        match keys.host_key(key) {
            Some(HostKey::Service(dir)) => {
                let value = desired
                    .get(&dir)
                    .map(|w| w.container.clone())
                    .unwrap_or_default();
                index.services.insert(dir, Entry { value, lease });
            }
            Some(HostKey::Claim(claim)) if on_lease.contains(&keys.claim(claim)) => {
                let value = String::new();
                index.claims.insert(claim, Entry { value, lease });
            }
            _ => {}
        }
    }
    index
}

/// Reads the claim keys under a claim's prefix (other keys are ignored).
pub(super) fn claimants_of(keys: Layout, claim: Claim, kvs: &[Kv]) -> Vec<Claimant> {
    kvs.iter()
        .filter_map(|kv| {
            Some(Claimant {
                host: keys.claimant(claim, &kv.key)?.to_string(),
                name: kv.value.clone(),
            })
        })
        .collect()
}

/// The claim a stored service directory's fields record, if any.
pub(super) fn claim_in(fields: &Fields) -> Option<Claim> {
    ["external_port", "internal_port"]
        .iter()
        .find_map(|f| keys::claim_of(f, fields.get(*f)?))
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
    fn host_index_reads_services_and_claims_and_nothing_else() {
        let o = opts();
        let index = host_index(
            o.keys(),
            &[
                kv("/s.index/hosts/h/services/web/h:c:80", "c", 7),
                kv("/s.index/hosts/h/services/bad", "c", 7),
                kv("/s.index/hosts/h/claims/internal_port/9000", "db", 7),
                kv("/s.index/hosts/h/claims/internal_port/zero", "db", 7),
                kv("/s.index/hosts/h2/services/web/h2:c:80", "c", 9),
                kv("/s/web/h:c:80/node", "h", 7),
            ],
        );
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
        let got = claimants_of(
            o.keys(),
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
