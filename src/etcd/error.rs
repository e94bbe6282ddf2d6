//! Why an etcd request failed: the operation, the key, the endpoint and what went wrong,
//! in words a person can act on (certificate problems, missing permissions, auth).

use std::fmt;

use super::codes::Code;
use super::wire::DecodeError;
use crate::store::StoreError;

/// Why an etcd request failed, with the operation, the key it was about and the endpoint.
#[derive(Debug)]
pub struct EtcdError {
    op: String,
    /// The key or prefix the request was about (empty for lease and auth requests).
    key: String,
    endpoint: String,
    /// Boxed: a ureq error is large, and this travels in every `Result`.
    kind: Box<Kind>,
}

/// What went wrong; the connection sorts each failure into one of these.
#[derive(Debug)]
pub(super) enum Kind {
    /// No answer: connection refused, timeout, TLS failure... `tls`: the endpoint was
    /// spoken to over TLS (for the hints).
    Transport { error: ureq::Error, tls: bool },
    /// An answer that is not etcd's: not JSON (a proxy, another service), or HTTP 5xx.
    BadAnswer(String),
    /// An answer with a gRPC error code.
    Api {
        status: u16,
        code: Code,
        message: String,
    },
    /// 403: the user's roles do not cover the key.
    PermissionDenied {
        user: Option<String>,
        prefix: String,
        message: String,
    },
    /// Auth is enabled and no credentials were given.
    NoCredentials,
    /// Wrong user name or password.
    AuthFailed { user: String, message: String },
    /// etcd has auth enabled and `--client-cert-auth`: its JSON gateway refuses every
    /// request of a client with a certificate.
    GatewayCertAuth,
    /// A JSON answer without the fields etcd's answer to this request has.
    Decode(DecodeError),
    /// The registry's settings cannot work (files, schemes).
    Config(String),
}

impl EtcdError {
    pub(super) fn new(op: &str, endpoint: &str, kind: Kind) -> EtcdError {
        EtcdError {
            op: op.to_string(),
            key: String::new(),
            endpoint: endpoint.to_string(),
            kind: Box::new(kind),
        }
    }

    /// The same failure, told as part of operation `op` on `key`: "range of /p/" reads
    /// better than "version of /p/" for a sub-step.
    pub(super) fn about(mut self, op: &str, key: &str) -> EtcdError {
        self.op = op.to_string();
        self.key = key.to_string();
        self
    }

    /// A permission error about a key under `prefix` names that prefix in its hint.
    pub(super) fn for_prefix(mut self, prefix: &str) -> EtcdError {
        if let Kind::PermissionDenied { prefix: p, .. } = &mut *self.kind {
            *p = prefix.to_string();
        }
        self
    }

