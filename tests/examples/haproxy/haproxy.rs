//! Runs HAProxy: checks a configuration, installs it, starts the master-worker
//! daemon or reloads it, and confirms the reload on the master CLI socket.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::cli::Options;

/// How the configuration got to HAProxy.
#[derive(Debug)]
pub enum Installed {
    Started(i32),
    Reloaded(i32),
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Installed::Started(pid) => write!(f, "started (master pid {pid})"),
            Installed::Reloaded(pid) => write!(f, "reloaded (master pid {pid})"),
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// `haproxy -c` refused the configuration: it was not installed.
    Invalid(String),
    /// Writing the file, starting or signalling HAProxy failed.
    Io { op: &'static str, detail: String },
    /// HAProxy did not load the new configuration and serves the previous one.
    NotLoaded { pid: i32, detail: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(out) => write!(f, "haproxy -c refused the new configuration: {out}"),
            Error::Io { op, detail } => write!(f, "haproxy {op}: {detail}"),
            Error::NotLoaded { pid, detail } => {
                write!(
                    f,
                    "haproxy (master pid {pid}) did not load the new configuration \
                     ({detail}); it serves the previous one"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

pub struct Haproxy {
    bin: PathBuf,
    config: PathBuf,
    pidfile: PathBuf,
    socket: PathBuf,
}

fn absolute(p: &Path) -> PathBuf {
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn output_text(out: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Haproxy {
    /// Paths are made absolute: the master's command line names the configuration,
    /// and that is how a later run recognises its HAProxy.
    pub fn new(options: &Options) -> Haproxy {
        Haproxy {
            bin: options.haproxy.clone(),
            config: absolute(&options.config),
            pidfile: absolute(&options.pidfile),
            socket: absolute(&options.master_socket),
        }
    }

    /// Checks `text`, installs it as the configuration and has HAProxy run it.
    pub fn install(&self, text: &str) -> Result<Installed, Error> {
        let mut staged = self.config.as_os_str().to_owned();
        staged.push(".new");
        let staged = PathBuf::from(staged);
        let io = |op: &'static str| {
            move |e: std::io::Error| Error::Io {
                op,
                detail: e.to_string(),
            }
        };
        std::fs::write(&staged, text).map_err(io("write the configuration"))?;
        let check = Command::new(&self.bin)
            .arg("-c")
            .arg("-f")
            .arg(&staged)
            .output()
            .map_err(io("check"))?;
        if !check.status.success() {
            let _ = std::fs::remove_file(&staged);
            return Err(Error::Invalid(output_text(&check)));
        }
        log::debug!("haproxy -c: {}", output_text(&check));
        std::fs::rename(&staged, &self.config).map_err(io("install the configuration"))?;
        match self.master() {
            Some(pid) => self.reload(pid),
            None => self.start(),
        }
    }

    /// The running master started on this configuration, from the pidfile.
    pub fn master(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        // A zombie or a reused PID has a different (or empty) command line.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = self.config.as_os_str().as_encoded_bytes();
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == config)
            .then_some(pid)
    }

    fn start(&self) -> Result<Installed, Error> {
        let mut socket = self.socket.as_os_str().to_owned();
        socket.push(",mode,600");
        let out = Command::new(&self.bin)
            .args(["-W", "-D", "-f"])
            .arg(&self.config)
            .arg("-p")
            .arg(&self.pidfile)
            .arg("-S")
            .arg(socket)
            .output()
            .map_err(|e| Error::Io {
                op: "start",
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(Error::Io {
                op: "start",
                detail: output_text(&out),
            });
        }
        // With -D the launcher exits as soon as it forked; the master writes the pidfile.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(pid) = self.master() {
                return Ok(Installed::Started(pid));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(Error::Io {
            op: "start",
            detail: format!("no running master in {} after 5 s", self.pidfile.display()),
        })
    }

    /// SIGUSR2 to the master, then waits until the master CLI reports the reload.
    fn reload(&self, pid: i32) -> Result<Installed, Error> {
        let before = self.reloads();
        // SAFETY: kill(2) with a PID read from our pidfile and checked to be our master.
        if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
            return Err(Error::Io {
                op: "reload",
                detail: std::io::Error::last_os_error().to_string(),
            });
        }
        let Some((reloads, failed)) = before else {
            log::debug!(
                "no answer on {}; not confirming the reload",
                self.socket.display()
            );
            return Ok(Installed::Reloaded(pid));
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            // The socket does not answer while the master re-executes itself.
            if let Some((now, failed_now)) = self.reloads() {
                if now > reloads {
                    return if failed_now <= failed {
                        Ok(Installed::Reloaded(pid))
                    } else {
                        Err(Error::NotLoaded {
                            pid,
                            detail: "its reload failed, often a port in use".into(),
                        })
                    };
                }
            }
        }
        Err(Error::NotLoaded {
            pid,
            detail: format!(
                "no reload reported on {} within 10 s",
                self.socket.display()
            ),
        })
    }

    /// The master's reload count and failed-reload count, from `show proc`.
    fn reloads(&self) -> Option<(u64, u64)> {
        let mut s = UnixStream::connect(&self.socket).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"show proc\n").ok()?;
        // One command per connection: the master answers once our side is closed.
        s.shutdown(std::net::Shutdown::Write).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        parse_show_proc(&out)
    }
}

/// `<pid> master <reloads> [failed: <n>] <uptime> <version>` from the master CLI.
pub fn parse_show_proc(out: &str) -> Option<(u64, u64)> {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("master"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let reloads = words.get(2)?.parse().ok()?;
    let failed = match (words.get(3), words.get(4)) {
        (Some(&"[failed:"), Some(n)) => n.trim_end_matches(']').parse().ok()?,
        _ => 0,
    };
    Some((reloads, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_proc() {
        // Recorded from HAProxy 2.6.12 after one failed and one good reload.
        let out = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n\
                   29388           master          2 [failed: 0]   0d00h00m04s     2.6.12-1+deb12u4\n\
                   # workers\n\
                   659             worker          0               0d00h00m00s     2.6.12-1+deb12u4\n";
        assert_eq!(parse_show_proc(out), Some((2, 0)));
        assert_eq!(
            parse_show_proc("29388 master 1 [failed: 1] 0d 2.6"),
            Some((1, 1))
        );
        assert_eq!(parse_show_proc("Unknown command\n"), None);
    }
}
