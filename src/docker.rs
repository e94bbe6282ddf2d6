//! Docker Engine API client: version negotiation, container list, inspect and events.
//!
//! The wire types (serde structs of the API) stay private here and are converted to
//! [`Container`]s at the edge. Inspect results are cached by container ID: a
//! container's configuration does not change while its ID lives, so a quiet sync costs
//! one list request and no inspect.
//!
//! Podman (4.3) serves the same API with gaps, filled here so callers see one engine:
//! its list has no `HostConfig` (the network mode comes from the cached inspect) and no
//! health in `Status` (a healthchecked container is inspected on each pass for its live
//! health); it drops `--expose` with `--network host` (the image's `EXPOSE` is read
//! instead); its events say `remove` for `destroy` and a bare `health_status`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use ureq::config::ConfigBuilder;
use ureq::tls::TlsConfig;
use ureq::typestate::AgentScope;
use ureq::Agent;

use crate::cli::DockerHost;
use crate::service::{Binding, Container, Health, Port};
use crate::source::Source;
use crate::transport;

/// Newest API version this client knows; the daemon's own version caps it.
const MAX_API: (u32, u32) = (1, 47);
/// Largest container list read: about 1.6 KiB per container (the recorded fixtures),
/// a few KiB with many labels and networks, so 10,000 containers fit with room.
const LIST_LIMIT: u64 = 64 * 1024 * 1024;
/// Largest inspect answer (container or image) read: about 8 KiB each as recorded.
const INSPECT_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest event line kept: an event carries the container's labels; under 1 KiB as
/// recorded. A longer line is skipped (and logged), and the stream goes on.
pub const EVENT_LINE_LIMIT: usize = 64 * 1024;

/// Why a Docker request failed, with the operation and the endpoint.
#[derive(Debug)]
pub struct DockerError {
    op: String,
    endpoint: String,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Transport(ureq::Error),
    Status(u16, String),
    Decode(serde_json::Error, String),
    /// The TLS files in DOCKER_CERT_PATH could not be used.
    Tls(String),
}

impl DockerError {
    /// HTTP status of an answered request, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Status(s, _) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker {} at {}: ", self.op, self.endpoint)?;
        match &self.kind {
            Kind::Transport(ureq::Error::BodyExceedsLimit(n)) => {
                write!(
                    f,
                    "the answer is larger than {} MiB, the cap for it",
                    n >> 20
                )
            }
            Kind::Transport(e) => write!(f, "{e}{}", tls_hint(&e.to_string())),
            Kind::Status(s, body) => write!(f, "HTTP {s}: {}", snippet(body)),
            Kind::Tls(why) => f.write_str(why),
            Kind::Decode(e, body) => write!(f, "cannot parse response ({e}): {}", snippet(body)),
        }
    }
}

impl std::error::Error for DockerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Transport(e) => Some(e),
            Kind::Decode(e, _) => Some(e),
            Kind::Status(..) | Kind::Tls(_) => None,
        }
    }
}

/// What a TLS failure means for DOCKER_CERT_PATH (rustls says it in its own words).
fn tls_hint(text: &str) -> &'static str {
    if text.contains("UnknownIssuer") {
        " (the daemon's certificate is not signed by the CA in DOCKER_CERT_PATH's ca.pem)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " (the daemon's certificate does not name the host in DOCKER_HOST)"
    } else if text.contains("Expired") || text.contains("expired") {
        " (the daemon's certificate has expired, or this machine's clock is wrong)"
    } else if ["CertificateRequired", "BadCertificate", "UnknownCA"]
        .iter()
        .any(|t| text.contains(t))
    {
        " (the daemon wants a client certificate it trusts: cert.pem and key.pem in \
         DOCKER_CERT_PATH)"
    } else {
        ""
    }
}

fn snippet(body: &str) -> String {
    let one_line = body.trim().replace('\n', " ");
    if one_line.len() > 300 {
        let mut end = 300;
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &one_line[..end])
    } else {
        one_line
    }
}

/// An error as a failed connection produces, for tests of callers.
#[cfg(test)]
pub fn test_error() -> DockerError {
    DockerError {
        op: "list containers".into(),
        endpoint: "unix:///nonexistent".into(),
        kind: Kind::Transport(ureq::Error::Io(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        ))),
    }
}

