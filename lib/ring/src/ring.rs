//! The single-producer single-consumer ring: the shared view ([`Ring`]) and the two role types
//! ([`Producer`], [`Consumer`]) that each side holds privately.

use core::marker::PhantomData;
use core::mem::size_of;
use core::num::NonZeroU32;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{index_of, index_word, RingHeader, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
#[cfg(loom)]
use crate::sync::ModelFault;
#[cfg(loom)]
type Orders = ModelFault;
#[cfg(not(loom))]
use crate::sync::Protocol;
#[cfg(not(loom))]
type Orders = Protocol;
use crate::sync::{fence, AtomicU32, Ordering};
use crate::{Field, RingError};

/// What a ring slot can hold: plain bytes with no padding and no invalid bit patterns, copied in
/// and out by value. [`Desc`](crate::Desc) is the usual item; `u32` and `u64` work too.
///
/// Its size must be a non-zero multiple of 4 bytes (checked at compile time by [`Ring`]).
pub trait Item: FromBytes + IntoBytes + Immutable + KnownLayout + Copy {}
impl<T: FromBytes + IntoBytes + Immutable + KnownLayout + Copy> Item for T {}

/// A ring in shared memory: the header plus `N` slots of `T`, as seen from one process.
///
/// A `Ring` is only a view (two references); it is `Copy` and carries no private state. Each side
/// makes its role type from it: [`Producer::attach`] or [`Consumer::attach`]. The side that
/// (re)initialises the ring also calls [`Ring::init`] / [`Ring::reinit`].
///
/// `N` must be a power of two between 1 and 2^31; anything else fails the build:
///
/// ```
/// let bytes = shared_ring::Ring::<shared_ring::Desc, 256>::BYTES;
/// assert_eq!(bytes, 192 + 256 * 16);
/// ```
///
/// ```compile_fail
/// // 3 is not a power of two: the build fails.
/// let bytes = shared_ring::Ring::<shared_ring::Desc, 3>::BYTES;
/// ```
///
/// ```compile_fail
/// // 0 is not a power of two either.
/// let bytes = shared_ring::Ring::<shared_ring::Desc, 0>::BYTES;
/// ```
pub struct Ring<'a, T, const N: usize> {
    header: &'a RingHeader,
    /// `N * WORDS` words; slot `i` is `slots[i * WORDS .. (i + 1) * WORDS]`.
    slots: &'a [AtomicU32],
    _item: PhantomData<fn(T) -> T>,
}

impl<T, const N: usize> Clone for Ring<'_, T, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, const N: usize> Copy for Ring<'_, T, N> {}

impl<'a, T: Item, const N: usize> Ring<'a, T, N> {
    /// Compile-time checks on the capacity and the item type; every constructor evaluates it.
    const VALID: () = {
        assert!(N != 0 && N.is_power_of_two(), "ring capacity N must be a non-zero power of two");
        assert!(N <= 1 << 31, "ring capacity N must be at most 2^31 (indices are wrapping u32)");
        assert!(size_of::<T>() != 0 && size_of::<T>().is_multiple_of(4), "ring items must be a non-zero multiple of 4 bytes");
        assert!(size_of::<T>() <= u32::MAX as usize, "ring items must be smaller than 4 GiB");
    };

    /// Number of 32-bit words per slot.
    const WORDS: usize = {
        let () = Self::VALID;
        size_of::<T>() / 4
    };

    /// Number of 32-bit slot words that follow the header (`N * size_of::<T>() / 4`).
    pub const SLOT_WORDS: usize = N * Self::WORDS;

    /// Bytes of shared memory the ring occupies: the 192-byte header plus the slots.
    pub const BYTES: usize = HEADER_SIZE + 4 * Self::SLOT_WORDS;

    /// The capacity, as the `u32` the index arithmetic uses.
    const CAP: u32 = {
        let () = Self::VALID;
        N as u32
    };

    /// A ring over a header and its slot words in ordinary memory (host tests, model tests).
    ///
    /// Fails with [`RingError::TooSmall`] unless `slots.len() == Self::SLOT_WORDS`.
    pub fn new(header: &'a RingHeader, slots: &'a [AtomicU32]) -> Result<Self, RingError> {
        let () = Self::VALID;
        if slots.len() != Self::SLOT_WORDS {
            return Err(RingError::TooSmall { needed: Self::SLOT_WORDS, got: slots.len() });
        }
        Ok(Ring { header, slots, _item: PhantomData })
    }

