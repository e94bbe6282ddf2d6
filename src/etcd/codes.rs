//! The gRPC status codes etcd's gateway puts in its error bodies, by name.

use std::fmt;

/// A gRPC status code (the `code` of an error body). Only some are acted on; the rest
/// are named so messages and logs can be read against the gRPC documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    /// 0: also what an error body without a code is taken to say.
    Ok,
    Cancelled,
    Unknown,
    /// 3: bad JSON, base64 or enum; "user name is empty"; "authentication failed";
    /// "revision of auth store is old" (a JWT token issued before an auth change).
    InvalidArgument,
    DeadlineExceeded,
    /// 5: "requested lease not found".
    NotFound,
    AlreadyExists,
    /// 7: the user's roles do not cover the key.
    PermissionDenied,
    ResourceExhausted,
    /// 9: "authentication is not enabled".
    FailedPrecondition,
    Aborted,
    /// 11: the revision asked for was compacted.
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    /// 16: "invalid auth token" (expired, or forgotten by a restarted etcd).
    Unauthenticated,
    /// A number gRPC does not define.
    Other(i64),
}

const NAMED: [Code; 17] = [
    Code::Ok,
    Code::Cancelled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl From<i64> for Code {
    fn from(n: i64) -> Code {
        usize::try_from(n)
            .ok()
            .and_then(|i| NAMED.get(i).copied())
            .unwrap_or(Code::Other(n))
    }
}

impl Code {
    /// The number on the wire.
    pub(crate) fn number(self) -> i64 {
        match self {
            Code::Other(n) => n,
            // NAMED lists the codes in numeric order.
            named => NAMED.iter().position(|c| *c == named).unwrap_or(0) as i64,
        }
    }
}

/// The number, as etcd and gRPC documentation print it.
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names() {
        for (n, code) in [
            (0, Code::Ok),
            (3, Code::InvalidArgument),
            (5, Code::NotFound),
            (7, Code::PermissionDenied),
            (9, Code::FailedPrecondition),
            (11, Code::OutOfRange),
            (14, Code::Unavailable),
            (16, Code::Unauthenticated),
            (17, Code::Other(17)),
            (-1, Code::Other(-1)),
        ] {
            assert_eq!(Code::from(n), code, "{n}");
            assert_eq!(code.number(), n, "{code:?}");
            assert_eq!(code.to_string(), n.to_string());
        }
    }
}
