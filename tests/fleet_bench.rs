//! The fleet section of `make bench` (issues 11 and 17): what one host's registrator
//! costs when the prefix holds a whole fleet. It writes N other hosts x M services
//! straight into the test etcd (as registrators leave them: services, index entries and
//! instance keys), runs one registrator for a host of 10 containers behind counting
//! proxies, and prints per phase (first start, a quiet minute, a port claim, a graceful
//! and a crash restart, `--ttl 0`) the requests, the bytes etcd served, the wall time
//! and the peak RSS, each phase's fleet sizes side by side.
//!
//! Like tests/bench.rs, the scenario is an `#[ignore]`d test that tests/bench.sh runs
//! (`-- --ignored`); it writes a Markdown table to `$BENCH_FLEET_TABLE` (default
//! target/bench/fleet.md). No figure is a pass/fail check. Knob: `BENCH_FLEET`, the
//! fleet sizes as `HOSTSxSERVICES` (default `1000x30,5000x30`).

mod common;

use std::io::Write as _;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use common::relay::{docker_kind, etcd_kind, Counter, Counts, Mode, Relay, Upstream};
use common::*;
use etcd_registrator::etcd::codec::prefix_end;

/// This host's containers.
const OWN: usize = 10;
/// Keys of one service of the fleet: address, port, mode, node and one domain.
const KEYS: usize = 5;
/// etcd's default `--max-txn-ops`.
const BATCH: usize = 128;

