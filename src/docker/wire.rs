//! The Docker Engine API's answers (container list, container and image inspect) as
//! private serde types, turned into the service model's [`Container`] at this edge.
//! dockerd's and Podman's spellings are both read here.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::service::{Binding, Container, Health, Port};

/// Static configuration of a container, cached by ID.
#[derive(Debug, Clone)]
pub(super) struct Static {
    /// The image as the container was created from it ([`configured_image`]).
    image: String,
    env: Vec<String>,
    pub(super) exposed: Vec<Port>,
    created: (i64, u32),
    pub(super) host_network: bool,
    /// A healthcheck is configured: its live state is in the list's `Status` (dockerd)
    /// or only in inspect (Podman).
    healthcheck: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ListEntry {
    pub(super) id: String,
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
    pub(super) fn needs_inspect(&self, s: &Static) -> bool {
        s.healthcheck && self.state == "running" && list_health(&self.status).is_none()
    }

    pub(super) fn to_container(&self, s: &Static) -> Container {
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
pub(super) struct Inspect {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    created: String,
    /// The image ID (`sha256:...`).
    #[serde(default)]
    pub(super) image: String,
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
pub(super) struct ImageInspect {
    #[serde(default)]
    config: Option<ImageConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageConfig {
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

impl ImageInspect {
    /// The ports the image's `EXPOSE` names.
    pub(super) fn exposed(&self) -> Vec<Port> {
        let ports = self.config.as_ref().and_then(|c| c.exposed_ports.as_ref());
        port_keys(ports)
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
    pub(super) fn static_part(&self) -> Static {
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

    pub(super) fn to_container(&self, s: &Static) -> Container {
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::docker::fixture;

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
        assert_eq!(img.exposed(), vec![Port::parse("9998/tcp").unwrap()]);
        assert!(ins.image.starts_with("sha256:18a2a1d95c44"));
        // dockerd keeps --expose on a host-network container.
        let docker = inspect("hostnet").static_part();
        assert!(docker.host_network);
        assert_eq!(docker.exposed, vec![Port::parse("9999/tcp").unwrap()]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), (0, 0));
        assert_eq!(
            parse_time("2026-11-26T11:28:18.5852Z"),
            (1_795_692_498, 585_200_000)
        );
        assert!(parse_time("2026-11-26T11:28:18.1Z") < parse_time("2026-11-26T11:28:18.12Z"));
    }
}
