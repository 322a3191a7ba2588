//! The sharded port allocator.
//!
//! Grown from the awkernel `PortAllocator` (PR #682) and taken further:
//!
//! * **Shards.** Every class (TCP v4, TCP v6, UDP v4, UDP v6) is split into `shards_per_class`
//!   sub-shards by port residue: sub-shard `s` owns the ports `p` with `p % S == s`. Each has its
//!   own lock (level [`Ports`]), cursor, bitmap and reference counts, padded to its own cache
//!   lines. An explicit `bind(p)` touches exactly one sub-shard; an ephemeral allocation starts in
//!   the sub-shard its caller's hint names (worker or client), so two threads allocating at once
//!   normally never touch the same lock. `global_lock` puts every sub-shard behind one lock: the
//!   single-lock baseline the benchmarks compare against, built from this same code.
//! * **Ephemeral search.** An advancing cursor per sub-shard (moved one candidate forward
//!   *before* each check, so it never retries the port it handed out last) that stops at the first
//!   free port: O(1) while the range is mostly free; bounded by the sub-shard's candidate count
//!   when it is not (whole 64-port bitmap words that are full are skipped at once). When the
//!   starting sub-shard is exhausted the others are tried in turn; when all are, `EADDRNOTAVAIL`.
//! * **Reference counts and SO_REUSEADDR.** A port's entry counts its active holders (bound,
//!   connected or listening sockets, and accepted connections sharing a listener's port), how
//!   many of those did not set SO_REUSEADDR, whether one of them listens, and how many TIME-WAIT
//!   connections still hold it. `bind` to a port in use fails with `EADDRINUSE`, except that a
//!   socket with SO_REUSEADDR may bind a port whose holders all set SO_REUSEADDR and none listens
//!   (the classic case: restarting a server while its old connections sit in TIME-WAIT or are
//!   still established). An ephemeral allocation only ever picks a port with no entry at all.
//! * **RAII.** A [`PortGuard`] is one reference. It frees exactly once, on drop; it cannot be
//!   cloned, only [`share`](PortGuard::share)d (a new counted reference), and
//!   [`into_time_wait`](PortGuard::into_time_wait) converts it in place.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use net_api::Errno;

use crate::lock::{Mutex, Ports, RawLock};
use crate::sync::{Arc, CachePadded};

/// Transport protocol of a port class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Address family of a port class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// One independent port space: protocol × family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortClass {
    /// Protocol.
    pub proto: Proto,
    /// Family.
    pub family: Family,
}

impl PortClass {
    /// TCP over IPv4.
    pub const TCP4: PortClass = PortClass { proto: Proto::Tcp, family: Family::V4 };
    /// TCP over IPv6.
    pub const TCP6: PortClass = PortClass { proto: Proto::Tcp, family: Family::V6 };
    /// UDP over IPv4.
    pub const UDP4: PortClass = PortClass { proto: Proto::Udp, family: Family::V4 };
    /// UDP over IPv6.
    pub const UDP6: PortClass = PortClass { proto: Proto::Udp, family: Family::V6 };
    /// Every class.
    pub const ALL: [PortClass; 4] = [Self::TCP4, Self::TCP6, Self::UDP4, Self::UDP6];

    fn index(self) -> usize {
        (match self.proto {
            Proto::Tcp => 0,
            Proto::Udp => 2,
        }) + match self.family {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }
}

/// Allocator configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// First ephemeral port (inclusive).
    pub ephemeral_lo: u16,
    /// Last ephemeral port (inclusive).
    pub ephemeral_hi: u16,
    /// Sub-shards per class (1..=64). 1 is the awkernel design (one lock per class).
    pub shards_per_class: u16,
    /// Put every sub-shard behind one lock (the global-lock baseline).
    pub global_lock: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig { ephemeral_lo: 49152, ephemeral_hi: 65535, shards_per_class: 8, global_lock: false }
    }
}

impl PortConfig {
    /// The single-global-lock baseline with otherwise the same settings.
    pub fn global(self) -> Self {
        PortConfig { global_lock: true, ..self }
    }

