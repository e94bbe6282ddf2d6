//! The core registrator against the real etcd and dockerd: the README examples, stop and
//! removal, restarts, two hosts on one prefix, bad input, unreachable daemons. Each test
//! about Docker's view runs once per engine: dockerd and Podman (`NAME::docker`,
//! `NAME::podman`).

mod common;

use std::time::Duration;

use common::*;

per_engine!(
    readme_examples_register_exactly_the_documented_keys,
    stopped_and_removed_containers_are_deregistered,
    restart_cleans_up_what_died_while_down_including_explicit_ids,
    two_hosts_share_a_prefix_without_touching_each_other,
    bad_input_skips_only_the_offending_service_with_one_clear_line,
    older_container_keeps_a_contested_external_port_and_errors_are_not_repeated,
    docker_unreachable_changes_nothing_and_once_exits_1,
    dry_run_prints_the_plan_and_changes_nothing,
    loop_follows_docker_events_start_stop_pause,
    healthcheck_gates_registration,
    host_network_and_udp_ports,
);

fn readme_examples_register_exactly_the_documented_keys(e: Engine) {
    let p = prefix("examples");
    let host = unique("node");
    let examples = ReadmeExamples::start_on(
        e,
        "Example.com, www.example.com,example.com",
        "25432",
        "26379",
    );

    let out = once_on(e, &["--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(examples.registered(&p), examples.expected(&host));

    // A second pass changes nothing and says nothing at info level.
    let out = once_on(e, &["--hostname", &host, &uri(&p)]);
    assert!(out.status.success());
    let ours = |l: &&str| examples.names().iter().any(|n| l.contains(n));
    assert!(
        stderr(&out)
            .lines()
            .filter(ours)
            .all(|l| !l.contains("INFO")),
        "{}",
        stderr(&out)
    );
}

fn stopped_and_removed_containers_are_deregistered(e: Engine) {
    let p = prefix("stop");
    let host = unique("node");
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    let b = Container::httpd_on(e, &unique("b"), 80, &["SERVICE_NAME=b"]);
    assert!(once_on(e, &["--hostname", &host, &uri(&p)])
        .status
        .success());
    assert_eq!(keys_with(&p, &a.name).len(), 4);
    assert_eq!(keys_with(&p, &b.name).len(), 4);

    a.stop();
    e.run(&["rm", "-f", &b.name]);
    let out = once_on(e, &["--hostname", &host, &uri(&p)]);
    assert!(out.status.success());
    assert!(
        keys_with(&p, &a.name).is_empty(),
        "stopped container still registered"
    );
    assert!(
        keys_with(&p, &b.name).is_empty(),
        "removed container still registered"
    );
    assert!(
        stderr(&out).contains(&format!("deregister a/{host}:{}:80", a.name)),
        "{}",
        stderr(&out)
    );
}

fn restart_cleans_up_what_died_while_down_including_explicit_ids(e: Engine) {
    let p = prefix("restart");
    let host = unique("node");
    let sid = unique("explicit-id");
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    let b = Container::httpd_on(
        e,
        &unique("b"),
        80,
        &["SERVICE_NAME=b", &format!("SERVICE_ID={sid}")],
    );
    let keep = Container::httpd_on(e, &unique("keep"), 80, &["SERVICE_NAME=keep"]);
    let args = [
        "--hostname",
        &host,
        "--interval",
        "1",
        "--ttl",
        "6",
        &uri(&p),
    ];
    let mut r = Running::on(e, &args);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &sid).len() == 4
            && keys_with(&p, &a.name).len() == 4),
        "{}",
        r.log()
    );
    r.signal(libc::SIGKILL);
    r.wait(Duration::from_secs(2));

    a.stop();
    b.stop();
    let r2 = Running::on(e, &args);
    // After a kill -9 the successor leaves its predecessor's services alone until that
    // lease expires (it cannot tell a dead process from a stalled twin before): the
    // stale ones go with it, within the TTL.
    assert!(
        wait_until(Duration::from_secs(6 + 5), || keys_with(&p, &a.name)
            .is_empty()
            && keys_with(&p, &sid).is_empty()),
        "stale services left behind: {:?}\n{}",
        etcd_get(&p),
        r2.log()
    );
    // The running container's keys went with the old lease too, and are back at once.
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &keep.name).len()
            == 4),
        "the running container is registered again: {}",
        r2.log()
    );
}

