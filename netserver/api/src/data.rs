//! The per-client data area: where bulk data travels.
//!
//! See the crate docs ("Data area") for the design. This module holds everything both sides
//! share: the layout, descriptor checks, and bounds-checked copies over a [`DataRegion`].
//!
//! The region holds payload bytes only. There is no header, index or length in shared memory,
//! so there is nothing in it a hostile peer could corrupt except payload: every offset and length
//! arrives in a control message and is checked against the receiver's own copy of the layout.

use core::ops::Range;
use serde::{Deserialize, Serialize};

use crate::{BufDesc, Errno, CHUNK_SIZE};

/// Largest slot the protocol allows (a `Hello` announcing more is rejected by the client).
pub const MAX_SLOT_SIZE: u32 = 1 << 20;
/// Largest data area the protocol allows.
pub const MAX_DATA_AREA_SIZE: usize = 64 << 20;
/// Default number of slots per direction: two concurrent senders and two concurrent receivers
/// per client before one waits for a slot.
pub const DEFAULT_SLOTS_PER_DIRECTION: u16 = 2;
/// Default data area size: 2 x 64 KiB client->server + 2 x 64 KiB server->client = 256 KiB.
pub const DEFAULT_DATA_AREA_SIZE: usize = DataAreaLayout::DEFAULT.total_len();

/// How a client's data area is divided. Decided by the server, sent in `Hello`.
///
/// ```text
/// offset 0                  tx_len()                                     total_len()
/// |  TX slot 0  |  TX slot 1 |  RX slot 0  |  RX slot 1  |
/// |<- client writes, server reads ->|<- server writes, client reads ->|
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataAreaLayout {
    /// Bytes per slot; also the largest single transfer (one control round trip).
    pub slot_size: u32,
    /// Slots in the client->server (send) half.
    pub tx_slots: u16,
    /// Slots in the server->client (receive) half.
    pub rx_slots: u16,
}

impl DataAreaLayout {
    /// 64 KiB slots, two per direction.
    pub const DEFAULT: DataAreaLayout = DataAreaLayout {
        slot_size: CHUNK_SIZE as u32,
        tx_slots: DEFAULT_SLOTS_PER_DIRECTION,
        rx_slots: DEFAULT_SLOTS_PER_DIRECTION,
    };

    /// Size of the send half. Only meaningful for a layout that passed [`Self::validate`].
    pub const fn tx_len(&self) -> usize {
        self.slot_size as usize * self.tx_slots as usize
    }

    /// Size of the receive half.
    pub const fn rx_len(&self) -> usize {
        self.slot_size as usize * self.rx_slots as usize
    }

    /// Size of the whole area.
    pub const fn total_len(&self) -> usize {
        self.tx_len() + self.rx_len()
    }

