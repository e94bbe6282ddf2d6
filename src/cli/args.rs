//! Reading the run options: each from the command line, else from its
//! `REGISTRATOR_<OPTION>` environment variable.
//!
//! Every option read through [`Args`] is settable from the environment with no more
//! code: `--dry-run` from `REGISTRATOR_DRY_RUN`, `--ttl` from `REGISTRATOR_TTL`, the
//! registry URI from `REGISTRATOR_REGISTRY`; the command line wins, an empty variable
//! counts as unset. Values come back as [`Given`], which names where they came from, so
//! a bad one reads `--ttl "abc" ...` or `REGISTRATOR_TTL="abc" ...`.
//!
//! Go's spellings are read too, as gliderlabs/registrator's users type them: one dash
//! (`-ip`, `-resync 30`), camel case (`-useIpFromLabel` is `--use-ip-from-label`) and
//! `-flag=true|false`.

use std::ffi::OsString;
use std::fmt;

use super::error::{usage, UsageError};

/// The variable of an option: `--dry-run` -> `REGISTRATOR_DRY_RUN`.
pub fn env_name(key: &str) -> String {
    let name = key.trim_start_matches('-').replace('-', "_");
    format!("REGISTRATOR_{}", name.to_ascii_uppercase())
}

/// A value as the user gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub value: String,
    /// The option (`--ttl`), or the variable (`REGISTRATOR_TTL`) it came from.
    pub origin: String,
}

impl Given {
    pub fn from_env(&self) -> bool {
        // A positional argument has no origin: it came from the command line too.
        !self.origin.is_empty() && !self.origin.starts_with('-')
    }
}

/// `--ttl "abc"`, or `REGISTRATOR_TTL="abc"`: what messages quote.
impl fmt::Display for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.from_env() { "=" } else { " " };
        write!(f, "{}{sep}{:?}", self.origin, self.value)
    }
}

/// The command line being read, and the environment behind it.
pub struct Args<'a> {
    /// The arguments not read yet, in Go's spellings rewritten to ours.
    rest: Vec<String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Args<'a> {
    /// `env` looks a variable up (`std::env::var`, or a table in tests).
    pub fn new(
        args: Vec<OsString>,
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Result<Args<'a>, UsageError> {
        let rest = args
            .into_iter()
            .map(|a| a.into_string().map(|s| go_style(&s)))
            .collect::<Result<_, _>>()
            // Not quoted: it may be a URI with a password.
            .map_err(|_| UsageError("an argument is not valid UTF-8".into()))?;
        Ok(Args { rest, env })
    }

    /// A subcommand's arguments: read as the daemon's, without the environment.
    pub fn subcommand(args: Vec<OsString>) -> Result<Args<'static>, UsageError> {
        Args::new(args, &|_| None)
    }

    /// Whether any of `keys` is on the command line (`-h`, `--help`).
    pub fn has(&self, keys: &[&str]) -> bool {
        self.rest.iter().any(|a| keys.contains(&a.as_str()))
    }

    /// `key VALUE` or `key=VALUE`, else the option's variable.
    pub fn value(&mut self, key: &str) -> Result<Option<Given>, UsageError> {
        let Some(i) = self.find(key) else {
            return Ok(self.env_value(key));
        };
        let arg = self.rest.remove(i);
        let value = match arg.split_once('=') {
            Some((_, v)) => v.to_string(),
            None if i < self.rest.len() => self.rest.remove(i),
            None => return Err(UsageError(format!("{key} needs a value"))),
        };
        self.once_only(key)?;
        Ok(Some(Given {
            value,
            origin: key.to_string(),
        }))
    }

    /// `key` (or `key=true|false`), else the option's variable (`1`, `true`, `yes`, `on`
    /// or `0`, `false`, `no`, `off`).
    pub fn flag(&mut self, key: &str) -> Result<bool, UsageError> {
        let given = match self.find(key) {
            None => match self.env_value(key) {
                None => return Ok(false),
                Some(g) => g,
            },
            Some(i) => {
                let arg = self.rest.remove(i);
                self.once_only(key)?;
                match arg.split_once('=') {
                    None => return Ok(true),
                    Some((_, v)) => Given {
                        value: v.to_string(),
                        origin: key.to_string(),
                    },
                }
            }
        };
        truth(&given.value).ok_or_else(|| UsageError(format!("{given} is not true or false")))
    }

    /// What is left once every option was read: the free arguments, or when there are
    /// none, the variable of `name` (`registry` -> `REGISTRATOR_REGISTRY`). An option
    /// that nothing read is an error that names it, never its value (it may be a
    /// secret), and points at `help`.
    pub fn finish(self, name: &str, help: &str) -> Result<Vec<Given>, UsageError> {
        if let Some(unknown) = self.rest.iter().find(|a| a.starts_with('-') && a.len() > 1) {
            let option = unknown.split('=').next().unwrap_or_default();
            return Err(UsageError(format!(
                "unknown option {option:?} (see {help})"
            )));
        }
        if self.rest.is_empty() {
            return Ok(self.env_value(name).into_iter().collect());
        }
        Ok(self
            .rest
            .into_iter()
            .map(|value| Given {
                value,
                origin: String::new(),
            })
            .collect())
    }

    /// [`Args::finish`] for the subcommand `sub`: its free arguments; an unknown option
    /// is an error that points at the subcommand's help.
    pub fn finish_subcommand(self, sub: &str) -> Result<Vec<String>, UsageError> {
        let help = format!("registrator {sub} --help");
        let free = self
            .finish("", &help)
            .map_err(|e| usage(format!("{sub}: {e}")))?;
        Ok(free.into_iter().map(|g| g.value).collect())
    }

    fn find(&self, key: &str) -> Option<usize> {
        self.rest
            .iter()
            .position(|a| a == key || a.strip_prefix(key).is_some_and(|r| r.starts_with('=')))
    }

    fn once_only(&self, key: &str) -> Result<(), UsageError> {
        match self.find(key) {
            Some(_) => Err(UsageError(format!("{key} is given twice"))),
            None => Ok(()),
        }
    }

    fn env_value(&self, key: &str) -> Option<Given> {
        let origin = env_name(key);
        (self.env)(&origin)
            .filter(|v| !v.is_empty())
            .map(|value| Given { value, origin })
    }
}

