//! The registrator under test: its binary as a command, `--once` runs, and a loop
//! running in the background ([`Running`]) with its log, signals and /proc figures.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{docker_host, kill_pid, last_lines, unique, Engine};

/// The registrator binary cargo built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_registrator")
}

/// `bin ARGS` against `docker_host` with `RUST_LOG=info`, and nothing added: the bench
/// runs it exactly as a user would.
pub fn command(bin: &str, docker_host: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .env("DOCKER_HOST", docker_host)
        .env("RUST_LOG", "info");
    c
}

/// The registrator as a command against the shared dockerd. Tests use made-up host names
/// that do not resolve, and resolving one would send a DNS query off the machine: so
/// unless a test passes its own `--ip` (or `-ip`), this adds `--ip 127.0.0.1` (the
/// address tests publish on anyway).
pub fn registrator(args: &[&str]) -> Command {
    let mut all = Vec::new();
    let ip =
        |a: &str| a.trim_start_matches('-') == "ip" || a.trim_start_matches('-').starts_with("ip=");
    if !args.iter().any(|a| a.starts_with('-') && ip(a)) {
        all.extend(["--ip", "127.0.0.1"]);
    }
    all.extend_from_slice(args);
    command(bin(), &docker_host(), &all)
}

/// Runs `registrator --once ARGS` against the shared dockerd and returns its output.
pub fn once(args: &[&str]) -> Output {
    once_with(&docker_host(), args)
}

/// Runs `registrator --once ARGS` against `engine` and returns its output.
pub fn once_on(engine: Engine, args: &[&str]) -> Output {
    once_with(&engine.host(), args)
}

/// Runs `registrator --once ARGS` against `docker_host` and returns its output.
pub fn once_with(docker_host: &str, args: &[&str]) -> Output {
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    registrator(&all)
        .env("DOCKER_HOST", docker_host)
        .output()
        .expect("run registrator")
}

/// The stderr of a finished run, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stdout of a finished run, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A registrator running in the background, killed (SIGKILL) when dropped. Its stderr
/// goes to a log file that [`Running::log`] reads.
pub struct Running {
    pub child: Child,
    log: PathBuf,
}

impl Running {
    /// `registrator ARGS` against the shared dockerd.
    pub fn start(args: &[&str]) -> Running {
        Running::spawn(registrator(args))
    }

    /// `registrator ARGS` against `engine`.
    pub fn on(engine: Engine, args: &[&str]) -> Running {
        Running::with_docker(&engine.host(), args)
    }

    /// `registrator ARGS` against `docker_host`.
    pub fn with_docker(docker_host: &str, args: &[&str]) -> Running {
        let mut cmd = registrator(args);
        cmd.env("DOCKER_HOST", docker_host);
        Running::spawn(cmd)
    }

    /// Starts the registrator from a prepared command (extra environment, say).
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

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 15 lines of the log.
    pub fn log_tail(&self) -> String {
        last_lines(&self.log(), 15)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) by PID; panics if it cannot be delivered.
    pub fn signal(&self, sig: i32) {
        assert!(
            kill_pid(self.pid(), sig),
            "signal {sig} to registrator {}",
            self.pid()
        );
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

    /// SIGTERM, and how long the exit took (None: still running after `limit`).
    pub fn term(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        kill_pid(self.pid(), libc::SIGTERM);
        self.wait(limit)
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Panics, with the end of its log, if it exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("registrator exited ({status}):\n{}", self.log_tail());
        }
    }

    /// /proc/PID/status, read once (empty if unreadable).
    pub fn status(&self) -> ProcStatus {
        ProcStatus(
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default(),
        )
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status().kib("VmRSS:")
    }
}

/// The text of /proc/PID/status at one moment.
pub struct ProcStatus(String);

impl ProcStatus {
    /// A field in KiB (`VmRSS:`, `VmHWM:`, ...), 0 if missing.
    pub fn kib(&self, field: &str) -> u64 {
        self.0
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
