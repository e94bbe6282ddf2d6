//! etcd v3 JSON gateway client: the store's kv and lease calls, each one request
//! through the connection and one answer read by the wire types.
//!
//! base64 lives only here (in `codec`): callers see keys and values as strings.

use std::time::Duration;

use serde_json::{json, Value};
use ureq::Agent;

use crate::cli::Registry;
use crate::store::{Compare, Kv, LeaseTtl, Request, Store, StoreError};

pub mod codec;
mod codes;
mod conn;
mod error;
mod wire;

use codec::prefix_end;
use codes::Code;
use conn::Conn;
pub use error::EtcdError;

/// A client for one etcd cluster.
pub struct Etcd {
    conn: Conn,
}

impl Etcd {
    /// A client for the registry's endpoints. Reads TLS files now, so a wrong path is
    /// reported at start.
    pub fn new(registry: &Registry, timeout: Duration) -> Result<Etcd, EtcdError> {
        Ok(Etcd {
            conn: Conn::new(registry, timeout)?,
        })
    }

    /// Counts each request and failover in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Etcd {
        self.conn.metrics = Some(metrics);
        self
    }

    /// Permission errors about keys under `prefix` (the ownership index) name it, not
    /// the registry's prefix, as the one a role must cover.
    pub fn with_index_prefix(mut self, prefix: &str) -> Etcd {
        self.conn.index_prefix = Some(format!("{prefix}/"));
        self
    }

    /// A handle whose `shutdown()` interrupts requests blocked in another thread.
    pub fn agent(&self) -> Agent {
        self.conn.agent()
    }

    /// The endpoint in use, for messages.
    pub fn endpoint(&self) -> &str {
        self.conn.endpoint()
    }

    /// The seconds a lease has left, read without its keys and without keeping it alive
    /// (`registrator ls`); Ok(None) when etcd no longer knows it.
    pub fn lease_ttl(&mut self, id: i64) -> Result<Option<i64>, EtcdError> {
        let body = json!({"ID": id.to_string()});
        let read = &wire::lease_ttl;
        self.conn
            .call("lease timetolive", "", "/lease/timetolive", &body, read)
    }
}

impl Etcd {
    /// One `/kv/range` request with a limit, pinned to `revision` unless it is 0.
    pub(crate) fn range_page(
        &mut self,
        start: &str,
        end: &str,
        limit: usize,
        revision: i64,
    ) -> Result<wire::Page, StoreError> {
        let mut body = json!({"key": codec::encode(start), "range_end": codec::encode(end),
            "limit": limit});
        if revision > 0 {
            body["revision"] = json!(revision);
        }
        Ok(self
            .conn
            .call("range", start, "/kv/range", &body, &wire::range)?)
    }
}