    fn validate(&self) -> Result<(), Errno> {
        if self.ephemeral_lo == 0
            || self.ephemeral_lo > self.ephemeral_hi
            || self.shards_per_class == 0
            || self.shards_per_class > 64
        {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
}

/// What a port reference is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A bound or connected socket, or an accepted connection.
    Active,
    /// The listening socket (an active holder that also listens).
    Listening,
    /// A connection in TIME-WAIT.
    TimeWait,
}

#[derive(Clone, Copy, Debug, Default)]
struct PortMeta {
    active: u32,
    no_reuse: u32,
    listeners: u32,
    time_wait: u32,
}

impl PortMeta {
    fn is_empty(&self) -> bool {
        self.active == 0 && self.time_wait == 0
    }
}

/// The ports `p` of one class with `p % stride == residue`.
struct SubShard {
    stride: u32,
    /// Bit `i` set: port `i * stride + residue` has an entry in `meta`.
    bits: Vec<u64>,
    meta: BTreeMap<u16, PortMeta>,
    /// Bit index of the first ephemeral candidate, and how many candidates there are.
    eph_first: u32,
    eph_count: u32,
    /// Position (0..eph_count) of the candidate handed out last.
    cursor: u32,
}

impl SubShard {
    fn new(cfg: &PortConfig, residue: u32) -> SubShard {
        let stride = u32::from(cfg.shards_per_class);
        let nbits = 65536u32.div_ceil(stride);
        let lo = u32::from(cfg.ephemeral_lo);
        let hi = u32::from(cfg.ephemeral_hi);
        let first_port = lo + (residue + stride - lo % stride) % stride;
        let (eph_first, eph_count) =
            if first_port > hi { (0, 0) } else { (first_port / stride, (hi - first_port) / stride + 1) };
        SubShard {
            stride,
            bits: alloc::vec![0u64; nbits.div_ceil(64) as usize],
            meta: BTreeMap::new(),
            eph_first,
            eph_count,
            // Start so that the first candidate checked is the first of the range.
            cursor: eph_count.saturating_sub(1),
        }
    }

    fn bit(&self, port: u16) -> bool {
        let i = u32::from(port) / self.stride;
        self.bits.get((i / 64) as usize).is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    fn set_bit(&mut self, port: u16, on: bool) {
        let i = u32::from(port) / self.stride;
        if let Some(w) = self.bits.get_mut((i / 64) as usize) {
            if on {
                *w |= 1u64 << (i % 64);
            } else {
                *w &= !(1u64 << (i % 64));
            }
        }
    }

    /// The first free ephemeral port after the cursor, claimed.
    fn take_ephemeral(&mut self, residue: u32, reuse: bool) -> Option<u16> {
        let count = self.eph_count;
        let mut scanned = 0u32;
        while scanned < count {
            let c = (self.cursor + 1) % count;
            let i = self.eph_first + c;
            let word = self.bits.get((i / 64) as usize).copied().unwrap_or(u64::MAX);
            if word == u64::MAX {
                // The rest of this word is taken too: skip it, but not past the wrap point.
                let skip = (63 - i % 64).min(count - 1 - c);
                self.cursor = c + skip;
                scanned += 1 + skip;
                continue;
            }
            self.cursor = c;
            scanned += 1;
            if word & (1u64 << (i % 64)) == 0 {
                let port = u16::try_from(i * self.stride + residue).ok()?;
                self.claim(port, reuse);
                return Some(port);
            }
        }
        None
    }

    fn claim(&mut self, port: u16, reuse: bool) {
        self.meta.insert(port, PortMeta { active: 1, no_reuse: u32::from(!reuse), listeners: 0, time_wait: 0 });
        self.set_bit(port, true);
    }

    fn bind(&mut self, port: u16, reuse: bool) -> Result<(), Errno> {
        match self.meta.get_mut(&port) {
            None => {
                self.claim(port, reuse);
                Ok(())
            }
            Some(m) if reuse && m.listeners == 0 && m.no_reuse == 0 => {
                m.active += 1;
                Ok(())
            }
            Some(_) => Err(Errno::EADDRINUSE),
        }
    }

    fn share(&mut self, port: u16, reuse: bool) {
        if let Some(m) = self.meta.get_mut(&port) {
            m.active += 1;
            m.no_reuse += u32::from(!reuse);
        }
    }

    fn listen(&mut self, port: u16) -> Result<(), Errno> {
        match self.meta.get_mut(&port) {
            Some(m) if m.listeners == 0 => {
                m.listeners = 1;
                Ok(())
            }
            _ => Err(Errno::EADDRINUSE),
        }
    }

    /// Drops one reference of `role`; adds a TIME-WAIT one instead when `to_time_wait`.
    fn release(&mut self, port: u16, role: Role, reuse: bool, to_time_wait: bool) {
        let Some(m) = self.meta.get_mut(&port) else {
            debug_assert!(false, "port {port} released but not allocated");
            return;
        };
        match role {
            Role::TimeWait => m.time_wait = m.time_wait.saturating_sub(1),
            Role::Active | Role::Listening => {
                m.active = m.active.saturating_sub(1);
                if !reuse {
                    m.no_reuse = m.no_reuse.saturating_sub(1);
                }
                if role == Role::Listening {
                    m.listeners = m.listeners.saturating_sub(1);
                }
            }
        }
        if to_time_wait {
            m.time_wait += 1;
        }
        if m.is_empty() {
            self.meta.remove(&port);
            self.set_bit(port, false);
        }
    }
}

/// A lock over one or more sub-shards; each sub-shard padded to its own cache lines (the vector
/// would otherwise put two hot cursors side by side).
type Shard<R> = CachePadded<Mutex<Ports, Vec<CachePadded<SubShard>>, R>>;

/// The allocator. Each lock (one per sub-shard, or one for all in the global baseline) is its own
/// `Arc`, and a guard keeps only its own lock alive: two threads working in different sub-shards
/// never touch a shared reference count (which would bounce one cache line between them).
pub struct PortAllocator<R: RawLock> {
    cfg: PortConfig,
    stride: usize,
    per_lock: usize,
    locks: Vec<Arc<Shard<R>>>,
}

impl<R: RawLock> PortAllocator<R> {
    /// A new allocator (`EINVAL` for an empty range or a bad shard count).
    pub fn new(cfg: PortConfig) -> Result<Self, Errno> {
        cfg.validate()?;
        let stride = usize::from(cfg.shards_per_class);
        let subs = PortClass::ALL.len() * stride;
        let mk = |i: usize| CachePadded(SubShard::new(&cfg, (i % stride) as u32));
        let (per_lock, locks) = if cfg.global_lock {
            (subs, alloc::vec![Arc::new(CachePadded(Mutex::new((0..subs).map(mk).collect())))])
        } else {
            (1, (0..subs).map(|i| Arc::new(CachePadded(Mutex::new(alloc::vec![mk(i)])))).collect())
        };
        Ok(PortAllocator { cfg, stride, per_lock, locks })
    }

