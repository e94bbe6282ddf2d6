//! Docker Engine API client: version negotiation, the container list and inspect (the
//! [`Source`] the reconciler reads), and opening the event stream.
//!
//! Inspect results are cached by container ID: a container's configuration does not
//! change while its ID lives, so a quiet sync costs one list request and no inspect.
//! The answers are read by the private wire types (`wire`), the event stream and its
//! vocabulary live in `events`, the errors in `error`.
//!
//! Podman (4.3) serves the same API with gaps, filled here so callers see one engine:
//! its list has no `HostConfig` (the network mode comes from the cached inspect) and no
//! health in `Status` (a healthchecked container is inspected on each pass for its live
//! health); it drops `--expose` with `--network host` (the image's `EXPOSE` is read
//! instead); its events say `remove` for `destroy` and a bare `health_status`.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use ureq::config::ConfigBuilder;
use ureq::tls::TlsConfig;
use ureq::typestate::AgentScope;
use ureq::Agent;

use crate::cli::DockerHost;
use crate::service::{Container, Port};
use crate::source::{Source, SourceError};
use crate::transport;

mod error;
mod events;
mod wire;

pub use error::DockerError;
use error::Kind;
pub use events::{Events, EVENT_LINE_LIMIT};
use wire::{ImageInspect, Inspect, ListEntry, Static};

/// Newest API version this client knows; the daemon's own version caps it.
const MAX_API: (u32, u32) = (1, 47);
/// Largest container list read: about 1.6 KiB per container (the recorded fixtures),
/// a few KiB with many labels and networks, so 10,000 containers fit with room.
const LIST_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest inspect answer (container or image) read: about 8 KiB each as recorded.
const INSPECT_LIMIT: u64 = 4 * 1024 * 1024;

/// A client for one Docker daemon.
pub struct Docker {
    agent: Agent,
    host: DockerHost,
    base: String,
    /// `/v1.41` after negotiation; empty until then.
    version: Option<String>,
    /// The daemon is Podman (its `/_ping` names a Libpod API version).
    podman: bool,
    /// Whether the "health is read from inspect" line was logged.
    said_health_from_inspect: bool,
    cache: HashMap<String, Static>,
    timeout: Duration,
    /// The TLS settings of a [`DockerHost::Tls`], read once.
    tls: Option<TlsConfig>,
}

/// An agent for `host` from `config`, with `tls` for a TLS host.
fn agent_for(
    host: &DockerHost,
    tls: Option<&TlsConfig>,
    config: ConfigBuilder<AgentScope>,
) -> Agent {
    match (host, tls) {
        (DockerHost::Unix(path), _) => transport::unix_agent(path.clone(), config.build()),
        (_, Some(tls)) => config.tls_config(tls.clone()).build().new_agent(),
        (_, None) => config.build().new_agent(),
    }
}

fn base_for(host: &DockerHost) -> String {
    match host {
        DockerHost::Unix(_) => format!("http://{}", transport::UNIX_HOST),
        DockerHost::Tcp(addr) => format!("http://{addr}"),
        DockerHost::Tls { addr, .. } => format!("https://{addr}"),
    }
}

/// Docker's TLS files, as its client finds them: the CA in `ca.pem`, and our
/// certificate in `cert.pem` and `key.pem` when both are there.
fn tls_config(certs: &Path) -> Result<TlsConfig, String> {
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    let client = (cert.exists() && key.exists()).then_some((cert.as_path(), key.as_path()));
    transport::tls_files(Some(&certs.join("ca.pem")), client)
        .map_err(|e| format!("{e} (DOCKER_CERT_PATH={})", certs.display()))
}

