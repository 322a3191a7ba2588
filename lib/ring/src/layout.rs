//! The bytes in shared memory: the ring header and the descriptor.
//!
//! Everything here is `#[repr(C)]` with explicit padding, so the layout is the same in every process
//! that maps the memory. Field ownership is documented in the crate docs (the "Layout" table).

use core::sync::atomic::AtomicU8;

use crate::sync::{AtomicU32, AtomicU64};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `header.setup.magic`: the bytes `b"RING"` in memory (read as a native-endian `u32`).
pub const MAGIC: u32 = u32::from_ne_bytes(*b"RING");
/// `header.setup.version`: the layout version this crate speaks.
pub const LAYOUT_VERSION: u32 = 1;
/// The cache-line size the header is laid out for (x86_64 and aarch64).
pub const CACHE_LINE: usize = 64;
/// Size of [`RingHeader`] in bytes; the slots follow at this offset.
pub const HEADER_SIZE: usize = 3 * CACHE_LINE;

/// Padding that the peer may scribble on: atomics, so that no byte a `&RingHeader` covers is
/// outside an `UnsafeCell` (a shared reference to memory another process writes must not assume
/// the bytes are frozen).
type Pad<const K: usize> = [AtomicU8; K];

fn pad<const K: usize>() -> Pad<K> {
    [const { AtomicU8::new(0) }; K]
}

/// Cache line 0: written only by the side that (re)initialises the ring, read by both.
#[repr(C, align(64))]
#[cfg_attr(not(loom), derive(FromBytes, IntoBytes, KnownLayout))]
pub struct SetupLine {
    pub(crate) magic: AtomicU32,
    pub(crate) version: AtomicU32,
    pub(crate) capacity: AtomicU32,
    pub(crate) slot_size: AtomicU32,
    pub(crate) epoch: AtomicU32,
    _pad: Pad<44>,
}

/// Cache line 1: written by the producer. `tail` is an index word (see [`index_word`]);
/// `needs_notify` is set by the producer and cleared by the consumer.
#[repr(C, align(64))]
#[cfg_attr(not(loom), derive(FromBytes, IntoBytes, KnownLayout))]
pub struct ProducerLine {
    pub(crate) tail: AtomicU64,
    pub(crate) needs_notify: AtomicU32,
    _pad: Pad<52>,
}

/// Cache line 2: written by the consumer. `head` is an index word (see [`index_word`]);
/// `needs_notify` is set by the consumer and cleared by the producer.
#[repr(C, align(64))]
#[cfg_attr(not(loom), derive(FromBytes, IntoBytes, KnownLayout))]
pub struct ConsumerLine {
    pub(crate) head: AtomicU64,
    pub(crate) needs_notify: AtomicU32,
    _pad: Pad<52>,
}

/// An index word: the free-running `u32` index in the low half, the epoch it was written in
/// in the high half (one 64-bit atomic, so the two cannot tear apart).
pub(crate) fn index_word(epoch: u32, index: u32) -> u64 {
    (u64::from(epoch) << 32) | u64::from(index)
}

/// The index an index word holds for a side attached to `epoch`. A word written in another
/// epoch — by a peer that had not noticed a re-initialisation yet, or by a hostile one — reads
/// as 0, the value [`Ring::init`](crate::Ring::init) gives every index.
pub(crate) fn index_of(word: u64, epoch: u32) -> u32 {
    if (word >> 32) as u32 == epoch {
        word as u32
    } else {
        0
    }
}

/// The 192-byte header at the start of every ring; the `N` slots follow it directly.
///
/// Every byte of it is an atomic, so any bit pattern is valid (`FromBytes`) and the peer may write
/// any byte at any time without this side's `&RingHeader` becoming unsound. It derives
/// `FromBytes`, `IntoBytes` and `KnownLayout` but deliberately not `Immutable`: it is shared
/// *mutable* memory. (Under `--cfg loom` the atomics are loom's and the derives are off.)
#[repr(C)]
#[cfg_attr(not(loom), derive(FromBytes, IntoBytes, KnownLayout))]
pub struct RingHeader {
    pub(crate) setup: SetupLine,
    pub(crate) producer: ProducerLine,
    pub(crate) consumer: ConsumerLine,
}

impl RingHeader {
    /// An all-zero header (epoch 0: "not initialised"), for rings that live in ordinary memory
    /// (host tests, model tests). Rings in shared memory come from [`Ring::from_raw`](crate::Ring::from_raw).
    pub fn new() -> Self {
        RingHeader {
            setup: SetupLine {
                magic: AtomicU32::new(0),
                version: AtomicU32::new(0),
                capacity: AtomicU32::new(0),
                slot_size: AtomicU32::new(0),
                epoch: AtomicU32::new(0),
                _pad: pad(),
            },
            producer: ProducerLine { tail: AtomicU64::new(0), needs_notify: AtomicU32::new(0), _pad: pad() },
            consumer: ConsumerLine { head: AtomicU64::new(0), needs_notify: AtomicU32::new(0), _pad: pad() },
        }
    }
}

impl Default for RingHeader {
    fn default() -> Self {
        Self::new()
    }
}

