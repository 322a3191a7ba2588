//! Leveled locks: the lock order, written once and enforced.
//!
//! Every lock in the net server is a [`Mutex<L, T, R>`]: `L` is its **level** (a type, so the level
//! of every lock is visible in every signature), `R` the raw mutex underneath (pluggable through
//! `lock_api`: `parking_lot` on the host, a spin-then-block-on-notification mutex on seL4, where a
//! pure spin lock could spin forever on a lower-priority holder).
//!
//! # The order (outermost first)
//!
//! | rank | level        | protects                                           | seed analogue  |
//! |-----:|--------------|----------------------------------------------------|----------------|
//! |    5 | [`Global`]   | everything, only in the global-lock baseline       | (giant lock)   |
//! |   10 | [`Registry`] | one shard of the client registry                   |                |
//! |   20 | [`Handles`]  | one client's handle table                          | fd table       |
//! |   30 | [`Sock`]     | one socket's state: phase, options, port, PCB link | SOCK_LOCK      |
//! |   35 | [`Binds`]    | one shard of the local-listener index (loopback)   |                |
//! |   40 | [`Mailbox`]  | one worker's command queue (the way to the PCB)    | INP_WLOCK      |
//! |   50 | [`Listen`]   | one listener's accept queue and port share         | SOLISTEN       |
//! |   60 | [`Ports`]    | one port-allocator shard                           |                |
//! |   70 | [`SockBuf`]  | one socket buffer (receive or send)                | SOCKBUF_LOCK   |
//! |   70 | [`Notify`]   | one socket's wake-up registration                  | SONOTIFY       |
//! |   90 | [`Leaf`]     | host fixtures (link queues); never nests           |                |
//!
//! Consequences worth knowing: a port reference may be dropped (which locks a [`Ports`] shard)
//! while holding a socket, mailbox or accept-queue lock, but never while holding a `SockBuf` or
//! `Notify` lock, so nothing that owns a socket (`Arc<Socket>`) is dropped under those.
//!
//! A thread may only acquire a lock whose rank is **strictly greater** than the rank of every lock
//! it already holds. Equal ranks never nest: two sockets' `Sock` locks are never held together,
//! and (as in the NetBSD seed) `SockBuf` and `Notify` do not nest with each other either.
//! The protocol state itself (the smoltcp socket) has no lock at all: it is owned by exactly one
//! worker thread and reached only through that worker's [`Mailbox`].
//!
//! # Enforcement
//!
//! In debug builds with `std` (so in every host test) a **lockdep** keeps, per thread, the locks
//! held, and panics before acquiring a lock that is out of order:
//! `"lock order inversion: acquiring Sock (rank 30) while holding SockBuf (rank 70)"`. The panic
//! fails the test: on a test's own thread directly, on a worker thread when the test drops its
//! [`host::Stack`](crate::host::Stack), which passes worker panics on. `try_lock` cannot deadlock
//! and is recorded but not checked. Release builds and `no_std` builds — so the seL4 net server —
//! compile the lockdep out: the order is checked by the host tests that run the same code, and
//! the level stays in every lock's type.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

/// A raw mutex usable under a leveled [`Mutex`]: any `lock_api::RawMutex` that can be shared.
pub trait RawLock: lock_api::RawMutex + Send + Sync + 'static {}
impl<T: lock_api::RawMutex + Send + Sync + 'static> RawLock for T {}

/// A lock level: a rank in the global order and a name for diagnostics.
pub trait Level: 'static {
    /// Position in the order; a thread only acquires strictly increasing ranks.
    const RANK: u8;
    /// Printed by the lockdep.
    const NAME: &'static str;
}

