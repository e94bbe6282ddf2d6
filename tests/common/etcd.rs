//! etcd as the tests read and write it: the shared etcd's address, registry URIs, key
//! prefixes, and etcdctl (a client we did not write) to read keys back, put, watch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{env, run, unique};

/// The shared etcd's client URL (`http://127.0.0.1:23790`).
pub fn etcd_url() -> String {
    env("REG_ETCD")
}

/// The shared etcd's `127.0.0.1:port`, as a registry URI names it.
pub fn etcd_endpoint() -> String {
    etcd_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The shared etcd's client address.
pub fn etcd_addr() -> SocketAddr {
    let ep = etcd_endpoint();
    ep.parse()
        .unwrap_or_else(|e| panic!("REG_ETCD {}: {e}", etcd_url()))
}

/// The registry URI for `prefix` on the shared etcd.
pub fn uri(prefix: &str) -> String {
    uri_at(&etcd_endpoint(), prefix)
}

/// The registry URI for `prefix` on `endpoints` (`host:port`, comma-separated).
pub fn uri_at(endpoints: &str, prefix: &str) -> String {
    format!("etcd://{endpoints}{prefix}")
}

/// A fresh key prefix for one test.
pub fn prefix(tag: &str) -> String {
    format!("/t/{}", unique(tag))
}

fn etcdctl_cmd(endpoints: &str, timeout: &str, flags: &[&str], args: &[&str]) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoints, "--command-timeout", timeout])
        .args(flags)
        .args(args);
    c
}

/// etcdctl against `endpoints` (comma-separated URLs) with extra global flags; stdout.
/// Panics when it fails.
pub fn etcdctl(endpoints: &str, flags: &[&str], args: &[&str]) -> String {
    run(&mut etcdctl_cmd(endpoints, "5s", flags, args))
}

/// [`etcdctl`] that gives up sooner (3 s) and returns None instead of panicking when it
/// fails (a cluster electing a leader, a member just killed).
pub fn try_etcdctl(endpoints: &str, flags: &[&str], args: &[&str]) -> Option<String> {
    let out = etcdctl_cmd(endpoints, "3s", flags, args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The keys and values of `etcdctl get` output (a key line, then a value line).
fn parse_get(out: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// Every key under `prefix` with its value, read with etcdctl from `endpoints`.
pub fn etcd_get_at(endpoints: &str, flags: &[&str], prefix: &str) -> BTreeMap<String, String> {
    parse_get(&etcdctl(endpoints, flags, &["get", "--prefix", prefix]))
}

/// [`etcd_get_at`] that returns None when etcdctl fails (see [`try_etcdctl`]).
pub fn try_etcd_get_at(
    endpoints: &str,
    flags: &[&str],
    prefix: &str,
) -> Option<BTreeMap<String, String>> {
    try_etcdctl(endpoints, flags, &["get", "--prefix", prefix]).map(|out| parse_get(&out))
}

/// Every key under `prefix` of the shared etcd with its value.
pub fn etcd_get(prefix: &str) -> BTreeMap<String, String> {
    etcd_get_at(&etcd_url(), &[], prefix)
}

/// Puts a key in the shared etcd.
pub fn etcd_put(key: &str, value: &str) {
    etcdctl(&etcd_url(), &[], &["put", key, value]);
}

/// The lease ID (decimal) a key of the shared etcd carries, 0 for none.
pub fn lease_of(key: &str) -> i64 {
    let out = etcdctl(&etcd_url(), &[], &["get", key, "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["kvs"][0]["lease"].as_i64().unwrap_or(0)
}

/// Keys under `prefix` that belong to service IDs containing `needle`, relative to the prefix.
pub fn keys_with(prefix: &str, needle: &str) -> BTreeMap<String, String> {
    etcd_get(prefix)
        .into_iter()
        .filter(|(k, _)| k.contains(needle))
        .map(|(k, v)| (k[prefix.len()..].to_string(), v))
        .collect()
}

/// The four keys the registrator writes for a container `name` whose container port
/// 80 is published on 127.0.0.1:`port` with `SERVICE_NAME=svc` and no other settings.
pub fn service_keys(
    prefix: &str,
    host: &str,
    svc: &str,
    name: &str,
    port: u16,
) -> BTreeMap<String, String> {
    let dir = format!("{prefix}/{svc}/{host}:{name}:80");
    [
        ("address", "127.0.0.1".to_string()),
        ("mode", "tcp".into()),
        ("node", host.to_string()),
        ("port", port.to_string()),
    ]
    .into_iter()
    .map(|(f, v)| (format!("{dir}/{f}"), v))
    .collect()
}

/// `etcdctl watch --prefix` on the shared etcd, recording every event to a file; killed
/// when dropped.
pub struct Watch {
    child: Child,
    out: PathBuf,
}

impl Watch {
    /// Starts watching `prefix` and gives etcdctl 300 ms to begin.
    pub fn start(prefix: &str) -> Watch {
        let out = std::env::temp_dir().join(format!("{}.watch", unique("watch")));
        let child = etcdctl_cmd(&etcd_url(), "5s", &[], &["watch", "--prefix", prefix])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Watch { child, out }
    }

    /// (event type, key) pairs seen so far: `PUT`, key, value or `DELETE`, key.
    pub fn events(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            match lines[i] {
                "PUT" => {
                    out.push(("PUT".into(), lines.get(i + 1).unwrap_or(&"").to_string()));
                    i += 3;
                }
                "DELETE" => {
                    out.push(("DELETE".into(), lines.get(i + 1).unwrap_or(&"").to_string()));
                    i += 2;
                }
                _ => i += 1,
            }
        }
        out
    }

    /// The keys deleted so far, in revision order.
    pub fn deletes(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|(t, _)| t == "DELETE")
            .map(|(_, k)| k)
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}
