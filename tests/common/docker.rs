//! The container engines the tests drive through their own CLIs: the dockerd that
//! `tests/daemons.sh run` started (or another one by its DOCKER_HOST) and the Podman that
//! `tests/podman.sh run` started, and busybox containers of each test's own, removed when
//! dropped.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{env, keys_with, kill_pid, succeeded, unique};

/// A container engine the registrator is tested against; both serve the Docker API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// dockerd 20.10 from `tests/daemons.sh`, driven by the docker CLI.
    Docker,
    /// Rootful Podman 4.3 from `tests/podman.sh`, driven by the podman CLI (containers
    /// it creates get slirp4netns, no bridge and no iptables; the docker CLI against the
    /// Podman socket would get the netavark bridge).
    Podman,
}

impl Engine {
    /// Podman when `tests/podman.sh run` set it up (`REG_PODMAN_HOST`). Else None, and a
    /// line on stderr naming the test as skipped; or, under `REG_PODMAN_REQUIRED=1` (which
    /// `make test` sets), a failure: a Podman that did not come up must not pass as one
    /// that did.
    pub fn podman() -> Option<Engine> {
        if std::env::var_os("REG_PODMAN_HOST").is_some() {
            return Some(Engine::Podman);
        }
        let test = std::thread::current().name().unwrap_or("?").to_string();
        let why = "REG_PODMAN_HOST is not set (run under `tests/podman.sh run`, as `make test` \
                   does)";
        if std::env::var("REG_PODMAN_REQUIRED").is_ok_and(|v| !v.is_empty() && v != "0") {
            panic!("test {test}: REG_PODMAN_REQUIRED is set but {why}");
        }
        // Straight to stderr: the test harness would hide an `eprintln!` of a passing test.
        let _ = writeln!(std::io::stderr(), "test {test}: skipped: {why}");
        None
    }

