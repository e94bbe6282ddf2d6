//! etcd v3 JSON gateway client: kv range and txn, leases, auth, endpoint failover.
//!
//! base64 lives only here: callers see keys and values as strings. Every request has
//! a connect and a whole-request timeout; a failing endpoint is skipped for the next.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::Agent;

use crate::cli::Registry;
use crate::store::{Compare, Kv, Request, Store, StoreError};
use crate::transport;

pub mod codec;
use codec::prefix_end;

/// Why an etcd request failed, with the operation, the key it was about and the endpoint.
#[derive(Debug)]
pub struct EtcdError {
    op: String,
    /// The key or prefix the request was about (empty for lease and auth requests).
    key: String,
    endpoint: String,
    /// Boxed: a ureq error is large, and this travels in every `Result`.
    kind: Box<Kind>,
}

#[derive(Debug)]
enum Kind {
    /// No answer: connection refused, timeout, TLS failure... `tls`: the endpoint was
    /// spoken to over TLS (for the hints).
    Transport {
        error: ureq::Error,
        tls: bool,
    },
    /// An answer that is not etcd's: not JSON (a proxy, another service), or HTTP 5xx.
    BadAnswer(String),
    /// An answer with a gRPC error code.
    Api {
        status: u16,
        code: i64,
        message: String,
    },
    /// 403: the user's roles do not cover the key.
    PermissionDenied {
        user: Option<String>,
        prefix: String,
        message: String,
    },
    /// Auth is enabled and no credentials were given.
    NoCredentials,
    /// Wrong user name or password.
    AuthFailed {
        user: String,
        message: String,
    },
    /// etcd has auth enabled and `--client-cert-auth`: its JSON gateway refuses every
    /// request of a client with a certificate.
    GatewayCertAuth,
    Decode(String),
    Config(String),
}

impl EtcdError {
    /// True when this endpoint did not answer as etcd does (no answer at all, or not an
    /// etcd answer): another endpoint may do better. False when etcd refused the request.
    pub fn unreachable(&self) -> bool {
        matches!(*self.kind, Kind::Transport { .. } | Kind::BadAnswer(_))
    }