    /// The ring at the start of `len` bytes of shared memory at `base`.
    ///
    /// Checks that `base` is non-null and 64-byte aligned and that `len >= Self::BYTES`.
    /// Any content is accepted (the ring may be uninitialised or garbage): everything is validated
    /// when it is used.
    ///
    /// # Safety
    ///
    /// For all of `'a`, the `len` bytes at `base` must stay mapped readable and writable, and
    /// within this process they must be accessed only atomically: through `Ring`s made by this
    /// function (any number of them), never through ordinary references, a [`Region`](crate::Region)
    /// or plain reads and writes. Other processes and devices may write the memory at any time;
    /// that is what the crate is built for.
    #[cfg(not(loom))]
    pub unsafe fn from_raw(base: *mut u8, len: usize) -> Result<Self, RingError> {
        let () = Self::VALID;
        if base.is_null() {
            return Err(RingError::NullPointer);
        }
        if base.align_offset(core::mem::align_of::<RingHeader>()) != 0 {
            return Err(RingError::Misaligned { required: core::mem::align_of::<RingHeader>() });
        }
        if len < Self::BYTES {
            return Err(RingError::TooSmall { needed: Self::BYTES, got: len });
        }
        // SAFETY: `base` is non-null, aligned for `RingHeader` (checked above) and, by the
        // caller's contract, valid for reads and writes of `len >= HEADER_SIZE` bytes for `'a`.
        // `RingHeader` is `FromBytes` (derived), so any bytes there are a valid value, and it
        // consists only of atomics, so other processes writing it while the reference lives is
        // permitted; within this process the caller promised atomic-only access.
        let header = unsafe { &*base.cast::<RingHeader>() };
        // SAFETY: `HEADER_SIZE + 4 * SLOT_WORDS == BYTES <= len`, so the words lie inside the
        // caller's memory; `base + HEADER_SIZE` is 64-byte aligned, more than `AtomicU32` needs;
        // `AtomicU32` has the size and bit validity of `u32`, so any bytes are valid; concurrent
        // writes by others are atomic accesses or foreign to this process, as above.
        let slots = unsafe {
            core::slice::from_raw_parts(base.add(HEADER_SIZE).cast::<AtomicU32>(), Self::SLOT_WORDS)
        };
        Ok(Ring { header, slots, _item: PhantomData })
    }

    /// (Re)initialise the ring: the initialising side calls this before the peer attaches, and
    /// again after it restarts. Both indices and both wake-me flags become 0, the layout fields
    /// are written, the slots are zeroed, and `epoch` is published last.
    ///
    /// While it runs the epoch reads 0 ("not ready"), so a peer attaching concurrently gets
    /// [`RingError::NotReady`], and a peer that was attached gets [`RingError::EpochChanged`].
    pub fn init(&self, epoch: NonZeroU32) {
        let setup = &self.header.setup;
        // Seqlock-style: epoch 0, then the fields, then the new epoch (release). A reader that saw
        // any new field and then re-reads the epoch after an acquire fence sees 0 or the new value.
        setup.epoch.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        setup.magic.store(MAGIC, Ordering::Relaxed);
        setup.version.store(LAYOUT_VERSION, Ordering::Relaxed);
        setup.capacity.store(Self::CAP, Ordering::Relaxed);
        setup.slot_size.store(size_of::<T>() as u32, Ordering::Relaxed);
        self.header.producer.tail.store(index_word(epoch.get(), 0), Ordering::Relaxed);
        self.header.producer.needs_notify.store(0, Ordering::Relaxed);
        self.header.consumer.head.store(index_word(epoch.get(), 0), Ordering::Relaxed);
        self.header.consumer.needs_notify.store(0, Ordering::Relaxed);
        for word in self.slots {
            word.store(0, Ordering::Relaxed);
        }
        setup.epoch.store(epoch.get(), Ordering::Release);
    }

    /// Re-initialise with the next epoch after the one in the header (skipping 0), for a side that
    /// restarted and does not remember its old epoch. Returns the new epoch.
    pub fn reinit(&self) -> NonZeroU32 {
        let next = NonZeroU32::new(self.epoch().wrapping_add(1)).unwrap_or(NonZeroU32::MIN);
        self.init(next);
        next
    }

    /// Fault injection, to test the peer's defences: moves the producer index `ahead` slots
    /// past where it is (same epoch), as a broken or hostile producer would. Never called by a
    /// correct side; the consumer must report the index as outside the protocol window.
    pub fn scribble_producer_index(&self, ahead: u32) {
        let word = self.header.producer.tail.load(Ordering::Relaxed);
        let index = (word as u32).wrapping_add(ahead);
        self.header.producer.tail.store(index_word((word >> 32) as u32, index), Ordering::Release);
    }

    /// The epoch currently in the header (0: not initialised or being re-initialised). Untrusted.
    pub fn epoch(&self) -> u32 {
        self.header.setup.epoch.load(Ordering::Acquire)
    }

