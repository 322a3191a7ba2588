//! The buffer pool of the side that owns the buffers of a region.

use crate::{Desc, Producer, Region, RingError};

/// Where one buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Slot not registered.
    Unused,
    /// Ours and idle: [`BufferPool::alloc`] may hand it out.
    Free,
    /// Ours and in use by this side (being filled, or being read after it came back).
    Held,
    /// The peer has it.
    Lent,
}

#[derive(Clone, Copy, Debug)]
struct Buf {
    offset: u32,
    len: u32,
    state: State,
    /// Next free buffer when `state == Free`.
    next: u32,
}

const NONE: u32 = u32::MAX;

/// Up to `M` buffers of a [`Region`], owned by this side, with their shadow records.
///
/// A buffer is `Free` (ours, idle), `Held` (ours, in use) or `Lent` (the peer's):
///
/// ```text
///   add ──> Free ──alloc──> Held ──lend──> Lent
///            ^               |  ^            |
///            └─────free──────┘  └──reclaim───┘     reclaim_all_lent: every Lent -> Free
/// ```
///
/// The buffer's id is its index in the pool. When a descriptor comes back, [`reclaim`](Self::reclaim)
/// accepts it only if its id names a buffer that is currently lent, and builds the result from the
/// pool's own record: the peer's `offset` is ignored, the peer's `len` is accepted only if it is at
/// most the recorded length. A peer cannot return a buffer twice, return one it was never given,
/// or make this side touch memory outside the buffer it lent.
pub struct BufferPool<const M: usize> {
    bufs: [Buf; M],
    registered: u32,
    free_head: u32,
    free: u32,
    lent: u32,
}

impl<const M: usize> Default for BufferPool<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const M: usize> BufferPool<M> {
    const VALID: () = assert!(M < u32::MAX as usize, "a pool holds fewer than u32::MAX buffers");

    /// An empty pool.
    pub const fn new() -> Self {
        let () = Self::VALID;
        BufferPool {
            bufs: [Buf { offset: 0, len: 0, state: State::Unused, next: NONE }; M],
            registered: 0,
            free_head: NONE,
            free: 0,
            lent: 0,
        }
    }

    /// Register the buffer `offset .. offset + len` of `region` (checked like any descriptor) as
    /// `Free`; returns its id. Fails with [`RingError::PoolFull`] after `M` buffers.
    pub fn add(&mut self, region: &Region<'_>, offset: u32, len: u32) -> Result<u32, RingError> {
        region.check(&Desc::new(offset, len, 0, 0))?;
        let id = self.registered;
        let buf = self.bufs.get_mut(id as usize).ok_or(RingError::PoolFull)?;
        *buf = Buf { offset, len, state: State::Held, next: NONE };
        self.registered += 1;
        self.put_free(id);
        Ok(id)
    }

    /// Register every whole buffer of `region` (up to `M`); returns how many were added.
    pub fn add_all(&mut self, region: &Region<'_>) -> u32 {
        let size = region.buf_size();
        let mut added = 0;
        let mut offset: u64 = 0;
        while offset + u64::from(size) <= region.len() as u64 {
            let Ok(off) = u32::try_from(offset) else { break };
            if self.add(region, off, size).is_err() {
                break;
            }
            added += 1;
            offset += u64::from(size);
        }
        added
    }

    /// Take a free buffer for this side's use (`Free -> Held`); its descriptor has the recorded
    /// offset and full length.
    pub fn alloc(&mut self) -> Option<Desc> {
        let id = self.free_head;
        let buf = self.bufs.get_mut(id as usize)?;
        self.free_head = buf.next;
        buf.state = State::Held;
        buf.next = NONE;
        self.free -= 1;
        Some(Desc::new(buf.offset, buf.len, id, 0))
    }

    /// Give held buffer `id` back to the idle set (`Held -> Free`).
    pub fn free(&mut self, id: u32) -> Result<(), RingError> {
        self.expect(id, State::Held)?;
        self.put_free(id);
        Ok(())
    }

