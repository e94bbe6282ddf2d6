//! The shipped artefacts against the real dockerd and etcd: the static musl binary and
//! the FROM scratch image, run exactly as the README shows.
//!
//! Builds both with the same scripts as `make static` and `make image` (a no-op when
//! nothing changed; the first musl build takes about a minute).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

const STATIC_BIN: &str = "target/x86_64-unknown-linux-musl/release/registrator";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/build-static.sh` and `tests/build-image.sh` once per test binary and
/// returns the ID of the image they built (not the tag: another checkout sharing the
/// dockerd may move the tag).
fn image_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        run(Command::new(root().join("tests/build-static.sh")).current_dir(root()));
        run(Command::new(root().join("tests/build-image.sh"))
            .current_dir(root())
            .env("DOCKER_HOST", docker_host()));
        let iid = root().join(format!("{STATIC_BIN}.iid"));
        let id = std::fs::read_to_string(&iid).unwrap_or_else(|e| panic!("{}: {e}", iid.display()));
        id.trim().to_string()
    })
}

fn static_bin() -> PathBuf {
    root().join(STATIC_BIN)
}

/// `docker run --rm --pull never <docker_args...> <image> <args...>`: exit code, stdout, stderr.
fn run_image(docker_args: &[&str], args: &[&str]) -> (Option<i32>, String, String) {
    let id = image_id();
    let mut all = vec!["run", "--rm", "--pull", "never"];
    all.extend_from_slice(docker_args);
    all.push(id);
    all.extend_from_slice(args);
    let out = Cli::shared().output(&all);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn static_binary_needs_no_libc_and_image_stays_small() {
    let id = image_id();
    let desc = run(Command::new("file").arg("-b").arg(static_bin()));
    // file 5.44 calls a static PIE "static-pie linked"; older ones "statically linked".
    assert!(
        desc.contains("statically linked") || desc.contains("static-pie linked"),
        "not static: {desc}"
    );
    assert!(
        !desc.contains("dynamically linked") && !desc.contains("interpreter"),
        "needs a loader: {desc}"
    );
    let size = std::fs::metadata(static_bin()).unwrap().len();
    assert!(size < 3 << 20, "static binary is {size} bytes, over 3 MiB");

    let image_size: u64 = docker(&["image", "inspect", "-f", "{{.Size}}", id])
        .parse()
        .unwrap();
    assert!(
        image_size < 5_000_000,
        "image is {image_size} bytes, over 5 MB"
    );
    eprintln!("static binary {size} bytes, image {image_size} bytes");
    // Only the binary: one layer, no shell, nothing else to patch.
    let layers = docker(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", id]);
    assert_eq!(layers, "1", "the image should hold one layer, the binary");
    let env = docker(&["image", "inspect", "-f", "{{json .Config.Env}}", id]);
    assert!(env.contains("DOCKER_HOST=unix:///tmp/docker.sock"), "{env}");

    // --version inside the scratch image, which has no libc: the binary is really static.
    // As nobody, read-only, without capabilities: nothing in it needs root.
    let unprivileged = [
        "--user",
        "65534:65534",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--net",
        "none",
    ];
    let (code, out, err) = run_image(&unprivileged, &["--version"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let version = format!("registrator {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(out.starts_with(&version), "{out}");
    let commit = out
        .trim()
        .trim_start_matches(&version)
        .trim_end_matches(')');
    assert!(
        commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "no git commit in {out:?}"
    );
    run(Command::new("git").args([
        "-C",
        &root().to_string_lossy(),
        "cat-file",
        "-e",
        &format!("{commit}^{{commit}}"),
    ]));

    // --help fits one screen and shows an example.
    let (code, out, err) = run_image(&unprivileged, &["--help"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.lines().count() <= 50,
        "--help has {} lines",
        out.lines().count()
    );
    assert!(out.contains("Example") && out.contains("etcd://"), "{out}");

    // No registry URI: a usage error, exit code 2, one line.
    let (code, out, err) = run_image(&unprivileged, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    let err: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("registrator:"))
        .collect();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("registry URI"), "{err:?}");
}

#[test]
fn image_runs_as_the_readme_shows_registers_the_examples_and_stops_at_once() {
    let id = image_id();
    let p = prefix("image");
    let host = unique("imagehost");
    // Ports of our own: other tests on this dockerd claim 25432/26379 and the like.
    let n = std::process::id() % 10_000;
    let (external, internal) = ((40_000 + n).to_string(), (50_000 + n).to_string());

    // docker run -d --name registrator --net host -h $(hostname) \
    //     -v /var/run/docker.sock:/tmp/docker.sock etcd-registrator --ip <host address> etcd://127.0.0.1:2379/services
    // (--ip: the made-up host name must not be looked up in DNS, off this machine.)
    let rn = unique("registrator");
    let volume = format!("{}:/tmp/docker.sock", docker_socket().display());
    let registry = uri(&p);
    let cid = docker(&[
        "run",
        "-d",
        "--pull",
        "never",
        "--name",
        &rn,
        "--net",
        "host",
        "-h",
        &host,
        "-v",
        &volume,
        id,
        "--ip",
        "127.0.0.1",
        &registry,
    ]);
    let registrator = Container::adopt(Engine::Docker, &rn, cid);
    let logs = || {
        let out = Cli::shared().output(&["logs", &registrator.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let examples = ReadmeExamples::start("example.com,www.example.com", &external, &internal);
    // Service IDs carry the hostname given with -h: the container reports it.
    let want = examples.expected(&host);
    let got = || examples.registered(&p);
    // Docker's events wake the loop; 15 s leaves room for one 10 s resync as well.
    let start = Instant::now();
    let registered = wait_until(Duration::from_secs(15), || got() == want);
    eprintln!("registered after {:?}", start.elapsed());
    assert!(
        registered,
        "keys differ\n got: {:#?}\nwant: {want:#?}\nlogs:\n{}",
        got(),
        logs()
    );

    // PID 1 in the container takes SIGTERM: docker stop returns at once, not after 10 s.
    let start = Instant::now();
    docker(&["stop", &registrator.name]);
    let took = start.elapsed();
    eprintln!("docker stop took {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "docker stop took {took:?}\nlogs:\n{}",
        logs()
    );
    let code = docker(&["inspect", "-f", "{{.State.ExitCode}}", &registrator.name]);
    assert_eq!(code, "0", "exit code after SIGTERM\nlogs:\n{}", logs());
    // Without --deregister-on-exit the services stay until their lease expires.
    assert_eq!(got(), want, "services went away on a plain stop");
}
