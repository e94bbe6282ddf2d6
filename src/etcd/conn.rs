//! The connection to one etcd cluster: its endpoints and failover between them, TLS,
//! the auth token, the gateway's path prefix (`/version`), and sorting each answer into
//! what the request wanted or an `EtcdError`.
//!
//! Every request has a connect and a whole-request timeout; a failing endpoint is
//! skipped for the next.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use ureq::tls::TlsConfig;
use ureq::Agent;

use super::codes::Code;
use super::error::{EtcdError, Kind};
use super::wire::{self, DecodeError};
use crate::cli::Registry;
use crate::metrics::Metrics;
use crate::transport;

/// The largest answer read. Every read is a page (at most 10,000 keys) or a txn of at
/// most 128 ranges over service directories: a few MB at most. A bigger answer is an
/// error, not a reason to hold hundreds of MB.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// The connection to one etcd cluster.
pub(crate) struct Conn {
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
    /// The ownership index's prefix with a trailing `/`: the hint for keys under it.
    pub(crate) index_prefix: Option<String>,
    credentials: Option<(String, String)>,
    token: Option<String>,
    /// Where requests and failovers are counted (None: nowhere, as for `ls`).
    pub(crate) metrics: Option<Arc<Metrics>>,
}

impl Conn {
    /// A connection to the registry's endpoints. Reads TLS files now, so a wrong path is
    /// reported at start.
    pub(crate) fn new(registry: &Registry, timeout: Duration) -> Result<Conn, EtcdError> {
        let tls = tls_config(registry)
            .map_err(|m| EtcdError::new("setup", &registry.to_string(), Kind::Config(m)))?;
        let config = transport::agent_config()
            .tls_config(tls)
            .timeout_connect(Some(timeout.min(Duration::from_secs(3))))
            .timeout_global(Some(timeout))
            .max_idle_age(Duration::from_secs(30))
            .build();
        let scheme = if registry.tls { "https" } else { "http" };
        Ok(Conn {
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
            index_prefix: None,
            credentials: registry
                .username
                .clone()
                .map(|u| (u, registry.password.clone().unwrap_or_default())),
            token: None,
            metrics: None,
        })
    }

    /// A handle whose `shutdown()` interrupts requests blocked in another thread.
    pub(crate) fn agent(&self) -> Agent {
        self.agent.clone()
    }