    /// Lend held buffer `id` to the peer (`Held -> Lent`) by pushing its descriptor — built from
    /// the pool's record, with `len` bytes (at most the buffer's length) and `flags` — into `to`.
    /// If the push fails (e.g. [`RingError::Full`]) the buffer stays `Held`.
    pub fn lend<const N: usize>(
        &mut self,
        id: u32,
        len: u32,
        flags: u32,
        to: &mut Producer<'_, Desc, N>,
    ) -> Result<(), RingError> {
        let buf = self.expect(id, State::Held)?;
        if len > buf.len {
            return Err(RingError::TooLong { id, len, max: buf.len });
        }
        to.push(Desc::new(buf.offset, len, id, flags))?;
        self.set_state(id, State::Lent);
        self.lent += 1;
        Ok(())
    }

    /// Take back a descriptor the peer returned (`Lent -> Held`).
    ///
    /// Accepted only if `returned.id` names a buffer currently lent and `returned.len` is at most
    /// its recorded length. The result carries the pool's recorded `offset`, the peer's `len` and
    /// `flags`, and the id. On error nothing changes.
    pub fn reclaim(&mut self, returned: Desc) -> Result<Desc, RingError> {
        let id = returned.id;
        let buf = self.bufs.get(id as usize).filter(|b| b.state != State::Unused);
        let buf = *buf.ok_or(RingError::UnknownId { id })?;
        if buf.state != State::Lent {
            return Err(RingError::NotLent { id });
        }
        if returned.len > buf.len {
            return Err(RingError::TooLong { id, len: returned.len, max: buf.len });
        }
        self.set_state(id, State::Held);
        self.lent -= 1;
        Ok(Desc::new(buf.offset, returned.len, id, returned.flags))
    }

    /// The peer is gone or restarted (its ring's epoch changed): every lent buffer comes home as
    /// free. Returns how many did.
    pub fn reclaim_all_lent(&mut self) -> u32 {
        let mut n = 0;
        for id in 0..self.registered {
            if self.bufs.get(id as usize).is_some_and(|b| b.state == State::Lent) {
                self.put_free(id);
                n += 1;
            }
        }
        self.lent = 0;
        n
    }

    /// The full-length descriptor of registered buffer `id`, whatever its state.
    pub fn buffer(&self, id: u32) -> Option<Desc> {
        let b = self.bufs.get(id as usize).filter(|b| b.state != State::Unused)?;
        Some(Desc::new(b.offset, b.len, id, 0))
    }

    /// Buffers registered.
    pub fn len(&self) -> u32 {
        self.registered
    }

    /// Whether no buffer is registered.
    pub fn is_empty(&self) -> bool {
        self.registered == 0
    }

    /// Buffers the peer has.
    pub fn lent(&self) -> u32 {
        self.lent
    }

    /// Idle buffers [`alloc`](Self::alloc) can hand out.
    pub fn available(&self) -> u32 {
        self.free
    }

    fn expect(&self, id: u32, state: State) -> Result<Buf, RingError> {
        let buf = self.bufs.get(id as usize).filter(|b| b.state != State::Unused);
        let buf = *buf.ok_or(RingError::UnknownId { id })?;
        if buf.state != state {
            return Err(match state {
                State::Lent => RingError::NotLent { id },
                _ => RingError::NotHeld { id },
            });
        }
        Ok(buf)
    }

    fn set_state(&mut self, id: u32, state: State) {
        if let Some(b) = self.bufs.get_mut(id as usize) {
            b.state = state;
        }
    }

    fn put_free(&mut self, id: u32) {
        if let Some(b) = self.bufs.get_mut(id as usize) {
            b.state = State::Free;
            b.next = self.free_head;
            self.free_head = id;
            self.free += 1;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::HeapRing;

    struct Fixture {
        mem: std::vec::Vec<u8>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture { mem: std::vec![0u8; 4 * 2048] }
        }
        fn region(&mut self) -> Region<'_> {
            // SAFETY: the vector outlives the region, and each test uses one region at a time.
            unsafe { Region::from_raw(self.mem.as_mut_ptr(), self.mem.len(), 2048) }.unwrap()
        }
    }

