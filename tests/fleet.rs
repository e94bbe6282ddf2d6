//! The ownership index against the real daemons (issue 11): an index that stays exact
//! when keys are deleted by hand, a claim prefix full of other keys, claims that survive
//! a `docker restart`, two hosts racing for a port, and `--deregister-on-exit` within its
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
    etcd_registrator::keys::default_index_prefix(p)
}

/// `etcdctl ARGS` against the shared etcd.
fn etcdctl_run(args: &[&str]) -> String {
    let mut all = vec!["--endpoints".to_string(), etcd_url()];
    all.extend(args.iter().map(|a| a.to_string()));
    run(Command::new("etcdctl").env("ETCDCTL_API", "3").args(&all))
}

/// The directories `host`'s index names.
fn indexed(p: &str, host: &str) -> BTreeSet<String> {
    let entries = format!("{}/hosts/{host}/services/", index(p));
    etcd_get(&entries)
        .into_keys()
        .map(|k| k[entries.len()..].to_string())
        .collect()
}

/// A service directory as another host left it.
fn put_dir(p: &str, dir: &str, fields: &[(&str, &str)]) {
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

/// A port for this test binary's claims, away from those of tests/leases.rs.
fn claim_port(offset: u32) -> String {
    (45000 + (std::process::id() % 2000) * 3 + offset).to_string()
}

#[test]
fn a_claim_prefix_full_of_keys_others_left_costs_the_claim_nothing() {
    // 200 keys under the port's claim prefix: replicas of hosts long gone (no lease,
    // as with --ttl 0) and keys of another shape. Before, each pass built one
    // transaction that grew with them, past etcd's 128 operations.
    let port = claim_port(2);
    let p = prefix("fleet-fullclaim");
    let claims = format!("{}/claims/external_port/{port}", index(&p));
    for h in 0..100 {
        etcd_put(&format!("{claims}/gone{h}"), "mine");
        etcd_put(&format!("{claims}/old{h}/theirs/old{h}:c:80"), "legacy");
    }
    let host = unique("h");
    let c = Container::httpd(
        &unique("mine"),
        80,
        &[
            "SERVICE_NAME=mine",
            &format!("SERVICE_EXTERNAL_PORT={port}"),
        ],
    );
    let out = once(&["--hostname", &host, "--explicit", &uri(&p)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys_with(&p, &c.name).len(), 5, "{}", stderr(&out));
    assert_eq!(etcd_get(&format!("{claims}/{host}")).len(), 1);
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
        let hosts = [("host-a", true), ("host-b", false)];
        let args = |host: &'static str, explicit: bool| {
            let mut a = vec!["--once", "--hostname", host];
            if explicit {
                a.push("--explicit");
            }
            a
        };
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
        put_dir(&p, &format!("web/o{h}:c:80"), &[("node", &format!("o{h}"))]);
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

#[test]
fn the_instance_key_lives_under_the_index_prefix_given() {
    let p = prefix("fleet-idx");
    let host = unique("h");
    let idx = format!("/{}", unique("custom-index"));
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let r = running(&host, &p, &["--index-prefix", &idx]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &c.name).len() == 4
            && etcd_get(&format!("{idx}/instance/{host}")).len() == 1),
        "{:?}\n{}",
        etcd_get(&idx),
        r.log()
    );
    assert!(
        etcd_get(&format!("{}/instance/", index(&p))).is_empty(),
        "nothing beside the prefix when --index-prefix is given"
    );
}