macro_rules! levels {
    ($($(#[$m:meta])* $name:ident = $rank:expr;)*) => {
        $(
            $(#[$m])*
            #[derive(Debug)]
            pub enum $name {}
            impl Level for $name {
                const RANK: u8 = $rank;
                const NAME: &'static str = stringify!($name);
            }
        )*
    };
}

levels! {
    /// The single lock of the global-lock baseline (benchmarks only).
    Global = 5;
    /// One shard of the client registry.
    Registry = 10;
    /// One client's handle table.
    Handles = 20;
    /// One socket's state (SOCK_LOCK).
    Sock = 30;
    /// One shard of the index of local listeners (used by loopback connects).
    Binds = 35;
    /// One worker's command mailbox (the path to the protocol state, INP_WLOCK's place).
    Mailbox = 40;
    /// One listener's accept queue (SOLISTEN).
    Listen = 50;
    /// One port-allocator shard.
    Ports = 60;
    /// One socket buffer (SOCKBUF_LOCK).
    SockBuf = 70;
    /// One socket's wake-up registration (SONOTIFY).
    Notify = 70;
    /// Host fixtures that never nest (link queues, test signals).
    Leaf = 90;
}

/// A mutex at level `L` over raw mutex `R`.
pub struct Mutex<L: Level, T, R: RawLock> {
    #[cfg(not(loom))]
    inner: lock_api::Mutex<R, T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
    _level: PhantomData<fn() -> (L, R)>,
}

/// Holds a [`Mutex`]; unlocks (and tells the lockdep) on drop.
pub struct MutexGuard<'a, L: Level, T, R: RawLock> {
    #[cfg(not(loom))]
    inner: lock_api::MutexGuard<'a, R, T>,
    #[cfg(loom)]
    inner: loom::sync::MutexGuard<'a, T>,
    _held: lockdep::Held,
    _level: PhantomData<fn() -> (L, R)>,
}

impl<L: Level, T, R: RawLock> Mutex<L, T, R> {
    /// A new unlocked mutex.
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Mutex { inner: lock_api::Mutex::const_new(R::INIT, value), _level: PhantomData }
    }

    /// A new unlocked mutex.
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Mutex { inner: loom::sync::Mutex::new(value), _level: PhantomData }
    }

    fn addr(&self) -> usize {
        self as *const Self as usize
    }

    /// Acquires the lock, blocking. Panics (debug builds) on a lock-order inversion.
    pub fn lock(&self) -> MutexGuard<'_, L, T, R> {
        lockdep::check(L::RANK, L::NAME);
        #[cfg(not(loom))]
        let inner = match self.inner.try_lock() {
            Some(g) => g,
            None => {
                CONTENDED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                self.inner.lock()
            }
        };
        #[cfg(loom)]
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        MutexGuard {
            inner,
            _held: lockdep::Held::new(L::RANK, L::NAME, self.addr()),
            _level: PhantomData,
        }
    }

    /// Acquires the lock if it is free. Never deadlocks, so it is not order-checked.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, L, T, R>> {
        #[cfg(not(loom))]
        let inner = self.inner.try_lock()?;
        #[cfg(loom)]
        let inner = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(MutexGuard {
            inner,
            _held: lockdep::Held::new(L::RANK, L::NAME, self.addr()),
            _level: PhantomData,
        })
    }

    /// The value, through exclusive access (no locking).
    pub fn get_mut(&mut self) -> &mut T {
        #[cfg(not(loom))]
        return self.inner.get_mut();
        #[cfg(loom)]
        return self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
    }
}

impl<L: Level, T: Default, R: RawLock> Default for Mutex<L, T, R> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<L: Level, T, R: RawLock> core::fmt::Debug for Mutex<L, T, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Mutex<{}>", L::NAME)
    }
}

impl<L: Level, T, R: RawLock> Deref for MutexGuard<'_, L, T, R> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<L: Level, T, R: RawLock> DerefMut for MutexGuard<'_, L, T, R> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// Acquisitions (process-wide, every leveled lock) that found their lock held and had to wait.
/// Only contended acquisitions touch it, so it costs nothing on the uncontended path; the
/// benchmarks use it as a machine-independent measure of lock sharing.
#[cfg(not(loom))]
static CONTENDED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many lock acquisitions so far had to wait for a holder (see `CONTENDED`).
#[cfg(not(loom))]
pub fn contended_acquisitions() -> u64 {
    CONTENDED.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether the lockdep is compiled in (debug builds with `std`, not under loom).
pub const LOCKDEP: bool = lockdep::ENABLED;

/// Names of the locks the calling thread holds, outermost first (empty without the lockdep).
#[cfg(feature = "std")]
pub fn held_locks() -> alloc::vec::Vec<&'static str> {
    lockdep::held()
}

