//! The registry URI (`etcd://[user:pass@]host[:port],.../prefix`): its parts, how it is
//! shown (never with the password), and the masking of anything that may be a password
//! in what the user typed.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use super::error::{usage, UsageError};

/// etcd's client port, when an endpoint names none.
const DEFAULT_PORT: u16 = 2379;

/// One etcd endpoint (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The parsed registry URI: where etcd is and which key prefix is ours.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    pub endpoints: Vec<Endpoint>,
    /// `etcds://`: talk TLS to every endpoint.
    pub tls: bool,
    /// Leading `/`, no trailing `/` (`/services`).
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Never prints the password.
impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// The URI as a person should see it in logs: no password.
impl fmt::Display for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "etcds" } else { "etcd" };
        let user = self
            .username
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let hosts: Vec<String> = self.endpoints.iter().map(|e| e.to_string()).collect();
        write!(f, "{scheme}://{user}{}{}", hosts.join(","), self.prefix)
    }
}

impl Registry {
    /// `--etcd-cacert`, `--etcd-cert` and `--etcd-key` over the URI's `?cacert=`,
    /// `cert=` and `key=`; a certificate goes with its key.
    pub fn with_files(
        mut self,
        cacert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<Registry, UsageError> {
        self.cacert = cacert.or(self.cacert);
        self.cert = cert.or(self.cert);
        self.key = key.or(self.key);
        if self.cert.is_some() != self.key.is_some() {
            return Err(usage("--etcd-cert and --etcd-key must be given together"));
        }
        Ok(self)
    }
}

/// Parses `etcd://[user:pass@]host[:port][,host[:port]...]/prefix[?cacert=..&cert=..&key=..]`.
///
/// A mistake is reported with the URI's password masked (see [`redact`]); when the URI
/// may hold a password, the message names the faulty part without quoting it.
pub fn parse_registry(uri: &str) -> Result<Registry, UsageError> {
    let shown = redact(uri);
    let secret = secret_span(uri);
    // A password with an unescaped '/' or '?' spills into the host list or the query,
    // and the masked URI then looks right: say what may be wrong.
    let hint = match &secret {
        Some(r) if uri[r.clone()].contains(['/', '?']) => {
            "; a '/' or '?' in the password must be percent-encoded (%2F, %3F)"
        }
        _ => "",
    };
    // Pieces of the URI are quoted only when none of it can be a password.
    registry(uri, secret.is_none())
        .map_err(|why| usage(format!("registry URI {shown:?}: {why}{hint}")))
}

/// The parts of a registry URI; Err: what is wrong with it, for [`parse_registry`] to
/// frame. `quote`: messages may quote pieces of the URI.
fn registry(uri: &str, quote: bool) -> Result<Registry, String> {
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or("malformed; expected etcd://host:port/prefix")?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "etcd" => false,
        "etcds" => true,
        "" => return Err("malformed; missing scheme, expected etcd://host:port/prefix".into()),
        other => {
            return Err(format!(
                "scheme {other:?} is not supported (only etcd:// and etcds://)"
            ))
        }
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => user_and_password(u)?,
    };
    let endpoints = if hosts.is_empty() {
        vec![Endpoint {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
        }]
    } else {
        hosts
            .split(',')
            .map(|h| parse_endpoint(h, DEFAULT_PORT, quote))
            .collect::<Result<_, _>>()?
    };
    let mut registry = Registry {
        endpoints,
        tls,
        prefix: key_prefix(path)?,
        username,
        password,
        cacert: None,
        cert: None,
        key: None,
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        query_parameter(&mut registry, pair, quote)?;
    }
    Ok(registry)
}

/// `user[:password]` before the '@', percent-decoded.
fn user_and_password(userinfo: &str) -> Result<(Option<String>, Option<String>), String> {
    let (user, pass) = match userinfo.split_once(':') {
        Some((user, pass)) => (user, Some(pass)),
        None => (userinfo, None),
    };
    if user.is_empty() {
        return Err("empty user name before '@'".into());
    }
    Ok((
        Some(percent_decode(user)?),
        pass.map(percent_decode).transpose()?,
    ))
}

/// The URI's path as a key prefix: a leading `/`, no trailing `/`, no empty, `.` or
/// `..` segment.
fn key_prefix(path: &str) -> Result<String, String> {
    let prefix = path.trim_end_matches('/');
    if prefix.is_empty() {
        return Err("no key prefix; add a path, e.g. etcd:///services".into());
    }
    if prefix
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err("key prefix has an empty, '.' or '..' segment".into());
    }
    if prefix.chars().any(|c| c.is_control()) {
        return Err("key prefix contains a control character".into());
    }
    Ok(prefix.to_string())
}

