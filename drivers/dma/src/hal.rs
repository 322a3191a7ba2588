//! `virtio_drivers::Hal` for seL4.

use core::ptr::NonNull;

use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::dma::DmaPool;
use crate::mapping::{DeviceWindow, Window};

const MAX_WINDOWS: usize = 4;

struct State {
    dma: Option<DmaPool>,
    shared: [Option<Window>; MAX_WINDOWS],
    mmio: [Option<Window>; MAX_WINDOWS],
}

// `Hal`'s methods take no `self`: the configuration is process-global. A spin lock suffices —
// the HAL is called from the driver's single thread, and never re-entrantly.
static STATE: Mutex<State> = Mutex::new(State { dma: None, shared: [None; MAX_WINDOWS], mmio: [None; MAX_WINDOWS] });

/// Why a HAL configuration call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalError {
    /// All window slots are taken.
    TooManyWindows,
    /// A DMA pool was already installed.
    DmaPoolSet,
}

/// The seL4 HAL: DMA pages from the driver's private region, MMIO only in granted windows,
/// buffers shared with the device only from the registered regions.
///
/// Configure it before creating any virtio transport: [`Sel4Hal::set_dma_pool`],
/// [`Sel4Hal::add_mmio`] for each granted BAR window, [`Sel4Hal::add_shared`] for the packet
/// buffers region.
pub struct Sel4Hal;

fn put(slots: &mut [Option<Window>; MAX_WINDOWS], w: Window) -> Result<(), HalError> {
    let slot = slots.iter_mut().find(|s| s.is_none()).ok_or(HalError::TooManyWindows)?;
    *slot = Some(w);
    Ok(())
}

impl Sel4Hal {
    /// Install the private DMA region the virtqueues are allocated from.
    pub fn set_dma_pool(pool: DmaPool) -> Result<(), HalError> {
        let mut s = STATE.lock();
        if s.dma.is_some() {
            return Err(HalError::DmaPoolSet);
        }
        s.dma = Some(pool);
        Ok(())
    }

    /// Allow the device to reach buffers inside `w` (the shared packet-buffer region, from
    /// [`Mapping::into_device_region`](crate::Mapping::into_device_region)).
    pub fn add_shared(w: DeviceWindow) -> Result<(), HalError> {
        put(&mut STATE.lock().shared, w.0)
    }

    /// Allow the transport to reach the device registers in `w` (a granted BAR window, from
    /// [`Mapping::into_mmio`](crate::Mapping::into_mmio)).
    pub fn add_mmio(w: DeviceWindow) -> Result<(), HalError> {
        put(&mut STATE.lock().mmio, w.0)
    }

    /// The physical address of `vaddr .. + len` if it lies in the shared region or the private
    /// DMA region — the only memory the device may be told about.
    pub fn translate(vaddr: usize, len: usize) -> Option<u64> {
        let s = STATE.lock();
        let dma = s.dma.as_ref().map(|p| p.window());
        s.shared.iter().flatten().chain(dma.iter()).find_map(|w| w.virt_to_phys(vaddr, len))
    }

    /// The virtual address of device registers `paddr .. + len`, if inside a granted window.
    pub fn mmio(paddr: u64, len: usize) -> Option<usize> {
        STATE.lock().mmio.iter().flatten().find_map(|w| w.phys_to_virt(paddr, len))
    }
}

// SAFETY: `dma_alloc` returns page-aligned, zeroed memory inside the private DMA region that no
// other allocation covers (the pool's bitmap) until `dma_dealloc`; `mmio_phys_to_virt` returns
// addresses only inside MMIO windows the root task mapped (uncached) for this process, which no
// Rust reference covers; `share` returns the physical address of the very bytes it was given
// (identity-plus-offset translation, no IOMMU, no bounce buffers), and refuses buffers outside
// the registered regions.
unsafe impl Hal for Sel4Hal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let got = STATE.lock().dma.as_mut().and_then(|p| p.alloc(pages));
        // virtio-drivers treats physical address 0 as allocation failure.
        got.unwrap_or((0, NonNull::dangling()))
    }

    // SAFETY (this and the methods below): the trait marks them `unsafe` for its callers;
    // the bodies only look addresses up in the grants and panic outside them.
    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let freed = STATE.lock().dma.as_mut().is_some_and(|p| p.free(paddr, vaddr, pages));
        if freed {
            0
        } else {
            -1
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // The trait cannot fail; an address outside the grants is a driver bug (or a device
        // reporting a BAR where nothing is granted), and stopping beats mapping the unknown.
        match Self::mmio(paddr, size).and_then(|v| NonNull::new(v as *mut u8)) {
            Some(p) => p,
            None => panic!("MMIO {paddr:#x}+{size:#x} is outside the granted windows"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let vaddr = buffer.as_ptr() as *mut u8 as usize;
        match Self::translate(vaddr, buffer.len()) {
            Some(p) => p,
            // Descriptors are validated against the buffers region before they reach the device,
            // so this is a driver bug; never give the device an address we cannot vouch for.
            None => panic!("refusing to share {vaddr:#x}+{:#x} with the device: not in a DMA region", buffer.len()),
        }
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
