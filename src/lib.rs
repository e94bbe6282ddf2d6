//! etcd-registrator: keeps the published ports of one Docker host's containers
//! registered in etcd v3. The binary (`src/main.rs`) parses, wires these parts together
//! and exits; everything else lives here so the examples, tests and bench reuse it.

pub mod cli;
pub mod docker;
pub mod etcd;
pub mod events;
pub mod hostaddr;
pub mod lease;
pub mod plan;
pub mod service;
pub mod signals;
pub mod store;
pub mod sync;
pub mod transport;