    /// Rejects layouts no region should have: empty slots, no slot in a direction, slots over
    /// [`MAX_SLOT_SIZE`], areas over [`MAX_DATA_AREA_SIZE`]. Never overflows (all products of a
    /// `u32` below 2^20 and a `u16` fit in `usize` on 32-bit targets too).
    pub fn validate(&self) -> Result<(), Errno> {
        if self.slot_size == 0
            || self.slot_size > MAX_SLOT_SIZE
            || self.tx_slots == 0
            || self.rx_slots == 0
        {
            return Err(Errno::EINVAL);
        }
        let total = (self.slot_size as u64) * (self.tx_slots as u64 + self.rx_slots as u64);
        if total > MAX_DATA_AREA_SIZE as u64 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Descriptor of send slot `i` (whole slot).
    pub fn tx_slot(&self, i: usize) -> Option<BufDesc> {
        if i >= self.tx_slots as usize {
            return None;
        }
        let offset = u32::try_from(i * self.slot_size as usize).ok()?;
        Some(BufDesc { offset, len: self.slot_size })
    }

    /// Descriptor of receive slot `i` (whole slot).
    pub fn rx_slot(&self, i: usize) -> Option<BufDesc> {
        if i >= self.rx_slots as usize {
            return None;
        }
        let offset = u32::try_from(self.tx_len() + i * self.slot_size as usize).ok()?;
        Some(BufDesc { offset, len: self.slot_size })
    }

    /// Checks a descriptor named by a `Send`: it must lie wholly in the send half and be at most
    /// one slot long. Returns the byte range. `EFAULT` outside the half, `EMSGSIZE` too long.
    pub fn check_tx(&self, desc: BufDesc) -> Result<Range<usize>, Errno> {
        self.check_in(desc, 0, self.tx_len())
    }

    /// Checks a descriptor named by a `Recv`: wholly in the receive half, at most one slot.
    pub fn check_rx(&self, desc: BufDesc) -> Result<Range<usize>, Errno> {
        self.check_in(desc, self.tx_len(), self.total_len())
    }

    fn check_in(&self, desc: BufDesc, lo: usize, hi: usize) -> Result<Range<usize>, Errno> {
        if desc.len > self.slot_size {
            return Err(Errno::EMSGSIZE);
        }
        let start = desc.offset as usize;
        let end = start.checked_add(desc.len as usize).ok_or(Errno::EFAULT)?;
        if start < lo || end > hi {
            return Err(Errno::EFAULT);
        }
        Ok(start..end)
    }
}

impl Default for DataAreaLayout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Memory shared by one client and the server, seen through bounds-checked copies.
///
/// Implementations: [`AtomicRegion`] (heap, host threads); on seL4 a thin adapter over the
/// shared-ring crate's mapped region (the raw-pointer, `unsafe` part lives there, since this
/// crate forbids `unsafe`). Both methods take `&self`: the memory is shared and the peer may
/// write it at any time, so an implementation must copy with volatile/atomic accesses and must
/// never hand out a reference into the region.
pub trait DataRegion {
    /// Size in bytes.
    fn len(&self) -> usize;
    /// True when the region has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `out.len()` bytes starting at `offset` into `out`; `EFAULT` if out of bounds.
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Errno>;
    /// Copies `data` to `offset`; `EFAULT` if out of bounds.
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), Errno>;
}

impl<R: DataRegion + ?Sized> DataRegion for &R {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        (**self).read(offset, out)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        (**self).write(offset, data)
    }
}

#[cfg(feature = "alloc")]
impl<R: DataRegion + ?Sized> DataRegion for alloc::sync::Arc<R> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        (**self).read(offset, out)
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        (**self).write(offset, data)
    }
}

/// Bounds check shared by region implementations: the range `offset..offset+len` in a region of
/// `size` bytes, or `EFAULT`.
pub fn region_range(size: usize, offset: usize, len: usize) -> Result<Range<usize>, Errno> {
    let end = offset.checked_add(len).ok_or(Errno::EFAULT)?;
    if end > size {
        return Err(Errno::EFAULT);
    }
    Ok(offset..end)
}

/// A heap-backed region of atomic bytes: safe to share between host threads (the host transport
/// gives the same `Arc<AtomicRegion>` to the client and the server). Concurrent writes by a
/// misbehaving peer are races on payload only, never undefined behaviour.
#[cfg(feature = "alloc")]
pub struct AtomicRegion {
    bytes: alloc::boxed::Box<[core::sync::atomic::AtomicU8]>,
}

#[cfg(feature = "alloc")]
impl AtomicRegion {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> AtomicRegion {
        let bytes = (0..len).map(|_| core::sync::atomic::AtomicU8::new(0)).collect();
        AtomicRegion { bytes }
    }

    /// A zeroed region sized for `layout`.
    pub fn for_layout(layout: &DataAreaLayout) -> AtomicRegion {
        AtomicRegion::new(layout.total_len())
    }
}

#[cfg(feature = "alloc")]
impl DataRegion for AtomicRegion {
    fn len(&self) -> usize {
        self.bytes.len()
    }
    fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), Errno> {
        let r = region_range(self.bytes.len(), offset, out.len())?;
        let src = self.bytes.get(r).ok_or(Errno::EFAULT)?;
        for (o, s) in out.iter_mut().zip(src) {
            *o = s.load(core::sync::atomic::Ordering::Relaxed);
        }
        // Pairs with the writer's release fence: bytes written before the control call that
        // handed the buffer over are visible after the reply/request that carried it.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        Ok(())
    }
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), Errno> {
        let r = region_range(self.bytes.len(), offset, data.len())?;
        let dst = self.bytes.get(r).ok_or(Errno::EFAULT)?;
        for (d, s) in dst.iter().zip(data) {
            d.store(*s, core::sync::atomic::Ordering::Relaxed);
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        Ok(())
    }
}

