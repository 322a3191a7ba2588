//! Zero-copy shared-memory rings: the whole ring protocol, in one crate both sides depend on.
//!
//! Two processes (say, a driver and the net server) map the same memory. In it live
//! **rings** of small fixed-size items — usually [`Desc`] descriptors — and a **data region** of
//! buffers the descriptors point into *by offset, never by pointer*. Every ring has exactly one
//! producer and one consumer, each in its own address space, and **each treats the other as
//! hostile**: nothing the peer writes can make this side panic, read or write out of bounds, or
//! believe it holds something it does not.
//!
//! Uses in this system:
//!
//! - **virtio-net driver ↔ net server.** Receive: the server produces a *free* ring of empty
//!   buffers for the driver, the driver produces a *used* ring of filled frames back. Transmit:
//!   the server produces a *used* ring of frames to send, the driver returns their buffers on a
//!   *free* ring. The server owns the DMA region's buffers ([`BufferPool`]); the driver only
//!   validates descriptors against the region ([`Region`]). The driver (re)initialises the rings
//!   and bumps the epoch when it restarts.
//! - **client (libsock) ↔ net server data area.** Bulk socket data travels in buffers of a
//!   per-client region through a pair of rings per direction; the control IPC only says "look at
//!   the ring". The wake-me flags make most pushes signal-free: a 1 MiB send in 64 KiB buffers
//!   costs at most one notification per buffer, and none while the server is already busy.
//!
//! # Quick start
//!
//! ```
//! use shared_ring::{Consumer, Desc, Notify, Producer, Ring};
//! use core::num::NonZeroU32;
//!
//! // Stand-in for a frame mapped into both processes (must be 64-byte aligned).
//! #[repr(C, align(64))]
//! struct Frame([u8; 4096]);
//! let mem = Box::into_raw(Box::new(Frame([0; 4096])));
//!
//! // SAFETY: the frame stays allocated for the rest of the example and is only used through rings.
//! let ring = unsafe { Ring::<Desc, 64>::from_raw(mem.cast(), 4096) }.unwrap();
//! ring.init(NonZeroU32::new(1).unwrap()); // the initialising side
//!
//! let mut tx = Producer::attach(ring).unwrap(); // in one process
//! let mut rx = Consumer::attach(ring).unwrap(); // in the other
//!
//! tx.push(Desc::new(0, 1514, 7, 0)).unwrap();
//! match tx.publish().unwrap() {
//!     Notify::Signal => { /* seL4_Signal(consumer's notification) */ }
//!     Notify::Quiet => {}
//! }
//! assert_eq!(rx.pop().unwrap(), Some(Desc::new(0, 1514, 7, 0)));
//! let _ = rx.release().unwrap(); // hand the slot back (signal the producer if it says so)
//! # drop(unsafe { Box::from_raw(mem) });
//! ```
//!
//! # Layout
//!
//! A ring of capacity `N` (a power of two, `1..=2^31`, checked at compile time) holding items `T`
//! (a zerocopy plain-bytes type whose size is a multiple of 4) occupies
//! [`Ring::<T, N>::BYTES`](Ring::BYTES) `= 192 + N * size_of::<T>()` bytes at a 64-byte aligned
//! address. All fields are native-endian (both sides run on the same machine) and accessed only
//! atomically. The three header cache lines separate what each side writes, so the producer and
//! consumer do not bounce one line between cores on every operation.
//!
//! | offset | field | type | written by | read by | notes |
//! |---:|---|---|---|---|---|
//! | 0 | `magic` = `b"RING"` | u32 | initialiser | attacher | checked at attach |
//! | 4 | `version` = [`LAYOUT_VERSION`] | u32 | initialiser | attacher | checked at attach |
//! | 8 | `capacity` = `N` | u32 | initialiser | attacher | checked at attach, **never used for arithmetic** |
//! | 12 | `slot_size` = `size_of::<T>()` | u32 | initialiser | attacher | checked at attach |
//! | 16 | `epoch` | u32 | initialiser | both | 0 = not ready; see *Epochs* |
//! | 20..64 | padding | | nobody | nobody | |
//! | 64 | `tail` index word | u64 | producer (and `init`) | consumer | low half: next slot to fill; high half: epoch |
//! | 72 | producer `needs_notify` | u32 | producer sets, consumer clears | both | "wake me when space frees" |
//! | 76..128 | padding | | nobody | nobody | |
//! | 128 | `head` index word | u64 | consumer (and `init`) | producer | low half: next slot to read; high half: epoch |
//! | 136 | consumer `needs_notify` | u32 | consumer sets, producer clears | both | "wake me when items arrive" |
//! | 140..192 | padding | | nobody | nobody | |
//! | 192 | slots `[T; N]` | | producer (slots it owns) | consumer (published slots) | slot `i mod N` |
//!
//! An **index word** holds a free-running `u32` index in its low half and, in its high half, the
//! epoch the writer was attached to; a word carrying any other epoch than the reader's reads as
//! index 0 (the value `init` writes). See *Epochs* for why.
//!
//! The header type, [`RingHeader`], is `#[repr(C)]` with explicit padding and derives zerocopy's
//! `FromBytes`, `IntoBytes` and `KnownLayout` (any bytes are a valid header); it is made entirely
//! of atomics, so it is not `Immutable` — it is shared *mutable* memory. [`Desc`] derives all four
//! traits including `Immutable`.
//!
//! # Indices and what the peer cannot do
//!
//! `head` and `tail` are free-running `u32`s compared with wrapping arithmetic: the ring holds
//! `tail - head` items and slot `i` is `i & (N - 1)`. Each side keeps **private shadows**:
//!
//! - of its own index (it never reads its own index back from shared memory after attaching),
//! - of the last peer index it validated, and
//! - of the capacity (the compile-time `N`; the header's `capacity` field is only compared).
//!
//! Every read of the peer's index is one atomic load into a local, then a check, then use:
//!
//! - the producer accepts `head` only in the window `last head ..= published tail`;
//! - the consumer accepts `tail` only in the window `last tail ..= released head + N`
//!   (so in particular `tail - head <= N` as a wrapping distance).
//!
//! Anything else is [`RingError::Corrupt`] (or [`RingError::EpochChanged`] if the epoch moved
//! meanwhile, since a re-initialisation legitimately resets the indices); the shadows are left as
//! they were. Consequently, whatever the peer writes anywhere in the ring:
//!
//! - no panic and no out-of-bounds access: slot indices are masked, slot reads copy whole items
//!   word by word with atomic loads into a local, and every `T` is `FromBytes` (any bytes valid);
//! - the consumer never reports more than `N` items, nor the same slot twice without the
//!   producer having moved `tail` forward; the producer never overwrites a slot the consumer has
//!   not released (as far as the consumer's own `head` says);
//! - the peer can at worst make this side see garbage items (validate them: [`Region`],
//!   [`BufferPool`]), see errors, or wait forever for a signal it never sends. **Safety is
//!   guaranteed against a hostile peer; liveness is not** — do not let one client's ring block
//!   the server (the server waits on notifications from all its peers at once).
//!
//! Descriptors are data like any other: [`Region::slice`] / [`Region::slice_mut`] accept one only
//! if `offset + len` lies inside the region (64-bit arithmetic, no overflow) and inside a single
//! buffer of the region's buffer size. The side that owns the buffers also runs a
//! [`BufferPool`], which remembers what it lent: a returned descriptor must carry the id of a
//! buffer currently lent, its `len` must not exceed the recorded length, and the pool rebuilds the
//! descriptor from its **own record** of the offset. A buffer cannot come back twice.
//!
//! The buffer bytes themselves are plain shared memory: a hostile peer may keep writing a buffer
//! it has handed back. Parse each buffer once into locals and validate those.
//!
//! # Signalling: the wake-me protocol
//!
//! Each direction has a `needs_notify` flag: the consumer's ("wake me when items arrive") and the
//! producer's ("wake me when space frees"). Each side has a binding to the peer's seL4
//! notification (a sticky binary semaphore: a signal sent before the wait is not lost). Written
//! for the consumer waiting on an empty ring; the producer waiting on a full ring is the mirror
//! image (its flag, `head` instead of `tail`, [`Consumer::release`] instead of
//! [`Producer::publish`]).
//!
//! Consumer, [`Consumer::prepare_wait`] after `pop` returned `None` (and after `release`):
//!
//! 1. `consumer.needs_notify = 1` (an atomic swap)
//! 2. `fence(SeqCst)`
//! 3. re-read `tail`; if the ring is no longer empty, clear the flag (swap) and return [`Wait::Retry`]
//!    (pop again); otherwise return [`Wait::Block`] and the caller waits on its notification.
//!
//! Producer, [`Producer::publish`] after a batch of pushes:
//!
//! 1. store `tail` (release)
//! 2. `fence(SeqCst)`
//! 3. if `consumer.needs_notify != 0`, swap it to 0; if it was set, return [`Notify::Signal`]
//!    and the caller signals the consumer's notification.
//!
//! **Why no wake-up is lost.** The consumer blocks only if step C3 saw the ring empty, i.e. did
//! not see the producer's store P1. The two `SeqCst` fences are totally ordered. If the consumer's
//! fence C2 came first, then P3 (after P2) sees the flag store C1 (or a later value), so the
//! producer signals — unless another publish already swapped the flag, and that one signalled.
//! If the producer's fence P2 came first, then C3 (after C2) sees P1, so the consumer does not
//! block. Either way a consumer that blocks has a signal coming or already pending in its
//! notification. Both fences are needed: with release/acquire alone, C3 could read the old `tail`
//! and P3 the old flag at the same time (the store-buffering outcome), and the model tests show
//! exactly that deadlock when the fences are removed.
//!
//! Every write to a flag is an atomic swap, so the flag's modification order is one chain of
//! read-modify-writes. The argument above does not need it, but it makes the order of the
//! flag's values obvious (and loom, which infers modification order from causality, models
//! it exactly; with a plain store for "set" it reports a spurious lost wake-up).
//!
//! Wake-ups can be spurious (a flag cleared by `Retry` races with a producer that already
//! decided to signal): after waking, always go back to popping, and re-arm before blocking again.
//! `prepare_wait` refuses ([`RingError::Unpublished`]) while this side has popped-but-unreleased
//! or pushed-but-unpublished items, since blocking then could deadlock both sides.
//!
//! A typical consumer loop:
//!
//! ```text
//! loop {
//!     while let Some(d) = rx.pop()? { handle(d) }
//!     if rx.release()? == Notify::Signal { producer_notification.signal() }
//!     if rx.prepare_wait()? == Wait::Block { my_notification.wait() }
//! }
//! ```
//!
//! # Epochs and restart
//!
//! The side that (re)initialises a ring ([`Ring::init`], or [`Ring::reinit`] which takes the
//! header's epoch + 1) writes epoch 0, then the layout fields, both index words (index 0, tagged
//! with the new epoch), the flags and the slots, then the new non-zero epoch with release
//! ordering (a seqlock: an attacher that reads a changing header gets [`RingError::NotReady`]
//! and retries). [`Producer::attach`] / [`Consumer::attach`] validate the header and record the
//! epoch. Every later operation compares the header's epoch with the recorded one and fails with
//! [`RingError::EpochChanged`] when they differ. The other side then drops what was in flight
//! (e.g. [`BufferPool::reclaim_all_lent`]), calls `reattach()`, and re-posts its buffers: a
//! restarted driver re-handshakes without the net server trusting anything from before.
//!
//! A re-initialisation races with a peer that is still working, and two details make that race
//! harmless (both found by the model tests):
//!
//! - The surviving side may have checked the epoch just before `init` ran and store its index
//!   just after, into the fresh ring. Its index word carries the old epoch, so the new epoch reads
//!   it as 0, the value `init` gave it, instead of as a wild index.
//! - A consumer may copy a slot while `init` zeroes it. `pop` re-checks the epoch after an acquire
//!   fence once the item is copied, so it never returns an item that was not written in the epoch
//!   it is attached to. And an index reset by `init` is reported as `EpochChanged`, never as
//!   `Corrupt`: a restart is not mistaken for an attack.
//!
//! # Model checking and tests
//!
//! The atomics come from the [`sync`] module: `core::sync::atomic` normally, loom's under
//! `--cfg loom`, so the model checker runs this very code. Run the model tests with
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test -p shared-ring --release --test loom
//! ```
//!
//! (The separate target directory keeps the `--cfg loom` build from replacing the normal
//! release artifacts other builds in the workspace use.) They check that no wake-up is lost in either direction, that items arrive intact and in
//! order, and that a concurrent re-initialisation is seen as a restart; and — to show the model
//! can fail — that removing the `SeqCst` fences deadlocks and that relaxed index stores deliver
//! stale items. The search is bounded to 4 preemptions (`LOOM_MAX_PREEMPTIONS` overrides; the
//! suite takes seconds). Host tests: `cargo test -p shared-ring` (unit tests with byte fixtures,
//! property tests with a hostile peer, a two-thread stress test moving a million buffers).
//!
//! # `unsafe`
//!
//! Raw shared memory enters through exactly two `unsafe fn` constructors, each with a
//! `# Safety` section: [`Ring::from_raw`] and [`Region::from_raw`]. Inside the crate, `unsafe`
//! appears only in those (turning the checked pointer into references to atomics), in
//! `Region::slice` / `slice_mut` (making the slice after the bounds check), and in `Region`'s
//! `Send`/`Sync` impls; each has a `// SAFETY:` comment. Everything else is safe code over
//! atomics.

