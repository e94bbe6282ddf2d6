//! Fault injection against real daemons of the suite's own: etcd stopped and restarted
//! (same and empty data dir), a 3-member cluster losing its leader or a member's
//! endpoint, dockerd killed and restarted, the Docker socket missing, a wrong
//! DOCKER_HOST, proxies that answer garbage, cut the body or stall, and bursts of 200
//! containers. Every case ends with a check that the keys in etcd equal exactly the
//! services that should exist for the registrator's `--hostname`.
//!
//! Cases run one at a time (a lock), against a private dockerd (`tests/daemons.sh up`
//! with REG_TEST_DIR=/tmp/reg-faults-docker and bridge regfault0) that only this suite
//! uses, so the exact checks see only its containers. It is torn down when the test
//! process exits; then a summary table (fault | what was checked | outcome) is printed
//! and written to target/fault-summary.md.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------------
// The suite: one case at a time, a row per case, the private dockerd.

static SERIAL: Mutex<()> = Mutex::new(());
static ROWS: Mutex<Vec<[String; 3]>> = Mutex::new(Vec::new());
static DOCKERD_UP: Mutex<bool> = Mutex::new(false);
static AT_EXIT: Once = Once::new();

const DOCKER_DIR: &str = "/tmp/reg-faults-docker";
/// The etcd that `tests/daemons.sh up` starts next to the private dockerd.
const SCRIPT_ETCD: &str = "http://127.0.0.1:24790";

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One fault case: holds the suite lock, records its row (with the notes the case
/// measured) when dropped. Declare it first in a test, so it is dropped last.
struct Case {
    fault: String,
    checked: String,
    notes: Vec<String>,
    start: Instant,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    fn new(fault: &str, checked: &str) -> Case {
        let serial = lock(&SERIAL);
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain extern "C" function once.
            unsafe {
                libc::atexit(at_exit);
            }
        });
        eprintln!("=== fault: {fault}");
        Case {
            fault: fault.into(),
            checked: checked.into(),
            notes: Vec::new(),
            start: Instant::now(),
            _serial: serial,
        }
    }

    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        eprintln!("    {s}");
        self.notes.push(s);
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        if *lock(&DOCKERD_UP) {
            // Leave the private dockerd empty for the next case.
            let d = Dock::new();
            let ids: Vec<String> = d
                .docker_out(&["ps", "-aq"])
                .split_whitespace()
                .map(String::from)
                .collect();
            d.rm_many(&ids, 4, false);
        }
        let verdict = if std::thread::panicking() {
            "FAIL"
        } else {
            "pass"
        };
        let mut outcome = format!("{verdict} ({:.0} s)", self.start.elapsed().as_secs_f64());
        if !self.notes.is_empty() {
            outcome = format!("{outcome}: {}", self.notes.join("; "));
        }
        lock(&ROWS).push([self.fault.clone(), self.checked.clone(), outcome]);
    }
}

