//! The one error of the command line: a mistake the user typed, shown as one line.

use std::fmt;

/// A mistake on the command line: printed as one line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A [`UsageError`] of this message.
pub fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}
