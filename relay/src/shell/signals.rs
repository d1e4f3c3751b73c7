//! Graceful shutdown on SIGTERM/SIGINT (Linux).
//!
//! [`Shutdown::install`] sets `sigaction` handlers that do the only async-signal-safe
//! thing needed: write one byte to a self-pipe (non-blocking, so a handler never
//! blocks). A small thread reads the pipe and [`trigger`](Shutdown::trigger)s: it sets
//! the flag and wakes every registered `mio::Waker`, so each worker's `poll` returns,
//! sees [`is_set`](Shutdown::is_set) and winds down. A second signal while shutting down
//! exits at once with status 128 + signal (the operator pressed Ctrl-C twice).
//!
//! ```no_run
//! use std::sync::Arc;
//! use blindfold_relay::shell::signals::Shutdown;
//!
//! let shutdown = Shutdown::install().unwrap();
//! let mut poll = mio::Poll::new().unwrap();
//! let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(usize::MAX)).unwrap());
//! shutdown.add_waker(waker);
//! let mut events = mio::Events::with_capacity(64);
//! while !shutdown.is_set() {
//!     poll.poll(&mut events, None).unwrap();
//!     // … handle events …
//! }
//! ```

use std::io::{self, Read};
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

/// The pipe's write end, for the handler (-1 before installation).
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);
/// Set by the first signal; a second one exits at once.
static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Installation happens once per process.
static INSTALLED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
}

/// A shutdown flag that wakes registered mio loops when set. Cheap to clone; every clone
/// shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl Shutdown {
    /// A flag that only [`trigger`](Self::trigger) sets (no signal handlers): for tests
    /// and for a binary that stops on a fatal error.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the SIGTERM and SIGINT handlers and the thread that turns a signal into
    /// [`trigger`](Self::trigger). Once per process.
    ///
    /// # Errors
    /// `AlreadyExists` on a second call; otherwise creating the pipe, setting the
    /// handlers or spawning the thread failed.
    pub fn install() -> io::Result<Self> {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "signal handlers already installed",
            ));
        }
        let (mut reader, writer) = io::pipe()?;
        let wr = writer.into_raw_fd();
        // SAFETY: `wr` is the pipe's write end we own; F_GETFL/F_SETFL take and return ints.
        let rc = unsafe {
            let flags = libc::fcntl(wr, libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(wr, libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        PIPE_WR.store(wr, Ordering::SeqCst);
        let shutdown = Self::new();
        let thread_side = shutdown.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                loop {
                    match reader.read(&mut byte) {
                        Ok(1) => thread_side.trigger(),
                        Ok(_) => return, // write end closed: cannot happen, it is never closed
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })?;
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: a zeroed `sigaction` is valid; we then set a handler that only does
            // async-signal-safe work (atomics, `write`, `_exit`), an emptied mask and
            // SA_RESTART so interrupted syscalls elsewhere resume.
            let rc = unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(shutdown)
    }

    /// Whether shutdown was requested. One relaxed load: check it after every `poll`.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// Registers a waker to wake when shutdown is requested (now, if it already was).
    pub fn add_waker(&self, waker: Arc<mio::Waker>) {
        let mut wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.is_set() {
            let _ = waker.wake();
        }
        wakers.push(waker);
    }

    /// Requests shutdown: sets the flag and wakes every registered waker.
    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::Release);
        let wakers = self
            .inner
            .wakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for w in wakers.iter() {
            if let Err(e) = w.wake() {
                tracing::warn!(error = %e, "waking a worker for shutdown failed");
            }
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if SIGNALLED.swap(true, Ordering::SeqCst) {
        // SAFETY: `_exit` is async-signal-safe and never returns.
        unsafe { libc::_exit(128 + sig) };
    }
    // SAFETY: `__errno_location` returns this thread's errno slot; saving and restoring
    // it keeps the interrupted code's errno intact across our `write`.
    let errno = unsafe { *libc::__errno_location() };
    let fd = PIPE_WR.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = [sig as u8];
        // SAFETY: `write` is async-signal-safe; `fd` is the non-blocking write end of our
        // pipe, never closed; `byte` is a valid 1-byte buffer. A full pipe (EAGAIN) is
        // fine: the reader already has a byte to wake on.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn poll_with_waker(shutdown: &Shutdown) -> (mio::Poll, mio::Events) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).unwrap());
        shutdown.add_waker(waker);
        (poll, mio::Events::with_capacity(4))
    }

    #[test]
    fn trigger_sets_the_flag_and_wakes_every_loop() {
        let shutdown = Shutdown::new();
        let (mut p1, mut e1) = poll_with_waker(&shutdown);
        let (mut p2, mut e2) = poll_with_waker(&shutdown);
        assert!(!shutdown.is_set());
        let clone = shutdown.clone();
        std::thread::spawn(move || clone.trigger()).join().unwrap();
        p1.poll(&mut e1, Some(Duration::from_secs(5))).unwrap();
        p2.poll(&mut e2, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(e1.iter().next().map(|e| e.token()), Some(mio::Token(7)));
        assert_eq!(e2.iter().next().map(|e| e.token()), Some(mio::Token(7)));
        assert!(shutdown.is_set());
        // A loop registering after the fact is woken at once.
        let (mut p3, mut e3) = poll_with_waker(&shutdown);
        p3.poll(&mut e3, Some(Duration::from_secs(5))).unwrap();
        assert!(!e3.is_empty());
    }

    /// The only test in this crate that raises a real signal (handlers are per process).
    #[test]
    fn sigterm_wakes_the_loop() {
        let shutdown = Shutdown::install().unwrap();
        assert_eq!(
            Shutdown::install().unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        let (mut poll, mut events) = poll_with_waker(&shutdown);
        // SAFETY: sending ourselves SIGTERM; the handler installed above catches it.
        assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGTERM) }, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !shutdown.is_set() && std::time::Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
        }
        assert!(shutdown.is_set());
    }
}
