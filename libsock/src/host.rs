//! Host (std) building blocks for a [`Transport`](crate::Transport): a sticky notification and
//! a transport that hands each call to a function, so tests can run the real client against the
//! real server (in this or another thread) with the same encoding and data-area code as on seL4.

use std::boxed::Box;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use net_api::{AtomicRegion, Errno};

use crate::transport::{Transport, Wake};

/// A sticky, coalescing wake-up flag: the host stand-in for an seL4 notification.
/// `signal` sets it; `wait` returns at once if it is set (clearing it), else blocks until it is
/// set or the timeout passes.
#[derive(Default)]
pub struct Signal {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Signal {
    pub fn new() -> Signal {
        Signal::default()
    }

    /// Sets the flag and wakes a waiter. Never blocks for long; callable from any thread.
    pub fn signal(&self) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *p = true;
        self.cv.notify_all();
    }

    /// Waits for the flag (see the type docs) and clears it.
    pub fn wait(&self, timeout: Option<Duration>) -> Wake {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *p {
                *p = false;
                return Wake::Signalled;
            }
            match deadline {
                None => p = self.cv.wait(p).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Wake::TimedOut;
                    }
                    p = self.cv.wait_timeout(p, d - now).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
    }

    /// Whether a signal is pending (does not clear it).
    pub fn is_pending(&self) -> bool {
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The function a [`HostTransport`] calls for each control round trip: encoded request in,
/// encoded response written to the buffer, its length out (the server side typically calls
/// `net_api::codec::serve`).
pub type CallFn = dyn Fn(&[u8], &mut [u8]) -> Result<usize, Errno> + Send + Sync;

/// A transport over host memory: the data area is an [`AtomicRegion`] shared (by `Arc`) with the
/// server, wake-ups are a [`Signal`] shared with the server, and each call runs `call` (which
/// may run the server inline or pass the message to a server thread and wait for the reply).
pub struct HostTransport {
    call: Box<CallFn>,
    signal: Arc<Signal>,
    region: Arc<AtomicRegion>,
    origin: Instant,
    /// Threads of this client parked for one another ([`Transport::park_until`]).
    parked: (Mutex<u64>, Condvar),
}

impl HostTransport {
    pub fn new(
        region: Arc<AtomicRegion>,
        signal: Arc<Signal>,
        call: impl Fn(&[u8], &mut [u8]) -> Result<usize, Errno> + Send + Sync + 'static,
    ) -> HostTransport {
        HostTransport {
            call: Box::new(call),
            signal,
            region,
            origin: Instant::now(),
            parked: (Mutex::new(0), Condvar::new()),
        }
    }

    /// The client's notification (the server side keeps a clone to signal it).
    pub fn signal(&self) -> &Arc<Signal> {
        &self.signal
    }
}

impl Transport for HostTransport {
    type Region = Arc<AtomicRegion>;
    // Host threads are not scheduled by strict priority: a spinning lock is fine here.
    type RawLock = spin::Mutex<()>;

    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        (self.call)(request, response)
    }

    fn wait(&self, timeout: Option<Duration>) -> Wake {
        self.signal.wait(timeout)
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn region(&self) -> &Arc<AtomicRegion> {
        &self.region
    }

    fn relax(&self) {
        std::thread::yield_now();
    }

    fn park_until(&self, ready: &dyn Fn() -> bool) {
        let mut turns = self.parked.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock that `unpark_all` takes after the state changed: no wake-up
        // falls between the check and the wait.
        while !ready() {
            turns = self.parked.1.wait(turns).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn unpark_all(&self) {
        let mut turns = self.parked.0.lock().unwrap_or_else(PoisonError::into_inner);
        *turns += 1;
        self.parked.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_is_sticky_and_coalesces() {
        let s = Signal::new();
        assert_eq!(s.wait(Some(Duration::ZERO)), Wake::TimedOut);
        s.signal();
        s.signal();
        assert!(s.is_pending());
        assert_eq!(s.wait(Some(Duration::ZERO)), Wake::Signalled);
        // Two signals coalesced into one.
        assert_eq!(s.wait(Some(Duration::from_millis(1))), Wake::TimedOut);
    }

    #[test]
    fn signal_wakes_a_blocked_waiter() {
        let s = Arc::new(Signal::new());
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait(None));
        std::thread::sleep(Duration::from_millis(5));
        s.signal();
        assert_eq!(t.join().unwrap(), Wake::Signalled);
    }
}
