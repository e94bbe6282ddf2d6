//! Health: whether this registrator is doing its job (a recent successful pass, a live
//! lease), decided by a pure function over a snapshot; and the probe that the
//! `healthcheck` subcommand runs against `/healthz` (the scratch image has no curl).
//!
//! The loop and the keepalive thread record what happened in a [`HealthState`] (atomics
//! only: recording never blocks them); the HTTP listener takes a [`Snapshot`] and asks
//! [`decide`].

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The last successful pass may be this many intervals old before the host is unhealthy:
/// one slow pass or one failed pass that the backoff retries does not flip it.
pub const STALE_INTERVALS: u32 = 3;
/// ... and never less than this, so a very short `--interval` does not make it flap.
pub const STALE_FLOOR: Duration = Duration::from_secs(5);

/// What the loop and the keepalive thread report, readable from any thread.
/// Times are milliseconds since the state's epoch (its first use), plus one, so that
/// 0 can mean "never".
#[derive(Debug)]
pub struct HealthState {
    epoch: OnceLock<Instant>,
    interval_ms: AtomicU64,
    ttl_s: AtomicU64,
    last_success: AtomicU64,
    /// Wall clock of the last success (ms since the Unix epoch), for the metric.
    last_success_unix_ms: AtomicU64,
    lease: AtomicI64,
    lease_renewed: AtomicU64,
    lease_lost: AtomicBool,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState::new()
    }
}

impl HealthState {
    /// An empty state: interval 10 s, no lease, no pass yet.
    pub const fn new() -> Self {
        HealthState {
            epoch: OnceLock::new(),
            interval_ms: AtomicU64::new(10_000),
            ttl_s: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_success_unix_ms: AtomicU64::new(0),
            lease: AtomicI64::new(0),
            lease_renewed: AtomicU64::new(0),
            lease_lost: AtomicBool::new(false),
        }
    }

    /// Time since the epoch, which starts at the first call (main calls
    /// [`HealthState::configure`] at start, so "never succeeded" counts from there).
    fn now(&self) -> Duration {
        self.epoch.get_or_init(Instant::now).elapsed()
    }

    fn stamp(&self) -> u64 {
        self.now().as_millis() as u64 + 1
    }

    /// The loop's interval and the lease TTL (0: no lease); starts the clock.
    pub fn configure(&self, interval: Duration, ttl_secs: u64) {
        self.interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
        self.ttl_s.store(ttl_secs, Ordering::Relaxed);
        self.now();
    }

    /// A pass completed (all ops applied or retried later): the loop is doing its job.
    pub fn pass_succeeded(&self) {
        self.last_success.store(self.stamp(), Ordering::Relaxed);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_success_unix_ms.store(unix, Ordering::Relaxed);
    }

    /// A lease was granted, or a keepalive of it succeeded.
    pub fn lease_alive(&self, id: i64) {
        self.lease.store(id, Ordering::Relaxed);
        self.lease_renewed.store(self.stamp(), Ordering::Relaxed);
        self.lease_lost.store(false, Ordering::Relaxed);
    }

    /// etcd no longer knows the lease: this host's keys are gone until the next pass.
    pub fn lease_lost(&self, id: i64) {
        if self.lease.load(Ordering::Relaxed) == id {
            self.lease_lost.store(true, Ordering::Relaxed);
        }
    }

    /// The lease was revoked on purpose (`--deregister-on-exit`): no lease any more.
    pub fn lease_released(&self) {
        self.lease.store(0, Ordering::Relaxed);
        self.lease_lost.store(false, Ordering::Relaxed);
    }

    /// Seconds since the Unix epoch of the last successful pass (None: none yet).
    pub fn last_success_unix(&self) -> Option<f64> {
        match self.last_success_unix_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    /// What [`decide`] needs, read now.
    pub fn snapshot(&self) -> Snapshot {
        let at = |v: u64| (v > 0).then(|| Duration::from_millis(v - 1));
        let lease = self.lease.load(Ordering::Relaxed);
        Snapshot {
            now: self.now(),
            interval: Duration::from_millis(self.interval_ms.load(Ordering::Relaxed)),
            ttl: Duration::from_secs(self.ttl_s.load(Ordering::Relaxed)),
            last_success: at(self.last_success.load(Ordering::Relaxed)),
            lease: (lease != 0).then(|| Lease {
                id: lease,
                renewed: at(self.lease_renewed.load(Ordering::Relaxed)).unwrap_or_default(),
                lost: self.lease_lost.load(Ordering::Relaxed),
            }),
        }
    }
}

/// The lease as the health check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// When it was last known alive (granted or kept alive).
    pub renewed: Duration,
    /// The keepalive found it gone and no new lease has been granted yet.
    pub lost: bool,
}

