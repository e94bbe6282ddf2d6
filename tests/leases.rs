//! Many hosts on one prefix: lease expiry after a crash, restarts without flapping,
//! lease loss, --deregister-on-exit and the cluster-wide port rule. The
//! restart and the stop without flapping depend on the engine's view and run once per
//! engine (`NAME::docker`, `NAME::podman`).

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

per_engine!(
    graceful_restart_deletes_nothing_and_moves_the_keys_onto_its_own_lease,
    docker_stop_deregisters_without_flapping,
);

/// The keys host `host` registered for container `c` under `p`.
fn keys_of(p: &str, host: &str, c: &Container) -> BTreeMap<String, String> {
    keys_with(p, &format!("{host}:{}", c.name))
}

fn running(host: &str, p: &str, extra: &[&str]) -> Running {
    running_on(Engine::Docker, host, p, extra)
}

fn running_on(e: Engine, host: &str, p: &str, extra: &[&str]) -> Running {
    let mut args = vec!["--hostname", host, "--interval", "1"];
    args.extend_from_slice(extra);
    let u = uri(p);
    args.push(&u);
    Running::on(e, &args)
}

#[test]
fn kill_9_expires_that_hosts_keys_within_the_ttl_and_no_one_elses() {
    let p = prefix("kill9");
    let (h1, h2) = (unique("h1"), unique("h2"));
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r1 = running(&h1, &p, &["--ttl", "3"]);
    let r2 = running(&h2, &p, &["--ttl", "3"]);
    assert!(wait_until(Duration::from_secs(5), || keys_of(&p, &h1, &c)
        .len()
        == 4
        && keys_of(&p, &h2, &c).len() == 4));
    r1.signal(libc::SIGKILL);
    r1.wait(Duration::from_secs(2));
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(6), || keys_of(&p, &h1, &c).is_empty()),
        "h1's keys outlived its lease: {:?}",
        etcd_get(&p)
    );
    let took = killed.elapsed();
    eprintln!("kill -9 -> keys gone after {took:?} (TTL 3 s)");
    assert!(took < Duration::from_millis(3000 + 1500), "took {took:?}");
    assert_eq!(
        keys_of(&p, &h2, &c).len(),
        4,
        "h2's keys were touched: {}",
        r2.log()
    );
    drop(c);
}

fn graceful_restart_deletes_nothing_and_moves_the_keys_onto_its_own_lease(e: Engine) {
    let p = prefix("restart");
    let host = unique("h");
    let keep = Container::httpd_on(e, &unique("keep"), 80, &["SERVICE_NAME=keep"]);
    let gone = Container::httpd_on(e, &unique("gone"), 80, &["SERVICE_NAME=gone"]);
    let mut r = running_on(e, &host, &p, &["--ttl", "4"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &keep.name
    )
    .len()
        == 4
        && keys_with(&p, &gone.name).len() == 4));
    let lease = lease_of(&format!("{p}/keep/{host}:{}:80/port", keep.name));
    assert_ne!(lease, 0, "loop keys carry a lease");

    let watch = Watch::start(&format!("{p}/keep/"));
    r.signal(libc::SIGTERM);
    let (code, took) = r.wait(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{}", r.log());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    assert_eq!(
        keys_with(&p, &keep.name).len(),
        4,
        "keys stay in place after SIGTERM"
    );

    // While it is down, one container stops: the successor cleans that up.
    gone.stop();
    let r2 = running_on(e, &host, &p, &["--ttl", "4"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &gone.name)
            .is_empty()),
        "{}",
        r2.log()
    );
    // The released identity is taken at once: the keys move onto the successor's own
    // lease (a reader sees PUTs of the same values, never a DELETE) and stay well past
    // the old TTL.
    let key = format!("{p}/keep/{host}:{}:80/port", keep.name);
    assert!(
        wait_until(Duration::from_secs(3), || ![0, lease]
            .contains(&lease_of(&key))),
        "{}",
        r2.log()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(keys_with(&p, &keep.name).len(), 4, "{}", r2.log());
    let deletes = watch.deletes();
    assert!(
        deletes.is_empty(),
        "a reader saw an unchanged service deleted during the restart: {deletes:?}"
    );
}

#[test]
fn successor_after_the_lease_expired_grants_a_new_one_and_re_registers() {
    let p = prefix("expired");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r = running(&host, &p, &["--ttl", "2"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    r.signal(libc::SIGKILL);
    r.wait(Duration::from_secs(2));
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .is_empty()));
    let r2 = running(&host, &p, &["--ttl", "2"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &c.name).len() == 4),
        "{}",
        r2.log()
    );
}