/// A data area: a region plus the layout both sides agreed on. Each side builds its own from its
/// own copy of the layout (the server from its configuration, the client from `Hello`).
#[derive(Debug, Clone)]
pub struct DataArea<R> {
    layout: DataAreaLayout,
    region: R,
}

impl<R: DataRegion> DataArea<R> {
    /// Checks the layout and that the region is large enough for it (`EINVAL` otherwise).
    pub fn new(layout: DataAreaLayout, region: R) -> Result<Self, Errno> {
        layout.validate()?;
        if region.len() < layout.total_len() {
            return Err(Errno::EINVAL);
        }
        Ok(DataArea { layout, region })
    }

    pub fn layout(&self) -> &DataAreaLayout {
        &self.layout
    }

    pub fn region(&self) -> &R {
        &self.region
    }

    // ---- client side ----

    /// Client: copies `data` into the start of send buffer `desc` (`EMSGSIZE` if it does not fit).
    pub fn write_tx(&self, desc: BufDesc, data: &[u8]) -> Result<(), Errno> {
        let r = self.layout.check_tx(desc)?;
        if data.len() > r.len() {
            return Err(Errno::EMSGSIZE);
        }
        self.region.write(r.start, data)
    }

    /// Client: copies the first `len` bytes of receive buffer `desc` into `out`. `len` comes from
    /// the server's reply and is checked against both `desc` and `out` (`EPROTO` if it exceeds
    /// them: the server broke the protocol).
    pub fn read_rx(&self, desc: BufDesc, len: usize, out: &mut [u8]) -> Result<(), Errno> {
        let r = self.layout.check_rx(desc)?;
        if len > r.len() || len > out.len() {
            return Err(Errno::EPROTO);
        }
        let out = out.get_mut(..len).ok_or(Errno::EPROTO)?;
        self.region.read(r.start, out)
    }

    // ---- server side ----

    /// Server: copies bytes `skip..` of send buffer `desc` into `out`, as many as fit. Returns the
    /// count. Call repeatedly with growing `skip` to fill a wrapped socket buffer.
    pub fn read_tx(&self, desc: BufDesc, skip: usize, out: &mut [u8]) -> Result<usize, Errno> {
        let r = self.layout.check_tx(desc)?;
        let avail = r.len().saturating_sub(skip);
        let n = avail.min(out.len());
        let dst = out.get_mut(..n).ok_or(Errno::EFAULT)?;
        self.region.read(r.start + skip.min(r.len()), dst)?;
        Ok(n)
    }

