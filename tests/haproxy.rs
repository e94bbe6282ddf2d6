//! The proxy-mesh consumer (tests/examples/haproxy.rs) end to end, with the real registrator,
//! etcd, dockerd and HAProxy on loopback: HTTP by Host header to two replicas, TCP on the
//! external and internal ports, a replica stopped under load, the last one removed, the
//! consumer crashing and coming back, and a watch resuming from a compacted revision.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;

/// The example's binary, built once per test process by the cargo running the tests.
fn example() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(env!("CARGO"))
            .args([
                "build",
                "--example",
                "haproxy",
                "--message-format=json-render-diagnostics",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run cargo build --example haproxy");
        assert!(
            out.status.success(),
            "cargo build --example haproxy failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["reason"] == "compiler-artifact"
                    && v["target"]["name"] == "haproxy"
                    && v["target"]["kind"][0] == "example"
            })
            .and_then(|v| v["executable"].as_str().map(PathBuf::from))
            .expect("no executable for the haproxy example in cargo's output")
    })
}

/// A base port in 40000-59980 derived from the PID, with base, base+10 and base+20 free
/// on 127.0.0.1: the HTTP frontend, then the external and internal TCP ports (the
/// services register 10 and 20, and the consumer adds the base as offset).
fn haproxy_ports() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(n < 1000, "no free ports for HAProxy in 40000-59999");
        let base = 40000 + ((pid.wrapping_mul(7) + n * 13) % 1000) as u16 * 20;
        if [0, 10, 20]
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok())
        {
            return base;
        }
    }
}

/// The consumer example and the HAProxy it runs, in a scratch directory. Dropping it
/// kills the consumer and stops HAProxy's master and workers, each by PID.
struct Mesh {
    dir: TempDir,
    args: Vec<String>,
    child: Option<Child>,
    base: u16,
}

impl Mesh {
    fn start(uri: &str, tag: &str) -> Mesh {
        let dir = TempDir::new(tag);
        let base = haproxy_ports();
        let args = vec![
            uri.to_string(),
            "--public-bind".into(),
            "127.0.0.1".into(),
            "--private-bind".into(),
            "127.0.0.1".into(),
            "--http-port".into(),
            base.to_string(),
            "--port-offset".into(),
            base.to_string(),
            "--config".into(),
            dir.file("haproxy.cfg"),
            "--pidfile".into(),
            dir.file("haproxy.pid"),
            "--master-socket".into(),
            dir.file("master.sock"),
        ];
        let mut mesh = Mesh {
            dir,
            args,
            child: None,
            base,
        };
        mesh.spawn();
        mesh
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path("consumer.log"))
            .unwrap();
        let child = Command::new(example())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the haproxy example");
        self.child = Some(child);
    }

    /// SIGKILL: the consumer dies without a chance to clean up; HAProxy stays.
    fn kill_consumer(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn consumer_pid(&self) -> u32 {
        self.child.as_ref().expect("consumer running").id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("consumer.log")).unwrap_or_default()
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.dir.path("haproxy.cfg")).unwrap_or_default()
    }

    /// Configurations HAProxy confirmed loading, as the consumer logged them.
    fn installs(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("haproxy reloaded") || l.contains("haproxy started"))
            .count()
    }

    fn master(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path("haproxy.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|&p| pid_alive(p))
    }

    /// A command on HAProxy's master CLI (`@1 ...` goes to the current worker).
    fn cli(&self, command: &str) -> Option<String> {
        let mut s = UnixStream::connect(self.dir.path("master.sock")).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{command}\n").as_bytes()).ok()?;
        s.shutdown(std::net::Shutdown::Write).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Server names the current HAProxy worker routes to.
    fn servers(&self) -> Option<BTreeSet<String>> {
        let out = self.cli("@1 show servers state")?;
        if !out.starts_with('1') {
            return None; // not the state file format: the worker is not ready
        }
        Some(
            out.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
                .collect(),
        )
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.kill_consumer();
        let Some(master) = self.master() else { return };
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        let mut pids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.push(master);
        kill_pid(master, libc::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            pids.iter().all(|&p| !pid_alive(p))
        }) {
            for &p in pids.iter().filter(|&&p| pid_alive(p)) {
                kill_pid(p, libc::SIGKILL);
            }
        }
    }
}