    /// Its name in messages: `dockerd` or `podman`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Docker => "dockerd",
            Engine::Podman => "podman",
        }
    }

    /// The `DOCKER_HOST` the registrator gets for it.
    pub fn host(self) -> String {
        match self {
            Engine::Docker => docker_host(),
            Engine::Podman => env("REG_PODMAN_HOST"),
        }
    }

    /// The host path of its API socket.
    pub fn socket(self) -> PathBuf {
        let host = self.host();
        match host.strip_prefix("unix://") {
            Some(p) => PathBuf::from(p),
            None => panic!("{} host {host} is not a unix socket", self.name()),
        }
    }

    /// The local busybox image test containers run (`local/busybox:latest`; Podman
    /// stores it as `localhost/local/busybox:latest` and finds it by the short name).
    pub fn image(self) -> String {
        match self {
            Engine::Docker => env("REG_IMAGE"),
            Engine::Podman => env("REG_PODMAN_IMAGE"),
        }
    }

    /// Its CLI: `docker` against its socket, or `podman` on its storage (the
    /// `CONTAINERS_*` files `tests/podman.sh run` exports).
    pub fn cli(self) -> Cli {
        match self {
            Engine::Docker => Cli::shared(),
            Engine::Podman => Cli {
                program: "podman",
                host: self.host(),
            },
        }
    }

    /// `<cli> ARGS`; its stdout, trimmed. Panics with its output when it fails.
    pub fn run(self, args: &[&str]) -> String {
        self.cli().run(args)
    }

    /// The arguments after `run -d` (or `create`) for a container `name` of the test
    /// image: `--init --pull never --name <name> <args...> <image> <cmd...>`. On Podman
    /// a container with its own network namespace gets `--network slirp4netns`, which
    /// publishes ports on 127.0.0.1 without a bridge, iptables or ip_forward.
    pub fn container_args(self, name: &str, args: &[&str], cmd: &[&str]) -> Vec<String> {
        self.container_args_of(&self.image(), name, args, cmd)
    }

    fn container_args_of(
        self,
        image: &str,
        name: &str,
        args: &[&str],
        cmd: &[&str],
    ) -> Vec<String> {
        let mut all: Vec<String> = ["--init", "--pull", "never", "--name", name]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let own_network = !args
            .iter()
            .any(|a| ["--net", "--network"].contains(a) || a.starts_with("--net="));
        if self == Engine::Podman && own_network {
            all.extend(["--network".to_string(), "slirp4netns".to_string()]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        all.push(image.to_string());
        all.extend(cmd.iter().map(|s| s.to_string()));
        all
    }

    /// [`Engine::container_args`] for a busybox httpd on container port `port`,
    /// published on 127.0.0.1 (random host port), with `-e` for each of `env`.
    pub fn httpd_args(self, name: &str, port: u16, env: &[&str]) -> Vec<String> {
        let publish = format!("127.0.0.1::{port}");
        let mut args = vec!["-p", publish.as_str()];
        for e in env {
            args.push("-e");
            args.push(e);
        }
        let p = port.to_string();
        self.container_args(name, &args, &["httpd", "-f", "-p", &p, "-h", "/www"])
    }

    /// `<cli> <verb...> <args...>`, e.g. `run -d` with [`Engine::httpd_args`].
    pub fn run_with(self, verb: &[&str], args: &[String]) -> String {
        let mut all = verb.to_vec();
        all.extend(args.iter().map(String::as_str));
        self.run(&all)
    }

    /// `<cli> rm -f NAMES...`, ignoring every error: for `Drop`, which must not panic.
    pub fn rm_quietly<S: AsRef<OsStr>>(self, names: &[S]) {
        let cli = self.cli();
        // Podman waits out the stop timeout first, as dockerd's `rm -f` does not.
        let now: &[&str] = match self {
            Engine::Docker => &[],
            Engine::Podman => &["-t", "0"],
        };
        let _ = Command::new(cli.program)
            .args(["rm", "-f"])
            .args(now)
            .args(names)
            .env("DOCKER_HOST", &cli.host)
            .output();
    }
}

/// The shared dockerd's `DOCKER_HOST` (`unix:///tmp/registrator-test/docker.sock`).
pub fn docker_host() -> String {
    env("DOCKER_HOST")
}

/// The host path of the shared dockerd's socket.
pub fn docker_socket() -> PathBuf {
    Engine::Docker.socket()
}

/// The local busybox image every test container on the shared dockerd runs
/// (`local/busybox:latest`).
pub fn image() -> String {
    env("REG_IMAGE")
}

/// How long one CLI command may take: a hung engine fails the test instead of hanging
/// the suite.
const CLI_LIMIT: Duration = Duration::from_secs(60);

/// A container CLI against one engine.
#[derive(Clone, Debug)]
pub struct Cli {
    /// `docker` or `podman`.
    pub program: &'static str,
    /// The engine's `DOCKER_HOST` (the docker CLI's; the podman CLI works on the storage
    /// its `CONTAINERS_*` files name).
    pub host: String,
}

impl Cli {
    /// The docker CLI against the dockerd `tests/daemons.sh run` started.
    pub fn shared() -> Cli {
        Cli::at(&docker_host())
    }

    /// The docker CLI against the daemon at `host` (a `DOCKER_HOST` value).
    pub fn at(host: &str) -> Cli {
        Cli {
            program: "docker",
            host: host.to_string(),
        }
    }

    /// Runs `<cli> ARGS` to the end (at most a minute), whatever its outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        let program = self.program;
        let child = Command::new(program)
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_LIMIT) {
            Ok(out) => out.unwrap_or_else(|e| panic!("{program} {args:?}: {e}")),
            Err(_) => {
                kill_pid(pid, libc::SIGKILL);
                panic!(
                    "{program} {args:?} did not finish within {} s: the engine hangs",
                    CLI_LIMIT.as_secs()
                );
            }
        }
    }

    /// Runs `<cli> ARGS`; its stdout, trimmed. Panics with its output when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        succeeded(&format!("{} {args:?}", self.program), &self.output(args))
    }

    /// Runs `<cli> ARGS`; its stdout, whatever the outcome.
    pub fn out(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.output(args).stdout).into_owned()
    }
}

/// `docker ARGS` on the shared dockerd; its stdout, trimmed. Panics when it fails.
pub fn docker(args: &[&str]) -> String {
    Cli::shared().run(args)
}

/// [`Engine::container_args`] on the shared dockerd.
pub fn container_args(name: &str, args: &[&str], cmd: &[&str]) -> Vec<String> {
    Engine::Docker.container_args(name, args, cmd)
}

