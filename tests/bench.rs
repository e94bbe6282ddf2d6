//! The benchmark of issue 4 (`make bench`): latency, bursts, idle cost, CPU, memory,
//! size and cold `--once`, against the real etcd and dockerd that `tests/daemons.sh run`
//! started, plus a replay Docker API for 1,000 and 10,000 containers.
//!
//! Every scenario is an `#[ignore]`d test, so `cargo test` skips them; `tests/bench.sh`
//! runs them in order (`-- --ignored --test-threads=1`). They print progress on stderr
//! and append rows (`what \t figure \t target \t daemons`) to `$BENCH_RESULTS`, which
//! the script prints as one table. No figure is a pass/fail check: a scenario fails only
//! when it cannot measure (a command fails, a registrator dies).
//!
//! Knobs (environment): `BENCH_RUNS` (latency runs, 20), `BENCH_CPU_SECS` (60),
//! `BENCH_QUIET_CYCLES` (passes counted per quiet figure, 10; 5 at 10,000), `BENCH_REPLAY`
//! (sizes, `1000,10000`).

mod common;
#[path = "bench/metrics_cost.rs"]
mod metrics_cost;
#[path = "bench/replay.rs"]
mod replay;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use etcd_registrator::etcd::codec::{decode, encode, prefix_end, MAX_TXN_OPS};
use serde_json::{json, Value};

use common::relay::{self, Counter, Counts, Mode, Relay, Upstream};
use common::*;

// ---------------------------------------------------------------------------------
// Environment

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The key prefix of this bench run: nothing else writes under it.
fn root() -> String {
    format!("/bench-{}", std::process::id())
}

/// The service directory prefix of container `name`'s port 80 (`--hostname bench`).
fn service_dir(prefix: &str, service: &str, name: &str) -> String {
    format!("{prefix}/{service}/bench:{name}:80/")
}

/// Keys a busybox httpd container with only `SERVICE_NAME` registers: address, port,
/// mode, node.
const KEYS_PER_HTTPD: u64 = 4;

/// The fewest transactions that can write `services` services of `keys` keys each when
/// a service is never split across transactions (etcd's default `--max-txn-ops`).
fn fewest_txns(services: u64, keys: u64) -> u64 {
    services.div_ceil(MAX_TXN_OPS as u64 / keys)
}

// ---------------------------------------------------------------------------------
// Results