    /// The configuration.
    pub fn config(&self) -> &PortConfig {
        &self.cfg
    }

    /// The lock and the index in it of `class`'s sub-shard `residue`.
    fn locate(&self, class: PortClass, residue: usize) -> Option<(&Arc<Shard<R>>, usize)> {
        let idx = class.index() * self.stride + residue % self.stride;
        Some((self.locks.get(idx / self.per_lock)?, idx % self.per_lock))
    }

    fn with_sub<T>(&self, class: PortClass, residue: usize, f: impl FnOnce(&mut SubShard) -> T) -> Option<T> {
        let (lock, i) = self.locate(class, residue)?;
        with(lock, i, f)
    }

    fn residue(&self, port: u16) -> usize {
        usize::from(port) % self.stride
    }

    fn guard(&self, class: PortClass, port: u16, reuse: bool) -> Result<PortGuard<R>, Errno> {
        let (lock, sub) = self.locate(class, self.residue(port)).ok_or(Errno::EINVAL)?;
        Ok(PortGuard { shard: lock.clone(), sub, class, port, reuse, role: Role::Active })
    }

    /// Binds `port` (0: an ephemeral port, starting at sub-shard `hint`).
    pub fn bind(&self, class: PortClass, port: u16, reuse: bool, hint: usize) -> Result<PortGuard<R>, Errno> {
        if port == 0 {
            return self.ephemeral(class, hint, reuse);
        }
        self.with_sub(class, self.residue(port), |s| s.bind(port, reuse)).ok_or(Errno::EINVAL)??;
        self.guard(class, port, reuse)
    }

    /// An ephemeral port: the first free one after the cursor of sub-shard `hint`, then of the
    /// following sub-shards; `EADDRNOTAVAIL` when the whole range is taken.
    pub fn ephemeral(&self, class: PortClass, hint: usize, reuse: bool) -> Result<PortGuard<R>, Errno> {
        for k in 0..self.stride {
            let residue = (hint + k) % self.stride;
            if let Some(Some(port)) = self.with_sub(class, residue, |s| s.take_ephemeral(residue as u32, reuse)) {
                return self.guard(class, port, reuse);
            }
        }
        Err(Errno::EADDRNOTAVAIL)
    }

    /// Whether `port` has no holder at all (not even TIME-WAIT).
    pub fn is_free(&self, class: PortClass, port: u16) -> bool {
        self.with_sub(class, self.residue(port), |s| !s.bit(port)).unwrap_or(true)
    }

