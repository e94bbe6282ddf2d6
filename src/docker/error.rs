//! Why a Docker request failed: the operation, the endpoint and what went wrong, with
//! hints for the TLS failures a DOCKER_CERT_PATH setup runs into.

use std::fmt;

use crate::source::SourceError;

/// Why a Docker request failed, with the operation and the endpoint.
#[derive(Debug)]
pub struct DockerError {
    op: String,
    endpoint: String,
    kind: Kind,
}

/// What went wrong.
#[derive(Debug)]
pub(super) enum Kind {
    Transport(ureq::Error),
    Status(u16, String),
    Decode(serde_json::Error, String),
    /// The TLS files in DOCKER_CERT_PATH could not be used.
    Tls(String),
}

impl DockerError {
    pub(super) fn new(op: &str, endpoint: &str, kind: Kind) -> DockerError {
        DockerError {
            op: op.to_string(),
            endpoint: endpoint.to_string(),
            kind,
        }
    }

    /// HTTP status of an answered request, if that is what failed.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            Kind::Status(s, _) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for DockerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "docker {} at {}: ", self.op, self.endpoint)?;
        match &self.kind {
            Kind::Transport(ureq::Error::BodyExceedsLimit(n)) => {
                write!(
                    f,
                    "the answer is larger than {} MiB, the cap for it",
                    n >> 20
                )
            }
            Kind::Transport(e) => write!(f, "{e}{}", tls_hint(&e.to_string())),
            Kind::Status(s, body) => write!(f, "HTTP {s}: {}", snippet(body)),
            Kind::Tls(why) => f.write_str(why),
            Kind::Decode(e, body) => write!(f, "cannot parse response ({e}): {}", snippet(body)),
        }
    }
}

impl std::error::Error for DockerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            Kind::Transport(e) => Some(e),
            Kind::Decode(e, _) => Some(e),
            Kind::Status(..) | Kind::Tls(_) => None,
        }
    }
}

/// What a TLS failure means for DOCKER_CERT_PATH (rustls says it in its own words).
fn tls_hint(text: &str) -> &'static str {
    if text.contains("UnknownIssuer") {
        " (the daemon's certificate is not signed by the CA in DOCKER_CERT_PATH's ca.pem)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " (the daemon's certificate does not name the host in DOCKER_HOST)"
    } else if text.contains("Expired") || text.contains("expired") {
        " (the daemon's certificate has expired, or this machine's clock is wrong)"
    } else if ["CertificateRequired", "BadCertificate", "UnknownCA"]
        .iter()
        .any(|t| text.contains(t))
    {
        " (the daemon wants a client certificate it trusts: cert.pem and key.pem in \
         DOCKER_CERT_PATH)"
    } else {
        ""
    }
}

fn snippet(body: &str) -> String {
    let one_line = body.trim().replace('\n', " ");
    if one_line.len() > 300 {
        let mut end = 300;
        while !one_line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &one_line[..end])
    } else {
        one_line
    }
}

impl From<DockerError> for SourceError {
    fn from(e: DockerError) -> Self {
        SourceError::new(e)
    }
}
