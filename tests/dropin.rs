//! A drop-in for gliderlabs/registrator (issue 19), against the real etcd and dockerd:
//! its documented command lines start unchanged and each of its options does what the
//! README's table says; every option can come from `REGISTRATOR_<OPTION>`; and
//! `--internal` registers the address on the network `SERVICE_NETWORK` or `--network`
//! chooses, saying once which it picked when nothing chose.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

/// This machine's host name: the service IDs of a command line without `--hostname`.
fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// `registrator ARGS` with `vars` set and nothing added (no `--ip`), to completion.
fn run_with_env(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut c = command(bin(), &docker_host(), args);
    c.envs(vars.iter().copied());
    c.output().unwrap()
}

/// A busybox httpd publishing container port 80 on 127.0.0.1, with these extra
/// `docker run` arguments (labels, networks).
fn httpd_with(name: &str, args: &[&str]) -> Container {
    let mut all = vec!["-p", "127.0.0.1::80"];
    all.extend_from_slice(args);
    Container::run(name, &all, &["httpd", "-f", "-p", "80", "-h", "/www"])
}

fn address(prefix: &str, svc: &str, host: &str, c: &Container) -> Option<String> {
    etcd_get(prefix)
        .get(&format!("{prefix}/{svc}/{host}:{}:80/address", c.name))
        .cloned()
}

fn log_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The Docker Compose line of gliderlabs/registrator's users, as their docs show it,
/// against our etcd: it starts, registers, and warns once about `-tags`.
#[test]
fn a_documented_gliderlabs_command_line_starts_unchanged() {
    let p = prefix("glider");
    let host = system_hostname();
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let line = format!(
        "-cleanup -deregister always -resync 10 -tags example-tag -ip 127.0.0.1 {}",
        uri(&p)
    );
    let args: Vec<&str> = line.split(' ').collect();
    let mut r = Running::spawn(command(bin(), &docker_host(), &args));
    assert!(
        wait_until(Duration::from_secs(5), || address(&p, "web", &host, &web)
            .is_some()),
        "not registered: {}",
        r.log()
    );
    assert_eq!(
        address(&p, "web", &host, &web).as_deref(),
        Some("127.0.0.1")
    );
    let log = r.log();
    assert_eq!(log_lines(&log, "WARN"), 1, "{log}");
    assert_eq!(
        log_lines(&log, "--tags \"example-tag\" is ignored"),
        1,
        "{log}"
    );
    assert!(log.contains("resync every 10s"), "{log}");
    assert_eq!(r.term(Duration::from_secs(5)).0, Some(0));

    // Every option the issue names, at once: it starts and registers.
    let p = prefix("glider-all");
    let line = format!(
        "-resync 30 -ttl-refresh 10 -deregister always -cleanup -retry-attempts 5 \
         -retry-interval 1000 -tags x -useIpFromLabel addr -ip 127.0.0.1 {}",
        uri(&p)
    );
    let args: Vec<&str> = line.split_whitespace().collect();
    let mut r = Running::spawn(command(bin(), &docker_host(), &args));
    assert!(
        wait_until(Duration::from_secs(5), || address(&p, "web", &host, &web)
            .is_some()),
        "not registered: {}",
        r.log()
    );
    assert_eq!(
        log_lines(&r.log(), "WARN"),
        2,
        "-ttl-refresh, -tags: {}",
        r.log()
    );
    assert_eq!(r.term(Duration::from_secs(5)).0, Some(0));
}

/// `-resync N` is `--interval N`: a service directory deleted by hand is back within
/// the next full pass (the default, 10 s, would not be in time).
#[test]
fn resync_sets_the_full_pass_period() {
    let p = prefix("resync");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let r = Running::start(&["-resync", "1", "--hostname", &host, &uri(&p)]);
    assert!(wait_until(Duration::from_secs(5), || address(
        &p, "web", &host, &web
    )
    .is_some()));
    etcdctl(&etcd_url(), &[], &["del", "--prefix", &format!("{p}/web/")]);
    assert!(
        wait_until(Duration::from_secs(5), || address(&p, "web", &host, &web)
            .is_some()),
        "not put back by a pass: {}",
        r.log()
    );
    assert!(r.log().contains("resync every 1s"), "{}", r.log());
}