/// What a container event means for the registrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub action: String,
    pub id: String,
}

/// Static configuration of a container, cached by ID.
#[derive(Debug, Clone)]
struct Static {
    /// The image as the container was created from it ([`configured_image`]).
    image: String,
    env: Vec<String>,
    exposed: Vec<Port>,
    created: (i64, u32),
    host_network: bool,
    /// A healthcheck is configured: its live state is in the list's `Status` (dockerd)
    /// or only in inspect (Podman).
    healthcheck: bool,
}

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
            DockerHost::Tls { certs, .. } => Some(tls_config(certs).map_err(|e| DockerError {
                op: "TLS setup".into(),
                endpoint: host.to_string(),
                kind: Kind::Tls(e),
            })?),
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
        DockerError {
            op: op.to_string(),
            endpoint: self.host.to_string(),
            kind,
        }
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
            Ok(img) => Ok(img.config.map(|c| c.exposed()).unwrap_or_default()),
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
        let reader =
            BufReader::new(Box::new(resp.into_body().into_reader()) as Box<dyn Read + Send>);
        Ok(Events {
            reader,
            line: Vec::new(),
            skipping: false,
            endpoint: self.host.to_string(),
        })
    }
}

impl Source for Docker {
    /// The running (and, with dockerd, paused) containers, with inspect data for new
    /// IDs. dockerd costs one list request on a quiet pass; Podman one more inspect
    /// per running container with a healthcheck, as its list does not carry health.
    fn containers(&mut self) -> Result<Vec<Container>, DockerError> {
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
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError> {
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

/// A live `/events` stream.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
    /// The line read so far (never more than [`EVENT_LINE_LIMIT`] bytes).
    line: Vec<u8>,
    /// The current line outgrew the limit: drop its bytes up to the next newline.
    skipping: bool,
    endpoint: String,
}

impl Events {
    /// The next event; `Ok(None)` when nothing arrived within the idle timeout; an error
    /// when the stream ended (the daemon restarted) or broke. A line longer than
    /// [`EVENT_LINE_LIMIT`] is skipped with a warning; the stream stays usable.
    pub fn next_event(&mut self) -> Result<Option<Event>, DockerError> {
        let err = |kind| DockerError {
            op: "events".into(),
            endpoint: self.endpoint.clone(),
            kind,
        };
        loop {
            match next_line(&mut self.reader, &mut self.line, &mut self.skipping) {
                Ok(Line::Eof) => {
                    return Err(err(Kind::Transport(ureq::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "event stream ended",
                    )))))
                }
                Ok(Line::TooLong) => log::warn!(
                    "docker events at {}: skipped an event line longer than {} KiB",
                    self.endpoint,
                    EVENT_LINE_LIMIT / 1024
                ),
                Ok(Line::Complete) => {
                    let line = std::mem::take(&mut self.line);
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    return match parse_event(&line) {
                        Some(ev) => Ok(Some(ev)),
                        None => {
                            log::debug!("ignoring event line: {}", String::from_utf8_lossy(&line));
                            continue;
                        }
                    };
                }
                Err(e) if is_idle_timeout(&e) => return Ok(None),
                Err(e) => return Err(err(Kind::Transport(ureq::Error::Io(e)))),
            }
        }
    }
}

/// What [`next_line`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// `line` holds a whole line, newline included.
    Complete,
    /// A line outgrew [`EVENT_LINE_LIMIT`]: it is dropped (said once per line).
    TooLong,
    Eof,
}

/// Reads up to the next newline into `line`, holding at most [`EVENT_LINE_LIMIT`]
/// bytes. A partial line survives an error (the idle timeout) and is continued by the
/// next call; `skipping` carries "this line is being dropped" across calls likewise.
fn next_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    skipping: &mut bool,
) -> std::io::Result<Line> {
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (n, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let mut too_long = false;
        if !*skipping {
            if line.len() + n > EVENT_LINE_LIMIT {
                line.clear();
                *skipping = true;
                too_long = true;
            } else {
                line.extend_from_slice(&buf[..n]);
            }
        }
        reader.consume(n);
        if done {
            let was_skipping = std::mem::replace(skipping, false);
            if !was_skipping {
                return Ok(Line::Complete);
            }
        }
        if too_long {
            return Ok(Line::TooLong);
        }
    }
}