/// One `name=value` of the query: `cacert`, `cert` or `key`, each a file.
fn query_parameter(registry: &mut Registry, pair: &str, quote: bool) -> Result<(), String> {
    let (k, v) = pair
        .split_once('=')
        .ok_or_else(|| format!("query parameter{} has no value", q(pair, quote)))?;
    let v = PathBuf::from(percent_decode(v)?);
    match k {
        "cacert" => registry.cacert = Some(v),
        "cert" => registry.cert = Some(v),
        "key" => registry.key = Some(v),
        _ => {
            return Err(format!(
                "unknown query parameter{} (known: cacert, cert, key)",
                q(k, quote)
            ))
        }
    }
    Ok(())
}

/// Parses `host[:port]` or `[v6]:port`. `quote`: the message may quote the text (it
/// holds no part of a password).
fn parse_endpoint(h: &str, default_port: u16, quote: bool) -> Result<Endpoint, String> {
    let qh = q(h, quote);
    let (host, port) = if let Some(v6) = h.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("endpoint{qh} has an unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| format!("endpoint{qh} is malformed"))?,
                ),
            ),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(format!("endpoint{qh} has no valid host"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "endpoint{qh}: port{} is not a number in 1-65535",
                    q(p, quote)
                ))
            }
        },
    };
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// ` "text"` when it may be quoted, else nothing.
fn q(text: &str, quote: bool) -> String {
    if quote {
        format!(" {text:?}")
    } else {
        String::new()
    }
}

/// Where a password may sit in a URI-like `s`, as a byte range: from the first ':'
/// after the scheme's `://` to the last '@'. Generous on purpose: it also covers a
/// password with an unescaped '/', '?' or '@' (and, harmlessly, a port when '@' only
/// appears in the path or query). Without `://`, `s` may be the tail of a URI that a
/// space split: everything before its last '@'.
fn secret_span(s: &str) -> Option<std::ops::Range<usize>> {
    let start = s.find("://").map_or(0, |i| i + 3);
    let at = start + s[start..].rfind('@')?;
    match s[start..at].find(':') {
        Some(colon) => Some(start + colon + 1..at),
        None if start == 0 => Some(0..at),
        // `user@host`: a user name, no password.
        None => None,
    }
}

/// `s` with anything that may be a password replaced by `***`
/// (`etcd://u:***@host/p`), for messages that quote what the user typed.
pub fn redact(s: &str) -> String {
    match secret_span(s) {
        Some(r) => format!("{}***{}", &s[..r.start], &s[r.end..]),
        None => s.to_string(),
    }
}

/// A warning for a password that `registry` would send in the clear: `etcd://` (not
/// `etcds://`) to an endpoint that is not on this machine. Pure: a host name other
/// than `localhost` counts as remote, as it is not resolved here.
pub fn plaintext_password_warning(registry: &Registry) -> Option<String> {
    if registry.tls || registry.password.is_none() {
        return None;
    }
    let remote: Vec<String> = registry
        .endpoints
        .iter()
        .filter(|e| !is_loopback_host(&e.host))
        .map(|e| e.to_string())
        .collect();
    if remote.is_empty() {
        return None;
    }
    Some(format!(
        "the etcd password is sent unencrypted (etcd://) to {}: anyone on the path can read \
         it; use etcds://",
        remote.join(", ")
    ))
}