impl Docker {
    /// A client with `timeout` for connecting and for each whole request. Reads the
    /// TLS files of a TLS host now, so a missing one is an error at start.
    pub fn new(host: &DockerHost, timeout: Duration) -> Result<Docker, DockerError> {
        let tls = match host {
            DockerHost::Tls { certs, .. } => Some(
                tls_config(certs)
                    .map_err(|e| DockerError::new("TLS setup", &host.to_string(), Kind::Tls(e)))?,
            ),
            _ => None,
        };
        let config = transport::agent_config()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .max_idle_age(Duration::from_secs(50));
        Ok(Docker {
            agent: agent_for(host, tls.as_ref(), config),
            host: host.clone(),
            base: base_for(host),
            version: None,
            podman: false,
            said_health_from_inspect: false,
            cache: HashMap::new(),
            timeout,
            tls,
        })
    }

    /// A handle whose `shutdown()` interrupts requests blocked in another thread.
    pub fn agent(&self) -> Agent {
        self.agent.clone()
    }

    fn err(&self, op: &str, kind: Kind) -> DockerError {
        DockerError::new(op, &self.host.to_string(), kind)
    }

    /// GETs `path` and returns status and body (at most `limit` bytes).
    fn get(&self, op: &str, url: &str, limit: u64) -> Result<(u16, String), DockerError> {
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| self.err(op, Kind::Transport(e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_string()
            .map_err(|e| self.err(op, Kind::Transport(e)))?;
        Ok((status, body))
    }

    fn get_json<T: DeserializeOwned>(
        &mut self,
        op: &str,
        path: &str,
        limit: u64,
    ) -> Result<T, DockerError> {
        let version = self.version()?;
        let url = format!("{}{version}{path}", self.base);
        let (status, body) = self.get(op, &url, limit)?;
        if status != 200 {
            // A daemon upgraded underneath us may refuse the old version: renegotiate.
            if status == 400 && body.contains("version") {
                self.version = None;
            }
            return Err(self.err(op, Kind::Status(status, body)));
        }
        serde_json::from_str(&body).map_err(|e| self.err(op, Kind::Decode(e, body)))
    }

    /// The negotiated `/vX.Y` path prefix: the lower of the daemon's and ours.
    fn version(&mut self) -> Result<String, DockerError> {
        if let Some(v) = &self.version {
            return Ok(v.clone());
        }
        let url = format!("{}/_ping", self.base);
        let resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| self.err("ping", Kind::Transport(e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let why = match self.host {
                // What dockerd answers plain HTTP on its TLS port.
                DockerHost::Tcp(_) if status == 400 => {
                    "GET /_ping refused: a TLS port? set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"
                }
                _ => "no Docker API here (GET /_ping did not answer OK): check DOCKER_HOST",
            };
            return Err(self.err("ping", Kind::Status(status, why.into())));
        }
        let server = resp
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version);
        self.podman = resp.headers().contains_key("libpod-api-version");
        let v = match server {
            Some(s) => format!("/v{}.{}", s.min(MAX_API).0, s.min(MAX_API).1),
            // An old daemon without the header: unversioned paths mean "its own version".
            None => String::new(),
        };
        log::debug!(
            "{} API {}",
            if self.podman { "podman" } else { "docker" },
            if v.is_empty() { "unversioned" } else { &v }
        );
        self.version = Some(v.clone());
        Ok(v)
    }

    /// The static part of a newly seen container. Podman drops `--expose` with
    /// `--network host`, so for such a container without ports the image's `EXPOSE`
    /// stands in; if that is empty too, this says so once (it is cached by ID).
    fn static_of(&mut self, ins: &Inspect) -> Result<Static, DockerError> {
        let mut s = ins.static_part();
        if s.host_network && s.exposed.is_empty() && self.podman && !ins.image.is_empty() {
            s.exposed = self.image_exposed(&ins.image)?;
        }
        if s.host_network && s.exposed.is_empty() {
            let name = ins.name.trim_start_matches('/');
            if self.podman {
                log::warn!(
                    container = name;
                    "container {name} uses the host network and Podman reports no port for \
                     it (it drops --expose there): nothing to register; EXPOSE the port in \
                     the image instead"
                );
            } else {
                log::info!(
                    container = name;
                    "container {name} uses the host network and exposes no port: nothing to \
                     register"
                );
            }
        }
        Ok(s)
    }

    /// The ports an image exposes (none when the image is gone).
    fn image_exposed(&mut self, image: &str) -> Result<Vec<Port>, DockerError> {
        let path = format!("/images/{image}/json");
        match self.get_json::<ImageInspect>("inspect image", &path, INSPECT_LIMIT) {
            Ok(img) => Ok(img.exposed()),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn inspect_raw(&mut self, id: &str) -> Result<Option<Inspect>, DockerError> {
        let path = format!("/containers/{id}/json");
        match self.get_json::<Inspect>("inspect container", &path, INSPECT_LIMIT) {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the container event stream. Reads block for at most `idle` before the
    /// iterator yields `Ok(None)`, so the caller can check whether to stop.
    pub fn events(&mut self, idle: Duration) -> Result<Events, DockerError> {
        let config = transport::agent_config()
            .timeout_connect(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(idle));
        let agent = agent_for(&self.host, self.tls.as_ref(), config);
        let filters = r#"{"type":["container"]}"#;
        let version = self.version()?;
        let url = format!(
            "{}{version}/events?filters={}",
            self.base,
            url_encode(filters)
        );
        let resp = agent
            .get(&url)
            .call()
            .map_err(|e| self.err("events", Kind::Transport(e)))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.err("events", Kind::Status(status, String::new())));
        }
        let reader = Box::new(resp.into_body().into_reader()) as Box<dyn Read + Send>;
        Ok(Events::new(reader, self.host.to_string()))
    }
}

impl Source for Docker {
    /// The running (and, with dockerd, paused) containers, with inspect data for new
    /// IDs. dockerd costs one list request on a quiet pass; Podman one more inspect
    /// per running container with a healthcheck, as its list does not carry health.
    fn containers(&mut self) -> Result<Vec<Container>, SourceError> {
        let list: Vec<ListEntry> =
            self.get_json("list containers", "/containers/json", LIST_LIMIT)?;
        let live: HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        self.cache.retain(|id, _| live.contains(id.as_str()));
        let mut out = Vec::with_capacity(list.len());
        for entry in &list {
            if let Some(s) = self
                .cache
                .get(&entry.id)
                .filter(|s| !entry.needs_inspect(s))
            {
                out.push(entry.to_container(s));
                continue;
            }
            // New, or its health is only in inspect. None: gone since the list.
            let Some(fresh) = self.inspect(&entry.id)? else {
                continue;
            };
            match self.cache.get(&entry.id) {
                Some(s) if !entry.needs_inspect(s) => out.push(entry.to_container(s)),
                _ => {
                    if !self.said_health_from_inspect {
                        self.said_health_from_inspect = true;
                        log::info!(
                            "the container list carries no health status (as with Podman): \
                             containers with a healthcheck are inspected on every pass"
                        );
                    }
                    out.push(fresh);
                }
            }
        }
        Ok(out)
    }

    /// One container by ID, from a fresh inspect; None when it no longer exists.
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, SourceError> {
        let Some(ins) = self.inspect_raw(id)? else {
            return Ok(None);
        };
        let s = match self.cache.get(&ins.id) {
            Some(s) => s.clone(),
            None => {
                let s = self.static_of(&ins)?;
                self.cache.insert(ins.id.clone(), s.clone());
                s
            }
        };
        Ok(Some(ins.to_container(&s)))
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim().split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A recorded answer from `tests/fixtures`, for the unit tests of the wire types and
/// the event stream.
#[cfg(test)]
fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_url_encoding() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(
            url_encode(r#"{"a":["b"]}"#),
            "%7B%22a%22%3A%5B%22b%22%5D%7D"
        );
    }
}
