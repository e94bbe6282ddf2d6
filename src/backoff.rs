//! Retrying a failing call: a jittered delay that doubles up to a cap, one log line per
//! failure message (not one per retry), and one line when the call works again.
//!
//! Every retry goes through one (the loop's passes, the event watcher's reconnects, the
//! keepalive thread's retries), so hosts of a fleet that lost etcd or Docker together
//! spread their retries out instead of coming back in lockstep.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The retry state of one repeated call.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    next: Duration,
    /// Level of the failure line (the recovery line is always info).
    level: log::Level,
    /// The message of the failure in progress; None while the call works.
    failing: Option<String>,
}

impl Backoff {
    /// Waits about `first`, then about twice as long after each further wait, at most
    /// `cap` (see [`Backoff::delay`]).
    pub fn new(first: Duration, cap: Duration, level: log::Level) -> Backoff {
        Backoff {
            first,
            cap,
            next: first,
            level,
            failing: None,
        }
    }

    /// The wait before the next try: a random part of the current step, between half of
    /// it and all of it; the step doubles after each wait, up to the cap.
    pub fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.cap);
        step.mul_f64(0.5 + 0.5 * unit())
    }

    /// A failure. Logs `message` unless the previous failure said the same; returns
    /// whether it logged.
    pub fn failed(&mut self, message: String) -> bool {
        let new = self.failing.as_ref() != Some(&message);
        if new {
            log::log!(self.level, "{message}");
        }
        self.failing = Some(message);
        new
    }

    /// A success after failures: logs `message` (info) once and starts over with the
    /// first delay. Returns whether it logged (whether failures had been logged).
    pub fn recovered(&mut self, message: impl std::fmt::Display) -> bool {
        let was = self.failing.is_some();
        if was {
            log::info!("{message}");
        }
        self.reset();
        was
    }

    /// Starts over quietly: the first delay, no failure in progress.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.failing = None;
    }

    /// Whether the last outcome was a failure.
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// A random number in [0, 1). std's `RandomState` holds keys drawn from the operating
/// system once per thread and changed for each new one, so every call hashes with new
/// keys, and every process (every host of a fleet) draws differently; the time is mixed
/// in for good measure. Jitter needs no more than that.
fn unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = SystemTime::now().duration_since(UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or(0));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Each delay lies between half its step and the step.
    fn within(d: Duration, step: Duration) -> bool {
        d >= step / 2 && d <= step
    }

    #[test]
    fn steps_double_up_to_the_cap_and_reset_to_the_first() {
        let mut b = Backoff::new(ms(200), ms(1000), log::Level::Warn);
        for step in [200, 400, 800, 1000, 1000, 1000] {
            assert_eq!(b.next, ms(step));
            let d = b.delay();
            assert!(within(d, ms(step)), "{d:?} for a step of {step} ms");
        }
        b.reset();
        assert!(within(b.delay(), ms(200)));
        b.delay();
        b.failed("x".into());
        b.recovered("back");
        assert!(within(b.delay(), ms(200)), "a recovery starts over too");
    }

    #[test]
    fn a_fixed_step_when_first_is_the_cap() {
        let mut b = Backoff::new(ms(500), ms(500), log::Level::Warn);
        assert!((0..10).all(|_| within(b.delay(), ms(500))));
    }

    #[test]
    fn the_jitter_spreads_over_the_whole_half_step() {
        // 1,000 hosts that failed together, each at its first retry.
        let delays: Vec<Duration> = (0..1000)
            .map(|_| Backoff::new(ms(1000), ms(5000), log::Level::Warn).delay())
            .collect();
        assert!(delays.iter().all(|d| within(*d, ms(1000))));
        let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
        assert!(*min < ms(550) && *max > ms(950), "{min:?}..{max:?}");
        // No lockstep: no 10 ms of the 500 holds more than a few percent of them.
        let mut slots = [0u32; 50];
        for d in &delays {
            slots[((d.as_millis() as usize).saturating_sub(500) / 10).min(49)] += 1;
        }
        assert!(slots.iter().all(|n| *n < 60), "{slots:?}");
    }

    #[test]
    fn a_repeated_failure_is_logged_once_a_new_one_again() {
        let mut b = Backoff::new(ms(1), ms(1), log::Level::Error);
        let logged: Vec<bool> = ["down", "down", "down", "refused", "refused", "down"]
            .iter()
            .map(|m| b.failed(m.to_string()))
            .collect();
        assert_eq!(logged, [true, false, false, true, false, true]);
        assert!(b.is_failing());
    }

    #[test]
    fn recovery_is_logged_only_after_a_failure() {
        let mut b = Backoff::new(ms(1), ms(1), log::Level::Error);
        assert!(!b.recovered("fine"), "nothing to recover from");
        b.failed("down".into());
        assert!(b.recovered("fine"));
        assert!(!b.is_failing());
        assert!(!b.recovered("fine"), "logged once");
        assert!(
            b.failed("down".into()),
            "the same failure later is news again"
        );
        b.reset();
        assert!(!b.recovered("fine"), "a quiet reset forgets the failure");
    }
}