#![no_std]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(test)]
extern crate std;

mod layout;
mod pool;
mod region;
mod ring;
pub mod sync;

#[cfg(all(test, not(loom)))]
mod testing;

pub use layout::{Desc, RingHeader, CACHE_LINE, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
pub use pool::BufferPool;
pub use region::Region;
pub use ring::{Consumer, Item, Notify, Producer, Ring, Wait};

/// A header field named in an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `setup.magic`
    Magic,
    /// `setup.version`
    Version,
    /// `setup.capacity`
    Capacity,
    /// `setup.slot_size`
    SlotSize,
    /// The consumer's `head`.
    Head,
    /// The producer's `tail`.
    Tail,
}

/// Everything that can go wrong. Only [`Full`](RingError::Full) is routine flow control; the
/// rest mean a misused API, an uninitialised or restarted peer, or a misbehaving peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RingError {
    /// The ring has no free slot (flow control, not a fault).
    Full,
    /// The ring's epoch is 0 or changed while attaching: it is being (re)initialised.
    NotReady,
    /// The header was written for another layout (capacity, item size, version) or is garbage.
    Layout {
        /// Which field.
        field: Field,
        /// What the header holds.
        found: u32,
        /// What this side was built for.
        expected: u32,
    },
    /// The peer's index is outside the window the protocol allows.
    Corrupt {
        /// [`Field::Head`] or [`Field::Tail`] (or another field at attach).
        field: Field,
        /// The value read.
        found: u32,
    },
    /// The ring was re-initialised since this side attached: drop what is in flight and
    /// `reattach()`.
    EpochChanged {
        /// The epoch this side attached to.
        attached: u32,
        /// The epoch the header holds now (0 while being re-initialised).
        now: u32,
    },
    /// `prepare_wait` was called with items this side has not published/released yet.
    Unpublished,
    /// A null base pointer.
    NullPointer,
    /// The base pointer is not aligned to `required` bytes.
    Misaligned {
        /// The alignment needed.
        required: usize,
    },
    /// The memory is smaller than the layout needs.
    TooSmall {
        /// Bytes (or slot words, for [`Ring::new`]) needed.
        needed: usize,
        /// What was given.
        got: usize,
    },
    /// A region's buffer size cannot be 0.
    ZeroBufSize,
    /// A descriptor names bytes outside the region.
    OutOfRegion {
        /// The descriptor's offset.
        offset: u32,
        /// The descriptor's length.
        len: u32,
    },
    /// A descriptor's range spans more than one buffer of the region.
    CrossesBuffer {
        /// The descriptor's offset.
        offset: u32,
        /// The descriptor's length.
        len: u32,
    },
    /// A returned descriptor's id names no buffer of the pool.
    UnknownId {
        /// The id.
        id: u32,
    },
    /// A returned descriptor's buffer is not currently lent (never lent, or returned twice).
    NotLent {
        /// The id.
        id: u32,
    },
    /// The buffer is not held by this side (it is free or lent).
    NotHeld {
        /// The id.
        id: u32,
    },
    /// A length larger than the buffer's recorded length.
    TooLong {
        /// The id.
        id: u32,
        /// The length given.
        len: u32,
        /// The buffer's recorded length.
        max: u32,
    },
    /// The buffer pool has no room for another buffer.
    PoolFull,
}

