//! Reading a container's `SERVICE_*` variables and labels: per port or for all its
//! ports, and what they ask for (the mode, the domains, a claimed port), checked.

use std::collections::BTreeMap;

use super::model::{Claim, Container, Mode, MAX_DOMAINS};

/// The `SERVICE_*` metadata of a container: environment first, labels override.
pub struct Meta<'a> {
    pub vars: BTreeMap<&'a str, &'a str>,
}

impl<'a> Meta<'a> {
    pub fn of(c: &'a Container) -> Meta<'a> {
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
    pub fn get(&self, port: u16, key: &str) -> Option<(String, &'a str)> {
        let specific = format!("SERVICE_{port}_{key}");
        if let Some(v) = self.vars.get(specific.as_str()) {
            return Some((specific, v));
        }
        let general = format!("SERVICE_{key}");
        self.vars.get(general.as_str()).map(|v| (general, *v))
    }

    /// Whether `SERVICE_<port>_<key>` itself is set (not only `SERVICE_<key>`).
    pub fn has_specific(&self, port: u16, key: &str) -> bool {
        self.vars
            .contains_key(format!("SERVICE_{port}_{key}").as_str())
    }

    /// `SERVICE_MODE` of port `p`: `tcp` (the default) or `http`.
    pub fn mode(&self, p: u16, name: &str) -> Result<Mode, String> {
        match self.get(p, "MODE") {
            None => Ok(Mode::Tcp),
            Some((var, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "tcp" => Ok(Mode::Tcp),
                "http" => Ok(Mode::Http),
                _ => Err(format!(
                    "{var}={} is not http or tcp; service {name} not registered",
                    shown(v)
                )),
            },
        }
    }

    /// `SERVICE_DOMAINS` of port `p`, sorted and de-duplicated: DNS names, needed by
    /// `http` and refused by `tcp`.
    pub fn domains(&self, p: u16, mode: Mode, name: &str) -> Result<Vec<String>, String> {
        let mut domains = Vec::new();
        if let Some((var, v)) = self.get(p, "DOMAINS") {
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
        Ok(domains)
    }

    /// `SERVICE_EXTERNAL_PORT` or `SERVICE_INTERNAL_PORT` of port `p` (one at most, and
    /// only for `tcp`): the cluster-wide port the service claims.
    pub fn claim(&self, p: u16, mode: Mode, name: &str) -> Result<Option<Claim>, String> {
        let external = self.port_var(p, "EXTERNAL_PORT", name)?;
        let internal = self.port_var(p, "INTERNAL_PORT", name)?;
        match (external, internal) {
            (Some(_), Some(_)) => Err(format!(
                "SERVICE_EXTERNAL_PORT and SERVICE_INTERNAL_PORT are both set; choose one; \
                 service {name} not registered"
            )),
            (Some((var, e)), None) | (None, Some((var, e))) if mode == Mode::Http => Err(format!(
                "{var}={e} applies only to SERVICE_MODE=tcp; service {name} not registered"
            )),
            (Some((_, e)), None) => Ok(Some(Claim::External(e))),
            (None, Some((_, i))) => Ok(Some(Claim::Internal(i))),
            (None, None) => Ok(None),
        }
    }

    /// A port number variable (1-65535), with the variable's name.
    fn port_var(&self, p: u16, key: &str, name: &str) -> Result<Option<(String, u16)>, String> {
        match self.get(p, key) {
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
}

/// A value as an error line quotes it: whole when short, else its start and its length
/// (a 60 KB label must not become a 60 KB log line).
pub fn shown(v: &str) -> String {
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