fn is_idle_timeout(e: &std::io::Error) -> bool {
    // ureq reports its per-read timeout as an io::Error wrapping ureq::Error::Timeout.
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// What an event action means for the registrator, the same for dockerd and Podman.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// It may serve now (`start`, `unpause`, `restart`): inspect it.
    Up,
    /// It stopped serving (`die`, `stop`, `destroy`, `pause`). Podman sometimes sends
    /// only `die` for a stop, so any one of them must be enough.
    Down,
    /// Its health changed: inspect it. dockerd names the new state
    /// (`health_status: healthy`); Podman sends a bare `health_status` whose
    /// `HealthStatus` field lags one check behind, so only inspect is to be trusted.
    Health,
    /// Nothing that changes what is registered (`create`, `kill`, and Podman's `init`,
    /// `cleanup`, `exec`, `exec_died`, ...).
    Other,
}

/// An action in dockerd's words: Podman says `remove` where dockerd says `destroy`.
pub fn normalize_action(action: &str) -> &str {
    match action {
        "remove" => "destroy",
        other => other,
    }
}

/// The kind of a (normalized or not) event action.
pub fn classify(action: &str) -> EventKind {
    match normalize_action(action) {
        "start" | "unpause" | "restart" => EventKind::Up,
        "die" | "stop" | "destroy" | "pause" => EventKind::Down,
        a if a == "health_status" || a.starts_with("health_status:") => EventKind::Health,
        _ => EventKind::Other,
    }
}

/// Parses one line of `/events`. Reads `Action` (Docker 29 no longer sends `status`)
/// and returns it in dockerd's words ([`normalize_action`]).
pub fn parse_event(line: &[u8]) -> Option<Event> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Type", default)]
        kind: String,
        #[serde(rename = "Action", default)]
        action: String,
        #[serde(default)]
        status: String,
        #[serde(rename = "Actor", default)]
        actor: Option<Actor>,
        #[serde(default)]
        id: String,
    }
    #[derive(Deserialize)]
    struct Actor {
        #[serde(rename = "ID", default)]
        id: String,
    }
    let w: Wire = serde_json::from_slice(line).ok()?;
    if !w.kind.is_empty() && w.kind != "container" {
        return None;
    }
    let action = if w.action.is_empty() {
        w.status
    } else {
        w.action
    };
    let id = w
        .actor
        .map(|a| a.id)
        .filter(|s| !s.is_empty())
        .unwrap_or(w.id);
    if action.is_empty() || id.is_empty() {
        return None;
    }
    Some(Event {
        action: normalize_action(&action).to_string(),
        id,
    })
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

/// Docker's RFC 3339 timestamps (`2026-11-26T11:28:18.585202564Z`) as (epoch s, ns).
fn parse_time(s: &str) -> (i64, u32) {
    let parse = || -> Option<(i64, u32)> {
        let (date, time) = s.split_once('T')?;
        let mut d = date.split('-').map(|x| x.parse::<i64>());
        let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
        let time = time.trim_end_matches('Z');
        let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
        let mut t = hms.split(':').map(|x| x.parse::<i64>());
        let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
        let digits: String = frac
            .chars()
            .take_while(char::is_ascii_digit)
            .take(9)
            .collect();
        let nanos = if digits.is_empty() {
            0
        } else {
            format!("{digits:0<9}").parse().ok()?
        };
        // Days from civil date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some((days * 86_400 + hh * 3600 + mm * 60 + ss, nanos))
    };
    parse().unwrap_or((0, 0))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    ports: Vec<ListPort>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    network_settings: Option<Networks>,
}

