//! The registrator's metrics: atomic counters, gauges and one histogram that the loop,
//! the etcd client and the watcher threads bump, rendered on demand in Prometheus'
//! text exposition format (version 0.0.4).
//!
//! One [`Metrics`] is made at start and handed (an `Arc`) to each part that records:
//! no global, so a part's dependencies show in its signature, and tests read the
//! figures of the reconciler they drive. Labels are this module's own enums; it knows
//! nothing of the reconciler or the plan, which map their outcomes onto them.
//!
//! Recording is a relaxed atomic add (or, the first time an etcd endpoint is seen, one
//! small allocation): it never blocks and never takes a lock, so it costs nothing
//! measurable whether or not `--metrics-addr` serves it. Every label has a bounded set
//! of values: outcomes and reasons are enums, endpoints come from the configuration
//! (at most [`MAX_ENDPOINTS`], then `other`), container names never become labels.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::health::{self, HealthState};
use crate::service::Refusal;

mod process;
mod text;

use text::Out;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: Option<&str> = option_env!("REGISTRATOR_GIT_COMMIT");

/// How a pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOutcome {
    /// Every planned op was applied.
    Ok,
    /// It ran, but some ops found etcd changed under them (retried next pass).
    Conflict,
    /// Docker could not be read; etcd was not touched.
    DockerError,
    /// etcd failed the pass.
    EtcdError,
    /// Another live registrator holds this host's identity: the process exits.
    Twin,
}

impl PassOutcome {
    const ALL: [PassOutcome; 5] = [
        PassOutcome::Ok,
        PassOutcome::Conflict,
        PassOutcome::DockerError,
        PassOutcome::EtcdError,
        PassOutcome::Twin,
    ];

    fn label(self) -> &'static str {
        match self {
            PassOutcome::Ok => "ok",
            PassOutcome::Conflict => "conflict",
            PassOutcome::DockerError => "docker_error",
            PassOutcome::EtcdError => "etcd_error",
            PassOutcome::Twin => "twin",
        }
    }

    /// Whether the loop did its job: both ends answered (for the health check).
    fn succeeded(self) -> bool {
        matches!(self, PassOutcome::Ok | PassOutcome::Conflict)
    }
}

/// One kind of change written to etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Register,
    Update,
    Deregister,
}

/// The label of a refusal's kind in `registrator_refused_services`.
fn refusal_label(r: Refusal) -> &'static str {
    match r {
        Refusal::InvalidConfig => "invalid_config",
        Refusal::Duplicate => "duplicate",
        Refusal::OwnedElsewhere => "owned_elsewhere",
        Refusal::PortTaken => "port_taken",
        Refusal::NoAddress => "no_address",
        Refusal::TooLarge => "too_large",
    }
}

/// Upper bounds (seconds) of the pass duration buckets: a quiet pass takes a few ms, a
/// cold one with thousands of containers seconds.
const PASS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The most etcd endpoints with a label of their own; more share `endpoint="other"`.
pub const MAX_ENDPOINTS: usize = 8;

