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
    format!("etcd://{}{prefix}", etcd_url().trim_start_matches("http://"))
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
    format!("{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A fresh key prefix for one test.
pub fn prefix(tag: &str) -> String {
    format!("/t/{}", unique(tag))
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args).env("DOCKER_HOST", docker_host()))
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
        Container { name: name.to_string(), id }
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
        out.lines().next().and_then(|l| l.rsplit(':').next()).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {out:?}"))
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).env("DOCKER_HOST", docker_host()).output();
    }
}

/// Every key under `prefix` with its value, read with etcdctl (a client we did not write).
pub fn etcd_get(prefix: &str) -> BTreeMap<String, String> {
    let out = run(Command::new("etcdctl").env("ETCDCTL_API", "3").args(["--endpoints", &etcd_url(), "get", "--prefix", prefix]));
    let lines: Vec<&str> = out.lines().collect();
    lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect()
}

/// Puts a key with etcdctl.
pub fn etcd_put(key: &str, value: &str) {
    run(Command::new("etcdctl").env("ETCDCTL_API", "3").args(["--endpoints", &etcd_url(), "put", key, value]));
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

/// The registrator as a command, with DOCKER_HOST set.
pub fn registrator(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env("DOCKER_HOST", docker_host()).env("RUST_LOG", "info");
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
        let child = registrator(args).stdout(Stdio::null()).stderr(file).spawn().expect("spawn registrator");
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