    /// True when this endpoint did not answer as etcd does (no answer at all, or not an
    /// etcd answer): another endpoint may do better. False when etcd refused the request.
    pub fn unreachable(&self) -> bool {
        match &*self.kind {
            Kind::Transport { .. } | Kind::BadAnswer(_) => true,
            // A member without a leader (503): another member may have one.
            Kind::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// True when etcd refused the token, not the request, so authenticating again and
    /// retrying helps (as etcd's own client does): the token expired or a restarted etcd
    /// forgot it (Unauthenticated), or, with JWT tokens, an auth change since it was
    /// issued (a user added, a role granted) made it old (InvalidArgument).
    pub(super) fn stale_token(&self) -> bool {
        match self.refusal() {
            Some((Code::Unauthenticated, _)) => true,
            Some((Code::InvalidArgument, m)) => m.contains("revision of auth store is old"),
            _ => false,
        }
    }

    /// The gRPC code and message of an answer etcd refused, if that is what failed.
    pub(super) fn refusal(&self) -> Option<(Code, &str)> {
        match &*self.kind {
            Kind::Api { code, message, .. } => Some((*code, message)),
            _ => None,
        }
    }

    /// What a refusal says about its scope: this request (too many operations, too
    /// large: a smaller one may pass), or the cluster (out of space, too many requests,
    /// no leader: any request would fail alike). None for anything else.
    fn scope(&self) -> Option<Scope> {
        // An old token is neither: the connection authenticates again.
        if self.stale_token() {
            return None;
        }
        match self.refusal()? {
            (Code::InvalidArgument, _) => Some(Scope::Request),
            // gRPC's own limit on a message's size; etcd's "too many requests" and
            // "mvcc: database space exceeded" (the NOSPACE alarm) are the cluster's.
            (Code::ResourceExhausted, m) if m.contains("larger than max") => Some(Scope::Request),
            (Code::ResourceExhausted | Code::Unavailable, _) => Some(Scope::Cluster),
            _ => None,
        }
    }
}

/// Whose problem a refusal is (see [`EtcdError::scope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Request,
    Cluster,
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A cluster-wide refusal is about no request in particular: told the same
        // whichever request met it, it is logged once while it lasts.
        if self.scope() == Some(Scope::Cluster) {
            write!(f, "etcd at {} refuses requests: ", self.endpoint)?;
        } else {
            write!(f, "etcd {}", self.op)?;
            if !self.key.is_empty() {
                write!(f, " of {}", self.key)?;
            }
            write!(f, " at {}: ", self.endpoint)?;
        }
        match &*self.kind {
            Kind::Transport { error, tls } => f.write_str(&describe_transport(error, *tls)),
            Kind::BadAnswer(m) => write!(f, "not an etcd answer ({m})"),
            Kind::Api {
                status,
                code,
                message,
            } => {
                write!(f, "HTTP {status}, code {code}: {message}")?;
                if message.contains("database space exceeded") {
                    f.write_str(
                        " (its NOSPACE alarm: it takes no writes until space is freed \
                         (etcdctl compact, etcdctl defrag) and the alarm disarmed \
                         (etcdctl alarm disarm))",
                    )?;
                }
                Ok(())
            }
            Kind::PermissionDenied {
                user,
                prefix,
                message,
            } => {
                let user = match user {
                    Some(u) => format!("user {u:?}"),
                    None => "this user".into(),
                };
                write!(
                    f,
                    "permission denied (HTTP 403: {message}): {user} has no role with readwrite \
                     permission on {prefix}; grant it to one of the user's roles \
                     (etcdctl role grant-permission ROLE --prefix=true readwrite {prefix})"
                )
            }
            Kind::NoCredentials => f.write_str(
                "etcd requires authentication: give a user and password (user:pass@ in the URI, \
                 ETCD_USERNAME and ETCD_PASSWORD, or --etcd-password-file)",
            ),
            Kind::AuthFailed { user, message } => write!(
                f,
                "authentication as user {user:?} failed ({message}): \
                 check the user name or password"
            ),
            Kind::GatewayCertAuth => f.write_str(
                "etcd has authentication enabled and requires client certificates \
                 (--client-cert-auth); its JSON gateway refuses that combination \
                 (\"CommonName of client sending a request against gateway will be ignored\"): \
                 use password authentication over server-only TLS, or client certificates \
                 without etcd auth",
            ),
            Kind::Decode(e) => write!(f, "unexpected response: {e}"),
            Kind::Config(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            Kind::Transport { error, .. } => Some(error),
            Kind::Decode(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EtcdError> for StoreError {
    /// Sorted by scope: a request refused for what it carries (a smaller one may pass),
    /// a cluster that takes no requests now (back off), a key outside the user's
    /// permissions; anything else (no answer...) ends the pass as it is.
    fn from(e: EtcdError) -> Self {
        match e.scope() {
            Some(Scope::Request) => StoreError::refused(e),
            Some(Scope::Cluster) => StoreError::cluster(e),
            None if matches!(*e.kind, Kind::PermissionDenied { .. }) => StoreError::denied(e),
            None => StoreError::new(e),
        }
    }
}

/// Transport failures, certificate problems above all, in words a person can act on.
/// rustls reports through `io::Error` text, so this matches on its wording.
fn describe_transport(e: &ureq::Error, tls: bool) -> String {
    let text = e.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("UnknownCA") {
        " (the server certificate is not signed by a trusted CA: \
         pass --etcd-cacert with the CA that signed it)"
            .to_string()
    } else if let Some(rest) = text.split("not valid for name ").nth(1) {
        let name = rest.split(';').next().unwrap_or(rest).trim();
        let valid = rest
            .split("only valid for ")
            .nth(1)
            .map(clean_names)
            .unwrap_or_default();
        let valid = if valid.is_empty() {
            String::new()
        } else {
            format!(" (it is valid for {valid})")
        };
        format!(
            " (the server certificate does not name {name}{valid}: \
             connect by a name or IP in its subjectAltName)"
        )
    } else if text.contains("NotValidForName") {
        " (the server certificate does not name this host: \
         connect by a name or IP in its subjectAltName)"
            .to_string()
    } else if text.contains("expired") || text.contains("Expired") {
        " (the server certificate has expired, or this machine's clock is wrong)".to_string()
    } else if text.contains("NotValidYet") || text.contains("not valid yet") {
        " (the server certificate is not valid yet, or this machine's clock is wrong)".to_string()
    } else if text.contains("BadCertificate")
        || text.contains("CertificateRequired")
        || text.contains("UnknownCA")
    {
        " (the server refused our client certificate or needs one: \
         pass --etcd-cert and --etcd-key with a certificate its CA signed)"
            .to_string()
    } else if tls
        && [
            "end of file",
            "reset by peer",
            "Peer disconnected",
            "InvalidContentType",
            "corrupt message",
        ]
        .iter()
        .any(|t| text.contains(t))
    {
        " (the TLS handshake failed: if this endpoint does not speak TLS, use etcd://)".to_string()
    } else if !tls
        && (text.contains("Peer disconnected")
            || text.contains("reset by peer")
            || text.contains("end of file"))
    {
        " (the endpoint closed the connection without an answer: if it speaks TLS, use etcds://)"
            .to_string()
    } else if matches!(e, ureq::Error::Timeout(_)) {
        " (no answer in time)".to_string()
    } else if matches!(e, ureq::Error::Protocol(_)) {
        " (the endpoint does not speak HTTP: is this etcd's client URL?)".to_string()
    } else if matches!(e, ureq::Error::HostNotFound) {
        " (the endpoint's host name does not resolve)".to_string()
    } else {
        String::new()
    };
    format!("{text}{hint}")
}

/// rustls's `[IpAddress(127.0.0.1), DnsName("a")]` as `127.0.0.1, a`.
fn clean_names(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            '[' | ']' | '"' => {}
            _ if depth > 0 => out.push(c),
            ',' => out.push_str(", "),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_in_words() {
        assert_eq!(clean_names(r#"IpAddress(127.0.0.1)"#), "127.0.0.1");
        assert_eq!(
            clean_names(r#"[IpAddress(127.0.0.1), DnsName("etcd.lan")]"#),
            "127.0.0.1, etcd.lan"
        );
        let e = ureq::Error::Io(std::io::Error::other(
            "invalid peer certificate: certificate not valid for name \"localhost\"; \
             certificate is only valid for IpAddress(127.0.0.1)",
        ));
        let text = describe_transport(&e, true);
        assert!(
            text.contains(r#"does not name "localhost" (it is valid for 127.0.0.1)"#),
            "{text}"
        );
        let e = ureq::Error::Io(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert!(describe_transport(&e, true).contains("pass --etcd-cacert"));
    }

    /// A token etcd refused is renewed, not taken for a request too big to pass.
    #[test]
    fn stale_tokens_are_told_from_refused_requests() {
        let api = |code, message: &str| {
            let message = format!("etcdserver: {message}");
            EtcdError::new(
                "txn",
                "e",
                Kind::Api {
                    status: 400,
                    code,
                    message,
                },
            )
        };
        for (e, stale, refused) in [
            (
                api(Code::Unauthenticated, "invalid auth token"),
                true,
                false,
            ),
            (
                api(Code::InvalidArgument, "revision of auth store is old"),
                true,
                false,
            ),
            (
                api(Code::InvalidArgument, "too many operations in txn request"),
                false,
                true,
            ),
            (
                api(Code::NotFound, "requested lease not found"),
                false,
                false,
            ),
        ] {
            let text = e.to_string();
            assert_eq!(e.stale_token(), stale, "{text}");
            assert_eq!(StoreError::from(e).is_refused(), refused, "{text}");
        }
    }

    #[test]
    fn messages_name_the_operation_key_and_endpoint() {
        let e = EtcdError::new("version", "http://e:2379", Kind::BadAnswer("x".into()))
            .about("range", "/s/");
        assert_eq!(
            e.to_string(),
            "etcd range of /s/ at http://e:2379: not an etcd answer (x)"
        );
        assert!(e.unreachable());
        let e = EtcdError::new(
            "lease revoke",
            "http://e:2379",
            Kind::Api {
                status: 404,
                code: Code::NotFound,
                message: "etcdserver: requested lease not found".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "etcd lease revoke at http://e:2379: \
             HTTP 404, code 5: etcdserver: requested lease not found"
        );
        assert_eq!(e.refusal().map(|(c, _)| c), Some(Code::NotFound));
        assert!(!e.unreachable());
    }
}
