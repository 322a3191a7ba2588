//! Wake-ups that cannot be lost: readiness bits, one waiter slot per socket, sticky signals.
//!
//! This is the seed's interlocked sleep (`msleep` with the socket mutex as interlock), made to
//! work across a protection boundary where the sleeper is another process:
//!
//! * A socket's **readiness** is a word of bits ([`IN`], [`OUT`], [`ERR`], [`HUP`]) that is
//!   changed only while holding the lock of the state it summarizes (a `SockBuf`, the accept
//!   queue, or the socket lock), so it always matches that state.
//! * A **waiter** (client `C` wants `IN` on this socket) is recorded in the socket's
//!   [`Notify`](crate::lock::Notify)-level slot.
//! * **Arm** = record the waiter under the `Notify` lock, *then* read the readiness word.
//!   **Notify** = set readiness bits, *then* take the `Notify` lock and, if a waiter wants any of
//!   them, remove it and signal it (after unlocking).
//!   Whichever of the two `Notify` critical sections comes second sees the other side's write: if
//!   the notifier's comes second it finds the waiter; if the arm's comes second, the notifier's
//!   bit store happened before its unlock, which happened before the arm's lock, so the arm's read
//!   sees the bit. Either the waiter sees "ready" or it gets a signal.
//! * **Signals are sticky** ([`Signal`]): a signal sent before the waiter blocks is kept, so the
//!   window between "arm returned not-ready" and "block" loses nothing. A woken waiter always
//!   re-checks (signals may be spurious).
//!
//! The waiter therefore never sleeps holding a socket lock, and the notifier never takes the
//! `Notify` lock while holding a `SockBuf` lock (they are equal rank and do not nest).
//! `tests/loom.rs` model-checks this protocol (and shows that dropping the "then re-read" step
//! loses a wake-up).

use core::time::Duration;

use crate::lock::{Mutex, Notify, RawLock};
use crate::sync::{AtomicU32, Ordering};

/// Readable: data, end of file, or a pending connection. Same value as `PollEvents::IN`.
pub const IN: u32 = 0x1;
/// Writable: send space, or a connect finished. Same value as `PollEvents::OUT`.
pub const OUT: u32 = 0x4;
/// Error pending. Same value as `PollEvents::ERR`.
pub const ERR: u32 = 0x8;
/// Hang-up: connection gone. Same value as `PollEvents::HUP`.
pub const HUP: u32 = 0x10;
/// Bits reported whatever the interest.
pub const ALWAYS: u32 = ERR | HUP;

/// A sticky wake-up: a binary semaphore. On seL4 a notification object (`seL4_Signal`); on the
/// host a flag under a mutex with a condition variable.
pub trait Signal: Send + Sync {
    /// Sets the signal and wakes the waiter if one is blocked. A signal nobody waits for yet is
    /// kept until the next wait (signals coalesce).
    fn signal(&self);
}

/// A [`Signal`] that its owner can block on.
pub trait Wait: Signal {
    /// Blocks until signalled or `timeout` passes (`None`: no limit); consumes the signal.
    /// Returns whether it was signalled. Returns at once if a signal is pending.
    fn wait(&self, timeout: Option<Duration>) -> bool;
}

/// A signal that does nothing (for sockets nobody waits on, and tests).
#[derive(Debug, Default)]
pub struct NoSignal;

impl Signal for NoSignal {
    fn signal(&self) {}
}

/// A registered waiter: who to signal and for which bits.
pub struct Waiter {
    interest: u32,
    signal: alloc::sync::Arc<dyn Signal>,
}

/// A socket's readiness word and waiter slots: the client's (one, see [`WaitSlot::arm`]) and
/// those of server threads holding a client's call until the socket is ready
/// ([`WaitSlot::arm_held`]).
pub struct WaitSlot<R: RawLock> {
    ready: AtomicU32,
    waiter: Mutex<Notify, Waiters, R>,
}

/// The waiters of one socket (one `Notify` lock covers both).
#[derive(Default)]
struct Waiters {
    /// The client's own wake-up (a different signal replaces it).
    client: Option<Waiter>,
    /// Server threads holding a deferred call on this socket, one entry per distinct signal
    /// (at most one per such thread).
    held: alloc::vec::Vec<Waiter>,
}

impl<R: RawLock> Default for WaitSlot<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R: RawLock> WaitSlot<R> {
    /// Not ready, nobody waiting.
    pub fn new() -> Self {
        WaitSlot { ready: AtomicU32::new(0), waiter: Mutex::new(Waiters::default()) }
    }

    /// The readiness bits now.
    pub fn readiness(&self) -> u32 {
        self.ready.load(Ordering::SeqCst)
    }

    /// Arms a wake-up for `interest` (plus [`ALWAYS`]) and returns the bits of those that are
    /// already ready. When the result is non-zero the caller must not block (the waiter stays
    /// armed; at worst it gets one spurious signal later).
    ///
    /// Interests accumulate while the same signal is armed: two threads of one client waiting
    /// on one socket for different events (one for `IN`, one for `OUT`) must both be woken, and
    /// the client's signal wakes every thread of it.
    pub fn arm(&self, interest: u32, signal: &alloc::sync::Arc<dyn Signal>) -> u32 {
        let mut want = interest | ALWAYS;
        {
            let mut slot = self.waiter.lock();
            if let Some(w) = slot.client.as_ref() {
                if alloc::sync::Arc::ptr_eq(&w.signal, signal) {
                    want |= w.interest;
                }
            }
            slot.client = Some(Waiter { interest: want, signal: signal.clone() });
        }
        self.ready.load(Ordering::SeqCst) & want
    }