    /// The words of slot `index mod N`.
    fn slot(&self, index: u32) -> &'a [AtomicU32] {
        let start = (index & (Self::CAP - 1)) as usize * Self::WORDS;
        // Cannot panic: `start + WORDS <= N * WORDS == slots.len()` (checked by every constructor)
        // because the index is masked to `0..N`. The index's value is the peer's only through the
        // mask, never directly.
        &self.slots[start..start + Self::WORDS]
    }

    fn read_slot(&self, index: u32) -> T {
        let mut item = T::new_zeroed();
        for (chunk, word) in item.as_mut_bytes().chunks_exact_mut(4).zip(self.slot(index)) {
            chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
        }
        item
    }

    fn write_slot(&self, index: u32, item: &T) {
        for (chunk, word) in item.as_bytes().chunks_exact(4).zip(self.slot(index)) {
            let mut bytes = [0u8; 4];
            bytes.copy_from_slice(chunk);
            word.store(u32::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    fn check_epoch(&self, attached: u32) -> Result<(), RingError> {
        let now = self.header.setup.epoch.load(Ordering::Relaxed);
        if now == attached {
            Ok(())
        } else {
            Err(RingError::EpochChanged { attached, now })
        }
    }

    /// A peer index failed validation: report it as corruption unless the epoch moved meanwhile
    /// (a re-initialisation resets the indices; that is a restart, not an attack).
    fn fault(&self, attached: u32, field: Field, found: u32) -> RingError {
        match self.check_epoch(attached) {
            Err(changed) => changed,
            Ok(()) => RingError::Corrupt { field, found },
        }
    }

    /// Read and validate what an attaching side needs: the epoch and both indices.
    fn snapshot(&self) -> Result<Snapshot, RingError> {
        let setup = &self.header.setup;
        let epoch = setup.epoch.load(Ordering::Acquire);
        if epoch == 0 {
            return Err(RingError::NotReady);
        }
        let magic = setup.magic.load(Ordering::Relaxed);
        let version = setup.version.load(Ordering::Relaxed);
        let capacity = setup.capacity.load(Ordering::Relaxed);
        let slot_size = setup.slot_size.load(Ordering::Relaxed);
        let head = index_of(self.header.consumer.head.load(Ordering::Relaxed), epoch);
        let tail = index_of(self.header.producer.tail.load(Ordering::Relaxed), epoch);
        fence(Ordering::Acquire);
        if setup.epoch.load(Ordering::Relaxed) != epoch {
            return Err(RingError::NotReady);
        }
        let expect = |field, found, expected| {
            if found == expected {
                Ok(())
            } else {
                Err(RingError::Layout { field, found, expected })
            }
        };
        expect(Field::Magic, magic, MAGIC)?;
        expect(Field::Version, version, LAYOUT_VERSION)?;
        expect(Field::Capacity, capacity, Self::CAP)?;
        expect(Field::SlotSize, slot_size, size_of::<T>() as u32)?;
        if tail.wrapping_sub(head) > Self::CAP {
            return Err(RingError::Corrupt { field: Field::Tail, found: tail });
        }
        Ok(Snapshot { epoch, head, tail })
    }
}

struct Snapshot {
    epoch: u32,
    head: u32,
    tail: u32,
}

/// `v` lies in the wrapping window `lo ..= hi` (the windows used here are at most 2^31 wide).
fn within(v: u32, lo: u32, hi: u32) -> bool {
    v.wrapping_sub(lo) <= hi.wrapping_sub(lo)
}

/// Whether the peer must be signalled after a publish ([`Producer::publish`],
/// [`Consumer::release`]).
#[must_use = "signal the peer's notification when this is `Notify::Signal`, or a wake-up is lost"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The peer asked to be woken: signal its notification now (the flag has been cleared).
    Signal,
    /// Nobody is waiting.
    Quiet,
}

/// What to do after [`Consumer::prepare_wait`] / [`Producer::prepare_wait`].
#[must_use = "block only on `Wait::Block`; on `Wait::Retry` the ring has work"]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The wake-me flag is set and the ring was re-checked after it: block on the notification.
    Block,
    /// The ring changed meanwhile: do not block, go back to popping/pushing.
    Retry,
}

/// The producing side of a ring: it writes slots and owns `tail`.
///
/// It keeps private shadows of its own index (`tail`, plus what it has published) and of the last
/// `head` it validated; the capacity is the compile-time `N`. After attaching it only writes the
/// shared `tail`, never reads it back, and accepts the peer's `head` only inside the window
/// `last head ..= published tail`.
pub struct Producer<'a, T, const N: usize> {
    ring: Ring<'a, T, N>,
    epoch: u32,
    /// Next index to fill (includes staged, unpublished items).
    tail: u32,
    /// The `tail` last stored to shared memory.
    published: u32,
    /// The newest validated consumer `head`.
    head: u32,
    #[cfg(loom)]
    fault: ModelFault,
}

