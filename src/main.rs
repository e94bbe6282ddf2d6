//! registrator: keeps the published ports of one Docker host's containers registered
//! in etcd v3. `main` parses, sets up, runs and turns the result into the exit code;
//! it is the only place that exits.

use std::ffi::OsString;
use std::process::ExitCode;

use etcd_registrator::cli::{self, Command};
use etcd_registrator::logging::{self, LogFormat};
use etcd_registrator::{app, health, setup::Setup};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const COMMIT: Option<&str> = option_env!("REGISTRATOR_GIT_COMMIT");

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let mut config = match cli::parse(args, &|name| std::env::var(name).ok()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", cli::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Command::SubcommandHelp(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Healthcheck { addr, timeout }) => {
            return match health::probe(&addr, timeout) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    println!("unhealthy: {why}");
                    ExitCode::from(1)
                }
            };
        }
        Ok(Command::Ls(ls)) => {
            // Warnings only: the listing is the output.
            logging::init(LogFormat::Text, "warn", None);
            return match app::ls(*ls) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("registrator ls: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Ok(Command::Version) => {
            println!(
                "registrator {VERSION} (commit {})",
                COMMIT.unwrap_or("unknown")
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("registrator: {e}");
            return ExitCode::from(2);
        }
    };
    match cli::docker_tls(config.docker.clone(), |name| std::env::var(name).ok()) {
        Ok(docker) => config.docker = docker,
        Err(e) => {
            eprintln!("registrator: {e}");
            return ExitCode::from(2);
        }
    }
    logging::init(
        config.log_format,
        "info",
        Some(config.registry.prefix.clone()),
    );
    match Setup::new(config).and_then(app::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}
