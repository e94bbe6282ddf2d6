//! Docker through its own CLI: the daemon `tests/daemons.sh run` started (or another one
//! by its DOCKER_HOST), and busybox containers of each test's own, removed when dropped.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{env, keys_with, kill_pid, succeeded, unique};

/// The shared dockerd's `DOCKER_HOST` (`unix:///tmp/registrator-test/docker.sock`).
pub fn docker_host() -> String {
    env("DOCKER_HOST")
}

/// The host path of the shared dockerd's socket.
pub fn docker_socket() -> PathBuf {
    let host = docker_host();
    match host.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None => panic!("DOCKER_HOST={host} is not a unix socket"),
    }
}

/// The local busybox image every test container runs (`local/busybox:latest`).
pub fn image() -> String {
    env("REG_IMAGE")
}

/// How long one docker command may take: a hung dockerd fails the test instead of
/// hanging the suite.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// The docker CLI against one daemon.
#[derive(Clone, Debug)]
pub struct Cli {
    pub host: String,
}

impl Cli {
    /// The daemon `tests/daemons.sh run` started.
    pub fn shared() -> Cli {
        Cli::at(&docker_host())
    }

    /// The daemon at `host` (a `DOCKER_HOST` value).
    pub fn at(host: &str) -> Cli {
        Cli {
            host: host.to_string(),
        }
    }

    /// Runs `docker ARGS` to the end (at most a minute), whatever its outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        let child = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_LIMIT) {
            Ok(out) => out.unwrap_or_else(|e| panic!("docker {args:?}: {e}")),
            Err(_) => {
                kill_pid(pid, libc::SIGKILL);
                panic!(
                    "docker {args:?} did not finish within {} s: dockerd hangs",
                    CLI_LIMIT.as_secs()
                );
            }
        }
    }

    /// Runs `docker ARGS`; its stdout, trimmed. Panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        succeeded(&format!("docker {args:?}"), &self.output(args))
    }

    /// Runs `docker ARGS`; its stdout, whatever the outcome.
    pub fn out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.output(args).stdout).into_owned()
    }
}

/// `docker ARGS` on the shared dockerd; its stdout, trimmed. Panics when it fails.
pub fn docker(args: &[&str]) -> String {
    Cli::shared().run(args)
}

/// The arguments after `docker run -d` (or `docker create`) for a container `name` of
/// the test image: `--init --pull never --name <name> <args...> <image> <cmd...>`.
pub fn container_args(name: &str, args: &[&str], cmd: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ["--init", "--pull", "never", "--name", name]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    all.push(image());
    all.extend(cmd.iter().map(|s| s.to_string()));
    all
}

/// [`container_args`] for a busybox httpd on container port `port`, published on
/// 127.0.0.1 (random host port), with `-e` for each of `env`.
pub fn httpd_args(name: &str, port: u16, env: &[&str]) -> Vec<String> {
    let publish = format!("127.0.0.1::{port}");
    let mut args = vec!["-p", publish.as_str()];
    for e in env {
        args.push("-e");
        args.push(e);
    }
    let p = port.to_string();
    container_args(name, &args, &["httpd", "-f", "-p", &p, "-h", "/www"])
}

/// `docker <verb...> <args...>` on the shared dockerd, e.g. `run -d` with [`httpd_args`].
pub fn docker_with(verb: &[&str], args: &[String]) -> String {
    let mut all = verb.to_vec();
    all.extend(args.iter().map(String::as_str));
    docker(&all)
}