fn two_hosts_share_a_prefix_without_touching_each_other(e: Engine) {
    let p = prefix("twohosts");
    let (h1, h2) = (unique("h1"), unique("h2"));
    let sid = unique("shared-id");
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    let x = Container::httpd_on(
        e,
        &unique("x"),
        80,
        &["SERVICE_NAME=x", &format!("SERVICE_ID={sid}")],
    );

    assert!(once_on(e, &["--hostname", &h1, &uri(&p)]).status.success());
    let out = once_on(e, &["--hostname", &h2, &uri(&p)]);
    assert!(out.status.success());
    // Both hosts registered the container under their own IDs...
    assert_eq!(keys_with(&p, &format!("{h1}:{}", a.name)).len(), 4);
    assert_eq!(keys_with(&p, &format!("{h2}:{}", a.name)).len(), 4);
    // ...but the explicit ID belongs to the first host; the second refuses to take it.
    assert_eq!(
        etcd_get(&format!("{p}/x/{sid}/node")).values().next(),
        Some(&h1)
    );
    assert!(
        stderr(&out).contains(&format!(
            "service x/{sid} is already registered by host {h1}"
        )),
        "{}",
        stderr(&out)
    );

    // The container goes away: h2's pass removes only h2's services.
    x.stop();
    a.stop();
    assert!(once_on(e, &["--hostname", &h2, &uri(&p)]).status.success());
    assert!(keys_with(&p, &format!("{h2}:{}", a.name)).is_empty());
    assert_eq!(
        keys_with(&p, &format!("{h1}:{}", a.name)).len(),
        4,
        "h2 deleted h1's service"
    );
    assert_eq!(
        keys_with(&p, &sid).len(),
        4,
        "h2 deleted h1's explicit-ID service"
    );
    assert!(once_on(e, &["--hostname", &h1, &uri(&p)]).status.success());
    assert!(
        keys_with(&p, &a.name).is_empty() && keys_with(&p, &sid).is_empty(),
        "{:?}",
        etcd_get(&p)
    );
}

fn bad_input_skips_only_the_offending_service_with_one_clear_line(e: Engine) {
    let p = prefix("bad");
    let host = unique("node");
    let tag = unique("bad");
    let good = Container::httpd_on(e, &format!("{tag}-good"), 80, &["SERVICE_NAME=good"]);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "mode",
            vec!["SERVICE_MODE=ftp"],
            "SERVICE_MODE=\"ftp\" is not http or tcp",
        ),
        (
            "nodomains",
            vec!["SERVICE_MODE=http"],
            "SERVICE_MODE=http needs SERVICE_DOMAINS",
        ),
        (
            "domain",
            vec!["SERVICE_MODE=http", "SERVICE_DOMAINS=ok.com,no_way.com"],
            "\"no_way.com\" is not a valid DNS name",
        ),
        (
            "port",
            vec!["SERVICE_EXTERNAL_PORT=70000"],
            "SERVICE_EXTERNAL_PORT=\"70000\" is not a port number in 1-65535",
        ),
        (
            "both",
            vec!["SERVICE_EXTERNAL_PORT=1", "SERVICE_INTERNAL_PORT=2"],
            "both set",
        ),
        (
            "dotdot",
            vec!["SERVICE_NAME=.."],
            "SERVICE_NAME=\"..\" is not a usable key segment",
        ),
        (
            "slash",
            vec!["SERVICE_ID=../../escape"],
            "SERVICE_ID=\"../../escape\" contains '/'",
        ),
        ("empty", vec!["SERVICE_NAME="], "SERVICE_NAME=\"\" is empty"),
    ];
    let mut containers = Vec::new();
    for (case, env, _) in &cases {
        containers.push(Container::httpd_on(e, &format!("{tag}-{case}"), 80, env));
    }
    let out = once_on(e, &["--hostname", &host, &uri(&p)]);
    assert!(
        out.status.success(),
        "bad input is not a failed sync: {}",
        stderr(&out)
    );
    let err = stderr(&out);
    for (case, _, want) in &cases {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("container {tag}-{case}:")))
            .unwrap_or_else(|| panic!("{case}: no error line in\n{err}"));
        assert!(line.contains(want), "{case}: {line}");
        assert!(line.contains("ERROR"), "{case}: {line}");
        assert!(
            keys_with(&p, &format!("{tag}-{case}")).is_empty(),
            "{case} was registered"
        );
    }
    assert_eq!(
        keys_with(&p, &good.name).len(),
        4,
        "the good service is registered"
    );
    assert!(etcd_get(&p).keys().all(|k| !k.contains("escape")));
}

