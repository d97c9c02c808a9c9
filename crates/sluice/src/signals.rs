//! Signals for `sluice run`, taken synchronously: the handled signals are blocked in every
//! thread (the mask is set before any thread starts, and threads inherit it) and the main
//! thread collects them with `sigtimedwait`, which doubles as its one-second timer. No
//! handler runs asynchronously, so nothing has to be async-signal-safe.

use std::io;
use std::time::Duration;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP: re-read the policy file.
    Reload,
    /// SIGTERM or SIGINT: stop cleanly.
    Stop(&'static str),
    /// SIGUSR1: log the counters now.
    Report,
}

const HANDLED: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGTERM, libc::SIGINT, libc::SIGUSR1];

/// The blocked signal set; create it before starting any thread.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGHUP, SIGTERM, SIGINT and SIGUSR1 in the calling thread (and so in every
    /// thread it starts afterwards).
    pub fn block() -> io::Result<Signals> {
        // SAFETY: `sigset_t` is plain data; sigemptyset initialises it before any other use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for sig in HANDLED {
            // SAFETY: `set` was initialised by sigemptyset; `sig` is a valid signal number.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
        // SAFETY: `set` is initialised; the old mask is not wanted.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(Signals { set })
    }

    /// Waits up to `timeout` for one of the blocked signals.
    pub fn wait(&self, timeout: Duration) -> Option<Request> {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: `set` is an initialised signal set and `ts` a valid timespec, both live for
        // the call; the siginfo out-pointer may be null.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGHUP => Some(Request::Reload),
            libc::SIGTERM => Some(Request::Stop("SIGTERM")),
            libc::SIGINT => Some(Request::Stop("SIGINT")),
            libc::SIGUSR1 => Some(Request::Report),
            // -1: the timeout passed (EAGAIN) or another signal interrupted the wait (EINTR).
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_signal_is_collected_not_delivered() {
        // The mask is per thread: run on a fresh one so other tests are unaffected. The
        // signal is sent to this thread only, so the process's other threads (which do not
        // block it) cannot take it.
        std::thread::spawn(|| {
            let signals = Signals::block().unwrap();
            assert_eq!(signals.wait(Duration::from_millis(10)), None);
            // SAFETY: raising a blocked signal at the calling thread only queues it.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
            assert_eq!(signals.wait(Duration::from_secs(1)), Some(Request::Report));
            // SAFETY: as above.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            assert_eq!(signals.wait(Duration::from_secs(1)), Some(Request::Reload));
        })
        .join()
        .unwrap();
    }
}
