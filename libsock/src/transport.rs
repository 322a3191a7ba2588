//! The transport: the only way libsock reaches the net server.

use core::time::Duration;
use net_api::{DataRegion, Errno};

/// Why [`Transport::wait`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The server signalled (or a signal was already pending). May be spurious.
    Signalled,
    /// The timeout passed without a signal.
    TimedOut,
}

/// One client's connection to the net server. See the crate docs ("The Transport contract") for
/// the precise rules; in short:
///
/// * [`call`](Transport::call) is one synchronous control round trip (`seL4_Call` on seL4).
/// * [`wait`](Transport::wait) blocks on the client's notification, which is *sticky*.
/// * [`region`](Transport::region) is the client's data area, shared with the server.
///
/// A `Transport` is used from every thread that uses the [`crate::Client`], so it is `&self`
/// throughout; implementations that are not thread-safe make the client `!Sync`, which is fine.
pub trait Transport {
    /// The shared data area's memory.
    type Region: DataRegion;

    /// The lock behind the client's own bookkeeping (its session and socket table), shared by
    /// all threads of the client. On seL4, threads of one component may have different
    /// priorities and the scheduler is strictly by priority, so this lock must block, never only
    /// spin (`sel4_rt::sync::RawMutex`); host transports may spin.
    type RawLock: lock_api::RawMutex;

    /// Sends one encoded request (at most [`net_api::MAX_MSG`] bytes) and blocks until the
    /// server's encoded response has been written to the start of `response` (a
    /// [`net_api::MAX_MSG`]-byte buffer); returns its length. An `Err` means the transport
    /// itself failed (the server is gone: use [`Errno::ServerRestarted`]); protocol errors come
    /// back inside the response.
    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno>;

    /// Blocks until the server signals this client or `timeout` passes (`None`: no limit).
    /// Must return [`Wake::Signalled`] at once if a signal arrived since the previous `wait`
    /// returned (signals are sticky and coalesce into one). Spurious `Signalled` is allowed.
    fn wait(&self, timeout: Option<Duration>) -> Wake;

    /// A monotonic clock (any origin), used for poll timeouts.
    fn now(&self) -> Duration;

    /// The client's data area.
    fn region(&self) -> &Self::Region;

    /// Called between polls by a thread that waits for another thread of this client with a
    /// deadline (a timed wait cannot block on seL4 5.0). Default: a CPU spin hint; transports
    /// yield the thread.
    fn relax(&self) {
        core::hint::spin_loop();
    }

    /// Blocks the calling thread until `ready()` holds: how a thread of this client waits for
    /// another one (for a free data-area slot, or for the thread blocked in [`wait`] to pass a
    /// signal on). Woken by [`unpark_all`], which the client calls after every change such a
    /// thread may wait for; `ready` is re-checked after every wake-up. Must not lose a wake-up
    /// between the check and the block. Default: poll with [`relax`] (for transports whose
    /// clients have one thread).
    ///
    /// [`wait`]: Transport::wait
    /// [`unpark_all`]: Transport::unpark_all
    /// [`relax`]: Transport::relax
    fn park_until(&self, ready: &dyn Fn() -> bool) {
        while !ready() {
            self.relax();
        }
    }

    /// Wakes every thread in [`park_until`](Transport::park_until). Default: nothing to do.
    fn unpark_all(&self) {}

    /// Whether [`wait`](Transport::wait) with a timeout can only poll (seL4 5.0 has no timed
    /// `Wait`). Then a client about to block until a deadline asks the server for a wake-up at
    /// that deadline (`Request::WakeAfter`) and blocks without a timeout. Default: `false`.
    fn timed_wait_polls(&self) -> bool {
        false
    }
}

impl<T: Transport + ?Sized> Transport for alloc::sync::Arc<T> {
    type Region = T::Region;
    type RawLock = T::RawLock;
    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        (**self).call(request, response)
    }
    fn wait(&self, timeout: Option<Duration>) -> Wake {
        (**self).wait(timeout)
    }
    fn now(&self) -> Duration {
        (**self).now()
    }
    fn region(&self) -> &Self::Region {
        (**self).region()
    }
    fn relax(&self) {
        (**self).relax()
    }
    fn park_until(&self, ready: &dyn Fn() -> bool) {
        (**self).park_until(ready)
    }
    fn unpark_all(&self) {
        (**self).unpark_all()
    }
    fn timed_wait_polls(&self) -> bool {
        (**self).timed_wait_polls()
    }
}