/// [`Engine::httpd_args`] on the shared dockerd.
pub fn httpd_args(name: &str, port: u16, env: &[&str]) -> Vec<String> {
    Engine::Docker.httpd_args(name, port, env)
}

/// `docker <verb...> <args...>` on the shared dockerd, e.g. `run -d` with [`httpd_args`].
pub fn docker_with(verb: &[&str], args: &[String]) -> String {
    Engine::Docker.run_with(verb, args)
}

/// `docker rm -f NAMES...` on the shared dockerd, ignoring every error: for `Drop`, which
/// must not panic.
pub fn rm_quietly<S: AsRef<OsStr>>(names: &[S]) {
    Engine::Docker.rm_quietly(names)
}

/// A container of one engine, removed (`rm -f`) when dropped.
pub struct Container {
    pub name: String,
    pub id: String,
    pub engine: Engine,
    /// Podman: runs the healthcheck on the schedule its systemd timer would keep.
    health: Option<HealthTimer>,
    /// Podman: the image made for this container, removed with it.
    own_image: Option<String>,
}

impl Container {
    /// `docker run -d --init --pull never --name <name> <args...> <image> <cmd...>` on the
    /// shared dockerd.
    pub fn run(name: &str, args: &[&str], cmd: &[&str]) -> Container {
        Container::run_on(Engine::Docker, name, args, cmd)
    }

    /// A busybox httpd on container port `port`, published on 127.0.0.1 (random host
    /// port), on the shared dockerd.
    pub fn httpd(name: &str, port: u16, env: &[&str]) -> Container {
        Container::httpd_on(Engine::Docker, name, port, env)
    }

    /// `run -d --init --pull never --name <name> <args...> <image> <cmd...>` on `engine`.
    ///
    /// Where Podman differs by nature, this makes it behave as dockerd does for the test:
    /// a host-network container's `--expose P` (which Podman drops) becomes an image of
    /// its own with `EXPOSE P` (which Podman keeps), and a `--health-cmd` is run every
    /// `--health-interval` with `podman healthcheck run` (Podman schedules checks with
    /// systemd timers, absent here).
    pub fn run_on(engine: Engine, name: &str, args: &[&str], cmd: &[&str]) -> Container {
        let (args, own_image) = match engine {
            Engine::Podman if host_network(args) => expose_by_image(name, args),
            _ => (args.iter().map(|s| s.to_string()).collect(), None),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let image = own_image.clone().unwrap_or_else(|| engine.image());
        let id = engine.run_with(
            &["run", "-d"],
            &engine.container_args_of(&image, name, &args, cmd),
        );
        Container::started(engine, name, id, &args, own_image)
    }

    /// A busybox httpd on container port `port`, published on 127.0.0.1 (random host
    /// port), with `-e` for each of `env`, on `engine`.
    pub fn httpd_on(engine: Engine, name: &str, port: u16, env: &[&str]) -> Container {
        let id = engine.run_with(&["run", "-d"], &engine.httpd_args(name, port, env));
        Container::started(engine, name, id, &[], None)
    }

    /// A container started some other way (on `engine`, as `name` with ID `id`), to be
    /// removed when dropped.
    pub fn adopt(engine: Engine, name: &str, id: String) -> Container {
        Container::started(engine, name, id, &[], None)
    }

    fn started(
        engine: Engine,
        name: &str,
        id: String,
        args: &[&str],
        own_image: Option<String>,
    ) -> Container {
        let health = match (engine, flag(args, "--health-cmd")) {
            (Engine::Podman, Some(_)) => {
                let every = flag(args, "--health-interval").map_or(Duration::from_secs(30), |v| {
                    parse_interval(v).unwrap_or_else(|| panic!("--health-interval {v}"))
                });
                Some(HealthTimer::start(name, every))
            }
            _ => None,
        };
        Container {
            name: name.to_string(),
            id,
            engine,
            health,
            own_image,
        }
    }

    /// `<cli> ARGS` on this container's engine; its stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        self.engine.run(args)
    }