impl<'a, T: Item, const N: usize> Producer<'a, T, N> {
    /// Attach as the producer to an initialised ring, recording its epoch.
    ///
    /// Errors: [`RingError::NotReady`] (epoch 0 or changing), [`RingError::Layout`] (the header
    /// was made for another capacity/item/version), [`RingError::Corrupt`] (indices more than `N`
    /// apart).
    pub fn attach(ring: Ring<'a, T, N>) -> Result<Self, RingError> {
        let s = ring.snapshot()?;
        Ok(Producer {
            ring,
            epoch: s.epoch,
            tail: s.tail,
            published: s.tail,
            head: s.head,
            #[cfg(loom)]
            fault: ModelFault::None,
        })
    }

    /// After [`RingError::EpochChanged`]: attach again to the re-initialised ring. Anything staged
    /// or in the ring before is forgotten (the peer's re-initialisation dropped it).
    pub fn reattach(&mut self) -> Result<(), RingError> {
        let s = self.ring.snapshot()?;
        self.epoch = s.epoch;
        self.tail = s.tail;
        self.published = s.tail;
        self.head = s.head;
        Ok(())
    }

    /// The epoch this side attached to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The ring this producer writes.
    pub fn ring(&self) -> Ring<'a, T, N> {
        self.ring
    }

    /// Free slots right now (reads the consumer's `head`).
    pub fn free(&mut self) -> Result<u32, RingError> {
        self.ring.check_epoch(self.epoch)?;
        self.refresh_head()?;
        Ok(self.free_cached())
    }

    /// Items pushed but not yet made visible with [`publish`](Self::publish).
    pub fn unpublished(&self) -> u32 {
        self.tail.wrapping_sub(self.published)
    }

    /// Stage `item` in the next slot. It becomes visible to the consumer at the next
    /// [`publish`](Self::publish). Fails with [`RingError::Full`] (flow control, not a fault) when
    /// all `N` slots are in use.
    pub fn push(&mut self, item: T) -> Result<(), RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.free_cached() == 0 {
            self.refresh_head()?;
            if self.free_cached() == 0 {
                return Err(RingError::Full);
            }
        }
        self.ring.write_slot(self.tail, &item);
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Make every staged item visible (store `tail` with release ordering), then check whether
    /// the consumer asked to be woken. Call it after each batch of pushes and act on the answer.
    pub fn publish(&mut self) -> Result<Notify, RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.tail == self.published {
            return Ok(Notify::Quiet);
        }
        self.ring.header.producer.tail.store(index_word(self.epoch, self.tail), self.orders().release());
        self.published = self.tail;
        self.orders().wakeup_fence();
        Ok(take_flag(&self.ring.header.consumer.needs_notify))
    }

    /// The ring is full and this side wants to block until the consumer frees a slot: set the
    /// producer's wake-me flag, then re-check. Block on the notification only on [`Wait::Block`].
    ///
    /// Everything pushed must be published first ([`RingError::Unpublished`] otherwise: blocking
    /// with items the consumer cannot see could deadlock both sides).
    pub fn prepare_wait(&mut self) -> Result<Wait, RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.tail != self.published {
            return Err(RingError::Unpublished);
        }
        let flag = &self.ring.header.producer.needs_notify;
        let _ = flag.swap(1, Ordering::Relaxed);
        self.orders().wakeup_fence();
        self.refresh_head()?;
        if self.free_cached() == 0 {
            Ok(Wait::Block)
        } else {
            let _ = flag.swap(0, Ordering::Relaxed);
            Ok(Wait::Retry)
        }
    }

    fn free_cached(&self) -> u32 {
        Ring::<T, N>::CAP - self.tail.wrapping_sub(self.head)
    }

    /// Read the consumer's `head` once and accept it only if it lies between the last head seen
    /// and the last tail published: it never moves back and never passes what was published.
    fn refresh_head(&mut self) -> Result<(), RingError> {
        let head = index_of(self.ring.header.consumer.head.load(self.orders().acquire()), self.epoch);
        if !within(head, self.head, self.published) {
            return Err(self.ring.fault(self.epoch, Field::Head, head));
        }
        self.head = head;
        Ok(())
    }

    /// Inject a protocol weakening for a model test.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_model_fault(mut self, fault: ModelFault) -> Self {
        self.fault = fault;
        self
    }

    /// The protocol's orderings (weakened on purpose only in loom model tests).
    fn orders(&self) -> Orders {
        #[cfg(loom)]
        return self.fault;
        #[cfg(not(loom))]
        Protocol
    }
}

/// The consuming side of a ring: it reads slots and owns `head`.
///
/// It keeps private shadows of its own index (`head`, plus what it has released) and of the last
/// `tail` it validated; the capacity is the compile-time `N`. The peer's `tail` is accepted only
/// inside the window `last tail ..= released head + N`.
pub struct Consumer<'a, T, const N: usize> {
    ring: Ring<'a, T, N>,
    epoch: u32,
    /// Next index to read (includes popped, unreleased items).
    head: u32,
    /// The `head` last stored to shared memory.
    released: u32,
    /// The newest validated producer `tail`.
    tail: u32,
    #[cfg(loom)]
    fault: ModelFault,
}

