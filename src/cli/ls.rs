//! `registrator ls`'s options: which prefix to list, the filters, the output form.

use std::path::PathBuf;

use super::args::Args;
use super::error::{usage, UsageError};
use super::registry::{parse_registry, redact, Registry};

/// What `registrator ls` lists, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct LsConfig {
    pub registry: Registry,
    /// `--node`: only this host's services (`*` matches any run of characters).
    pub node: Option<String>,
    /// `--name`: only services of this name (`*` as for `--node`).
    pub name: Option<String>,
    /// `--json`: an array of objects instead of the table.
    pub json: bool,
    pub password_file: Option<PathBuf>,
}

/// Reads `ls [OPTIONS] <registry-uri>` (after `--help` was looked for). DOCKER_HOST
/// plays no part.
pub fn read(mut a: Args) -> Result<LsConfig, UsageError> {
    let mut text = |key: &str| -> Result<Option<String>, UsageError> {
        a.value(key)
            .map(|g| g.map(|g| g.value))
            .map_err(|e| usage(format!("ls: {e}")))
    };
    let node = text("--node")?;
    let name = text("--name")?;
    let cacert = text("--etcd-cacert")?.map(PathBuf::from);
    let cert = text("--etcd-cert")?.map(PathBuf::from);
    let key = text("--etcd-key")?.map(PathBuf::from);
    let password_file = text("--etcd-password-file")?.map(PathBuf::from);
    let json = a.flag("--json").map_err(|e| usage(format!("ls: {e}")))?;
    for (option, v) in [("--node", &node), ("--name", &name)] {
        if v.as_deref().is_some_and(str::is_empty) {
            return Err(usage(format!("ls: {option} needs a non-empty value")));
        }
    }
    let free = a.finish_subcommand("ls")?;
    let uri = match free.as_slice() {
        [uri] => uri,
        [] => {
            return Err(usage(
                "ls: missing registry URI, e.g. registrator ls etcd:///services",
            ))
        }
        [_, extra @ ..] => {
            // An unquoted space in a password splits the URI: the tail arrives here.
            let extra: Vec<String> = extra.iter().map(|a| redact(a)).collect();
            return Err(usage(format!(
                "ls: unexpected argument(s) after the registry URI: {}",
                extra.join(" ")
            )));
        }
    };
    Ok(LsConfig {
        registry: parse_registry(uri)?.with_files(cacert, cert, key)?,
        node,
        name,
        json,
        password_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::registry::tests::leaks;
    use crate::cli::{parse, Command, HELP_LS};
    use std::ffi::OsString;

    fn parse_strs(args: &[&str]) -> Result<Command, UsageError> {
        let env = |name: &str| (name == "DOCKER_HOST").then(|| "nonsense://x".to_string());
        parse(args.iter().map(OsString::from).collect(), &env)
    }

    #[test]
    fn ls_subcommand() {
        let ls = |args: &[&str]| match parse_strs(args) {
            Ok(Command::Ls(c)) => Ok(*c),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(e.0),
        };
        let c = ls(&["ls", "etcd://u:p@h:1/s"]).unwrap();
        assert_eq!(c.registry.prefix, "/s");
        assert_eq!(c.registry.password.as_deref(), Some("p"));
        assert_eq!((c.node, c.name, c.json), (None, None, false));
        let c = ls(&[
            "ls",
            "--node",
            "a",
            "--name=web-*",
            "--json",
            "--etcd-cacert",
            "/ca.pem",
            "--etcd-password-file",
            "/pw",
            "etcds://h/s?cert=/c.pem&key=/k.pem",
        ])
        .unwrap();
        assert_eq!(c.node.as_deref(), Some("a"));
        assert_eq!(c.name.as_deref(), Some("web-*"));
        assert!(c.json && c.registry.tls);
        assert_eq!(c.registry.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.registry.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(c.password_file, Some(PathBuf::from("/pw")));
        assert_eq!(
            parse_strs(&["ls", "-h"]),
            Ok(Command::SubcommandHelp(HELP_LS))
        );
        // Secrets typed in the wrong place are not echoed (see `redact`).
        for args in [
            vec!["ls", "etcd://u:Pw9se@h/s", "cret@h/s"],
            vec!["ls", "--etcd-password=Pw9secret", "etcd:///s"],
            vec![
                "healthcheck",
                "--metrics-addr",
                "h:1",
                "etcd://u:Pw9secret@h/s",
            ],
            vec!["ls", "etcd://u:Pw9secret@h:x/s"],
        ] {
            let e = parse_strs(&args).unwrap_err().0;
            assert!(!leaks(&e), "{args:?}: {e}");
        }
        for (args, want) in [
            (vec!["ls"], "ls: missing registry URI"),
            (vec!["ls", "etcd:///s", "x"], "unexpected argument(s)"),
            (
                vec!["ls", "--ip", "1.2.3.4", "etcd:///s"],
                "unknown option \"--ip\"",
            ),
            (vec!["ls", "--node", "", "etcd:///s"], "non-empty"),
            (vec!["ls", "--etcd-cert", "c", "etcd:///s"], "together"),
            (vec!["ls", "consul://h/s"], "not supported"),
        ] {
            let e = ls(&args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