    /// The host port the engine published for `port/tcp`.
    pub fn host_port(&self, port: u16) -> u16 {
        let out = self.cli(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {out:?}"))
    }

    /// `stop -t 1`.
    ///
    /// Then waits (at most 5 s) until the engine's container list no longer shows it:
    /// dockerd 26 can answer the stop before its list says so (3 of 30 stops, seen
    /// here), and a `--once` run reads that list.
    pub fn stop(&self) {
        self.cli(&["stop", "-t", "1", &self.name]);
        let listed = || {
            !self
                .cli(&["ps", "-q", "--filter", &format!("id={}", self.id)])
                .trim()
                .is_empty()
        };
        let start = std::time::Instant::now();
        while listed() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The timer first: a check of a removed container only fails, but noisily.
        self.health.take();
        self.engine.rm_quietly(std::slice::from_ref(&self.name));
        if let Some(image) = &self.own_image {
            let _ = Command::new("podman").args(["rmi", "-f", image]).output();
        }
    }
}

/// The value after `name` in `args` (`--flag value` or `--flag=value`).
fn flag<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == name {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(name)?.strip_prefix('=')
        }
    })
}

/// Whether `args` put the container on the host's network.
fn host_network(args: &[&str]) -> bool {
    ["--net", "--network"]
        .iter()
        .any(|f| flag(args, f) == Some("host"))
}

/// A duration as `--health-interval` takes it: `300ms`, `2s`, `1m`.
fn parse_interval(v: &str) -> Option<Duration> {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(60 * n)),
        _ => None,
    }
}

/// Podman drops `--expose` for a host-network container but keeps its image's EXPOSE:
/// so the exposed ports go into an image made for container `name` (from the test
/// image), and the other arguments stay. Returns those and the image's name.
fn expose_by_image(name: &str, args: &[&str]) -> (Vec<String>, Option<String>) {
    let mut rest = Vec::new();
    let mut exposed = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (*a, a.strip_prefix("--expose=")) {
            ("--expose", _) => exposed.extend(it.next()),
            (_, Some(p)) => exposed.push(p),
            _ => rest.push(a.to_string()),
        }
    }
    if exposed.is_empty() {
        return (rest, None);
    }
    let podman = Engine::Podman;
    let image = format!("localhost/{name}-expose:latest");
    let tmp = format!("{name}-commit");
    podman.run(&[
        "create",
        "--pull",
        "never",
        "--name",
        &tmp,
        &podman.image(),
        "true",
    ]);
    let mut commit = vec!["commit".to_string(), "-q".into()];
    for p in exposed {
        commit.extend(["-c".to_string(), format!("EXPOSE {p}")]);
    }
    commit.extend([tmp.clone(), image.clone()]);
    podman.run_with(&[], &commit);
    podman.run(&["rm", &tmp]);
    (rest, Some(image))
}

/// Runs a Podman container's healthcheck every interval until dropped, as the systemd
/// timer Podman would create does (no systemd here).
struct HealthTimer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthTimer {
    fn start(name: &str, every: Duration) -> HealthTimer {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, name) = (stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || loop {
            let mut slept = Duration::ZERO;
            while slept < every {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                let step = (every - slept).min(Duration::from_millis(50));
                std::thread::sleep(step);
                slept += step;
            }
            // The check's outcome is what the test watches for, through the engine.
            let _ = Command::new("podman")
                .args(["healthcheck", "run", &name])
                .output();
        });
        HealthTimer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HealthTimer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
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
    /// Starts them on the shared dockerd; `domains` must name example.com and
    /// www.example.com (in any spelling the registrator accepts).
    pub fn start(domains: &str, external: &str, internal: &str) -> ReadmeExamples {
        ReadmeExamples::start_on(Engine::Docker, domains, external, internal)
    }

    /// [`ReadmeExamples::start`] on `engine`.
    pub fn start_on(
        engine: Engine,
        domains: &str,
        external: &str,
        internal: &str,
    ) -> ReadmeExamples {
        let web = Container::httpd_on(
            engine,
            &unique("web"),
            80,
            &[
                "SERVICE_NAME=web",
                "SERVICE_MODE=http",
                &format!("SERVICE_DOMAINS={domains}"),
            ],
        );
        let db = Container::httpd_on(
            engine,
            &unique("db"),
            5432,
            &[
                "SERVICE_NAME=db",
                &format!("SERVICE_EXTERNAL_PORT={external}"),
            ],
        );
        let cache = Container::httpd_on(
            engine,
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
