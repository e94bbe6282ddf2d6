//! Docker over TLS, configured as Docker's own client is (`DOCKER_HOST=tcp://...`,
//! `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`), against the shared dockerd's `--tlsverify`
//! listener (`tests/daemons.sh`: `REG_DOCKER_TLS_HOST`, `REG_DOCKER_CERT_PATH`).

mod common;

use std::process::Output;

use common::*;

/// `registrator --once` against the TLS listener with `vars` set.
fn once_over_tls(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    let mut cmd = registrator(&all);
    cmd.env("DOCKER_HOST", env("REG_DOCKER_TLS_HOST"));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("run registrator")
}

#[test]
fn a_container_is_registered_over_tls_and_a_wrong_ca_is_one_clear_line() {
    let certs = env("REG_DOCKER_CERT_PATH");
    let p = prefix("tls");
    let host = unique("node");
    let c = Container::httpd(&unique("tls"), 80, &["SERVICE_NAME=web"]);
    let args = ["--hostname", &host, &uri(&p)];

    let out = once_over_tls(
        &args,
        &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &certs)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let keys = keys_with(&p, &format!("{host}:{}", c.name));
    assert_eq!(
        keys.get(&format!("/web/{host}:{}:80/port", c.name)),
        Some(&c.host_port(80).to_string()),
        "{keys:?}"
    );

    // Another CA than the one that signed dockerd's certificate (our client certificate
    // is the right one): one line that says so, and etcd is left as it was.
    let wrong = TempDir::new("wrong-ca");
    let other = Certs::new();
    std::fs::copy(other.file("other-ca.pem"), wrong.path("ca.pem")).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(format!("{certs}/{f}"), wrong.path(f)).unwrap();
    }
    c.stop();
    let out = once_over_tls(
        &args,
        &[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &wrong.file("")),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("UnknownIssuer")
            && err.contains("not signed by the CA in DOCKER_CERT_PATH's ca.pem"),
        "{err}"
    );
    assert_eq!(keys_with(&p, &format!("{host}:{}", c.name)), keys);

    // Plain HTTP to the TLS port (DOCKER_TLS_VERIFY forgotten) says what to set; a cert
    // path without DOCKER_TLS_VERIFY (TLS without verification) is a usage error.
    let out = once_over_tls(&args, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("set DOCKER_TLS_VERIFY=1"),
        "{}",
        stderr(&out)
    );
    let out = once_over_tls(&args, &[("DOCKER_CERT_PATH", &certs)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("set DOCKER_TLS_VERIFY=1"),
        "{}",
        stderr(&out)
    );

    // The right CA again: the stopped container is deregistered over TLS.
    let out = once_over_tls(
        &args,
        &[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &certs)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(keys_with(&p, &c.name).is_empty());
}
