//! The ownership index against the real daemons (issue 11): restarts that read only this
//! host's keys and flap nothing, an index that stays exact when keys are deleted by hand,
//! the one-time migration from the layout without an index, claims that survive a
//! `docker restart`, two hosts racing for a port, and `--deregister-on-exit` within its
//! deadline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The index prefix the registrator uses by default for test prefix `p` (`/t/x`):
/// `/t/.registrator/x`.
fn index(p: &str) -> String {
    let (parent, last) = p.rsplit_once('/').unwrap();
    format!("{parent}/.registrator/{last}")
}

/// `etcdctl ARGS` against the shared etcd.
fn etcdctl_run(args: &[&str]) -> String {
    let mut all = vec!["--endpoints".to_string(), etcd_url()];
    all.extend(args.iter().map(|a| a.to_string()));
    run(Command::new("etcdctl").env("ETCDCTL_API", "3").args(&all))
}

/// Each key under `prefix` with its (create, mod) revisions: equal before and after means
/// nothing was written, deleted or put again in between.
fn revisions(prefix: &str) -> BTreeMap<String, (i64, i64)> {
    let out = etcdctl_run(&["get", "--prefix", prefix, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b64 = |s: &str| {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        String::from_utf8(bytes).unwrap()
    };
    v["kvs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            (
                b64(kv["key"].as_str().unwrap()),
                (
                    kv["create_revision"].as_i64().unwrap_or(0),
                    kv["mod_revision"].as_i64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

/// The service directories (`<name>/<id>`) under `p` whose owner marker is `host`.
fn dirs_of(p: &str, host: &str) -> BTreeSet<String> {
    etcd_get(&format!("{p}/"))
        .into_iter()
        .filter(|(k, v)| k.ends_with("/node") && v == host)
        .map(|(k, _)| k[p.len() + 1..k.len() - "/node".len()].to_string())
        .collect()
}

/// The directories `host`'s index names.
fn indexed(p: &str, host: &str) -> BTreeSet<String> {
    let entries = format!("{}/hosts/{host}/services/", index(p));
    etcd_get(&entries)
        .into_keys()
        .map(|k| k[entries.len()..].to_string())
        .collect()
}

/// A service directory as a registrator of an older version left it (no index entry).
fn put_legacy(p: &str, dir: &str, fields: &[(&str, &str)]) {
    for (k, v) in fields {
        etcd_put(&format!("{p}/{dir}/{k}"), v);
    }
}

fn running(host: &str, p: &str, extra: &[&str]) -> Running {
    let mut args = vec!["--hostname", host, "--interval", "1", "--explicit"];
    args.extend_from_slice(extra);
    let u = uri(p);
    args.push(&u);
    Running::start(&args)
}

const MIGRATION_LOG: &str = "read the whole prefix once";

#[test]
fn kill_9_then_restart_reads_only_own_keys_and_flaps_nothing() {
    let p = prefix("fleet-kill9");
    let host = unique("h");
    let a = Container::httpd(&unique("a"), 80, &["SERVICE_NAME=a"]);
    let b = Container::httpd(&unique("b"), 80, &["SERVICE_NAME=b"]);
    let mut r = running(&host, &p, &["--ttl", "10"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &a.name).len() == 4
            && keys_with(&p, &b.name).len() == 4),
        "{}",
        r.log()
    );
    assert!(r.log().contains(MIGRATION_LOG), "{}", r.log());
    assert!(
        wait_until(Duration::from_secs(3), || indexed(&p, &host)
            == dirs_of(&p, &host)),
        "the index names exactly this host's services"
    );
    let before = revisions(&format!("{p}/"));
    let index_before = revisions(&format!("{}/hosts/{host}/", index(&p)));
    r.signal(libc::SIGKILL);
    r.wait(Duration::from_secs(2));

    let r2 = running(&host, &p, &["--ttl", "10"]);
    assert!(
        wait_until(Duration::from_secs(5), || r2
            .log()
            .contains("adopted lease")),
        "{}",
        r2.log()
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        !r2.log().contains(MIGRATION_LOG),
        "a restart reads only this host's keys: {}",
        r2.log()
    );
    let ours = |revs: BTreeMap<String, (i64, i64)>| -> BTreeMap<String, (i64, i64)> {
        revs.into_iter()
            .filter(|(k, _)| k.contains(&a.name) || k.contains(&b.name) || k.ends_with("migrated"))
            .collect()
    };
    assert_eq!(
        ours(revisions(&format!("{p}/"))),
        ours(before),
        "a reader saw writes to unchanged services across kill -9 and restart"
    );
    assert_eq!(
        ours(revisions(&format!("{}/hosts/{host}/", index(&p)))),
        ours(index_before),
        "the index was rewritten"
    );
    assert_eq!(indexed(&p, &host), dirs_of(&p, &host));
}

#[test]
fn keys_deleted_by_hand_are_put_back_and_stale_entries_dropped() {
    let p = prefix("fleet-hand");
    let host = unique("h");
    let a = Container::httpd(&unique("a"), 80, &["SERVICE_NAME=a"]);
    let dir = format!("a/{host}:{}:80", a.name);
    let entry = format!("{}/hosts/{host}/services/{dir}", index(&p));
    let r = running(&host, &p, &["--ttl", "0"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &a.name
    )
    .len()
        == 4));
    assert!(wait_until(Duration::from_secs(3), || !etcd_get(&entry).is_empty()));

    etcdctl_run(&["del", &entry]);
    assert!(
        wait_until(Duration::from_secs(4), || etcd_get(&entry).get(&entry)
            == Some(&a.name)),
        "a deleted index entry comes back: {}",
        r.log()
    );
    etcdctl_run(&["del", "--prefix", &format!("{p}/{dir}/")]);
    assert!(
        wait_until(Duration::from_secs(4), || keys_with(&p, &a.name).len() == 4),
        "a deleted service comes back: {}",
        r.log()
    );
    drop(r);

    // While no registrator runs, the container goes and its directory is deleted by
    // hand: the next pass drops the index entry that is left.
    a.stop();
    etcdctl_run(&["del", "--prefix", &format!("{p}/{dir}/")]);
    let out = once(&["--hostname", &host, "--explicit", &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(etcd_get(&entry).is_empty(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("unindex {dir}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn migration_from_the_layout_without_an_index_keeps_live_services_untouched() {
    let p = prefix("fleet-migrate");
    let host = unique("h");
    let live = Container::httpd(&unique("live"), 80, &["SERVICE_NAME=live"]);
    let live_dir = format!("live/{host}:{}:80", live.name);
    let port = live.host_port(80).to_string();
    put_legacy(
        &p,
        &live_dir,
        &[
            ("address", "127.0.0.1"),
            ("mode", "tcp"),
            ("node", &host),
            ("port", &port),
        ],
    );
    let stale_dir = format!("gone/{host}:gone:80");
    put_legacy(&p, &stale_dir, &[("node", &host), ("port", "1")]);
    for h in 0..3 {
        put_legacy(
            &p,
            &format!("web/other{h}:c:80"),
            &[("node", &format!("other{h}")), ("port", "2")],
        );
    }
    let others = etcd_get(&format!("{p}/web/"));
    let live_before = revisions(&format!("{p}/{live_dir}/"));

    let out = once(&["--hostname", &host, "--explicit", &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(MIGRATION_LOG), "{}", stderr(&out));
    assert!(
        etcd_get(&format!("{p}/{stale_dir}/")).is_empty(),
        "stale service left"
    );
    assert_eq!(
        revisions(&format!("{p}/{live_dir}/")),
        live_before,
        "the live service was rewritten (readers would see it flap)"
    );
    assert_eq!(
        etcd_get(&format!("{p}/web/")),
        others,
        "other hosts' services touched"
    );
    assert!(indexed(&p, &host).contains(&live_dir));
    assert!(!indexed(&p, &host).contains(&stale_dir));
    assert_eq!(
        etcd_get(&format!("{}/hosts/{host}/migrated", index(&p))).len(),
        1,
        "the marker"
    );
    // Consumers of the prefix see nothing new, even reading it without its slash.
    assert!(etcd_get(&p).keys().all(|k| k.starts_with(&format!("{p}/"))));

    let out = once(&["--hostname", &host, "--explicit", &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(MIGRATION_LOG),
        "migrated once: {}",
        stderr(&out)
    );
}

/// A port for this test binary's claims, away from those of tests/leases.rs.
fn claim_port(offset: u32) -> String {
    (45000 + (std::process::id() % 2000) * 2 + offset).to_string()
}

#[test]
fn a_claim_survives_docker_restart_and_is_released_after_the_grace_period() {
    // Host A registers every container, host B (--explicit) only named ones: `alpha`
    // (no SERVICE_NAME: service "busybox") is A's; `beta` wants the same port on both.
    let p = prefix("fleet-sticky");
    let (ha, hb) = (unique("ha"), unique("hb"));
    let port = claim_port(0);
    let claim_key = format!("{}/claims/external_port/{port}/{ha}", index(&p));
    let alpha = Container::httpd(
        &unique("alpha"),
        80,
        &[&format!("SERVICE_EXTERNAL_PORT={port}")],
    );
    std::thread::sleep(Duration::from_millis(20));
    let beta = Container::httpd(
        &unique("beta"),
        80,
        &[
            "SERVICE_NAME=beta",
            &format!("SERVICE_EXTERNAL_PORT={port}"),
        ],
    );
    let u = uri(&p);
    let a = Running::start(&[
        "--hostname",
        &ha,
        "--interval",
        "1",
        "--claim-grace",
        "4",
        &u,
    ]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &alpha.name).len()
            == 5),
        "{}",
        a.log()
    );
    assert_eq!(
        etcd_get(&claim_key).get(&claim_key).map(String::as_str),
        Some("busybox")
    );

    // docker restart, slowly: the claim key never goes away meanwhile.
    alpha.stop();
    assert!(wait_until(Duration::from_secs(3), || keys_with(
        &p,
        &alpha.name
    )
    .is_empty()));
    assert!(etcd_get(&claim_key).contains_key(&claim_key), "{}", a.log());
    // Another host's other service cannot take the port in the gap.
    let out = once(&["--explicit", "--hostname", &hb, &u]);
    assert!(
        stderr(&out).contains(&format!(
            "external port {port} is already held by service busybox on host {ha}"
        )),
        "{}",
        stderr(&out)
    );
    assert!(keys_with(&p, &format!("{hb}:{}", beta.name)).is_empty());
    docker(&["start", &alpha.name]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &alpha.name).len()
            == 5),
        "back on its port: {}",
        a.log()
    );
    assert_eq!(
        etcd_get(&claim_key).get(&claim_key).map(String::as_str),
        Some("busybox")
    );

    // Stopped for good: after the grace period the port is free for beta (here A's own
    // beta gets it first, and B's beta shares it as a replica).
    alpha.stop();
    let stopped = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || etcd_get(&claim_key)
            .get(&claim_key)
            != Some(&"busybox".to_string())),
        "{}",
        a.log()
    );
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "released before the grace period: {took:?}"
    );
    let out = once(&["--explicit", "--hostname", &hb, &u]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        keys_with(&p, &format!("{hb}:{}", beta.name)).len(),
        5,
        "{}",
        stderr(&out)
    );
}

#[test]
fn two_indexed_hosts_racing_for_one_free_port_never_both_win() {
    let port = claim_port(1);
    let beta = Container::httpd(
        &unique("beta"),
        80,
        &[&format!("SERVICE_EXTERNAL_PORT={port}")],
    );
    std::thread::sleep(Duration::from_millis(20));
    let alpha = Container::httpd(
        &unique("alpha"),
        80,
        &[
            "SERVICE_NAME=alpha",
            &format!("SERVICE_EXTERNAL_PORT={port}"),
        ],
    );
    let mut wins = BTreeMap::new();
    for round in 0..10 {
        let p = prefix("fleet-race");
        // Both hosts are indexed already: the race is on the claim keys alone.
        let hosts = [("host-a", true), ("host-b", false)];
        let args = |host: &'static str, explicit: bool| {
            let mut a = vec!["--once", "--hostname", host];
            if explicit {
                a.push("--explicit");
            }
            a
        };
        for (h, _) in hosts {
            etcd_put(&format!("{}/hosts/{h}/migrated", index(&p)), "1");
        }
        let u = uri(&p);
        let children: Vec<_> = hosts
            .iter()
            .map(|&(h, explicit)| {
                let mut a = args(h, explicit);
                a.push(&u);
                registrator(&a).stderr(Stdio::null()).spawn().unwrap()
            })
            .collect();
        for mut c in children {
            c.wait().unwrap();
        }
        let holders: BTreeSet<String> = etcd_get(&format!("{p}/"))
            .into_iter()
            .filter(|(k, v)| k.ends_with("/external_port") && *v == port)
            .map(|(k, _)| k[p.len() + 1..].split('/').next().unwrap().to_string())
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "round {round}: port {port} held by {holders:?}"
        );
        let claims = etcd_get(&format!("{}/claims/external_port/{port}/", index(&p)));
        let names: BTreeSet<&String> = claims.values().collect();
        assert_eq!(names.len(), 1, "round {round}: claim keys {claims:?}");
        *wins.entry(holders.into_iter().next().unwrap()).or_insert(0) += 1;
    }
    eprintln!("race winners over 10 rounds: {wins:?}");
    drop((alpha, beta));
}

#[test]
fn deregister_on_exit_without_a_lease_finishes_before_exit_and_a_second_signal_cuts_it_short() {
    let p = prefix("fleet-exit");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    // Some other hosts' services, which the exit never reads.
    for h in 0..50 {
        put_legacy(&p, &format!("web/o{h}:c:80"), &[("node", &format!("o{h}"))]);
    }
    let mut r = running(&host, &p, &["--ttl", "0", "--deregister-on-exit"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    r.signal(libc::SIGTERM);
    let (code, took) = r.wait(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{}", r.log());
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(keys_with(&p, &c.name).is_empty(), "{}", r.log());
    assert!(indexed(&p, &host).is_empty());
    assert_eq!(etcd_get(&format!("{p}/web/")).len(), 50);

    // An etcd that accepts connections and never answers: the exit gives up at its
    // deadline, or at once on a second signal, with exit code 1 either way.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let hung = format!("etcd://{addr}/hung");
    for second in [false, true] {
        let mut r = Running::start(&[
            "--hostname",
            &host,
            "--ttl",
            "0",
            "--deregister-on-exit",
            &hung,
        ]);
        std::thread::sleep(Duration::from_millis(300));
        r.signal(libc::SIGTERM);
        if second {
            std::thread::sleep(Duration::from_millis(1000));
            r.signal(libc::SIGTERM);
        }
        let (code, took) = r.wait(Duration::from_secs(10));
        assert_eq!(code, Some(1), "second signal {second}: {}", r.log());
        if second {
            assert!(took < Duration::from_millis(1500), "{took:?}: {}", r.log());
        } else {
            assert!(took < Duration::from_secs(7), "{took:?}: {}", r.log());
        }
        assert!(
            r.log().contains("could not deregister on exit"),
            "{}",
            r.log()
        );
    }
    drop(silent);
}

#[test]
fn a_role_without_the_index_prefix_is_named_in_the_error() {
    // An etcd of its own with auth: user `reg` may write the prefix but not the index.
    let etcd = Etcd::start_single("fleetauth", &[]);
    let url = etcd.url();
    let pw = "Pw-fleet-x9";
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "add", &format!("reg:{pw}")],
        vec!["role", "add", "regrole"],
        vec![
            "role",
            "grant-permission",
            "regrole",
            "--prefix=true",
            "readwrite",
            "/p/s/",
        ],
        vec!["user", "grant-role", "reg", "regrole"],
        vec!["auth", "enable"],
    ] {
        etcdctl(&url, &[], &args);
    }
    let out = once(&[
        "--hostname",
        "n",
        &format!("etcd://reg:{pw}@{}/p/s", etcd.endpoint()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("permission on /p/.registrator/s/")
            && err.contains("readwrite /p/.registrator/s/)"),
        "names the index prefix as the one to grant: {err}"
    );
    assert!(!err.contains(pw), "{err}");
}
