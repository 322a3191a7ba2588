//! What the seL4 shell (or the host harness) supplies: frames, time, blocking.
//!
//! * [`FrameRx`] / [`FrameTx`]: one worker's frame queues (on seL4 the shared rings to the driver,
//!   after steering; on the host the in-memory link). The closures let an implementation hand out
//!   its own buffers, so zero-copy rings fit: smoltcp reads a received frame in place and builds
//!   a transmitted frame in place.
//! * [`Clock`]: a monotonic clock in microseconds (host: `std::time::Instant`; seL4: TSC).
//! * [`Signal`](crate::wake::Signal) / [`Wait`](crate::wake::Wait): sticky wake-ups (host: a flag
//!   under a mutex with a condvar; seL4: notification objects).
//! * The raw mutex under every lock ([`RawLock`](crate::lock::RawLock)): host `parking_lot`;
//!   seL4 a mutex that spins briefly and then blocks on a notification.

/// Receive side of one worker's frame device.
pub trait FrameRx: Send {
    /// Calls `f` with the next received frame without consuming it; `None` when there is none.
    fn peek<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T>;
    /// Calls `f` with the next received frame and consumes it; `None` when there is none.
    fn recv<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T>;
    /// Whether a frame is waiting.
    fn pending(&self) -> bool;
}

/// Transmit side of one worker's frame device.
pub trait FrameTx: Send {
    /// Largest frame, Ethernet header included (1514 for a 1500-byte MTU).
    fn max_frame(&self) -> usize;
    /// Whether a transmit buffer is free now.
    fn can_send(&self) -> bool;
    /// Lets `f` build a frame of exactly `len` bytes in a transmit buffer and sends it. `None`
    /// when no buffer is free (then `f` is not called).
    fn send<T>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> Option<T>;
}

/// A monotonic clock.
pub trait Clock: Send + Sync {
    /// Microseconds since an arbitrary origin; never goes backwards.
    fn now_micros(&self) -> u64;
}
