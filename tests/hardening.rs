//! Safe on a fleet: no password in any output, bounded answers and event lines, and a
//! Docker socket that accepts nothing does not hang the registrator. Against the real
//! binary and dockerd where that is possible, a fake Docker on a unix socket where the
//! daemon cannot be made to misbehave.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use etcd_registrator::cli::DockerHost;
use etcd_registrator::docker::{Docker, EVENT_LINE_LIMIT};
use etcd_registrator::source::{Change, Source};

/// Every password below starts with `Pw9` and holds `cret`.
fn leaks(text: &str) -> bool {
    text.contains("Pw9") || text.contains("cret")
}

#[test]
fn a_usage_error_never_prints_the_password() {
    for args in [
        &["etcd://u:Pw9secret%zz@host/p"][..],
        &["etcd://u:Pw9secret@host:99999/p"],
        &["etcd://u:Pw9secret@host:x/p"],
        &["etcd://u:Pw9secret@host/p?foo=1"],
        &["etcd://u:Pw9secret@host/p?cacert"],
        &["etcd://u:Pw9secret@host"],
        &["zookeeper://u:Pw9secret@host/p"],
        &["etcd://u:Pw9/secret@host/p"],
        &["etcd://u:Pw9?secret@host/p"],
        &["etcd://u:Pw9", "secret@host/p"],
        &["etcd://u:Pw9secret@h/p", "etcd://u:Pw9secret@h2/p"],
        &["--etcd-password=Pw9secret", "etcd://u@host/p"],
        &["--etcd-cert", "c.pem", "etcd://u:Pw9secret@host/p"],
    ] {
        let out = registrator(args).output().unwrap();
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(!leaks(&text), "{args:?}: the password leaked: {text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }
    let out = registrator(&["etcd:///s"])
        .env("DOCKER_HOST", "tcp://u:Pw9secret@127.0.0.1:2375")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!leaks(&stderr(&out)), "{}", stderr(&out));
}

#[test]
fn a_runtime_error_never_prints_the_password() {
    // etcd not listening: every error path of a pass, logged at debug.
    let uri = format!("etcd://reg:Pw9secret@127.0.0.1:{}/t/x", free_port());
    for extra in [&["--once"][..], &["--dry-run"]] {
        let mut args = extra.to_vec();
        args.push(&uri);
        let out = registrator(&args)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(!leaks(&text), "the password leaked: {text}");
        assert!(text.contains("Connection refused"), "{text}");
    }
}

/// A Docker event line longer than the cap (a container with an 80 KiB label: every
/// event about it carries its labels) is skipped; the same stream then delivers the
/// next container's events.
#[test]
fn an_oversized_event_line_does_not_break_the_stream() {
    let path = docker_host();
    let host = DockerHost::Unix(path.trim_start_matches("unix://").into());
    let mut docker = Docker::new(&host, Duration::from_secs(10)).unwrap();
    let mut events = docker.events(Duration::from_millis(500)).unwrap();
    let label = format!("big={}", "x".repeat(80 * 1024));
    assert!(label.len() > EVENT_LINE_LIMIT);
    let big = Container::run(&unique("big"), &["--label", &label], &["sleep", "60"]);
    let small = Container::run(&unique("small"), &[], &["sleep", "60"]);
    let mut seen = Vec::new();
    let start = Instant::now();
    while !seen
        .iter()
        .any(|(c, id)| *c == Change::Up && *id == small.id)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no start of {} in {seen:?}",
            small.name
        );
        if let Some(ev) = events.next_event().expect("the stream stays usable") {
            seen.push((ev.change, ev.id));
        }
    }
    assert!(
        !seen.iter().any(|(_, id)| *id == big.id),
        "an event line over the cap was read: {seen:?}"
    );
}