fn target_dir() -> PathBuf {
    // target/debug/deps/faults-<hash>
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

extern "C" fn at_exit() {
    if std::mem::take(&mut *lock(&DOCKERD_UP)) {
        teardown();
    }
    print_summary();
}

/// Stops the private dockerd and everything it left. A dockerd that hangs (20.10 can
/// deadlock in libnetwork under mass removal) is killed by PID, and so are the shims
/// and containers of its containerd, found by their `-address` under our dir.
fn teardown() {
    let down = script_cmd("down")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let finished = down.map(|mut c| {
        let done = wait_until(Duration::from_secs(90), || {
            c.try_wait().ok().flatten().is_some()
        });
        if !done {
            let _ = c.kill();
            let _ = c.wait();
        }
        done
    });
    if finished.ok() != Some(true) {
        eprintln!("faults: the private dockerd did not stop cleanly; killing it and its containers by PID");
        if let Some(pid) = std::fs::read_to_string(format!("{DOCKER_DIR}/dockerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            kill_pid(pid, libc::SIGKILL);
        }
        let procs = processes();
        let shims: Vec<u32> = procs
            .iter()
            .filter(|(_, _, cmd)| cmd.contains("containerd-shim") && cmd.contains(DOCKER_DIR))
            .map(|(pid, _, _)| *pid)
            .collect();
        // A container's init is the shim's child; killing it ends the container.
        for (pid, ppid, _) in &procs {
            if shims.contains(ppid) {
                kill_pid(*pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        for pid in shims {
            kill_pid(pid, libc::SIGKILL);
        }
        let _ = script("down");
    }
    {
        // `down` leaves dockerd's bind mount of its data root behind: unmount what is
        // still mounted under our own dir (deepest first), then remove it.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(DOCKER_DIR))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg(m).output();
        }
        let _ = std::fs::remove_dir_all(DOCKER_DIR);
    }
}

/// (pid, parent pid, command line) of every process, from /proc.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        out.push((pid, ppid, cmd));
    }
    out
}

fn print_summary() {
    let rows = lock(&ROWS);
    if rows.is_empty() {
        return;
    }
    let mut table = String::from("| fault | what was checked | outcome |\n|---|---|---|\n");
    for [f, c, o] in rows.iter() {
        table.push_str(&format!("| {f} | {c} | {o} |\n"));
    }
    let path = target_dir().join("fault-summary.md");
    let _ = std::fs::write(&path, &table);
    let mut out = std::io::stdout();
    let _ = write!(
        out,
        "\nFault suite summary (also in {}):\n\n{table}",
        path.display()
    );
    let _ = out.flush();
}

/// `tests/daemons.sh <cmd>` for the private dockerd (and its etcd on 24790).
fn script(cmd: &str) -> Output {
    script_cmd(cmd).output().expect("run tests/daemons.sh")
}

fn script_cmd(cmd: &str) -> Command {
    let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/daemons.sh"));
    c.arg(cmd)
        .env("REG_TEST_DIR", DOCKER_DIR)
        .env("REG_ETCD_PORT", "24790")
        .env("REG_ETCD_PEER_PORT", "24800")
        .env("REG_BRIDGE", "regfault0")
        .env("REG_BRIDGE_CIDR", "172.31.2.1/24");
    c
}

/// The private dockerd: started on first use, emptied by every case.
struct Dock {
    host: String,
}

impl Dock {
    fn new() -> Dock {
        Dock {
            host: format!("unix://{DOCKER_DIR}/docker.sock"),
        }
    }

    /// Starts the private dockerd if needed, with no containers.
    fn get() -> Dock {
        let mut up = lock(&DOCKERD_UP);
        if !*up {
            let out = script("up");
            assert!(
                out.status.success(),
                "private dockerd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            *up = true;
        }
        drop(up);
        let d = Dock::new();
        let ids: Vec<String> = d
            .docker_out(&["ps", "-aq"])
            .split_whitespace()
            .map(String::from)
            .collect();
        d.rm_many(&ids, 4, false);
        d
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(format!("{DOCKER_DIR}/docker.sock"))
    }

    /// Runs the docker CLI, at most 60 s: a hung dockerd fails the case instead of
    /// hanging the suite.
    fn exec(&self, args: &[&str]) -> Output {
        let out = TempDir::new("dockercli");
        let mut child = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(out.path("stdout")).unwrap())
            .stderr(std::fs::File::create(out.path("stderr")).unwrap())
            .spawn()
            .expect("run docker");
        let mut status = None;
        wait_until(Duration::from_secs(60), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("docker {args:?} did not finish within 60 s: dockerd hangs");
        };
        Output {
            status,
            stdout: std::fs::read(out.path("stdout")).unwrap(),
            stderr: std::fs::read(out.path("stderr")).unwrap(),
        }
    }

    /// Runs docker; panics on failure.
    fn docker(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs docker; stdout, whatever the outcome.
    fn docker_out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.exec(args).stdout).into_owned()
    }

    /// A busybox httpd with SERVICE_NAME=web, port 80 published on 127.0.0.1 at a port
    /// of ours: two dockerds on one host both hand out 32768 upwards and collide.
    fn httpd(&self, name: &str, extra: &[&str]) -> String {
        for _ in 0..5 {
            let publish = format!("127.0.0.1:{}:80", container_port());
            let mut args = vec![
                "run",
                "-d",
                "--init",
                "--pull",
                "never",
                "--name",
                name,
                "-p",
                &publish,
                "-e",
                "SERVICE_NAME=web",
            ];
            args.extend_from_slice(extra);
            args.extend_from_slice(&[
                "local/busybox:latest",
                "httpd",
                "-f",
                "-p",
                "80",
                "-h",
                "/www",
            ]);
            let out = self.exec(&args);
            if out.status.success() {
                return name.to_string();
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("address already in use"),
                "docker run {name}: {err}"
            );
            self.docker_out(&["rm", "-f", name]);
        }
        panic!("docker run {name}: no free port");
    }

    /// Starts `names` with `workers` docker clients in parallel.
    fn httpd_many(&self, names: &[String], workers: usize) {
        let chunks: Vec<Vec<String>> = names
            .chunks(names.len().div_ceil(workers))
            .map(|c| c.to_vec())
            .collect();
        std::thread::scope(|s| {
            for chunk in &chunks {
                s.spawn(move || {
                    for n in chunk {
                        Dock::new().httpd(n, &[]);
                    }
                });
            }
        });
    }

    /// Removes containers one per docker call, `workers` at a time. (One `docker rm -f`
    /// of 50 names makes dockerd 20.10 remove them all at once, which on a busy host
    /// deadlocked it in libnetwork.)
    fn rm_many(&self, names: &[String], workers: usize, check: bool) {
        if names.is_empty() {
            return;
        }
        let chunks: Vec<Vec<String>> = names
            .chunks(names.len().div_ceil(workers))
            .map(|c| c.to_vec())
            .collect();
        std::thread::scope(|s| {
            for chunk in &chunks {
                s.spawn(move || {
                    for n in chunk {
                        if check {
                            Dock::new().docker(&["rm", "-f", n]);
                        } else {
                            Dock::new().docker_out(&["rm", "-f", n]);
                        }
                    }
                });
            }
        });
    }

    fn rm(&self, names: &[String]) {
        self.rm_many(names, 4, true);
    }

    /// Running containers and the host port of their port 80.
    fn running(&self) -> BTreeMap<String, u16> {
        let out = self.docker(&["ps", "--format", "{{.Names}}\t{{.Ports}}"]);
        out.lines()
            .filter_map(|l| {
                let (name, ports) = l.split_once('\t')?;
                // 127.0.0.1:32768->80/tcp
                let port = ports
                    .split("->80/tcp")
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_string(), port))
            })
            .collect()
    }

    /// Exactly the keys the registrator of `host` should have written under `prefix`.
    fn expected(&self, prefix: &str, host: &str) -> BTreeMap<String, String> {
        let mut want = BTreeMap::new();
        for (name, port) in self.running() {
            want.extend(service_keys(prefix, host, "web", &name, port));
        }
        want
    }

    fn dockerd_pid(&self) -> u32 {
        std::fs::read_to_string(format!("{DOCKER_DIR}/dockerd.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Stops dockerd with `sig` and waits until the process is gone.
    fn stop_dockerd(&self, sig: i32) {
        let pid = self.dockerd_pid();
        kill_pid(pid, sig);
        let gone = wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z "))
                .unwrap_or(true)
        });
        assert!(gone, "dockerd {pid} did not exit");
    }

    fn start_dockerd(&self) {
        let out = script("up");
        assert!(
            out.status.success(),
            "restart dockerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

static NEXT_CONTAINER_PORT: AtomicUsize = AtomicUsize::new(0);

/// A free port in 25000-25999 for a container of the private dockerd.
fn container_port() -> u16 {
    loop {
        let n = NEXT_CONTAINER_PORT.fetch_add(1, Ordering::SeqCst);
        let port = 25000 + (n % 1000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The registrator with this DOCKER_HOST.
fn start(docker_host: &str, args: &[&str]) -> Running {
    let mut cmd = registrator(args);
    cmd.env("DOCKER_HOST", docker_host);
    Running::spawn(cmd)
}

fn once_with(docker_host: &str, args: &[&str]) -> Output {
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    registrator(&all)
        .env("DOCKER_HOST", docker_host)
        .output()
        .unwrap()
}

fn diff(want: &BTreeMap<String, String>, got: &BTreeMap<String, String>) -> String {
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, v)| want.get(*k) != Some(v))
        .collect();
    format!("missing or different: {missing:?}\nunexpected: {extra:?}")
}

/// Waits until etcd (read from `endpoints`) holds exactly what Docker says should be
/// registered; returns how long that took.
fn exact(
    what: &str,
    endpoints: &str,
    prefix: &str,
    host: &str,
    dock: &Dock,
    limit: Duration,
    r: &Running,
) -> Duration {
    let start = Instant::now();
    let mut last = (BTreeMap::new(), BTreeMap::new());
    let ok = wait_until(limit, || {
        let want = dock.expected(prefix, host);
        let got = etcd_get_at(endpoints, &[], &format!("{prefix}/"));
        let same = want == got;
        last = (want, got);
        same
    });
    assert!(
        ok,
        "{what}: etcd does not match Docker after {limit:?}\n{}\nregistrator log:\n{}",
        diff(&last.0, &last.1),
        r.log()
    );
    start.elapsed()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Lines of the log that contain `needle`.
fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// SIGTERM, and how long the exit took (None: still running after `limit`).
fn term(r: &mut Running, limit: Duration) -> (Option<i32>, Duration) {
    kill_pid(r.pid() as u32, libc::SIGTERM);
    r.wait(limit)
}

// ---------------------------------------------------------------------------------
// A TCP proxy on 127.0.0.1 that forwards, answers garbage, cuts the body short or
// stalls, switchable while it runs (switching cuts the open connections).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Forward,
    /// Bytes that are not HTTP, then close.
    Garbage,
    /// A 200 with Content-Length 4096 and 30 bytes of JSON, then close.
    CutBody,
    /// Accept, read, never answer.
    Stall,
    /// Forward everything except etcd transactions that write (`POST /v3/kv/txn` with a
    /// put or delete), which are cut: reads succeed (read-only transactions included),
    /// writes fail.
    CutTxn,
}

#[derive(Clone)]
enum Upstream {
    Tcp(u16),
    Unix(PathBuf),
}

struct Proxy {
    port: u16,
    inner: Arc<ProxyInner>,
}

struct ProxyInner {
    mode: Mutex<Mode>,
    conns: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
    upstream: Upstream,
}

impl Proxy {
    fn start(upstream: Upstream, mode: Mode) -> Proxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind proxy");
        let inner = Arc::new(ProxyInner {
            mode: Mutex::new(mode),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            upstream,
        });
        let i = inner.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if i.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let i = i.clone();
                std::thread::spawn(move || i.handle(conn));
            }
        });
        Proxy { port, inner }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switches the mode and cuts every open connection, so clients reconnect into it.
    fn set(&self, mode: Mode) {
        *self.inner.mode.lock().unwrap() = mode;
        for c in self.inner.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.set(Mode::Forward);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pipe(from: impl Read, to: impl Write) {
    pipe_until(from, to, None);
}

/// Copies until EOF, or until a request that starts with `stop` writes (then returns
/// without copying it): a read-only transaction is copied.
fn pipe_until(mut from: impl Read, mut to: impl Write, stop: Option<&[u8]>) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut chunk = buf[..n].to_vec();
                if stop.is_some_and(|s| contains(&chunk, s)) {
                    whole_request(&mut from, &mut chunk);
                    if contains(&chunk, b"request_put") || contains(&chunk, b"request_delete") {
                        return;
                    }
                }
                if to.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads on until `req` holds its head and the whole body its Content-Length announces.
fn whole_request(from: &mut impl Read, req: &mut Vec<u8>) {
    let mut buf = [0u8; 16384];
    loop {
        let text = String::from_utf8_lossy(req).to_ascii_lowercase();
        let body_len = text.find("\r\n\r\n").map(|end| {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            (end + 4, len)
        });
        if body_len.is_some_and(|(start, len)| req.len() >= start + len) {
            return;
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
}

const TXN: &[u8] = b"POST /v3/kv/txn ";

impl ProxyInner {
    fn handle(&self, mut client: TcpStream) {
        let mode = *self.mode.lock().unwrap();
        if let Ok(c) = client.try_clone() {
            self.conns.lock().unwrap().push(c);
        }
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 4096];
        // Requests on a kept-alive connection are cut too: the client-to-etcd copy
        // stops at the first transaction it sees.
        let stop = (mode == Mode::CutTxn).then_some(TXN);
        match mode {
            Mode::Forward | Mode::CutTxn => {
                let _ = client.set_read_timeout(None);
                let back = client.try_clone().unwrap();
                match &self.upstream {
                    Upstream::Tcp(port) => {
                        let Ok(up) = TcpStream::connect(("127.0.0.1", *port)) else {
                            return;
                        };
                        let up2 = up.try_clone().unwrap();
                        let t = std::thread::spawn(move || pipe(up2, back));
                        pipe_until(&client, &up, stop);
                        let _ = up.shutdown(Shutdown::Both);
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = t.join();
                    }
                    Upstream::Unix(path) => {
                        let Ok(up) = UnixStream::connect(path) else {
                            return;
                        };
                        let up2 = up.try_clone().unwrap();
                        let t = std::thread::spawn(move || pipe(up2, back));
                        pipe_until(&client, &up, stop);
                        let _ = up.shutdown(Shutdown::Both);
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = t.join();
                    }
                }
            }
            Mode::Garbage => {
                let _ = client.read(&mut buf);
                let _ = client
                    .write_all(b"\x16\x03\x01garbage\x00\xff{{{ not HTTP at all\r\n\r\n\xfe\xfe");
                let _ = client.shutdown(Shutdown::Both);
            }
            Mode::CutBody => {
                let _ = client.read(&mut buf);
                let _ = client.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"header\":{\"cluster_id\":\"12",
                );
                let _ = client.shutdown(Shutdown::Both);
            }
            Mode::Stall => {
                let _ = client.set_read_timeout(Some(Duration::from_millis(50)));
                loop {
                    if self.stop.load(Ordering::SeqCst) || *self.mode.lock().unwrap() != Mode::Stall
                    {
                        break;
                    }
                    match client.read(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                }
                let _ = client.shutdown(Shutdown::Both);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The cases, in the order of the table.

fn uri(endpoints: &str, prefix: &str) -> String {
    format!("etcd://{endpoints}{prefix}")
}

fn etcd_outage(tag: &str, ttl: &str, outage: Duration, mut case: Case) {
    let dock = Dock::get();
    let mut etcd = Etcd::start_single(tag, &[]);
    let (p, host) = (prefix(tag), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    let _b = dock.httpd(&unique("b"), &[]);
    let mut r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            ttl,
            "--interval",
            "1",
            &uri(&etcd.endpoint(), &p),
        ],
    );
    exact(
        "before",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );

    etcd.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    dock.httpd(&unique("c"), &[]);
    dock.rm(&[a]);
    std::thread::sleep(outage.saturating_sub(down.elapsed()));
    assert!(
        r.alive(),
        "the registrator exited during the outage: {}",
        r.log()
    );
    let back = Instant::now();
    etcd.start();
    exact(
        "after the outage",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!(
        "exact {} after etcd was started again",
        secs(back.elapsed())
    ));
    let log = r.log();
    let errors = count(&log, "ERROR") + count(&log, "keepalive failed");
    case.note(format!("{errors} error/warning lines for the outage"));
    assert!(
        errors <= 4,
        "the outage should be logged once, not per retry:\n{log}"
    );
    let (code, took) = term(&mut r, Duration::from_secs(2));
    assert_eq!(code, Some(0), "{}", r.log());
    assert!(took < Duration::from_secs(1));
}

#[test]
fn f01_etcd_stopped_5s_within_the_ttl() {
    let case = Case::new(
        "etcd stopped 5 s (TTL 10 s), restarted with the same data dir",
        "a container started and one removed during the outage; exact keys after; outage logged once; SIGTERM exit 0 < 1 s",
    );
    etcd_outage("f01", "10", Duration::from_secs(5), case);
}

#[test]
fn f02_etcd_stopped_longer_than_the_ttl() {
    let case = Case::new(
        "etcd stopped 8 s, longer than the TTL (3 s), same data dir",
        "a container started and one removed during the outage; exact keys after; outage logged once",
    );
    etcd_outage("f02", "3", Duration::from_secs(8), case);
}

#[test]
fn f03_etcd_restarted_with_an_empty_data_dir() {
    let mut case = Case::new(
        "etcd restarted with an empty data dir",
        "every service registered again, exactly",
    );
    let dock = Dock::get();
    let mut etcd = Etcd::start_single("f03", &[]);
    let (p, host) = (prefix("f03"), unique("host"));
    for _ in 0..3 {
        dock.httpd(&unique("a"), &[]);
    }
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "5",
            "--interval",
            "1",
            &uri(&etcd.endpoint(), &p),
        ],
    );
    exact(
        "before",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
    etcd.stop();
    etcd.wipe();
    let back = Instant::now();
    etcd.start();
    exact(
        "after the wipe",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!(
        "3 services back {} after etcd was started empty",
        secs(back.elapsed())
    ));
}

/// Index of the leader among `members`.
fn leader(members: &[Etcd]) -> usize {
    let eps: Vec<String> = members
        .iter()
        .filter(|m| m.running())
        .map(|m| m.url())
        .collect();
    let out = etcdctl(&eps.join(","), &[], &["endpoint", "status", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for s in v.as_array().unwrap() {
        if s["Status"]["leader"] == s["Status"]["header"]["member_id"] {
            let ep = s["Endpoint"].as_str().unwrap();
            return members.iter().position(|m| m.url() == ep).unwrap();
        }
    }
    panic!("no leader in {out}");
}

#[test]
fn f04_cluster_leader_killed() {
    let mut case = Case::new(
        "3-member etcd cluster: the leader (first endpoint) killed with SIGKILL, later restarted",
        "containers change while it is gone; exact keys read from the survivors; the member rejoins",
    );
    let dock = Dock::get();
    let mut members = Etcd::cluster("f04", 3);
    let l = leader(&members);
    let mut order: Vec<usize> = vec![l];
    order.extend((0..3).filter(|&i| i != l));
    let eps: Vec<String> = order.iter().map(|&i| members[i].endpoint()).collect();
    let (p, host) = (prefix("f04"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    dock.httpd(&unique("b"), &[]);
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "1",
            &uri(&eps.join(","), &p),
        ],
    );
    let all: Vec<String> = members.iter().map(|m| m.url()).collect();
    exact(
        "before",
        &all.join(","),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );

    members[l].kill();
    dock.httpd(&unique("c"), &[]);
    dock.rm(&[a]);
    let survivors: Vec<String> = members
        .iter()
        .filter(|m| m.running())
        .map(|m| m.url())
        .collect();
    let took = exact(
        "leader gone",
        &survivors.join(","),
        &p,
        &host,
        &dock,
        Duration::from_secs(15),
        &r,
    );
    case.note(format!("exact {} after the leader died", secs(took)));
    assert!(
        r.log().contains("using endpoint"),
        "did not fail over: {}",
        r.log()
    );

    members[l].start();
    dock.httpd(&unique("d"), &[]);
    let took = exact(
        "member back",
        &all.join(","),
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!("exact {} after it rejoined", secs(took)));
}

#[test]
fn f05_cluster_member_endpoint_unreachable() {
    let mut case = Case::new(
        "3-member cluster: the first endpoint stalls (accepts, never answers), then refuses",
        "requests time out and fail over; containers change meanwhile; exact keys; no lost lease",
    );
    let dock = Dock::get();
    let members = Etcd::cluster("f05", 3);
    let proxy = Proxy::start(Upstream::Tcp(members[0].client_port), Mode::Forward);
    let eps = [
        proxy.endpoint(),
        members[1].endpoint(),
        members[2].endpoint(),
    ];
    let (p, host) = (prefix("f05"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    dock.httpd(&unique("b"), &[]);
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "1",
            &uri(&eps.join(","), &p),
        ],
    );
    let all: Vec<String> = members.iter().map(|m| m.url()).collect();
    let all = all.join(",");
    exact("before", &all, &p, &host, &dock, Duration::from_secs(5), &r);

    proxy.set(Mode::Stall);
    dock.httpd(&unique("c"), &[]);
    dock.rm(&[a]);
    let took = exact(
        "first endpoint stalled",
        &all,
        &p,
        &host,
        &dock,
        Duration::from_secs(15),
        &r,
    );
    case.note(format!("stalled endpoint: exact after {}", secs(took)));

    proxy.set(Mode::Forward);
    drop(proxy);
    let b2 = dock.httpd(&unique("d"), &[]);
    let took = exact(
        "first endpoint refused",
        &all,
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!("refused endpoint: exact after {}", secs(took)));
    dock.rm(&[b2]);
    exact("end", &all, &p, &host, &dock, Duration::from_secs(10), &r);
    let log = r.log();
    assert!(
        !log.contains("granting a new one"),
        "the lease was lost:\n{log}"
    );
}

#[test]
fn f06_dockerd_killed_and_restarted() {
    let mut case = Case::new(
        "dockerd killed (SIGKILL) for 3 s, then restarted; then restarted gracefully (SIGTERM)",
        "no crash; no key deleted while Docker is unreachable (etcd sampled every 100 ms); events reconnect (a new container registers within seconds although --interval is 60); exact keys",
    );
    let dock = Dock::get();
    let ep = SCRIPT_ETCD.trim_start_matches("http://");
    let (p, host) = (prefix("f06"), unique("host"));
    let k1 = dock.httpd(&unique("k1"), &["--restart", "always"]);
    let k2 = dock.httpd(&unique("k2"), &["--restart", "always"]);
    dock.httpd(&unique("k3"), &[]);
    // After a restart, compare only once Docker has brought the restart=always ones back.
    let back = || {
        let ok = wait_until(Duration::from_secs(10), || {
            let running = dock.running();
            running.contains_key(&k1) && running.contains_key(&k2)
        });
        assert!(
            ok,
            "dockerd did not restart the containers: {:?}",
            dock.running()
        );
    };
    let mut r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "60",
            &uri(ep, &p),
        ],
    );
    exact(
        "before",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );

    let before = etcd_get_at(SCRIPT_ETCD, &[], &p);
    dock.stop_dockerd(libc::SIGKILL);
    let mut samples = 0;
    let mut changed = Vec::new();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(3) {
        let now = etcd_get_at(SCRIPT_ETCD, &[], &p);
        if now != before {
            changed.push(diff(&before, &now));
        }
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        changed.is_empty(),
        "keys changed while Docker was unreachable: {changed:?}\n{}",
        r.log()
    );
    assert!(r.alive(), "the registrator died: {}", r.log());
    case.note(format!(
        "0 of {} keys deleted in {samples} samples during the outage",
        before.len()
    ));

    let restarted = Instant::now();
    dock.start_dockerd();
    back();
    exact(
        "after the restart",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!(
        "exact {} after dockerd was started again",
        secs(restarted.elapsed())
    ));
    assert!(
        wait_until(Duration::from_secs(6), || r
            .log()
            .contains("event stream reconnected")),
        "{}",
        r.log()
    );
    let started = Instant::now();
    dock.httpd(&unique("k4"), &[]);
    exact(
        "event after reconnect",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
    case.note(format!(
        "new container registered {} after start (events)",
        secs(started.elapsed())
    ));

    dock.stop_dockerd(libc::SIGTERM);
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    dock.start_dockerd();
    back();
    exact(
        "after a graceful restart",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(10),
        &r,
    );
    case.note(format!(
        "graceful restart: exact {} after dockerd was started again",
        secs(restarted.elapsed())
    ));
    assert!(r.alive(), "{}", r.log());
    let (code, _) = term(&mut r, Duration::from_secs(2));
    assert_eq!(code, Some(0));
}

#[test]
fn f07_docker_socket_missing_at_start() {
    let mut case = Case::new(
        "Docker socket missing at start",
        "--once exits 1 naming the socket; the loop logs it once, changes nothing, keeps trying and registers when the socket appears",
    );
    let dock = Dock::get();
    let ep = SCRIPT_ETCD.trim_start_matches("http://");
    let (p, host) = (prefix("f07"), unique("host"));
    let dir = TempDir::new("f07");
    let missing = dir.path("docker.sock");
    let missing_host = format!("unix://{}", missing.display());
    dock.httpd(&unique("a"), &[]);
    let out = once_with(&dock.host, &["--hostname", &host, &uri(ep, &p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = etcd_get_at(SCRIPT_ETCD, &[], &p);

    let out = once_with(&missing_host, &["--hostname", &host, &uri(ep, &p)]);
    assert_eq!(out.status.code(), Some(1));
    let errors: Vec<String> = stderr(&out)
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(String::from)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&missing.display().to_string()),
        "{}",
        errors[0]
    );
    case.note(format!(
        "--once: {}",
        errors[0].split("] ").nth(1).unwrap_or(&errors[0])
    ));

    let mut r = start(
        &missing_host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "1",
            &uri(ep, &p),
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(r.alive());
    assert_eq!(
        etcd_get_at(SCRIPT_ETCD, &[], &p),
        before,
        "an unknown desired set is not an empty one"
    );
    let log = r.log();
    assert_eq!(count(&log, "sync failed"), 1, "logged once:\n{log}");
    std::os::unix::fs::symlink(dock.socket(), &missing).unwrap();
    dock.httpd(&unique("b"), &[]);
    let took = exact(
        "socket appeared",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(8),
        &r,
    );
    case.note(format!(
        "registered {} after the socket appeared",
        secs(took)
    ));
    let (code, took) = term(&mut r, Duration::from_secs(2));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(1));
}

#[test]
fn f08_wrong_docker_host() {
    let mut case = Case::new(
        "wrong DOCKER_HOST: closed port, etcd's port (not Docker), a regular file, ssh://",
        "--once exits 1 with one error line naming the host (2 for a usage error); etcd unchanged",
    );
    let dock = Dock::get();
    let ep = SCRIPT_ETCD.trim_start_matches("http://");
    let (p, host) = (prefix("f08"), unique("host"));
    dock.httpd(&unique("a"), &[]);
    assert!(once_with(&dock.host, &["--hostname", &host, &uri(ep, &p)])
        .status
        .success());
    let before = etcd_get_at(SCRIPT_ETCD, &[], &p);
    let closed = free_port();
    for (docker_host, want) in [
        (
            format!("tcp://127.0.0.1:{closed}"),
            format!("127.0.0.1:{closed}"),
        ),
        (
            "tcp://127.0.0.1:24790".to_string(),
            "127.0.0.1:24790".to_string(),
        ),
        (
            "unix:///etc/hostname".to_string(),
            "/etc/hostname".to_string(),
        ),
    ] {
        let started = Instant::now();
        let out = once_with(&docker_host, &["--hostname", &host, &uri(ep, &p)]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{docker_host}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(|l| l.split("] ").nth(1).unwrap_or(l))
            .collect();
        assert_eq!(errors.len(), 1, "{docker_host}: {}", stderr(&out));
        assert!(errors[0].contains(&want), "{docker_host}: {}", errors[0]);
        assert!(started.elapsed() < Duration::from_secs(5));
        case.note(format!(
            "`{}`",
            errors[0].chars().take(140).collect::<String>()
        ));
        assert_eq!(etcd_get_at(SCRIPT_ETCD, &[], &p), before);
    }
    let out = once_with("ssh://somewhere", &["--hostname", &host, &uri(ep, &p)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn f09_etcd_answers_garbage_or_cuts_the_body() {
    let mut case = Case::new(
        "etcd endpoint behind a proxy that answers garbage, or closes mid-body",
        "a bad first endpoint is skipped (--once exit 0); as the only endpoint the loop stays up, then recovers exactly; SIGTERM < 1 s",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f09", &[]);
    let (p, host) = (prefix("f09"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    let bad = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::Garbage);
    let cut = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::CutBody);
    for proxy in [&bad, &cut] {
        let out = once_with(
            &dock.host,
            &[
                "--hostname",
                &host,
                &uri(&format!("{},{}", proxy.endpoint(), etcd.endpoint()), &p),
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(etcd_get_at(&etcd.url(), &[], &p), dock.expected(&p, &host));
    let first = stderr(&once_with(
        &dock.host,
        &["--hostname", &host, &uri(&bad.endpoint(), &p)],
    ));
    case.note(format!(
        "garbage: `{}`",
        first
            .lines()
            .find(|l| l.contains("ERROR"))
            .unwrap_or("")
            .split("] ")
            .nth(1)
            .unwrap_or("")
    ));

    // The loop on a prefix of its own: its first pass (which takes the --once keys over
    // onto its lease) must not race with the faults; f15 covers that race.
    let p = prefix("f09loop");
    let proxy = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::Forward);
    let mut r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "0.5",
            &uri(&proxy.endpoint(), &p),
        ],
    );
    exact(
        "before",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
    let before = etcd_get_at(&etcd.url(), &[], &p);
    proxy.set(Mode::Garbage);
    dock.httpd(&unique("b"), &[]);
    std::thread::sleep(Duration::from_secs(2));
    proxy.set(Mode::CutBody);
    dock.rm(&[a]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(r.alive(), "{}", r.log());
    assert_eq!(
        etcd_get_at(&etcd.url(), &[], &p),
        before,
        "nothing got through the bad proxy"
    );
    proxy.set(Mode::Forward);
    let took = exact(
        "after",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(8),
        &r,
    );
    case.note(format!("exact {} after the proxy behaved", secs(took)));
    let (code, took) = term(&mut r, Duration::from_secs(2));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn f10_docker_answers_garbage_or_cuts_the_body() {
    let mut case = Case::new(
        "Docker API behind a proxy (DOCKER_HOST=tcp://) that answers garbage, or closes mid-body",
        "--once exits 1 with one line; the loop deregisters nothing while Docker answers garbage, then recovers exactly",
    );
    let dock = Dock::get();
    let ep = SCRIPT_ETCD.trim_start_matches("http://");
    let (p, host) = (prefix("f10"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    dock.httpd(&unique("b"), &[]);
    let proxy = Proxy::start(Upstream::Unix(dock.socket()), Mode::Forward);
    let via = format!("tcp://{}", proxy.endpoint());
    let mut r = start(
        &via,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "0.5",
            &uri(ep, &p),
        ],
    );
    exact(
        "before",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
    let before = etcd_get_at(SCRIPT_ETCD, &[], &p);
    for mode in [Mode::Garbage, Mode::CutBody] {
        proxy.set(mode);
        let out = once_with(&via, &["--hostname", &host, &uri(ep, &p)]);
        assert_eq!(out.status.code(), Some(1), "{mode:?}: {}", stderr(&out));
        let line = stderr(&out)
            .lines()
            .filter(|l| l.contains("ERROR"))
            .map(String::from)
            .collect::<Vec<_>>();
        assert_eq!(line.len(), 1, "{mode:?}: {line:?}");
        case.note(format!(
            "{mode:?}: `{}`",
            line[0]
                .split("] ")
                .nth(1)
                .unwrap_or("")
                .chars()
                .take(120)
                .collect::<String>()
        ));
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            etcd_get_at(SCRIPT_ETCD, &[], &p),
            before,
            "{mode:?}: changed while Docker answered garbage"
        );
    }
    dock.rm(&[a]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(etcd_get_at(SCRIPT_ETCD, &[], &p), before);
    assert!(r.alive(), "{}", r.log());
    proxy.set(Mode::Forward);
    let took = exact(
        "after",
        SCRIPT_ETCD,
        &p,
        &host,
        &dock,
        Duration::from_secs(8),
        &r,
    );
    case.note(format!("exact {} after the proxy behaved", secs(took)));
    let (code, took) = term(&mut r, Duration::from_secs(2));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(1));
}

#[test]
fn f11_stalled_endpoints_time_out_and_recover() {
    let mut case = Case::new(
        "etcd, then Docker, accept connections and never answer (10 s each)",
        "--once gives up within its timeout (exit 1); the loop stays up, changes nothing while Docker stalls, then recovers exactly",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f11", &[]);
    let (p, host) = (prefix("f11"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    let etcd_proxy = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::Forward);
    let docker_proxy = Proxy::start(Upstream::Unix(dock.socket()), Mode::Forward);
    let via = format!("tcp://{}", docker_proxy.endpoint());
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--hostname".into(), host.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(uri(&etcd_proxy.endpoint(), &p));
        v
    };
    let r_args = args(&["--ttl", "6", "--interval", "0.5"]);
    let r_args: Vec<&str> = r_args.iter().map(String::as_str).collect();
    let mut r = start(&via, &r_args);
    exact(
        "before",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );

    // etcd stalls.
    etcd_proxy.set(Mode::Stall);
    let started = Instant::now();
    let o = args(&[]);
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    let out = once_with(&dock.host, &o);
    assert_eq!(out.status.code(), Some(1));
    let once_took = started.elapsed();
    assert!(once_took < Duration::from_secs(8), "{once_took:?}");
    case.note(format!(
        "etcd stalled: --once exit 1 after {}",
        secs(once_took)
    ));
    let b = dock.httpd(&unique("b"), &[]);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    assert!(r.alive());
    etcd_proxy.set(Mode::Forward);
    let took = exact(
        "etcd answers again",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(12),
        &r,
    );
    case.note(format!("exact {} after etcd answered again", secs(took)));

    // Docker stalls.
    let before = etcd_get_at(&etcd.url(), &[], &p);
    docker_proxy.set(Mode::Stall);
    let started = Instant::now();
    let o = args(&[]);
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    let out = once_with(&via, &o);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let once_took = started.elapsed();
    assert!(once_took < Duration::from_secs(15), "{once_took:?}");
    case.note(format!(
        "Docker stalled: --once exit 1 after {}",
        secs(once_took)
    ));
    dock.rm(&[a, b]);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    assert_eq!(
        etcd_get_at(&etcd.url(), &[], &p),
        before,
        "changed while Docker stalled"
    );
    docker_proxy.set(Mode::Forward);
    let took = exact(
        "Docker answers again",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(15),
        &r,
    );
    case.note(format!("exact {} after Docker answered again", secs(took)));
}

#[test]
fn f12_sigterm_during_a_stuck_request_exits_within_1s() {
    let mut case = Case::new(
        "SIGTERM while a request to a stalled etcd or Docker is in flight",
        "exit 0 within 1 s",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f12", &[]);
    let (p, host) = (prefix("f12"), unique("host"));
    dock.httpd(&unique("a"), &[]);
    let etcd_proxy = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::Forward);
    let docker_proxy = Proxy::start(Upstream::Unix(dock.socket()), Mode::Forward);
    let via = format!("tcp://{}", docker_proxy.endpoint());
    for (what, proxy) in [("etcd", &etcd_proxy), ("Docker", &docker_proxy)] {
        let mut r = start(
            &via,
            &[
                "--hostname",
                &host,
                "--ttl",
                "6",
                "--interval",
                "0.5",
                &uri(&etcd_proxy.endpoint(), &p),
            ],
        );
        exact(
            "fresh",
            &etcd.url(),
            &p,
            &host,
            &dock,
            Duration::from_secs(5),
            &r,
        );
        proxy.set(Mode::Stall);
        dock.httpd(&unique("w"), &[]);
        std::thread::sleep(Duration::from_millis(700));
        let (code, took) = term(&mut r, Duration::from_secs(12));
        case.note(format!("{what}: exit {code:?} after {}", secs(took)));
        assert_eq!(code, Some(0));
        assert!(
            took < Duration::from_secs(1),
            "{what}: SIGTERM took {took:?}"
        );
        proxy.set(Mode::Forward);
    }
}

#[test]
fn f13_bursts_of_200_containers() {
    let mut case = Case::new(
        "200 containers started and removed in bursts of 50 (4 docker clients each) while the loop runs at --interval 0.05; twice",
        "exact keys at 200 (800 keys) and at 0 after each round; RSS idle, peak, and after each round",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f13", &[]);
    let (p, host) = (prefix("f13"), unique("host"));
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "0.05",
            &uri(&etcd.endpoint(), &p),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss0 = r.rss_kib();
    let mut peak = rss0;
    let mut after = Vec::new();
    for round in 1..=2 {
        let names: Vec<String> = (0..200)
            .map(|i| format!("{}-{i}", unique("burst")))
            .collect();
        let started = Instant::now();
        for burst in names.chunks(50) {
            dock.httpd_many(burst, 4);
            peak = peak.max(r.rss_kib());
        }
        let start_took = started.elapsed();
        let took = exact(
            "200 running",
            &etcd.url(),
            &p,
            &host,
            &dock,
            Duration::from_secs(20),
            &r,
        );
        assert_eq!(dock.running().len(), 200);
        assert_eq!(etcd_get_at(&etcd.url(), &[], &p).len(), 800);
        peak = peak.max(r.rss_kib());
        for burst in names.chunks(50) {
            dock.rm(burst);
            peak = peak.max(r.rss_kib());
        }
        let took0 = exact(
            "all removed",
            &etcd.url(),
            &p,
            &host,
            &dock,
            Duration::from_secs(20),
            &r,
        );
        assert!(etcd_get_at(&etcd.url(), &[], &p).is_empty());
        case.note(format!(
            "round {round}: 200 started in {}, 800 keys exact {} after the last start, 0 keys {} after the last removal",
            secs(start_took),
            secs(took),
            secs(took0)
        ));
        std::thread::sleep(Duration::from_secs(1));
        after.push(r.rss_kib());
    }
    case.note(format!(
        "RSS {rss0} KiB idle, {peak} KiB peak, {} KiB after round 1, {} KiB after round 2",
        after[0], after[1]
    ));
    assert!(after[1] <= after[0] + 1024, "RSS keeps growing: {after:?}");
    let log = r.log();
    assert_eq!(count(&log, "ERROR"), 0, "{log}");
}

#[test]
fn f14_memory_flat_over_1000_cycles() {
    let mut case = Case::new(
        "1,000 sync cycles after a warm-up of 200 (--interval 0.02, 20 containers, lease kept alive)",
        "VmRSS at cycle ~200 vs ~1,200 grows < 1 MiB (< 1 KiB per cycle); cycles counted from etcd's request metrics",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f14", &[]);
    let (p, host) = (prefix("f14"), unique("host"));
    let names: Vec<String> = (0..20).map(|i| format!("{}-{i}", unique("mem"))).collect();
    dock.httpd_many(&names, 4);
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "0.02",
            &uri(&etcd.endpoint(), &p),
        ],
    );
    exact(
        "running",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
    // A pass reads etcd once at its start: by the lease's keys, or the whole prefix.
    let cycles = || etcd.requests("LeaseTimeToLive") + etcd.requests("Range");
    assert!(
        wait_until(Duration::from_secs(30), || cycles() >= 200),
        "too slow: {} cycles",
        cycles()
    );
    let (c0, rss0) = (cycles(), r.rss_kib());
    let started = Instant::now();
    let mut samples = vec![rss0];
    while cycles() < c0 + 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} cycles",
            cycles()
        );
        std::thread::sleep(Duration::from_secs(2));
        samples.push(r.rss_kib());
    }
    let (c1, rss1) = (cycles(), r.rss_kib());
    let rate = (c1 - c0) as f64 / started.elapsed().as_secs_f64();
    case.note(format!(
        "cycle {c0}: {rss0} KiB, cycle {c1}: {rss1} KiB ({:+} KiB), max {} KiB; {rate:.0} cycles/s",
        rss1 as i64 - rss0 as i64,
        samples.iter().max().unwrap()
    ));
    assert!(
        rss1 <= rss0 + 1024,
        "RSS grew from {rss0} to {rss1} KiB over {} cycles: {samples:?}",
        c1 - c0
    );
    exact(
        "end",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(5),
        &r,
    );
}

#[test]
fn f15_first_pass_interrupted_then_a_container_stops() {
    let mut case = Case::new(
        "the loop's first pass is cut while writing (reads work, txns fail); then a container stops",
        "the stopped container's keys (left by an earlier --once, no lease) are deregistered once etcd accepts writes",
    );
    let dock = Dock::get();
    let etcd = Etcd::start_single("f15", &[]);
    let (p, host) = (prefix("f15"), unique("host"));
    let a = dock.httpd(&unique("a"), &[]);
    dock.httpd(&unique("b"), &[]);
    let out = once_with(
        &dock.host,
        &["--hostname", &host, &uri(&etcd.endpoint(), &p)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let proxy = Proxy::start(Upstream::Tcp(etcd.client_port), Mode::CutTxn);
    let r = start(
        &dock.host,
        &[
            "--hostname",
            &host,
            "--ttl",
            "10",
            "--interval",
            "0.5",
            &uri(&proxy.endpoint(), &p),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(5), || r
            .log()
            .contains("sync failed: etcd txn")),
        "{}",
        r.log()
    );
    dock.rm(&[a]);
    proxy.set(Mode::Forward);
    let took = exact(
        "writes accepted again",
        &etcd.url(),
        &p,
        &host,
        &dock,
        Duration::from_secs(8),
        &r,
    );
    case.note(format!("exact {} after etcd accepted writes", secs(took)));
}
