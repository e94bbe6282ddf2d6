//! `registrator healthcheck`'s options: the running registrator's address, the timeout.

use std::time::Duration;

use super::args::Args;
use super::error::{usage, UsageError};
use super::registry::redact;
use super::run::listen_addr;

/// What `registrator healthcheck` probes, and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The `--metrics-addr` the daemon listens on (`host:port`).
    pub addr: String,
    pub timeout: Duration,
}

/// `healthcheck --timeout` when not given: well inside Docker's default 30 s.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads `healthcheck --metrics-addr HOST:PORT [--timeout SECS]` (after `--help` was
/// looked for).
pub fn read(mut a: Args) -> Result<Probe, UsageError> {
    let mut text = |key: &str| -> Result<Option<String>, UsageError> {
        a.value(key)
            .map(|g| g.map(|g| g.value))
            .map_err(|e| usage(format!("healthcheck: {e}")))
    };
    let addr = text("--metrics-addr")?;
    let timeout = match text("--timeout")? {
        None => HEALTHCHECK_TIMEOUT,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 && v <= 300.0 => Duration::from_secs_f64(v),
            _ => {
                return Err(usage(format!(
                    "healthcheck: --timeout {s:?} is not a number of seconds in (0, 300]"
                )))
            }
        },
    };
    let free = a.finish_subcommand("healthcheck")?;
    if let Some(extra) = free.first() {
        return Err(usage(format!(
            "healthcheck: unexpected argument {:?} (the address goes after --metrics-addr)",
            redact(extra)
        )));
    }
    let Some(addr) = addr else {
        return Err(usage(
            "healthcheck: --metrics-addr HOST:PORT is required (the registrator's own)",
        ));
    };
    let addr = listen_addr(&format!("--metrics-addr {addr:?}"), &addr)?;
    if addr.ends_with(":0") {
        return Err(usage(
            "healthcheck: --metrics-addr needs the port the registrator listens on, not 0",
        ));
    }
    Ok(Probe { addr, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command, HELP_HEALTHCHECK};
    use std::ffi::OsString;

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        let env = |name: &str| (name == "DOCKER_HOST").then(|| "nonsense://x".to_string());
        parse(args.iter().map(OsString::from).collect(), &env)
    }

    #[test]
    fn healthcheck_subcommand() {
        assert_eq!(
            parse_strs(&["healthcheck", "--metrics-addr", "127.0.0.1:9480"]),
            Ok(Command::Healthcheck {
                addr: "127.0.0.1:9480".into(),
                timeout: HEALTHCHECK_TIMEOUT
            })
        );
        assert_eq!(
            parse_strs(&["healthcheck", "--timeout", "0.5", "--metrics-addr=:9"]),
            Ok(Command::Healthcheck {
                addr: "0.0.0.0:9".into(),
                timeout: Duration::from_millis(500)
            })
        );
        assert_eq!(
            parse_strs(&["healthcheck", "--help"]),
            Ok(Command::SubcommandHelp(HELP_HEALTHCHECK))
        );
        for (args, want) in [
            (vec!["healthcheck"], "--metrics-addr HOST:PORT is required"),
            (vec!["healthcheck", "--metrics-addr"], "needs a value"),
            (vec!["healthcheck", "--metrics-addr", "h:0"], "not 0"),
            (vec!["healthcheck", "--metrics-addr", "h"], "no port"),
            (
                vec!["healthcheck", "--metrics-addr", "h:1", "--timeout", "0"],
                "--timeout \"0\"",
            ),
            (vec!["healthcheck", "--bogus"], "unknown option \"--bogus\""),
            (vec!["healthcheck", "h:1"], "unexpected argument"),
        ] {
            let e = parse_strs(&args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e}");
            assert!(
                e.starts_with("healthcheck: ") || e.starts_with("--metrics"),
                "{e}"
            );
        }
    }
}
