//! The operator's side of the real binary: `--metrics-addr` serving `/metrics` (checked
//! by promtool) and `/healthz`, the `healthcheck` subcommand as etcd goes away and comes
//! back, full passes under steady event churn with a slow etcd, an etcd out of space
//! (backed off, one line, unhealthy), and `registrator ls` against the keys the README's
//! three examples register.
//!
//! Docker is the shared dockerd of `tests/daemons.sh`; the health test stops and
//! restarts an etcd of its own (tests/common's, by PID), the listing tests use the
//! shared etcd, or a TLS etcd with auth of their own.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::relay::{etcd_kind, Mode, Relay, Upstream};
use common::{
    bin, etcd_get, etcd_get_at, etcd_put, etcdctl, prefix, stderr, try_etcdctl, unique, Certs,
    Container, Etcd, ReadmeExamples, Running, TempDir,
};
use serde_json::Value;

/// `GET path` from the listener at `addr`: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    common::http::get_untrimmed(addr, path)
}

/// The value of one sample (`name{labels} value`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// `registrator healthcheck --metrics-addr addr`: (exit code, its line).
fn healthcheck(addr: &str) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(["healthcheck", "--metrics-addr", addr, "--timeout", "2"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text.trim().to_string())
}

/// The address the registrator logged it serves on (`--metrics-addr 127.0.0.1:0`).
fn bound_addr(r: &mut Running) -> String {
    let needle = "serving /metrics and /healthz on http://";
    let mut found = None;
    let ok = common::wait_until(Duration::from_secs(10), || {
        found = r
            .log()
            .lines()
            .find_map(|l| Some(l.split_once(needle)?.1.trim().to_string()));
        found.is_some()
    });
    assert!(ok && r.alive(), "no listener logged:\n{}", r.log());
    found.unwrap()
}

