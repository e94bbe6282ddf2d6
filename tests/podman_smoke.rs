//! The registrator against a real Podman (4.3, rootful) serving the Docker API: a
//! published port, host-network containers and healthchecks, once and by events.
//!
//! Needs etcd (tests/daemons.sh) and Podman (tests/podman.sh); skipped without Podman:
//!     tests/daemons.sh run tests/podman.sh run cargo test --test podman_smoke

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The Podman socket as a DOCKER_HOST, when tests/podman.sh set one up (else the test
/// says it is skipped).
fn podman_host() -> Option<String> {
    Engine::podman().map(Engine::host)
}

fn podman(args: &[&str]) -> String {
    run(Command::new("podman").args(args))
}

/// A Podman container, removed when dropped.
struct Pod {
    name: String,
}

impl Pod {
    /// `podman run -d --init --pull never --name <name> <args...> <image> <cmd...>`.
    fn run(name: &str, args: &[&str], image: &str, cmd: &[&str]) -> Pod {
        let mut all = vec!["run", "-d", "--init", "--pull", "never", "--name", name];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(cmd);
        podman(&all);
        Pod {
            name: name.to_string(),
        }
    }

    /// A busybox httpd on port 80 published on 127.0.0.1:`port` through slirp4netns
    /// (no bridge, no iptables).
    fn httpd(name: &str, port: u16, args: &[&str]) -> Pod {
        let publish = format!("127.0.0.1:{port}:80");
        let mut all = vec!["--network", "slirp4netns", "-p", &publish];
        all.extend_from_slice(args);
        Pod::run(
            name,
            &all,
            &image(),
            &["httpd", "-f", "-p", "80", "-h", "/www"],
        )
    }

    /// Runs the healthcheck once (Podman runs them from systemd timers, absent here);
    /// returns whether it passed.
    fn check_health(&self) -> bool {
        Command::new("podman")
            .args(["healthcheck", "run", &self.name])
            .output()
            .expect("podman healthcheck run")
            .status
            .success()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

fn image() -> String {
    std::env::var("REG_PODMAN_IMAGE").unwrap_or_else(|_| "local/busybox:latest".into())
}

/// A local image that EXPOSEs `port` (Podman keeps an image's EXPOSE for a
/// host-network container, but drops `--expose`). Removed when dropped.
struct ExposingImage(String);

impl ExposingImage {
    fn new(port: u16) -> ExposingImage {
        let name = format!("localhost/{}:latest", unique("expose"));
        let tmp = unique("commit");
        podman(&[
            "create",
            "--pull",
            "never",
            "--name",
            &tmp,
            &image(),
            "true",
        ]);
        let expose = format!("EXPOSE {port}");
        podman(&["commit", "-q", "-c", &expose, &tmp, &name]);
        podman(&["rm", &tmp]);
        ExposingImage(name)
    }
}

impl Drop for ExposingImage {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}

/// The registrator pointed at Podman, with `--ip 127.0.0.1` (no DNS for made-up hosts).
fn registrator_on(host: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(["--ip", "127.0.0.1"])
        .args(args)
        .env("DOCKER_HOST", host)
        .env("RUST_LOG", "info");
    c
}

fn port_key(p: &str, svc: &str, node: &str, name: &str, port: u16) -> Option<String> {
    keys_with(p, name)
        .get(&format!("/{svc}/{node}:{name}:{port}/port"))
        .cloned()
}

#[test]
fn once_registers_published_host_network_and_healthy_containers_only() {
    let Some(host) = podman_host() else { return };
    let p = prefix("podman");
    let node = unique("node");
    let (web_port, hn_port) = (free_port(), free_port());

    let web = Pod::httpd(&unique("web"), web_port, &["-e", "SERVICE_NAME=web"]);
    let img = ExposingImage::new(hn_port);
    let listen = format!("127.0.0.1:{hn_port}");
    let hostnet = Pod::run(
        &unique("hostnet"),
        &["--network", "host", "-e", "SERVICE_NAME=hn"],
        &img.0,
        &["httpd", "-f", "-p", &listen, "-h", "/www"],
    );
    let dropped = Pod::run(
        &unique("expose"),
        &[
            "--network",
            "host",
            "--expose",
            "9999",
            "-e",
            "SERVICE_NAME=hx",
        ],
        &image(),
        &["sleep", "600"],
    );
    let health = [
        "--health-cmd",
        "test -e /www/index.html",
        "--health-retries",
        "1",
    ];
    let sick_health = [
        "--health-cmd",
        "test -e /nonexistent",
        "--health-retries",
        "1",
    ];
    let fine_port = free_port();
    let mut args = vec!["-e", "SERVICE_NAME=fine"];
    args.extend_from_slice(&health);
    let fine = Pod::httpd(&unique("fine"), fine_port, &args);
    let mut args = vec!["-e", "SERVICE_NAME=sick"];
    args.extend_from_slice(&sick_health);
    let sick = Pod::httpd(&unique("sick"), free_port(), &args);
    assert!(fine.check_health());
    assert!(!sick.check_health());

    let out = registrator_on(&host, &["--once", "--hostname", &node, &uri(&p)])
        .output()
        .expect("run registrator");
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");

    let wp = port_key(&p, "web", &node, &web.name, 80);
    assert_eq!(wp, Some(web_port.to_string()), "{:?}\n{log}", etcd_get(&p));
    let hn = port_key(&p, "hn", &node, &hostnet.name, hn_port);
    assert_eq!(hn, Some(hn_port.to_string()), "{:?}\n{log}", etcd_get(&p));
    assert_eq!(
        keys_with(&p, &hostnet.name)
            .get(&format!("/hn/{node}:{}:{hn_port}/address", hostnet.name))
            .map(String::as_str),
        Some("127.0.0.1")
    );
    let fp = port_key(&p, "fine", &node, &fine.name, 80);
    assert_eq!(fp, Some(fine_port.to_string()), "{log}");
    assert_eq!(keys_with(&p, &sick.name), Default::default(), "{log}");
    assert_eq!(keys_with(&p, &dropped.name), Default::default(), "{log}");
    assert!(
        log.contains(&format!("container {} uses the host network", dropped.name)),
        "{log}"
    );
    assert!(log.contains("inspected on every pass"), "{log}");
}

#[test]
fn events_follow_podman_health_and_removal() {
    let Some(host) = podman_host() else { return };
    let p = prefix("podman-ev");
    let node = unique("node");
    // Full passes only at start: whatever happens later reaches etcd through events.
    let mut r = Running::spawn(registrator_on(
        &host,
        &["--hostname", &node, "--interval", "3600", &uri(&p)],
    ));
    let port = free_port();
    let mut args = vec!["-e", "SERVICE_NAME=ev"];
    args.extend_from_slice(&["--health-cmd", "test -e /tmp/ok", "--health-retries", "1"]);
    let ev = Pod::httpd(&unique("ev"), port, &args);
    let name = ev.name.clone();
    let registered = || port_key(&p, "ev", &node, &name, 80).is_some();

    // Starting (no check has run yet): not registered.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!registered(), "{}", r.log());
    // A passing check: Podman's bare `health_status` event, then inspect says healthy.
    podman(&["exec", &ev.name, "touch", "/tmp/ok"]);
    assert!(ev.check_health());
    assert!(
        wait_until(Duration::from_secs(5), registered),
        "{}",
        r.log()
    );
    // A failing check takes it out again.
    podman(&["exec", &ev.name, "rm", "/tmp/ok"]);
    assert!(!ev.check_health());
    assert!(
        wait_until(Duration::from_secs(5), || !registered()),
        "{}",
        r.log()
    );
    // Healthy again, then removed: `die`/`remove` (dockerd's `destroy`) deregister it.
    podman(&["exec", &ev.name, "touch", "/tmp/ok"]);
    assert!(ev.check_health());
    assert!(
        wait_until(Duration::from_secs(5), registered),
        "{}",
        r.log()
    );
    podman(&["rm", "-f", "-t", "0", &ev.name]);
    assert!(
        wait_until(Duration::from_secs(5), || !registered()),
        "{}",
        r.log()
    );
    assert!(r.alive(), "{}", r.log());
}