impl Store for Etcd {
    /// Every key under `prefix`, read page by page at one revision, and that revision.
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        let end = String::from_utf8_lossy(&prefix_end(prefix)).into_owned();
        let mut out = Vec::new();
        let mut start = prefix.to_string();
        let mut revision = 0i64;
        loop {
            let page = self.range_page(&start, &end, 10000, revision)?;
            revision = page.revision;
            if let Some(last) = page.kvs.last() {
                start = format!("{}\0", last.key);
            }
            let last_page = !page.more || page.kvs.is_empty();
            out.extend(page.kvs);
            if last_page {
                return Ok((out, revision));
            }
        }
    }

    /// Reads several key prefixes in one transaction: one request, O(their keys).
    fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError> {
        let mut out = Vec::new();
        for chunk in prefixes.chunks(codec::MAX_TXN_OPS) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"request_range": range_json(p)}))
                .collect();
            let read = |text: &str| wire::txn_ranges(text, chunk.len());
            let body = json!({"success": success});
            out.extend(
                self.conn
                    .call("range", &chunk[0], "/kv/txn", &body, &read)?,
            );
        }
        Ok(out)
    }

    /// Runs one transaction; Ok(false) when a compare failed (nothing was changed).
    fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, StoreError> {
        let compare: Vec<Value> = compares.iter().map(compare_json).collect();
        let success: Vec<Value> = requests.iter().map(request_json).collect();
        let body = json!({"compare": compare, "success": success});
        let subject = txn_subject(compares, requests);
        Ok(self
            .conn
            .call("txn", &subject, "/kv/txn", &body, &wire::txn)?)
    }

    /// Grants a lease of `ttl` seconds and returns its ID.
    fn grant(&mut self, ttl: u64) -> Result<i64, StoreError> {
        let body = json!({"TTL": ttl.to_string()});
        Ok(self
            .conn
            .call("lease grant", "", "/lease/grant", &body, &wire::grant)?)
    }

    /// Refreshes a lease; Ok(None) when etcd no longer knows it (expired or revoked).
    fn keepalive(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
        let body = json!({"ID": id.to_string()});
        let read = &wire::keepalive;
        Ok(self
            .conn
            .call("lease keepalive", "", "/lease/keepalive", &body, read)?)
    }

    /// Revokes a lease, deleting its keys. A lease that is already gone is fine.
    fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
        let body = json!({"ID": id.to_string()});
        match self
            .conn
            .call("lease revoke", "", "/lease/revoke", &body, &wire::revoke)
        {
            Ok(()) => Ok(()),
            Err(e) if e.refusal().is_some_and(|(code, _)| code == Code::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys attached to a lease; Ok(None) when the lease is gone.
    fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, StoreError> {
        let body = json!({"ID": id.to_string(), "keys": true});
        let read = &wire::lease_keys;
        Ok(self
            .conn
            .call("lease timetolive", "", "/lease/timetolive", &body, read)?)
    }

    /// A lease's remaining and granted TTL (not refreshed); Ok(None) when it is gone.
    fn time_to_live(&mut self, id: i64) -> Result<Option<LeaseTtl>, StoreError> {
        let body = json!({"ID": id.to_string()});
        let read = &wire::time_to_live;
        Ok(self
            .conn
            .call("lease timetolive", "", "/lease/timetolive", &body, read)?)
    }
}

/// `key` and `range_end` of every key under `prefix`.
fn range_json(prefix: &str) -> Value {
    json!({"key": codec::encode(prefix), "range_end": codec::encode(prefix_end(prefix))})
}

/// A txn compare as the gateway reads it.
fn compare_json(c: &Compare) -> Value {
    match c {
        Compare::ValueEquals(k, v) => json!({"key": codec::encode(k), "target": "VALUE",
            "result": "EQUAL", "value": codec::encode(v)}),
        Compare::Missing(k) => json!({"key": codec::encode(k), "target": "CREATE",
            "result": "EQUAL", "create_revision": 0}),
        Compare::Unchanged { prefix, revision } => {
            let mut range = range_json(prefix);
            range["target"] = json!("MOD");
            range["result"] = json!("LESS");
            range["mod_revision"] = json!((revision + 1).to_string());
            range
        }
    }
}

/// A txn request as the gateway reads it.
fn request_json(r: &Request) -> Value {
    match r {
        Request::Put { key, value, lease } => {
            let mut put = json!({"key": codec::encode(key), "value": codec::encode(value)});
            if *lease != 0 {
                put["lease"] = json!(lease.to_string());
            }
            json!({"request_put": put})
        }
        Request::Delete { key } => json!({"request_delete_range": {"key": codec::encode(key)}}),
        Request::DeletePrefix { prefix } => json!({"request_delete_range": range_json(prefix)}),
    }
}

/// The key a txn is about, for messages: its first write, else its first compare.
fn txn_subject(compares: &[Compare], requests: &[Request]) -> String {
    let first = requests.first().map(|r| match r {
        Request::Put { key, .. } | Request::Delete { key } => key.clone(),
        Request::DeletePrefix { prefix } => prefix.clone(),
    });
    let first = first.or_else(|| {
        compares.first().map(|c| match c {
            Compare::ValueEquals(k, _) | Compare::Missing(k) => k.clone(),
            Compare::Unchanged { prefix, .. } => prefix.clone(),
        })
    });
    let more = requests.len().max(compares.len()).saturating_sub(1);
    match (first, more) {
        (Some(k), 0) => k,
        (Some(k), n) => format!("{k} (and {n} more)"),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_parts_as_the_gateway_reads_them() {
        let guard = Compare::Unchanged {
            prefix: "/s/".into(),
            revision: 7,
        };
        assert_eq!(
            compare_json(&guard),
            json!({"key": "L3Mv", "range_end": "L3Mw", "target": "MOD", "result": "LESS",
                "mod_revision": "8"})
        );
        assert_eq!(
            compare_json(&Compare::Missing("/a".into())),
            json!({"key": "L2E=", "target": "CREATE", "result": "EQUAL", "create_revision": 0})
        );
        let put = Request::Put {
            key: "/a".into(),
            value: "1".into(),
            lease: 42,
        };
        assert_eq!(
            request_json(&put),
            json!({"request_put": {"key": "L2E=", "value": "MQ==", "lease": "42"}})
        );
        let delete = Request::DeletePrefix {
            prefix: "/s/".into(),
        };
        assert_eq!(
            request_json(&delete),
            json!({"request_delete_range": {"key": "L3Mv", "range_end": "L3Mw"}})
        );
    }

    #[test]
    fn txn_subjects_name_the_first_key() {
        let put = |k: &str| Request::Put {
            key: k.into(),
            value: "v".into(),
            lease: 0,
        };
        assert_eq!(txn_subject(&[], &[put("/s/a/node")]), "/s/a/node");
        assert_eq!(
            txn_subject(
                &[Compare::Missing("/s/a/node".into())],
                &[put("/s/a/port"), put("/s/a/mode")]
            ),
            "/s/a/port (and 1 more)"
        );
        assert_eq!(txn_subject(&[], &[]), "");
    }
}
