//! Safe on a fleet: one oversized service never stops a host's sync, two registrators
//! with one host name never delete each other's services (whether the first is alive,
//! stalled or was killed), and a restart with another `--ttl` moves the keys onto a
//! lease of that TTL without deleting them.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn etcdctl_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--endpoints".to_string(), etcd_url()];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(["-w".to_string(), "json".to_string()]);
    let out = run(Command::new("etcdctl").env("ETCDCTL_API", "3").args(&all));
    serde_json::from_str(&out).unwrap()
}

/// The lease ID (decimal) a key carries, 0 for none or no key.
fn lease_of(key: &str) -> i64 {
    etcdctl_json(&["get", key])["kvs"][0]["lease"]
        .as_i64()
        .unwrap_or(0)
}

/// The TTL a lease was granted with; 0 when it is gone.
fn granted_ttl(lease: i64) -> i64 {
    etcdctl_json(&["lease", "timetolive", &format!("{lease:x}")])["granted-ttl"]
        .as_i64()
        .unwrap_or(0)
}

/// The loop of host `host` on prefix `p`, resyncing every second.
fn running(host: &str, p: &str, extra: &[&str]) -> Running {
    let mut args = vec!["--hostname", host, "--interval", "1"];
    args.extend_from_slice(extra);
    let u = uri(p);
    args.push(&u);
    Running::start(&args)
}

/// Log lines of `r` that contain `needle`.
fn lines_with(r: &Running, needle: &str) -> Vec<String> {
    r.log()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

fn domains(n: usize) -> String {
    let list: Vec<String> = (0..n).map(|i| format!("d{i}.example.com")).collect();
    list.join(",")
}

#[test]
fn one_oversized_service_never_stops_the_others() {
    let p = prefix("oversized");
    let host = unique("h");
    // All three run before the registrator starts: its first pass meets them at once.
    let big = Container::httpd(
        &unique("big"),
        80,
        &[
            "SERVICE_NAME=big",
            "SERVICE_MODE=http",
            &format!("SERVICE_DOMAINS={}", domains(130)),
        ],
    );
    let huge_id = "x".repeat(60_000);
    let huge_name = unique("huge");
    let huge = Container::run(
        &huge_name,
        &[
            "-p",
            "127.0.0.1::80",
            "-l",
            "SERVICE_NAME=huge",
            "-l",
            &format!("SERVICE_ID={huge_id}"),
        ],
        &["httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let plain = Container::httpd(&unique("plain"), 80, &["SERVICE_NAME=plain"]);
    let watch = Watch::start(&format!("{p}/big/"));
    let r = running(&host, &p, &["--ttl", "10"]);

    assert!(
        wait_until(Duration::from_secs(8), || keys_with(&p, &plain.name).len()
            == 4),
        "the other services were not registered:\n{}",
        r.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &big.name).len()
            == 134),
        "130 domains + address, port, mode, node: {} keys\n{}",
        keys_with(&p, &big.name).len(),
        r.log()
    );
    // Written in two transactions, the owner marker first and the fields a consumer
    // routes on last: no consumer saw it routable with some domains missing.
    let puts: Vec<String> = watch
        .events()
        .into_iter()
        .map(|(t, k)| format!("{t} {}", k.rsplit('/').next().unwrap_or("")))
        .collect();
    assert_eq!(puts.len(), 134, "{puts:?}");
    assert_eq!(puts[0], "PUT node", "{puts:?}");
    let first_routing = puts
        .iter()
        .position(|e| ["PUT address", "PUT port", "PUT mode"].contains(&e.as_str()))
        .unwrap();
    assert_eq!(
        first_routing, 131,
        "routing fields after every domain: {puts:?}"
    );
    // The index entry goes in with the owner marker, in the first transaction: an
    // interrupted write (--ttl 0) never leaves a directory the index does not name.
    let dir = format!("big/{host}:{}:80", big.name);
    let index = etcd_registrator::keys::default_index_prefix(&p);
    let layout = etcd_registrator::keys::Layout {
        prefix: &p,
        index: &index,
        host: &host,
    };
    let entry = layout.service(&dir);
    let revision = |key: &str| etcdctl_json(&["get", key])["kvs"][0]["mod_revision"].as_i64();
    assert_eq!(
        revision(&entry),
        revision(&format!("{p}/{dir}/node")),
        "index entry and owner marker in one transaction"
    );
    assert_ne!(revision(&entry), revision(&format!("{p}/{dir}/port")));

    // The 60 KB ID is refused with one short line naming container, variable and limit.
    let refused = lines_with(&r, &format!("container {}:", huge.name));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("SERVICE_ID=\"xxx")
            && refused[0].contains("60000 bytes long, more than the 253"),
        "{}",
        refused[0]
    );
    assert!(refused[0].len() < 400, "{} bytes", refused[0].len());
    assert!(keys_with(&p, &huge_name).is_empty());
    assert!(etcd_get(&p).keys().all(|k| !k.contains("/huge/")));

    // The loop goes on: a new container is registered, a stopped one deregistered.
    let late = Container::httpd(&unique("late"), 80, &["SERVICE_NAME=late"]);
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &late.name).len()
            == 4),
        "{}",
        r.log()
    );
    plain.stop();
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &plain.name)
            .is_empty()),
        "{}",
        r.log()
    );
    // Still one line about the refused service after more passes.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        lines_with(&r, &format!("container {}:", huge.name)).len(),
        1
    );
    assert!(
        lines_with(&r, "too many operations").is_empty(),
        "{}",
        r.log()
    );
}