/// The fleet sizes to measure: `(hosts, services per host)`.
fn sizes() -> Vec<(usize, usize)> {
    let spec = std::env::var("BENCH_FLEET").unwrap_or_else(|_| "1000x30,5000x30".into());
    spec.split(',')
        .filter_map(|s| {
            let (h, m) = s.trim().split_once('x')?;
            Some((h.parse().ok()?, m.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// etcd, straight through its gateway

fn post(client: &mut http::Client, path: &str, body: &Value) -> Value {
    let (status, text) = client
        .post(path, &body.to_string())
        .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
    let v: Value = serde_json::from_slice(&text)
        .unwrap_or_else(|e| panic!("etcd {path}: {e}: {}", String::from_utf8_lossy(&text)));
    assert_eq!(status, 200, "etcd {path}: {v}");
    v
}

fn range_body(prefix: &str) -> Value {
    json!({"key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix))})
}

fn count(prefix: &str) -> u64 {
    let mut body = range_body(prefix);
    body["count_only"] = json!(true);
    let v = post(&mut http::Client::new(etcd_addr()), "/v3/kv/range", &body);
    v["count"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Deletes every key under `prefix`. A busy etcd may time the request out (HTTP 503)
/// and still delete: asked again until nothing is left.
fn delete_prefix(prefix: &str) {
    for _ in 0..20 {
        let mut client = http::Client::new(etcd_addr());
        match client.post("/v3/kv/deleterange", &range_body(prefix).to_string()) {
            Ok((200, _)) => return,
            _ if count(prefix) == 0 => return,
            _ => std::thread::sleep(Duration::from_secs(2)),
        }
    }
    eprintln!("bench fleet: could not delete {prefix}");
}

/// The keys of the fleet's other hosts, as their registrators leave them.
fn fleet_keys(prefix: &str, index: &str, hosts: usize, services: usize) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(hosts * (services * (KEYS + 1) + 1));
    for h in 0..hosts {
        let host = format!("host{h:05}");
        for s in 0..services {
            let dir = format!("svc{s:02}/{host}:c{s:02}:80");
            let domain = format!("svc{s:02}-{host}.example.com");
            for (k, v) in [
                ("address", format!("10.{}.{}.{}", h / 256 % 256, h % 256, s)),
                ("port", format!("{}", 30000 + s)),
                ("mode", "http".into()),
                ("node", host.clone()),
                (&format!("domains/{domain}"), domain.clone()),
            ] {
                out.push((format!("{prefix}/{dir}/{k}"), v));
            }
            out.push((
                format!("{index}/hosts/{host}/services/{dir}"),
                format!("c{s:02}"),
            ));
        }
        out.push((
            format!("{index}/instance/{host}"),
            format!("pid 1 {h:016x}"),
        ));
    }
    out
}

/// Writes the fleet in transactions of 128 puts, on 8 connections (etcd commits
/// concurrent transactions together: one disk sync for many). A busy etcd's "request
/// timed out" (HTTP 503) is retried.
fn fill(keys: Vec<(String, String)>) -> Duration {
    let start = Instant::now();
    let batches: Vec<&[(String, String)]> = keys.chunks(BATCH).collect();
    let per = batches.len().div_ceil(8);
    std::thread::scope(|scope| {
        for part in batches.chunks(per.max(1)) {
            scope.spawn(move || {
                let mut client = http::Client::new(etcd_addr());
                for batch in part {
                    let success: Vec<Value> = batch
                        .iter()
                        .map(|(k, v)| {
                            json!({"request_put": {"key": B64.encode(k), "value": B64.encode(v)}})
                        })
                        .collect();
                    let body = json!({"success": success}).to_string();
                    for attempt in 0.. {
                        match client.post("/v3/kv/txn", &body) {
                            Ok((200, _)) => break,
                            Ok((503, _)) | Err(_) if attempt < 10 => {
                                std::thread::sleep(Duration::from_millis(500));
                            }
                            Ok((status, text)) => panic!(
                                "etcd txn: HTTP {status}: {}",
                                String::from_utf8_lossy(&text)
                            ),
                            Err(e) => panic!("etcd txn: {e}"),
                        }
                    }
                }
            });
        }
    });
    start.elapsed()
}

// ---------------------------------------------------------------------------------
// The registrator under test

/// The registrator for the fleet's new host, as a user would run it (`RUST_LOG=info`,
/// nothing added), against `docker_host`.
fn start_reg(docker_host: &str, args: &[&str]) -> Running {
    Running::spawn(command(bin(), docker_host, args))
}

/// VmHWM in KiB, the peak resident set so far; panics if the registrator exited.
fn peak_kib(reg: &mut Running) -> u64 {
    reg.check_alive();
    reg.status().kib("VmHWM:")
}

/// Waits until `done` holds and the registrator's etcd traffic has been still for 1.5 s
/// (a pass is over: a page of the full read comes faster than that); returns when the
/// last byte before that came.
fn settle(
    etcd: &Counter,
    start: Instant,
    reg: &mut Running,
    done: impl Fn(&Running) -> bool,
) -> Duration {
    let mut last = etcd.snapshot();
    let mut changed = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = etcd.snapshot();
        if now.up != last.up || now.down != last.down {
            changed = Instant::now();
            last = now;
        } else if changed.elapsed() > Duration::from_millis(1500) && done(reg) {
            return changed - start;
        }
        if start.elapsed() > Duration::from_secs(180) {
            panic!("no quiet moment within 180 s:\n{}", reg.log_tail());
        }
        peak_kib(reg);
    }
}

/// Waits for the Docker list after `after`, i.e. the start of the next pass.
fn next_list(docker: &Counter, after: u64, reg: &mut Running) -> u64 {
    let start = Instant::now();
    loop {
        let n = docker.snapshot().get("list");
        if n > after {
            return n;
        }
        if start.elapsed() > Duration::from_secs(120) {
            peak_kib(reg);
            panic!("no pass within 120 s:\n{}", reg.log_tail());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// etcd's bytes and requests over `cycles` passes (list to list), and how long they took.
fn per_pass(
    reg: &mut Running,
    docker: &Counter,
    etcd: &Counter,
    cycles: u64,
) -> (Counts, Duration) {
    let n0 = next_list(docker, docker.snapshot().get("list"), reg);
    let (e0, t0) = (etcd.snapshot(), Instant::now());
    let mut n = n0;
    while n < n0 + cycles {
        n = next_list(docker, n, reg);
    }
    (etcd.snapshot().since(&e0), t0.elapsed())
}

// ---------------------------------------------------------------------------------
// The table

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The requests of a phase: `3 (1 range, 2 txn read)`.
fn requests(c: &Counts) -> String {
    let kinds: Vec<String> = c
        .by_kind
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "put" | "delete"))
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    // `put` and `delete` count the operations inside write transactions.
    let total = c.total() - c.get("put") - c.get("delete");
    format!("{total} ({})", kinds.join(", "))
}

/// Rows by phase, so that each phase's fleet sizes stand together.
#[derive(Default)]
struct Table {
    rows: Vec<(usize, String)>,
}

impl Table {
    /// A row of phase number `phase`: its name, the fleet, then requests, bytes, wall
    /// time and peak RSS.
    fn row(&mut self, phase: usize, cells: &[&str]) {
        eprintln!("bench fleet: {}", cells.join(" | "));
        self.rows
            .push((phase, format!("| {} |", cells.join(" | "))));
    }
}

// ---------------------------------------------------------------------------------
// The scenario

#[test]
#[ignore]
fn fleet() {
    let mut table = Table::default();
    for (hosts, services) in sizes() {
        one_fleet(hosts, services, &mut table);
    }
    table.rows.sort_by_key(|(phase, _)| *phase);
    let path =
        std::env::var("BENCH_FLEET_TABLE").unwrap_or_else(|_| "target/bench/fleet.md".into());
    if let Some(dir) = std::path::Path::new(&path).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    writeln!(
        f,
        "| phase | fleet (other hosts x services; keys under the prefix) | etcd requests | \
         bytes from etcd | wall time | peak RSS |\n|---|---|---|---|---|---|"
    )
    .unwrap();
    for (_, row) in &table.rows {
        writeln!(f, "{row}").unwrap();
    }
}

/// Prefixes deleted when dropped, even when a phase panics.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            delete_prefix(p);
        }
    }
}

/// Keys under `prefix` whose name contains `needle`.
fn count_with(prefix: &str, needle: &str) -> u64 {
    let mut body = range_body(prefix);
    body["keys_only"] = json!(true);
    let v = post(&mut http::Client::new(etcd_addr()), "/v3/kv/range", &body);
    v["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| B64.decode(kv["key"].as_str()?).ok())
        .filter(|k| String::from_utf8_lossy(k).contains(needle))
        .count() as u64
}

/// The value of `key`, if it exists.
fn value(key: &str) -> Option<String> {
    let v = post(
        &mut http::Client::new(etcd_addr()),
        "/v3/kv/range",
        &json!({"key": B64.encode(key)}),
    );
    let text = B64.decode(v["kvs"][0]["value"].as_str()?).ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// Polls `done` every 5 ms for up to `limit`; how long it took.
fn until(reg: &mut Running, limit: Duration, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "not within {limit:?}:\n{}",
            reg.log_tail()
        );
        peak_kib(reg);
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// Writes a fleet of `hosts` x `services` into etcd, starts this host's containers and
/// measures each phase with one registrator at a time, as host `fleet-host`.
fn one_fleet(hosts: usize, services: usize, table: &mut Table) {
    let pid = std::process::id();
    let tag = format!("{hosts}x{services}");
    let prefix = format!("/fleet-{pid}-{tag}");
    let index = format!("/.registrator/fleet-{pid}-{tag}");
    let _cleanup = Cleanup(vec![format!("{prefix}/"), format!("{index}/")]);
    let keys = fleet_keys(&prefix, &index, hosts, services);
    let n = keys.len();
    let took = fill(keys);
    let under = count(&format!("{prefix}/"));
    eprintln!("bench fleet: wrote {n} keys ({under} under {prefix}/) in {took:.1?}");
    let fleet = format!("{hosts} x {services} ({under} keys)");

    let containers: Vec<Container> = (0..OWN)
        .map(|i| {
            let name = format!("fleet-{pid}-{tag}-{i}");
            Container::httpd(&name, 80, &[&format!("SERVICE_NAME=own{i}")])
        })
        .collect();
    let scratch = TempDir::new("fleet");
    let dproxy = Relay::unix(
        &scratch.path("docker.sock"),
        Upstream::Unix(docker_socket()),
        Mode::Forward,
    )
    .counting(docker_kind);
    let eproxy = Relay::tcp(Upstream::Tcp(etcd_addr()), Mode::Forward).counting(etcd_kind);
    let (dc, ec) = (dproxy.counter.clone(), eproxy.counter.clone());
    let host = "fleet-host";
    let uri = format!("etcd://{}{prefix}", eproxy.address);
    // The defaults (--ttl 30, --interval 10) unless `extra` says otherwise.
    let start = |extra: &[&str]| {
        let mut args = vec!["--hostname", host, "--ip", "127.0.0.1", "--explicit"];
        args.extend(extra);
        args.push(&uri);
        start_reg(&dproxy.address, &args)
    };
    let dir_keys = |name: &str| count_with(&format!("{prefix}/{name}/"), &format!("/{host}:"));
    let own_keys = || count_with(&format!("{prefix}/own"), &format!("/{host}:"));
    let instance = format!("{index}/instance/{host}");
    let mut row = |phase: usize, name: &str, c: &Counts, wall: &str, rss: &str| {
        table.row(
            phase,
            &[name, &fleet, &requests(c), &kib(c.down as f64), wall, rss],
        );
    };
    let mut more = Vec::new();

    // 1. First start: a new host reads its own (empty) index and registers.
    let e0 = ec.snapshot();
    let t0 = Instant::now();
    let mut reg = start(&[]);
    let seen = until(&mut reg, Duration::from_secs(60), || {
        own_keys() >= (OWN * 4) as u64
    });
    let wall = settle(&ec, t0, &mut reg, |_| value(&instance).is_some());
    let c = ec.snapshot().since(&e0);
    row(
        1,
        "first start of a new host (its own index, empty; all registered)",
        &c,
        &format!("{} (all {OWN} registered after {})", secs(wall), secs(seen)),
        &mib(peak_kib(&mut reg)),
    );

    // 2. A quiet minute: 6 passes at the default --interval 10, keepalives included.
    let (c, took) = per_pass(&mut reg, &dc, &ec, 6);
    row(
        2,
        "a quiet minute (6 passes at --interval 10, keepalives included)",
        &c,
        &format!("{} ({} a pass)", secs(took), kib(c.down as f64 / 6.0)),
        &mib(peak_kib(&mut reg)),
    );

    // 3. A container claims a free port: its event, then the pass that takes the claim.
    let e0 = ec.snapshot();
    let t0 = Instant::now();
    more.push(Container::httpd(
        &format!("fleet-{pid}-{tag}-claim"),
        80,
        &["SERVICE_NAME=ownclaim", "SERVICE_EXTERNAL_PORT=29999"],
    ));
    let wall = settle(&ec, t0, &mut reg, |_| dir_keys("ownclaim") == 5);
    let c = ec.snapshot().since(&e0);
    row(
        3,
        "a container claims a free port (SERVICE_EXTERNAL_PORT)",
        &c,
        &secs(wall),
        &mib(peak_kib(&mut reg)),
    );

    // 4. Graceful restart: SIGTERM releases the identity; the successor takes it at
    // once, moves the keys onto its lease and revokes the old one.
    reg.term(Duration::from_secs(5));
    let e0 = ec.snapshot();
    let t0 = Instant::now();
    let mut reg = start(&[]);
    let wall = settle(&ec, t0, &mut reg, |r| r.log().contains("revoked lease"));
    let c = ec.snapshot().since(&e0);
    row(
        4,
        "graceful restart (SIGTERM, start: the released identity taken at once)",
        &c,
        &secs(wall),
        &mib(peak_kib(&mut reg)),
    );

    // 5. Crash restart: kill -9, start at once, and a container started right then.
    // It is registered at once; the old lease's keys are left alone until it expires.
    let old = value(&instance).expect("the instance key is held");
    let _ = reg.child.kill();
    let _ = reg.child.wait();
    let e0 = ec.snapshot();
    let t0 = Instant::now();
    let mut reg = start(&[]);
    more.push(Container::httpd(
        &format!("fleet-{pid}-{tag}-crash"),
        80,
        &["SERVICE_NAME=owncrash"],
    ));
    let ran = t0.elapsed();
    let registered = ran
        + until(&mut reg, Duration::from_secs(30), || {
            dir_keys("owncrash") == 4
        });
    let all = (OWN * 4 + 5 + 4) as u64;
    let taken = until(&mut reg, Duration::from_secs(60), || {
        value(&instance).is_some_and(|v| v != old) && own_keys() == all
    });
    let wall = settle(&ec, t0, &mut reg, |_| true);
    let c = ec.snapshot().since(&e0);
    row(
        5,
        "crash restart (kill -9, start at once; a container started right then)",
        &c,
        &format!(
            "{}: the container registered after {} ({} after `docker run` returned); \
             the old lease waited out, all taken over after {}",
            secs(wall),
            secs(registered),
            secs(registered - ran),
            secs(ran + taken),
        ),
        &mib(peak_kib(&mut reg)),
    );

    // 6. --ttl 0: every pass reads this host's keys only.
    reg.term(Duration::from_secs(5));
    let mut reg = start(&["--ttl", "0", "--interval", "1", "--deregister-on-exit"]);
    next_list(&dc, dc.snapshot().get("list"), &mut reg);
    let (c, took) = per_pass(&mut reg, &dc, &ec, 1);
    row(
        6,
        "--ttl 0: one pass",
        &c,
        &secs(took),
        &mib(peak_kib(&mut reg)),
    );

    // 7. --ttl 0 --deregister-on-exit: SIGTERM.
    let e0 = ec.snapshot();
    let (code, took) = reg.term(Duration::from_secs(15));
    let c = ec.snapshot().since(&e0);
    let left = own_keys() + count(&format!("{index}/hosts/{host}/services/"));
    row(
        7,
        &format!(
            "--ttl 0 --deregister-on-exit, SIGTERM: exit {}, {left} keys left",
            code.map_or("none (killed)".into(), |c| c.to_string())
        ),
        &c,
        &secs(took),
        "-",
    );

    drop(reg);
    drop(more);
    drop(containers);
}
