//! Mapped memory and the views made from it.

use core::sync::atomic::AtomicU32;

use netif::{DeviceInfo, NetRing, RingSet, INFO_OFFSET, RINGS_REGION_SIZE, RING_STRIDE, RX_FREE_OFFSET, RX_USED_OFFSET, TX_DONE_OFFSET, TX_SUBMIT_OFFSET};
use shared_ring::{Region, RingError};

use crate::dma::DmaPool;

/// A range of virtual addresses and, for DMA or device memory, the physical addresses behind
/// it (contiguous). Only numbers: translating with it gives no access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First virtual address.
    pub vaddr: usize,
    /// Physical address of the first byte.
    pub paddr: u64,
    /// Length in bytes.
    pub len: usize,
}

impl Window {
    /// The physical address of `vaddr .. vaddr + len`, if all of it lies in the window.
    pub fn virt_to_phys(&self, vaddr: usize, len: usize) -> Option<u64> {
        let off = vaddr.checked_sub(self.vaddr)?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        self.paddr.checked_add(off as u64)
    }

    /// The virtual address of `paddr .. paddr + len`, if all of it lies in the window.
    pub fn phys_to_virt(&self, paddr: u64, len: usize) -> Option<usize> {
        let off = usize::try_from(paddr.checked_sub(self.paddr)?).ok()?;
        if off.checked_add(len)? > self.len {
            return None;
        }
        self.vaddr.checked_add(off)
    }
}

/// A window the device may be pointed at: made only from a consumed [`Mapping`] (so it is
/// memory mapped into this process for its whole life), handed to [`Sel4Hal`](crate::Sel4Hal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceWindow(pub(crate) Window);

impl DeviceWindow {
    /// The addresses.
    pub fn window(&self) -> Window {
        self.0
    }
}

/// Why a view could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewError {
    /// The mapping is smaller than the layout needs.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes mapped.
        got: usize,
    },
    /// The mapping is not page aligned.
    Misaligned,
    /// A DMA pool needs the physical address, and this mapping has none.
    NoPhysicalAddress,
    /// The ring crate refused the memory.
    Ring(RingError),
    /// (feature `rt`) No region of that name is mapped into this component.
    NoSuchRegion,
    /// (feature `rt`) The region was already taken.
    AlreadyTaken,
    /// (feature `rt`) The region is mapped read-only.
    ReadOnly,
}

impl From<RingError> for ViewError {
    fn from(e: RingError) -> Self {
        ViewError::Ring(e)
    }
}

/// Memory mapped into this process for the rest of its life, not yet turned into a view.
///
/// Each `Mapping` is turned into exactly one kind of view by a consuming method, so, within this
/// process, the memory is reached only through that view.
#[derive(Debug)]
pub struct Mapping {
    vaddr: usize,
    paddr: Option<u64>,
    len: usize,
}