impl<'a, T: Item, const N: usize> Consumer<'a, T, N> {
    /// Attach as the consumer to an initialised ring, recording its epoch. Errors as for
    /// [`Producer::attach`].
    pub fn attach(ring: Ring<'a, T, N>) -> Result<Self, RingError> {
        let s = ring.snapshot()?;
        Ok(Consumer {
            ring,
            epoch: s.epoch,
            head: s.head,
            released: s.head,
            tail: s.tail,
            #[cfg(loom)]
            fault: ModelFault::None,
        })
    }

    /// After [`RingError::EpochChanged`]: attach again to the re-initialised ring.
    pub fn reattach(&mut self) -> Result<(), RingError> {
        let s = self.ring.snapshot()?;
        self.epoch = s.epoch;
        self.head = s.head;
        self.released = s.head;
        self.tail = s.tail;
        Ok(())
    }

    /// The epoch this side attached to.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The ring this consumer reads.
    pub fn ring(&self) -> Ring<'a, T, N> {
        self.ring
    }

    /// Items ready to pop right now (reads the producer's `tail`).
    pub fn available(&mut self) -> Result<u32, RingError> {
        self.ring.check_epoch(self.epoch)?;
        self.refresh_tail()?;
        Ok(self.tail.wrapping_sub(self.head))
    }

    /// Items popped but whose slots are not yet handed back with [`release`](Self::release).
    pub fn unreleased(&self) -> u32 {
        self.head.wrapping_sub(self.released)
    }

    /// Copy out the next item, or `None` if the ring is empty. The slot goes back to the producer
    /// at the next [`release`](Self::release).
    ///
    /// The item is a copy made with one read of each word; the producer (hostile or not) cannot
    /// change it afterwards, but its content is whatever the producer wrote: validate it.
    pub fn pop(&mut self) -> Result<Option<T>, RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.head == self.tail {
            self.refresh_tail()?;
            if self.head == self.tail {
                return Ok(None);
            }
        }
        let item = self.ring.read_slot(self.head);
        // A re-initialisation may have zeroed the slot while it was read. If any word read came
        // from it, this acquire fence synchronises with the release fence `init` issues after
        // setting the epoch to 0, so the re-check below sees the change: `pop` never returns an
        // item that was not written in the attached epoch, even across a restart.
        fence(Ordering::Acquire);
        self.ring.check_epoch(self.epoch)?;
        self.head = self.head.wrapping_add(1);
        Ok(Some(item))
    }

    /// Hand every popped slot back (store `head` with release ordering), then check whether the
    /// producer asked to be woken. Call it after each batch of pops and act on the answer.
    pub fn release(&mut self) -> Result<Notify, RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.head == self.released {
            return Ok(Notify::Quiet);
        }
        self.ring.header.consumer.head.store(index_word(self.epoch, self.head), self.orders().release());
        self.released = self.head;
        self.orders().wakeup_fence();
        Ok(take_flag(&self.ring.header.producer.needs_notify))
    }

    /// The ring is empty and this side wants to block until the producer publishes: set the
    /// consumer's wake-me flag, then re-check. Block on the notification only on [`Wait::Block`].
    ///
    /// Everything popped must be released first ([`RingError::Unpublished`] otherwise: blocking
    /// on slots the producer cannot reuse could deadlock both sides).
    pub fn prepare_wait(&mut self) -> Result<Wait, RingError> {
        self.ring.check_epoch(self.epoch)?;
        if self.head != self.released {
            return Err(RingError::Unpublished);
        }
        let flag = &self.ring.header.consumer.needs_notify;
        let _ = flag.swap(1, Ordering::Relaxed);
        self.orders().wakeup_fence();
        self.refresh_tail()?;
        if self.head == self.tail {
            Ok(Wait::Block)
        } else {
            let _ = flag.swap(0, Ordering::Relaxed);
            Ok(Wait::Retry)
        }
    }

    /// Read the producer's `tail` once and accept it only if it lies between the last tail seen
    /// and `released + N`: it never moves back and never claims more than `N` items.
    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let tail = index_of(self.ring.header.producer.tail.load(self.orders().acquire()), self.epoch);
        let limit = self.released.wrapping_add(Ring::<T, N>::CAP);
        if !within(tail, self.tail, limit) {
            return Err(self.ring.fault(self.epoch, Field::Tail, tail));
        }
        self.tail = tail;
        Ok(())
    }

    /// Inject a protocol weakening for a model test.
    #[cfg(loom)]
    #[doc(hidden)]
    pub fn with_model_fault(mut self, fault: ModelFault) -> Self {
        self.fault = fault;
        self
    }

    /// The protocol's orderings (weakened on purpose only in loom model tests).
    fn orders(&self) -> Orders {
        #[cfg(loom)]
        return self.fault;
        #[cfg(not(loom))]
        Protocol
    }
}

