//! `registrator ls`: the registry as an operator wants to see it, one line per service
//! (or JSON for scripts), read from etcd alone, never from Docker.
//!
//! The rows, the filters and both outputs are pure functions of the keys under the
//! prefix and the leases' remaining TTLs; [`read`] is the only part that talks to the
//! store: one paged read of the prefix, then one TTL lookup per distinct lease shown.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::store::{Kv, Store, StoreError};
use crate::{keys, plan};

/// What is left of a service's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The keys carry no lease (`--ttl 0`, or `--once` without `--ttl`).
    NoLease,
    /// Not looked up (yet).
    Unknown,
    /// Seconds until etcd deletes the keys unless the lease is kept alive.
    Left(i64),
    /// etcd no longer knows the lease: the keys are about to go.
    Gone,
}

/// One service directory, `<prefix>/<name>/<id>/`, as stored. Fields are as found:
/// None when the key is missing (a half-written or foreign directory shows as such).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub id: String,
    pub address: Option<String>,
    pub port: Option<String>,
    pub mode: Option<String>,
    /// Sorted (etcd returns keys in order).
    pub domains: Vec<String>,
    pub external_port: Option<String>,
    pub internal_port: Option<String>,
    /// The owner marker: the host that registered it.
    pub node: Option<String>,
    /// The lease its keys carry (0: none); the owner marker's, when keys differ.
    pub lease: i64,
    pub ttl: Ttl,
}

impl Row {
    /// `address:port`, `[v6]:port`, with `?` for a missing part.
    pub fn endpoint(&self) -> String {
        let address = self.address.as_deref().unwrap_or("?");
        let port = self.port.as_deref().unwrap_or("?");
        if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        }
    }

    /// The domains of an HTTP service, or the cluster-wide TCP port it claims; `-`.
    pub fn routes(&self) -> String {
        let mut parts = Vec::new();
        if !self.domains.is_empty() {
            parts.push(self.domains.join(","));
        }
        if let Some(p) = &self.external_port {
            parts.push(format!("external:{p}"));
        }
        if let Some(p) = &self.internal_port {
            parts.push(format!("internal:{p}"));
        }
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }

    fn ttl_text(&self) -> String {
        match self.ttl {
            Ttl::NoLease => "-".into(),
            Ttl::Unknown => "?".into(),
            Ttl::Left(s) => format!("{s}s"),
            Ttl::Gone => "expired".into(),
        }
    }
}

/// The services under the prefix, sorted by name then ID, and how many keys under it
/// are not part of a service directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub rows: Vec<Row>,
    /// Services under the prefix before filtering.
    pub total: usize,
    /// Keys under the prefix that do not have the `<name>/<id>/<field>` shape.
    pub stray: usize,
}

/// `--node` and `--name`: exact values, or patterns where `*` matches any run of
/// characters (`web-*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub node: Option<String>,
    pub name: Option<String>,
}

impl Filter {
    pub fn matches(&self, row: &Row) -> bool {
        let ok = |pattern: &Option<String>, value: Option<&str>| match pattern {
            None => true,
            Some(p) => value.is_some_and(|v| glob(p, v)),
        };
        ok(&self.node, row.node.as_deref()) && ok(&self.name, Some(&row.name))
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = &self.node {
            parts.push(format!("--node {n}"));
        }
        if let Some(n) = &self.name {
            parts.push(format!("--name {n}"));
        }
        parts.join(" ")
    }
}