fn is_loopback_host(host: &str) -> bool {
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => {
            let h = host.trim_end_matches('.').to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes are not UTF-8".to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn registry_uris() {
        let ep = |h: &str, p| Endpoint {
            host: h.into(),
            port: p,
        };
        for (uri, endpoints, prefix) in [
            ("etcd:///services", vec![ep("127.0.0.1", 2379)], "/services"),
            (
                "etcd://10.0.0.5/services",
                vec![ep("10.0.0.5", 2379)],
                "/services",
            ),
            ("etcd://h:4001/a/b/", vec![ep("h", 4001)], "/a/b"),
            (
                "etcd://h1:1,h2,[::1]:3/s",
                vec![ep("h1", 1), ep("h2", 2379), ep("::1", 3)],
                "/s",
            ),
        ] {
            let r = parse_registry(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
            assert_eq!(
                (r.endpoints, r.prefix.as_str()),
                (endpoints, prefix),
                "{uri}"
            );
        }
        let r = parse_registry("etcds://bob:s%40cret@h/s?cacert=/ca.pem").unwrap();
        assert_eq!(
            (r.tls, r.username.as_deref(), r.password.as_deref()),
            (true, Some("bob"), Some("s@cret"))
        );
        assert_eq!(r.cacert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(
            r.to_string(),
            "etcds://bob@h:2379/s",
            "display hides the password"
        );
        assert!(!format!("{r:?}").contains("cret"));
    }

    #[test]
    fn bad_registry_uris() {
        for (uri, want) in [
            ("services", "malformed"),
            ("zookeeper://h/s", "scheme \"zookeeper\" is not supported"),
            ("consul://h/s", "not supported"),
            ("etcd://h", "no key prefix"),
            ("etcd://h/", "no key prefix"),
            ("etcd://h:0/s", "not a number in 1-65535"),
            ("etcd://h:x/s", "not a number"),
            ("etcd://h//s", "empty"),
            ("etcd://h/s?foo=1", "unknown query parameter \"foo\""),
            ("etcd://[::1/s", "unclosed"),
        ] {
            let e = parse_registry(uri).unwrap_err().0;
            assert!(e.contains(want), "{uri}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    /// Every password in these URIs starts with `Pw9` and holds `cret`: neither may
    /// appear in any message, whatever else is wrong with the URI.
    pub(crate) const MALFORMED_WITH_PASSWORDS: &[&str] = &[
        "etcd://u:Pw9secret%zz@host/p",
        "etcd://u:Pw9secret%4@host/p",
        "etcd://u:Pw9sec%ffret@host/p",
        "etcd://u:Pw9secret@host:99999/p",
        "etcd://u:Pw9secret@host:0/p",
        "etcd://u:Pw9secret@host:x/p",
        "etcd://u:Pw9secret@host/p?foo=1",
        "etcd://u:Pw9secret@host/p?cacert",
        "etcd://u:Pw9secret@host/p?cacert=%zz",
        "etcd://u:Pw9secret@host",
        "etcd://u:Pw9secret@host/",
        "etcd://u:Pw9secret@host//p",
        "etcd://u:Pw9secret@host/p/../q",
        "etcd://u:Pw9secret@[::1/p",
        "etcd://u:Pw9secret@[::1]x/p",
        "etcd://u:Pw9secret@h1,,h2/p",
        "etcd://u:Pw9secret@ho st/p",
        "etcd://:Pw9secret@host/p",
        "etcd://u%zz:Pw9secret@host/p",
        "zookeeper://u:Pw9secret@host/p",
        "://u:Pw9secret@host/p",
        "etcd:/u:Pw9secret@host/p",
        "etcd://u:Pw9:secret@host:x/p",
        "etcd://u:Pw9/secret@host/p",
        "etcd://u:Pw9/secret@host:1/p",
        "etcd://u:Pw9?secret@host/p",
        "etcd://u:Pw9?sec=ret@host/p",
        "etcd://u:Pw9@secret@host:0/p",
        "etcd://u:Pw9,secret@host:0/p",
        "etcd://u:Pw9secret@host:1/p\u{7}",
        "etcds://u:Pw9secret@host:65536/p?key=/k.pem",
    ];

    /// Whether `text` shows any part of the passwords these tests use.
    pub(crate) fn leaks(text: &str) -> bool {
        text.contains("Pw9") || text.contains("cret")
    }

    #[test]
    fn without_a_password_the_faulty_part_is_quoted() {
        for (uri, want) in [
            ("etcd://u@h:0/p", "port \"0\""),
            ("etcd://h:x/p", "endpoint \"h:x\": port \"x\""),
            ("etcd://u@h/p?foo=1", "parameter \"foo\""),
        ] {
            let e = parse_registry(uri).unwrap_err().0;
            assert!(e.contains(want), "{uri}: {e}");
        }
        let e = parse_registry("etcd://u:pw@h:0/p").unwrap_err().0;
        assert_eq!(
            e,
            "registry URI \"etcd://u:***@h:0/p\": endpoint: port is not a number in 1-65535"
        );
        let e = parse_registry("etcd://u:p/w@h/p").unwrap_err().0;
        assert!(e.ends_with("must be percent-encoded (%2F, %3F)"), "{e}");
    }

    #[test]
    fn redaction() {
        for (text, want) in [
            ("etcd://u:pw@h/p", "etcd://u:***@h/p"),
            ("etcd://u:p@w@h/p", "etcd://u:***@h/p"),
            ("etcd://u:p/w@h/p", "etcd://u:***@h/p"),
            ("etcd://u@h/p", "etcd://u@h/p"),
            ("etcd://h:1/p", "etcd://h:1/p"),
            ("etcd:///p", "etcd:///p"),
            ("sword@host/p", "***@host/p"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn plaintext_password_warnings() {
        let warn = |uri: &str| plaintext_password_warning(&parse_registry(uri).unwrap());
        for uri in [
            "etcd://u:pw@127.0.0.1/s",
            "etcd://u:pw@127.0.1.1:1,localhost,[::1]/s",
            "etcd://u:pw@LOCALHOST./s",
            "etcd://u:pw@[::ffff:127.0.0.1]/s",
            "etcd:///s",
            "etcd://u@10.0.0.1/s",
            "etcd://10.0.0.1/s",
            "etcds://u:pw@10.0.0.1/s",
        ] {
            assert_eq!(warn(uri), None, "{uri}");
        }
        assert_eq!(
            warn("etcd://u:pw@127.0.0.1,10.0.0.1,etcd.example:4001/s").as_deref(),
            Some(
                "the etcd password is sent unencrypted (etcd://) to 10.0.0.1:2379, \
                 etcd.example:4001: anyone on the path can read it; use etcds://"
            )
        );
        // A password from the environment or a file counts the same once it is set.
        let mut r = parse_registry("etcd://u@10.0.0.1/s").unwrap();
        r.password = Some(String::new());
        assert!(plaintext_password_warning(&r).is_some_and(|w| w.contains("10.0.0.1:2379")));
    }
}