/// After a publishing store and the `SeqCst` fence: if the peer's wake-me flag is set, clear it and
/// say so. The plain load first keeps the common "nobody waits" case from writing the peer's line.
fn take_flag(flag: &AtomicU32) -> Notify {
    if flag.load(Ordering::Relaxed) != 0 && flag.swap(0, Ordering::Relaxed) != 0 {
        Notify::Signal
    } else {
        Notify::Quiet
    }
}

// The tests poke the low (index) half of index words by byte offset: little-endian layout.
#[cfg(all(test, not(loom), target_endian = "little"))]
mod tests {
    use super::*;
    use crate::testing::HeapRing;
    use crate::Desc;
    use std::vec::Vec;

    /// Low (index) half of the tail word on little-endian machines; the epoch tag is at 68.
    const TAIL: usize = 64;
    const P_FLAG: usize = 72;
    const HEAD: usize = 128;
    const C_FLAG: usize = 136;
    const EPOCH: usize = 16;

    #[test]
    #[cfg(target_endian = "little")]
    fn init_writes_the_documented_bytes() {
        let mem = HeapRing::<Desc, 4>::new();
        mem.poke(192, 0x1234_5678); // a stale slot word: init zeroes slots too
        mem.ring().init(NonZeroU32::new(0x0102_0304).unwrap());
        let mut expected = [0u8; 192 + 4 * 16];
        expected[0..4].copy_from_slice(b"RING");
        expected[4..8].copy_from_slice(&[1, 0, 0, 0]); // version
        expected[8..12].copy_from_slice(&[4, 0, 0, 0]); // capacity
        expected[12..16].copy_from_slice(&[16, 0, 0, 0]); // slot size
        expected[16..20].copy_from_slice(&[4, 3, 2, 1]); // epoch
        expected[68..72].copy_from_slice(&[4, 3, 2, 1]); // tail 0, tagged with the epoch
        expected[132..136].copy_from_slice(&[4, 3, 2, 1]); // head 0, tagged with the epoch
        assert_eq!(mem.bytes(), expected);
        assert!(mem.canary_intact());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn push_writes_the_slot_bytes_and_publish_the_tail() {
        let mem = HeapRing::<Desc, 4>::new();
        let (mut p, _c) = mem.pair();
        p.push(Desc::new(0x1000, 60, 3, 1)).unwrap();
        p.push(Desc::new(0x2000, 61, 4, 0)).unwrap();
        assert_eq!(mem.peek(TAIL), 0, "nothing visible before publish");
        assert_eq!(p.publish().unwrap(), Notify::Quiet);
        let b = mem.bytes();
        assert_eq!(&b[64..72], &[2, 0, 0, 0, 1, 0, 0, 0], "tail 2 in epoch 1");
        assert_eq!(&b[192..208], &[0, 0x10, 0, 0, 60, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[208..224], &[0, 0x20, 0, 0, 61, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn items_come_out_in_order_and_the_ring_fills_at_n() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        for i in 0..4 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(9), Err(RingError::Full));
        assert_eq!(c.pop().unwrap(), None, "unpublished items are invisible");
        let _ = p.publish().unwrap();
        assert_eq!(c.available().unwrap(), 4);
        assert_eq!(c.pop().unwrap(), Some(0));
        assert_eq!(c.pop().unwrap(), Some(1));
        assert_eq!(p.push(9), Err(RingError::Full), "popped but unreleased slots are not free");
        let _ = c.release().unwrap();
        assert_eq!(p.free().unwrap(), 2);
        p.push(4).unwrap();
        p.push(5).unwrap();
        let _ = p.publish().unwrap();
        let got: Vec<u32> = core::iter::from_fn(|| c.pop().unwrap()).collect();
        assert_eq!(got, [2, 3, 4, 5]);
        assert!(mem.canary_intact());
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mem = HeapRing::<u64, 8>::new();
        let ring = mem.ring();
        ring.init(NonZeroU32::MIN);
        mem.poke(TAIL, u32::MAX - 5);
        mem.poke(HEAD, u32::MAX - 5);
        let mut p = Producer::attach(ring).unwrap();
        let mut c = Consumer::attach(ring).unwrap();
        for round in 0u64..5 {
            for i in 0..8 {
                p.push(round * 100 + i).unwrap();
            }
            let _ = p.publish().unwrap();
            for i in 0..8 {
                assert_eq!(c.pop().unwrap(), Some(round * 100 + i));
            }
            assert_eq!(c.pop().unwrap(), None);
            let _ = c.release().unwrap();
        }
        assert_eq!(mem.peek(TAIL), (u32::MAX - 5).wrapping_add(40));
    }

    #[test]
    fn attach_needs_an_initialised_matching_header() {
        let mem = HeapRing::<Desc, 4>::new();
        let ring = mem.ring();
        assert_eq!(Producer::attach(ring).err(), Some(RingError::NotReady));
        ring.init(NonZeroU32::MIN);
        let other = HeapRing::<Desc, 8>::new();
        let wrong_cap = other.ring();
        wrong_cap.init(NonZeroU32::MIN);
        // The same memory viewed with another capacity or item type is refused.
        // SAFETY: the memory is atomics only and outlives the view.
        let as_n4 = unsafe { Ring::<Desc, 4>::from_raw(other.ring().header as *const RingHeader as *mut u8, Ring::<Desc, 8>::BYTES) }.unwrap();
        assert_eq!(
            Consumer::attach(as_n4).err(),
            Some(RingError::Layout { field: Field::Capacity, found: 8, expected: 4 })
        );
        // SAFETY: as above.
        let as_u32 = unsafe { Ring::<u32, 8>::from_raw(other.ring().header as *const RingHeader as *mut u8, Ring::<Desc, 8>::BYTES) }.unwrap();
        assert_eq!(
            Consumer::attach(as_u32).err(),
            Some(RingError::Layout { field: Field::SlotSize, found: 16, expected: 4 })
        );
        mem.poke(0, 0);
        assert!(matches!(Consumer::attach(ring).err(), Some(RingError::Layout { field: Field::Magic, .. })));
        ring.init(NonZeroU32::MIN);
        mem.poke(TAIL, 5);
        assert_eq!(Consumer::attach(ring).err(), Some(RingError::Corrupt { field: Field::Tail, found: 5 }));
    }

    #[test]
    fn from_raw_checks_alignment_size_and_null() {
        let mem = HeapRing::<u32, 4>::new();
        let base = mem.ring().header as *const RingHeader as *mut u8;
        // SAFETY: each call fails before creating any reference.
        unsafe {
            assert_eq!(Ring::<u32, 4>::from_raw(core::ptr::null_mut(), 4096).err(), Some(RingError::NullPointer));
            assert_eq!(Ring::<u32, 4>::from_raw(base.add(4), 4096).err(), Some(RingError::Misaligned { required: 64 }));
            assert_eq!(
                Ring::<u32, 4>::from_raw(base, 192 + 15).err(),
                Some(RingError::TooSmall { needed: 208, got: 207 })
            );
        }
    }

    #[test]
    fn consumer_rejects_tail_beyond_capacity_or_moving_back() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        p.push(1).unwrap();
        p.push(2).unwrap();
        let _ = p.publish().unwrap();
        assert_eq!(c.pop().unwrap(), Some(1));
        mem.poke(TAIL, 5); // head 0 + N = 4 is the limit
        assert_eq!(c.pop().unwrap(), Some(2), "the already validated item is still served");
        assert_eq!(c.pop(), Err(RingError::Corrupt { field: Field::Tail, found: 5 }));
        mem.poke(TAIL, 1); // behind the tail already seen (2)
        assert_eq!(c.pop(), Err(RingError::Corrupt { field: Field::Tail, found: 1 }));
        mem.poke(TAIL, u32::MAX); // "minus one"
        assert_eq!(c.available(), Err(RingError::Corrupt { field: Field::Tail, found: u32::MAX }));
        mem.poke(TAIL, 4);
        assert_eq!(c.available(), Ok(2), "an honest value is accepted again");
    }

    #[test]
    fn producer_rejects_head_beyond_published_tail_or_moving_back() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        for i in 0..3 {
            p.push(i).unwrap();
        }
        let _ = p.publish().unwrap();
        p.push(3).unwrap(); // staged, not published
        mem.poke(HEAD, 4); // the consumer claims an unpublished slot
        assert_eq!(p.push(9), Err(RingError::Corrupt { field: Field::Head, found: 4 }));
        mem.poke(HEAD, 2);
        assert_eq!(p.free(), Ok(2));
        mem.poke(HEAD, 1); // back
        assert_eq!(p.free(), Err(RingError::Corrupt { field: Field::Head, found: 1 }));
        mem.poke(HEAD, 2);
        let _ = p.publish().unwrap();
        // The honest consumer is unaffected by what its index was set to behind its back: it
        // reads from its own shadow head (0), and its next release writes the truth.
        assert_eq!(c.pop().unwrap(), Some(0));
    }

    #[test]
    fn a_changed_epoch_is_reported_until_reattach() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        p.push(7).unwrap();
        let _ = p.publish().unwrap();
        let ring = mem.ring();
        let e = ring.reinit();
        assert_eq!(e.get(), 2);
        assert_eq!(c.pop(), Err(RingError::EpochChanged { attached: 1, now: 2 }));
        assert_eq!(p.push(1), Err(RingError::EpochChanged { attached: 1, now: 2 }));
        assert_eq!(c.pop(), Err(RingError::EpochChanged { attached: 1, now: 2 }), "sticky");
        c.reattach().unwrap();
        p.reattach().unwrap();
        assert_eq!(c.epoch(), 2);
        assert_eq!(c.pop().unwrap(), None, "the old item went with the old epoch");
        p.push(8).unwrap();
        let _ = p.publish().unwrap();
        assert_eq!(c.pop().unwrap(), Some(8));
        mem.poke(EPOCH, 0);
        assert_eq!(Consumer::attach(ring).err(), Some(RingError::NotReady));
    }

