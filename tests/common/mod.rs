//! Test helpers for the integration tests and the bench, one file per thing they drive;
//! this file only names them and reads the environment `tests/daemons.sh run` sets.
//!
//! Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod cluster;
pub mod docker;
pub mod etcd;
pub mod http;
pub mod registrator;
pub mod relay;
pub mod sys;

// Every test file takes them all with `use common::*`, and uses some.
#[allow(unused_imports)]
pub use {cluster::*, docker::*, etcd::*, registrator::*, sys::*};

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs each test `fn NAME(engine: Engine)` once per engine, as the tests `NAME::docker`
/// and `NAME::podman` (`cargo test podman` picks the Podman ones). The Podman one is
/// skipped, saying so, only when `tests/podman.sh run` did not set Podman up.
#[allow(unused_macros)]
macro_rules! per_engine {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[test]
            fn docker() {
                super::$test($crate::common::Engine::Docker)
            }

            #[test]
            fn podman() {
                if let Some(engine) = $crate::common::Engine::podman() {
                    super::$test(engine)
                }
            }
        }
    )+};
}
#[allow(unused_imports)]
pub(crate) use per_engine;

/// A variable `tests/daemons.sh run` exports (`REG_ETCD`, `DOCKER_HOST`, `REG_IMAGE`).
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the integration tests with `make test` and the bench \
             with `make bench` (both under tests/daemons.sh run)"
        )
    })
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test run: `<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}