    /// Server: copies `data` into receive buffer `desc` at byte `at`, as much as fits. Returns the
    /// count.
    pub fn write_rx(&self, desc: BufDesc, at: usize, data: &[u8]) -> Result<usize, Errno> {
        let r = self.layout.check_rx(desc)?;
        let room = r.len().saturating_sub(at);
        let n = room.min(data.len());
        let src = data.get(..n).ok_or(Errno::EFAULT)?;
        self.region.write(r.start + at.min(r.len()), src)?;
        Ok(n)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    fn area() -> DataArea<AtomicRegion> {
        let l = DataAreaLayout::DEFAULT;
        DataArea::new(l, AtomicRegion::for_layout(&l)).unwrap()
    }

    #[test]
    fn default_layout_is_256k_with_64k_slots() {
        let l = DataAreaLayout::DEFAULT;
        assert_eq!(l.validate(), Ok(()));
        assert_eq!(DEFAULT_DATA_AREA_SIZE, 256 * 1024);
        assert_eq!(l.tx_slot(1), Some(BufDesc { offset: 65536, len: 65536 }));
        assert_eq!(l.rx_slot(0), Some(BufDesc { offset: 131072, len: 65536 }));
        assert_eq!(l.tx_slot(2), None);
        assert_eq!(l.rx_slot(2), None);
    }

    #[test]
    fn descriptors_are_confined_to_their_half() {
        let l = DataAreaLayout::DEFAULT;
        let tx = l.tx_slot(0).unwrap();
        let rx = l.rx_slot(0).unwrap();
        assert_eq!(l.check_tx(tx), Ok(0..65536));
        assert_eq!(l.check_rx(tx), Err(Errno::EFAULT));
        assert_eq!(l.check_tx(rx), Err(Errno::EFAULT));
        // Straddling the TX/RX boundary.
        assert_eq!(l.check_tx(BufDesc { offset: 131072 - 10, len: 20 }), Err(Errno::EFAULT));
        // Past the end, and offset+len overflow.
        assert_eq!(l.check_rx(BufDesc { offset: 262144 - 1, len: 2 }), Err(Errno::EFAULT));
        assert_eq!(l.check_rx(BufDesc { offset: u32::MAX, len: 65536 }), Err(Errno::EFAULT));
        // Longer than a slot.
        assert_eq!(l.check_tx(BufDesc { offset: 0, len: 65537 }), Err(Errno::EMSGSIZE));
        // Unaligned but inside: allowed (the server does not care about slot boundaries).
        assert_eq!(l.check_tx(BufDesc { offset: 3, len: 5 }), Ok(3..8));
    }

    #[test]
    fn bad_layouts_are_rejected() {
        let mut l = DataAreaLayout::DEFAULT;
        l.slot_size = 0;
        assert_eq!(l.validate(), Err(Errno::EINVAL));
        let l = DataAreaLayout { slot_size: MAX_SLOT_SIZE, tx_slots: u16::MAX, rx_slots: 1 };
        assert_eq!(l.validate(), Err(Errno::EINVAL));
        let l = DataAreaLayout { slot_size: MAX_SLOT_SIZE + 1, tx_slots: 1, rx_slots: 1 };
        assert_eq!(l.validate(), Err(Errno::EINVAL));
        let small = AtomicRegion::new(100);
        assert_eq!(DataArea::new(DataAreaLayout::DEFAULT, small).err(), Some(Errno::EINVAL));
    }

    #[test]
    fn send_path_copies_through() {
        let a = area();
        let tx = a.layout().tx_slot(1).unwrap();
        a.write_tx(tx, b"hello world").unwrap();
        let d = BufDesc { offset: tx.offset, len: 11 };
        let mut out = [0u8; 4];
        assert_eq!(a.read_tx(d, 0, &mut out), Ok(4));
        assert_eq!(&out, b"hell");
        assert_eq!(a.read_tx(d, 4, &mut out), Ok(4));
        assert_eq!(&out, b"o wo");
        assert_eq!(a.read_tx(d, 8, &mut out), Ok(3));
        assert_eq!(&out[..3], b"rld");
        assert_eq!(a.read_tx(d, 11, &mut out), Ok(0));
        assert_eq!(a.read_tx(d, 1000, &mut out), Ok(0));
        let too_big = [0u8; 65537];
        assert_eq!(a.write_tx(tx, &too_big), Err(Errno::EMSGSIZE));
    }

    #[test]
    fn recv_path_copies_through_and_checks_reply_len() {
        let a = area();
        let rx = a.layout().rx_slot(1).unwrap();
        assert_eq!(a.write_rx(rx, 0, b"abc"), Ok(3));
        assert_eq!(a.write_rx(rx, 3, b"def"), Ok(3));
        let mut out = [0u8; 6];
        a.read_rx(rx, 6, &mut out).unwrap();
        assert_eq!(&out, b"abcdef");
        // A reply claiming more than the caller's buffer or the descriptor is a protocol error.
        assert_eq!(a.read_rx(rx, 7, &mut out), Err(Errno::EPROTO));
        let short = BufDesc { offset: rx.offset, len: 2 };
        let mut big = [0u8; 100];
        assert_eq!(a.read_rx(short, 3, &mut big), Err(Errno::EPROTO));
        // Writing near the end of a descriptor only writes what fits.
        assert_eq!(a.write_rx(short, 1, b"xyz"), Ok(1));
    }

    #[test]
    fn region_bounds() {
        let r = AtomicRegion::new(10);
        assert_eq!(r.write(8, b"ab"), Ok(()));
        assert_eq!(r.write(9, b"ab"), Err(Errno::EFAULT));
        assert_eq!(r.write(usize::MAX, b"ab"), Err(Errno::EFAULT));
        let mut o = [0u8; 2];
        assert_eq!(r.read(8, &mut o), Ok(()));
        assert_eq!(&o, b"ab");
        assert_eq!(r.read(9, &mut o), Err(Errno::EFAULT));
    }
}