    /// Like [`arm`](Self::arm), for a server thread that holds a client's call (a deferred
    /// reply) until this socket is ready: its waiter is kept beside the client's, so neither
    /// replaces the other, and several holders (one per signal) coexist. Same protocol: a
    /// non-zero result means "ready now, do not wait".
    pub fn arm_held(&self, interest: u32, signal: &alloc::sync::Arc<dyn Signal>) -> u32 {
        let mut want = interest | ALWAYS;
        {
            let mut slot = self.waiter.lock();
            match slot.held.iter_mut().find(|w| alloc::sync::Arc::ptr_eq(&w.signal, signal)) {
                Some(w) => {
                    w.interest |= want;
                    want = w.interest;
                }
                None => slot.held.push(Waiter { interest: want, signal: signal.clone() }),
            }
        }
        self.ready.load(Ordering::SeqCst) & want
    }

    /// Signals every server thread holding a call on this socket, whatever it waits for (the
    /// socket is being closed: it must give the call back).
    pub fn release_held(&self) {
        let held = core::mem::take(&mut self.waiter.lock().held);
        for w in held {
            w.signal.signal();
        }
    }

    /// Removes the client's armed waiter.
    pub fn disarm(&self) {
        self.waiter.lock().client = None;
    }

    /// Sets `bits` (call with the lock of the state they describe held). Returns the bits that
    /// were newly set: pass them to [`wake`](Self::wake) after unlocking.
    pub fn mark(&self, bits: u32) -> u32 {
        let before = self.ready.fetch_or(bits, Ordering::SeqCst);
        bits & !before
    }

    /// Clears `bits` (with the lock of the state they describe held).
    pub fn clear(&self, bits: u32) {
        self.ready.fetch_and(!bits, Ordering::SeqCst);
    }

    /// Signals the waiter if it wants any of `bits`. Takes the `Notify` lock: call it with no
    /// `SockBuf` lock held. Returns whether a signal was sent.
    pub fn wake(&self, bits: u32) -> bool {
        if bits == 0 {
            return false;
        }
        let (client, held) = {
            let mut slot = self.waiter.lock();
            let client = match &slot.client {
                Some(w) if w.interest & bits != 0 => slot.client.take(),
                _ => None,
            };
            let held = if slot.held.iter().any(|w| w.interest & bits != 0) {
                let (hit, keep) = core::mem::take(&mut slot.held).into_iter().partition(|w| w.interest & bits != 0);
                slot.held = keep;
                hit
            } else {
                alloc::vec::Vec::new()
            };
            (client, held)
        };
        let woke = client.is_some() || !held.is_empty();
        if let Some(w) = client {
            w.signal.signal();
        }
        for w in held {
            w.signal.signal();
        }
        woke
    }

    /// [`mark`](Self::mark) then [`wake`](Self::wake), for callers that hold no `SockBuf` lock.
    pub fn set(&self, bits: u32) -> bool {
        let new = self.mark(bits);
        self.wake(new)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Signal for Count {
        fn signal(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn interests_of_one_client_accumulate() {
        let slot: WaitSlot<parking_lot::RawMutex> = WaitSlot::new();
        let count = Arc::new(Count::default());
        let signal: Arc<dyn Signal> = count.clone();
        // One thread waits for input, another for output, on the same socket.
        assert_eq!(slot.arm(IN, &signal), 0);
        assert_eq!(slot.arm(OUT, &signal), 0);
        // Input arrives: the first thread's interest was not lost to the second arm.
        assert!(slot.set(IN));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_different_signal_replaces_the_waiter() {
        let slot: WaitSlot<parking_lot::RawMutex> = WaitSlot::new();
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let (sa, sb): (Arc<dyn Signal>, Arc<dyn Signal>) = (a.clone(), b.clone());
        slot.arm(IN, &sa);
        slot.arm(OUT, &sb);
        assert!(!slot.set(IN));
        assert!(slot.set(OUT));
        assert_eq!((a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)), (0, 1));
    }

    #[test]
    fn held_waiters_do_not_replace_the_client_nor_each_other() {
        let slot: WaitSlot<parking_lot::RawMutex> = WaitSlot::new();
        let (c, h0, h1) = (Arc::new(Count::default()), Arc::new(Count::default()), Arc::new(Count::default()));
        let (sc, s0, s1): (Arc<dyn Signal>, Arc<dyn Signal>, Arc<dyn Signal>) = (c.clone(), h0.clone(), h1.clone());
        assert_eq!(slot.arm_held(OUT, &s0), 0);
        assert_eq!(slot.arm(IN, &sc), 0);
        assert_eq!(slot.arm_held(OUT, &s1), 0);
        assert_eq!(slot.arm_held(OUT, &s1), 0);
        assert!(slot.set(OUT));
        let counts = || (c.0.load(Ordering::SeqCst), h0.0.load(Ordering::SeqCst), h1.0.load(Ordering::SeqCst));
        assert_eq!(counts(), (0, 1, 1));
        // Woken holders are removed; the client still waits for input.
        slot.clear(OUT);
        assert!(!slot.set(OUT));
        assert!(slot.set(IN));
        assert_eq!(counts(), (1, 1, 1));
        // A ready socket is reported at once.
        assert_eq!(slot.arm_held(OUT, &s0), OUT);
    }

    #[test]
    fn release_held_signals_every_holder() {
        let slot: WaitSlot<parking_lot::RawMutex> = WaitSlot::new();
        let h = Arc::new(Count::default());
        let s: Arc<dyn Signal> = h.clone();
        slot.arm_held(OUT, &s);
        slot.release_held();
        slot.release_held();
        assert_eq!(h.0.load(Ordering::SeqCst), 1);
    }
}
