//! Command line: validates what the user typed into what `main` should do, nothing
//! more (no syscalls: the host name, sockets and files come later, in `setup`).
//!
//! One file per part: [`args`] reads an option from the command line or its
//! `REGISTRATOR_<OPTION>` variable; [`run`] the daemon's options into a [`Config`];
//! [`compat`] gliderlabs/registrator's options; [`registry`] the registry URI and the
//! masking of passwords; [`docker_host`] `DOCKER_HOST` and Docker's TLS variables;
//! [`ls`] and [`healthcheck`] the subcommands' options; [`help`] the help texts.

pub mod args;
pub mod compat;
pub mod docker_host;
pub mod error;
pub mod healthcheck;
pub mod help;
pub mod ls;
pub mod registry;
pub mod run;

use std::ffi::OsString;
use std::time::Duration;

pub use compat::Retry;
pub use docker_host::{docker_tls, parse_docker_host, DockerHost};
pub use error::UsageError;
pub use healthcheck::HEALTHCHECK_TIMEOUT;
pub use help::{HELP, HELP_HEALTHCHECK, HELP_LS};
pub use ls::LsConfig;
pub use registry::{parse_registry, plaintext_password_warning, redact, Endpoint, Registry};
pub use run::Config;

use args::Args;

/// What `main` should do.
#[derive(Debug, PartialEq)]
pub enum Command {
    Run(Box<Config>),
    /// `registrator healthcheck`: probe a running registrator's `/healthz`.
    Healthcheck {
        /// The `--metrics-addr` the daemon listens on (`host:port`).
        addr: String,
        timeout: Duration,
    },
    /// `registrator ls`: list the services under a prefix.
    Ls(Box<LsConfig>),
    /// `--help` of a subcommand: the text to print.
    SubcommandHelp(&'static str),
    Help,
    Version,
}

/// Parses the arguments (without the program name). Every option of the daemon may come
/// from its `REGISTRATOR_<OPTION>` variable instead (see [`args`]), looked up with
/// `env`, which also gives `DOCKER_HOST`. The subcommands read no variable.
pub fn parse(
    args: Vec<OsString>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Command, UsageError> {
    let help = |a: &Args| a.has(&["-h", "--help"]);
    match args.first().and_then(|a| a.to_str()) {
        Some("ls") => {
            let a = Args::subcommand(args[1..].to_vec())?;
            if help(&a) {
                return Ok(Command::SubcommandHelp(HELP_LS));
            }
            return ls::read(a).map(|c| Command::Ls(Box::new(c)));
        }
        Some("healthcheck") => {
            let a = Args::subcommand(args[1..].to_vec())?;
            if help(&a) {
                return Ok(Command::SubcommandHelp(HELP_HEALTHCHECK));
            }
            let probe = healthcheck::read(a)?;
            return Ok(Command::Healthcheck {
                addr: probe.addr,
                timeout: probe.timeout,
            });
        }
        _ => {}
    }
    let a = Args::new(args, env)?;
    if help(&a) {
        return Ok(Command::Help);
    }
    if a.has(&["-V", "--version"]) {
        return Ok(Command::Version);
    }
    run::read(a, env).map(|c| Command::Run(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::registry::tests::{leaks, MALFORMED_WITH_PASSWORDS};
    use std::ffi::OsString;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse(args.iter().map(OsString::from).collect(), &|_| None) {
            Ok(Command::Run(c)) => Ok(*c),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn help_and_version_come_first() {
        let parse = |args: &[&str]| parse(args.iter().map(OsString::from).collect(), &|_| None);
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert_eq!(parse(&["--ttl", "x", "-h"]), Ok(Command::Help));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
        assert_eq!(parse(&["ls", "-h"]), Ok(Command::SubcommandHelp(HELP_LS)));
        assert_eq!(
            parse(&["healthcheck", "--bogus", "--help"]),
            Ok(Command::SubcommandHelp(HELP_HEALTHCHECK))
        );
    }

    #[test]
    fn no_usage_error_shows_the_password() {
        for uri in MALFORMED_WITH_PASSWORDS {
            let e = parse_registry(uri).expect_err(uri).0;
            assert!(!leaks(&e), "{uri}: {e}");
            assert!(
                e.contains("***"),
                "{uri}: the URI is still quoted, masked: {e}"
            );
            let e = run(&[uri]).expect_err(uri);
            assert!(!leaks(&e), "{uri}: {e}");
        }
        for args in [
            // An unquoted space splits the URI; a second URI; a guessed option.
            &["etcd://u:Pw9", "secret@host/p"][..],
            &["etcd://u:Pw9secret@host/p", "etcd://u:Pw9secret@h2/p"],
            &["--etcd-password=Pw9secret", "etcd://u@host/p"],
            &["-etcd-password=Pw9secret", "etcd://u@host/p"],
            &["--etcd-password", "Pw9secret", "etcd://u@host/p"],
            &["--etcd-cert", "c.pem", "etcd://u:Pw9secret@host/p"],
        ] {
            let e = run(args).expect_err("usage error");
            assert!(!leaks(&e), "{args:?}: {e}");
        }
        for host in [
            "tcp://u:Pw9secret@h:2375",
            "http://u:Pw9secret@h",
            "ssh://u:Pw9secret@h",
        ] {
            let e = parse_docker_host(host).expect_err(host).0;
            assert!(!leaks(&e), "{host}: {e}");
        }
    }

    #[test]
    fn secrets_stay_out_of_display_and_debug() {
        let c = run(&["etcds://bob:Pw9secret@h1,h2:1/s?cacert=/ca.pem"]).unwrap();
        let cmd = Command::Run(Box::new(c.clone()));
        for text in [
            c.registry.to_string(),
            format!("{:?}", c.registry),
            format!("{c:?}"),
            format!("{c:#?}"),
            format!("{cmd:?}"),
        ] {
            assert!(!leaks(&text), "{text}");
            assert!(text.contains("bob@h1:2379,h2:1/s"), "{text}");
        }
    }
}