#[derive(Deserialize)]
struct ListPort {
    #[serde(rename = "IP", default)]
    ip: Option<String>,
    #[serde(rename = "PrivatePort")]
    private_port: u16,
    #[serde(rename = "PublicPort", default)]
    public_port: Option<u16>,
    #[serde(rename = "Type", default)]
    kind: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectHostConfig {
    #[serde(default)]
    network_mode: String,
    #[serde(default)]
    port_bindings: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Networks {
    #[serde(default)]
    networks: Option<BTreeMap<String, Network>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Network {
    #[serde(rename = "IPAddress", default)]
    ip_address: String,
}

/// Each network's address, for those that give the container one (the service model
/// chooses among them).
fn addresses(nets: Option<&BTreeMap<String, Network>>) -> BTreeMap<String, String> {
    nets.into_iter()
        .flatten()
        .filter(|(_, n)| !n.ip_address.is_empty())
        .map(|(name, n)| (name.clone(), n.ip_address.clone()))
        .collect()
}

/// The health marker in a list entry's `Status` (`Up 5 seconds (healthy)`); dockerd
/// writes one for every running container with a healthcheck, Podman never does.
fn list_health(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

impl ListEntry {
    /// Whether the list cannot tell this container's health, so only a fresh inspect
    /// can: a running container with a healthcheck but no marker (Podman's list).
    fn needs_inspect(&self, s: &Static) -> bool {
        s.healthcheck && self.state == "running" && list_health(&self.status).is_none()
    }

    fn to_container(&self, s: &Static) -> Container {
        let health = list_health(&self.status).unwrap_or(Health::None);
        Container {
            id: self.id.clone(),
            name: self
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| self.id[..12.min(self.id.len())].to_string()),
            // Not the list's `Image`: that turns into the image ID once the tag moves.
            image: s.image.clone(),
            created: s.created,
            running: self.state == "running" || self.state == "paused",
            paused: self.state == "paused",
            health,
            env: s.env.clone(),
            labels: self.labels.clone().unwrap_or_default(),
            exposed: s.exposed.clone(),
            bindings: self
                .ports
                .iter()
                .filter_map(|p| {
                    Some(Binding {
                        port: Port {
                            number: p.private_port,
                            proto: crate::service::Proto::parse(&p.kind)?,
                        },
                        host_ip: p.ip.clone().unwrap_or_default(),
                        host_port: p.public_port.filter(|&n| n > 0)?,
                    })
                })
                .collect(),
            networks: addresses(
                self.network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref()),
            ),
            // Podman's list has no HostConfig: the mode comes from inspect.
            host_network: s.host_network,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    created: String,
    /// The image ID (`sha256:...`).
    #[serde(default)]
    image: String,
    state: InspectState,
    config: InspectConfig,
    #[serde(default)]
    host_config: InspectHostConfig,
    #[serde(default)]
    network_settings: InspectNetwork,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    #[serde(default)]
    running: bool,
    #[serde(default)]
    paused: bool,
    #[serde(default)]
    health: Option<InspectHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    #[serde(default)]
    status: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    image: String,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    healthcheck: Option<InspectHealthcheck>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealthcheck {
    #[serde(default)]
    test: Option<Vec<String>>,
}

impl InspectHealthcheck {
    /// `{"Test": ["NONE"]}` (`--no-healthcheck`) and an empty test disable the check.
    fn enabled(&self) -> bool {
        self.test
            .as_ref()
            .and_then(|t| t.first())
            .is_some_and(|first| first != "NONE")
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageInspect {
    #[serde(default)]
    config: Option<ImageConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageConfig {
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

impl ImageConfig {
    fn exposed(&self) -> Vec<Port> {
        port_keys(self.exposed_ports.as_ref())
    }
}

/// The image a container was created from, as its configuration names it
/// (`Config.Image`, `local/app:1`): it stays when the tag moves to another image. A
/// container created from an image ID (`sha256:...`, or a prefix of the hex digits)
/// gets the full ID `id`, which names no service.
fn configured_image(configured: &str, id: &str) -> String {
    let given = configured.strip_prefix("sha256:").unwrap_or(configured);
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    // Also true for an empty `given`: then the ID is all there is.
    if hex.starts_with(given) {
        id.to_string()
    } else {
        configured.to_string()
    }
}

/// The ports named by the keys of an `ExposedPorts`/`PortBindings` map (`80/tcp`).
fn port_keys(map: Option<&BTreeMap<String, serde_json::Value>>) -> Vec<Port> {
    map.into_iter()
        .flatten()
        .filter_map(|(k, _)| Port::parse(k))
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct InspectNetwork {
    #[serde(default)]
    ports: Option<BTreeMap<String, Option<Vec<InspectBinding>>>>,
    #[serde(default)]
    networks: Option<BTreeMap<String, Network>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectBinding {
    #[serde(default)]
    host_ip: String,
    #[serde(default)]
    host_port: String,
}

impl Inspect {
    fn static_part(&self) -> Static {
        // Ports given to -p count as exposed too (dockerd lists them in both places).
        let mut exposed = port_keys(self.config.exposed_ports.as_ref());
        for port in port_keys(self.host_config.port_bindings.as_ref()) {
            if !exposed.contains(&port) {
                exposed.push(port);
            }
        }
        Static {
            image: configured_image(&self.config.image, &self.image),
            env: self.config.env.clone().unwrap_or_default(),
            exposed,
            created: parse_time(&self.created),
            host_network: self.host_config.network_mode == "host",
            healthcheck: self
                .config
                .healthcheck
                .as_ref()
                .is_some_and(InspectHealthcheck::enabled),
        }
    }

    fn to_container(&self, s: &Static) -> Container {
        let health = match self.state.health.as_ref().map(|h| h.status.as_str()) {
            None | Some("") | Some("none") => Health::None,
            Some("healthy") => Health::Healthy,
            Some("unhealthy") => Health::Unhealthy,
            Some(_) => Health::Starting,
        };
        let mut bindings = Vec::new();
        for (port, list) in self.network_settings.ports.iter().flatten() {
            let Some(port) = Port::parse(port) else {
                continue;
            };
            for b in list.iter().flatten() {
                if let Ok(host_port @ 1..) = b.host_port.parse::<u16>() {
                    bindings.push(Binding {
                        port,
                        host_ip: b.host_ip.clone(),
                        host_port,
                    });
                }
            }
        }
        Container {
            id: self.id.clone(),
            name: self.name.trim_start_matches('/').to_string(),
            image: s.image.clone(),
            created: s.created,
            running: self.state.running,
            paused: self.state.paused,
            health,
            env: s.env.clone(),
            labels: self.config.labels.clone().unwrap_or_default(),
            exposed: s.exposed.clone(),
            bindings,
            networks: addresses(self.network_settings.networks.as_ref()),
            host_network: s.host_network,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn inspect(name: &str) -> Inspect {
        serde_json::from_str(&fixture(&format!("inspect_{name}.json"))).unwrap()
    }

    #[test]
    fn list_and_inspect_agree_on_recorded_containers() {
        let list: Vec<ListEntry> = serde_json::from_str(&fixture("containers_list.json")).unwrap();
        assert_eq!(list.len(), 4);
        for entry in &list {
            let name = entry.names[0].trim_start_matches('/');
            let ins = inspect(name);
            let s = ins.static_part();
            let mut from_list = entry.to_container(&s);
            let mut from_inspect = ins.to_container(&s);
            // The list reports the image as given; bindings come in another order.
            for c in [&mut from_list, &mut from_inspect] {
                c.bindings
                    .sort_by(|a, b| (a.port, &a.host_ip).cmp(&(b.port, &b.host_ip)));
            }
            assert_eq!(from_list, from_inspect, "{name}");
        }
    }

    #[test]
    fn the_image_as_configured_or_its_id() {
        let id = "sha256:0dee4c1501b61f460285a553e319b6a54ce84dc680648f9003f749f1813a86da";
        for (configured, want) in [
            ("local/app:1", "local/app:1"),
            (
                "localhost/local/busybox:latest",
                "localhost/local/busybox:latest",
            ),
            ("0dee4c1501b6", id),
            ("0dee", id),
            (id, id),
            ("sha256:0dee4c", id),
            ("", id),
            // Hex digits that are not this image's ID are a name.
            ("cafe", "cafe"),
        ] {
            assert_eq!(configured_image(configured, id), want, "{configured}");
        }
    }

    #[test]
    fn recorded_container_fields() {
        let ins = inspect("web.0");
        let c = ins.to_container(&ins.static_part());
        assert_eq!(c.name, "web.0");
        assert!(c.env.contains(&"SERVICE_NAME=web".to_string()));
        assert_eq!(
            c.labels.get("SERVICE_443_IGNORE").map(String::as_str),
            Some("1")
        );
        assert!(c
            .bindings
            .iter()
            .any(|b| b.host_ip == "127.0.0.1" && b.host_port == 18080 && b.port.number == 80));
        assert_eq!(c.created, (1_795_692_498, 585_202_564));
        let bridge = BTreeMap::from([("bridge".to_string(), "172.17.0.2".to_string())]);
        assert_eq!(c.networks, bridge);
        let h = inspect("hostnet");
        let c = h.to_container(&h.static_part());
        assert!(c.host_network && c.bindings.is_empty());
        assert_eq!(c.exposed, vec![Port::parse("9999/tcp").unwrap()]);
        let hc = inspect("hc");
        assert_eq!(hc.to_container(&hc.static_part()).health, Health::Healthy);
    }

    #[test]
    fn events_read_action_not_status() {
        let docker29 = br#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"x"}},"scope":"local","time":1,"timeNano":1}"#;
        assert_eq!(
            parse_event(docker29),
            Some(Event {
                action: "start".into(),
                id: "abc".into()
            })
        );
        let old = br#"{"status":"die","id":"abc","from":"img","Type":"container","Action":"die","Actor":{"ID":"abc"}}"#;
        assert_eq!(parse_event(old).unwrap().action, "die");
        let health =
            br#"{"Type":"container","Action":"health_status: healthy","Actor":{"ID":"abc"}}"#;
        assert_eq!(
            parse_event(health).unwrap().action,
            "health_status: healthy"
        );
        assert_eq!(
            parse_event(br#"{"Type":"network","Action":"connect","Actor":{"ID":"n"}}"#),
            None
        );
        assert_eq!(parse_event(b"garbage"), None);
    }

    fn podman_inspect(name: &str) -> Inspect {
        serde_json::from_str(&fixture(&format!("podman/inspect_{name}.json"))).unwrap()
    }

    fn podman_list() -> Vec<ListEntry> {
        serde_json::from_str(&fixture("podman/containers_list.json")).unwrap()
    }

    /// What `Docker::containers` makes of one list entry, given its inspect.
    fn listed(entry: &ListEntry, ins: &Inspect) -> (Container, bool) {
        let s = ins.static_part();
        if entry.needs_inspect(&s) {
            (ins.to_container(&s), true)
        } else {
            (entry.to_container(&s), false)
        }
    }

    #[test]
    fn dockerd_list_needs_no_inspect_for_health() {
        let list: Vec<ListEntry> = serde_json::from_str(&fixture("containers_list.json")).unwrap();
        for entry in &list {
            let ins = inspect(entry.names[0].trim_start_matches('/'));
            assert!(
                !entry.needs_inspect(&ins.static_part()),
                "{:?}",
                entry.names
            );
        }
        assert!(inspect("hc").static_part().healthcheck);
        assert!(!inspect("web.0").static_part().healthcheck);
    }

    #[test]
    fn podman_containers_from_list_and_inspect() {
        let list = podman_list();
        let names: Vec<&str> = list.iter().map(|e| e.names[0].as_str()).collect();
        // The paused `hc-new` is left out of Podman's list.
        assert_eq!(names, ["/hostnet-img", "/web", "/hc-ok", "/hc", "/hostnet"]);
        let web = Port::parse("80/tcp").unwrap();
        // name, inspected on every pass, health, host network, published (port, host port)
        let cases = [
            ("web", false, Health::None, false, Some((80, 18301))),
            ("hc", true, Health::Unhealthy, false, Some((80, 18302))),
            ("hc-ok", true, Health::Healthy, false, Some((80, 18303))),
            ("hostnet", false, Health::None, true, None),
            ("hostnet-img", false, Health::None, true, None),
        ];
        for (name, inspected, health, host_network, published) in cases {
            let entry = list
                .iter()
                .find(|e| e.names[0] == format!("/{name}"))
                .unwrap();
            let ins = podman_inspect(name);
            let (c, was_inspected) = listed(entry, &ins);
            assert_eq!(was_inspected, inspected, "{name}");
            assert_eq!(c.name, name);
            assert_eq!(c.health, health, "{name}");
            assert_eq!(c.host_network, host_network, "{name}");
            assert!(c.running && !c.paused, "{name}");
            assert!(c.bindings.len() <= 1, "{name}");
            let got = c.bindings.first().map(|b| (b.port.number, b.host_port));
            assert_eq!(got, published, "{name}");
            assert!(c.bindings.iter().all(|b| b.host_ip == "127.0.0.1"));
            if !host_network {
                assert_eq!(c.exposed, vec![web], "{name}");
            }
            // Apart from health, the list and inspect tell the same story.
            let mut from_list = entry.to_container(&ins.static_part());
            from_list.health = c.health;
            assert_eq!(from_list, ins.to_container(&ins.static_part()), "{name}");
        }
        let c = podman_inspect("web").to_container(&podman_inspect("web").static_part());
        assert_eq!(c.image, "localhost/local/busybox:latest");
        assert_eq!(crate::service::image_base(&c.image), "busybox");
        assert!(c.env.contains(&"SERVICE_NAME=web".to_string()));
        assert!(
            c.networks.is_empty(),
            "slirp4netns gives the container no address of its own"
        );
    }

    #[test]
    fn podman_health_comes_from_inspect() {
        // (name, State.Health.Status as recorded, health)
        for (name, status, health) in [
            ("web", "", Health::None),
            ("hostnet", "", Health::None),
            ("hc", "unhealthy", Health::Unhealthy),
            ("hc-ok", "healthy", Health::Healthy),
            ("hc-new", "starting", Health::Starting),
        ] {
            let ins = podman_inspect(name);
            let recorded = ins.state.health.as_ref().map(|h| h.status.as_str());
            assert_eq!(recorded, Some(status), "{name}");
            assert_eq!(
                ins.to_container(&ins.static_part()).health,
                health,
                "{name}"
            );
            assert_eq!(ins.static_part().healthcheck, !status.is_empty(), "{name}");
        }
        let paused = podman_inspect("hc-new");
        let c = paused.to_container(&paused.static_part());
        assert!(c.paused && c.running);
        for (status, health) in [
            ("Up 5 seconds (healthy)", Some(Health::Healthy)),
            ("Up 5 seconds (unhealthy)", Some(Health::Unhealthy)),
            ("Up 1 second (health: starting)", Some(Health::Starting)),
            ("Up 5 seconds", None),
            ("Up 5 seconds (Paused)", None),
        ] {
            assert_eq!(list_health(status), health, "{status}");
        }
    }

    #[test]
    fn podman_host_network_ports() {
        // Podman drops `--expose 9999` with `--network host`: nothing is left of it.
        let ins = podman_inspect("hostnet");
        assert!(ins.config.exposed_ports.is_none());
        let s = ins.static_part();
        assert!(s.host_network && s.exposed.is_empty());
        // The image's EXPOSE survives in the image, which is where it is read from.
        let ins = podman_inspect("hostnet-img");
        assert!(ins.static_part().exposed.is_empty());
        let img: ImageInspect =
            serde_json::from_str(&fixture("podman/image_busybox-expose.json")).unwrap();
        assert_eq!(
            img.config.map(|c| c.exposed()),
            Some(vec![Port::parse("9998/tcp").unwrap()])
        );
        assert!(ins.image.starts_with("sha256:18a2a1d95c44"));
        // dockerd keeps --expose on a host-network container.
        let docker = inspect("hostnet").static_part();
        assert!(docker.host_network);
        assert_eq!(docker.exposed, vec![Port::parse("9999/tcp").unwrap()]);
    }

    #[test]
    fn event_actions_in_one_vocabulary() {
        for (action, normalized, kind) in [
            ("start", "start", EventKind::Up),
            ("unpause", "unpause", EventKind::Up),
            ("restart", "restart", EventKind::Up),
            ("die", "die", EventKind::Down),
            ("stop", "stop", EventKind::Down),
            ("pause", "pause", EventKind::Down),
            ("destroy", "destroy", EventKind::Down),
            ("remove", "destroy", EventKind::Down),
            ("health_status", "health_status", EventKind::Health),
            (
                "health_status: healthy",
                "health_status: healthy",
                EventKind::Health,
            ),
            (
                "health_status: unhealthy",
                "health_status: unhealthy",
                EventKind::Health,
            ),
            ("health_statusx", "health_statusx", EventKind::Other),
            ("create", "create", EventKind::Other),
            ("kill", "kill", EventKind::Other),
            ("init", "init", EventKind::Other),
            ("cleanup", "cleanup", EventKind::Other),
            ("exec", "exec", EventKind::Other),
            ("exec_died", "exec_died", EventKind::Other),
            ("exec_start: sh", "exec_start: sh", EventKind::Other),
        ] {
            assert_eq!(normalize_action(action), normalized, "{action}");
            assert_eq!(classify(action), kind, "{action}");
        }
    }

    #[test]
    fn podman_events_recorded() {
        let text = fixture("podman/events.jsonl");
        let events: Vec<Event> = text
            .lines()
            .map(|l| parse_event(l.as_bytes()).unwrap())
            .collect();
        assert!(events.iter().all(|e| e.id.starts_with("0d5f66530ab5")));
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        // run, two health checks (one exec between), pause, unpause, restart, stop,
        // start, kill, rm -f.
        assert_eq!(
            actions,
            [
                "create",
                "init",
                "start",
                "health_status",
                "exec_died",
                "exec",
                "exec_died",
                "health_status",
                "exec_died",
                "pause",
                "unpause",
                "restart",
                "stop",
                "die",
                "init",
                "start",
                "die",
                "cleanup",
                "init",
                "start",
                "kill",
                "die",
                "destroy",
            ]
        );
        let kinds: Vec<EventKind> = actions.iter().map(|a| classify(a)).collect();
        assert_eq!(kinds.iter().filter(|k| **k == EventKind::Health).count(), 2);
        assert_eq!(kinds.last(), Some(&EventKind::Down));
    }

    /// A reader that plays a script: chunks of bytes, and errors between them.
    struct Script(std::collections::VecDeque<std::io::Result<Vec<u8>>>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            match self.0.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(out.len());
                    out[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.0.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    #[test]
    fn event_lines_are_bounded_and_survive_timeouts() {
        use std::io::ErrorKind::{Interrupted, TimedOut};
        let fail = |kind| Err(std::io::Error::from(kind));
        let long = vec![b'x'; EVENT_LINE_LIMIT * 3];
        let mut exact = vec![b'y'; EVENT_LINE_LIMIT - 1];
        exact.push(b'\n');
        let script = Script(
            vec![
                Ok(b"{\"a\":".to_vec()),
                fail(TimedOut),
                Ok(b"1}\n{\"b\"".to_vec()),
                Ok(b":2}\n".to_vec()),
                Ok(long.clone()),
                fail(TimedOut),
                Ok(long.clone()),
                Ok(b"\nnext\n".to_vec()),
                Ok(long),
                Ok(b"\n".to_vec()),
                Ok(exact.clone()),
                fail(Interrupted),
                Ok(b"last".to_vec()),
            ]
            .into(),
        );
        let mut reader = BufReader::with_capacity(4096, script);
        let (mut line, mut skipping) = (Vec::new(), false);
        let mut got = Vec::new();
        loop {
            match next_line(&mut reader, &mut line, &mut skipping) {
                Ok(Line::Complete) => {
                    assert!(line.len() <= EVENT_LINE_LIMIT);
                    got.push(String::from_utf8_lossy(&std::mem::take(&mut line)).into_owned());
                }
                Ok(Line::TooLong) => got.push("<too long>".into()),
                Ok(Line::Eof) => break,
                Err(e) => got.push(format!("<{:?}>", e.kind())),
            }
            assert!(
                line.capacity() <= 2 * EVENT_LINE_LIMIT,
                "{}",
                line.capacity()
            );
        }
        let exact = String::from_utf8(exact).unwrap();
        assert_eq!(
            got,
            [
                "<TimedOut>",
                "{\"a\":1}\n",
                "{\"b\":2}\n",
                "<too long>",
                "<TimedOut>",
                "next\n",
                "<too long>",
                &exact,
            ]
        );
        // The unterminated tail stays in `line`: an ended stream reports Eof.
        assert_eq!(line, b"last");
    }

    #[test]
    fn times_and_versions() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), (0, 0));
        assert_eq!(
            parse_time("2026-11-26T11:28:18.5852Z"),
            (1_795_692_498, 585_200_000)
        );
        assert!(parse_time("2026-11-26T11:28:18.1Z") < parse_time("2026-11-26T11:28:18.12Z"));
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(
            url_encode(r#"{"a":["b"]}"#),
            "%7B%22a%22%3A%5B%22b%22%5D%7D"
        );
    }
}
