//! etcd v3 JSON gateway client: kv range and txn, leases, auth, endpoint failover.
//!
//! base64 lives only here: callers see keys and values as strings. Every request has
//! a connect and a whole-request timeout; a failing endpoint is skipped for the next.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::Agent;

use crate::cli::Registry;

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// 0: no lease.
    pub lease: i64,
}

/// A compare of a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key holds exactly this value.
    ValueEquals(String, String),
    /// The key does not exist.
    Missing(String),
    /// No key under the prefix was created or changed after this revision.
    Unchanged { prefix: String, revision: i64 },
}

/// A request inside a txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Put { key: String, value: String, lease: i64 },
    Delete { key: String },
    /// Every key that starts with this prefix.
    DeletePrefix { prefix: String },
}

/// Why an etcd request failed, with the operation and endpoint.
#[derive(Debug)]
pub struct EtcdError {
    op: String,
    endpoint: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// No answer: connection refused, timeout, TLS failure...
    Transport(ureq::Error),
    /// An answer with a gRPC error code.
    Api { status: u16, code: i64, message: String },
    Decode(String),
    Config(String),
}

impl EtcdError {
    /// True when etcd did not answer at all (as opposed to refusing the request).
    pub fn unreachable(&self) -> bool {
        matches!(self.kind, Kind::Transport(_))
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {} at {}: ", self.op, self.endpoint)?;
        match &self.kind {
            Kind::Transport(e) => write!(f, "{}", describe_transport(e)),
            Kind::Api { status, code: 7, message } => {
                write!(f, "permission denied (HTTP {status}): {message}; grant the user's role readwrite on the key prefix")
            }
            Kind::Api { status, code, message } => write!(f, "HTTP {status}, code {code}: {message}"),
            Kind::Decode(m) => write!(f, "unexpected response: {m}"),
            Kind::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Transport(e) => Some(e),
            _ => None,
        }
    }
}

