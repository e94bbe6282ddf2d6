//! Retrying a failing call: a delay that doubles up to a cap, one log line per failure
//! message (not one per retry), and one line when the call works again.
//!
//! The loop, the event watcher and the keepalive thread each hold one.

use std::time::Duration;

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
    /// Waits `first`, then twice as long after each further wait, at most `cap`.
    pub fn new(first: Duration, cap: Duration, level: log::Level) -> Backoff {
        Backoff {
            first,
            cap,
            next: first,
            level,
            failing: None,
        }
    }

    /// The wait before the next try; the one after it is twice as long (up to the cap).
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_and_reset_to_the_first() {
        let mut b = Backoff::new(ms(200), ms(1000), log::Level::Warn);
        let got: Vec<Duration> = (0..5).map(|_| b.delay()).collect();
        assert_eq!(got, [ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        b.reset();
        assert_eq!(b.delay(), ms(200));
        b.delay();
        b.failed("x".into());
        b.recovered("back");
        assert_eq!(b.delay(), ms(200), "a recovery starts over too");
    }

    #[test]
    fn a_fixed_delay_when_first_is_the_cap() {
        let mut b = Backoff::new(ms(500), ms(500), log::Level::Warn);
        assert_eq!([b.delay(), b.delay(), b.delay()], [ms(500); 3]);
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