/// Requests and failures of one etcd endpoint.
#[derive(Debug)]
struct EndpointSlot {
    name: OnceLock<String>,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl EndpointSlot {
    fn label(&self) -> &str {
        self.name.get().map_or("other", String::as_str)
    }

    const fn new() -> Self {
        EndpointSlot {
            name: OnceLock::new(),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

/// A monotonic counter.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every metric of the process: one per process, shared by the parts that record.
#[derive(Debug)]
pub struct Metrics {
    passes: [Counter; PassOutcome::ALL.len()],
    pass_buckets: [Counter; PASS_BUCKETS.len()],
    /// Sum of pass durations in nanoseconds.
    pass_nanos: Counter,
    services: AtomicU64,
    writes: [Counter; 3],
    write_conflicts: Counter,
    refused: [AtomicU64; Refusal::ALL.len()],
    endpoints: [EndpointSlot; MAX_ENDPOINTS],
    other_endpoint: EndpointSlot,
    failovers: Counter,
    lease_grants: Counter,
    lease_losses: Counter,
    keepalive_failures: Counter,
    docker_events: Counter,
    event_reconnects: Counter,
    /// The last pass, the lease and the configuration, for `/healthz` and the ages.
    pub health: HealthState,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All zero, nothing configured.
    pub const fn new() -> Self {
        Metrics {
            passes: [const { Counter::new() }; PassOutcome::ALL.len()],
            pass_buckets: [const { Counter::new() }; PASS_BUCKETS.len()],
            pass_nanos: Counter::new(),
            services: AtomicU64::new(0),
            writes: [const { Counter::new() }; 3],
            write_conflicts: Counter::new(),
            refused: [const { AtomicU64::new(0) }; Refusal::ALL.len()],
            endpoints: [const { EndpointSlot::new() }; MAX_ENDPOINTS],
            other_endpoint: EndpointSlot::new(),
            failovers: Counter::new(),
            lease_grants: Counter::new(),
            lease_losses: Counter::new(),
            keepalive_failures: Counter::new(),
            docker_events: Counter::new(),
            event_reconnects: Counter::new(),
            health: HealthState::new(),
        }
    }

    /// At start: the loop's interval and the lease TTL (0: none), for the health
    /// check and as gauges.
    pub fn configure(&self, interval: Duration, ttl_secs: u64) {
        self.health.configure(interval, ttl_secs);
    }

    /// A full pass ended after `took`.
    pub fn pass(&self, outcome: PassOutcome, took: Duration) {
        self.passes[outcome as usize].inc();
        let secs = took.as_secs_f64();
        if let Some(i) = PASS_BUCKETS.iter().position(|&b| secs <= b) {
            self.pass_buckets[i].inc();
        }
        self.pass_nanos
            .0
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        if outcome.succeeded() {
            self.health.pass_succeeded();
        }
    }

    /// The services this host has registered now (after a pass).
    pub fn set_services(&self, n: usize) {
        self.services.store(n as u64, Ordering::Relaxed);
    }

    /// One op applied to etcd.
    pub fn applied(&self, kind: Change) {
        self.writes[kind as usize].inc();
    }

    /// One op whose guard failed (another writer, or a lost answer).
    pub fn write_conflict(&self) {
        self.write_conflicts.inc();
    }

    /// The refusals in force now, by kind, replacing the last.
    pub fn set_refused(&self, kinds: impl IntoIterator<Item = Refusal>) {
        let mut counts = [0u64; Refusal::ALL.len()];
        for k in kinds {
            counts[k as usize] += 1;
        }
        for (cell, n) in self.refused.iter().zip(counts) {
            cell.store(n, Ordering::Relaxed);
        }
    }

    fn endpoint_slot(&self, endpoint: &str) -> &EndpointSlot {
        for slot in &self.endpoints {
            match slot.name.get() {
                Some(name) if name == endpoint => return slot,
                Some(_) => continue,
                None => {
                    // Another thread may claim this slot first, for this endpoint or
                    // another one: look again at what it holds.
                    let _ = slot.name.set(endpoint.to_string());
                    if slot.name.get().is_some_and(|n| n == endpoint) {
                        return slot;
                    }
                }
            }
        }
        &self.other_endpoint
    }

    /// One request to an etcd endpoint (`http://host:port`): `ok` when it answered and
    /// did not refuse.
    pub fn etcd_request(&self, endpoint: &str, ok: bool) {
        let slot = self.endpoint_slot(endpoint);
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The etcd client moved to another endpoint.
    pub fn etcd_failover(&self) {
        self.failovers.inc();
    }

    /// A new lease was granted.
    pub fn lease_granted(&self, id: i64) {
        self.lease_grants.inc();
        self.health.lease_alive(id);
    }

    /// A keepalive of the lease succeeded.
    pub fn lease_renewed(&self, id: i64) {
        self.health.lease_alive(id);
    }

    /// A keepalive request failed (etcd did not answer); the lease may still live.
    pub fn keepalive_failed(&self) {
        self.keepalive_failures.inc();
    }

    /// etcd no longer knows the lease.
    pub fn lease_lost(&self, id: i64) {
        self.lease_losses.inc();
        self.health.lease_lost(id);
    }

    /// The lease was revoked on exit.
    pub fn lease_revoked(&self) {
        self.health.lease_released();
    }

    /// A relevant Docker event arrived.
    pub fn docker_event(&self) {
        self.docker_events.inc();
    }

    /// The Docker event stream was connected again after it ended or failed.
    pub fn event_stream_reconnect(&self) {
        self.event_reconnects.inc();
    }

    /// The health check's verdict now.
    pub fn verdict(&self) -> health::Verdict {
        health::decide(&self.health.snapshot())
    }

    /// Every metric, in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = Out(String::with_capacity(8 * 1024));
        text::series(self, &mut out);
        process::render(&mut out);
        out.0
    }
}

#[cfg(test)]
mod tests {
    use super::text::number;
    use super::*;

    /// The value of one sample line (`name{labels} value`) in an exposition.
    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    #[test]
    fn passes_fill_counters_histogram_and_health() {
        let m = Metrics::new();
        m.configure(Duration::from_secs(10), 30);
        m.pass(PassOutcome::Ok, Duration::from_millis(3));
        m.pass(PassOutcome::Ok, Duration::from_millis(40));
        m.pass(PassOutcome::EtcdError, Duration::from_secs(60));
        let t = m.render();
        assert_eq!(
            value(&t, r#"registrator_passes_total{outcome="ok"}"#).as_deref(),
            Some("2")
        );
        assert_eq!(
            value(&t, r#"registrator_passes_total{outcome="etcd_error"}"#).as_deref(),
            Some("1")
        );
        let bucket = |le: &str| {
            value(
                &t,
                &format!(r#"registrator_pass_duration_seconds_bucket{{le="{le}"}}"#),
            )
        };
        assert_eq!(bucket("0.0025").as_deref(), Some("0"));
        assert_eq!(bucket("0.005").as_deref(), Some("1"));
        assert_eq!(bucket("0.05").as_deref(), Some("2"));
        assert_eq!(
            bucket("30").as_deref(),
            Some("2"),
            "60 s is past the last bound"
        );
        assert_eq!(bucket("+Inf").as_deref(), Some("3"));
        assert_eq!(
            value(&t, "registrator_pass_duration_seconds_count").as_deref(),
            Some("3")
        );
        assert_eq!(
            value(&t, "registrator_pass_duration_seconds_sum").as_deref(),
            Some("60.043")
        );
        assert!(value(&t, "registrator_last_success_timestamp_seconds").is_some());
        assert_eq!(value(&t, "registrator_healthy").as_deref(), Some("1"));
        assert_eq!(
            value(&t, "registrator_interval_seconds").as_deref(),
            Some("10")
        );
        assert_eq!(
            value(&t, "registrator_lease_ttl_seconds").as_deref(),
            Some("30")
        );
    }

    #[test]
    fn no_success_yet_has_no_timestamp() {
        let m = Metrics::new();
        m.pass(PassOutcome::DockerError, Duration::from_millis(1));
        let t = m.render();
        assert!(!t.contains("registrator_last_success_timestamp_seconds"));
        assert!(value(&t, "registrator_last_success_age_seconds").is_some());
    }

    #[test]
    fn endpoints_are_bounded() {
        let m = Metrics::new();
        m.etcd_request("http://a:2379", true);
        m.etcd_request("http://a:2379", false);
        m.etcd_request("http://b:2379", true);
        for i in 0..20 {
            m.etcd_request(&format!("http://n{i}:2379"), true);
        }
        let t = m.render();
        assert_eq!(
            value(
                &t,
                r#"registrator_etcd_requests_total{endpoint="http://a:2379"}"#
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            value(
                &t,
                r#"registrator_etcd_request_failures_total{endpoint="http://a:2379"}"#
            )
            .as_deref(),
            Some("1")
        );
        let series = t
            .lines()
            .filter(|l| l.starts_with("registrator_etcd_requests_total{"))
            .count();
        assert_eq!(series, MAX_ENDPOINTS + 1, "{t}");
        // 2 (a) + 1 (b) + 20 others, 6 of which got slots of their own.
        assert_eq!(
            value(&t, r#"registrator_etcd_requests_total{endpoint="other"}"#).as_deref(),
            Some("14")
        );
    }

    #[test]
    fn endpoint_slots_from_many_threads() {
        let m = Metrics::new();
        std::thread::scope(|s| {
            for t in 0..4 {
                let m = &m;
                s.spawn(move || {
                    for i in 0..100 {
                        m.etcd_request(&format!("http://e{}:2379", (i + t) % 3), true);
                    }
                });
            }
        });
        let t = m.render();
        let total: u64 = (0..3)
            .map(|e| {
                value(
                    &t,
                    &format!(r#"registrator_etcd_requests_total{{endpoint="http://e{e}:2379"}}"#),
                )
                .unwrap()
                .parse::<u64>()
                .unwrap()
            })
            .sum();
        assert_eq!(total, 400);
        assert!(!t.contains(r#"endpoint="other""#), "{t}");
    }

    #[test]
    fn refused_gauge_is_replaced_each_pass() {
        let m = Metrics::new();
        let bad = Refusal::InvalidConfig;
        m.set_refused([Refusal::PortTaken, bad, bad]);
        let t = m.render();
        let r = |reason: &str| {
            value(
                &t,
                &format!(r#"registrator_refused_services{{reason="{reason}"}}"#),
            )
        };
        assert_eq!(r("port_taken").as_deref(), Some("1"));
        assert_eq!(r("invalid_config").as_deref(), Some("2"));
        assert_eq!(r("no_address").as_deref(), Some("0"));
        m.set_refused([]);
        assert_eq!(
            value(
                &m.render(),
                r#"registrator_refused_services{reason="invalid_config"}"#
            )
            .as_deref(),
            Some("0")
        );
    }

    #[test]
    fn lease_and_events_and_writes() {
        let m = Metrics::new();
        m.configure(Duration::from_secs(1), 30);
        m.lease_granted(5);
        m.lease_lost(5);
        assert!(!m.verdict().healthy);
        m.lease_granted(6);
        assert!(m.verdict().healthy);
        m.applied(Change::Register);
        m.applied(Change::Register);
        m.applied(Change::Deregister);
        m.write_conflict();
        m.set_services(7);
        m.event_stream_reconnect();
        m.docker_event();
        m.etcd_failover();
        m.keepalive_failed();
        let t = m.render();
        for (series, want) in [
            ("registrator_lease_grants_total", "2"),
            ("registrator_lease_losses_total", "1"),
            ("registrator_registrations_total", "2"),
            ("registrator_updates_total", "0"),
            ("registrator_deregistrations_total", "1"),
            ("registrator_write_conflicts_total", "1"),
            ("registrator_services", "7"),
            ("registrator_docker_event_stream_reconnects_total", "1"),
            ("registrator_docker_events_total", "1"),
            ("registrator_etcd_failovers_total", "1"),
            ("registrator_lease_keepalive_failures_total", "1"),
        ] {
            assert_eq!(value(&t, series).as_deref(), Some(want), "{series}");
        }
    }

    #[test]
    fn exposition_is_well_formed() {
        let m = Metrics::new();
        m.etcd_request("http://a\"b\\c:1", true);
        let t = m.render();
        assert!(t.contains(r#"endpoint="http://a\"b\\c:1""#), "{t}");
        assert!(t.ends_with('\n'));
        let mut typed = std::collections::BTreeSet::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "{name} typed twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE before it");
            assert!(
                name.starts_with("registrator_") || name.starts_with("process_"),
                "{name}"
            );
            let v = line.rsplit(' ').next().unwrap();
            assert!(v.parse::<f64>().is_ok() || v == "+Inf", "{line}: value {v}");
        }
        assert!(value(&t, "process_resident_memory_bytes").is_some(), "{t}");
        assert!(value(&t, "process_cpu_seconds_total").is_some());
        assert!(t.contains(&format!(
            r#"registrator_build_info{{version="{VERSION}",commit=""#
        )));
    }

    #[test]
    fn numbers_as_the_format_spells_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
