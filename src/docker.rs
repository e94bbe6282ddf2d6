//! Docker Engine API client: version negotiation, container list, inspect and events.
//!
//! The wire types (serde structs of the API) stay private here and are converted to
//! [`Container`]s at the edge. Inspect results are cached by container ID: a
//! container's configuration does not change while its ID lives, so a quiet sync costs
//! one list request and no inspect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use ureq::Agent;

use crate::cli::DockerHost;
use crate::service::{Binding, Container, Health, Port};
use crate::source::Source;
use crate::transport;

/// Newest API version this client knows; the daemon's own version caps it.
const MAX_API: (u32, u32) = (1, 47);
/// Largest response body we read (a list of many thousands of containers fits).
const BODY_LIMIT: u64 = 256 * 1024 * 1024;

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
            Kind::Transport(e) => write!(f, "{e}"),
            Kind::Status(s, body) => write!(f, "HTTP {s}: {}", snippet(body)),
            Kind::Decode(e, body) => write!(f, "cannot parse response ({e}): {}", snippet(body)),
        }
    }
}

impl std::error::Error for DockerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Transport(e) => Some(e),
            Kind::Decode(e, _) => Some(e),
            Kind::Status(..) => None,
        }
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
    env: Vec<String>,
    exposed: Vec<Port>,
    created: (i64, u32),
}

/// A client for one Docker daemon.
pub struct Docker {
    agent: Agent,
    host: DockerHost,
    base: String,
    /// `/v1.41` after negotiation; empty until then.
    version: Option<String>,
    cache: HashMap<String, Static>,
    timeout: Duration,
}

fn agent_for(host: &DockerHost, config: ureq::config::Config) -> Agent {
    match host {
        DockerHost::Unix(path) => transport::unix_agent(path.clone(), config),
        DockerHost::Tcp(_) => config.new_agent(),
    }
}

fn base_for(host: &DockerHost) -> String {
    match host {
        DockerHost::Unix(_) => format!("http://{}", transport::UNIX_HOST),
        DockerHost::Tcp(addr) => format!("http://{addr}"),
    }
}

impl Docker {
    /// A client with `timeout` for connecting and for each whole request.
    pub fn new(host: &DockerHost, timeout: Duration) -> Docker {
        let config = transport::agent_config()
            .timeout_connect(Some(timeout))
            .timeout_global(Some(timeout))
            .max_idle_age(Duration::from_secs(50))
            .build();
        Docker {
            agent: agent_for(host, config),
            host: host.clone(),
            base: base_for(host),
            version: None,
            cache: HashMap::new(),
            timeout,
        }
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

    /// GETs `path` and returns status and body.
    fn get(&self, op: &str, url: &str) -> Result<(u16, String), DockerError> {
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| self.err(op, Kind::Transport(e)))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.err(op, Kind::Transport(e)))?;
        Ok((status, body))
    }

    fn get_json<T: DeserializeOwned>(&mut self, op: &str, path: &str) -> Result<T, DockerError> {
        let version = self.version()?;
        let url = format!("{}{version}{path}", self.base);
        let (status, body) = self.get(op, &url)?;
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
            let why = "no Docker API here (GET /_ping did not answer OK): check DOCKER_HOST";
            return Err(self.err("ping", Kind::Status(status, why.into())));
        }
        let server = resp
            .headers()
            .get("api-version")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_version);
        let v = match server {
            Some(s) => format!("/v{}.{}", s.min(MAX_API).0, s.min(MAX_API).1),
            // An old daemon without the header: unversioned paths mean "its own version".
            None => String::new(),
        };
        log::debug!(
            "docker API {}",
            if v.is_empty() { "unversioned" } else { &v }
        );
        self.version = Some(v.clone());
        Ok(v)
    }

    fn inspect_raw(&mut self, id: &str) -> Result<Option<Inspect>, DockerError> {
        match self.get_json::<Inspect>("inspect container", &format!("/containers/{id}/json")) {
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
            .timeout_per_read(Some(idle))
            .build();
        let agent = agent_for(&self.host, config);
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
            endpoint: self.host.to_string(),
        })
    }
}