impl Mapping {
    /// A mapping of `len` bytes at `vaddr` (physical address `paddr`, if contiguous and known).
    ///
    /// # Safety
    ///
    /// `vaddr .. vaddr + len` must be mapped readable and writable for the rest of the process's
    /// life, and within this process it must be accessed only through the view this `Mapping` is
    /// turned into (make at most one `Mapping` per range, and do not read or write the memory in
    /// any other way). Other processes and devices may access it at any time. If `paddr` is
    /// given, the range must be physically contiguous starting there.
    pub unsafe fn new(vaddr: usize, paddr: Option<u64>, len: usize) -> Self {
        Mapping { vaddr, paddr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address window (for the HAL's translations), if the physical address is known.
    pub fn window(&self) -> Option<Window> {
        Some(Window { vaddr: self.vaddr, paddr: self.paddr?, len: self.len })
    }

    fn check(&self, needed: usize) -> Result<(), ViewError> {
        if !self.vaddr.is_multiple_of(4096) {
            return Err(ViewError::Misaligned);
        }
        if self.len < needed {
            return Err(ViewError::TooSmall { needed, got: self.len });
        }
        Ok(())
    }

    /// The interface's info block and four rings, laid out as `netif` documents.
    pub fn into_netif_rings(self) -> Result<RingSet<'static>, ViewError> {
        self.check(RINGS_REGION_SIZE)?;
        let ring = |offset: usize| -> Result<NetRing<'static>, ViewError> {
            // SAFETY: `offset + RING_STRIDE <= RINGS_REGION_SIZE <= len` (checked above), so the
            // ring lies inside the mapping, which stays mapped for the process's life (the
            // constructor's contract). The four rings and the info block do not overlap
            // (netif's layout constants, checked at compile time there), and this consumed
            // mapping is the only way this process reaches the memory, so it is accessed only
            // atomically, through `Ring`s and the info block's atomics.
            Ok(unsafe { NetRing::from_raw((self.vaddr + offset) as *mut u8, RING_STRIDE) }?)
        };
        let info_words = self.vaddr + INFO_OFFSET;
        // SAFETY: the info block's `DeviceInfo::WORDS` words lie inside the mapping (before
        // `RX_FREE_OFFSET`), are 4-byte aligned (page-aligned base), and stay mapped; `AtomicU32`
        // has the size and validity of `u32`, so any bytes are a valid value, and other processes
        // writing them concurrently is what atomics permit. Nothing else in this process touches
        // these words (the mapping was consumed).
        let words: &'static [AtomicU32] =
            unsafe { core::slice::from_raw_parts(info_words as *const AtomicU32, DeviceInfo::WORDS) };
        let info = DeviceInfo::new(words).ok_or(ViewError::TooSmall { needed: RINGS_REGION_SIZE, got: self.len })?;
        Ok(RingSet {
            info,
            rx_free: ring(RX_FREE_OFFSET)?,
            rx_used: ring(RX_USED_OFFSET)?,
            tx_submit: ring(TX_SUBMIT_OFFSET)?,
            tx_done: ring(TX_DONE_OFFSET)?,
        })
    }

    /// The whole mapping as a data region cut into `buf_size`-byte buffers.
    pub fn into_region(self, buf_size: u32) -> Result<Region<'static>, ViewError> {
        self.check(0)?;
        // SAFETY: the mapping is valid for the process's life and, being consumed here, reached
        // in this process only through this `Region` (the constructor's contract).
        Ok(unsafe { Region::from_raw(self.vaddr as *mut u8, self.len, buf_size) }?)
    }

    /// The whole mapping as a region of `buf_size`-byte buffers the device may DMA into and out
    /// of (the shared packet-buffer region, on the driver's side): the region view and the
    /// window to register with [`Sel4Hal::add_shared`](crate::Sel4Hal::add_shared).
    pub fn into_device_region(self, buf_size: u32) -> Result<(Region<'static>, DeviceWindow), ViewError> {
        let window = self.window().ok_or(ViewError::NoPhysicalAddress)?;
        Ok((self.into_region(buf_size)?, DeviceWindow(window)))
    }

    /// Device registers (a granted BAR window, mapped uncached), to register with
    /// [`Sel4Hal::add_mmio`](crate::Sel4Hal::add_mmio); only virtio-drivers accesses them.
    pub fn into_mmio(self) -> Result<DeviceWindow, ViewError> {
        self.check(1)?;
        Ok(DeviceWindow(self.window().ok_or(ViewError::NoPhysicalAddress)?))
    }

    /// The whole mapping as the driver's private DMA page allocator (needs the physical address).
    pub fn into_dma_pool(self) -> Result<DmaPool, ViewError> {
        self.check(4096)?;
        let window = self.window().ok_or(ViewError::NoPhysicalAddress)?;
        // SAFETY: the window is this consumed mapping: valid for the process's life, physically
        // contiguous from `paddr`, and reached in this process only through the pool.
        Ok(unsafe { DmaPool::new(window) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_translates_only_inside() {
        let w = Window { vaddr: 0x1_0000_0000, paddr: 0x20_0000, len: 0x2000 };
        assert_eq!(w.virt_to_phys(0x1_0000_0000, 0x2000), Some(0x20_0000));
        assert_eq!(w.virt_to_phys(0x1_0000_1000, 16), Some(0x20_1000));
        assert_eq!(w.virt_to_phys(0x1_0000_1ff8, 9), None, "runs past the end");
        assert_eq!(w.virt_to_phys(0x0_ffff_ffff, 1), None, "before the start");
        assert_eq!(w.virt_to_phys(usize::MAX, 2), None, "overflow");
        assert_eq!(w.phys_to_virt(0x20_0800, 0x1800), Some(0x1_0000_0800));
        assert_eq!(w.phys_to_virt(0x20_0800, 0x1801), None);
        assert_eq!(w.phys_to_virt(0x1f_ffff, 1), None);
        assert_eq!(w.phys_to_virt(u64::MAX, 1), None);
    }
}