/// Everything the decision needs; times since the state's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub now: Duration,
    pub interval: Duration,
    /// Zero: the keys carry no lease.
    pub ttl: Duration,
    pub last_success: Option<Duration>,
    pub lease: Option<Lease>,
}

/// How old the last successful pass may be.
pub fn stale_after(interval: Duration) -> Duration {
    (interval * STALE_INTERVALS).max(STALE_FLOOR)
}

/// The answer of `/healthz`: healthy or not, with one line that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub reason: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Seconds with one decimal, as people read them in a one-line reason.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Healthy while the last successful pass is at most [`stale_after`] old (counted from
/// the start until the first one) and the lease, when there is one, is alive: renewed
/// within its TTL and not reported lost.
pub fn decide(s: &Snapshot) -> Verdict {
    let unhealthy = |reason: String| Verdict {
        healthy: false,
        reason,
    };
    let limit = stale_after(s.interval);
    let age = s.now.saturating_sub(s.last_success.unwrap_or_default());
    if age > limit {
        return unhealthy(match s.last_success {
            None => format!(
                "no successful pass since the start {} ago (limit {})",
                secs(age),
                secs(limit)
            ),
            Some(_) => format!(
                "last successful pass {} ago (limit {})",
                secs(age),
                secs(limit)
            ),
        });
    }
    if !s.ttl.is_zero() {
        if let Some(l) = s.lease {
            if l.lost {
                return unhealthy(format!(
                    "lease {:x} is gone (expired or revoked): this host's services are not in etcd until the next pass",
                    l.id
                ));
            }
            let since = s.now.saturating_sub(l.renewed);
            if since > s.ttl {
                return unhealthy(format!(
                    "lease {:x} not renewed for {} (TTL {}): etcd has expired this host's services",
                    l.id,
                    secs(since),
                    secs(s.ttl)
                ));
            }
        }
    }
    let pass = match s.last_success {
        Some(_) => format!("last successful pass {} ago", secs(age)),
        None => "starting".to_string(),
    };
    let lease = match s.lease {
        Some(l) if !s.ttl.is_zero() => format!(
            ", lease {:x} renewed {} ago",
            l.id,
            secs(s.now.saturating_sub(l.renewed))
        ),
        _ => String::new(),
    };
    Verdict {
        healthy: true,
        reason: format!("ok: {pass}{lease}"),
    }
}

/// Where the probe connects for a listen address: an unspecified address (`0.0.0.0`,
/// `::`) means this host, so it asks loopback.
fn probe_target(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The largest answer the probe reads: `/healthz` answers one line.
const PROBE_MAX: u64 = 4096;

/// `GET /healthz` at `addr` (the `--metrics-addr` the daemon listens on), within
/// `timeout` for each of connect, write and read. Ok(the line) on 200, Err(why) on
/// anything else, in words for `docker inspect`'s health log.
pub fn probe(addr: &str, timeout: Duration) -> Result<String, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .map(probe_target)
        .collect();
    let mut last = format!("{addr} resolves to no address");
    for target in addrs {
        match probe_one(target, timeout) {
            Ok(r) => return r,
            Err(e) => last = format!("{target}: {e}"),
        }
    }
    Err(last)
}

/// One attempt: Err(io) when the address did not answer (another may), Ok(verdict) when
/// the listener did.
fn probe_one(target: SocketAddr, timeout: Duration) -> std::io::Result<Result<String, String>> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(PROBE_MAX).read_to_end(&mut raw)?;
    Ok(parse_answer(&String::from_utf8_lossy(&raw)))
}