    #[test]
    fn lend_and_reclaim_round_trip_uses_the_recorded_offset() {
        let mut f = Fixture::new();
        let region = f.region();
        let mut pool = BufferPool::<4>::new();
        assert_eq!(pool.add_all(&region), 4);
        let ring = HeapRing::<Desc, 8>::new();
        let (mut p, mut c) = ring.pair();

        let d = pool.alloc().unwrap();
        assert_eq!((d.len, pool.available()), (2048, 3));
        pool.lend(d.id, 100, 0, &mut p).unwrap();
        assert_eq!(pool.lent(), 1);
        let _ = p.publish().unwrap();

        let mut got = c.pop().unwrap().unwrap();
        assert_eq!(got, Desc::new(d.offset, 100, d.id, 0));
        // The peer fills 60 bytes and, hostile, also moves the offset: the pool ignores it.
        got.offset = 0x10_0000;
        got.len = 60;
        let back = pool.reclaim(got).unwrap();
        assert_eq!(back, Desc::new(d.offset, 60, d.id, 0));
        assert_eq!(pool.lent(), 0);
        assert!(region.slice(&back).is_ok());
        pool.free(back.id).unwrap();
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn reclaim_rejects_unknown_duplicate_and_overlong_returns() {
        let mut f = Fixture::new();
        let region = f.region();
        let mut pool = BufferPool::<8>::new();
        assert_eq!(pool.add_all(&region), 4);
        let ring = HeapRing::<Desc, 8>::new();
        let (mut p, _c) = ring.pair();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        pool.lend(a.id, 2048, 0, &mut p).unwrap();

        assert_eq!(pool.reclaim(Desc::new(0, 1, 99, 0)), Err(RingError::UnknownId { id: 99 }));
        assert_eq!(pool.reclaim(Desc::new(0, 1, 5, 0)), Err(RingError::UnknownId { id: 5 })); // slot never registered
        assert_eq!(pool.reclaim(Desc::new(0, 1, b.id, 0)), Err(RingError::NotLent { id: b.id })); // held, not lent
        assert_eq!(pool.reclaim(Desc::new(0, 2049, a.id, 0)), Err(RingError::TooLong { id: a.id, len: 2049, max: 2048 }));
        assert!(pool.reclaim(Desc::new(0, 2048, a.id, 0)).is_ok());
        assert_eq!(pool.reclaim(Desc::new(0, 1, a.id, 0)), Err(RingError::NotLent { id: a.id })); // returned twice
    }

    #[test]
    fn lend_checks_state_and_length_and_survives_a_full_ring() {
        let mut f = Fixture::new();
        let region = f.region();
        let mut pool = BufferPool::<4>::new();
        pool.add_all(&region);
        let ring = HeapRing::<Desc, 1>::new();
        let (mut p, _c) = ring.pair();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!(pool.lend(a.id, 2049, 0, &mut p), Err(RingError::TooLong { id: a.id, len: 2049, max: 2048 }));
        pool.lend(a.id, 1, 0, &mut p).unwrap();
        assert_eq!(pool.lend(a.id, 1, 0, &mut p), Err(RingError::NotHeld { id: a.id }));
        assert_eq!(pool.lend(b.id, 1, 0, &mut p), Err(RingError::Full));
        pool.free(b.id).unwrap(); // still held after the failed lend
        assert_eq!(pool.free(b.id), Err(RingError::NotHeld { id: b.id }));
    }

    #[test]
    fn reclaim_all_lent_after_a_peer_restart() {
        let mut f = Fixture::new();
        let region = f.region();
        let mut pool = BufferPool::<4>::new();
        pool.add_all(&region);
        let ring = HeapRing::<Desc, 4>::new();
        let (mut p, _c) = ring.pair();
        for _ in 0..3 {
            let d = pool.alloc().unwrap();
            pool.lend(d.id, d.len, 0, &mut p).unwrap();
        }
        let held = pool.alloc().unwrap();
        assert_eq!(pool.reclaim_all_lent(), 3);
        assert_eq!((pool.lent(), pool.available()), (0, 3));
        assert_eq!(pool.buffer(held.id), Some(held));
        let mut ids: std::vec::Vec<u32> = (0..3).filter_map(|_| pool.alloc()).map(|d| d.id).collect();
        ids.sort();
        assert!(!ids.contains(&held.id) && ids.len() == 3);
    }

    #[test]
    fn add_checks_the_region_and_the_capacity() {
        let mut f = Fixture::new();
        let region = f.region();
        let mut pool = BufferPool::<2>::new();
        assert!(matches!(pool.add(&region, 8000, 500), Err(RingError::OutOfRegion { .. })));
        assert!(matches!(pool.add(&region, 1000, 2000), Err(RingError::CrossesBuffer { .. })));
        assert_eq!(pool.add(&region, 0, 2048), Ok(0));
        assert_eq!(pool.add(&region, 2048, 2048), Ok(1));
        assert_eq!(pool.add(&region, 4096, 2048), Err(RingError::PoolFull));
    }
}