    #[test]
    fn index_reset_by_a_reinit_reads_as_epoch_change_not_corruption() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        for i in 0..3 {
            p.push(i).unwrap();
        }
        let _ = p.publish().unwrap();
        assert_eq!(c.pop().unwrap(), Some(0));
        // The peer's re-initialisation is half done: epoch already 0, tail reset to 0.
        mem.poke(EPOCH, 0);
        mem.poke(TAIL, 0);
        assert_eq!(c.ring().fault(c.epoch, Field::Tail, 0), RingError::EpochChanged { attached: 1, now: 0 });
        assert!(matches!(c.pop(), Err(RingError::EpochChanged { .. })));
    }

    #[test]
    fn a_stale_index_write_landing_after_a_reinit_is_ignored() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        for i in 0..3 {
            p.push(i).unwrap();
        }
        let _ = p.publish().unwrap();
        assert_eq!(c.pop().unwrap(), Some(0));
        assert_eq!(c.pop().unwrap(), Some(1));
        let ring = mem.ring();
        ring.reinit(); // epoch 2: the producer side restarted
        // The consumer's release had checked the epoch just before; its head store lands now.
        ring.header.consumer.head.store(crate::layout::index_word(1, 2), Ordering::Release);
        p.reattach().unwrap();
        assert_eq!(p.free(), Ok(4), "the old-epoch head reads as 0, not as 2");
        p.push(10).unwrap();
        let _ = p.publish().unwrap();
        assert!(matches!(c.pop(), Err(RingError::EpochChanged { attached: 1, now: 2 })));
        c.reattach().unwrap();
        assert_eq!(c.pop().unwrap(), Some(10));
    }

    #[test]
    fn reinit_skips_epoch_zero() {
        let mem = HeapRing::<u32, 1>::new();
        let ring = mem.ring();
        ring.init(NonZeroU32::new(u32::MAX).unwrap());
        assert_eq!(ring.reinit().get(), 1);
    }

    #[test]
    fn consumer_wait_protocol_sets_flag_and_producer_clears_it() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        assert_eq!(c.pop().unwrap(), None);
        assert_eq!(c.prepare_wait().unwrap(), Wait::Block);
        assert_eq!(mem.peek(C_FLAG), 1);
        p.push(1).unwrap();
        assert_eq!(p.publish().unwrap(), Notify::Signal);
        assert_eq!(mem.peek(C_FLAG), 0, "the producer cleared the flag");
        p.push(2).unwrap();
        assert_eq!(p.publish().unwrap(), Notify::Quiet, "one signal per wait");
        assert_eq!(p.publish().unwrap(), Notify::Quiet, "nothing new, nothing to say");
    }

    #[test]
    fn consumer_wait_rechecks_and_retries() {
        let mem = HeapRing::<u32, 4>::new();
        let (mut p, mut c) = mem.pair();
        p.push(1).unwrap();
        let _ = p.publish().unwrap();
        // The consumer decided the ring was empty from a stale view; the re-check catches it.
        assert_eq!(c.prepare_wait().unwrap(), Wait::Retry);
        assert_eq!(mem.peek(C_FLAG), 0, "retry clears the flag");
        assert_eq!(c.pop().unwrap(), Some(1));
        assert_eq!(c.prepare_wait(), Err(RingError::Unpublished));
        assert_eq!(c.release().unwrap(), Notify::Quiet);
        assert_eq!(c.prepare_wait().unwrap(), Wait::Block);
    }

    #[test]
    fn producer_wait_protocol_mirrors_the_consumer() {
        let mem = HeapRing::<u32, 2>::new();
        let (mut p, mut c) = mem.pair();
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(p.push(3), Err(RingError::Full));
        assert_eq!(p.prepare_wait(), Err(RingError::Unpublished));
        let _ = p.publish().unwrap();
        assert_eq!(p.prepare_wait().unwrap(), Wait::Block);
        assert_eq!(mem.peek(P_FLAG), 1);
        assert_eq!(c.pop().unwrap(), Some(1));
        assert_eq!(c.release().unwrap(), Notify::Signal);
        assert_eq!(mem.peek(P_FLAG), 0);
        assert_eq!(p.prepare_wait().unwrap(), Wait::Retry);
        p.push(3).unwrap();
    }

    #[test]
    fn a_hostile_flag_value_only_costs_a_signal() {
        let mem = HeapRing::<u32, 2>::new();
        let (mut p, _c) = mem.pair();
        mem.poke(C_FLAG, 0xffff_ffff);
        p.push(1).unwrap();
        assert_eq!(p.publish().unwrap(), Notify::Signal);
        assert_eq!(mem.peek(C_FLAG), 0);
    }
}
