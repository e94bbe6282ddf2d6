//! The local machine: commands run to completion, PIDs and signals, free ports, scratch
//! directories, polling and spreading work over threads.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::unique;

/// Runs a command, panicking with its output when it fails; its stdout, trimmed.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    succeeded(&format!("{cmd:?}"), &out)
}

/// The stdout, trimmed, of command `what` that has finished; panics with its output when
/// it failed.
pub fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// Sends `sig` (e.g. `libc::SIGTERM`) to a process this test started; whether it was
/// delivered.
pub fn kill_pid(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) on a PID we spawned; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) == 0 }
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // pid (comm) state ...: the command may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);

/// A port on 127.0.0.1 in 24100-24699 that nothing listens on (for daemons that must be
/// told their port before they start). Each process starts at its own offset, so test
/// binaries running side by side rarely meet.
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

/// A scratch directory `/tmp/reg-scratch-<tag>-<pid>-<n>` (short enough for unix socket
/// paths), removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it, empty.
    pub fn new(tag: &str) -> TempDir {
        let dir = PathBuf::from(format!("/tmp/reg-scratch-{}", unique(tag)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The path of `name` inside it.
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

/// Calls `f` on every item from `workers` threads, each taking an equal share in order.
pub fn in_parallel<T: Sync>(items: &[T], workers: usize, f: impl Fn(&T) + Sync) {
    let f = &f;
    std::thread::scope(|s| {
        for chunk in items.chunks(items.len().div_ceil(workers).max(1)) {
            s.spawn(move || chunk.iter().for_each(f));
        }
    });
}
