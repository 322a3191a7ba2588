//! Driver land's `unsafe`, in one crate.
//!
//! Everything above this crate — `netif`, `virtio-net-core`, the `virtio-net` driver binary, the
//! net server — is `#![forbid(unsafe_code)]`. What needs raw pointers lives here, each block with
//! a `// SAFETY:` comment:
//!
//! - [`Mapping`]: memory the root task mapped into this process (a shared region, a DMA region),
//!   turned **once** into the views the safe crates use: the interface's [`netif::RingSet`]
//!   ([`Mapping::into_netif_rings`]), a [`shared_ring::Region`] of buffers
//!   ([`Mapping::into_region`]), or the driver's private [`DmaPool`]
//!   ([`Mapping::into_dma_pool`]). Consuming the mapping is what makes handing out a `Region`
//!   (exclusive access in this process) sound. With feature `rt`, mappings come from the
//!   runtime's `SharedRegion`s, and each region can be taken only once.
//! - [`Sel4Hal`]: `virtio_drivers::Hal` for seL4. `dma_alloc` takes zeroed pages from the
//!   driver-private DMA region (a first-fit page bitmap; physical address = region paddr +
//!   offset); `mmio_phys_to_virt` translates only inside the granted MMIO windows; `share`
//!   translates only buffers inside the registered shared packet-buffer region or the private
//!   DMA region, and refuses (panics on) anything else, so the device can never be pointed at
//!   other memory. There is no IOMMU: the translation is the identity plus an offset, no bounce
//!   buffers, `unshare` does nothing.
//! - [`PortCam`]: PCI configuration space through an I/O-port capability (0xCF8/0xCFC), for
//!   `virtio_drivers::transport::pci`; [`CachedCam`] answers repeated reads and BAR sizing of
//!   the driver's function from a [`ConfigShadow`] (each port access is slow under TCG).
//! - [`VirtioNic`]: a safe face over `VirtIONetRaw`'s `unsafe` token API. It keeps the
//!   validated [`netif::RxBuffer`] / [`netif::TxFrame`] of every token the device holds, so each
//!   buffer given to the device is given back exactly once, with the same bytes, and this process
//!   does not touch it in between.
//! - with feature `host-test`, [`host::HostMem`]: leaked heap memory that stands in for a shared
//!   region in host tests (one [`Mapping`] per stand-in process).
#![no_std]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(feature = "host-test")]
extern crate std;

mod dma;
mod hal;
#[cfg(feature = "host-test")]
pub mod host;
mod mapping;
mod nic;
mod pci;
#[cfg(feature = "rt")]
mod rt;

pub use dma::{DmaPool, PageBitmap};
pub use hal::{HalError, Sel4Hal};
pub use mapping::{DeviceWindow, Mapping, ViewError, Window};
pub use nic::{NicError, VirtioNic};
pub use pci::{CachedCam, ConfigShadow, PortCam};
#[cfg(feature = "rt")]
pub use rt::take_region;