    /// The endpoint in use, for messages.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    fn transport(&self, op: &str, endpoint: &str, error: ureq::Error) -> EtcdError {
        let tls = self.tls;
        EtcdError::new(op, endpoint, Kind::Transport { error, tls })
    }

    /// POSTs `body` to `path` (under the gateway prefix) and reads the answer with
    /// `read`, trying each endpoint in turn, starting with the one that answered last.
    /// Authenticates when needed, and again once when etcd refuses the token (expired,
    /// forgotten, or outdated by an auth change: [`EtcdError::stale_token`]). `key` names
    /// what the request is about, for errors.
    pub(crate) fn call<T>(
        &mut self,
        op: &str,
        key: &str,
        path: &str,
        body: &Value,
        read: &impl Fn(&str) -> Result<T, DecodeError>,
    ) -> Result<T, EtcdError> {
        let n = self.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let idx = (self.current + i) % n;
            let result = self.call_endpoint(op, idx, path, body, read);
            if let Some(m) = &self.metrics {
                m.etcd_request(&self.endpoints[idx], result.is_ok());
            }
            match result {
                Ok(v) => {
                    if self.down[idx] {
                        self.down[idx] = false;
                        if n > 1 {
                            log::info!("etcd endpoint {} answers again", self.endpoints[idx]);
                        }
                    }
                    if idx != self.current {
                        log::info!("etcd: using endpoint {}", self.endpoints[idx]);
                        if let Some(m) = &self.metrics {
                            m.etcd_failover();
                        }
                    }
                    self.current = idx;
                    return Ok(v);
                }
                Err(e) => {
                    let e = match &self.index_prefix {
                        Some(p) if key.starts_with(p.as_str()) => e.about(op, key).for_prefix(p),
                        _ => e.about(op, key),
                    };
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
        Err(last.unwrap_or_else(|| {
            EtcdError::new(op, "(no endpoint)", Kind::Config("no endpoint".into()))
        }))
    }

    fn call_endpoint<T>(
        &mut self,
        op: &str,
        idx: usize,
        path: &str,
        body: &Value,
        read: &impl Fn(&str) -> Result<T, DecodeError>,
    ) -> Result<T, EtcdError> {
        let api = self.api_prefix(idx)?;
        if self.credentials.is_some() && self.token.is_none() {
            self.authenticate(idx, &api)?;
        }
        let url = format!("{api}{path}");
        match self.post(op, idx, &url, body, read) {
            Err(e) if e.stale_token() && self.credentials.is_some() => {
                log::debug!(
                    "etcd auth token expired, unknown or outdated at {} ({e}); \
                     authenticating again",
                    self.endpoints[idx]
                );
                self.authenticate(idx, &api)?;
                self.post(op, idx, &url, body, read)
            }
            other => other,
        }
    }

    /// One POST to one endpoint, its answer read with `read` or sorted into an error.
    fn post<T>(
        &self,
        op: &str,
        idx: usize,
        path: &str,
        body: &Value,
        read: &impl Fn(&str) -> Result<T, DecodeError>,
    ) -> Result<T, EtcdError> {
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
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| self.transport(op, base, e))?;
        let decode_error = if status == 200 {
            match read(&text) {
                Ok(v) => return Ok(v),
                Err(e) => Some(e),
            }
        } else {
            None
        };
        Err(EtcdError::new(
            op,
            base,
            self.classify(status, &text, decode_error),
        ))
    }

    /// Why an answer is not what the request wanted: not etcd's, a refusal, or (a 200
    /// answer that `read` could not decode) malformed.
    fn classify(&self, status: u16, text: &str, decode_error: Option<DecodeError>) -> Kind {
        if let Some(e) = wire::not_json(text) {
            if text.contains("CommonName of client sending a request against gateway") {
                return Kind::GatewayCertAuth;
            }
            let snippet: String = text.chars().take(200).collect();
            return Kind::BadAnswer(format!("HTTP {status}, {e}: {snippet:?}"));
        }
        let refusal = wire::refusal(text);
        if let Some(e) = decode_error {
            // A 200 answer is a refusal only when it says so: a streaming call (keepalive)
            // reports its error after the status line.
            if !refusal.has_error {
                return Kind::Decode(e);
            }
        }
        let (code, message) = (refusal.code, refusal.message);
        // 503 from a member without a leader, 502 from a proxy: another endpoint may
        // do better (see `EtcdError::unreachable`).
        if status >= 500 && code != Code::Unavailable {
            return Kind::BadAnswer(format!("HTTP {status}, code {code}: {message}"));
        }
        let user = self.credentials.as_ref().map(|(u, _)| u.clone());
        match (status, code) {
            (403, _) | (_, Code::PermissionDenied) => Kind::PermissionDenied {
                user,
                prefix: self.prefix.clone(),
                message,
            },
            (_, Code::InvalidArgument)
                if message.contains("user name is empty") && self.credentials.is_none() =>
            {
                Kind::NoCredentials
            }
            (_, Code::InvalidArgument) if message.contains("authentication failed") => {
                Kind::AuthFailed {
                    user: user.unwrap_or_default(),
                    message,
                }
            }
            _ => Kind::Api {
                status,
                code,
                message,
            },
        }
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
        let cluster = wire::version(&text).map_err(|_| {
            let snippet: String = text.chars().take(200).collect();
            let m = format!("HTTP {status}, /version says {snippet:?}");
            EtcdError::new("version", &base, Kind::BadAnswer(m))
        })?;
        let api = gateway_prefix(&cluster);
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
        let path = format!("{api}/auth/authenticate");
        match self.post("authenticate", idx, &path, &body, &wire::token) {
            Ok(token) => {
                self.token = Some(token);
                Ok(())
            }
            Err(e)
                if e.refusal().is_some_and(|(code, message)| {
                    code == Code::FailedPrecondition && message.contains("not enabled")
                }) =>
            {
                log::warn!(
                    "etcd at {}: authentication is not enabled; \
                     continuing without the credentials of user {name:?}",
                    self.endpoints[idx]
                );
                self.credentials = None;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The gateway's path prefix for a cluster version ("3.4.0"); unknown versions are
/// taken to be recent.
fn gateway_prefix(cluster: &str) -> &'static str {
    let minor: u32 = cluster
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(4);
    match minor {
        0..=2 => "/v3alpha",
        3 => "/v3beta",
        _ => "/v3",
    }
}

/// The TLS settings the registry asks for: its CA bundle, its client certificate.
fn tls_config(registry: &Registry) -> Result<TlsConfig, String> {
    if !registry.tls && (registry.cacert.is_some() || registry.cert.is_some()) {
        // The user meant TLS; plain HTTP would send everything (passwords too) in the
        // clear.
        return Err(
            "--etcd-cacert/--etcd-cert (or ?cacert=/?cert=) were given but the URI \
                    says etcd:// (plain HTTP): use etcds://"
                .into(),
        );
    }
    let client = registry.cert.as_deref().zip(registry.key.as_deref());
    transport::tls_files(registry.cacert.as_deref(), client)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded answer (tests/fixtures/etcd/record.sh).
    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/etcd/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn conn(uri: &str) -> Conn {
        let registry = crate::cli::parse_registry(uri).unwrap();
        Conn::new(&registry, Duration::from_secs(1)).unwrap()
    }

    /// How each recorded refusal reads, and whether another endpoint is tried.
    #[test]
    fn refusals_in_words() {
        let anonymous = conn("etcd://127.0.0.1:1/s");
        let user = conn("etcd://reg:pw@127.0.0.1:1/s");
        let cases = [
            (
                &anonymous,
                400,
                "error_400_user_name_empty.json",
                "requires authentication",
            ),
            (
                &user,
                400,
                "error_400_user_name_empty.json",
                "code 3: etcdserver: user name",
            ),
            (
                &user,
                400,
                "error_400_auth_failed.json",
                "as user \"reg\" failed",
            ),
            (
                &user,
                403,
                "error_403_permission_denied.json",
                "user \"reg\" has no role",
            ),
            (
                &anonymous,
                403,
                "error_403_permission_denied.json",
                "this user has no role",
            ),
            (
                &user,
                401,
                "error_401_invalid_token.json",
                "HTTP 401, code 16: ",
            ),
            (
                &user,
                404,
                "error_404_lease_not_found.json",
                "HTTP 404, code 5: ",
            ),
            (
                &user,
                400,
                "error_400_bad_base64.json",
                "HTTP 400, code 3: illegal base64",
            ),
        ];
        for (conn, status, file, words) in cases {
            let kind = conn.classify(status, &fixture(file), None);
            let e = EtcdError::new("op", "http://e", kind);
            assert!(e.to_string().contains(words), "{file}: {e}");
            assert!(!e.unreachable(), "{file}");
        }
        let e = EtcdError::new(
            "op",
            "e",
            user.classify(412, &fixture("error_412_auth_not_enabled.json"), None),
        );
        assert_eq!(e.refusal().map(|(c, _)| c), Some(Code::FailedPrecondition));
    }

    /// Answers another endpoint may do better with, and malformed answers it would not.
    #[test]
    fn bad_answers_and_malformed_ones() {
        let c = conn("etcd://127.0.0.1:1/s");
        let unreachable = |status, text: &str| {
            let e = EtcdError::new("op", "e", c.classify(status, text, None));
            (e.unreachable(), e.to_string())
        };
        let (far, text) = unreachable(200, "<html>");
        assert!(
            far && text.contains("not an etcd answer (HTTP 200, expected value"),
            "{text}"
        );
        let (far, text) = unreachable(404, "Not Found\n");
        assert!(far && text.contains("\"Not Found\\n\""), "{text}");
        let stream = r#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader"}}"#;
        let (far, text) = unreachable(503, stream);
        assert!(
            far && text.contains("HTTP 503, code 14: no leader"),
            "{text}"
        );
        let gateway = "CommonName of client sending a request against gateway will be ignored";
        let (far, text) = unreachable(400, gateway);
        assert!(!far && text.contains("--client-cert-auth"), "{text}");

        // A 200 answer without a field etcd always sends: not etcd's fault to retry.
        let decode = wire::grant("{}").unwrap_err();
        let e = EtcdError::new("lease grant", "e", c.classify(200, "{}", Some(decode)));
        assert!(!e.unreachable());
        assert!(
            e.to_string().contains("unexpected response: missing field"),
            "{e}"
        );
        // ... unless it is a streaming call's error.
        let decode = wire::keepalive(stream).unwrap_err();
        let e = EtcdError::new(
            "lease keepalive",
            "e",
            c.classify(200, stream, Some(decode)),
        );
        assert_eq!(e.refusal(), Some((Code::Unavailable, "no leader")));
    }

    /// Whose problem a refusal is: this request's (split it) or the cluster's (back off,
    /// in words that name no request, so they are logged once while they last).
    #[test]
    fn refusals_by_scope() {
        let c = conn("etcd://127.0.0.1:1/s");
        let body =
            |m: &str, code: u8| format!(r#"{{"error":"{m}","message":"{m}","code":{code}}}"#);
        let cases = [
            // What etcd 3.4.23 answered to a put once its --quota-backend-bytes was full.
            (
                429,
                "etcdserver: mvcc: database space exceeded",
                8,
                false,
                true,
            ),
            (429, "etcdserver: too many requests", 8, false, true),
            (503, "etcdserver: no leader", 14, false, true),
            (
                400,
                "etcdserver: too many operations in txn request",
                3,
                true,
                false,
            ),
            (400, "etcdserver: request is too large", 3, true, false),
            (
                429,
                "grpc: trying to send message larger than max (9 vs. 4)",
                8,
                true,
                false,
            ),
            (
                404,
                "etcdserver: requested lease not found",
                5,
                false,
                false,
            ),
        ];
        for (status, message, code, refused, cluster) in cases {
            let kind = c.classify(status, &body(message, code), None);
            let e = EtcdError::new("txn", "http://e", kind).about("txn", "/s/a/node");
            let shown = e.to_string();
            assert_eq!(e.unreachable(), status >= 500, "{shown}");
            let e = crate::store::StoreError::from(e);
            assert_eq!(
                (e.is_refused(), e.is_cluster()),
                (refused, cluster),
                "{shown}"
            );
            assert_eq!(shown.contains("/s/a/node"), !cluster, "{shown}");
        }
        let nospace = c.classify(429, &body(cases[0].1, 8), None);
        let shown = EtcdError::new("txn", "http://e", nospace).to_string();
        assert_eq!(
            shown,
            "etcd at http://e refuses requests: HTTP 429, code 8: etcdserver: mvcc: database \
             space exceeded (its NOSPACE alarm: it takes no writes until space is freed \
             (etcdctl compact, etcdctl defrag) and the alarm disarmed (etcdctl alarm disarm))"
        );
    }

    #[test]
    fn gateway_prefix_by_cluster_version() {
        for (version, prefix) in [
            ("3.2.0", "/v3alpha"),
            ("3.3.1", "/v3beta"),
            ("3.4.0", "/v3"),
            ("3.5.9", "/v3"),
            ("not_decided", "/v3"),
        ] {
            assert_eq!(gateway_prefix(version), prefix, "{version}");
        }
    }
}