/// A buffer descriptor: 16 bytes, native-endian `u32`s, no pointers.
///
/// | offset | field    | meaning |
/// |-------:|----------|---------|
/// | 0      | `offset` | byte offset of the buffer from the start of the data [`Region`](crate::Region) |
/// | 4      | `len`    | bytes: the buffer's capacity when lent empty, the bytes filled when lent full |
/// | 8      | `id`     | cookie chosen by the side that owns the buffer; the peer hands it back unchanged |
/// | 12     | `flags`  | opaque to this crate; its meaning belongs to the protocol using the ring |
///
/// Every field is untrusted once it has crossed shared memory. Turn a descriptor into bytes only
/// through [`Region::slice`](crate::Region::slice) / [`Region::slice_mut`](crate::Region::slice_mut)
/// (bounds-checked), and on the side that owns the buffers take it back only through
/// [`BufferPool::reclaim`](crate::BufferPool::reclaim), which replaces the peer's `offset` with its
/// own record.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Desc {
    /// Byte offset of the buffer in the data region.
    pub offset: u32,
    /// Length in bytes (capacity or filled bytes, see the type docs).
    pub len: u32,
    /// The owner's cookie for the buffer.
    pub id: u32,
    /// Protocol-defined flags, not interpreted here.
    pub flags: u32,
}

impl Desc {
    /// A descriptor from its four fields.
    pub const fn new(offset: u32, len: u32, id: u32, flags: u32) -> Self {
        Desc { offset, len, id, flags }
    }
}

#[cfg(not(loom))]
const _: () = {
    assert!(core::mem::size_of::<SetupLine>() == CACHE_LINE);
    assert!(core::mem::size_of::<ProducerLine>() == CACHE_LINE);
    assert!(core::mem::size_of::<ConsumerLine>() == CACHE_LINE);
    assert!(core::mem::size_of::<RingHeader>() == HEADER_SIZE);
    assert!(core::mem::align_of::<RingHeader>() == CACHE_LINE);
    assert!(core::mem::offset_of!(RingHeader, producer) == CACHE_LINE);
    assert!(core::mem::offset_of!(RingHeader, consumer) == 2 * CACHE_LINE);
    assert!(core::mem::size_of::<Desc>() == 16);
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::mem::offset_of;

    #[test]
    fn header_field_offsets_are_the_documented_ones() {
        assert_eq!(offset_of!(RingHeader, setup) + offset_of!(SetupLine, magic), 0);
        assert_eq!(offset_of!(RingHeader, setup) + offset_of!(SetupLine, version), 4);
        assert_eq!(offset_of!(RingHeader, setup) + offset_of!(SetupLine, capacity), 8);
        assert_eq!(offset_of!(RingHeader, setup) + offset_of!(SetupLine, slot_size), 12);
        assert_eq!(offset_of!(RingHeader, setup) + offset_of!(SetupLine, epoch), 16);
        assert_eq!(offset_of!(RingHeader, producer) + offset_of!(ProducerLine, tail), 64);
        assert_eq!(offset_of!(RingHeader, producer) + offset_of!(ProducerLine, needs_notify), 72);
        assert_eq!(offset_of!(RingHeader, consumer) + offset_of!(ConsumerLine, head), 128);
        assert_eq!(offset_of!(RingHeader, consumer) + offset_of!(ConsumerLine, needs_notify), 136);
    }

    #[test]
    fn magic_is_ring_in_memory() {
        assert_eq!(&MAGIC.to_ne_bytes(), b"RING");
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn desc_from_byte_fixture() {
        let bytes: [u8; 16] = [
            0x00, 0x10, 0x00, 0x00, // offset 0x1000
            0xea, 0x05, 0x00, 0x00, // len 1514
            0x07, 0x00, 0x00, 0x00, // id 7
            0x01, 0x00, 0x00, 0x80, // flags
        ];
        let d = Desc::read_from_bytes(&bytes).unwrap();
        assert_eq!(d, Desc::new(0x1000, 1514, 7, 0x8000_0001));
        assert_eq!(d.as_bytes(), &bytes);
    }

    #[test]
    fn any_header_bytes_are_a_valid_header() {
        // FromBytes: a header made of arbitrary bytes is a valid value (what a hostile peer can
        // leave in shared memory); reading it yields those bytes back.
        let mut raw = [0u8; HEADER_SIZE];
        for (i, b) in raw.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let h = RingHeader::read_from_bytes(&raw).unwrap();
        use core::sync::atomic::Ordering::Relaxed;
        assert_eq!(h.producer.tail.load(Relaxed).to_ne_bytes(), raw[64..72]);
        assert_eq!(h.consumer.head.load(Relaxed).to_ne_bytes(), raw[128..136]);
    }

    #[test]
    fn index_words_carry_their_epoch() {
        assert_eq!(index_word(3, 0xffff_fffe), 0x0000_0003_ffff_fffe);
        assert_eq!(index_of(0x0000_0003_ffff_fffe, 3), 0xffff_fffe);
        assert_eq!(index_of(0x0000_0002_0000_0005, 3), 0, "a word from another epoch reads as 0");
        assert_eq!(index_of(5, 3), 0);
    }
}
