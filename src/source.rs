//! The containers the reconciler reads and the changes it is told of, in its own words:
//! the Docker client implements it (and speaks dockerd's and Podman's vocabulary), the
//! reconciler's unit tests script it.

use std::fmt;

use crate::service::Container;

/// Reads the containers of this host.
pub trait Source {
    /// The running (and paused) containers.
    fn containers(&mut self) -> Result<Vec<Container>, SourceError>;
    /// One container, fresh; None when it no longer exists.
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, SourceError>;
}

/// What an event says of a container, for the registrator. Events that change nothing
/// registered (a container created, an exec) are not reported at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It may serve now (started, unpaused, restarted): inspect it.
    Up,
    /// It stopped serving (died, stopped, paused, removed): any one of these is enough.
    Down,
    /// Its health changed: inspect it (only inspect tells the new state reliably).
    Health,
}

/// One container event, as the engine's event stream reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub change: Change,
    /// The container's ID.
    pub id: String,
}

/// Why the containers could not be read: the engine client's error, whole (it names
/// the operation and the endpoint).
#[derive(Debug)]
pub struct SourceError {
    inner: Box<dyn std::error::Error + Send + Sync>,
}

impl SourceError {
    pub fn new(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        SourceError { inner: e.into() }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}