#[test]
fn a_second_registrator_with_the_same_host_name_refuses_and_deletes_nothing() {
    let p = prefix("twin");
    let host = unique("h");
    // The first (--explicit) sees only `named`; the second sees `unnamed` too, which it
    // registers at once on its own lease until it finds the first alive.
    let unnamed = Container::httpd(&unique("unnamed"), 80, &[]);
    let named = Container::httpd(&unique("named"), 80, &["SERVICE_NAME=named"]);
    let mut first = running(&host, &p, &["--ttl", "6", "--explicit"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &named.name).len()
            == 4),
        "{}",
        first.log()
    );
    let before = keys_with(&p, &named.name);
    let watch = Watch::start(&format!("{p}/"));
    let mut twin = running(&host, &p, &["--ttl", "6"]);
    let (code, took) = twin.wait(Duration::from_secs(10));
    assert_eq!(code, Some(1), "the twin kept running:\n{}", twin.log());
    eprintln!("twin refused after {took:?} (TTL 6 s)");
    let errors = lines_with(&twin, "ERROR");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!(
            "another registrator is running as host {host} under {p}"
        )),
        "{}",
        errors[0]
    );
    assert!(
        watch
            .events()
            .iter()
            .any(|(t, k)| t == "PUT" && k.contains(&unnamed.name)),
        "the twin registered what only it saw at once: {}",
        twin.log()
    );
    assert!(
        wait_until(Duration::from_secs(2), || keys_with(&p, &unnamed.name)
            .is_empty()),
        "what the twin wrote outlived it: {:?}",
        keys_with(&p, &unnamed.name)
    );
    std::thread::sleep(Duration::from_millis(1500));
    let touched: Vec<(String, String)> = watch
        .events()
        .into_iter()
        .filter(|(_, k)| k.contains(&named.name))
        .collect();
    assert_eq!(touched, vec![], "the first one's services were touched");
    assert_eq!(keys_with(&p, &named.name), before);
    assert!(first.alive(), "{}", first.log());
}