/// A container on the shared dockerd, removed (`docker rm -f`) when dropped.
pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// `docker run -d --init --pull never --name <name> <args...> <image> <cmd...>`.
    pub fn run(name: &str, args: &[&str], cmd: &[&str]) -> Container {
        let id = docker_with(&["run", "-d"], &container_args(name, args, cmd));
        Container {
            name: name.to_string(),
            id,
        }
    }

    /// A busybox httpd on container port `port`, published on 127.0.0.1 (random host port).
    pub fn httpd(name: &str, port: u16, env: &[&str]) -> Container {
        let id = docker_with(&["run", "-d"], &httpd_args(name, port, env));
        Container {
            name: name.to_string(),
            id,
        }
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

    /// `docker stop -t 1`.
    pub fn stop(&self) {
        docker(&["stop", "-t", "1", &self.name]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        rm_quietly(std::slice::from_ref(&self.name));
    }
}

/// `docker rm -f NAMES...` on the shared dockerd, ignoring every error: for `Drop`, which
/// must not panic.
pub fn rm_quietly<S: AsRef<OsStr>>(names: &[S]) {
    let _ = Command::new("docker")
        .args(["rm", "-f"])
        .args(names)
        .env("DOCKER_HOST", docker_host())
        .output();
}

/// The README's three example containers: `web` (HTTP on 80 for the domains in
/// `SERVICE_DOMAINS`), `db` (5432, `SERVICE_EXTERNAL_PORT`) and `cache` (6379,
/// `SERVICE_INTERNAL_PORT`).
pub struct ReadmeExamples {
    pub web: Container,
    pub db: Container,
    pub cache: Container,
    external: String,
    internal: String,
}

impl ReadmeExamples {
    /// Starts them; `domains` must name example.com and www.example.com (in any spelling
    /// the registrator accepts).
    pub fn start(domains: &str, external: &str, internal: &str) -> ReadmeExamples {
        let web = Container::httpd(
            &unique("web"),
            80,
            &[
                "SERVICE_NAME=web",
                "SERVICE_MODE=http",
                &format!("SERVICE_DOMAINS={domains}"),
            ],
        );
        let db = Container::httpd(
            &unique("db"),
            5432,
            &[
                "SERVICE_NAME=db",
                &format!("SERVICE_EXTERNAL_PORT={external}"),
            ],
        );
        let cache = Container::httpd(
            &unique("cache"),
            6379,
            &[
                "SERVICE_NAME=cache",
                &format!("SERVICE_INTERNAL_PORT={internal}"),
            ],
        );
        ReadmeExamples {
            web,
            db,
            cache,
            external: external.to_string(),
            internal: internal.to_string(),
        }
    }

    /// Their container names.
    pub fn names(&self) -> [&str; 3] {
        [&self.web.name, &self.db.name, &self.cache.name]
    }

    /// The keys the registrator of `host` writes for them, as the README documents them,
    /// relative to the prefix.
    pub fn expected(&self, host: &str) -> BTreeMap<String, String> {
        let w = format!("/web/{host}:{}:80", self.web.name);
        let d = format!("/db/{host}:{}:5432", self.db.name);
        let c = format!("/cache/{host}:{}:6379", self.cache.name);
        [
            (format!("{w}/address"), "127.0.0.1".to_string()),
            (format!("{w}/port"), self.web.host_port(80).to_string()),
            (format!("{w}/mode"), "http".into()),
            (format!("{w}/domains/example.com"), "example.com".into()),
            (
                format!("{w}/domains/www.example.com"),
                "www.example.com".into(),
            ),
            (format!("{w}/node"), host.to_string()),
            (format!("{d}/address"), "127.0.0.1".into()),
            (format!("{d}/port"), self.db.host_port(5432).to_string()),
            (format!("{d}/mode"), "tcp".into()),
            (format!("{d}/external_port"), self.external.clone()),
            (format!("{d}/node"), host.to_string()),
            (format!("{c}/address"), "127.0.0.1".into()),
            (format!("{c}/port"), self.cache.host_port(6379).to_string()),
            (format!("{c}/mode"), "tcp".into()),
            (format!("{c}/internal_port"), self.internal.clone()),
            (format!("{c}/node"), host.to_string()),
        ]
        .into_iter()
        .collect()
    }

    /// Their keys under `prefix` (read with etcdctl), relative to it.
    pub fn registered(&self, prefix: &str) -> BTreeMap<String, String> {
        self.names()
            .iter()
            .flat_map(|name| keys_with(prefix, name))
            .collect()
    }
}
