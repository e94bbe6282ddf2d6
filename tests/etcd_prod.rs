//! The etcd client against real etcd processes of the test's own: several endpoints,
//! TLS (server verification, client certificates, certificate errors in words),
//! password authentication (URI, environment, file; never logged), token expiry, JWT
//! tokens outdated by an auth change, and permission errors. Containers come from the
//! shared test dockerd.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// The keys of container `c` (SERVICE_NAME=svc) as the registrator should write them.
fn expect(prefix: &str, host: &str, svc: &str, c: &Container) -> BTreeMap<String, String> {
    service_keys(prefix, host, svc, &c.name, c.host_port(80))
}

fn only(all: BTreeMap<String, String>, needle: &str) -> BTreeMap<String, String> {
    all.into_iter()
        .filter(|(k, _)| k.contains(needle))
        .collect()
}

/// The one ERROR line of a failed `--once`.
fn error_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    lines[0].to_string()
}

#[test]
fn first_endpoint_dead_the_next_one_is_used() {
    let p = prefix("failover");
    let host = unique("node");
    let svc = unique("svc");
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let good = etcd_endpoint();
    let out = once(&[
        "--hostname",
        &host,
        &format!("etcd://127.0.0.1:1,{good}{p}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys_with(&p, &c.name), expect("", &host, &svc, &c));
    assert!(
        stderr(&out).contains("127.0.0.1:1"),
        "the skipped endpoint is named: {}",
        stderr(&out)
    );

    // Every endpoint dead: one error line that names the last one tried, exit 1.
    let out = once(&[
        "--hostname",
        &host,
        &format!("etcd://127.0.0.1:1,127.0.0.1:2{p}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(error_line(&out).contains("127.0.0.1:"), "{}", stderr(&out));
}

#[test]
fn tls_server_verification_and_certificate_errors_in_words() {
    let certs = Certs::new();
    let flags = certs.etcd_flags("server", false);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::start_single("tls", &flags);
    let (p, host, svc) = (prefix("tls"), unique("node"), unique("svc"));
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let ca = certs.file("ca.pem");
    let read = || only(etcd_get_at(&etcd.url(), &["--cacert", &ca], &p), &c.name);

    // With the CA: works, by option and by URI parameter.
    let uri = format!("etcds://{}{p}", etcd.endpoint());
    let out = once(&["--hostname", &host, "--etcd-cacert", &ca, &uri]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(), expect(&p, &host, &svc, &c));
    etcdctl(&etcd.url(), &["--cacert", &ca], &["del", "--prefix", &p]);
    let out = once(&["--hostname", &host, &format!("{uri}?cacert={ca}")]);
    assert!(out.status.success(), "?cacert=: {}", stderr(&out));
    assert_eq!(read(), expect(&p, &host, &svc, &c));

    // Without the CA, or with another one: not trusted, and what to do about it.
    for args in [
        vec![],
        vec!["--etcd-cacert".to_string(), certs.file("other-ca.pem")],
    ] {
        let mut all: Vec<&str> = vec!["--hostname", &host];
        all.extend(args.iter().map(String::as_str));
        all.push(&uri);
        let out = once(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let line = error_line(&out);
        assert!(
            line.contains("not signed by a trusted CA: pass --etcd-cacert"),
            "{args:?}: {line}"
        );
        assert!(line.contains(&etcd.endpoint()), "{line}");
    }

    // A name that is not in the certificate's SAN.
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        &ca,
        &format!("etcds://localhost:{}{p}", etcd.client_port),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("does not name \"localhost\""), "{line}");
    assert!(
        line.contains("127.0.0.1"),
        "says which names it is valid for: {line}"
    );

    // Plain etcd:// against a TLS endpoint.
    let out = once(&[
        "--hostname",
        &host,
        &format!("etcd://{}{p}", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("etcds://"), "suggests TLS: {line}");

    // etcds:// against a plain endpoint (the shared etcd).
    let plain = etcd_endpoint();
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        &ca,
        &format!("etcds://{plain}{p}"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("does not speak TLS") && line.contains("etcd://"),
        "{line}"
    );

    // TLS files with a plain etcd:// URI: refused rather than silently sent in the clear.
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        &ca,
        &format!("etcd://{}{p}", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("use etcds://"),
        "{}",
        stderr(&out)
    );

    // A CA file that is not there, or holds no certificate: a setup error naming the file.
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        "/nonexistent/ca.pem",
        &uri,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("/nonexistent/ca.pem"),
        "{}",
        stderr(&out)
    );
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        &certs.file("server.key"),
        &uri,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("holds no PEM certificate"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn expired_server_certificate_is_reported_as_expired() {
    let certs = Certs::new();
    let flags = certs.etcd_flags("expired", false);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::start_single("tlsexp", &flags);
    let out = once(&[
        "--hostname",
        "n",
        "--etcd-cacert",
        &certs.file("ca.pem"),
        &format!("etcds://{}/x", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(line.contains("has expired"), "{line}");
}

#[test]
fn client_certificate_tls() {
    let certs = Certs::new();
    let flags = certs.etcd_flags("server", true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::start_single("mtls", &flags);
    let (p, host, svc) = (prefix("mtls"), unique("node"), unique("svc"));
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let (ca, cert, key) = (
        certs.file("ca.pem"),
        certs.file("client.pem"),
        certs.file("client.key"),
    );
    let ctl = [
        "--cacert",
        ca.as_str(),
        "--cert",
        cert.as_str(),
        "--key",
        key.as_str(),
    ];
    let uri = format!("etcds://{}{p}", etcd.endpoint());

    let out = once(&[
        "--hostname",
        &host,
        "--etcd-cacert",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
        &uri,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        only(etcd_get_at(&etcd.url(), &ctl, &p), &c.name),
        expect(&p, &host, &svc, &c)
    );

    etcdctl(&etcd.url(), &ctl, &["del", "--prefix", &p]);
    let out = once(&[
        "--hostname",
        &host,
        &format!("{uri}?cacert={ca}&cert={cert}&key={key}"),
    ]);
    assert!(out.status.success(), "URI parameters: {}", stderr(&out));
    assert_eq!(
        only(etcd_get_at(&etcd.url(), &ctl, &p), &c.name),
        expect(&p, &host, &svc, &c)
    );

    // No client certificate: the server refuses, and the message says what to pass.
    let out = once(&["--hostname", &host, "--etcd-cacert", &ca, &uri]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("--etcd-cert") && line.contains("--etcd-key"),
        "{line}"
    );
}

/// Enables auth on the etcd at `urls`: root, and user `reg` whose role `regrole` may
/// read and write only under `/allowed/`. Returns reg's password.
fn enable_auth(urls: &str, flags: &[&str]) -> String {
    let password = format!("Pw-{}-x9", unique("secret"));
    etcdctl(urls, flags, &["user", "add", "root:rootpw"]);
    etcdctl(urls, flags, &["user", "add", &format!("reg:{password}")]);
    etcdctl(urls, flags, &["role", "add", "regrole"]);
    etcdctl(
        urls,
        flags,
        &[
            "role",
            "grant-permission",
            "regrole",
            "--prefix=true",
            "readwrite",
            "/allowed/",
        ],
    );
    etcdctl(urls, flags, &["user", "grant-role", "reg", "regrole"]);
    etcdctl(urls, flags, &["auth", "enable"]);
    password
}

/// A single etcd with auth enabled (see [`enable_auth`]) and reg's password.
fn auth_etcd(extra: &[&str]) -> (Etcd, String) {
    let etcd = Etcd::start_single("auth", extra);
    let password = enable_auth(&etcd.url(), &[]);
    (etcd, password)
}

#[test]
fn password_auth_by_uri_environment_and_file_never_shows_the_password() {
    let (etcd, pw) = auth_etcd(&[]);
    let (host, svc) = (unique("node"), unique("svc"));
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let dir = TempDir::new("pwfile");
    std::fs::write(dir.path("pw"), format!("{pw}\n")).unwrap();
    let root = ["--user", "root:rootpw"];
    let ep = etcd.endpoint();
    let check = |what: &str, o: &Output| {
        for text in [stderr(o), stdout(o)] {
            assert!(!text.contains(&pw), "{what}: the password leaked:\n{text}");
        }
    };

    // (what, URI, environment, extra arguments)
    type Way<'a> = (&'a str, String, Vec<(&'a str, String)>, Vec<String>);
    let ways: Vec<Way> = vec![
        (
            "uri",
            format!("etcd://reg:{pw}@{ep}/allowed/uri"),
            vec![],
            vec![],
        ),
        (
            "env",
            format!("etcd://{ep}/allowed/env"),
            vec![
                ("ETCD_USERNAME", "reg".into()),
                ("ETCD_PASSWORD", pw.clone()),
            ],
            vec![],
        ),
        (
            "file",
            format!("etcd://reg@{ep}/allowed/file"),
            vec![],
            vec!["--etcd-password-file".into(), dir.file("pw")],
        ),
        (
            "file+env user",
            format!("etcd://{ep}/allowed/file2"),
            vec![("ETCD_USERNAME", "reg".into())],
            vec!["--etcd-password-file".into(), dir.file("pw")],
        ),
    ];
    for (what, uri, env, extra) in &ways {
        let p = uri.rsplit_once(&ep).unwrap().1.to_string();
        let mut args: Vec<&str> = vec!["--once", "--hostname", &host];
        args.extend(extra.iter().map(String::as_str));
        args.push(uri);
        let mut cmd = registrator(&args);
        cmd.env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let out = cmd.output().unwrap();
        check(what, &out);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
        assert_eq!(
            only(etcd_get_at(&etcd.url(), &root, &p), &c.name),
            expect(&p, &host, &svc, &c),
            "{what}"
        );

        // --dry-run prints the plan (nothing to change now) without the password.
        let mut dry: Vec<&str> = vec!["--dry-run", "--hostname", &host];
        dry.extend(extra.iter().map(String::as_str));
        dry.push(uri);
        let mut cmd = registrator(&dry);
        cmd.env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let out = cmd.output().unwrap();
        check(what, &out);
        assert!(out.status.success(), "{what} --dry-run: {}", stderr(&out));
        assert!(
            !stdout(&out).contains(&c.name),
            "{what}: nothing to change: {}",
            stdout(&out)
        );
    }

    // A dry run that has something to print.
    let out = registrator(&[
        "--dry-run",
        "--hostname",
        &host,
        &format!("etcd://reg:{pw}@{ep}/allowed/dry"),
    ])
    .env("RUST_LOG", "debug")
    .output()
    .unwrap();
    check("dry run", &out);
    assert!(
        stdout(&out).contains(&format!("/allowed/dry/{svc}/{host}:{}:80/port", c.name)),
        "{}",
        stdout(&out)
    );

    // A wrong password, no credentials at all, and a user without the password: one
    // clear line each, no secret in it.
    let out = once(&[
        "--hostname",
        &host,
        &format!("etcd://reg:wrong-{pw}@{ep}/allowed/x"),
    ]);
    check("wrong password", &out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out).contains("user name or password"),
        "{}",
        stderr(&out)
    );
    let out = once(&["--hostname", &host, &format!("etcd://{ep}/allowed/x")]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("requires authentication") && line.contains("ETCD_USERNAME"),
        "{line}"
    );

    // A password file that does not exist.
    let out = once(&[
        "--hostname",
        &host,
        "--etcd-password-file",
        "/nonexistent/pw",
        &format!("etcd://reg@{ep}/allowed/x"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/pw"), "{}", stderr(&out));
}

#[test]
fn permission_error_names_the_key_and_the_missing_role_permission() {
    let (etcd, pw) = auth_etcd(&[]);
    let out = once(&[
        "--hostname",
        "n",
        &format!("etcd://reg:{pw}@{}/denied", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(!line.contains(&pw), "{line}");
    assert!(line.contains("permission denied"), "{line}");
    assert!(line.contains("/denied/"), "names the key: {line}");
    assert!(line.contains("user \"reg\""), "names the user: {line}");
    assert!(
        line.contains("role") && line.contains("readwrite"),
        "says which permission a role needs: {line}"
    );
}

#[test]
fn expired_auth_token_is_renewed_without_failing_a_sync() {
    // Tokens live 1 s when unused; the loop is quiet for 3 s between passes (unless
    // other tests' containers wake it: it then waits until a pass found its token gone).
    let (mut etcd, pw) = auth_etcd(&["--auth-token-ttl", "1"]);
    let (p, host, svc) = (
        format!("/allowed/{}", unique("tok")),
        unique("node"),
        unique("svc"),
    );
    let uri = format!("etcd://reg:{pw}@{}{p}", etcd.endpoint());
    let mut cmd = registrator(&["--hostname", &host, "--interval", "3", "--ttl", "0", &uri]);
    cmd.env("RUST_LOG", "registrator=debug,etcd_registrator=debug");
    let mut r = Running::spawn(cmd);
    assert!(
        wait_until(Duration::from_secs(20), || r
            .log()
            .contains("token expired")),
        "the token never expired:\n{}",
        r.log()
    );
    std::thread::sleep(Duration::from_millis(1500));
    let root = ["--user", "root:rootpw"];
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let want = expect(&p, &host, &svc, &c);
    assert!(
        wait_until(Duration::from_secs(3), || only(
            etcd_get_at(&etcd.url(), &root, &p),
            &c.name
        ) == want),
        "not registered after the token expired:\n{}",
        r.log()
    );
    // (Other containers on the shared dockerd may log their own errors: only ours count.)
    let log = r.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sync failed") || l.contains("authenticat") && l.contains("ERROR"))
        .collect();
    assert!(bad.is_empty(), "a sync failed: {bad:?}\n{log}");

    // A restarted etcd forgets every simple token: the next request authenticates again.
    etcd.stop();
    etcd.start();
    let d = Container::httpd(&unique("d"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let want = expect(&p, &host, &svc, &d);
    assert!(
        wait_until(Duration::from_secs(5), || only(
            etcd_get_at(&etcd.url(), &root, &p),
            &d.name
        ) == want),
        "not registered after etcd restarted:\n{}",
        r.log()
    );
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(2));
    assert!(!r.log().contains(&pw));
}

#[test]
fn jwt_token_outdated_by_an_auth_change_is_renewed() {
    // FACTS: with JWT tokens, any auth change (a user added, a role granted) makes every
    // older token fail with "revision of auth store is old" (HTTP 400, code 3); the
    // tokens themselves live 10 minutes here.
    let keys = TempDir::new("jwt");
    run(Command::new("sh").current_dir(&keys.0).arg("-ec").arg(
        "openssl genrsa -out jwt.key 2048 2>/dev/null
         openssl rsa -in jwt.key -pubout -out jwt.pub 2>/dev/null",
    ));
    let token = format!(
        "jwt,pub-key={},priv-key={},sign-method=RS256,ttl=10m",
        keys.file("jwt.pub"),
        keys.file("jwt.key")
    );
    let (etcd, pw) = auth_etcd(&["--auth-token", &token]);
    let (p, host, svc) = (
        format!("/allowed/{}", unique("jwt")),
        unique("node"),
        unique("svc"),
    );
    let uri = format!("etcd://reg:{pw}@{}{p}", etcd.endpoint());
    let mut r = Running::start(&["--hostname", &host, "--interval", "1", &uri]);
    let root = ["--user", "root:rootpw"];
    let changes: [&[&str]; 3] = [
        &[],
        &["user", "add", "other:other-pw"],
        &["role", "grant-permission", "regrole", "read", "/elsewhere/"],
    ];
    for change in changes {
        if !change.is_empty() {
            etcdctl(&etcd.url(), &root, change);
        }
        let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
        let want = expect(&p, &host, &svc, &c);
        assert!(
            wait_until(Duration::from_secs(10), || only(
                etcd_get_at(&etcd.url(), &root, &p),
                &c.name
            ) == want),
            "not registered after {change:?}:\n{}",
            r.log()
        );
    }
    r.signal(libc::SIGTERM);
    r.wait(Duration::from_secs(2));
    let log = r.log();
    assert!(!log.contains("sync failed"), "{log}");
    assert!(!log.contains(&pw));
}

#[test]
fn credentials_for_an_etcd_without_auth_are_not_fatal() {
    let p = prefix("noauth");
    let (host, svc) = (unique("node"), unique("svc"));
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let ep = etcd_endpoint();
    let out = once(&[
        "--hostname",
        &host,
        &format!("etcd://someone:secret-pw@{ep}{p}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("authentication is not enabled"),
        "warns once: {}",
        stderr(&out)
    );
    assert_eq!(keys_with(&p, &c.name), expect("", &host, &svc, &c));
}

#[test]
fn client_certificates_plus_password_auth_is_explained() {
    // FACTS: etcd's JSON gateway refuses every request from a client with a
    // certificate once auth is enabled with --client-cert-auth.
    let certs = Certs::new();
    let flags = certs.etcd_flags("server", true);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::start_single("mtls-auth", &flags);
    let (ca, cert, key) = (
        certs.file("ca.pem"),
        certs.file("client.pem"),
        certs.file("client.key"),
    );
    let pw = enable_auth(
        &etcd.url(),
        &["--cacert", &ca, "--cert", &cert, "--key", &key],
    );
    let out = once(&[
        "--hostname",
        "n",
        "--etcd-cacert",
        &ca,
        "--etcd-cert",
        &cert,
        "--etcd-key",
        &key,
        &format!("etcds://reg:{pw}@{}/allowed/x", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out);
    assert!(
        line.contains("refuses that combination")
            && line.contains("password authentication over server-only TLS"),
        "{line}"
    );
    assert!(!line.contains(&pw));
}

#[test]
fn auth_survives_failover_between_cluster_members() {
    // etcd 3.4 hands out simple tokens through raft, so every member knows them: the
    // client keeps its token across a failover (and would authenticate again on a 401).
    let mut members = Etcd::cluster("authcluster", 3);
    let urls: Vec<String> = members.iter().map(|m| m.url()).collect();
    let pw = enable_auth(&urls.join(","), &[]);
    let eps: Vec<String> = members.iter().map(|m| m.endpoint()).collect();
    let (p, host, svc) = (
        format!("/allowed/{}", unique("ac")),
        unique("node"),
        unique("svc"),
    );
    let mut cmd = registrator(&[
        "--hostname",
        &host,
        "--interval",
        "1",
        "--ttl",
        "10",
        &format!("etcd://reg:{pw}@{}{p}", eps.join(",")),
    ]);
    cmd.env("RUST_LOG", "registrator=debug,etcd_registrator=debug");
    let r = Running::spawn(cmd);
    let root = ["--user", "root:rootpw"];
    let a = Container::httpd(&unique("a"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let want = expect(&p, &host, &svc, &a);
    let read = |eps: &str, name: &str| try_etcd_get_at(eps, &root, &p).map(|all| only(all, name));
    assert!(
        wait_until(Duration::from_secs(10), || read(&urls.join(","), &a.name)
            == Some(want.clone())),
        "{}",
        r.log()
    );
    members[0].kill();
    let survivors = format!("{},{}", members[1].url(), members[2].url());
    let b = Container::httpd(&unique("b"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let want_b = expect(&p, &host, &svc, &b);
    assert!(
        wait_until(Duration::from_secs(15), || read(&survivors, &b.name)
            == Some(want_b.clone())),
        "not registered after failover:\n{}",
        r.log()
    );
    assert!(!r.log().contains(&pw));
}
