//! Blocking locks for seL4's strict-priority scheduler.
//!
//! A thread that spins on a lock held by a lower-priority thread on the same core spins
//! forever: the holder never runs. So [`RawMutex`] spins only briefly and then blocks on the
//! waiting thread's *own* notification (each thread has one, created by the root task):
//!
//! 1. the waiter sets its bit in `waiters`, then tries to take the lock once more;
//! 2. the releaser clears `locked`, then reads `waiters` and signals one waiter's notification.
//!
//! Both steps use sequentially consistent operations, so either the waiter's retry sees the
//! lock free or the releaser sees the waiter's bit (no lost wake-up); notifications are sticky,
//! so a signal sent before the waiter blocks makes its wait return at once. A waiter woken
//! without getting the lock simply waits again; whoever holds the lock signals the remaining
//! waiters when it releases. Thread indices (0 = main thread) come from the IPC buffer's
//! user-data word, set when each thread starts.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

use sel4::{ipc_buffer, Cap, Notification};

pub use spin::Once;

/// Most threads a component can have (bits of the waiter mask).
pub const MAX_THREADS: usize = 64;
const SPINS: u32 = 100;

static WAKE: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

/// Records the calling thread's index and its wake-up notification.
pub(crate) fn register_thread(index: usize, wake: u64) {
    if index < MAX_THREADS {
        WAKE[index].store(wake, SeqCst);
        ipc_buffer::set_user_data(index as u64);
    }
}

fn current_thread() -> usize {
    (ipc_buffer::user_data() as usize).min(MAX_THREADS - 1)
}

/// A mutex that spins briefly, then blocks (see the module docs).
pub struct RawMutex {
    locked: AtomicBool,
    waiters: AtomicU64,
}

impl RawMutex {
    pub const fn new() -> Self {
        RawMutex { locked: AtomicBool::new(false), waiters: AtomicU64::new(0) }
    }

    fn try_take(&self) -> bool {
        self.locked.compare_exchange(false, true, SeqCst, SeqCst).is_ok()
    }
}

impl Default for RawMutex {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `lock` returns only after this thread changed `locked` from false to true, and only
// `unlock` (called by the holder, as lock_api guarantees) sets it back: mutual exclusion holds.
unsafe impl lock_api::RawMutex for RawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = RawMutex::new();
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        for _ in 0..SPINS {
            if self.try_take() {
                return;
            }
            core::hint::spin_loop();
        }
        let me = current_thread();
        let bit = 1u64 << me;
        loop {
            self.waiters.fetch_or(bit, SeqCst);
            if self.try_take() {
                self.waiters.fetch_and(!bit, SeqCst);
                return;
            }
            let wake = WAKE[me].load(SeqCst);
            if wake == 0 {
                // No notification (the root task's single thread): give way and retry.
                sel4::syscall::yield_now();
            } else {
                Cap::<Notification>::from_cptr(wake).wait();
            }
        }
    }

    fn try_lock(&self) -> bool {
        self.try_take()
    }

    unsafe fn unlock(&self) {
        self.locked.store(false, SeqCst);
        let waiters = self.waiters.load(SeqCst);
        if waiters != 0 {
            let next = waiters.trailing_zeros() as usize;
            let wake = WAKE[next].load(SeqCst);
            if wake != 0 {
                Cap::<Notification>::from_cptr(wake).signal();
            }
        }
    }
}

/// A mutex over `T` using [`RawMutex`].
pub type Mutex<T> = lock_api::Mutex<RawMutex, T>;
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawMutex, T>;

/// A wait queue for "until this condition holds" between threads of one component, blocking on
/// each waiter's own notification (no spinning: see the module docs). A waiter records itself,
/// *then* checks the condition; a notifier changes the state, *then* takes the recorded waiters
/// and signals them. A sequentially consistent fence on each side between the two steps, so
/// either the waiter's check sees the change or the notifier sees the waiter, whatever orderings
/// the state itself uses; a waiter woken for any other reason re-checks.
pub struct Event {
    waiters: AtomicU64,
}

impl Event {
    pub const fn new() -> Self {
        Event { waiters: AtomicU64::new(0) }
    }

    /// Returns once `ready()` holds, blocking in between. `ready` must not block (on a
    /// [`Mutex`] or anything else using the thread's notification): a wake-up it consumed would
    /// be lost to this wait. Reading atomics, as libsock's conditions do, is fine.
    pub fn wait_until(&self, ready: &dyn Fn() -> bool) {
        let me = current_thread();
        let wake = WAKE[me].load(SeqCst);
        loop {
            self.waiters.fetch_or(1 << me, SeqCst);
            // Pairs with the fence in `notify_all`: the caller's state may be plain
            // release/acquire atomics, which alone do not order a store before a later load.
            core::sync::atomic::fence(SeqCst);
            if ready() {
                self.waiters.fetch_and(!(1 << me), SeqCst);
                return;
            }
            if wake == 0 {
                sel4::syscall::yield_now();
            } else {
                Cap::<Notification>::from_cptr(wake).wait();
            }
        }
    }

    /// Wakes every waiting thread (each re-checks its condition). Call after changing the state.
    pub fn notify_all(&self) {
        // See `wait_until`. Nobody waiting (the usual case, on every socket call): no write.
        core::sync::atomic::fence(SeqCst);
        if self.waiters.load(SeqCst) == 0 {
            return;
        }
        let mut waiters = self.waiters.swap(0, SeqCst);
        while waiters != 0 {
            let i = waiters.trailing_zeros() as usize;
            waiters &= waiters - 1;
            let wake = WAKE[i].load(SeqCst);
            if wake != 0 {
                Cap::<Notification>::from_cptr(wake).signal();
            }
        }
    }
}

impl Default for Event {
    fn default() -> Self {
        Self::new()
    }
}
