//! The containers the reconciler reads, in its own words: Docker implements it, the
//! reconciler's unit tests script it.

use crate::docker::DockerError;
use crate::service::Container;

/// Reads the containers of this host.
pub trait Source {
    /// The running (and paused) containers.
    fn containers(&mut self) -> Result<Vec<Container>, DockerError>;
    /// One container, fresh; None when it no longer exists.
    fn inspect(&mut self, id: &str) -> Result<Option<Container>, DockerError>;
}