fn older_container_keeps_a_contested_external_port_and_errors_are_not_repeated(e: Engine) {
    let p = prefix("claim");
    let host = unique("node");
    let port = format!(
        "SERVICE_EXTERNAL_PORT={}",
        30000 + std::process::id() % 1000
    );
    let old = Container::httpd_on(e, &unique("old"), 80, &["SERVICE_NAME=first", &port]);
    std::thread::sleep(Duration::from_millis(50));
    let new = Container::httpd_on(e, &unique("new"), 80, &["SERVICE_NAME=second", &port]);
    let mut r = Running::on(e, &["--hostname", &host, "--interval", "0.2", &uri(&p)]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &old.name).len()
            == 5),
        "{}",
        r.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(2));
    assert!(keys_with(&p, &new.name).is_empty());
    let log = r.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("container {}:", new.name)))
        .collect();
    assert_eq!(lines.len(), 1, "one error, not one per cycle: {log}");
    assert!(
        lines[0].contains("is already held by service first"),
        "{}",
        lines[0]
    );
}

fn docker_unreachable_changes_nothing_and_once_exits_1(e: Engine) {
    let p = prefix("nodocker");
    let host = unique("node");
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    assert!(once_on(e, &["--hostname", &host, &uri(&p)])
        .status
        .success());
    let before = etcd_get(&p);
    assert!(!before.is_empty());
    let out = once_with(
        "unix:///nonexistent/docker.sock",
        &["--hostname", &host, &uri(&p)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/docker.sock"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        etcd_get(&p),
        before,
        "an unknown desired set must not count as empty"
    );
    drop(a);
}

#[test]
fn etcd_unreachable_once_exits_1_with_one_line() {
    let out = once(&["--hostname", "n", "etcd://127.0.0.1:1/x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("127.0.0.1:1"), "{err}");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        vec![],
        vec!["zookeeper://h/s"],
        vec!["etcd://h"],
        vec!["--bogus", "etcd:///s"],
        vec!["--interval", "x", "etcd:///s"],
    ] {
        let out = registrator(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    let out = registrator(&["zookeeper://h/s"]).output().unwrap();
    assert!(stderr(&out).contains("not supported"));
    let help = registrator(&["--help"]).output().unwrap();
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("Example:"));
    let v = registrator(&["--version"]).output().unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("registrator "));
}

fn dry_run_prints_the_plan_and_changes_nothing(e: Engine) {
    let p = prefix("dry");
    let host = unique("node");
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    let out = registrator(&["--dry-run", "--hostname", &host, &uri(&p)])
        .env("DOCKER_HOST", e.host())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "put {p}/a/{host}:{}:80/port = {}",
            a.name,
            a.host_port(80)
        )),
        "{stdout}"
    );
    assert!(etcd_get(&p).is_empty());
}