impl RingError {
    /// Whether this error says the peer broke the protocol (as opposed to flow control, a
    /// restart, or a local misuse). A server drops a peer on these.
    pub fn is_peer_fault(&self) -> bool {
        matches!(
            self,
            RingError::Layout { .. }
                | RingError::Corrupt { .. }
                | RingError::OutOfRegion { .. }
                | RingError::CrossesBuffer { .. }
                | RingError::UnknownId { .. }
                | RingError::NotLent { .. }
                | RingError::TooLong { .. }
        )
    }
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::Full => write!(f, "ring full"),
            RingError::NotReady => write!(f, "ring not initialised yet"),
            RingError::Layout { field, found, expected } => {
                write!(f, "ring header {field:?} is {found:#x}, expected {expected:#x}")
            }
            RingError::Corrupt { field, found } => write!(f, "peer wrote invalid {field:?} {found:#x}"),
            RingError::EpochChanged { attached, now } => {
                write!(f, "ring re-initialised (epoch {attached} -> {now})")
            }
            RingError::Unpublished => write!(f, "publish/release pending items before waiting"),
            RingError::NullPointer => write!(f, "null shared-memory pointer"),
            RingError::Misaligned { required } => write!(f, "shared memory not {required}-byte aligned"),
            RingError::TooSmall { needed, got } => write!(f, "shared memory too small ({got} < {needed})"),
            RingError::ZeroBufSize => write!(f, "region buffer size is 0"),
            RingError::OutOfRegion { offset, len } => {
                write!(f, "descriptor {offset:#x}+{len:#x} outside the region")
            }
            RingError::CrossesBuffer { offset, len } => {
                write!(f, "descriptor {offset:#x}+{len:#x} spans two buffers")
            }
            RingError::UnknownId { id } => write!(f, "no buffer with id {id}"),
            RingError::NotLent { id } => write!(f, "buffer {id} is not lent"),
            RingError::NotHeld { id } => write!(f, "buffer {id} is not held"),
            RingError::TooLong { id, len, max } => write!(f, "buffer {id}: length {len} > {max}"),
            RingError::PoolFull => write!(f, "buffer pool full"),
        }
    }
}

impl core::error::Error for RingError {}