/// Go's `strconv.ParseBool`, plus `yes`/`no` and `on`/`off` as environment files use them.
fn truth(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `-ip` -> `--ip`, `-useIpFromLabel=x` -> `--use-ip-from-label=x`: Go's flag package
/// takes one dash or two and its options are camel case at times; ours have two dashes
/// and kebab case. One-letter options (`-h`, `-V`) and values (`-1`) stay as they are.
fn go_style(arg: &str) -> String {
    let name_start = if arg.starts_with("--") { 2 } else { 1 };
    let is_option = arg.len() > 2
        && arg.starts_with('-')
        && arg[name_start..].starts_with(|c: char| c.is_ascii_alphabetic());
    if !is_option {
        return arg.to_string();
    }
    let (name, value) = match arg[name_start..].split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (&arg[name_start..], None),
    };
    let mut out = String::from("--");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    if let Some(v) = value {
        out.push('=');
        out.push_str(v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_spellings() {
        for (arg, want) in [
            ("-ip", "--ip"),
            ("--ip", "--ip"),
            ("-ip=10.0.0.1", "--ip=10.0.0.1"),
            ("-useIpFromLabel", "--use-ip-from-label"),
            ("--useIpFromLabel=Addr", "--use-ip-from-label=Addr"),
            ("-retry-attempts", "--retry-attempts"),
            ("-1", "-1"),
            ("-h", "-h"),
            ("-V", "-V"),
            ("-", "-"),
            ("etcd://h/S", "etcd://h/S"),
        ] {
            assert_eq!(go_style(arg), want, "{arg}");
        }
        assert_eq!(env_name("--dry-run"), "REGISTRATOR_DRY_RUN");
        assert_eq!(env_name("registry"), "REGISTRATOR_REGISTRY");
    }

    fn args<'a>(list: &[&str], env: &'a dyn Fn(&str) -> Option<String>) -> Args<'a> {
        Args::new(list.iter().map(OsString::from).collect(), env).unwrap()
    }

    #[test]
    fn the_command_line_wins_over_the_environment() {
        let env = |name: &str| match name {
            "REGISTRATOR_TTL" => Some("5".to_string()),
            "REGISTRATOR_ONCE" => Some("yes".to_string()),
            "REGISTRATOR_INTERNAL" => Some("true".to_string()),
            "REGISTRATOR_EXPLICIT" => Some(String::new()),
            "REGISTRATOR_REGISTRY" => Some("etcd:///env".to_string()),
            _ => None,
        };
        let mut a = args(&["--ttl=7", "-internal=false"], &env);
        assert_eq!(
            a.value("--ttl").unwrap().unwrap().to_string(),
            "--ttl \"7\""
        );
        assert!(!a.flag("--internal").unwrap(), "-internal=false wins");
        assert!(a.flag("--once").unwrap(), "from REGISTRATOR_ONCE");
        assert!(!a.flag("--explicit").unwrap(), "empty: unset");
        assert_eq!(a.value("--ip").unwrap(), None);
        let free = a.finish("registry", "--help").unwrap();
        assert_eq!(free[0].to_string(), "REGISTRATOR_REGISTRY=\"etcd:///env\"");

        let mut a = args(&["etcd:///cli"], &env);
        let ttl = a.value("--ttl").unwrap().unwrap();
        assert_eq!(ttl.to_string(), "REGISTRATOR_TTL=\"5\"");
        assert!(ttl.from_env());
        assert_eq!(
            a.finish("registry", "--help").unwrap()[0].value,
            "etcd:///cli"
        );
    }

    #[test]
    fn mistakes() {
        let env = |name: &str| (name == "REGISTRATOR_ONCE").then(|| "maybe".to_string());
        let no_env = |_: &str| None;
        for (list, want) in [
            (&["--ttl"][..], "--ttl needs a value"),
            (&["--ttl", "1", "-ttl=2"], "--ttl is given twice"),
        ] {
            let e = args(list, &no_env).value("--ttl").unwrap_err().0;
            assert_eq!(e, want, "{list:?}");
        }
        for (list, want) in [
            (&["--once", "-once"][..], "--once is given twice"),
            (&["-once=maybe"], "--once \"maybe\" is not true or false"),
        ] {
            let e = args(list, &no_env).flag("--once").unwrap_err().0;
            assert_eq!(e, want, "{list:?}");
        }
        let e = args(&[], &env).flag("--once").unwrap_err().0;
        assert_eq!(e, "REGISTRATOR_ONCE=\"maybe\" is not true or false");
        let e = args(&["-etcd-password=Pw9", "etcd:///s"], &no_env)
            .finish("registry", "--help")
            .unwrap_err()
            .0;
        assert_eq!(e, "unknown option \"--etcd-password\" (see --help)");
    }
}