#[test]
fn lost_lease_is_replaced_and_everything_re_put_within_an_interval() {
    let p = prefix("lost");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let r = running(&host, &p, &["--ttl", "30"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    let key = format!("{p}/c/{host}:{}:80/port", c.name);
    let lease = lease_of(&key);
    // Revoking the lease is what etcd does when it expired during an outage.
    etcdctl(
        &etcd_url(),
        &[],
        &["lease", "revoke", &format!("{lease:x}")],
    );
    // (A pass may already have re-registered them: other tests' containers wake it.)
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &c.name).len() == 4
            && ![0, lease].contains(&lease_of(&key))),
        "not re-registered on a new lease: {}",
        r.log()
    );
}

#[test]
fn deregister_on_exit_removes_this_hosts_services_only() {
    let p = prefix("dereg");
    let (h1, h2) = (unique("h1"), unique("h2"));
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r1 = running(&h1, &p, &["--deregister-on-exit"]);
    let _r2 = running(&h2, &p, &[]);
    assert!(wait_until(Duration::from_secs(5), || keys_of(&p, &h1, &c)
        .len()
        == 4
        && keys_of(&p, &h2, &c).len() == 4));
    r1.signal(libc::SIGINT);
    let (code, took) = r1.wait(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{}", r1.log());
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(keys_of(&p, &h1, &c).is_empty(), "{}", r1.log());
    assert_eq!(keys_of(&p, &h2, &c).len(), 4);
    // Without a lease (--ttl 0) the keys are deleted instead.
    let mut r3 = running(&h1, &p, &["--ttl", "0", "--deregister-on-exit"]);
    assert!(wait_until(Duration::from_secs(5), || keys_of(&p, &h1, &c)
        .len()
        == 4));
    assert_eq!(lease_of(&format!("{p}/c/{h1}:{}:80/port", c.name)), 0);
    r3.signal(libc::SIGTERM);
    assert_eq!(r3.wait(Duration::from_secs(3)).0, Some(0));
    assert!(keys_of(&p, &h1, &c).is_empty());
}

#[test]
fn once_writes_no_lease_unless_asked() {
    let p = prefix("oncettl");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    assert!(once(&["--hostname", &host, &uri(&p)]).status.success());
    let key = format!("{p}/c/{host}:{}:80/port", c.name);
    assert_eq!(lease_of(&key), 0, "a cron job's keys must outlive it");
    let p2 = prefix("oncettl");
    assert!(once(&["--hostname", &host, "--ttl", "2", &uri(&p2)])
        .status
        .success());
    assert_ne!(lease_of(&format!("{p2}/c/{host}:{}:80/port", c.name)), 0);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p2, &c.name)
            .is_empty()),
        "--once --ttl keys must expire"
    );
}

/// The key with which host `elsewhere` claims external port `port` under prefix `p`.
fn claim_of_elsewhere(p: &str, port: &str) -> String {
    use etcd_registrator::keys::{default_index_prefix, Layout};
    let index = default_index_prefix(p);
    let layout = Layout {
        prefix: p,
        index: &index,
        host: "elsewhere",
    };
    layout.claim(etcd_registrator::service::Claim::External(
        port.parse().unwrap(),
    ))
}

/// Puts the keys of a service `<p>/<dir>` as host `elsewhere` would: address `address`,
/// port 80, external port `port`, and its claim key.
fn put_elsewhere(p: &str, dir: &str, address: &str, port: &str) {
    for (k, v) in [
        ("address", address),
        ("port", "80"),
        ("mode", "tcp"),
        ("external_port", port),
        ("node", "elsewhere"),
    ] {
        etcd_put(&format!("{p}/{dir}/{k}"), v);
    }
    let name = dir.split('/').next().unwrap();
    etcd_put(&claim_of_elsewhere(p, port), name);
}

#[test]
fn external_port_held_by_another_service_is_refused_until_released() {
    let p = prefix("portrule");
    let host = unique("h");
    let port = (20000 + std::process::id() % 5000).to_string();
    // Another host's service already holds the port.
    let other = format!("{p}/other/elsewhere:x:80");
    put_elsewhere(&p, "other/elsewhere:x:80", "10.9.9.9", &port);
    let mine = Container::httpd(
        &unique("mine"),
        80,
        &[
            "SERVICE_NAME=mine",
            &format!("SERVICE_EXTERNAL_PORT={port}"),
        ],
    );
    let r = running(&host, &p, &[]);
    assert!(
        wait_until(Duration::from_secs(3), || r
            .log()
            .contains(&format!("container {}:", mine.name))),
        "{}",
        r.log()
    );
    let line = r
        .log()
        .lines()
        .find(|l| l.contains(&format!("container {}:", mine.name)))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!(
            "external port {port} is already held by service other on host elsewhere"
        )),
        "{line}"
    );
    assert!(keys_with(&p, &mine.name).is_empty());
    // The holder goes away: the next sync registers ours.
    etcdctl(&etcd_url(), &[], &["del", "--prefix", &format!("{other}/")]);
    etcdctl(&etcd_url(), &[], &["del", &claim_of_elsewhere(&p, &port)]);
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &mine.name).len()
            == 5),
        "{}",
        r.log()
    );
    // The same service name on another host may share the port (replicas).
    put_elsewhere(&p, "mine/elsewhere:y:80", "10.9.9.8", &port);
    let mine_errors = || {
        r.log()
            .lines()
            .filter(|l| l.contains("ERROR") && l.contains(&mine.name))
            .count()
    };
    let errors_before = mine_errors();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(keys_with(&p, &mine.name).len(), 5);
    assert_eq!(mine_errors(), errors_before, "{}", r.log());
}