/// `*` matches any run of characters (none included); everything else itself.
fn glob(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    // Checked before slicing: the cuts then fall on character boundaries.
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

/// The service rows of the keys under `prefix` (`/services`, no trailing `/`).
pub fn rows(prefix: &str, kvs: Vec<Kv>) -> Listing {
    let keys = kvs.len();
    let actual = plan::group(
        prefix,
        kvs.into_iter().map(|kv| (kv.key, kv.value, kv.lease)),
    );
    // Every key of the right shape became one field of one directory.
    let stray = keys - actual.values().map(|s| s.fields.len()).sum::<usize>();
    let mut rows: Vec<Row> = actual
        .into_iter()
        .filter_map(|(dir, stored)| {
            let (name, id) = dir.split_once('/')?;
            let field = |f: &str| stored.fields.get(f).cloned();
            let lease = stored
                .leases
                .get(keys::OWNER_FIELD)
                .copied()
                .filter(|&l| l != 0)
                .or_else(|| stored.leases.values().copied().find(|&l| l != 0))
                .unwrap_or(0);
            Some(Row {
                name: name.to_string(),
                id: id.to_string(),
                address: field("address"),
                port: field("port"),
                mode: field("mode"),
                domains: stored
                    .fields
                    .keys()
                    .filter_map(|k| k.strip_prefix("domains/"))
                    .map(str::to_string)
                    .collect(),
                external_port: field("external_port"),
                internal_port: field("internal_port"),
                node: field(keys::OWNER_FIELD),
                lease,
                ttl: if lease == 0 {
                    Ttl::NoLease
                } else {
                    Ttl::Unknown
                },
            })
        })
        .collect();
    // By name, then ID: the directory string would sort `a-b/..` before `a/..`.
    rows.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    Listing {
        total: rows.len(),
        rows,
        stray,
    }
}

/// Keeps the rows the filter matches (`total` still counts them all).
pub fn filter(listing: &mut Listing, filter: &Filter) {
    listing.rows.retain(|r| filter.matches(r));
}

/// Fills in the TTLs, looking each distinct lease up once. `lookup` answers the seconds
/// left, or None when etcd no longer knows the lease.
pub fn fill_ttls<E>(
    rows: &mut [Row],
    mut lookup: impl FnMut(i64) -> Result<Option<i64>, E>,
) -> Result<(), E> {
    let mut known: BTreeMap<i64, Ttl> = BTreeMap::new();
    for row in rows.iter_mut().filter(|r| r.lease != 0) {
        let ttl = match known.get(&row.lease) {
            Some(t) => *t,
            None => {
                let t = match lookup(row.lease)? {
                    Some(s) if s >= 0 => Ttl::Left(s),
                    _ => Ttl::Gone,
                };
                known.insert(row.lease, t);
                t
            }
        };
        row.ttl = ttl;
    }
    Ok(())
}

/// Reads the listing: every key under `<prefix>/` (paged by the store), the filter,
/// then the TTL of each lease shown, through `ttl` (a read-only lookup: `ls` must not
/// keep anyone's lease alive).
pub fn read<S: Store>(
    store: &mut S,
    prefix: &str,
    which: &Filter,
    mut ttl: impl FnMut(&mut S, i64) -> Result<Option<i64>, StoreError>,
) -> Result<Listing, StoreError> {
    let (kvs, _) = store.range_prefix(&keys::services(prefix))?;
    let mut listing = rows(prefix, kvs);
    filter(&mut listing, which);
    fill_ttls(&mut listing.rows, |lease| ttl(store, lease))?;
    Ok(listing)
}

/// The table: a header and one aligned line per service; or, with no row, one line
/// that says why.
pub fn text(listing: &Listing, prefix: &str, which: &Filter) -> String {
    if listing.rows.is_empty() {
        return if listing.total == 0 {
            format!("no services under {prefix}/\n")
        } else {
            format!(
                "none of the {} services under {prefix}/ match {}\n",
                listing.total,
                which.describe()
            )
        };
    }
    let header = [
        "NAME",
        "ID",
        "ADDRESS",
        "MODE",
        "DOMAINS/PORTS",
        "NODE",
        "TTL",
    ];
    let lines: Vec<[String; 7]> = listing
        .rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.id.clone(),
                r.endpoint(),
                r.mode.clone().unwrap_or_else(|| "?".into()),
                r.routes(),
                r.node.clone().unwrap_or_else(|| "?".into()),
                r.ttl_text(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[&str]| {
        let mut line = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < cells.len() {
                let pad = w - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(&header);
    for line in &lines {
        push(&line.each_ref().map(String::as_str));
    }
    out
}

/// A number when the stored text is one, else the text as found.
fn port_value(v: &Option<String>) -> Value {
    match v {
        None => Value::Null,
        Some(s) => s.parse::<u16>().map_or_else(|_| json!(s), |p| json!(p)),
    }
}

/// `--json`: an array of objects, one per service, in the table's order; `[]` when
/// empty. `ttl` is the seconds left (null: no lease; -1: the lease is gone).
pub fn json(listing: &Listing) -> String {
    let rows: Vec<Value> = listing
        .rows
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "id": r.id,
                "address": r.address,
                "port": port_value(&r.port),
                "mode": r.mode,
                "domains": r.domains,
                "external_port": port_value(&r.external_port),
                "internal_port": port_value(&r.internal_port),
                "node": r.node,
                "lease": (r.lease != 0).then(|| format!("{:x}", r.lease)),
                "ttl": match r.ttl {
                    Ttl::Left(s) => json!(s),
                    Ttl::Gone => json!(-1),
                    Ttl::NoLease | Ttl::Unknown => Value::Null,
                },
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str, lease: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    /// The three README examples' shapes, two hosts, one stray key.
    fn keys() -> Vec<Kv> {
        let mut out = Vec::new();
        let mut svc = |dir: &str, fields: &[(&str, &str)], lease: i64| {
            for (f, v) in fields {
                out.push(kv(&format!("/s/{dir}/{f}"), v, lease));
            }
        };
        svc(
            "web/a:web:80",
            &[
                ("address", "10.0.0.5"),
                ("domains/example.com", "example.com"),
                ("domains/www.example.com", "www.example.com"),
                ("mode", "http"),
                ("node", "a"),
                ("port", "32768"),
            ],
            0x10,
        );
        svc(
            "db/a:db:5432",
            &[
                ("address", "10.0.0.5"),
                ("external_port", "5432"),
                ("mode", "tcp"),
                ("node", "a"),
                ("port", "32769"),
            ],
            0x10,
        );
        svc(
            "cache/b:cache:6379",
            &[
                ("address", "fd00::2"),
                ("internal_port", "6379"),
                ("mode", "tcp"),
                ("node", "b"),
                ("port", "6379"),
            ],
            0,
        );
        svc(
            "web-admin/b:adm:80",
            &[("address", "10.0.0.6"), ("node", "b")],
            0x20,
        );
        out.push(kv("/s/stray", "x", 0));
        out
    }

    #[test]
    fn rows_from_keys() {
        let l = rows("/s", keys());
        assert_eq!(l.total, 4);
        assert_eq!(l.stray, 1);
        let names: Vec<&str> = l.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["cache", "db", "web", "web-admin"], "by name");
        let web = &l.rows[2];
        assert_eq!(web.endpoint(), "10.0.0.5:32768");
        assert_eq!(web.routes(), "example.com,www.example.com");
        assert_eq!((web.lease, web.ttl), (0x10, Ttl::Unknown));
        assert_eq!(l.rows[1].routes(), "external:5432");
        assert_eq!(l.rows[0].endpoint(), "[fd00::2]:6379");
        assert_eq!(l.rows[0].routes(), "internal:6379");
        assert_eq!(l.rows[0].ttl, Ttl::NoLease);
        assert_eq!(l.rows[3].endpoint(), "10.0.0.6:?");
        assert_eq!(l.rows[3].mode, None);
    }

    #[test]
    fn filters() {
        let all = rows("/s", keys());
        // (filter, names kept)
        let cases: [(Filter, &[&str]); 6] = [
            (Filter::default(), &["cache", "db", "web", "web-admin"]),
            (
                Filter {
                    node: Some("a".into()),
                    name: None,
                },
                &["db", "web"],
            ),
            (
                Filter {
                    node: None,
                    name: Some("web".into()),
                },
                &["web"],
            ),
            (
                Filter {
                    node: None,
                    name: Some("web*".into()),
                },
                &["web", "web-admin"],
            ),
            (
                Filter {
                    node: Some("b".into()),
                    name: Some("*a*".into()),
                },
                &["cache", "web-admin"],
            ),
            (
                Filter {
                    node: Some("c".into()),
                    name: None,
                },
                &[],
            ),
        ];
        for (f, want) in cases {
            let mut l = all.clone();
            filter(&mut l, &f);
            let got: Vec<&str> = l.rows.iter().map(|r| r.name.as_str()).collect();
            assert_eq!(got, want, "{f:?}");
            assert_eq!(l.total, 4);
        }
    }

    #[test]
    fn globs() {
        for (p, v, want) in [
            ("web", "web", true),
            ("web", "web2", false),
            ("*", "", true),
            ("web*", "web", true),
            ("*-1", "a-1", true),
            ("*-1", "a-12", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("a*x", "aé", false),
            ("*é", "café", true),
        ] {
            assert_eq!(glob(p, v), want, "{p} ~ {v}");
        }
    }

    #[test]
    fn ttls_looked_up_once_per_lease() {
        let mut l = rows("/s", keys());
        let mut asked = Vec::new();
        fill_ttls::<()>(&mut l.rows, |id| {
            asked.push(id);
            Ok(if id == 0x10 { Some(27) } else { None })
        })
        .unwrap();
        assert_eq!(
            asked,
            [0x10, 0x20],
            "one lookup per distinct lease, in row order"
        );
        let ttls: Vec<Ttl> = l.rows.iter().map(|r| r.ttl).collect();
        assert_eq!(
            ttls,
            [Ttl::NoLease, Ttl::Left(27), Ttl::Left(27), Ttl::Gone]
        );
        assert_eq!(
            fill_ttls(&mut l.rows, |_| Err("etcd down")),
            Err("etcd down")
        );
    }

    #[test]
    fn table() {
        let mut l = rows("/s", keys());
        fill_ttls::<()>(&mut l.rows, |id| Ok((id == 0x10).then_some(27))).unwrap();
        let want = "\
NAME       ID            ADDRESS         MODE  DOMAINS/PORTS                NODE  TTL
cache      b:cache:6379  [fd00::2]:6379  tcp   internal:6379                b     -
db         a:db:5432     10.0.0.5:32769  tcp   external:5432                a     27s
web        a:web:80      10.0.0.5:32768  http  example.com,www.example.com  a     27s
web-admin  b:adm:80      10.0.0.6:?      ?     -                            b     expired
";
        assert_eq!(text(&l, "/s", &Filter::default()), want);
    }

    #[test]
    fn empty_says_why() {
        let empty = Listing::default();
        assert_eq!(
            text(&empty, "/s", &Filter::default()),
            "no services under /s/\n"
        );
        assert_eq!(json(&empty), "[]\n");
        let mut l = rows("/s", keys());
        let f = Filter {
            node: Some("z".into()),
            name: Some("w*".into()),
        };
        filter(&mut l, &f);
        assert_eq!(
            text(&l, "/s", &f),
            "none of the 4 services under /s/ match --node z --name w*\n"
        );
    }

    #[test]
    fn json_for_scripts() {
        let mut l = rows("/s", keys());
        fill_ttls::<()>(&mut l.rows, |id| Ok((id == 0x10).then_some(27))).unwrap();
        let v: Value = serde_json::from_str(&json(&l)).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(
            a[2],
            json!({"name": "web", "id": "a:web:80", "address": "10.0.0.5", "port": 32768,
                "mode": "http", "domains": ["example.com", "www.example.com"],
                "external_port": null, "internal_port": null, "node": "a",
                "lease": "10", "ttl": 27})
        );
        assert_eq!(a[0]["ttl"], Value::Null);
        assert_eq!(a[0]["internal_port"], json!(6379));
        assert_eq!(a[3]["ttl"], json!(-1));
        assert_eq!(a[3]["port"], Value::Null);
    }

    #[test]
    fn odd_values_kept_as_text() {
        let l = rows("/s", vec![kv("/s/x/y/port", "80a", 0)]);
        assert_eq!(port_value(&l.rows[0].port), json!("80a"));
    }
}