/// Appends one row of the table (and says it on stderr).
fn row(what: &str, figure: &str, target: &str, daemons: &str) {
    eprintln!("bench: {what}: {figure}");
    let path = std::env::var("BENCH_RESULTS")
        .unwrap_or_else(|_| format!("{}/bench-results.tsv", std::env::temp_dir().display()));
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    writeln!(
        f,
        "{}\t{}\t{}\t{}",
        clean(what),
        clean(figure),
        clean(target),
        clean(daemons)
    )
    .unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median of sorted, non-empty samples.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `min / median / max` in ms, how many runs the first poll already saw done, and how
/// many never got there.
fn stats(samples: &[Option<(Duration, u32)>], limit: Duration) -> String {
    let mut ok: Vec<f64> = samples.iter().flatten().map(|&(d, _)| ms(d)).collect();
    ok.sort_by(|a, b| a.total_cmp(b));
    let first = samples
        .iter()
        .flatten()
        .filter(|(_, polls)| *polls == 1)
        .count();
    let missed = samples.len() - ok.len();
    let mut out = if ok.is_empty() {
        "no run finished".to_string()
    } else {
        format!(
            "{:.1} / {:.1} / {:.1} ms ({first} of {} done at the first poll)",
            ok[0],
            median(&ok),
            ok[ok.len() - 1],
            samples.len()
        )
    };
    if missed > 0 {
        out.push_str(&format!(
            "; {missed} of {} runs not done within {} s",
            samples.len(),
            limit.as_secs()
        ));
    }
    out
}

/// A number of requests per cycle: whole numbers plain, others with two decimals.
fn per(n: u64, cycles: f64) -> String {
    let x = n as f64 / cycles;
    if (x - x.round()).abs() < 0.005 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// `1 list, 0 inspect` style: the `always` kinds first (even at zero), then the rest.
fn describe(c: &Counts, cycles: f64, always: &[&str]) -> String {
    let mut parts: Vec<String> = always
        .iter()
        .map(|k| format!("{} {k}", per(c.get(k), cycles)))
        .collect();
    for (k, &v) in &c.by_kind {
        if v > 0 && !always.contains(&k.as_str()) {
            parts.push(format!("{} {k}", per(v, cycles)));
        }
    }
    parts.join(", ")
}

fn kib(bytes: u64) -> String {
    let k = bytes as f64 / 1024.0;
    if k < 10.0 {
        format!("{k:.1} KiB")
    } else {
        format!("{k:.0} KiB")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

// ---------------------------------------------------------------------------------
// etcd, read directly (not through the registrator's client)

/// etcd's JSON gateway on one kept-alive connection.
struct Gateway(common::http::Client);

impl Gateway {
    fn new() -> Gateway {
        Gateway(common::http::Client::new(etcd_addr()))
    }

    fn post(&mut self, path: &str, body: Value) -> Value {
        let (status, text) = self
            .0
            .post(path, &body.to_string())
            .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
        let v: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("etcd {path}: {e}: {}", String::from_utf8_lossy(&text)));
        assert_eq!(status, 200, "etcd {path}: {v}");
        v
    }

    /// How many keys start with `prefix`: one range request with `count_only`.
    fn count(&mut self, prefix: &str) -> u64 {
        let v = self.post(
            "/v3/kv/range",
            json!({"key": encode(prefix), "range_end": encode(prefix_end(prefix)), "count_only": true}),
        );
        match &v["count"] {
            Value::String(s) => s.parse().unwrap_or(0),
            Value::Number(n) => n.as_u64().unwrap_or(0),
            _ => 0,
        }
    }

    /// The keys under `prefix` (one range request with `keys_only`).
    fn keys(&mut self, prefix: &str) -> Vec<String> {
        let v = self.post(
            "/v3/kv/range",
            json!({"key": encode(prefix), "range_end": encode(prefix_end(prefix)), "keys_only": true}),
        );
        let kvs = v["kvs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        kvs.iter()
            .filter_map(|kv| decode(kv["key"].as_str()?).ok())
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }

    fn delete_prefix(&mut self, prefix: &str) {
        self.post(
            "/v3/kv/deleterange",
            json!({"key": encode(prefix), "range_end": encode(prefix_end(prefix))}),
        );
    }

    /// Polls `prefix` every 2 ms from `t0` until `done(count)`; returns when the answer
    /// that showed it arrived and how many polls it took, or None after `limit`.
    fn poll_until(
        &mut self,
        prefix: &str,
        t0: Instant,
        limit: Duration,
        done: impl Fn(u64) -> bool,
    ) -> Option<(Duration, u32)> {
        let tick = Duration::from_millis(2);
        let mut k = 0u32;
        loop {
            if done(self.count(prefix)) {
                return Some((t0.elapsed(), k + 1));
            }
            if t0.elapsed() > limit {
                return None;
            }
            k += 1;
            let next = t0 + tick * k;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
    }

    /// Waits (polling every 50 ms) until `done(count)`; false after `limit`.
    fn wait_for(&mut self, prefix: &str, limit: Duration, done: impl Fn(u64) -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self.count(prefix)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

/// A relay in front of the shared etcd that counts requests by kind.
fn etcd_relay() -> Relay {
    Relay::tcp(Upstream::Tcp(etcd_addr()), Mode::Forward).counting(relay::etcd_kind)
}

// ---------------------------------------------------------------------------------
// The registrator under test (run as a user would: no `--ip`, so a pass that needs the
// host's address looks the host name up)

/// The loop, `bin --interval <interval> --hostname bench <registry>`, against
/// `docker_host`.
fn start(bin: &str, docker_host: &str, interval: &str, registry: &str) -> Running {
    let args = ["--interval", interval, "--hostname", "bench", registry];
    Running::spawn(command(bin, docker_host, &args))
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time of a process: utime+stime (clock ticks) and the sum of its threads' run
/// time from schedstat (ns, exact).
#[derive(Clone, Copy)]
struct Cpu {
    ticks: u64,
    sched_ns: u64,
}

fn cpu(reg: &mut Running) -> Cpu {
    reg.check_alive();
    let stat =
        std::fs::read_to_string(format!("/proc/{}/stat", reg.pid())).expect("read /proc/PID/stat");
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let mut sched_ns = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", reg.pid()))
        .expect("read /proc/PID/task")
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            sched_ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Cpu { ticks, sched_ns }
}

/// `5.8 MiB (VmRSS: 3.1 anon + 2.7 file; peak VmHWM 6.0 MiB)`.
fn memory_figure(reg: &mut Running) -> String {
    reg.check_alive();
    let status = reg.status();
    let kib = |field: &str| status.kib(field);
    let (rss, hwm, anon) = (kib("VmRSS:"), kib("VmHWM:"), kib("RssAnon:"));
    let file = kib("RssFile:") + kib("RssShmem:");
    format!(
        "{} (VmRSS: {:.1} anon + {:.1} file; peak VmHWM {})",
        mib(rss),
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
        mib(hwm)
    )
}

/// CPU milliseconds between two readings: (from ticks, from schedstat).
fn cpu_ms(a: Cpu, b: Cpu) -> (f64, f64) {
    (
        (b.ticks - a.ticks) as f64 * 1000.0 / clock_ticks_per_sec() as f64,
        (b.sched_ns - a.sched_ns) as f64 / 1e6,
    )
}

/// `registrator --once ...`: wall time and whether it exited 0.
fn once_timed(docker_host: &str, args: &[&str]) -> (Duration, bool, String) {
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let out = command(bin(), docker_host, &all)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run registrator --once");
    (start.elapsed(), out.status.success(), stderr(&out))
}

// ---------------------------------------------------------------------------------
// Docker, through its own CLI

/// The arguments after `docker run -d` / `docker create` for a busybox httpd on port 80,
/// published on 127.0.0.1, named `name`, registered as `service`.
fn httpd(name: &str, service: &str) -> Vec<String> {
    httpd_args(name, 80, &[&format!("SERVICE_NAME={service}")])
}

/// The "Docker" column of a row measured on engine `e`.
fn real(e: Engine) -> &'static str {
    match e {
        Engine::Docker => "real",
        Engine::Podman => "real Podman",
    }
}

/// Containers this bench made on one engine: `rm -f` when dropped.
struct Pool(Vec<String>, Engine);

impl Default for Pool {
    fn default() -> Pool {
        Pool(Vec::new(), Engine::Docker)
    }
}

impl Pool {
    /// `<cli> <verb> ...` (`run -d` or `create`) for each name, four at a time.
    fn add(&mut self, verb: &[&str], names: &[String], service: &str) {
        self.0.extend(names.iter().cloned());
        let e = self.1;
        in_parallel(names, 4, |n| {
            e.run_with(
                verb,
                &e.httpd_args(n, 80, &[&format!("SERVICE_NAME={service}")]),
            );
        });
    }

    fn forget(&mut self, names: &[String]) {
        self.0.retain(|n| !names.contains(n));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for chunk in self.0.chunks(50) {
            self.1.rm_quietly(chunk);
        }
    }
}

fn names(tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("bench-{tag}-{i}")).collect()
}

// ---------------------------------------------------------------------------------
// Quiet cycles

struct Quiet {
    cycles: f64,
    docker: Counts,
    etcd: Counts,
    cpu_ms_per_cycle: f64,
}

/// Waits until the container-list count passes `after`; returns the new count.
fn next_list(docker: &Counter, after: u64, reg: &mut Running) -> u64 {
    let start = Instant::now();
    loop {
        let n = docker.snapshot().get("list");
        if n > after {
            return n;
        }
        if start.elapsed() > Duration::from_secs(120) {
            reg.check_alive();
            panic!("no sync within 120 s:\n{}", reg.log_tail());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Counts exactly `cycles` passes: from just after one pass's container list to just
/// after the list of the pass `cycles` later. A pass lists first, so the window holds
/// `cycles` lists and the etcd requests and CPU of `cycles` whole passes, plus the
/// keepalives of that time.
fn measure_quiet(reg: &mut Running, docker: &Counter, etcd: &Counter, cycles: u64) -> Quiet {
    let n0 = next_list(docker, docker.snapshot().get("list"), reg);
    let (d0, e0, c0) = (docker.snapshot(), etcd.snapshot(), cpu(reg));
    let mut n = n0;
    while n < n0 + cycles {
        n = next_list(docker, n, reg);
    }
    let (d1, e1, c1) = (docker.snapshot(), etcd.snapshot(), cpu(reg));
    let cycles = cycles as f64;
    Quiet {
        cycles,
        docker: d1.since(&d0),
        etcd: e1.since(&e0),
        cpu_ms_per_cycle: cpu_ms(c0, c1).1 / cycles,
    }
}

/// Waits until the registrator's keepalive thread has refreshed its lease once (its
/// first request also fetches `/version`), so a window holds only the steady state.
fn wait_first_keepalive(etcd: &Counter, since: &Counts, reg: &mut Running) {
    let start = Instant::now();
    while etcd.snapshot().since(since).get("keepalive") == 0 {
        if start.elapsed() > Duration::from_secs(30) {
            reg.check_alive();
            eprintln!("bench: no lease keepalive within 30 s; measuring anyway");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn quiet_figure(q: &Quiet) -> String {
    format!(
        "Docker: {}; etcd: {}; {} from etcd, {:.2} ms CPU per cycle (over {} cycles)",
        describe(&q.docker, q.cycles, &["list", "inspect"]),
        describe(&q.etcd, q.cycles, &["txn write"]),
        kib((q.etcd.down as f64 / q.cycles) as u64),
        q.cpu_ms_per_cycle,
        q.cycles
    )
}

const QUIET_TARGET: &str =
    "Docker: 1 list, 0 inspect; etcd: no write, a read O(own services) or none";

// ---------------------------------------------------------------------------------
// Scenarios, run in name order by tests/bench.sh

/// Registration and deregistration latency of single containers on dockerd.
#[test]
#[ignore]
fn b1_latency() {
    latency(Engine::Docker);
}

/// [`b1_latency`] on Podman, beside dockerd's rows.
#[test]
#[ignore]
fn b1_latency_podman() {
    if let Some(e) = Engine::podman() {
        latency(e);
    }
}

/// Registration and deregistration latency of single containers on `e`, polling every
/// 2 ms.
fn latency(e: Engine) {
    let p = format!("{}/lat-{}", root(), e.name());
    let cli = e.cli().program;
    let mut reg = start(bin(), &e.host(), "10", &uri(&p));
    std::thread::sleep(Duration::from_secs(1));
    reg.check_alive();

    let runs = knob("BENCH_RUNS", 20) as usize;
    let limit = Duration::from_secs(10);
    let mut etcd = Gateway::new();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let mut pool = Pool(Vec::new(), e);
    for name in names("lat", 0..runs) {
        let dir = service_dir(&p, "lat", &name);
        pool.0.push(name.clone());
        e.run_with(
            &["run", "-d"],
            &e.httpd_args(&name, 80, &["SERVICE_NAME=lat"]),
        );
        let t0 = Instant::now();
        up.push(etcd.poll_until(&dir, t0, limit, |n| n >= KEYS_PER_HTTPD));
        std::thread::sleep(Duration::from_millis(300));

        e.run(&["stop", "-t", "5", &name]);
        let t0 = Instant::now();
        down.push(etcd.poll_until(&dir, t0, limit, |n| n == 0));
        std::thread::sleep(Duration::from_millis(100));
        e.run(&["rm", &name]);
        pool.forget(std::slice::from_ref(&name));
        std::thread::sleep(Duration::from_millis(300));
        reg.check_alive();
    }
    row(
        &format!("registration: `{cli} run -d` returns → last key readable, {runs} runs (min / median / max)"),
        &stats(&up, limit),
        "median ≤ 2 ms, max ≤ 10 ms (Go registrator: ~1 ms, max 4 ms)",
        real(e),
    );
    row(
        &format!(
            "deregistration: `{cli} stop` returns → keys gone, {runs} runs (min / median / max)"
        ),
        &stats(&down, limit),
        "median ≤ 2 ms, max ≤ 10 ms (Go registrator: ~1 ms)",
        real(e),
    );
    etcd.delete_prefix(&format!("{p}/"));
}

/// Polls `prefix` every 2 ms on its own connection until `done(count)`.
fn watch_for(
    prefix: String,
    done: fn(u64) -> bool,
    limit: Duration,
) -> std::thread::JoinHandle<Option<Instant>> {
    std::thread::spawn(move || {
        let mut etcd = Gateway::new();
        let t0 = Instant::now();
        etcd.poll_until(&prefix, t0, limit, done)
            .map(|(d, _)| t0 + d)
    })
}

/// `POST /containers/{name}/start` on `e`'s Docker API socket; returns the HTTP status
/// and, for an error, the answer's body.
fn docker_start_api(e: Engine, name: &str) -> (u16, String) {
    let mut conn =
        std::os::unix::net::UnixStream::connect(e.socket()).expect("connect to the Docker socket");
    let request = format!(
        "POST /containers/{name}/start HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).expect("send start");
    let mut r = std::io::BufReader::new(conn);
    let head = common::http::read_head(&mut r)
        .expect("read start answer")
        .expect("an answer to start");
    let body = match head.status() {
        204 | 304 => Vec::new(),
        _ => common::http::read_body(&mut r, &head).map_or_else(|e| e.to_string().into(), |b| b.1),
    };
    (head.status(), String::from_utf8_lossy(&body).into_owned())
}

/// Starts every container at once, one thread each; returns each name with when its
/// call was sent and when it returned.
fn start_all(e: Engine, names: &[String]) -> Vec<(String, Instant, Instant)> {
    let gate = std::sync::Barrier::new(names.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .iter()
            .map(|n| {
                let gate = &gate;
                s.spawn(move || {
                    gate.wait();
                    let t = Instant::now();
                    let (status, body) = docker_start_api(e, n);
                    assert!(
                        status == 204 || status == 304,
                        "start {n}: HTTP {status} {body}"
                    );
                    (n.clone(), t, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Polls the keys under `prefix` every 2 ms on its own connection and records when
/// each container's service (all its keys) first shows up, until `n` have.
fn watch_services(
    prefix: String,
    n: usize,
    limit: Duration,
) -> std::thread::JoinHandle<std::collections::BTreeMap<String, Instant>> {
    std::thread::spawn(move || {
        let mut etcd = Gateway::new();
        let mut seen = std::collections::BTreeMap::new();
        let t0 = Instant::now();
        let mut k = 0u32;
        while seen.len() < n && t0.elapsed() < limit {
            let keys = etcd.keys(&prefix);
            let now = Instant::now();
            let mut per: std::collections::BTreeMap<String, u64> =
                std::collections::BTreeMap::new();
            for key in &keys {
                // <prefix>bench:<container>:80/<field>
                if let Some(name) = key
                    .strip_prefix(&prefix)
                    .and_then(|r| r.strip_prefix("bench:"))
                    .and_then(|r| r.split(':').next())
                {
                    *per.entry(name.to_string()).or_default() += 1;
                }
            }
            for (name, count) in per {
                if count >= KEYS_PER_HTTPD {
                    seen.entry(name).or_insert(now);
                }
            }
            k += 1;
            let next = t0 + Duration::from_millis(2) * k;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
        }
        seen
    })
}

/// `at` minus `reference`, in ms (negative when `at` came first).
fn signed(at: Instant, reference: Instant) -> f64 {
    match at.checked_duration_since(reference) {
        Some(d) => ms(d),
        None => -ms(reference - at),
    }
}

/// `12 ms` / `-3 ms`: `at` relative to `reference`.
fn signed_ms(at: Instant, reference: Instant) -> String {
    format!("{:.0} ms", signed(at, reference))
}

/// 50 containers started at once, CPU with them at `--interval 10`, then removed at once,
/// on dockerd.
#[test]
#[ignore]
fn b2_bursts_and_cpu() {
    bursts(Engine::Docker, true);
}

/// [`b2_bursts_and_cpu`]'s bursts on Podman, beside dockerd's rows (not the CPU minute).
#[test]
#[ignore]
fn b2_bursts_podman() {
    if let Some(e) = Engine::podman() {
        bursts(e, false);
    }
}

/// 50 containers started at once on `e`, the CPU and memory of a quiet minute with them
/// when `cpu_minute`, then removed at once.
fn bursts(e: Engine, cpu_minute: bool) {
    const N: u64 = 50;
    let p = format!("{}/burst-{}", root(), e.name());
    let cli = e.cli().program;
    let mut reg = start(bin(), &e.host(), "10", &uri(&p));
    std::thread::sleep(Duration::from_secs(1));
    reg.check_alive();
    let mut etcd = Gateway::new();
    let all = format!("{p}/burst/");
    let want = N * KEYS_PER_HTTPD;
    let limit = Duration::from_secs(60);

    let burst = names("burst", 0..N as usize);
    let mut pool = Pool(Vec::new(), e);
    eprintln!("bench: creating {N} containers");
    pool.add(&["create"], &burst, "burst");

    // All 50 started at once: concurrent start calls on the Docker API (the CLI's
    // `docker start a b ...` would start them one after another). A watcher records
    // when each container's keys first show up.
    let watcher = watch_services(all.clone(), N as usize, limit);
    let calls = start_all(e, &burst);
    let seen = watcher.join().unwrap();
    let began = calls.iter().map(|c| c.1).min().unwrap();
    let returned = calls.iter().map(|c| c.2).max().unwrap();
    let figure = if seen.len() == N as usize {
        let done = *seen.values().max().unwrap();
        let mut lags: Vec<f64> = calls.iter().map(|(n, _, r)| signed(seen[n], *r)).collect();
        lags.sort_by(|a, b| a.total_cmp(b));
        format!(
            "all registered {} after the last start call returned; the {N} calls took {:.2} s{}; each container registered {:.1} / {:.1} / {:.1} ms (min / median / max) after its own start call returned",
            signed_ms(done, returned),
            (returned - began).as_secs_f64(),
            match e {
                Engine::Docker => " (dockerd serializes them)",
                Engine::Podman => "",
            },
            lags[0],
            median(&lags),
            lags[lags.len() - 1]
        )
    } else {
        format!(
            "only {} of {N} registered after {} s",
            seen.len(),
            limit.as_secs()
        )
    };
    row(&format!("burst: {N} created containers started at once ({N} concurrent start calls) → all registered"), &figure, "< 2 s", real(e));

    // A quiet minute with 50 containers at the default 10 s interval.
    assert!(
        etcd.wait_for(&all, limit, |n| n == want),
        "burst not registered:\n{}",
        reg.log_tail()
    );
    if cpu_minute {
        std::thread::sleep(Duration::from_secs(2));
        let secs = knob("BENCH_CPU_SECS", 60);
        eprintln!("bench: measuring CPU for {secs} s");
        let c0 = cpu(&mut reg);
        std::thread::sleep(Duration::from_secs(secs));
        let c1 = cpu(&mut reg);
        let (by_ticks, by_sched) = cpu_ms(c0, c1);
        let scale = 60.0 / secs as f64;
        row(
            &format!("CPU time per minute, {N} containers, `--interval 10` (over {secs} s)"),
            &format!(
                "{:.0} ms (utime+stime, {} ms ticks; {:.1} ms by schedstat)",
                by_ticks * scale,
                1000 / clock_ticks_per_sec(),
                by_sched * scale
            ),
            "< 30 ms (Go registrator: 330-440 ms)",
            "real",
        );
        row(
            &format!("resident memory, {N} containers, `--interval 10`"),
            &memory_figure(&mut reg),
            "(Go registrator: 13 MB)",
            "real",
        );
    }

    // All 50 removed by one `docker rm -f` (the CLI removes them in parallel). Podman's
    // `rm -f` stops them first (as `stop` does); `-t 0` kills at once, as dockerd's does.
    let watcher = watch_for(all.clone(), |n| n == 0, limit);
    let began = Instant::now();
    let rm: &[&str] = match e {
        Engine::Docker => &["rm", "-f"],
        Engine::Podman => &["rm", "-f", "-t", "0"],
    };
    let mut args = rm.to_vec();
    args.extend(burst.iter().map(String::as_str));
    e.run(&args);
    let returned = Instant::now();
    pool.forget(&burst);
    let figure = match watcher.join().unwrap() {
        Some(done) => format!(
            "{} after it returned ({:.2} s after it began; the command took {:.2} s)",
            signed_ms(done, returned),
            (done - began).as_secs_f64(),
            (returned - began).as_secs_f64()
        ),
        None => format!(
            "{} of {want} keys still there after {} s",
            etcd.count(&all),
            limit.as_secs()
        ),
    };
    row(
        &format!(
            "burst: {N} containers removed by one `{cli} {}` → all deregistered",
            rm.join(" ")
        ),
        &figure,
        "< 1 s (Go registrator: about half left registered)",
        real(e),
    );
    reg.check_alive();
    etcd.delete_prefix(&format!("{p}/"));
}

/// Requests per quiet cycle at 0, 10 and 100 real containers through counting proxies,
/// memory at 100, and a cold `--once` at 100.
#[test]
#[ignore]
fn b3_idle_cost() {
    let scratch = TempDir::new("bench-idle");
    let docker_proxy = Relay::unix(
        &scratch.path("docker.sock"),
        Upstream::Unix(docker_socket()),
        Mode::Forward,
    )
    .counting(relay::docker_kind);
    let etcd_proxy = etcd_relay();
    let cycles = knob("BENCH_QUIET_CYCLES", 10);
    let mut etcd = Gateway::new();
    let mut pool = Pool::default();
    for n in [0usize, 10, 100] {
        let have = pool.0.len();
        if n > have {
            eprintln!("bench: starting {} containers", n - have);
            pool.add(&["run", "-d"], &names("idle", have..n), "idle");
        }
        let p = format!("{}/quiet{n}", root());
        let e0 = etcd_proxy.counter.snapshot();
        let mut reg = start(
            bin(),
            &docker_proxy.address,
            "1",
            &uri_at(&etcd_proxy.address, &p),
        );
        let want = n as u64 * KEYS_PER_HTTPD;
        assert!(
            etcd.wait_for(&format!("{p}/"), Duration::from_secs(60), |c| c == want),
            "not registered:\n{}",
            reg.log_tail()
        );
        wait_first_keepalive(&etcd_proxy.counter, &e0, &mut reg);
        let q = measure_quiet(&mut reg, &docker_proxy.counter, &etcd_proxy.counter, cycles);
        row(
            &format!("quiet cycle, {n} containers, `--interval 1`: requests per cycle"),
            &quiet_figure(&q),
            QUIET_TARGET,
            "real",
        );
        if n == 100 {
            row(
                "resident memory, 100 containers (release binary)",
                &memory_figure(&mut reg),
                "< 4 MiB",
                "real",
            );
        }
        drop(reg);
        etcd.delete_prefix(&format!("{p}/"));
    }

    // What one container start and one stop cost with 100 others running: every request
    // from the command to its keys being there (gone), plus 300 ms for trailing passes.
    // The loop runs at `--interval 10` and this happens in its first seconds, so no
    // periodic pass or keepalive falls inside.
    {
        let p = format!("{}/event", root());
        let mut reg = start(
            bin(),
            &docker_proxy.address,
            "10",
            &uri_at(&etcd_proxy.address, &p),
        );
        let want = pool.0.len() as u64 * KEYS_PER_HTTPD;
        assert!(
            etcd.wait_for(&format!("{p}/"), Duration::from_secs(60), |c| c == want),
            "not registered:\n{}",
            reg.log_tail()
        );
        std::thread::sleep(Duration::from_secs(1));
        let name = "bench-event-0".to_string();
        let dir = service_dir(&p, "event", &name);
        let limit = Duration::from_secs(10);
        let others = pool.0.len();
        let (d0, e0) = (
            docker_proxy.counter.snapshot(),
            etcd_proxy.counter.snapshot(),
        );
        pool.0.push(name.clone());
        docker_with(&["run", "-d"], &httpd(&name, "event"));
        assert!(
            etcd.poll_until(&dir, Instant::now(), limit, |c| c == KEYS_PER_HTTPD)
                .is_some(),
            "not registered:\n{}",
            reg.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
        let (d1, e1) = (
            docker_proxy.counter.snapshot(),
            etcd_proxy.counter.snapshot(),
        );
        docker(&["stop", "-t", "5", &name]);
        assert!(
            etcd.poll_until(&dir, Instant::now(), limit, |c| c == 0)
                .is_some(),
            "not deregistered:\n{}",
            reg.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
        let (d2, e2) = (
            docker_proxy.counter.snapshot(),
            etcd_proxy.counter.snapshot(),
        );
        reg.check_alive();
        let cost = |d: Counts, e: Counts| {
            format!(
                "Docker: {}; etcd: {}",
                describe(&d, 1.0, &["list", "inspect"]),
                describe(&e, 1.0, &["txn write"])
            )
        };
        row(
            &format!("one `docker run -d` with {others} containers running: requests until registered (+300 ms)"),
            &cost(d1.since(&d0), e1.since(&e0)),
            "inspect only the new container; write only its service",
            "real",
        );
        row(
            &format!("one `docker stop` with {others} containers running: requests until deregistered (+300 ms)"),
            &cost(d2.since(&d1), e2.since(&e1)),
            "delete only its service",
            "real",
        );
        drop(reg);
        docker(&["rm", "-f", &name]);
        pool.forget(std::slice::from_ref(&name));
        etcd.delete_prefix(&format!("{p}/"));
    }

    // The same for the static musl binary (another allocator, no shared libraries).
    if let Some((musl, stale)) = musl_binary() {
        let p = format!("{}/musl", root());
        let mut reg = start(musl.to_str().unwrap(), &docker_host(), "1", &uri(&p));
        let want = pool.0.len() as u64 * KEYS_PER_HTTPD;
        assert!(
            etcd.wait_for(&format!("{p}/"), Duration::from_secs(60), |c| c == want),
            "not registered:\n{}",
            reg.log_tail()
        );
        std::thread::sleep(Duration::from_secs(cycles));
        let note = if stale {
            " (binary older than the release one: may be stale)"
        } else {
            ""
        };
        row(
            &format!(
                "resident memory, {} containers (static musl binary)",
                pool.0.len()
            ),
            &format!("{}{note}", memory_figure(&mut reg)),
            "< 4 MiB",
            "real",
        );
        drop(reg);
        etcd.delete_prefix(&format!("{p}/"));
    }

    // Cold `--once` at 100: timed on the direct sockets, counted through the proxies.
    let n = pool.0.len() as u64;
    let p = format!("{}/cold", root());
    let (wall, ok, err) = once_timed(&docker_host(), &["--hostname", "bench", &uri(&p)]);
    assert!(ok, "--once failed: {err}");
    assert_eq!(etcd.count(&format!("{p}/")), n * KEYS_PER_HTTPD);
    etcd.delete_prefix(&format!("{p}/"));
    let (d0, e0) = (
        docker_proxy.counter.snapshot(),
        etcd_proxy.counter.snapshot(),
    );
    let (_, ok, err) = once_timed(
        &docker_proxy.address,
        &["--hostname", "bench", &uri_at(&etcd_proxy.address, &p)],
    );
    assert!(ok, "--once through the proxies failed: {err}");
    let (d, e) = (
        docker_proxy.counter.snapshot().since(&d0),
        etcd_proxy.counter.snapshot().since(&e0),
    );
    etcd.delete_prefix(&format!("{p}/"));
    row(
        &format!("cold `--once`, {n} containers (empty prefix)"),
        &format!(
            "{:.0} ms wall; etcd: {} write txns (fewest possible {}), {} puts for {} keys, {} requests in all; Docker: {} list, {} inspect",
            ms(wall),
            e.get("txn write"),
            fewest_txns(n, KEYS_PER_HTTPD),
            e.get("put"),
            n * KEYS_PER_HTTPD,
            e.total() - e.get("put") - e.get("delete"),
            d.get("list"),
            d.get("inspect")
        ),
        "each service written once, in as few txns as the 128-op limit allows",
        "real",
    );
}

/// The static musl build next to the release binary, if there is one, and whether it
/// may be stale: older than the release binary, unless bench.sh has just had cargo
/// bring it up to date (`BENCH_STATIC_FRESH=1`).
fn musl_binary() -> Option<(PathBuf, bool)> {
    let release = Path::new(bin());
    let target = release.parent().and_then(Path::parent)?;
    let musl = target.join("x86_64-unknown-linux-musl/release/registrator");
    let m = std::fs::metadata(&musl).ok()?;
    let fresh = std::env::var("BENCH_STATIC_FRESH").is_ok_and(|v| v == "1");
    let stale = match (
        m.modified(),
        std::fs::metadata(release).and_then(|r| r.modified()),
    ) {
        (Ok(a), Ok(b)) => !fresh && a + Duration::from_secs(60) < b,
        _ => false,
    };
    Some((musl, stale))
}

/// Binary sizes.
#[test]
#[ignore]
fn b4_size() {
    let release = Path::new(bin());
    let meta = std::fs::metadata(release).expect("release binary");
    row(
        "binary size, release (glibc, dynamic)",
        &format!(
            "{:.2} MiB ({} bytes)",
            meta.len() as f64 / 1048576.0,
            meta.len()
        ),
        "—",
        "—",
    );
    let figure = match musl_binary() {
        Some((musl, stale)) => {
            let len = std::fs::metadata(musl).map(|m| m.len()).unwrap_or(0);
            let note = if stale {
                " (older than the release binary: may be stale)"
            } else {
                ""
            };
            format!("{:.2} MiB ({len} bytes){note}", len as f64 / 1048576.0)
        }
        None => "not built (`make static`)".to_string(),
    };
    row(
        "binary size, static musl (`make static`)",
        &figure,
        "< 3 MiB",
        "—",
    );
}

/// Cold `--once`, quiet-cycle requests and memory at 1,000 and 10,000 containers,
/// answered by the replay Docker API.
#[test]
#[ignore]
fn b5_replay() {
    let sizes: Vec<usize> = std::env::var("BENCH_REPLAY")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let scratch = TempDir::new("bench-replay");
    let cycles = knob("BENCH_QUIET_CYCLES", 10);
    let mut etcd = Gateway::new();
    for n in sizes {
        eprintln!("bench: replay server with {n} containers");
        let replay = replay::start(&scratch.path(&format!("replay-{n}.sock")), n).unwrap();
        let etcd_proxy = etcd_relay();
        let keys = replay.keys_per_service as u64;
        let want = n as u64 * keys;

        let p = format!("{}/replay{n}-once", root());
        let (wall, ok, err) = once_timed(
            &replay.docker_host(),
            &["--hostname", "bench", &uri_at(&etcd_proxy.address, &p)],
        );
        assert!(ok, "--once failed: {err}");
        let got = etcd.count(&format!("{p}/"));
        assert_eq!(got, want, "--once at {n} wrote {got} keys, not {want}");
        etcd.delete_prefix(&format!("{p}/"));
        let (d, e) = (replay.counter.snapshot(), etcd_proxy.counter.snapshot());
        row(
            &format!("cold `--once`, {n} containers (empty prefix)"),
            &format!(
                "{:.0} ms wall; etcd: {} write txns (fewest possible {}), {} puts for {want} keys; Docker: {} list, {} inspect",
                ms(wall),
                e.get("txn write"),
                fewest_txns(n as u64, keys),
                e.get("put"),
                d.get("list"),
                d.get("inspect")
            ),
            "each service written once, fewest txns",
            "replay",
        );

        let p = format!("{}/replay{n}", root());
        let e0 = etcd_proxy.counter.snapshot();
        let started = Instant::now();
        let mut reg = start(
            bin(),
            &replay.docker_host(),
            "1",
            &uri_at(&etcd_proxy.address, &p),
        );
        assert!(
            etcd.wait_for(&format!("{p}/"), Duration::from_secs(180), |c| c == want),
            "not registered:\n{}",
            reg.log_tail()
        );
        let first = started.elapsed();
        wait_first_keepalive(&etcd_proxy.counter, &e0, &mut reg);
        // A pass at 10,000 takes seconds: fewer of them.
        let q = measure_quiet(
            &mut reg,
            &replay.counter,
            &etcd_proxy.counter,
            if n > 1000 { cycles.div_ceil(2) } else { cycles },
        );
        row(
            &format!("quiet cycle, {n} containers, `--interval 1`: requests per cycle"),
            &quiet_figure(&q),
            QUIET_TARGET,
            "replay",
        );
        row(
            &format!("resident memory, {n} containers (release binary)"),
            &format!(
                "{}; loop start → all registered: {:.1} s",
                memory_figure(&mut reg),
                first.as_secs_f64()
            ),
            "—",
            "replay",
        );
        drop(reg);
        etcd.delete_prefix(&format!("{p}/"));
    }
}
