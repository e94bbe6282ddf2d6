//! The text exposition format (Prometheus 0.0.4): every series of [`Metrics`], with
//! its help and type, and the escaping and number spelling the format requires.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{
    refusal_label, Change, Counter, EndpointSlot, Metrics, PassOutcome, Refusal, COMMIT,
    PASS_BUCKETS, VERSION,
};
use crate::health;

/// Writes every series of `m` (the `process_*` ones come from `process.rs`).
pub(super) fn series(m: &Metrics, o: &mut Out) {
    build(o);
    passes(m, o);
    health(m, o);
    writes(m, o);
    etcd(m, o);
    leases_and_events(m, o);
}

/// The build.
fn build(o: &mut Out) {
    o.head(
        "registrator_build_info",
        "gauge",
        "Version and git commit of the registrator binary; always 1.",
    );
    o.sample(
        "registrator_build_info",
        &[
            ("version", VERSION),
            ("commit", COMMIT.unwrap_or("unknown")),
        ],
        1.0,
    );
}

/// Passes: their outcomes and durations.
fn passes(m: &Metrics, o: &mut Out) {
    o.head(
        "registrator_passes_total",
        "counter",
        "Full sync passes, by outcome (conflict: some writes found etcd changed and are retried).",
    );
    for outcome in PassOutcome::ALL {
        o.sample(
            "registrator_passes_total",
            &[("outcome", outcome.label())],
            m.passes[outcome as usize].get() as f64,
        );
    }

    o.head(
        "registrator_pass_duration_seconds",
        "histogram",
        "Duration of full sync passes.",
    );
    let mut cumulative = 0;
    for (bound, count) in PASS_BUCKETS.iter().zip(&m.pass_buckets) {
        cumulative += count.get();
        o.sample(
            "registrator_pass_duration_seconds_bucket",
            &[("le", &bound.to_string())],
            cumulative as f64,
        );
    }
    let count: u64 = m.passes.iter().map(Counter::get).sum();
    o.sample(
        "registrator_pass_duration_seconds_bucket",
        &[("le", "+Inf")],
        count as f64,
    );
    o.sample(
        "registrator_pass_duration_seconds_sum",
        &[],
        m.pass_nanos.get() as f64 / 1e9,
    );
    o.sample("registrator_pass_duration_seconds_count", &[], count as f64);
}

/// The health verdict and what it rests on.
fn health(m: &Metrics, o: &mut Out) {
    let h = m.health.snapshot();
    o.head(
        "registrator_last_success_age_seconds",
        "gauge",
        "Seconds since the last successful pass (since the start while there was none).",
    );
    let age = h.now.saturating_sub(h.last_success.unwrap_or_default());
    o.sample(
        "registrator_last_success_age_seconds",
        &[],
        age.as_secs_f64(),
    );
    if let Some(t) = m.health.last_success_unix() {
        o.head(
            "registrator_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last successful pass.",
        );
        o.sample("registrator_last_success_timestamp_seconds", &[], t);
    }
    o.head(
        "registrator_healthy",
        "gauge",
        "1 when /healthz answers 200, else 0.",
    );
    let healthy = health::decide(&h).healthy;
    o.sample("registrator_healthy", &[], if healthy { 1.0 } else { 0.0 });
    o.head(
        "registrator_interval_seconds",
        "gauge",
        "The loop's full resync interval (--interval).",
    );
    o.sample(
        "registrator_interval_seconds",
        &[],
        h.interval.as_secs_f64(),
    );
    o.head(
        "registrator_lease_ttl_seconds",
        "gauge",
        "The lease TTL of this host's keys (--ttl; 0: no lease).",
    );
    o.sample("registrator_lease_ttl_seconds", &[], h.ttl.as_secs_f64());
}

/// Services, writes and refusals.
fn writes(m: &Metrics, o: &mut Out) {
    o.head(
        "registrator_services",
        "gauge",
        "Services this host has registered in etcd.",
    );
    o.sample(
        "registrator_services",
        &[],
        m.services.load(Ordering::Relaxed) as f64,
    );
    for (name, help, kind) in [
        (
            "registrator_registrations_total",
            "Services registered (written whole).",
            Change::Register,
        ),
        (
            "registrator_updates_total",
            "Registered services whose keys were changed.",
            Change::Update,
        ),
        (
            "registrator_deregistrations_total",
            "Services deregistered (their directory deleted).",
            Change::Deregister,
        ),
    ] {
        o.head(name, "counter", help);
        o.sample(name, &[], m.writes[kind as usize].get() as f64);
    }
    o.counter(
        "registrator_write_conflicts_total",
        "Writes whose guard failed (etcd changed under them); retried on the next pass.",
        m.write_conflicts.get(),
    );
    o.head(
        "registrator_refused_services",
        "gauge",
        "Services refused in the last pass, by reason (the log names the containers).",
    );
    for r in Refusal::ALL {
        o.sample(
            "registrator_refused_services",
            &[("reason", refusal_label(r))],
            m.refused[r as usize].load(Ordering::Relaxed) as f64,
        );
    }
}

/// Requests per etcd endpoint and failovers.
fn etcd(m: &Metrics, o: &mut Out) {
    let slots: Vec<&EndpointSlot> = m
        .endpoints
        .iter()
        .filter(|s| s.name.get().is_some())
        .chain((m.other_endpoint.requests.load(Ordering::Relaxed) > 0).then_some(&m.other_endpoint))
        .collect();
    o.head(
        "registrator_etcd_requests_total",
        "counter",
        "Requests sent to each etcd endpoint.",
    );
    for s in &slots {
        o.sample(
            "registrator_etcd_requests_total",
            &[("endpoint", s.label())],
            s.requests.load(Ordering::Relaxed) as f64,
        );
    }
    o.head(
        "registrator_etcd_request_failures_total",
        "counter",
        "Requests to each etcd endpoint that got no answer or were refused.",
    );
    for s in &slots {
        o.sample(
            "registrator_etcd_request_failures_total",
            &[("endpoint", s.label())],
            s.failures.load(Ordering::Relaxed) as f64,
        );
    }
    o.counter(
        "registrator_etcd_failovers_total",
        "Times the etcd client moved on to another endpoint.",
        m.failovers.get(),
    );
}

/// The lease and Docker's event stream.
fn leases_and_events(m: &Metrics, o: &mut Out) {
    o.counter(
        "registrator_lease_grants_total",
        "Leases granted.",
        m.lease_grants.get(),
    );
    o.counter(
        "registrator_lease_losses_total",
        "Leases etcd no longer knew (expired or revoked) while in use.",
        m.lease_losses.get(),
    );
    o.counter(
        "registrator_lease_keepalive_failures_total",
        "Lease keepalive requests that failed.",
        m.keepalive_failures.get(),
    );
    o.counter(
        "registrator_docker_events_total",
        "Docker container events that woke the loop.",
        m.docker_events.get(),
    );
    o.counter(
        "registrator_docker_event_stream_reconnects_total",
        "Times the Docker event stream was connected again after it ended or failed.",
        m.event_reconnects.get(),
    );
}

/// The exposition being written.
pub(super) struct Out(pub(super) String);

impl Out {
    pub(super) fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    pub(super) fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "counter", help);
        self.sample(name, &[], value as f64);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
pub(super) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, Go's spellings of the special values.
pub(super) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}