/// Polls the healthcheck until it exits `code`; returns its line and how long it took.
fn until_health(addr: &str, code: i32, limit: Duration, r: &Running) -> (String, Duration) {
    let start = Instant::now();
    loop {
        let (got, line) = healthcheck(addr);
        if got == Some(code) {
            return (line, start.elapsed());
        }
        assert!(
            start.elapsed() < limit,
            "healthcheck still says {got:?} ({line}) after {limit:?}:\n{}",
            r.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn health_follows_etcd_down_and_back_and_promtool_accepts_the_metrics() {
    let mut etcd = Etcd::start_single("op-health", &[]);
    let (p, host) = (prefix("op-health"), unique("host"));
    let svc = unique("svc");
    let _c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let uri = format!("etcd://{}{p}", etcd.endpoint());
    let mut r = Running::start(&[
        "--hostname",
        &host,
        "--interval",
        "1",
        "--ttl",
        "10",
        "--metrics-addr",
        "127.0.0.1:0",
        &uri,
    ]);
    let addr = bound_addr(&mut r);

    let (line, _) = until_health(&addr, 0, Duration::from_secs(10), &r);
    assert!(line.starts_with("ok: "), "{line}");
    // After a few passes: the services as in etcd (the shared dockerd runs other
    // tests' containers too), their lease, the passes.
    let mut metrics = String::new();
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            metrics = get(&addr, "/metrics").1;
            sample(&metrics, r#"registrator_passes_total{outcome="ok"}"#) >= Some(2.0)
        }),
        "{metrics}"
    );
    let services = |url: &str| {
        etcd_get_at(url, &[], &format!("{p}/"))
            .keys()
            .filter(|k| k.ends_with("/node"))
            .count() as f64
    };
    // Other tests' containers on the shared dockerd come and go (and are registered
    // here too): read both until they agree.
    let mut registered = 0.0;
    let agree = common::wait_until(Duration::from_secs(30), || {
        metrics = get(&addr, "/metrics").1;
        registered = services(&etcd.url());
        sample(&metrics, "registrator_services") == Some(registered)
    });
    assert!(agree, "{registered} in etcd\n{metrics}");
    assert!(registered >= 1.0, "{}", r.log());
    assert!(sample(&metrics, "registrator_registrations_total") >= Some(registered));
    for (series, want) in [
        ("registrator_healthy", 1.0),
        ("registrator_lease_grants_total", 1.0),
        ("registrator_interval_seconds", 1.0),
        ("registrator_lease_ttl_seconds", 10.0),
    ] {
        assert_eq!(sample(&metrics, series), Some(want), "{series}\n{metrics}");
    }
    let requests = format!(
        r#"registrator_etcd_requests_total{{endpoint="{}"}}"#,
        etcd.url()
    );
    assert!(sample(&metrics, &requests) > Some(0.0), "{metrics}");

    // etcd stops: unhealthy once the last good pass is 3 intervals old (5 s at least),
    // before the lease (10 s) runs out; one line that says why.
    etcd.stop();
    let (line, took) = until_health(&addr, 1, Duration::from_secs(15), &r);
    eprintln!("unhealthy {took:?} after etcd stopped: {line}");
    assert!(
        line.starts_with("unhealthy: HTTP 503: last successful pass ")
            && line.contains("limit 5.0s"),
        "{line}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    let (status, body) = get(&addr, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    let down = get(&addr, "/metrics").1;
    assert_eq!(sample(&down, "registrator_healthy"), Some(0.0));
    assert!(sample(&down, r#"registrator_passes_total{outcome="etcd_error"}"#) > Some(0.0));
    assert!(sample(&down, "registrator_lease_keepalive_failures_total") > Some(0.0));
    let failures = format!(
        r#"registrator_etcd_request_failures_total{{endpoint="{}"}}"#,
        etcd.url()
    );
    assert!(sample(&down, &failures) > Some(0.0), "{down}");

    // The exposition of a process that saw all that is valid, lint included.
    let dir = TempDir::new("op-promtool");
    let file = dir.path("metrics.txt");
    std::fs::write(&file, &down).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus.sh");
    let out = Command::new(script)
        .arg("check-metrics")
        .arg(&file)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{down}");

    // etcd is back (same data): healthy again, the service still there.
    etcd.start();
    let (line, took) = until_health(&addr, 0, Duration::from_secs(15), &r);
    eprintln!("healthy {took:?} after etcd started again: {line}");
    assert_eq!(get(&addr, "/healthz").0, 200);
    assert!(
        common::wait_until(Duration::from_secs(10), || services(&etcd.url()) >= 1.0),
        "{}",
        r.log()
    );
    assert!(r.alive(), "{}", r.log());
}

#[test]
fn metrics_addr_refusals() {
    // A port that is taken: exit 1, saying which.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut r = Running::start(&["--metrics-addr", &addr, &common::uri(&prefix("op-taken"))]);
    let (code, _) = r.wait(Duration::from_secs(10));
    assert_eq!(code, Some(1), "{}", r.log());
    assert!(
        r.log()
            .contains(&format!("cannot listen on --metrics-addr {addr}")),
        "{}",
        r.log()
    );
    // Not with a single pass: a usage error.
    let out = common::once(&["--metrics-addr", "127.0.0.1:0", "etcd:///s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not go with --once"),
        "{}",
        stderr(&out)
    );
    // Nothing listening: the healthcheck says where it looked.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (code, line) = healthcheck(&closed);
    assert_eq!(code, Some(1));
    assert!(line.contains(&closed), "{line}");
}

/// `registrator ls ARGS` with `env`, with DOCKER_HOST pointing nowhere (ls never needs
/// Docker): (exit code, stdout, stderr).
fn ls(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out: Output = Command::new(bin())
        .arg("ls")
        .args(args)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("ETCD_USERNAME")
        .env_remove("ETCD_PASSWORD")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One service as the keys under `prefix` say it: (name, id) -> its fields.
type Services = BTreeMap<(String, String), BTreeMap<String, String>>;

fn services_in(prefix: &str, keys: &BTreeMap<String, String>) -> Services {
    let mut out = Services::new();
    for (k, v) in keys {
        let rest = k.strip_prefix(&format!("{prefix}/")).unwrap();
        let mut parts = rest.splitn(3, '/');
        let (name, id, field) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        out.entry((name.to_string(), id.to_string()))
            .or_default()
            .insert(field.to_string(), v.clone());
    }
    out
}

/// The `--json` rows against the keys: every field as stored.
fn check_json(json: &str, services: &Services) {
    let rows: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), services.len(), "{json}");
    for (row, ((name, id), fields)) in rows.iter().zip(services) {
        assert_eq!(row["name"], name.as_str());
        assert_eq!(row["id"], id.as_str());
        assert_eq!(row["address"], fields["address"].as_str());
        assert_eq!(row["port"].to_string(), fields["port"]);
        assert_eq!(row["mode"], fields["mode"].as_str());
        assert_eq!(row["node"], fields["node"].as_str());
        let domains: Vec<&str> = fields
            .keys()
            .filter_map(|f| f.strip_prefix("domains/"))
            .collect();
        assert_eq!(row["domains"], serde_json::json!(domains), "{row}");
        for f in ["external_port", "internal_port"] {
            match fields.get(f) {
                Some(p) => assert_eq!(row[f].to_string(), *p, "{row}"),
                None => assert!(row[f].is_null(), "{row}"),
            }
        }
    }
}

#[test]
fn ls_shows_the_readme_examples_as_stored() {
    let (p, host) = (prefix("op-ls"), unique("host"));
    let ex = ReadmeExamples::start("example.com,www.example.com", "15432", "16379");
    let (web, db, cache) = (&ex.web, &ex.db, &ex.cache);
    let uri = common::uri(&p);
    let out = common::once(&["--hostname", &host, "--ttl", "60", &uri]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(ex.registered(&p), ex.expected(&host), "the README's keys");
    // A service of another host, written by hand.
    let other = format!("{p}/api/other:api-1:8080");
    for (f, v) in [
        ("address", "10.9.9.9"),
        ("port", "8080"),
        ("mode", "tcp"),
        ("node", "other"),
    ] {
        etcd_put(&format!("{other}/{f}"), v);
    }
    // The shared dockerd also runs other tests' containers: the registrator registers
    // them too, and ls must show whatever the keys hold.
    let keys = etcd_get(&format!("{p}/"));
    let services = services_in(&p, &keys);
    assert!(services.len() >= 4, "{keys:?}");

    // The table: a header, then one line per service in name, then ID order.
    let (code, table, err) = ls(&[&uri], &[]);
    assert_eq!(code, Some(0), "{err}");
    eprintln!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME "), "{table}");
    assert_eq!(lines.len(), services.len() + 1, "{table}");
    for (line, ((name, id), f)) in lines[1..].iter().zip(&services) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], name);
        assert_eq!(cells[1], id);
        assert_eq!(cells[2], format!("{}:{}", f["address"], f["port"]));
        assert_eq!(cells[3], f["mode"]);
        assert_eq!(cells[5], f["node"], "{line}");
        let ttl = cells[6];
        if f["node"] == host {
            let secs: u64 = ttl.strip_suffix('s').unwrap().parse().unwrap();
            assert!((1..=60).contains(&secs), "{line}");
        } else {
            assert_eq!(ttl, "-", "no lease: {line}");
        }
    }
    let line = |c: &Container| {
        *lines
            .iter()
            .find(|l| l.contains(&c.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{table}", c.name))
    };
    let cells =
        |c: &Container| -> Vec<String> { line(c).split_whitespace().map(String::from).collect() };
    for (c, port, name, mode, routes) in [
        (web, 80, "web", "http", "example.com,www.example.com"),
        (db, 5432, "db", "tcp", "external:15432"),
        (cache, 6379, "cache", "tcp", "internal:16379"),
    ] {
        let cells = cells(c);
        assert_eq!(cells[0], name, "{cells:?}");
        assert_eq!(cells[1], format!("{host}:{}:{port}", c.name), "{cells:?}");
        let published = c.host_port(port);
        assert_eq!(cells[2], format!("127.0.0.1:{published}"), "{cells:?}");
        assert_eq!(
            (cells[3].as_str(), cells[4].as_str()),
            (mode, routes),
            "{cells:?}"
        );
        assert_eq!(cells[5], host, "{cells:?}");
    }

    // --json: the same services, every field as stored.
    let (code, json, err) = ls(&["--json", &uri], &[]);
    assert_eq!(code, Some(0), "{err}");
    check_json(&json, &services);

    // Filters, alone and together, against the keys.
    let names = |keep: &dyn Fn(&str, &str) -> bool| -> Vec<String> {
        services
            .iter()
            .filter(|((name, _), f)| keep(name, &f["node"]))
            .map(|((name, _), _)| name.clone())
            .collect()
    };
    for (args, want) in [
        (vec!["--node", host.as_str()], names(&|_, n| n == host)),
        (vec!["--node", "other"], vec!["api".to_string()]),
        (vec!["--name", "*a*"], names(&|s, _| s.contains('a'))),
        (
            vec!["--name", "db", "--node", host.as_str()],
            names(&|s, n| s == "db" && n == host),
        ),
    ] {
        let mut all = args.clone();
        all.push("--json");
        all.push(&uri);
        let (code, json, err) = ls(&all, &[]);
        assert_eq!(code, Some(0), "{err}");
        let rows: Value = serde_json::from_str(&json).unwrap();
        let got: Vec<&str> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "{args:?}");
    }

    // Nothing matches, nothing there: one line that says so; JSON `[]`.
    let (code, out, _) = ls(&["--node", "nobody", &uri], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out,
        format!(
            "none of the {} services under {p}/ match --node nobody\n",
            services.len()
        )
    );
    let empty = prefix("op-ls-empty");
    let (code, out, _) = ls(&[&common::uri(&empty)], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(out, format!("no services under {empty}/\n"));
    assert_eq!(ls(&["--json", &common::uri(&empty)], &[]).1, "[]\n");

    // Read-only: the keys are as they were.
    assert_eq!(etcd_get(&format!("{p}/")), keys);
    // etcd unreachable: exit 1 and the reason.
    let (code, _, err) = ls(&["etcd://127.0.0.1:1/s"], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot list etcd://127.0.0.1:1/s"), "{err}");
}

/// Enables auth: root, and user `reg` with readwrite on `/allowed/`. Returns reg's
/// password.
fn enable_auth(url: &str, flags: &[&str]) -> String {
    let password = format!("Pw-{}-x9", unique("secret"));
    etcdctl(url, flags, &["user", "add", "root:rootpw"]);
    etcdctl(url, flags, &["user", "add", &format!("reg:{password}")]);
    etcdctl(url, flags, &["role", "add", "regrole"]);
    let grant = [
        "role",
        "grant-permission",
        "regrole",
        "--prefix=true",
        "readwrite",
        "/allowed/",
    ];
    etcdctl(url, flags, &grant);
    etcdctl(url, flags, &["user", "grant-role", "reg", "regrole"]);
    etcdctl(url, flags, &["auth", "enable"]);
    password
}

#[test]
fn ls_takes_the_daemons_tls_and_password_options() {
    let certs = Certs::new();
    let flags = certs.etcd_flags("server", false);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::start_single("op-ls-tls", &flags);
    let ca = certs.file("ca.pem");
    let pw = enable_auth(&etcd.url(), &["--cacert", &ca]);
    let dir = TempDir::new("op-ls-pw");
    std::fs::write(dir.path("pw"), format!("{pw}\n")).unwrap();
    let pw_file = dir.file("pw");
    let host = unique("host");
    let p = format!("/allowed/{}", unique("ls"));
    let uri = format!("etcds://{}{p}", etcd.endpoint());
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=web"]);
    let user = [("ETCD_USERNAME", "reg")];
    let out = common::registrator(&[
        "--once",
        "--hostname",
        &host,
        "--etcd-cacert",
        &ca,
        "--etcd-password-file",
        &pw_file,
        &uri,
    ])
    .envs(user)
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let (code, table, err) = ls(
        &["--etcd-cacert", &ca, "--etcd-password-file", &pw_file, &uri],
        &user,
    );
    assert_eq!(code, Some(0), "{err}");
    let keys = etcd_get_at(&etcd.url(), &["--user", "root:rootpw", "--cacert", &ca], &p);
    let services = keys.keys().filter(|k| k.ends_with("/node")).count();
    assert_eq!(table.lines().count(), services + 1, "{table}");
    let id = format!("{host}:{}:80", c.name);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains(&id)),
        "{table}"
    );
    // The password from the URI works too, and never shows.
    let with_pw = format!("etcds://reg:{pw}@{}{p}?cacert={ca}", etcd.endpoint());
    let (code, table2, err) = ls(&[&with_pw], &[]);
    assert_eq!((code, &table2), (Some(0), &table), "{err}");
    // Without the password, or without the CA: exit 1 with the daemon's words.
    let (code, _, err) = ls(&["--etcd-cacert", &ca, &uri], &[]);
    assert_eq!(code, Some(1));
    assert!(err.contains("requires authentication"), "{err}");
    let (code, _, err) = ls(&["--etcd-password-file", &pw_file, &uri], &user);
    assert_eq!(code, Some(1));
    assert!(err.contains("not signed by a trusted CA"), "{err}");
    assert!(!err.contains(&pw), "{err}");
}

/// The sum of every sample of `series` (all its label sets) in an exposition.
fn total(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{series}{{")) || l.starts_with(&format!("{series} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn full_passes_keep_coming_under_steady_event_churn_with_a_slow_etcd() {
    // The shared etcd behind a relay that holds every request 300 ms.
    let relay = Relay::tcp(Upstream::Tcp(common::etcd_addr()), Mode::Forward).counting(etcd_kind);
    let (p, host) = (prefix("op-churn"), unique("host"));
    let uri = format!("etcd://{}{p}", relay.address);
    let mut r = Running::start(&[
        "--hostname",
        &host,
        "--interval",
        "1",
        "--ttl",
        "10",
        "--metrics-addr",
        "127.0.0.1:0",
        &uri,
    ]);
    let addr = bound_addr(&mut r);
    until_health(&addr, 0, Duration::from_secs(10), &r);
    relay.set(Mode::Slow(Duration::from_millis(300)));

    // Steady churn: ten containers with a service each, paused and unpaused in turn.
    // Each event is a fast path that writes when the container's state changed since
    // its last one (and waits for the slow etcd) while the next events arrive.
    let svc = format!("SERVICE_NAME={}", unique("svc"));
    let containers: Vec<Container> = (0..10)
        .map(|_| Container::httpd(&unique("churn"), 80, &[&svc]))
        .collect();
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let cli = common::Cli::shared();
            while !stop.load(Ordering::SeqCst) {
                for verb in ["pause", "unpause"] {
                    for name in &names {
                        cli.output(&[verb, name]);
                    }
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let before = get(&addr, "/metrics").1;
    std::thread::sleep(Duration::from_secs(10));
    let after = get(&addr, "/metrics").1;
    let (health, why) = get(&addr, "/healthz");
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    drop(containers);
    let count = |series| total(&after, series) - total(&before, series);
    let (passes, events) = (
        count("registrator_passes_total"),
        count("registrator_docker_events_total"),
    );
    eprintln!("in 10 s of churn: {events} events, {passes} full passes; /healthz {health} {why}");
    assert!(
        events >= 20.0,
        "no steady churn: {events} events\n{}",
        r.log()
    );
    // Before passes ran at least once per interval: none (the queue never emptied).
    // Now about one every 2.5 s (a pass through the slow etcd takes about a second).
    assert!(passes >= 2.0, "{passes} full passes in 10 s\n{}", r.log());
    assert_eq!(health, 200, "{why}");
    assert!(r.alive(), "{}", r.log());
}

#[test]
fn an_etcd_out_of_space_is_backed_off_with_one_line_and_health_503() {
    // An etcd of 1 MiB: a dozen values of 60 KB raise its NOSPACE alarm.
    let etcd = Etcd::start_single("op-nospace", &["--quota-backend-bytes", "1048576"]);
    let relay = Relay::tcp(Upstream::Tcp(etcd.addr()), Mode::Forward).counting(etcd_kind);
    let (p, host) = (prefix("op-nospace"), unique("host"));
    let uri = format!("etcd://{}{p}", relay.address);
    let mut r = Running::start(&[
        "--hostname",
        &host,
        "--interval",
        "1",
        "--ttl",
        "10",
        "--metrics-addr",
        "127.0.0.1:0",
        &uri,
    ]);
    let addr = bound_addr(&mut r);
    until_health(&addr, 0, Duration::from_secs(10), &r);
    let big = "x".repeat(60_000);
    let full = (0..40)
        .any(|i| try_etcdctl(&etcd.url(), &[], &["put", &format!("/fill/{i}"), &big]).is_none());
    assert!(full, "no NOSPACE alarm");
    let alarm = etcdctl(&etcd.url(), &[], &["alarm", "list"]);
    assert!(alarm.contains("NOSPACE"), "{alarm}");

    // A container of ten services (one txn of about 50 puts) while etcd is full.
    let before = relay.counter.snapshot();
    let svc = unique("svc");
    let mut args: Vec<String> = vec!["-e".into(), format!("SERVICE_NAME={svc}")];
    for port in 81..91 {
        args.extend(["-p".into(), format!("127.0.0.1::{port}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _c = Container::run(&unique("c"), &args, &["sleep", "600"]);
    let (line, took) = until_health(&addr, 1, Duration::from_secs(15), &r);
    eprintln!("unhealthy {took:?} after the writes began to be refused: {line}");
    std::thread::sleep(Duration::from_secs(3));
    let during = relay.counter.snapshot().since(&before);
    let metrics = get(&addr, "/metrics").1;
    let failed = sample(
        &metrics,
        r#"registrator_passes_total{outcome="etcd_error"}"#,
    );
    let lines = r.log().matches("database space exceeded").count();
    eprintln!("{during:?}; failed passes {failed:?}; {lines} log line(s)");
    assert_eq!(lines, 1, "{}", r.log());
    // One write per pass (and one for the container's event), not one per service.
    let writes = during.get("txn write") as f64;
    assert!(failed >= Some(3.0), "{metrics}");
    assert!(
        writes <= failed.unwrap_or(0.0) + 2.0,
        "{during:?}\n{}",
        r.log()
    );
    assert_eq!(get(&addr, "/healthz").0, 503);

    // Space freed and the alarm disarmed: registered, healthy again.
    etcdctl(&etcd.url(), &[], &["del", "--prefix", "/fill/"]);
    let status = etcdctl(&etcd.url(), &[], &["endpoint", "status", "-w", "json"]);
    let rev = serde_json::from_str::<Value>(&status).unwrap()[0]["Status"]["header"]["revision"]
        .as_i64()
        .unwrap();
    etcdctl(&etcd.url(), &[], &["compact", &rev.to_string()]);
    etcdctl(&etcd.url(), &[], &["defrag"]);
    etcdctl(&etcd.url(), &[], &["alarm", "disarm"]);
    until_health(&addr, 0, Duration::from_secs(15), &r);
    let registered = || {
        etcd_get_at(&etcd.url(), &[], &format!("{p}/{svc}-"))
            .keys()
            .filter(|k| k.ends_with("/node"))
            .count()
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || registered() == 10),
        "{}",
        r.log()
    );
    assert!(r.alive(), "{}", r.log());
}
