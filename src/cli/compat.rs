//! gliderlabs/registrator's options (v7), as its users type them: each becomes what it
//! means here, is accepted with one warning saying what happens instead, or is refused
//! with the reason. (`-ip`, `-internal`, `-explicit` and `-ttl` are ours too; the
//! README's "Coming from gliderlabs/registrator" maps every one.)

use std::time::Duration;

use super::args::{Args, Given};
use super::error::UsageError;

/// `--retry-attempts` / `--retry-interval`: how often to try etcd at start before giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Retries after the first attempt; None: until it answers (`-1`).
    pub attempts: Option<u64>,
    /// The wait between two attempts.
    pub interval: Duration,
}

/// What gliderlabs's options ask for, in our terms.
#[derive(Debug, Default, PartialEq)]
pub struct Compat {
    /// `-resync SECS`: the full pass's period, as `--interval`.
    pub resync: Option<Duration>,
    /// Set when `-retry-attempts` or `-retry-interval` is given.
    pub retry: Option<Retry>,
    /// One line for each option accepted but not followed, for the log.
    pub warnings: Vec<String>,
}

fn bad(g: &Given, why: &str) -> UsageError {
    UsageError(format!("{g} {why}"))
}

/// Reads gliderlabs's options that are not ours (from the command line or the
/// environment, as every option).
pub fn read(a: &mut Args) -> Result<Compat, UsageError> {
    let mut c = Compat::default();
    if let Some(g) = a.value("--resync")? {
        match g.value.parse::<f64>() {
            Ok(0.0) => c.warnings.push(format!(
                "{g}: never resyncing is not followed: the full pass runs every --interval \
                 (it removes what died while Docker's events were missed)"
            )),
            Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => {
                c.resync = Some(Duration::from_secs_f64(v))
            }
            _ => return Err(bad(&g, "is not a number of seconds in [0, 86400]")),
        }
    }
    // Always on, for this host's own services (and never for another host's).
    a.flag("--cleanup")?;
    if let Some(g) = a.value("--deregister")? {
        match g.value.as_str() {
            "always" => {}
            "on-success" => {
                return Err(bad(
                    &g,
                    "is not supported: a stopped container's services are removed whatever \
                     its exit code (etcd holds what runs); leave it out",
                ))
            }
            _ => return Err(bad(&g, "must be always or on-success")),
        }
    }
    if let Some(g) = a.value("--tags")? {
        c.warnings.push(format!(
            "{g} is ignored: services in etcd have no tags (a consumer can key on the \
             service name or SERVICE_DOMAINS instead)"
        ));
    }
    if let Some(g) = a.value("--ttl-refresh")? {
        g.value
            .parse::<u64>()
            .map_err(|_| bad(&g, "is not a whole number of seconds"))?;
        c.warnings.push(format!(
            "{g} is ignored: the keys live on a lease that is renewed every TTL/3 by itself \
             (set the TTL with --ttl)"
        ));
    }
    let attempts = match a.value("--retry-attempts")? {
        None => None,
        Some(g) => match g.value.parse::<i64>() {
            Ok(-1) => Some(None),
            Ok(n @ 0..) => Some(Some(n as u64)),
            _ => return Err(bad(&g, "is not a whole number, or -1 (no limit)")),
        },
    };
    let interval = match a.value("--retry-interval")? {
        None => None,
        Some(g) => match g.value.parse::<u64>() {
            Ok(ms @ 1..=86_400_000) => Some(Duration::from_millis(ms)),
            _ => return Err(bad(&g, "is not a number of milliseconds in 1-86400000")),
        },
    };
    if attempts.is_some() || interval.is_some() {
        c.retry = Some(Retry {
            attempts: attempts.flatten(),
            interval: interval.unwrap_or(Duration::from_secs(2)),
        });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn read_args(list: &[&str]) -> Result<Compat, String> {
        let env = |_: &str| None;
        let mut a = Args::new(list.iter().map(OsString::from).collect(), &env).unwrap();
        let c = read(&mut a).map_err(|e| e.0)?;
        assert!(
            a.finish("registry", "--help").unwrap().is_empty(),
            "{list:?}: all read"
        );
        Ok(c)
    }

    #[test]
    fn each_option() {
        let c = read_args(&["-resync", "30", "-cleanup", "-deregister", "always"]).unwrap();
        assert_eq!(c.resync, Some(Duration::from_secs(30)));
        assert_eq!((c.retry, c.warnings.len()), (None, 0));

        let c = read_args(&["-retry-attempts", "5", "-retry-interval", "1000"]).unwrap();
        let want = Retry {
            attempts: Some(5),
            interval: Duration::from_secs(1),
        };
        assert_eq!(c.retry, Some(want));
        let c = read_args(&["-retry-attempts=-1"]).unwrap();
        assert_eq!(c.retry.unwrap().attempts, None, "-1: no limit");
        assert_eq!(
            c.retry.unwrap().interval,
            Duration::from_secs(2),
            "gliderlabs's"
        );

        let c = read_args(&["-tags", "a,b", "-ttl-refresh", "10", "-resync", "0"]).unwrap();
        assert_eq!(c.resync, None);
        let w = c.warnings.join("\n");
        assert_eq!(c.warnings.len(), 3, "{w}");
        for want in [
            "--tags \"a,b\" is ignored",
            "--ttl-refresh \"10\"",
            "--resync \"0\"",
        ] {
            assert!(w.contains(want), "{want}: {w}");
        }
    }

    #[test]
    fn mistakes() {
        for (args, want) in [
            (&["-deregister", "on-success"][..], "is not supported"),
            (&["-deregister", "never"], "must be always or on-success"),
            (&["-resync", "-5"], "--resync \"-5\" is not a number"),
            (&["-retry-attempts", "-2"], "or -1"),
            (&["-retry-interval", "0"], "milliseconds"),
            (&["-ttl-refresh", "x"], "whole number"),
        ] {
            let e = read_args(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
