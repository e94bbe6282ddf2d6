//! Test helpers: the daemons that `tests/daemons.sh run` started, a key prefix and
//! containers of each test's own, the registrator binary, and etcdctl to read back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the integration tests with `make test` (tests/daemons.sh run cargo test)")
    })
}

/// etcd's client URL (`http://127.0.0.1:23790`).
pub fn etcd_url() -> String {
    env("REG_ETCD")
}

/// The registry URI for a prefix.
pub fn uri(prefix: &str) -> String {
    format!(
        "etcd://{}{prefix}",
        etcd_url().trim_start_matches("http://")
    )
}

pub fn docker_host() -> String {
    env("DOCKER_HOST")
}

pub fn image() -> String {
    env("REG_IMAGE")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test run: `<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A fresh key prefix for one test.
pub fn prefix(tag: &str) -> String {
    format!("/t/{}", unique(tag))
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", docker_host()))
}

/// A container removed (`docker rm -f`) when dropped.
pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// `docker run -d --init --pull never --name <name> <args...> <image> <cmd...>`.
    pub fn run(name: &str, args: &[&str], cmd: &[&str]) -> Container {
        let image = image();
        let mut all = vec!["run", "-d", "--init", "--pull", "never", "--name", name];
        all.extend_from_slice(args);
        all.push(&image);
        all.extend_from_slice(cmd);
        let id = docker(&all);
        Container {
            name: name.to_string(),
            id,
        }
    }

    /// A busybox httpd on container port `port`, published on 127.0.0.1 (random host port).
    pub fn httpd(name: &str, port: u16, env: &[&str]) -> Container {
        let publish = format!("127.0.0.1::{port}");
        let mut args = vec!["-p", publish.as_str()];
        for e in env {
            args.push("-e");
            args.push(e);
        }
        let p = port.to_string();
        Container::run(name, &args, &["httpd", "-f", "-p", &p, "-h", "/www"])
    }

    /// The host port Docker published for `port/tcp`.
    pub fn host_port(&self, port: u16) -> u16 {
        let out = docker(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {out:?}"))
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .env("DOCKER_HOST", docker_host())
            .output();
    }
}

/// Every key under `prefix` with its value, read with etcdctl (a client we did not write).
pub fn etcd_get(prefix: &str) -> BTreeMap<String, String> {
    let out = run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
        "--endpoints",
        &etcd_url(),
        "get",
        "--prefix",
        prefix,
    ]));
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// Puts a key with etcdctl.
pub fn etcd_put(key: &str, value: &str) {
    run(Command::new("etcdctl").env("ETCDCTL_API", "3").args([
        "--endpoints",
        &etcd_url(),
        "put",
        key,
        value,
    ]));
}

/// Keys under `prefix` that belong to service IDs containing `needle`, relative to the prefix.
pub fn keys_with(prefix: &str, needle: &str) -> BTreeMap<String, String> {
    etcd_get(prefix)
        .into_iter()
        .filter(|(k, _)| k.contains(needle))
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_registrator")
}

/// The registrator as a command, with DOCKER_HOST set. Tests use made-up host names
/// that do not resolve, and resolving one would send a DNS query off the machine: so
/// unless a test passes its own `--ip`, this adds `--ip 127.0.0.1` (the address tests
/// publish on anyway).
pub fn registrator(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    if !args.iter().any(|a| *a == "--ip" || a.starts_with("--ip=")) {
        c.args(["--ip", "127.0.0.1"]);
    }
    c.args(args)
        .env("DOCKER_HOST", docker_host())
        .env("RUST_LOG", "info");
    c
}

/// Runs `registrator --once` and returns its output.
pub fn once(args: &[&str]) -> Output {
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    registrator(&all).output().expect("run registrator")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A registrator running in the background, killed (SIGKILL) when dropped.
pub struct Running {
    pub child: Child,
    log: std::path::PathBuf,
}

impl Running {
    pub fn start(args: &[&str]) -> Running {
        let log = std::env::temp_dir().join(format!("{}.log", unique("registrator")));
        let file = std::fs::File::create(&log).unwrap();
        let child = registrator(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn registrator");
        Running { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by PID (only to the process this test started).
    pub fn signal(&self, sig: &str) {
        run(Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]));
    }

    /// Waits for exit and returns the exit code and how long it took.
    pub fn wait(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (None, start.elapsed())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Polls `f` until it returns true or `limit` passes; returns whether it did.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------
// Daemons of a test's own (tests/etcd_prod.rs, tests/faults.rs): etcd processes on
// 127.0.0.1:24100-24699 with data dirs under /tmp/reg-faults-*, TLS certificates made
// with openssl, all stopped by PID. The shared daemons above are never stopped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);

/// A port on 127.0.0.1 in 24100-24699 that nothing listens on. Each process starts at
/// its own offset, so test binaries running side by side rarely meet.
pub fn free_port() -> u16 {
    let base = (std::process::id() as usize * 97) % 600;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(n < 600, "no free port left in 24100-24699");
        let port = 24100 + ((base + n) % 600) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpStream::connect(("127.0.0.1", port)).is_err()
        {
            return port;
        }
    }
}

/// A scratch directory `/tmp/reg-faults-<tag>-<pid>-<n>`, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = PathBuf::from(format!("/tmp/reg-faults-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// `path(name)` as a `String`, for command lines.
    pub fn file(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `sig` (e.g. `libc::SIGTERM`) to a process this test started.
pub fn kill_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a PID we spawned; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// One etcd member started by a test, with its own data dir; killed and removed when
/// dropped.
pub struct Etcd {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// Holds `data/` and `etcd.log`.
    pub dir: TempDir,
    tls: bool,
    args: Vec<String>,
    initial_cluster: String,
    /// `--initial-cluster-token`: one per cluster.
    token: String,
    child: Option<Child>,
    paused: bool,
}

impl Etcd {
    /// A single-member etcd with extra command-line flags, not started yet.
    pub fn new(tag: &str, extra: &[&str]) -> Etcd {
        let (client_port, peer_port) = (free_port(), free_port());
        let name = "m0".to_string();
        let initial_cluster = format!("{name}=http://127.0.0.1:{peer_port}");
        let tls = extra.contains(&"--cert-file");
        let dir = TempDir::new(tag);
        let token = dir.0.file_name().unwrap().to_string_lossy().into_owned();
        Etcd {
            name,
            client_port,
            peer_port,
            dir,
            tls,
            args: extra.iter().map(|s| s.to_string()).collect(),
            initial_cluster,
            token,
            child: None,
            paused: false,
        }
    }

    /// A started, healthy single-member etcd (plain HTTP unless `extra` has TLS flags).
    pub fn start_single(tag: &str, extra: &[&str]) -> Etcd {
        let mut e = Etcd::new(tag, extra);
        e.start();
        e
    }

    /// A started `n`-member cluster on loopback; every member answers `/health`.
    pub fn cluster(tag: &str, n: usize) -> Vec<Etcd> {
        let mut members: Vec<Etcd> = (0..n).map(|_| Etcd::new(tag, &[])).collect();
        let cluster: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer_port))
            .collect();
        let token = unique(tag);
        for (i, m) in members.iter_mut().enumerate() {
            m.name = format!("m{i}");
            m.initial_cluster = cluster.join(",");
            m.token = token.clone();
        }
        for m in members.iter_mut() {
            m.spawn();
        }
        for m in &members {
            m.wait_healthy(Duration::from_secs(20));
        }
        members
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.client_port
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path("data")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (same data dir as before, if any) and waits until it answers.
    pub fn start(&mut self) {
        self.spawn();
        self.wait_healthy(Duration::from_secs(20));
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "etcd {} already running", self.name);
        let scheme = if self.tls { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .args([
                "--name",
                &self.name,
                "--data-dir",
                &self.data_dir().to_string_lossy(),
            ])
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &self.initial_cluster,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", &self.token])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
    }

    /// Waits until `/health` says true (plain HTTP) or the TLS port accepts (TLS).
    pub fn wait_healthy(&self, limit: Duration) {
        let ok = wait_until(limit, || {
            if self.tls {
                TcpStream::connect(("127.0.0.1", self.client_port)).is_ok()
            } else {
                http_get(self.client_port, "/health")
                    .is_some_and(|b| b.contains("\"health\":\"true\""))
            }
        });
        assert!(
            ok,
            "etcd {} on port {} did not become healthy: {}",
            self.name,
            self.client_port,
            self.log_tail()
        );
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn halt(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                kill_pid(c.id(), libc::SIGCONT);
                self.paused = false;
            }
            kill_pid(c.id(), sig);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self) {
        self.halt(libc::SIGTERM);
    }

    /// SIGKILL, and wait for the exit.
    pub fn kill(&mut self) {
        self.halt(libc::SIGKILL);
    }

    /// SIGSTOP: the port still accepts connections but nothing answers.
    pub fn pause(&mut self) {
        kill_pid(self.pid().expect("running"), libc::SIGSTOP);
        self.paused = true;
    }

    pub fn resume(&mut self) {
        kill_pid(self.pid().expect("running"), libc::SIGCONT);
        self.paused = false;
    }

    /// Removes the data dir (the member must be stopped): it starts empty next time.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe a running etcd");
        let _ = std::fs::remove_dir_all(self.data_dir());
    }

    /// Requests served by this member, by gRPC method (`Range`, `Txn`, ...), from
    /// `/metrics`; plain HTTP only.
    pub fn requests(&self, method: &str) -> u64 {
        let metrics = http_get(self.client_port, "/metrics").unwrap_or_default();
        let needle = format!("grpc_method=\"{method}\"");
        metrics
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET on 127.0.0.1:port with a short timeout; the body, if any.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// etcdctl against `endpoints` (comma-separated URLs) with extra global flags; stdout.
pub fn etcdctl(endpoints: &str, flags: &[&str], args: &[&str]) -> String {
    run(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "5s"])
        .args(flags)
        .args(args))
}

/// Every key under `prefix` with its value, read with etcdctl from `endpoints`.
pub fn etcd_get_at(endpoints: &str, flags: &[&str], prefix: &str) -> BTreeMap<String, String> {
    let out = etcdctl(endpoints, flags, &["get", "--prefix", prefix]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// The four keys the registrator writes for a container `name` whose container port
/// 80 is published on 127.0.0.1:`port` with `SERVICE_NAME=svc` and no other settings.
pub fn service_keys(
    prefix: &str,
    host: &str,
    svc: &str,
    name: &str,
    port: u16,
) -> BTreeMap<String, String> {
    let dir = format!("{prefix}/{svc}/{host}:{name}:80");
    [
        ("address", "127.0.0.1".to_string()),
        ("mode", "tcp".into()),
        ("node", host.to_string()),
        ("port", port.to_string()),
    ]
    .into_iter()
    .map(|(f, v)| (format!("{dir}/{f}"), v))
    .collect()
}

/// Test certificates made with openssl: a CA, a server certificate for IP:127.0.0.1
/// only, a client certificate, an expired server certificate and an unrelated CA.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = TempDir::new("certs");
        let sh = |script: &str| {
            run(Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&dir.0));
        };
        let key = "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        sh(&format!(
            "{key} -x509 -days 2 -keyout ca.key -out ca.pem -subj /CN=reg-test-ca 2>/dev/null
             {key} -x509 -days 2 -keyout other-ca.key -out other-ca.pem -subj /CN=reg-other-ca 2>/dev/null
             {key} -keyout server.key -out server.csr -subj /CN=etcd-server 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > server.ext
             openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.pem 2>/dev/null
             {key} -keyout client.key -out client.csr -subj /CN=registrator 2>/dev/null
             printf 'extendedKeyUsage=clientAuth\\n' > client.ext
             openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.pem 2>/dev/null
             {key} -keyout expired.key -out expired.csr -subj /CN=etcd-expired -addext subjectAltName=IP:127.0.0.1 2>/dev/null
             mkdir -p ca-db && touch ca-db/index.txt && echo 01 > ca-db/serial
             printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=ca-db/index.txt\\nserial=ca-db/serial\\nnew_certs_dir=ca-db\\ndefault_md=sha256\\npolicy=p\\ncopy_extensions=copy\\n[p]\\ncommonName=supplied\\n' > ca.cnf
             openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem -startdate 20200101000000Z -enddate 20200102000000Z -notext 2>/dev/null"
        ));
        Certs { dir }
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.file(name)
    }

    /// etcd flags for server TLS with `cert`/`key` (`server` or `expired`), and with
    /// `--client-cert-auth` when `client_auth`.
    pub fn etcd_flags(&self, cert: &str, client_auth: bool) -> Vec<String> {
        let mut f = vec![
            "--cert-file".into(),
            self.file(&format!("{cert}.pem")),
            "--key-file".into(),
            self.file(&format!("{cert}.key")),
        ];
        if client_auth {
            f.extend([
                "--trusted-ca-file".into(),
                self.file("ca.pem"),
                "--client-cert-auth".into(),
            ]);
        }
        f
    }
}

impl Running {
    /// Starts the registrator from a prepared command (extra environment, say); its
    /// stderr goes to a log file that [`Running::log`] reads.
    pub fn spawn(mut cmd: Command) -> Running {
        let log = std::env::temp_dir().join(format!("{}.log", unique("registrator")));
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn registrator");
        Running { child, log }
    }

    /// VmRSS in KiB from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// [`etcd_get_at`] that returns None instead of panicking when etcdctl fails (a cluster
/// electing a leader, a member just killed).
pub fn try_etcd_get_at(
    endpoints: &str,
    flags: &[&str],
    prefix: &str,
) -> Option<BTreeMap<String, String>> {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", "3s"])
        .args(flags)
        .args(["get", "--prefix", prefix])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    Some(
        lines
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect(),
    )
}