/// Polls `present` (None: no answer, HAProxy is reloading) until it has been false for
/// 700 ms in a row; returns how long after `since` it was last seen true (zero if never),
/// or None if it does not settle within 8 s. "Settled", not "first seen gone": the
/// registrator may write a stopping container's service more than once.
fn settle(since: Instant, mut present: impl FnMut() -> Option<bool>) -> Option<Duration> {
    let mut last_seen = Duration::ZERO;
    while since.elapsed() < last_seen + Duration::from_millis(700) {
        if since.elapsed() > Duration::from_secs(8) {
            return None;
        }
        if present() != Some(false) {
            last_seen = since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Some(last_seen)
}

/// `GET /` with `Host: host` on a new connection to HAProxy's `port`: (status, body).
fn get(port: u16, host: &str) -> Result<(u16, String), String> {
    http::get(port, "/", host, Duration::from_secs(5))
}

/// A busybox httpd replica of an HTTP service whose index page says `body`.
fn replica(name: &str, service: &str, domains: &[&str], body: &str) -> Container {
    let env = [
        format!("SERVICE_NAME={service}"),
        "SERVICE_MODE=http".to_string(),
        format!("SERVICE_DOMAINS={}", domains.join(",")),
    ];
    let mut args = vec!["-p", "127.0.0.1::80"];
    for e in &env {
        args.extend(["-e", e.as_str()]);
    }
    let script = format!("echo {body} > /www/index.html; exec httpd -f -p 80 -h /www");
    Container::run(name, &args, &["sh", "-c", &script])
}

#[test]
fn services_route_through_haproxy_and_follow_their_containers() {
    let p = prefix("mesh");
    let host = unique("node");
    let web = unique("web");
    let (d1, d2) = (
        format!("{}.mesh.test", unique("a")),
        format!("{}.mesh.test", unique("b")),
    );
    // The consumer starts first: everything after its first read arrives by the watch.
    let mut mesh = Mesh::start(&uri(&p), "haproxy");
    let base = mesh.base;
    let r1 = replica(&unique("r1"), &web, &[&d1, &d2], "r1");
    let r2 = replica(&unique("r2"), &web, &[&d1, &d2], "r2");
    let _ext = Container::httpd(
        &unique("ext"),
        5432,
        &[
            &format!("SERVICE_NAME={}", unique("db")),
            "SERVICE_EXTERNAL_PORT=10",
        ],
    );
    let _int = Container::httpd(
        &unique("int"),
        6379,
        &[
            &format!("SERVICE_NAME={}", unique("cache")),
            "SERVICE_INTERNAL_PORT=20",
        ],
    );
    // --explicit: only containers that name their service, not every container of the
    // shared dockerd.
    let registrator = Running::start(&[
        "--hostname",
        &host,
        "--interval",
        "1",
        "--explicit",
        &uri(&p),
    ]);
    let context = |mesh: &Mesh| {
        format!(
            "consumer:\n{}\nconfig:\n{}\nregistrator:\n{}",
            mesh.log(),
            mesh.config(),
            registrator.log()
        )
    };

    // Both domains answer by Host header, from both replicas; other hosts get 503.
    let both = BTreeSet::from(["r1".to_string(), "r2".to_string()]);
    let answers = |domain: &str| -> BTreeSet<String> {
        (0..10)
            .filter_map(|_| get(base, domain).ok())
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || answers(&d1) == both
            && answers(&d2) == both),
        "{d1} and {d2} do not answer from both replicas: {:?} {:?}\n{}",
        answers(&d1),
        answers(&d2),
        context(&mesh)
    );
    assert_eq!(
        get(base, &format!("{d1}:{base}")).map(|(s, _)| s),
        Ok(200),
        "the port in the Host header is ignored"
    );
    assert_eq!(
        get(base, &d1.to_uppercase()).map(|(s, _)| s),
        Ok(200),
        "host names are case-insensitive"
    );
    assert_eq!(get(base, "unknown.mesh.test").map(|(s, _)| s), Ok(503));

    // TCP: the external port on the public bind, the internal one on the private bind.
    assert!(
        wait_until(Duration::from_secs(10), || get(base + 10, "x")
            .is_ok_and(|(s, b)| s == 200 && b == "hello from busybox")
            && get(base + 20, "x")
                .is_ok_and(|(s, b)| s == 200 && b == "hello from busybox")),
        "TCP services do not answer on {} and {}\n{}",
        base + 10,
        base + 20,
        context(&mesh)
    );
    assert!(
        mesh.config()
            .contains(&format!("bind 127.0.0.1:{}", base + 20)),
        "{}",
        mesh.config()
    );

    // The consumer crashes: HAProxy keeps serving. Restarted, it adopts the same master.
    let master = mesh.master().expect("HAProxy master running");
    mesh.kill_consumer();
    assert_eq!(
        get(base, &d1).map(|(s, _)| s),
        Ok(200),
        "HAProxy outlives the consumer"
    );
    let (installs, before) = (mesh.installs(), mesh.log().len());
    mesh.spawn();
    assert!(
        wait_until(Duration::from_secs(10), || mesh.installs() > installs),
        "the restarted consumer did not reload HAProxy\n{}",
        context(&mesh)
    );
    assert!(
        mesh.log()[before..].contains(&format!("haproxy reloaded (master pid {master})")),
        "{}",
        context(&mesh)
    );
    assert_eq!(mesh.master(), Some(master), "no second HAProxy");

    // An established connection (a TCP session half-way through its request) survives
    // the reloads that follow.
    let mut held = TcpStream::connect(("127.0.0.1", base + 10)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(b"GET / HTTP/1.0\r\n").unwrap();
    let installs = mesh.installs();

    // Requests run continuously while replica r1 stops.
    let (r1_server, r2_server) = (
        format!("{host}:{}:80", r1.name),
        format!("{host}:{}:80", r2.name),
    );
    assert!(
        mesh.servers()
            .is_some_and(|s| s.contains(&r1_server) && s.contains(&r2_server)),
        "{:?}",
        mesh.servers()
    );
    let running = Arc::new(AtomicBool::new(true));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (running, d1) = (running.clone(), d1.clone());
            std::thread::spawn(move || {
                let mut results = Vec::new();
                while running.load(Ordering::SeqCst) {
                    results.push((Instant::now(), get(base, &d1)));
                }
                results
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let stop_called = Instant::now();
    r1.stop(); // docker stop -t 1
    let stopped = Instant::now();
    let out_of_rotation = settle(stopped, || {
        mesh.servers()
            .map(|s| s.contains(&r1_server) || !s.contains(&r2_server))
    });
    running.store(false, Ordering::SeqCst);
    let results: Vec<_> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(_, r)| match r {
            Ok((200, _)) => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    let out_of_rotation = out_of_rotation.unwrap_or_else(|| {
        panic!(
            "r1 is still in HAProxy's rotation: {:?}\n{}",
            mesh.servers(),
            context(&mesh)
        )
    });
    let after: BTreeSet<&str> = results
        .iter()
        .filter(|(t, _)| *t > stopped + out_of_rotation)
        .filter_map(|(_, r)| r.as_ref().ok().map(|(_, b)| b.as_str()))
        .collect();
    eprintln!(
        "replica stop: out of rotation {out_of_rotation:?} after docker stop returned (it took {:?}); {} requests during the stop, {} failed",
        stopped - stop_called,
        results.len(),
        failed.len()
    );
    assert!(
        out_of_rotation <= Duration::from_secs(1),
        "r1 left the rotation only after {out_of_rotation:?}\n{}",
        context(&mesh)
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while r2 was up: {failed:?}",
        failed.len(),
        results.len()
    );
    assert_eq!(
        after,
        BTreeSet::from(["r2"]),
        "only r2 answers once r1 is out"
    );

    held.write_all(b"\r\n").unwrap();
    let mut answer = String::new();
    held.read_to_string(&mut answer).unwrap();
    assert!(
        mesh.installs() > installs,
        "no reload happened while the connection was open\n{}",
        context(&mesh)
    );
    assert!(
        answer.starts_with("HTTP/1.")
            && answer.contains(" 200 ")
            && answer.ends_with("hello from busybox\n"),
        "{answer:?}"
    );

    // The last replica goes: its backend leaves HAProxy, its domains answer 503.
    docker(&["rm", "-f", &r2.name]);
    let removed = Instant::now();
    let took = settle(removed, || mesh.servers().map(|s| s.contains(&r2_server)));
    let took = took.unwrap_or_else(|| {
        panic!(
            "r2 is still routed after its removal: {:?}\n{}",
            mesh.servers(),
            context(&mesh)
        )
    });
    eprintln!("last replica removed: out of HAProxy {took:?} after docker rm returned");
    for domain in [&d1, &d2] {
        assert_eq!(
            get(base, domain).map(|(s, _)| s),
            Ok(503),
            "{domain}\n{}",
            context(&mesh)
        );
    }
    assert!(!mesh.config().contains(&web), "{}", mesh.config());
}

#[test]
fn a_watch_that_resumes_from_a_compacted_revision_reads_everything_again() {
    let mut etcd = Etcd::start_single("mesh-compact", &[]);
    let ep = etcd.url();
    let put_instance = |id: &str, port: &str| {
        for (field, value) in [
            ("address", "127.0.0.1"),
            ("port", port),
            ("mode", "http"),
            ("domains/a.compact.test", "a.compact.test"),
        ] {
            etcdctl(
                &ep,
                &[],
                &["put", &format!("/mesh/web/{id}/{field}"), value],
            );
        }
    };
    put_instance("i1", "1111");
    let mesh = Mesh::start(
        &format!("etcd://{}/mesh", etcd.endpoint()),
        "haproxy-compact",
    );
    assert!(
        wait_until(Duration::from_secs(10), || mesh
            .config()
            .contains("server i1 127.0.0.1:1111")),
        "{}\n{}",
        mesh.log(),
        mesh.config()
    );

    // The consumer sleeps through an etcd restart, a change and a compaction, so its
    // watch resumes from a revision etcd no longer has.
    let consumer = mesh.consumer_pid();
    kill_pid(consumer, libc::SIGSTOP);
    etcd.stop();
    etcd.start();
    etcdctl(&ep, &[], &["del", "--prefix", "/mesh/web/i1/"]);
    put_instance("i2", "2222");
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl(&ep, &[], &["get", "/mesh", "-w", "json"])).unwrap();
    let revision = status["header"]["revision"].as_i64().unwrap();
    etcdctl(&ep, &[], &["compact", &revision.to_string()]);
    kill_pid(consumer, libc::SIGCONT);

    assert!(
        wait_until(Duration::from_secs(10), || {
            let c = mesh.config();
            c.contains("server i2 127.0.0.1:2222") && !c.contains("i1")
        }),
        "{}\n{}",
        mesh.log(),
        mesh.config()
    );
    assert!(mesh.log().contains("was compacted"), "{}", mesh.log());
    assert!(!mesh.log().contains("ERROR"), "{}", mesh.log());
    drop(mesh);
    drop(etcd);
}
