//! etcd-registrator: keeps the published ports of one Docker host's containers
//! registered in etcd v3. The binary (`src/main.rs`) parses, sets up, runs and exits;
//! everything else lives here so the examples, tests and bench reuse it.

pub mod app;
pub mod backoff;
pub mod cli;
pub mod docker;
pub mod etcd;
pub mod events;
pub mod health;
pub mod hostaddr;
pub mod http;
pub mod keepalive;
pub mod keys;
pub mod logging;
pub mod ls;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod service;
pub mod setup;
pub mod signals;
pub mod source;
pub mod store;
pub mod transport;