fn loop_follows_docker_events_start_stop_pause(e: Engine) {
    let p = prefix("events");
    let host = unique("node");
    let r = Running::on(e, &["--hostname", &host, "--interval", "60", &uri(&p)]);
    std::thread::sleep(Duration::from_millis(500));
    let a = Container::httpd_on(e, &unique("a"), 80, &["SERVICE_NAME=a"]);
    assert!(
        wait_until(Duration::from_secs(2), || keys_with(&p, &a.name).len() == 4),
        "not registered on start: {}",
        r.log()
    );
    e.run(&["pause", &a.name]);
    assert!(
        wait_until(Duration::from_secs(2), || keys_with(&p, &a.name).is_empty()),
        "paused still registered: {}",
        r.log()
    );
    e.run(&["unpause", &a.name]);
    assert!(
        wait_until(Duration::from_secs(2), || keys_with(&p, &a.name).len() == 4),
        "not registered on unpause: {}",
        r.log()
    );
    a.stop();
    assert!(
        wait_until(Duration::from_secs(2), || keys_with(&p, &a.name).is_empty()),
        "not deregistered on stop: {}",
        r.log()
    );
}

fn healthcheck_gates_registration(e: Engine) {
    let p = prefix("health");
    let host = unique("node");
    let r = Running::on(e, &["--hostname", &host, "--interval", "60", &uri(&p)]);
    std::thread::sleep(Duration::from_millis(300));
    let c = Container::run_on(
        e,
        &unique("hc"),
        &[
            "-p",
            "127.0.0.1::80",
            "-e",
            "SERVICE_NAME=hc",
            "--health-cmd",
            "test -f /tmp/ok",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
        ],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        keys_with(&p, &c.name).is_empty(),
        "registered before it was healthy"
    );
    e.run(&["exec", &c.name, "touch", "/tmp/ok"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &c.name).len() == 4),
        "healthy but not registered: {}",
        r.log()
    );
    e.run(&["exec", &c.name, "rm", "/tmp/ok"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &c.name).is_empty()),
        "unhealthy but still registered: {}",
        r.log()
    );
}

fn host_network_and_udp_ports(e: Engine) {
    let p = prefix("modes");
    let host = unique("node");
    let hostnet = Container::run_on(
        e,
        &unique("hostnet"),
        &["--net", "host", "--expose", "9999", "-e", "SERVICE_NAME=hn"],
        &["sleep", "600"],
    );
    let udp = Container::run_on(
        e,
        &unique("udp"),
        &["-p", "127.0.0.1::53/udp", "-e", "SERVICE_NAME=dns"],
        &["sleep", "600"],
    );

    assert!(
        once_on(e, &["--hostname", &host, "--ip", "127.0.0.1", &uri(&p)])
            .status
            .success()
    );
    let hn = keys_with(&p, &hostnet.name);
    assert_eq!(
        hn.get(&format!("/hn/{host}:{}:9999/port", hostnet.name))
            .map(String::as_str),
        Some("9999"),
        "{hn:?}"
    );
    assert_eq!(
        hn.get(&format!("/hn/{host}:{}:9999/address", hostnet.name))
            .map(String::as_str),
        Some("127.0.0.1")
    );
    let dns = keys_with(&p, &udp.name);
    assert!(
        dns.contains_key(&format!("/dns/{host}:{}:53:udp/port", udp.name)),
        "{dns:?}"
    );
}