    /// Ports of `class` with an entry (any holder, TIME-WAIT included).
    pub fn in_use(&self, class: PortClass) -> usize {
        (0..self.stride).filter_map(|r| self.with_sub(class, r, |s| s.meta.len())).sum()
    }

    /// Ports with an entry, all classes.
    pub fn total_in_use(&self) -> usize {
        PortClass::ALL.iter().map(|&c| self.in_use(c)).sum()
    }
}

fn with<R: RawLock, T>(lock: &Shard<R>, i: usize, f: impl FnOnce(&mut SubShard) -> T) -> Option<T> {
    let mut subs = lock.lock();
    subs.get_mut(i).map(|s| f(&mut s.0))
}

/// One counted reference to a port. Frees it (drops the reference) exactly once, on drop.
pub struct PortGuard<R: RawLock> {
    shard: Arc<Shard<R>>,
    sub: usize,
    class: PortClass,
    port: u16,
    reuse: bool,
    role: Role,
}

impl<R: RawLock> PortGuard<R> {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The class.
    pub fn class(&self) -> PortClass {
        self.class
    }

    /// What this reference is.
    pub fn role(&self) -> Role {
        self.role
    }

    fn with<T>(&self, f: impl FnOnce(&mut SubShard) -> T) -> Option<T> {
        with(&self.shard, self.sub, f)
    }

    /// Another active reference to the same port (an accepted connection sharing its listener's
    /// port). It inherits this reference's SO_REUSEADDR setting.
    pub fn share(&self) -> PortGuard<R> {
        let (port, reuse) = (self.port, self.reuse);
        self.with(|s| s.share(port, reuse));
        PortGuard { shard: self.shard.clone(), sub: self.sub, class: self.class, port, reuse, role: Role::Active }
    }

    /// Marks this reference as the port's listener (`EADDRINUSE` if another socket listens).
    pub fn listen(&mut self) -> Result<(), Errno> {
        match self.role {
            Role::Listening => Ok(()),
            Role::TimeWait => Err(Errno::EINVAL),
            Role::Active => {
                let port = self.port;
                self.with(|s| s.listen(port)).ok_or(Errno::EINVAL)??;
                self.role = Role::Listening;
                Ok(())
            }
        }
    }

    /// Converts this reference into a TIME-WAIT one (one lock round trip; never frees the port).
    pub fn into_time_wait(mut self) -> PortGuard<R> {
        if self.role != Role::TimeWait {
            let (port, role, reuse) = (self.port, self.role, self.reuse);
            self.with(|s| s.release(port, role, reuse, true));
            self.role = Role::TimeWait;
        }
        self
    }
}

impl<R: RawLock> Drop for PortGuard<R> {
    fn drop(&mut self) {
        let (port, role, reuse) = (self.port, self.role, self.reuse);
        self.with(|s| s.release(port, role, reuse, false));
    }
}

impl<R: RawLock> core::fmt::Debug for PortGuard<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PortGuard({:?} {} {:?})", self.class, self.port, self.role)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    type A = PortAllocator<parking_lot::RawMutex>;
    type Arc<T> = T;

    fn small(lo: u16, hi: u16, shards: u16) -> Arc<A> {
        A::new(PortConfig { ephemeral_lo: lo, ephemeral_hi: hi, shards_per_class: shards, global_lock: false }).unwrap()
    }

    #[test]
    fn rejects_bad_config() {
        assert!(A::new(PortConfig { ephemeral_lo: 10, ephemeral_hi: 9, ..Default::default() }).is_err());
        assert!(A::new(PortConfig { shards_per_class: 0, ..Default::default() }).is_err());
        assert!(A::new(PortConfig { shards_per_class: 65, ..Default::default() }).is_err());
    }