#[test]
fn a_stalled_registrator_is_not_taken_for_a_dead_one() {
    let p = prefix("stalled");
    let host = unique("h");
    let named = Container::httpd(&unique("named"), 80, &["SERVICE_NAME=named"]);
    let mut first = running(&host, &p, &["--ttl", "12", "--explicit"]);
    assert!(
        wait_until(Duration::from_secs(5), || keys_with(&p, &named.name).len()
            == 4),
        "{}",
        first.log()
    );
    let before = keys_with(&p, &named.name);
    let watch = Watch::start(&format!("{p}/"));
    // The first stalls (a paused VM) for longer than a keepalive period and a second (the
    // old code's verdict "gone" after TTL/3 + 1 s = 5 s) but well within its TTL (at least
    // 2.5 s are left when it resumes); a second one with its host name starts meanwhile.
    first.signal(libc::SIGSTOP);
    let mut second = running(&host, &p, &["--ttl", "12"]);
    std::thread::sleep(Duration::from_millis(5500));
    first.signal(libc::SIGCONT);
    let (code, _) = second.wait(Duration::from_secs(10));
    assert_eq!(code, Some(1), "the second kept running:\n{}", second.log());
    assert!(
        second
            .log()
            .contains("another registrator is running as host"),
        "{}",
        second.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(first.alive(), "the first one stopped:\n{}", first.log());
    assert_eq!(keys_with(&p, &named.name), before, "{}", second.log());
    let deletes: Vec<String> = watch
        .deletes()
        .into_iter()
        .filter(|k| k.contains(&named.name))
        .collect();
    assert_eq!(
        deletes,
        Vec::<String>::new(),
        "the first one's services were deleted"
    );
}

#[test]
fn two_registrators_started_at_once_with_one_host_name_one_refuses() {
    let p = prefix("twins");
    let host = unique("h");
    let unnamed = Container::httpd(&unique("unnamed"), 80, &[]);
    let named = Container::httpd(&unique("named"), 80, &["SERVICE_NAME=named"]);
    let watch = Watch::start(&format!("{p}/"));
    let mut a = running(&host, &p, &["--ttl", "6"]);
    let mut b = running(&host, &p, &["--ttl", "6", "--explicit"]);
    let start = Instant::now();
    let mut exited = Vec::new();
    while start.elapsed() < Duration::from_secs(10) && exited.is_empty() {
        for (name, r) in [("a", &mut a), ("b", &mut b)] {
            if let Ok(Some(status)) = r.child.try_wait() {
                exited.push((name, status.code()));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        exited.len(),
        1,
        "{exited:?}\na: {}\nb: {}",
        a.log(),
        b.log()
    );
    assert_eq!(exited[0].1, Some(1));
    let (survivor, refused) = if exited[0].0 == "a" {
        (&mut b, &a)
    } else {
        (&mut a, &b)
    };
    assert!(
        refused
            .log()
            .contains("another registrator is running as host"),
        "{}",
        refused.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(survivor.alive(), "{}", survivor.log());
    assert!(keys_with(&p, &named.name).len() == 4, "{}", survivor.log());
    // The survivor's services never flap. (What only the refused one saw, `unnamed`
    // when `a` is refused, goes with its lease: that is by design.)
    let survivor_sees_unnamed = exited[0].0 == "b";
    let flaps: Vec<String> = watch
        .deletes()
        .into_iter()
        .filter(|k| k.contains(&named.name) || survivor_sees_unnamed && k.contains(&unnamed.name))
        .collect();
    assert_eq!(flaps, Vec::<String>::new(), "no flap");
}

#[test]
fn kill_9_restart_registers_a_new_container_at_once_and_the_rest_when_the_old_lease_ends() {
    let p = prefix("kill9restart");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r = running(&host, &p, &["--ttl", "15"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    let key = format!("{p}/c/{host}:{}:80/port", c.name);
    let old = lease_of(&key);
    r.signal(libc::SIGKILL);
    r.wait(Duration::from_secs(2));
    let mut r2 = running(&host, &p, &["--ttl", "15"]);
    let new = Container::httpd(&unique("new"), 80, &["SERVICE_NAME=new"]);
    let start = Instant::now();
    // Before, the whole pass waited TTL/3 + 1 s (6 s) in the identity watch.
    assert!(
        wait_until(Duration::from_secs(3), || keys_with(&p, &new.name).len()
            == 4),
        "{}",
        r2.log()
    );
    eprintln!(
        "kill -9 restart: a new container registered after {:?}",
        start.elapsed()
    );
    // The predecessor's keys stay on its lease until it ends, then come back on ours.
    assert_eq!(lease_of(&key), old, "{}", r2.log());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let l = lease_of(&key);
            l != 0 && l != old
        }),
        "{}",
        r2.log()
    );
    assert_eq!(keys_with(&p, &c.name).len(), 4);
    assert_eq!(granted_ttl(old), 0);
    assert!(r2.alive(), "{}", r2.log());
}

/// A restart from `--ttl before` to `--ttl after`: the keys end on a lease of `after`
/// seconds, moved without a DELETE, and the old lease is revoked.
fn restart_with_ttl(before: &str, after: &str) {
    let p = prefix("ttlchange");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r = running(&host, &p, &["--ttl", before]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    let dir = format!("{p}/c/{host}:{}:80/", c.name);
    let key = format!("{dir}port");
    let old = lease_of(&key);
    assert_eq!(granted_ttl(old).to_string(), before);
    let watch = Watch::start(&dir);
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(3)).0, Some(0));
    let mut r2 = running(&host, &p, &["--ttl", after]);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let l = lease_of(&key);
            l != old && l != 0 && granted_ttl(l).to_string() == after
        }),
        "{before} -> {after}: still on lease {old:x}:\n{}",
        r2.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || granted_ttl(old) == 0),
        "old lease {old:x} not revoked:\n{}",
        r2.log()
    );
    let new = lease_of(&key);
    for k in keys_with(&p, &c.name).keys() {
        assert_eq!(lease_of(&format!("{p}{k}")), new, "{k}");
    }
    assert_eq!(keys_with(&p, &c.name).len(), 4);
    assert_eq!(watch.deletes(), Vec::<String>::new(), "{before} -> {after}");
    // The keys now live and die by the new TTL.
    r2.signal(libc::SIGKILL);
    r2.wait(Duration::from_secs(2));
    let killed = Instant::now();
    let limit: u64 = after.parse::<u64>().unwrap() + 3;
    assert!(
        wait_until(Duration::from_secs(limit), || keys_with(&p, &c.name)
            .is_empty()),
        "keys outlived the new lease"
    );
    eprintln!(
        "--ttl {before} -> {after}: keys gone {:?} after kill -9",
        killed.elapsed()
    );
}