/// Docker only: `--internal` registers the container's own address, and Podman's
/// slirp4netns gives a container none (its netavark bridge would, but it changes the
/// host's firewall and ip_forward, which the tests leave alone).
#[test]
fn internal_registers_the_container_address_and_port() {
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    // --internal: the container's own address and exposed port.
    let p2 = prefix("internal");
    assert!(once(&["--hostname", &host, "--internal", &uri(&p2)])
        .status
        .success());
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &web.name]);
    let w = keys_with(&p2, &web.name);
    assert_eq!(
        w.get(&format!("/web/{host}:{}:80/address", web.name)),
        Some(&ip),
        "{w:?}"
    );
    assert_eq!(
        w.get(&format!("/web/{host}:{}:80/port", web.name))
            .map(String::as_str),
        Some("80")
    );
}

/// An image tag of the shared dockerd, removed when dropped.
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = Cli::shared().output(&["rmi", "-f", &self.0]);
    }
}

/// The full passes a loop serving `/metrics` at `addr` has made (every outcome).
fn passes(addr: &str) -> u64 {
    let (_, body) = common::http::get_untrimmed(addr, "/metrics");
    body.lines()
        .filter(|l| l.starts_with("registrator_passes_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Docker only: a tag moved to another image (a `docker compose pull`) makes dockerd's
/// list name the running container's image by its ID; the name still comes from the
/// image the container was created from. A container created from an image ID has no
/// image name: it needs `SERVICE_NAME`, and says so once.
#[test]
fn a_moved_image_tag_keeps_the_name_and_an_image_id_needs_service_name() {
    let p = prefix("movedtag");
    let host = unique("node");
    let app = unique("app");
    let tag = Tag(format!("local/{app}:1"));
    docker(&["tag", &image(), &tag.0]);
    let id = docker(&["image", "inspect", "-f", "{{.Id}}", &image()]);
    let run = |name: &str, from: &str, env: &[&str]| {
        let args: Vec<String> = httpd_args(name, 80, env)
            .into_iter()
            .map(|a| if a == image() { from.to_string() } else { a })
            .collect();
        Container::adopt(Engine::Docker, name, docker_with(&["run", "-d"], &args))
    };
    let c = run(&unique("c"), &tag.0, &[]);
    let bare = run(&unique("bare"), &id["sha256:".len()..][..12], &[]);
    let named = run(&unique("named"), &id, &["SERVICE_NAME=named"]);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut r = Running::start(&[
        "--hostname",
        &host,
        "--interval",
        "0.5",
        "--metrics-addr",
        &metrics,
        &uri(&p),
    ]);
    let want = service_keys("", &host, &app, &c.name, c.host_port(80));
    assert!(
        wait_until(Duration::from_secs(10), || keys_with(&p, &c.name) == want
            && keys_with(&p, &named.name).len() == 4),
        "{:?}\n{}",
        etcd_get(&p),
        r.log()
    );

    // Move the tag to a new image; the list now shows the old one by its ID.
    docker(&["commit", "--pause=false", &c.name, &tag.0]);
    let listed = docker(&[
        "ps",
        "--no-trunc",
        "-f",
        &format!("id={}", c.id),
        "--format",
        "{{.Image}}",
    ]);
    assert!(
        !listed.contains(&app),
        "the list still names the tag: {listed}"
    );
    let seen = passes(&metrics);
    assert!(
        wait_until(Duration::from_secs(10), || passes(&metrics) >= seen + 2),
        "no full pass: {}",
        r.log()
    );
    let all = etcd_get(&p);
    assert_eq!(keys_with(&p, &c.name), want, "{all:?}\n{}", r.log());
    assert!(
        !all.keys().any(|k| k.contains("sha256")),
        "{all:?}\n{}",
        r.log()
    );
    assert_eq!(keys_with(&p, &named.name).len(), 4, "{all:?}");
    assert!(keys_with(&p, &bare.name).is_empty(), "{all:?}");
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(5));
    let log = r.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&bare.name)).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains(&format!("container {}", bare.name))
            && lines[0].contains("image ID")
            && lines[0].contains("SERVICE_NAME"),
        "{}",
        lines[0]
    );
}