    #[test]
    fn ephemeral_is_in_range_unique_and_exhausts_with_eaddrnotavail() {
        for shards in [1, 3, 8] {
            for global in [false, true] {
                let a = A::new(PortConfig { ephemeral_lo: 1000, ephemeral_hi: 1099, shards_per_class: shards, global_lock: global }).unwrap();
                let mut got = Vec::new();
                for i in 0..100 {
                    let g = a.ephemeral(PortClass::TCP4, i, false).unwrap();
                    assert!((1000..=1099).contains(&g.port()));
                    got.push(g);
                }
                let mut ports: Vec<u16> = got.iter().map(|g| g.port()).collect();
                ports.sort();
                ports.dedup();
                assert_eq!(ports.len(), 100);
                assert_eq!(a.ephemeral(PortClass::TCP4, 0, false).unwrap_err(), Errno::EADDRNOTAVAIL);
                // Other classes are independent.
                assert!(a.ephemeral(PortClass::UDP4, 0, false).is_ok());
                assert_eq!(a.in_use(PortClass::TCP4), 100);
                // Free one in the middle; the next allocation finds exactly it.
                let freed = got.swap_remove(37).port();
                assert_eq!(a.ephemeral(PortClass::TCP4, 5, false).unwrap().port(), freed);
                drop(got);
                assert_eq!(a.total_in_use(), 0);
            }
        }
    }

    #[test]
    fn cursor_advances_before_checking() {
        let a = small(2000, 2009, 1);
        let p1 = a.ephemeral(PortClass::TCP4, 0, false).unwrap().port();
        // p1 was freed at once, but the next allocation moves on instead of reusing it.
        let p2 = a.ephemeral(PortClass::TCP4, 0, false).unwrap().port();
        assert_eq!((p1, p2), (2000, 2001));
    }

    #[test]
    fn bind_conflicts_and_reuseaddr() {
        let a = small(40000, 40100, 4);
        let c = PortClass::TCP6;
        let g = a.bind(c, 8080, false, 0).unwrap();
        assert_eq!(a.bind(c, 8080, false, 0).unwrap_err(), Errno::EADDRINUSE);
        assert_eq!(a.bind(c, 8080, true, 0).unwrap_err(), Errno::EADDRINUSE, "holder lacks SO_REUSEADDR");
        assert!(a.bind(PortClass::TCP4, 8080, false, 0).is_ok(), "v4 and v6 are separate");
        // TIME-WAIT: only SO_REUSEADDR may take it over.
        let tw = g.into_time_wait();
        assert_eq!(a.bind(c, 8080, false, 0).unwrap_err(), Errno::EADDRINUSE);
        let mut l = a.bind(c, 8080, true, 0).unwrap();
        l.listen().unwrap();
        // A listener excludes every other binder, reuse or not.
        assert_eq!(a.bind(c, 8080, true, 0).unwrap_err(), Errno::EADDRINUSE);
        drop(tw);
        // Accepted connections share the listener's port and keep it after the listener closes.
        let child = l.share();
        drop(l);
        assert!(!a.is_free(c, 8080));
        let mut again = a.bind(c, 8080, true, 0).expect("restart with SO_REUSEADDR while a child lives");
        again.listen().unwrap();
        drop(child);
        drop(again);
        assert!(a.is_free(c, 8080));
        assert_eq!(a.total_in_use(), 0);
    }

    #[test]
    fn ephemeral_skips_time_wait_ports() {
        let a = small(3000, 3001, 1);
        let tw = a.ephemeral(PortClass::UDP4, 0, false).unwrap().into_time_wait();
        let other = a.ephemeral(PortClass::UDP4, 0, false).unwrap();
        assert_ne!(tw.port(), other.port());
        assert_eq!(a.ephemeral(PortClass::UDP4, 0, false).unwrap_err(), Errno::EADDRNOTAVAIL);
        drop(tw);
        assert!(a.ephemeral(PortClass::UDP4, 0, false).is_ok());
    }

    #[test]
    fn high_pressure_search_is_bounded_and_finds_the_last_free_port() {
        let a = small(49152, 65535, 8);
        let mut all: Vec<_> = (0..16384).map(|i| a.ephemeral(PortClass::TCP4, i, false).unwrap()).collect();
        assert_eq!(a.ephemeral(PortClass::TCP4, 3, false).unwrap_err(), Errno::EADDRNOTAVAIL);
        let g = all.swap_remove(12345);
        let port = g.port();
        drop(g);
        // Found from any starting shard.
        assert_eq!(a.ephemeral(PortClass::TCP4, 6, false).unwrap().port(), port);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        for global in [false, true] {
            let a = A::new(PortConfig { global_lock: global, ..Default::default() }).unwrap();
            let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
            std::thread::scope(|s| {
                for t in 0..4 {
                    let (a, seen) = (&a, &seen);
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        for _ in 0..2000 {
                            let g = a.ephemeral(PortClass::TCP4, t, false).unwrap();
                            assert!(seen.lock().unwrap().insert(g.port()), "port handed out twice");
                            mine.push(g);
                        }
                    });
                }
            });
            assert_eq!(a.total_in_use(), 0);
        }
    }
}
