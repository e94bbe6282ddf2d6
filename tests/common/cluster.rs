//! etcd members of a test's own (tests/etcd_prod.rs, tests/faults.rs, tests/haproxy.rs):
//! single members and clusters on 127.0.0.1:24100-24699 with data dirs under
//! /tmp/reg-scratch-*, started, paused, stopped, killed and wiped by PID, and the TLS
//! certificates (made with openssl) they serve. The shared etcd is never touched here.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http, kill_pid, last_lines, run, unique, wait_until, TempDir};

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

    /// `127.0.0.1:port`, as a registry URI names it.
    pub fn endpoint(&self) -> String {
        self.addr().to_string()
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.client_port).into()
    }

    /// The client URL (`http://` or `https://`), as etcdctl takes it.
    pub fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.tls { "https" } else { "http" },
            self.client_port
        )
    }

    /// The data dir (`<dir>/data`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path("data")
    }

    /// The process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether this test started it and has not stopped it.
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
                self.get("/health")
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

    /// The last 15 lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path("etcd.log")).unwrap_or_default();
        last_lines(&log, 15)
    }

    fn halt(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                kill_pid(c.id(), libc::SIGCONT);
                self.paused = false;
            }
            kill_pid(c.id(), sig);
            if !wait_until(Duration::from_secs(10), || {
                c.try_wait().ok().flatten().is_some()
            }) {
                let _ = c.kill();
                let _ = c.wait();
            }
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

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&mut self) {
        kill_pid(self.pid().expect("running"), libc::SIGCONT);
        self.paused = false;
    }

    /// Removes the data dir (the member must be stopped): it starts empty next time.
    pub fn wipe(&mut self) {
        assert!(self.child.is_none(), "wipe a running etcd");
        let _ = std::fs::remove_dir_all(self.data_dir());
    }

    /// The body of a plain HTTP GET of `path` (`/health`, `/metrics`), if it answers.
    fn get(&self, path: &str) -> Option<String> {
        http::get(self.client_port, path, "127.0.0.1", Duration::from_secs(2))
            .ok()
            .map(|(_, body)| body)
    }

    /// Requests served by this member, by gRPC method (`Range`, `Txn`, ...), from
    /// `/metrics`; plain HTTP only.
    pub fn requests(&self, method: &str) -> u64 {
        let metrics = self.get("/metrics").unwrap_or_default();
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

/// Test certificates made with openssl: a CA, a server certificate for IP:127.0.0.1
/// only, a client certificate, an expired server certificate and an unrelated CA.
pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    /// Makes every certificate in a scratch directory of its own.
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

    /// The path of `name` (`ca.pem`, `client.key`, ...).
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