/// Certificate problems in words a person can act on.
fn describe_transport(e: &ureq::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") {
        " (the server certificate is not signed by a trusted CA: pass --etcd-cacert)"
    } else if text.contains("NotValidForName") {
        " (the server certificate does not name this host: use the name or IP in its SAN)"
    } else if text.contains("Expired") {
        " (the server certificate has expired)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// A client for one etcd cluster.
pub struct Etcd {
    agent: Agent,
    /// `http(s)://host:port` per endpoint.
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last.
    current: usize,
    /// Gateway path prefix (`/v3`), detected from `/version`.
    api: Option<String>,
    credentials: Option<(String, String)>,
    token: Option<String>,
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

impl Etcd {
    /// A client for the registry's endpoints. Reads TLS files now, so a wrong path is
    /// reported at start.
    pub fn new(registry: &Registry, timeout: Duration) -> Result<Etcd, EtcdError> {
        let config_err = |m: String| EtcdError { op: "setup".into(), endpoint: registry.to_string(), kind: Kind::Config(m) };
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &registry.cacert {
            let pem = read_file("CA bundle", ca).map_err(config_err)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(config_err(format!("CA bundle {} holds no PEM certificate", ca.display())));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        if let (Some(cert), Some(key)) = (&registry.cert, &registry.key) {
            let pem = read_file("client certificate", cert).map_err(config_err)?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                return Err(config_err(format!("client certificate {} holds no PEM certificate", cert.display())));
            }
            let key_pem = read_file("client key", key).map_err(config_err)?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| config_err(format!("client key {}: {e}", key.display())))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .proxy(None)
            .tls_config(tls.build())
            .timeout_connect(Some(timeout.min(Duration::from_secs(3))))
            .timeout_global(Some(timeout))
            .max_idle_age(Duration::from_secs(30))
            .build();
        let scheme = if registry.tls { "https" } else { "http" };
        Ok(Etcd {
            agent: config.new_agent(),
            endpoints: registry.endpoints.iter().map(|e| format!("{scheme}://{e}")).collect(),
            current: 0,
            api: None,
            credentials: registry.username.clone().map(|u| (u, registry.password.clone().unwrap_or_default())),
            token: None,
        })
    }

    /// The endpoint in use, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    fn err(&self, op: &str, endpoint: &str, kind: Kind) -> EtcdError {
        EtcdError { op: op.to_string(), endpoint: endpoint.to_string(), kind }
    }

    /// POSTs to `path` (under the gateway prefix), trying each endpoint in turn,
    /// starting with the one that answered last. Authenticates when needed, and again
    /// once when the token expired.
    fn call(&mut self, op: &str, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let idx = (self.current + i) % n;
            match self.call_endpoint(op, idx, path, body) {
                Ok(v) => {
                    if idx != self.current {
                        log::info!("etcd: using endpoint {}", self.endpoints[idx]);
                    }
                    self.current = idx;
                    return Ok(v);
                }
                Err(e) if e.unreachable() => {
                    if n > 1 {
                        log::warn!("{e}; trying the next endpoint");
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.err(op, "(no endpoint)", Kind::Config("no endpoint".into()))))
    }

    fn call_endpoint(&mut self, op: &str, idx: usize, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let api = self.api_prefix(idx)?;
        if self.credentials.is_some() && self.token.is_none() {
            self.authenticate(idx, &api)?;
        }
        match self.post(op, idx, &format!("{api}{path}"), body) {
            Err(EtcdError { kind: Kind::Api { code: 16, .. }, .. }) if self.credentials.is_some() => {
                log::debug!("etcd auth token expired; authenticating again");
                self.authenticate(idx, &api)?;
                self.post(op, idx, &format!("{api}{path}"), body)
            }
            other => other,
        }
    }

    fn post(&self, op: &str, idx: usize, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let base = &self.endpoints[idx];
        let mut req = self.agent.post(&format!("{base}{path}")).header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", t);
        }
        let mut resp = req.send(body.to_string()).map_err(|e| self.err(op, base, Kind::Transport(e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.err(op, base, Kind::Transport(e)))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| self.err(op, base, Kind::Decode(format!("{e}: {}", text.chars().take(300).collect::<String>()))))?;
        if status != 200 || v.get("error").is_some() && v.get("result").is_none() {
            let code = num(&v["code"]);
            let message = v["message"].as_str().or(v["error"].as_str()).unwrap_or(&text).to_string();
            // 503 from a member without a leader: another endpoint may do better.
            if status == 503 {
                return Err(self.err(op, base, Kind::Transport(ureq::Error::Io(std::io::Error::other(message)))));
            }
            return Err(self.err(op, base, Kind::Api { status, code, message }));
        }
        Ok(v)
    }

    /// `/v3` for etcd 3.4+, `/v3beta` for 3.3, `/v3alpha` for 3.2; from `/version`.
    fn api_prefix(&mut self, idx: usize) -> Result<String, EtcdError> {
        if let Some(a) = &self.api {
            return Ok(a.clone());
        }
        let base = self.endpoints[idx].clone();
        let mut resp = self.agent.get(&format!("{base}/version")).call().map_err(|e| self.err("version", &base, Kind::Transport(e)))?;
        let text = resp.body_mut().read_to_string().map_err(|e| self.err("version", &base, Kind::Transport(e)))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let cluster = v["etcdcluster"].as_str().or(v["etcdserver"].as_str()).unwrap_or("3.4.0");
        let minor: u32 = cluster.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or(4);
        let api = match minor {
            0..=2 => "/v3alpha",
            3 => "/v3beta",
            _ => "/v3",
        };
        log::debug!("etcd {cluster} at {base}: gateway {api}");
        self.api = Some(api.to_string());
        Ok(api.to_string())
    }

    fn authenticate(&mut self, idx: usize, api: &str) -> Result<(), EtcdError> {
        let Some((name, password)) = self.credentials.clone() else { return Ok(()) };
        self.token = None;
        let v = self.post("authenticate", idx, &format!("{api}/auth/authenticate"), &json!({"name": name, "password": password}))?;
        let token = v["token"].as_str().ok_or_else(|| {
            self.err("authenticate", &self.endpoints[idx], Kind::Decode("no token in the answer".into()))
        })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// Every key under `prefix`, read page by page at one revision, and that revision.
    pub fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0i64;
        loop {
            let mut body = json!({"key": B64.encode(&start), "range_end": B64.encode(&end), "limit": 10000});
            if revision > 0 {
                body["revision"] = json!(revision);
            }
            let v = self.call("range", "/kv/range", &body)?;
            if revision == 0 {
                revision = num(&v["header"]["revision"]);
            }
            let kvs = self.decode_kvs("range", &v["kvs"])?;
            let more = v["more"].as_bool().unwrap_or(false);
            if let Some(last) = kvs.last() {
                start = last.key.as_bytes().to_vec();
                start.push(0);
            }
            let empty = kvs.is_empty();
            out.extend(kvs);
            if !more || empty {
                return Ok((out, revision));
            }
        }
    }

    fn decode_kvs(&self, op: &str, kvs: &Value) -> Result<Vec<Kv>, EtcdError> {
        let Some(list) = kvs.as_array() else { return Ok(Vec::new()) };
        list.iter()
            .map(|kv| {
                let dec = |field: &str| -> Result<String, EtcdError> {
                    let raw = kv[field].as_str().unwrap_or("");
                    let bytes = B64.decode(raw).map_err(|e| self.err(op, self.endpoint(), Kind::Decode(format!("{field}: {e}"))))?;
                    String::from_utf8(bytes).map_err(|_| self.err(op, self.endpoint(), Kind::Decode(format!("{field} is not UTF-8"))))
                };
                Ok(Kv { key: dec("key")?, value: dec("value")?, lease: num(&kv["lease"]) })
            })
            .collect()
    }

    /// Runs one transaction; Ok(false) when a compare failed (nothing was changed).
    pub fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, EtcdError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::ValueEquals(k, v) => {
                    json!({"key": B64.encode(k), "target": "VALUE", "result": "EQUAL", "value": B64.encode(v)})
                }
                Compare::Missing(k) => json!({"key": B64.encode(k), "target": "CREATE", "result": "EQUAL", "create_revision": 0}),
                Compare::Unchanged { prefix, revision } => json!({"key": B64.encode(prefix),
                    "range_end": B64.encode(prefix_end(prefix)), "target": "MOD", "result": "LESS",
                    "mod_revision": (revision + 1).to_string()}),
            })
            .collect();
        let success: Vec<Value> = requests
            .iter()
            .map(|r| match r {
                Request::Put { key, value, lease } => {
                    let mut p = json!({"key": B64.encode(key), "value": B64.encode(value)});
                    if *lease != 0 {
                        p["lease"] = json!(lease.to_string());
                    }
                    json!({"request_put": p})
                }
                Request::Delete { key } => json!({"request_delete_range": {"key": B64.encode(key)}}),
                Request::DeletePrefix { prefix } => json!({"request_delete_range": {
                    "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))}}),
            })
            .collect();
        let v = self.call("txn", "/kv/txn", &json!({"compare": compare, "success": success}))?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Grants a lease of `ttl` seconds and returns its ID.
    pub fn grant(&mut self, ttl: u64) -> Result<i64, EtcdError> {
        let v = self.call("lease grant", "/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        match num(&v["ID"]) {
            0 => Err(self.err("lease grant", self.endpoint(), Kind::Decode(format!("no lease ID in {v}")))),
            id => Ok(id),
        }
    }

    /// Refreshes a lease; Ok(None) when etcd no longer knows it (expired or revoked).
    pub fn keepalive(&mut self, id: i64) -> Result<Option<i64>, EtcdError> {
        let v = self.call("lease keepalive", "/lease/keepalive", &json!({"ID": id.to_string()}))?;
        let ttl = num(&v["result"]["TTL"]);
        Ok((ttl > 0).then_some(ttl))
    }

    /// Revokes a lease, deleting its keys. A lease that is already gone is fine.
    pub fn revoke(&mut self, id: i64) -> Result<(), EtcdError> {
        match self.call("lease revoke", "/lease/revoke", &json!({"ID": id.to_string()})) {
            Ok(_) => Ok(()),
            Err(EtcdError { kind: Kind::Api { code: 5, .. }, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The keys attached to a lease; Ok(None) when the lease is gone.
    pub fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, EtcdError> {
        let v = self.call("lease timetolive", "/lease/timetolive", &json!({"ID": id.to_string(), "keys": true}))?;
        if num(&v["TTL"]) <= 0 {
            return Ok(None);
        }
        let keys = v["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let bytes = B64.decode(k.as_str().unwrap_or("")).map_err(|e| self.err("lease timetolive", self.endpoint(), Kind::Decode(e.to_string())))?;
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(Some(out))
    }

    /// Reads several key prefixes in one transaction: one request, O(their keys).
    pub fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, EtcdError> {
        let mut out = Vec::new();
        for chunk in prefixes.chunks(128) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"request_range": {"key": B64.encode(p), "range_end": B64.encode(prefix_end(p))}}))
                .collect();
            let v = self.call("txn range", "/kv/txn", &json!({"success": success}))?;
            for r in v["responses"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                out.extend(self.decode_kvs("txn range", &r["response_range"]["kvs"])?);
            }
        }
        Ok(out)
    }
}

/// The etcd `range_end` that selects every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The gateway sends int64 as strings; accept numbers too.
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/s/"), b"/s0".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn int64_as_string_or_number() {
        assert_eq!(num(&json!("7587884467442474531")), 7587884467442474531);
        assert_eq!(num(&json!(3)), 3);
        assert_eq!(num(&Value::Null), 0);
    }
}