/// The same through the registrator: one warning, no reconnect, and the next container
/// is registered at once (the 60 s resync cannot be what registers it).
#[test]
fn the_loop_skips_an_oversized_event_line_and_keeps_following_events() {
    let p = prefix("bigevent");
    let host = unique("node");
    let r = Running::start(&["--hostname", &host, "--interval", "60", &uri(&p)]);
    std::thread::sleep(Duration::from_millis(500));
    let label = format!("big={}", "x".repeat(80 * 1024));
    let _big = Container::run(&unique("big"), &["--label", &label], &["sleep", "60"]);
    let a = Container::httpd(&unique("a"), 80, &["SERVICE_NAME=a"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &a.name).len() == 4),
        "not registered on start: {}",
        r.log()
    );
    let log = r.log();
    assert!(
        log.contains("skipped an event line longer than 64 KiB"),
        "{log}"
    );
    assert!(!log.contains("reconnecting"), "{log}");
}

/// A Docker API of our own on a unix socket: `/_ping` says 1.41; `/containers/json`
/// and `/containers/abc/json` answer with bodies of the given sizes (`None`: one
/// container `abc`). Serves until the test process ends.
fn fake_docker(dir: &TempDir, list: Option<usize>, inspect: usize) -> DockerHost {
    let path = dir.path("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve(conn, list, inspect));
        }
    });
    DockerHost::Unix(path)
}

fn serve(conn: UnixStream, list: Option<usize>, inspect: usize) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    let _ = reader.read_line(&mut request);
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(n) if n > 2 => continue,
            _ => break,
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    let mut conn = conn;
    // `Some(body)`, or that many bytes of spaces (valid JSON padding), written in
    // chunks until the client stops reading.
    let answer = |conn: &mut UnixStream, body: Result<&[u8], usize>| {
        let len = body.map_or_else(|n| n, <[u8]>::len);
        let head = format!(
            "HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes())?;
        match body {
            Ok(b) => conn.write_all(b),
            Err(mut left) => {
                let chunk = vec![b' '; 1 << 16];
                while left > 0 {
                    let n = left.min(chunk.len());
                    conn.write_all(&chunk[..n])?;
                    left -= n;
                }
                Ok(())
            }
        }
    };
    let _ = match target {
        "/_ping" => answer(&mut conn, Ok(b"OK")),
        "/v1.41/containers/json" => match list {
            Some(n) => answer(&mut conn, Err(n)),
            None => answer(&mut conn, Ok(br#"[{"Id":"abc"}]"#)),
        },
        _ => answer(&mut conn, Err(inspect)),
    };
}

#[test]
fn answers_over_their_cap_are_refused_with_one_clear_line() {
    let dir = TempDir::new("bigbody");
    let host = fake_docker(&dir, Some(65 * 1024 * 1024), 0);
    let e = Docker::new(&host, Duration::from_secs(20))
        .unwrap()
        .containers()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("list containers") && e.contains("larger than 64 MiB"),
        "{e}"
    );

    let dir = TempDir::new("biginspect");
    let host = fake_docker(&dir, None, 5 * 1024 * 1024);
    let e = Docker::new(&host, Duration::from_secs(20))
        .unwrap()
        .containers()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("inspect container") && e.contains("larger than 4 MiB"),
        "{e}"
    );
}

/// A Docker socket whose daemon accepts nothing (hung: its backlog is full) used to
/// block the registrator in connect(2) for ever; now the connect times out with the
/// request's timeout (10 s in the binary) and `--once` exits 1.
#[test]
fn a_docker_socket_that_accepts_nothing_times_out() {
    let dir = TempDir::new("hungsock");
    let path = dir.path("docker.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // SAFETY: listen(2) on a listening socket this test owns only changes its backlog.
    assert_eq!(unsafe { libc::listen(listener.as_raw_fd(), 0) }, 0);
    let _queued = UnixStream::connect(&path).unwrap();
    let start = Instant::now();
    let mut child = Running::spawn({
        let mut c = Command::new(bin());
        c.args(["--once", "--ip", "127.0.0.1", &uri(&prefix("hung"))])
            .env("DOCKER_HOST", format!("unix://{}", path.display()))
            .env("RUST_LOG", "info");
        c
    });
    let (code, took) = child.wait(Duration::from_secs(30));
    assert_eq!(
        code,
        Some(1),
        "still running after {took:?}: {}",
        child.log()
    );
    assert!(start.elapsed() < Duration::from_secs(25));
    let log = child.log();
    assert!(log.contains("no connection within"), "{log}");
    drop(listener);
}
