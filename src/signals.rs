//! SIGTERM and SIGINT as a message on the loop's channel, so the loop can stop cleanly.
//!
//! The signals are blocked in every thread (call [`block`] before spawning any) and a
//! dedicated thread takes them with `sigwait`: no async-signal-safety concerns, and it
//! works as PID 1 in a container, where unhandled SIGTERM would be ignored.

use std::io;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

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

/// How long after the first signal the exit's own requests (`--deregister-on-exit`) may
/// run before they are interrupted too.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// Waits for SIGTERM or SIGINT, at most `limit` (None: for ever); the signal, if any.
fn wait(set: &libc::sigset_t, limit: Option<Duration>) -> Option<libc::c_int> {
    let Some(limit) = limit else {
        let mut sig: libc::c_int = 0;
        // SAFETY: a valid set and an out pointer to a local.
        while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
        return Some(sig);
    };
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let timeout = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: a valid set, a null info pointer (allowed) and a valid timeout.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            return Some(sig);
        }
        // -1: EAGAIN (timed out) or EINTR; the loop checks the time left.
    }
}

/// Spawns the thread that turns a signal into [`Wake::Shutdown`]. If the loop is still
/// busy after a short grace period (a request hanging on a slow endpoint),
/// `interrupt_loop` runs to abort its blocked I/O, so the process still exits within a
/// second. `interrupt_exit` aborts the exit's own requests (`--deregister-on-exit`):
/// at [`EXIT_DEADLINE`], or at once on a second signal (which runs both).
pub fn forward(
    tx: SyncSender<Wake>,
    interrupt_loop: impl FnOnce() + Send + 'static,
    interrupt_exit: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = set();
            let Some(sig) = wait(&set, None) else {
                return;
            };
            log::debug!("signal {sig}: shutting down");
            let start = Instant::now();
            // The wake-up queue is bounded: should it be full, the send waits for the
            // loop on a thread of its own, so the timers below still run.
            let queued = std::thread::Builder::new()
                .name("signals-send".into())
                .spawn(move || tx.send(Wake::Shutdown).is_ok());
            if queued.is_err() {
                interrupt_loop();
                interrupt_exit();
                return;
            }
            let mut second = wait(&set, Some(GRACE));
            log::debug!("interrupting the loop's pending requests, if any");
            interrupt_loop();
            if second.is_none() {
                second = wait(&set, Some(EXIT_DEADLINE.saturating_sub(start.elapsed())));
            }
            match second {
                Some(s) => log::warn!("second signal {s}: exiting at once"),
                None => log::warn!(
                    "still deregistering {EXIT_DEADLINE:?} after signal {sig}: giving up"
                ),
            }
            interrupt_exit();
        })?;
    Ok(())
}