/// `-ttl N`: every key on a lease granted with that TTL.
#[test]
fn ttl_puts_the_keys_on_a_lease_of_that_ttl() {
    let p = prefix("ttl");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let out = once(&["-ttl", "7", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lease = lease_of(&format!("{p}/web/{host}:{}:80/address", web.name));
    assert_ne!(lease, 0);
    let ttl = etcdctl(
        &etcd_url(),
        &[],
        &["lease", "timetolive", &format!("{lease:x}")],
    );
    assert!(ttl.contains("granted with TTL(7s)"), "{ttl}");
}

/// `-ip ADDR`: the address registered for published ports.
#[test]
fn ip_is_the_registered_address() {
    let p = prefix("ip");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let out = once(&["-ip", "10.9.8.7", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(address(&p, "web", &host, &web).as_deref(), Some("10.9.8.7"));
}

/// `-internal`: the container's own address and exposed port.
#[test]
fn internal_registers_the_container_address() {
    let p = prefix("internal");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let out = once(&["-internal", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ip = docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &web.name]);
    let keys = keys_with(&p, &web.name);
    let dir = format!("/web/{host}:{}:80", web.name);
    assert_eq!(keys.get(&format!("{dir}/address")), Some(&ip), "{keys:?}");
    assert_eq!(
        keys.get(&format!("{dir}/port")).map(String::as_str),
        Some("80")
    );
}

/// `-explicit`: only containers that set SERVICE_NAME.
#[test]
fn explicit_registers_only_named_containers() {
    let p = prefix("explicit");
    let host = unique("node");
    let named = Container::httpd(&unique("named"), 80, &["SERVICE_NAME=web"]);
    let anonymous = Container::httpd(&unique("anon"), 80, &[]);
    let out = once(&["-explicit", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(address(&p, "web", &host, &named).is_some());
    assert!(keys_with(&p, &anonymous.name).is_empty());
}

/// `-cleanup`: this host's services whose containers are gone are removed (always so).
#[test]
fn cleanup_removes_what_is_gone() {
    let p = prefix("cleanup");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let args = ["-cleanup", "--hostname", &host, &uri(&p)];
    assert!(once(&args).status.success());
    assert!(address(&p, "web", &host, &web).is_some());
    let name = web.name.clone();
    drop(web);
    let out = once(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(keys_with(&p, &name).is_empty(), "{:?}", etcd_get(&p));
}

/// `-deregister always`: a stopped container's services go, as they always do here;
/// `-deregister on-success` is refused with the reason (exit 2, one line).
#[test]
fn deregister_always_is_followed_and_on_success_refused() {
    let p = prefix("dereg");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let r = Running::start(&["-deregister", "always", "--hostname", &host, &uri(&p)]);
    assert!(wait_until(Duration::from_secs(5), || address(
        &p, "web", &host, &web
    )
    .is_some()));
    web.stop();
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &web.name)
            .is_empty()),
        "{}",
        r.log()
    );
    let out = registrator(&["-deregister", "on-success", &uri(&p)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--deregister \"on-success\" is not supported"),
        "{err}"
    );
}

/// `-retry-attempts N`: against a closed port, N retries after the first attempt, then
/// exit 1 with one error line naming the endpoint and the attempts.
#[test]
fn retry_attempts_give_up_with_a_clear_error() {
    let port = free_port();
    let started = Instant::now();
    let out = registrator(&[
        "-retry-attempts",
        "2",
        "-retry-interval",
        "300",
        &format!("etcd://127.0.0.1:{port}/x"),
    ])
    .output()
    .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    for want in [
        "etcd did not answer 3 attempt(s), 300 ms apart (--retry-attempts 2)",
        &format!("127.0.0.1:{port}"),
    ] {
        assert!(errors[0].contains(want), "{want}: {err}");
    }
    assert!(took >= Duration::from_millis(600), "two waits: {took:?}");
    assert_eq!(
        log_lines(&err, "WARN"),
        1,
        "the same failure logged once: {err}"
    );
}

/// `-retry-interval MS`: the wait between attempts (not gliderlabs's default 2000).
#[test]
fn retry_interval_spaces_the_attempts() {
    let port = free_port();
    let started = Instant::now();
    let out = registrator(&[
        "-retry-attempts=3",
        "-retry-interval=100",
        &format!("etcd://127.0.0.1:{port}/x"),
    ])
    .output()
    .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("4 attempt(s), 100 ms apart"),
        "{}",
        stderr(&out)
    );
    // Three waits of 100 ms; with 2000 ms it would be six seconds.
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// `-ttl-refresh N` and `-tags T`: accepted, one warning each saying what happens
/// instead, and the registrator runs as usual.
#[test]
fn ttl_refresh_and_tags_warn_once() {
    let p = prefix("warn");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let r = Running::start(&[
        "-ttl-refresh",
        "10",
        "-tags",
        "a,b",
        "--interval",
        "0.2",
        "--hostname",
        &host,
        &uri(&p),
    ]);
    assert!(wait_until(Duration::from_secs(5), || address(
        &p, "web", &host, &web
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(600));
    let log = r.log();
    assert_eq!(log_lines(&log, "WARN"), 2, "{log}");
    assert_eq!(
        log_lines(
            &log,
            "--ttl-refresh \"10\" is ignored: the keys live on a lease"
        ),
        1,
        "{log}"
    );
    assert_eq!(log_lines(&log, "--tags \"a,b\" is ignored"), 1, "{log}");
}

/// `-useIpFromLabel LABEL`: the address in that label; a label that is not an IP
/// address is that container's one error line, and the others are registered.
#[test]
fn use_ip_from_label() {
    let p = prefix("label");
    let host = unique("node");
    let good = httpd_with(
        &unique("good"),
        &["-l", "addr=10.1.2.3/24", "-e", "SERVICE_NAME=a"],
    );
    let bad = httpd_with(&unique("bad"), &["-l", "addr=nope", "-e", "SERVICE_NAME=b"]);
    let none = httpd_with(&unique("none"), &["-e", "SERVICE_NAME=c"]);
    let out = once(&["-useIpFromLabel", "addr", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(address(&p, "a", &host, &good).as_deref(), Some("10.1.2.3"));
    assert_eq!(address(&p, "c", &host, &none).as_deref(), Some("127.0.0.1"));
    assert!(keys_with(&p, &bad.name).is_empty());
    let err = stderr(&out);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    let want = format!(
        "container {}: label addr=\"nope\" is not an IP address (--use-ip-from-label)",
        bad.name
    );
    assert!(errors[0].contains(&want), "{err}");
}

/// Every option from `REGISTRATOR_<OPTION>`, the registry URI too; the command line
/// wins; a bad value names its variable (exit 2, one line).
#[test]
fn options_from_the_environment() {
    let p = prefix("env");
    let host = unique("node");
    let web = Container::httpd(&unique("web"), 80, &["SERVICE_NAME=web"]);
    let u = uri(&p);
    let vars = [
        ("REGISTRATOR_REGISTRY", u.as_str()),
        ("REGISTRATOR_HOSTNAME", host.as_str()),
        ("REGISTRATOR_IP", "10.9.8.7"),
        ("REGISTRATOR_ONCE", "true"),
    ];
    // A dry run first: it prints the plan and writes nothing.
    let mut dry = vars.to_vec();
    dry.push(("REGISTRATOR_DRY_RUN", "1"));
    let out = run_with_env(&[], &dry);
    assert!(out.status.success(), "{}", stderr(&out));
    let planned = format!("put {p}/web/{host}:{}:80/address = 10.9.8.7", web.name);
    assert!(stdout(&out).contains(&planned), "{}", stdout(&out));
    assert!(etcd_get(&p).is_empty());

    let out = run_with_env(&[], &vars);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(address(&p, "web", &host, &web).as_deref(), Some("10.9.8.7"));
    let out = run_with_env(&["--ip", "10.9.8.8"], &vars);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(address(&p, "web", &host, &web).as_deref(), Some("10.9.8.8"));

    let mut bad = vars.to_vec();
    bad.push(("REGISTRATOR_TTL", "abc"));
    let out = run_with_env(&[], &bad);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("REGISTRATOR_TTL=\"abc\" is not a whole number"),
        "{err}"
    );
}

/// Two networks of our own on the shared dockerd (internal: no route out; the
/// addresses are only registered as values), removed when dropped.
struct Networks(Vec<String>);

impl Networks {
    fn create(names: &[&str]) -> Networks {
        // Subnets of this daemon set's own (its bridge's third octet), apart from others'.
        let cidr = std::env::var("REG_BRIDGE_CIDR").unwrap_or_default();
        let octet = cidr.split('.').nth(2).unwrap_or("0");
        let made = Networks(names.iter().map(|n| n.to_string()).collect());
        for (i, name) in names.iter().enumerate() {
            let subnet = format!("10.{}.{octet}.0/24", 213 + i);
            docker(&["network", "create", "--internal", "--subnet", &subnet, name]);
        }
        made
    }
}

impl Drop for Networks {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", name])
                .env("DOCKER_HOST", docker_host())
                .output();
        }
    }
}

fn ip_on(c: &Container, network: &str) -> String {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker(&["inspect", "-f", &format, &c.name])
}

/// `--internal` for a container on two networks: SERVICE_NETWORK chooses, else
/// `--network`, else the first by name, said in one log line naming both networks and
/// the pick (once while it lasts, not every pass).
#[test]
fn internal_address_follows_service_network_and_network() {
    let tag = unique("net");
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    let nets = Networks::create(&[&a, &b]);
    let net_a = format!("--network={a}");
    let chosen = httpd_with(
        &unique("chosen"),
        &[
            &net_a,
            "-e",
            "SERVICE_NAME=chosen",
            "-e",
            &format!("SERVICE_NETWORK={b}"),
        ],
    );
    let plain = httpd_with(&unique("plain"), &[&net_a, "-e", "SERVICE_NAME=plain"]);
    for c in [&chosen, &plain] {
        docker(&["network", "connect", &b, &c.name]);
    }
    let p = prefix("net");
    let host = unique("node");

    let out = once(&["--internal", "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        address(&p, "chosen", &host, &chosen),
        Some(ip_on(&chosen, &b))
    );
    assert_eq!(address(&p, "plain", &host, &plain), Some(ip_on(&plain, &a)));
    let err = stderr(&out);
    let note = format!(
        "container {}: is on networks {a}, {b}: --internal registers its address on {a} ({})",
        plain.name,
        ip_on(&plain, &a)
    );
    assert_eq!(log_lines(&err, &note), 1, "{err}");
    assert_eq!(
        log_lines(&err, "is on networks"),
        1,
        "none for the chosen: {err}"
    );

    let out = once(&["--internal", "--network", &b, "--hostname", &host, &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(address(&p, "plain", &host, &plain), Some(ip_on(&plain, &b)));
    assert_eq!(
        log_lines(&stderr(&out), "is on networks"),
        0,
        "{}",
        stderr(&out)
    );

    // The loop says it once, not on every pass.
    let p2 = prefix("net-loop");
    let r = Running::start(&[
        "--internal",
        "--interval",
        "0.2",
        "--hostname",
        &host,
        &uri(&p2),
    ]);
    assert!(wait_until(Duration::from_secs(5), || address(
        &p2, "plain", &host, &plain
    )
    .is_some()));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(log_lines(&r.log(), "is on networks"), 1, "{}", r.log());
    drop(r);
    drop((chosen, plain));
    drop(nets);
}