#[test]
fn a_restart_after_a_lease_shorter_than_the_interval_moves_every_key_in_its_first_pass() {
    let p = prefix("shortlease");
    let host = unique("h");
    let c = Container::httpd(&unique("c"), 80, &["SERVICE_NAME=c"]);
    let mut r = running(&host, &p, &["--ttl", "2"]);
    assert!(wait_until(Duration::from_secs(5), || keys_with(
        &p, &c.name
    )
    .len()
        == 4));
    let dir = format!("{p}/c/{host}:{}:80/", c.name);
    let old = lease_of(&format!("{dir}port"));
    let watch = Watch::start(&dir);
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(3)).0, Some(0));
    // Passes 10 s apart: the old 2 s lease must not outlive its keys' move.
    let u = uri(&p);
    let r2 = Running::start(&["--hostname", &host, "--interval", "10", "--ttl", "9", &u]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(keys_with(&p, &c.name).len(), 4, "{}", r2.log());
    let new = lease_of(&format!("{dir}port"));
    assert!(new != old && granted_ttl(new) == 9, "{}", r2.log());
    assert_eq!(granted_ttl(old), 0, "old lease revoked");
    assert_eq!(watch.deletes(), Vec::<String>::new(), "{}", r2.log());
}

#[test]
fn a_restart_with_a_lower_ttl_moves_the_keys_onto_a_lease_of_that_ttl() {
    restart_with_ttl("60", "4");
}

#[test]
fn a_restart_with_a_higher_ttl_moves_the_keys_onto_a_lease_of_that_ttl() {
    restart_with_ttl("4", "9");
}

#[test]
fn a_role_on_the_prefix_only_is_refused_with_what_to_grant() {
    // An etcd user whose role covers exactly `<prefix>/`, as before the ownership index
    // and the instance keys (both under /.registrator/services/): it must be told what
    // to grant, and it writes nothing half-way.
    let etcd = Etcd::start_single("nokeyrole", &[]);
    let url = etcd.url();
    let p = "/services";
    let root = ["--user", "root:rootpw"];
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "reg:regpw"],
        &["role", "add", "regrole"],
        &[
            "role",
            "grant-permission",
            "regrole",
            "--prefix=true",
            "readwrite",
            "/services/",
        ],
        &["user", "grant-role", "reg", "regrole"],
        &["auth", "enable"],
    ] {
        etcdctl(&url, &[], args);
    }
    let host = unique("h");
    let svc = unique("svc");
    let c = Container::httpd(&unique("c"), 80, &[&format!("SERVICE_NAME={svc}")]);
    let u = format!("etcd://reg:regpw@{}{p}", etcd.endpoint());
    let mut r = Running::start(&["--hostname", &host, "--interval", "1", "--ttl", "4", &u]);
    let said = || {
        r.log()
            .contains("grant-permission ROLE --prefix=true readwrite /.registrator/services/")
    };
    assert!(wait_until(Duration::from_secs(8), said), "{}", r.log());
    let mine = try_etcd_get_at(&url, &root, &format!("{p}/{svc}/"))
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.contains(&c.name))
        .count();
    assert_eq!(mine, 0, "nothing registered without the index: {}", r.log());
    r.signal(libc::SIGTERM);
    assert_eq!(r.wait(Duration::from_secs(3)).0, Some(0));
}