    /// The gRPC code and message of an answer etcd refused, if that is what failed.
    fn api(&self) -> Option<(i64, &str)> {
        match &*self.kind {
            Kind::Api { code, message, .. } => Some((*code, message)),
            _ => None,
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {}", self.op)?;
        if !self.key.is_empty() {
            write!(f, " of {}", self.key)?;
        }
        write!(f, " at {}: ", self.endpoint)?;
        match &*self.kind {
            Kind::Transport { error, tls } => f.write_str(&describe_transport(error, *tls)),
            Kind::BadAnswer(m) => write!(f, "not an etcd answer ({m})"),
            Kind::Api { status, code, message } => write!(f, "HTTP {status}, code {code}: {message}"),
            Kind::PermissionDenied { user, prefix, message } => {
                let user = user.as_deref().map(|u| format!("user {u:?}")).unwrap_or_else(|| "this user".into());
                write!(
                    f,
                    "permission denied (HTTP 403: {message}): {user} has no role with readwrite permission on {prefix}; \
                     grant it to one of the user's roles (etcdctl role grant-permission ROLE --prefix=true readwrite {prefix})"
                )
            }
            Kind::NoCredentials => f.write_str(
                "etcd requires authentication: give a user and password (user:pass@ in the URI, \
                 ETCD_USERNAME and ETCD_PASSWORD, or --etcd-password-file)",
            ),
            Kind::AuthFailed { user, message } => {
                write!(f, "authentication as user {user:?} failed ({message}): check the user name or password")
            }
            Kind::GatewayCertAuth => f.write_str(
                "etcd has authentication enabled and requires client certificates (--client-cert-auth); its JSON \
                 gateway refuses that combination (\"CommonName of client sending a request against gateway will be \
                 ignored\"): use password authentication over server-only TLS, or client certificates without etcd auth",
            ),
            Kind::Decode(m) => write!(f, "unexpected response: {m}"),
            Kind::Config(m) => f.write_str(m),
        }
    }
}

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> Self {
        StoreError::new(e)
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            Kind::Transport { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Transport failures, certificate problems above all, in words a person can act on.
/// rustls reports through `io::Error` text, so this matches on its wording.
fn describe_transport(e: &ureq::Error, tls: bool) -> String {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("UnknownCA") {
        " (the server certificate is not signed by a trusted CA: pass --etcd-cacert with the CA that signed it)".to_string()
    } else if let Some(rest) = text.split("not valid for name ").nth(1) {
        let name = rest.split(';').next().unwrap_or(rest).trim();
        let valid = rest
            .split("only valid for ")
            .nth(1)
            .map(clean_names)
            .unwrap_or_default();
        let valid = if valid.is_empty() {
            String::new()
        } else {
            format!(" (it is valid for {valid})")
        };
        format!(" (the server certificate does not name {name}{valid}: connect by a name or IP in its subjectAltName)")
    } else if text.contains("NotValidForName") {
        " (the server certificate does not name this host: connect by a name or IP in its subjectAltName)".to_string()
    } else if text.contains("expired") || text.contains("Expired") {
        " (the server certificate has expired, or this machine's clock is wrong)".to_string()
    } else if text.contains("NotValidYet") || text.contains("not valid yet") {
        " (the server certificate is not valid yet, or this machine's clock is wrong)".to_string()
    } else if text.contains("BadCertificate")
        || text.contains("CertificateRequired")
        || text.contains("UnknownCA")
    {
        " (the server refused our client certificate or needs one: pass --etcd-cert and --etcd-key with a certificate its CA signed)"
            .to_string()
    } else if tls
        && [
            "end of file",
            "reset by peer",
            "Peer disconnected",
            "InvalidContentType",
            "corrupt message",
        ]
        .iter()
        .any(|t| text.contains(t))
    {
        " (the TLS handshake failed: if this endpoint does not speak TLS, use etcd://)".to_string()
    } else if !tls
        && (text.contains("Peer disconnected")
            || text.contains("reset by peer")
            || text.contains("end of file"))
    {
        " (the endpoint closed the connection without an answer: if it speaks TLS, use etcds://)"
            .to_string()
    } else if matches!(e, ureq::Error::Timeout(_)) {
        " (no answer in time)".to_string()
    } else if matches!(e, ureq::Error::Protocol(_)) {
        " (the endpoint does not speak HTTP: is this etcd's client URL?)".to_string()
    } else if matches!(e, ureq::Error::HostNotFound) {
        " (the endpoint's host name does not resolve)".to_string()
    } else {
        String::new()
    };
    format!("{text}{hint}")
}

/// rustls's `[IpAddress(127.0.0.1), DnsName("a")]` as `127.0.0.1, a`.
fn clean_names(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '[' | ']' | '"' => {}
            _ if depth > 0 => out.push(c),
            ',' => out.push_str(", "),
            _ => {}
        }
    }
    out
}

/// A client for one etcd cluster.
pub struct Etcd {
    agent: Agent,
    /// `http(s)://host:port` per endpoint.
    endpoints: Vec<String>,
    tls: bool,
    /// Index of the endpoint that answered last.
    current: usize,
    /// Endpoints that failed last time they were tried (their failure is logged once).
    down: Vec<bool>,
    /// Gateway path prefix (`/v3`), detected from `/version`.
    api: Option<String>,
    /// The registry's key prefix with a trailing `/`, for permission hints.
    prefix: String,
    credentials: Option<(String, String)>,
    token: Option<String>,
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn pem_certs(pem: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

impl Etcd {
    /// A client for the registry's endpoints. Reads TLS files now, so a wrong path is
    /// reported at start.
    pub fn new(registry: &Registry, timeout: Duration) -> Result<Etcd, EtcdError> {
        let config_err = |m: String| EtcdError {
            op: "setup".into(),
            key: String::new(),
            endpoint: registry.to_string(),
            kind: Box::new(Kind::Config(m)),
        };
        if !registry.tls && (registry.cacert.is_some() || registry.cert.is_some()) {
            // The user meant TLS; plain HTTP would send everything (passwords too) in
            // the clear.
            return Err(config_err(
                "--etcd-cacert/--etcd-cert (or ?cacert=/?cert=) were given but the URI says etcd:// (plain HTTP): use etcds://"
                    .into(),
            ));
        }
        let mut tls = TlsConfig::builder();
        if let Some(ca) = &registry.cacert {
            let certs = pem_certs(&read_file("CA bundle", ca).map_err(config_err)?);
            if certs.is_empty() {
                return Err(config_err(format!(
                    "CA bundle {} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
        }
        if let (Some(cert), Some(key)) = (&registry.cert, &registry.key) {
            let chain = pem_certs(&read_file("client certificate", cert).map_err(config_err)?);
            if chain.is_empty() {
                return Err(config_err(format!(
                    "client certificate {} holds no PEM certificate",
                    cert.display()
                )));
            }
            let key_pem = read_file("client key", key).map_err(config_err)?;
            let key = PrivateKey::from_pem(&key_pem)
                .map_err(|e| config_err(format!("client key {}: {e}", key.display())))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = transport::agent_config()
            .tls_config(tls.build())
            .timeout_connect(Some(timeout.min(Duration::from_secs(3))))
            .timeout_global(Some(timeout))
            .max_idle_age(Duration::from_secs(30))
            .build();
        let scheme = if registry.tls { "https" } else { "http" };
        Ok(Etcd {
            agent: config.new_agent(),
            endpoints: registry
                .endpoints
                .iter()
                .map(|e| format!("{scheme}://{e}"))
                .collect(),
            tls: registry.tls,
            current: 0,
            down: vec![false; registry.endpoints.len()],
            api: None,
            prefix: format!("{}/", registry.prefix),
            credentials: registry
                .username
                .clone()
                .map(|u| (u, registry.password.clone().unwrap_or_default())),
            token: None,
        })
    }

    /// A handle whose `shutdown()` interrupts requests blocked in another thread.
    pub fn agent(&self) -> Agent {
        self.agent.clone()
    }

    /// The endpoint in use, for messages.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    fn err(&self, op: &str, endpoint: &str, kind: Kind) -> EtcdError {
        EtcdError {
            op: op.to_string(),
            key: String::new(),
            endpoint: endpoint.to_string(),
            kind: Box::new(kind),
        }
    }

    fn transport(&self, op: &str, endpoint: &str, error: ureq::Error) -> EtcdError {
        self.err(
            op,
            endpoint,
            Kind::Transport {
                error,
                tls: self.tls,
            },
        )
    }

    /// POSTs to `path` (under the gateway prefix), trying each endpoint in turn,
    /// starting with the one that answered last. Authenticates when needed, and again
    /// once when the token expired. `key` names what the request is about, for errors.
    fn call(&mut self, op: &str, key: &str, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let idx = (self.current + i) % n;
            match self.call_endpoint(op, idx, path, body) {
                Ok(v) => {
                    if self.down[idx] {
                        self.down[idx] = false;
                        if n > 1 {
                            log::info!("etcd endpoint {} answers again", self.endpoints[idx]);
                        }
                    }
                    if idx != self.current {
                        log::info!("etcd: using endpoint {}", self.endpoints[idx]);
                    }
                    self.current = idx;
                    return Ok(v);
                }
                Err(mut e) => {
                    // "range of /p/" reads better than "version of /p/" for a sub-step.
                    e.op = op.to_string();
                    e.key = key.to_string();
                    if !e.unreachable() {
                        return Err(e);
                    }
                    // One line when an endpoint starts failing, not one per retry.
                    if n > 1 && !self.down[idx] {
                        log::warn!("{e}; trying the next endpoint");
                    }
                    self.down[idx] = true;
                    last = Some(e);
                }
            }
        }
        Err(last
            .unwrap_or_else(|| self.err(op, "(no endpoint)", Kind::Config("no endpoint".into()))))
    }

    fn call_endpoint(
        &mut self,
        op: &str,
        idx: usize,
        path: &str,
        body: &Value,
    ) -> Result<Value, EtcdError> {
        let api = self.api_prefix(idx)?;
        if self.credentials.is_some() && self.token.is_none() {
            self.authenticate(idx, &api)?;
        }
        let url = format!("{api}{path}");
        match self.post(op, idx, &url, body) {
            // An expired token, or one a restarted etcd forgot.
            Err(e) if e.api().is_some_and(|(code, _)| code == 16) && self.credentials.is_some() => {
                log::debug!(
                    "etcd auth token expired or unknown at {}; authenticating again",
                    self.endpoints[idx]
                );
                self.authenticate(idx, &api)?;
                self.post(op, idx, &url, body)
            }
            other => other,
        }
    }

    fn post(&self, op: &str, idx: usize, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let base = &self.endpoints[idx];
        let mut req = self
            .agent
            .post(&format!("{base}{path}"))
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", t);
        }
        let mut resp = req
            .send(body.to_string())
            .map_err(|e| self.transport(op, base, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(512 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.transport(op, base, e))?;
        let v: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if text.contains("CommonName of client sending a request against gateway") => {
                return Err(self.err(op, base, Kind::GatewayCertAuth));
            }
            Err(e) => {
                let snippet: String = text.chars().take(200).collect();
                return Err(self.err(
                    op,
                    base,
                    Kind::BadAnswer(format!("HTTP {status}, {e}: {snippet:?}")),
                ));
            }
        };
        if status != 200 || v.get("error").is_some() && v.get("result").is_none() {
            let code = num(&v["code"]);
            let message = v["message"]
                .as_str()
                .or(v["error"].as_str())
                .unwrap_or(&text)
                .to_string();
            // 503 from a member without a leader, 502 from a proxy: another endpoint may
            // do better.
            if status >= 500 {
                return Err(self.err(
                    op,
                    base,
                    Kind::BadAnswer(format!("HTTP {status}, code {code}: {message}")),
                ));
            }
            let user = self.credentials.as_ref().map(|(u, _)| u.clone());
            let kind = match (status, code) {
                (403, _) | (_, 7) => Kind::PermissionDenied {
                    user,
                    prefix: self.prefix.clone(),
                    message,
                },
                (_, 3) if message.contains("user name is empty") && self.credentials.is_none() => {
                    Kind::NoCredentials
                }
                (_, 3) if message.contains("authentication failed") => Kind::AuthFailed {
                    user: user.unwrap_or_default(),
                    message,
                },
                _ => Kind::Api {
                    status,
                    code,
                    message,
                },
            };
            return Err(self.err(op, base, kind));
        }
        Ok(v)
    }

    /// `/v3` for etcd 3.4+, `/v3beta` for 3.3, `/v3alpha` for 3.2; from `/version`.
    fn api_prefix(&mut self, idx: usize) -> Result<String, EtcdError> {
        if let Some(a) = &self.api {
            return Ok(a.clone());
        }
        let base = self.endpoints[idx].clone();
        let mut resp = self
            .agent
            .get(&format!("{base}/version"))
            .call()
            .map_err(|e| self.transport("version", &base, e))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport("version", &base, e))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let Some(cluster) = v["etcdcluster"].as_str().or(v["etcdserver"].as_str()) else {
            let snippet: String = text.chars().take(200).collect();
            return Err(self.err(
                "version",
                &base,
                Kind::BadAnswer(format!("HTTP {status}, /version says {snippet:?}")),
            ));
        };
        let minor: u32 = cluster
            .split('.')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(4);
        let api = match minor {
            0..=2 => "/v3alpha",
            3 => "/v3beta",
            _ => "/v3",
        };
        log::debug!("etcd cluster {cluster} at {base}: gateway {api}");
        self.api = Some(api.to_string());
        Ok(api.to_string())
    }

    fn authenticate(&mut self, idx: usize, api: &str) -> Result<(), EtcdError> {
        let Some((name, password)) = self.credentials.clone() else {
            return Ok(());
        };
        self.token = None;
        let body = json!({"name": name, "password": password});
        let v = match self.post(
            "authenticate",
            idx,
            &format!("{api}/auth/authenticate"),
            &body,
        ) {
            Ok(v) => v,
            Err(e)
                if e.api().is_some_and(|(code, message)| {
                    code == 9 && message.contains("not enabled")
                }) =>
            {
                log::warn!(
                    "etcd at {}: authentication is not enabled; continuing without the credentials of user {name:?}",
                    self.endpoints[idx]
                );
                self.credentials = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let token = v["token"].as_str().ok_or_else(|| {
            self.err(
                "authenticate",
                &self.endpoints[idx],
                Kind::Decode("no token in the answer".into()),
            )
        })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    fn decode_kvs(&self, op: &str, kvs: &Value) -> Result<Vec<Kv>, EtcdError> {
        let Some(list) = kvs.as_array() else {
            return Ok(Vec::new());
        };
        list.iter()
            .map(|kv| {
                let dec = |field: &str| -> Result<String, EtcdError> {
                    let raw = kv[field].as_str().unwrap_or("");
                    let bytes = codec::decode(raw).map_err(|e| {
                        self.err(op, self.endpoint(), Kind::Decode(format!("{field}: {e}")))
                    })?;
                    String::from_utf8(bytes).map_err(|_| {
                        self.err(
                            op,
                            self.endpoint(),
                            Kind::Decode(format!("{field} is not UTF-8")),
                        )
                    })
                };
                Ok(Kv {
                    key: dec("key")?,
                    value: dec("value")?,
                    lease: num(&kv["lease"]),
                })
            })
            .collect()
    }
}

impl Store for Etcd {
    /// Every key under `prefix`, read page by page at one revision, and that revision.
    fn range_prefix(&mut self, prefix: &str) -> Result<(Vec<Kv>, i64), StoreError> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0i64;
        loop {
            let mut body = json!({"key": codec::encode(&start), "range_end": codec::encode(&end), "limit": 10000});
            if revision > 0 {
                body["revision"] = json!(revision);
            }
            let v = self.call("range", prefix, "/kv/range", &body)?;
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

    /// Runs one transaction; Ok(false) when a compare failed (nothing was changed).
    fn txn(&mut self, compares: &[Compare], requests: &[Request]) -> Result<bool, StoreError> {
        let compare: Vec<Value> = compares
            .iter()
            .map(|c| match c {
                Compare::ValueEquals(k, v) => {
                    json!({"key": codec::encode(k), "target": "VALUE", "result": "EQUAL", "value": codec::encode(v)})
                }
                Compare::Missing(k) => json!({"key": codec::encode(k), "target": "CREATE", "result": "EQUAL", "create_revision": 0}),
                Compare::Unchanged { prefix, revision } => json!({"key": codec::encode(prefix),
                    "range_end": codec::encode(prefix_end(prefix)), "target": "MOD", "result": "LESS",
                    "mod_revision": (revision + 1).to_string()}),
            })
            .collect();
        let success: Vec<Value> = requests
            .iter()
            .map(|r| match r {
                Request::Put { key, value, lease } => {
                    let mut p = json!({"key": codec::encode(key), "value": codec::encode(value)});
                    if *lease != 0 {
                        p["lease"] = json!(lease.to_string());
                    }
                    json!({"request_put": p})
                }
                Request::Delete { key } => {
                    json!({"request_delete_range": {"key": codec::encode(key)}})
                }
                Request::DeletePrefix { prefix } => json!({"request_delete_range": {
                    "key": codec::encode(prefix), "range_end": codec::encode(prefix_end(prefix))}}),
            })
            .collect();
        let v = self.call(
            "txn",
            &txn_subject(compares, requests),
            "/kv/txn",
            &json!({"compare": compare, "success": success}),
        )?;
        Ok(v["succeeded"].as_bool().unwrap_or(false))
    }

    /// Grants a lease of `ttl` seconds and returns its ID.
    fn grant(&mut self, ttl: u64) -> Result<i64, StoreError> {
        let v = self.call(
            "lease grant",
            "",
            "/lease/grant",
            &json!({"TTL": ttl.to_string()}),
        )?;
        match num(&v["ID"]) {
            0 => Err(self
                .err(
                    "lease grant",
                    self.endpoint(),
                    Kind::Decode(format!("no lease ID in {v}")),
                )
                .into()),
            id => Ok(id),
        }
    }

    /// Refreshes a lease; Ok(None) when etcd no longer knows it (expired or revoked).
    fn keepalive(&mut self, id: i64) -> Result<Option<i64>, StoreError> {
        let v = self.call(
            "lease keepalive",
            "",
            "/lease/keepalive",
            &json!({"ID": id.to_string()}),
        )?;
        let ttl = num(&v["result"]["TTL"]);
        Ok((ttl > 0).then_some(ttl))
    }

    /// Revokes a lease, deleting its keys. A lease that is already gone is fine.
    fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
        match self.call(
            "lease revoke",
            "",
            "/lease/revoke",
            &json!({"ID": id.to_string()}),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.api().is_some_and(|(code, _)| code == 5) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The keys attached to a lease; Ok(None) when the lease is gone.
    fn lease_keys(&mut self, id: i64) -> Result<Option<Vec<String>>, StoreError> {
        let v = self.call(
            "lease timetolive",
            "",
            "/lease/timetolive",
            &json!({"ID": id.to_string(), "keys": true}),
        )?;
        if num(&v["TTL"]) <= 0 {
            return Ok(None);
        }
        let keys = v["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let bytes = codec::decode(k.as_str().unwrap_or("")).map_err(|e| {
                self.err(
                    "lease timetolive",
                    self.endpoint(),
                    Kind::Decode(e.to_string()),
                )
            })?;
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(Some(out))
    }

    /// Reads several key prefixes in one transaction: one request, O(their keys).
    fn range_prefixes(&mut self, prefixes: &[String]) -> Result<Vec<Kv>, StoreError> {
        let mut out = Vec::new();
        for chunk in prefixes.chunks(codec::MAX_TXN_OPS) {
            let success: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"request_range": {"key": codec::encode(p), "range_end": codec::encode(prefix_end(p))}}))
                .collect();
            let v = self.call("range", &chunk[0], "/kv/txn", &json!({"success": success}))?;
            for r in v["responses"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                out.extend(self.decode_kvs("txn range", &r["response_range"]["kvs"])?);
            }
        }
        Ok(out)
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
    fn certificate_names_in_words() {
        assert_eq!(clean_names(r#"IpAddress(127.0.0.1)"#), "127.0.0.1");
        assert_eq!(
            clean_names(r#"[IpAddress(127.0.0.1), DnsName("etcd.lan")]"#),
            "127.0.0.1, etcd.lan"
        );
        let e = ureq::Error::Io(std::io::Error::other(
            r#"invalid peer certificate: certificate not valid for name "localhost"; certificate is only valid for IpAddress(127.0.0.1)"#,
        ));
        let text = describe_transport(&e, true);
        assert!(
            text.contains(r#"does not name "localhost" (it is valid for 127.0.0.1)"#),
            "{text}"
        );
        let e = ureq::Error::Io(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(describe_transport(&e, true).contains("pass --etcd-cacert"));
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

    #[test]
    fn int64_as_string_or_number() {
        assert_eq!(num(&json!("7587884467442474531")), 7587884467442474531);
        assert_eq!(num(&json!(3)), 3);
        assert_eq!(num(&Value::Null), 0);
    }
}