#[cfg(all(feature = "std", debug_assertions, not(loom)))]
mod lockdep {
    use core::cell::RefCell;
    use std::vec::Vec;

    pub const ENABLED: bool = true;

    std::thread_local! {
        static HELD: RefCell<Vec<(u8, &'static str, usize)>> = const { RefCell::new(Vec::new()) };
    }

    /// Panics if acquiring a lock of `rank` now would break the order.
    pub fn check(rank: u8, name: &'static str) {
        let worst = HELD
            .try_with(|h| h.borrow().iter().copied().filter(|&(r, _, _)| r >= rank).max_by_key(|e| e.0))
            .ok()
            .flatten();
        if let Some((held_rank, held_name, _)) = worst {
            panic!(
                "lock order inversion: acquiring {name} (rank {rank}) while holding {held_name} \
                 (rank {held_rank}); see netserver-core's lock order (src/lock.rs)"
            );
        }
    }

    pub fn held() -> Vec<&'static str> {
        HELD.try_with(|h| h.borrow().iter().map(|e| e.1).collect()).unwrap_or_default()
    }

    /// One entry in the calling thread's held-lock list; removed on drop.
    pub struct Held {
        addr: usize,
    }

    impl Held {
        pub fn new(rank: u8, name: &'static str, addr: usize) -> Held {
            let _ = HELD.try_with(|h| h.borrow_mut().push((rank, name, addr)));
            Held { addr }
        }
    }

    impl Drop for Held {
        fn drop(&mut self) {
            let addr = self.addr;
            let _ = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                if let Some(i) = h.iter().rposition(|e| e.2 == addr) {
                    h.remove(i);
                }
            });
        }
    }
}

#[cfg(not(all(feature = "std", debug_assertions, not(loom))))]
mod lockdep {
    pub const ENABLED: bool = false;

    #[inline(always)]
    pub fn check(_rank: u8, _name: &'static str) {}

    #[cfg(feature = "std")]
    pub fn held() -> alloc::vec::Vec<&'static str> {
        alloc::vec::Vec::new()
    }

    pub struct Held;

    impl Held {
        #[inline(always)]
        pub fn new(_rank: u8, _name: &'static str, _addr: usize) -> Held {
            Held
        }
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::assertions_on_constants)]
mod tests {
    use super::*;
    type M<L, T> = Mutex<L, T, parking_lot::RawMutex>;

    #[test]
    fn in_order_nesting_is_allowed_and_tracked() {
        let a: M<Sock, u32> = Mutex::new(1);
        let b: M<Listen, u32> = Mutex::new(2);
        let c: M<SockBuf, u32> = Mutex::new(3);
        let ga = a.lock();
        let gb = b.lock();
        let gc = c.lock();
        assert_eq!(*ga + *gb + *gc, 6);
        if LOCKDEP {
            assert_eq!(held_locks(), ["Sock", "Listen", "SockBuf"]);
        }
        drop(gb); // out-of-order release is fine
        drop(gc);
        drop(ga);
        assert!(held_locks().is_empty());
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "lock order inversion"))]
    fn inversion_is_caught() {
        let a: M<Sock, u32> = Mutex::new(1);
        let b: M<SockBuf, u32> = Mutex::new(2);
        let _gb = b.lock();
        let _ga = a.lock(); // SockBuf (70) then Sock (30): inversion
        // Release builds have no lockdep; make the test meaningful there too.
        assert!(!LOCKDEP);
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "acquiring Notify (rank 70) while holding SockBuf"))]
    fn equal_ranks_do_not_nest() {
        let a: M<SockBuf, u32> = Mutex::new(1);
        let b: M<Notify, u32> = Mutex::new(2);
        let _ga = a.lock();
        let _gb = b.lock();
        assert!(!LOCKDEP);
    }

    #[test]
    fn try_lock_is_not_checked_and_reports_busy() {
        let a: M<Sock, u32> = Mutex::new(1);
        let b: M<SockBuf, u32> = Mutex::new(2);
        let _gb = b.lock();
        let ga = a.try_lock();
        assert!(ga.is_some());
        assert!(a.try_lock().is_none());
    }
}
