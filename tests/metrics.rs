//! The metrics listener against real parts: `promtool check metrics` on what it
//! serves, a real Prometheus server (Debian's package, on loopback) scraping it, its
//! HTTP API queried for the registrator's series, and the healthcheck probe against
//! `/healthz` as it flips.
//!
//! The listener is started from the library with its own [`Metrics`], so the test
//! decides every value; it needs no etcd or Docker. `tests/prometheus.sh` installs
//! Prometheus when it is missing and starts and stops the server by PID.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_registrator::health;
use etcd_registrator::http;
use etcd_registrator::metrics::{Change, Metrics, PassOutcome};
use serde_json::Value;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus.sh")
}

/// A directory of this test run's own (under `$REG_TEST_DIR` when the daemons set it).
fn work_dir(tag: &str) -> PathBuf {
    let base = std::env::var("REG_TEST_DIR").unwrap_or_else(|_| "/tmp".into());
    Path::new(&base).join(format!("{tag}-{}", std::process::id()))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` from the listener: (status, body).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    common::http::get_untrimmed(&addr.to_string(), path)
}

/// A Prometheus server scraping one target; stopped (by PID) when dropped.
struct Prometheus {
    dir: PathBuf,
    url: String,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = work_dir("prometheus");
        let port = free_port();
        let out = Command::new(script())
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg(target.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "prometheus.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Prometheus {
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn api(&self, path: &str) -> Value {
        let text = ureq::get(&format!("{}{path}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{path}: {text}");
        v["data"].clone()
    }

    /// The instant vector of a PromQL query: (labels, value) per series.
    fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let data = self.api(&format!("/api/v1/query?query={q}"));
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().unwrap().parse().unwrap();
                (s["metric"].clone(), v)
            })
            .collect()
    }

    /// The single value of a query, once Prometheus has it equal to `want`.
    fn wait_for(&self, promql: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.query(promql);
            if got.len() == 1 && got[0].1 == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{promql}: want {want}, Prometheus has {got:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
    }
}

/// Metrics as a loop that ran a while would leave them.
fn busy_metrics() -> Arc<Metrics> {
    let m = Arc::new(Metrics::new());
    // Healthy for the whole test: the last pass counts as recent for 3 intervals.
    m.configure(Duration::from_secs(10), 30);
    for ms in [2, 3, 5, 40, 900] {
        m.pass(PassOutcome::Ok, Duration::from_millis(ms));
    }
    m.pass(PassOutcome::EtcdError, Duration::from_secs(5));
    m.pass(PassOutcome::DockerError, Duration::from_millis(1));
    m.pass(PassOutcome::Conflict, Duration::from_millis(7));
    m.set_services(3);
    m.applied(Change::Register);
    m.applied(Change::Register);
    m.applied(Change::Register);
    m.applied(Change::Deregister);
    m.set_refused([etcd_registrator::service::Refusal::InvalidConfig]);
    for _ in 0..10 {
        m.etcd_request("http://127.0.0.1:2379", true);
    }
    m.etcd_request("http://127.0.0.2:2379", false);
    m.etcd_failover();
    m.lease_granted(0x42);
    m.event_stream_reconnect();
    m
}

#[test]
fn promtool_accepts_the_exposition() {
    let addr = http::spawn("127.0.0.1:0", busy_metrics()).unwrap();
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let dir = work_dir("promtool");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new(script())
        .arg("check-metrics")
        .arg(&file)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 1 on lint problems too, and prints one line each.
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{body}"
    );
    assert!(
        !said
            .lines()
            .any(|l| l.contains("registrator_") || l.contains("process_")),
        "promtool lint: {said}"
    );
}

#[test]
fn a_real_prometheus_scrapes_the_series() {
    let m = busy_metrics();
    let addr = http::spawn("127.0.0.1:0", Arc::clone(&m)).unwrap();
    let prom = Prometheus::start(addr);

    prom.wait_for(r#"up{job="registrator"}"#, 1.0);
    let build = prom.query("registrator_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(build[0].0["version"], env!("CARGO_PKG_VERSION"));
    assert!(build[0].0["commit"].is_string());
    for (promql, want) in [
        (r#"registrator_passes_total{outcome="ok"}"#, 5.0),
        (r#"registrator_passes_total{outcome="etcd_error"}"#, 1.0),
        (r#"registrator_passes_total{outcome="docker_error"}"#, 1.0),
        (r#"registrator_passes_total{outcome="conflict"}"#, 1.0),
        ("registrator_pass_duration_seconds_count", 8.0),
        (
            r#"registrator_pass_duration_seconds_bucket{le="0.005"}"#,
            4.0,
        ),
        (
            r#"registrator_pass_duration_seconds_bucket{le="+Inf"}"#,
            8.0,
        ),
        ("registrator_services", 3.0),
        ("registrator_registrations_total", 3.0),
        ("registrator_deregistrations_total", 1.0),
        (
            r#"registrator_refused_services{reason="invalid_config"}"#,
            1.0,
        ),
        (r#"registrator_refused_services{reason="port_taken"}"#, 0.0),
        (
            r#"registrator_etcd_requests_total{endpoint="http://127.0.0.1:2379"}"#,
            10.0,
        ),
        (
            r#"registrator_etcd_request_failures_total{endpoint="http://127.0.0.2:2379"}"#,
            1.0,
        ),
        ("registrator_etcd_failovers_total", 1.0),
        ("registrator_lease_grants_total", 1.0),
        ("registrator_lease_losses_total", 0.0),
        ("registrator_docker_event_stream_reconnects_total", 1.0),
        ("registrator_healthy", 1.0),
        ("registrator_interval_seconds", 10.0),
        ("registrator_lease_ttl_seconds", 30.0),
    ] {
        let got = prom.query(promql);
        assert_eq!(got.len(), 1, "{promql}: {got:?}");
        assert_eq!(got[0].1, want, "{promql}");
    }
    // A histogram Prometheus understands: a quantile from the buckets.
    let p50 = prom.query("histogram_quantile(0.5, registrator_pass_duration_seconds_bucket)");
    assert!(
        p50.len() == 1 && p50[0].1 > 0.0 && p50[0].1 <= 0.01,
        "{p50:?}"
    );
    let age = prom.query("registrator_last_success_age_seconds");
    assert!(age.len() == 1 && age[0].1 < 60.0, "{age:?}");
    assert_eq!(prom.query("process_resident_memory_bytes").len(), 1);

    // Later scrapes see changes: a lost lease is counted and turns the host unhealthy.
    m.lease_lost(0x42);
    prom.wait_for("registrator_lease_losses_total", 1.0);
    prom.wait_for("registrator_healthy", 0.0);

    // The scrape itself had no error.
    let targets = prom.api("/api/v1/targets");
    let t = &targets["activeTargets"][0];
    assert_eq!(t["health"], "up", "{t}");
    assert_eq!(t["lastError"], "", "{t}");
}

#[test]
fn healthcheck_probe_follows_the_state() {
    let m = Arc::new(Metrics::new());
    m.configure(Duration::from_secs(1), 10);
    let addr = http::spawn("127.0.0.1:0", Arc::clone(&m)).unwrap();
    // Listening on all interfaces, probed through loopback, as in a container.
    let any = http::spawn("0.0.0.0:0", Arc::clone(&m)).unwrap();
    let timeout = Duration::from_secs(2);
    m.pass(PassOutcome::Ok, Duration::from_millis(1));
    m.lease_granted(0x7);
    for a in [addr.to_string(), format!("0.0.0.0:{}", any.port())] {
        let ok = health::probe(&a, timeout).unwrap_or_else(|e| panic!("{a}: {e}"));
        assert!(ok.starts_with("ok: last successful pass"), "{ok}");
    }
    m.lease_lost(0x7);
    let err = health::probe(&addr.to_string(), timeout).unwrap_err();
    assert!(err.starts_with("HTTP 503: lease 7 is gone"), "{err}");
    assert_eq!(get(addr, "/healthz").0, 503);
    m.lease_granted(0x8);
    assert!(health::probe(&addr.to_string(), timeout).is_ok());
    // Nothing listens: the probe says where it looked.
    let closed = format!("127.0.0.1:{}", free_port());
    let err = health::probe(&closed, timeout).unwrap_err();
    assert!(err.contains(&closed), "{err}");
}