#[test]
fn two_hosts_racing_for_one_free_port_never_both_win() {
    // Host A registers only SERVICE_NAME containers (--explicit), so it sees `alpha`;
    // host B also sees the older `beta` (named after its image), which then keeps the
    // port on B. Both claim the same free port at the same moment, many times.
    let port = (40000 + std::process::id() % 5000).to_string();
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
    let mut wins = std::collections::BTreeMap::new();
    for round in 0..20 {
        let p = prefix("race");
        let a = registrator(&["--once", "--explicit", "--hostname", "host-a", &uri(&p)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let b = registrator(&["--once", "--hostname", "host-b", &uri(&p)])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for mut child in [a, b] {
            child.wait().unwrap();
        }
        let holders: std::collections::BTreeSet<String> = etcd_get(&p)
            .into_iter()
            .filter(|(k, v)| k.ends_with("/external_port") && *v == port)
            .map(|(k, _)| k[p.len() + 1..].split('/').next().unwrap().to_string())
            .collect();
        assert_eq!(
            holders.len(),
            1,
            "round {round}: port {port} held by {holders:?}"
        );
        *wins.entry(holders.into_iter().next().unwrap()).or_insert(0) += 1;
    }
    eprintln!("race winners over 20 rounds: {wins:?}");
    drop((alpha, beta));
}

fn docker_stop_deregisters_without_flapping(e: Engine) {
    // Docker's list lags behind its events: a pass right after `die` must not register
    // the dying container again (seen as DELETE, PUT, DELETE by a watching proxy).
    let p = prefix("noflap");
    let host = unique("h");
    let r = running_on(e, &host, &p, &[]);
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..8 {
        let c = Container::httpd_on(e, &unique("c"), 80, &["SERVICE_NAME=c"]);
        assert!(
            wait_until(Duration::from_secs(3), || keys_with(&p, &c.name).len() == 4),
            "{}",
            r.log()
        );
        let watch = Watch::start(&format!("{p}/c/{host}:{}:80/", c.name));
        c.stop();
        assert!(wait_until(Duration::from_secs(3), || keys_with(
            &p, &c.name
        )
        .is_empty()));
        std::thread::sleep(Duration::from_millis(500));
        let events = watch.events();
        let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
        assert!(
            kinds.iter().all(|k| *k == "DELETE"),
            "round {round}: {events:?}\n{}",
            r.log()
        );
        assert_eq!(
            kinds.len(),
            4,
            "round {round}: each key deleted once: {events:?}"
        );
    }
}

#[test]
fn a_refused_port_claim_withdraws_the_old_registration_of_a_recreated_container() {
    let p = prefix("withdraw");
    let host = unique("h");
    let base = 30000 + std::process::id() % 5000 * 2;
    let (free, held) = (base.to_string(), (base + 1).to_string());
    // Another host's service holds `held`.
    put_elsewhere(&p, "other/elsewhere:x:80", "10.9.9.9", &held);
    let name = unique("svc");
    let env = |port: &str| {
        [
            "SERVICE_NAME=mine".to_string(),
            format!("SERVICE_EXTERNAL_PORT={port}"),
        ]
    };
    let first = env(&free);
    let c = Container::httpd(&name, 80, &[&first[0], &first[1]]);
    // No lease: the old registration would outlive anything but a deregistration.
    let mut r = running(&host, &p, &["--ttl", "0"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &name).len() == 5),
        "{}",
        r.log()
    );
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(3)).0, Some(0));
    // While no registrator runs, the container is recreated claiming the held port.
    drop(c);
    let second = env(&held);
    let _c = Container::httpd(&name, 80, &[&second[0], &second[1]]);
    let r2 = running(&host, &p, &["--ttl", "0"]);
    assert!(
        wait_until(Duration::from_secs(5), || r2
            .log()
            .contains("is already held by service other on host elsewhere")),
        "{}",
        r2.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &name).is_empty()),
        "the old registration (port {free}) stays routable while the log says \
         \"not registered\": {:?}\n{}",
        keys_with(&p, &name),
        r2.log()
    );
}