/// The status and body of the listener's answer.
fn parse_answer(text: &str) -> Result<String, String> {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head.split(' ').nth(1).unwrap_or("");
    let body = body.trim();
    match status {
        "200" => Ok(body.to_string()),
        "" => Err("no HTTP answer (is this the registrator's --metrics-addr?)".into()),
        s if body.is_empty() => Err(format!("HTTP {s}")),
        s => Err(format!("HTTP {s}: {body}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    fn snap(now: f64, last: Option<f64>, ttl: f64, lease: Option<(f64, bool)>) -> Snapshot {
        Snapshot {
            now: S(now),
            interval: S(10.0),
            ttl: S(ttl),
            last_success: last.map(S),
            lease: lease.map(|(renewed, lost)| Lease {
                id: 0xab,
                renewed: S(renewed),
                lost,
            }),
        }
    }

    #[test]
    fn decisions() {
        // (case, snapshot, healthy, words in the reason)
        let cases = [
            (
                "starting",
                snap(1.0, None, 30.0, None),
                true,
                "ok: starting",
            ),
            (
                "never succeeded, past the limit",
                snap(31.0, None, 30.0, None),
                false,
                "no successful pass since the start 31.0s ago (limit 30.0s)",
            ),
            (
                "recent pass, live lease",
                snap(100.0, Some(95.0), 30.0, Some((90.0, false))),
                true,
                "ok: last successful pass 5.0s ago, lease ab renewed 10.0s ago",
            ),
            (
                "pass exactly at the limit",
                snap(130.0, Some(100.0), 30.0, Some((125.0, false))),
                true,
                "ok",
            ),
            (
                "stale pass",
                snap(131.0, Some(100.0), 30.0, Some((125.0, false))),
                false,
                "last successful pass 31.0s ago (limit 30.0s)",
            ),
            (
                "lease lost",
                snap(100.0, Some(99.0), 30.0, Some((90.0, true))),
                false,
                "lease ab is gone",
            ),
            (
                "lease not renewed within its TTL",
                snap(100.0, Some(99.0), 30.0, Some((69.0, false))),
                false,
                "lease ab not renewed for 31.0s (TTL 30.0s)",
            ),
            (
                "no lease configured: the lease is not looked at",
                snap(100.0, Some(99.0), 0.0, Some((1.0, true))),
                true,
                "ok: last successful pass 1.0s ago",
            ),
        ];
        for (name, s, healthy, words) in cases {
            let v = decide(&s);
            assert_eq!(v.healthy, healthy, "{name}: {v}");
            assert!(v.reason.contains(words), "{name}: {v:?} lacks {words:?}");
            assert!(!v.reason.contains('\n'), "{name}: one line");
        }
    }

    #[test]
    fn short_intervals_have_a_floor() {
        assert_eq!(stale_after(S(0.05)), STALE_FLOOR);
        assert_eq!(stale_after(S(10.0)), S(30.0));
    }

    #[test]
    fn state_records_and_snapshots() {
        let h = HealthState::new();
        h.configure(S(1.0), 30);
        let s = h.snapshot();
        assert_eq!(s.last_success, None);
        assert_eq!(s.lease, None);
        assert!(decide(&s).healthy, "starting");
        h.pass_succeeded();
        h.lease_alive(7);
        let s = h.snapshot();
        assert!(s.last_success.is_some());
        assert_eq!(s.lease.map(|l| (l.id, l.lost)), Some((7, false)));
        assert!(h.last_success_unix().is_some_and(|t| t > 1.7e9));
        h.lease_lost(8); // not ours: ignored
        assert!(decide(&h.snapshot()).healthy);
        h.lease_lost(7);
        assert!(!decide(&h.snapshot()).healthy);
        h.lease_alive(9);
        assert!(decide(&h.snapshot()).healthy);
        h.lease_released();
        assert_eq!(h.snapshot().lease, None);
    }

    #[test]
    fn answers_parsed() {
        let cases = [
            ("HTTP/1.1 200 OK\r\nA: b\r\n\r\nok: fine\n", Ok("ok: fine")),
            (
                "HTTP/1.1 503 Service Unavailable\r\n\r\nlease ab is gone\n",
                Err("HTTP 503: lease ab is gone"),
            ),
            ("HTTP/1.1 404 Not Found\r\n\r\n", Err("HTTP 404")),
            ("", Err("no HTTP answer")),
        ];
        for (raw, want) in cases {
            let got = parse_answer(raw);
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w),
                (Err(g), Err(w)) => assert!(g.starts_with(w), "{g:?} vs {w:?}"),
                (g, w) => panic!("{raw:?}: {g:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn unspecified_listen_address_probes_loopback() {
        let t = |s: &str| probe_target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:9"), "127.0.0.1:9");
        assert_eq!(t("[::]:9"), "[::1]:9");
        assert_eq!(t("10.0.0.5:9"), "10.0.0.5:9");
    }

    #[test]
    fn probe_of_a_closed_port_says_so() {
        // Bind then drop: the port is free and nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = probe(&format!("127.0.0.1:{port}"), S(1.0)).unwrap_err();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    }
}
