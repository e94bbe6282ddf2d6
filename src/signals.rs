//! SIGTERM and SIGINT as a message on the loop's channel, so the loop can stop cleanly.
//!
//! The signals are blocked in every thread (call [`block`] before spawning any) and a
//! dedicated thread takes them with `sigwait`: no async-signal-safety concerns, and it
//! works as PID 1 in a container, where unhandled SIGTERM would be ignored.

use std::io;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::reconcile::Wake;

fn set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and every thread spawned after.
pub fn block() -> io::Result<()> {
    let set = set();
    // SAFETY: a valid set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// How long the loop gets to notice a shutdown before blocked requests are interrupted.
const GRACE: Duration = Duration::from_millis(700);

/// Spawns the thread that turns a signal into [`Wake::Shutdown`]. If the loop is still
/// busy after a short grace period (a request hanging on a slow endpoint), `interrupt`
/// runs to abort blocked I/O, so the process still exits within a second.
pub fn forward(tx: Sender<Wake>, interrupt: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = set();
            let mut sig: libc::c_int = 0;
            // SAFETY: a valid set and an out pointer to a local.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            log::debug!("signal {sig}: shutting down");
            if tx.send(Wake::Shutdown).is_err() {
                return;
            }
            std::thread::sleep(GRACE);
            log::warn!("still busy {GRACE:?} after signal {sig}: interrupting pending requests");
            interrupt();
        })?;
    Ok(())
}