impl Source for Docker {
    /// The running (and paused) containers, with inspect data for new IDs.
    fn containers(&mut self) -> Result<Vec<Container>, DockerError> {
        let list: Vec<ListEntry> = self.get_json("list containers", "/containers/json")?;
        let live: HashSet<&str> = list.iter().map(|c| c.id.as_str()).collect();
        self.cache.retain(|id, _| live.contains(id.as_str()));
        let mut out = Vec::with_capacity(list.len());
        for entry in &list {
            if !self.cache.contains_key(&entry.id) {
                match self.inspect_raw(&entry.id)? {
                    Some(ins) => {
                        self.cache.insert(entry.id.clone(), ins.static_part());
                    }
                    // Gone between list and inspect: it is not running any more.
                    None => continue,
                }
            }
            out.push(entry.to_container(&self.cache[&entry.id]));
        }
        Ok(out)
    }

    /// One container by ID, from a fresh inspect; None when it no longer exists.
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError> {
        Ok(self.inspect_raw(id)?.map(|ins| {
            let s = ins.static_part();
            let c = ins.to_container(&s);
            self.cache.insert(ins.id.clone(), s);
            c
        }))
    }
}

/// A live `/events` stream.
pub struct Events {
    reader: BufReader<Box<dyn Read + Send>>,
    line: Vec<u8>,
    endpoint: String,
}

impl Events {
    /// The next event; `Ok(None)` when nothing arrived within the idle timeout; an error
    /// when the stream ended (the daemon restarted) or broke.
    pub fn next_event(&mut self) -> Result<Option<Event>, DockerError> {
        let err = |kind| DockerError {
            op: "events".into(),
            endpoint: self.endpoint.clone(),
            kind,
        };
        loop {
            match self.reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    return Err(err(Kind::Transport(ureq::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "event stream ended",
                    )))))
                }
                Ok(_) if self.line.ends_with(b"\n") => {
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
                Ok(_) => continue,
                Err(e) if is_idle_timeout(&e) => return Ok(None),
                Err(e) => return Err(err(Kind::Transport(ureq::Error::Io(e)))),
            }
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

/// Parses one line of `/events`. Reads `Action` (Docker 29 no longer sends `status`).
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
    Some(Event { action, id })
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
    image: String,
    #[serde(default)]
    ports: Vec<ListPort>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    host_config: Option<ListHostConfig>,
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
struct ListHostConfig {
    #[serde(default)]
    network_mode: String,
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

fn first_ip(nets: Option<&BTreeMap<String, Network>>) -> Option<String> {
    let nets = nets?;
    nets.get("bridge")
        .into_iter()
        .chain(nets.values())
        .map(|n| n.ip_address.clone())
        .find(|ip| !ip.is_empty())
}

impl ListEntry {
    fn to_container(&self, s: &Static) -> Container {
        let health = if self.status.contains("(healthy)") {
            Health::Healthy
        } else if self.status.contains("(unhealthy)") {
            Health::Unhealthy
        } else if self.status.contains("(health: starting)") {
            Health::Starting
        } else {
            Health::None
        };
        Container {
            id: self.id.clone(),
            name: self
                .names
                .first()
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_else(|| self.id[..12.min(self.id.len())].to_string()),
            image: self.image.clone(),
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
            ip: first_ip(
                self.network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref()),
            ),
            host_network: self
                .host_config
                .as_ref()
                .is_some_and(|h| h.network_mode == "host"),
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
    state: InspectState,
    config: InspectConfig,
    #[serde(default)]
    host_config: ListHostConfig,
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
        Static {
            env: self.config.env.clone().unwrap_or_default(),
            exposed: self
                .config
                .exposed_ports
                .iter()
                .flatten()
                .filter_map(|(k, _)| Port::parse(k))
                .collect(),
            created: parse_time(&self.created),
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
            image: self.config.image.clone(),
            created: s.created,
            running: self.state.running,
            paused: self.state.paused,
            health,
            env: s.env.clone(),
            labels: self.config.labels.clone().unwrap_or_default(),
            exposed: s.exposed.clone(),
            bindings,
            ip: first_ip(self.network_settings.networks.as_ref()),
            host_network: self.host_config.network_mode == "host",
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
        assert_eq!(c.ip.as_deref(), Some("172.17.0.2"));
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
