//! The one system description and the start-up configuration derived from it.
//!
//! `system.toml` (parsed and validated on the host by [`parse`], feature `std`) names every
//! component, channel, shared region and device resource. The build tool packs the validated
//! [`System`] together with the component ELFs into an [`Image`] that the root task embeds. The
//! root task creates what the description asks for and hands each component a [`StartInfo`]:
//! where its capabilities, regions and threads are.
//!
//! Everything here is plain data encoded with postcard; nothing is trusted blindly — the root
//! task decodes with [`Image::decode`], which never panics.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

#[cfg(feature = "std")]
mod parse;
#[cfg(feature = "std")]
pub use parse::{parse, DescError};

/// Page size every mapping is rounded to.
pub const PAGE_SIZE: u64 = 4096;
/// Where every component's ELF is linked (see `lib/rt/link.ld`).
pub const IMAGE_BASE: u64 = 0x40_0000;
/// Highest address an ELF segment may reach; mappings chosen by the root task start above it.
pub const IMAGE_LIMIT: u64 = 0x1000_0000;
/// The page holding the component's encoded [`StartInfo`].
pub const START_INFO_VADDR: u64 = 0x1000_0000;
/// Maximum size of the encoded [`StartInfo`].
pub const START_INFO_SIZE: u64 = 4 * PAGE_SIZE;
/// IPC buffers of all threads, one page each (main thread first).
pub const IPC_BUFFER_BASE: u64 = 0x1001_0000;
/// Stacks: each thread gets `STACK_SLOT` of address space, the lowest page left unmapped as a guard.
pub const STACK_BASE: u64 = 0x2000_0000;
pub const STACK_SLOT: u64 = 0x0010_0000;
/// Most threads a component may have, the main thread included (stacks end below [`WINDOW_VADDR`]).
pub const MAX_THREADS: usize = 64;
/// One page the runtime reserves for looking into frames it does not keep mapped.
pub const WINDOW_VADDR: u64 = 0x3FF0_0000;
/// One page shared by every component and the root task: word 0 is the console lock, so that
/// lines printed at the same time on different cores do not interleave.
pub const CONSOLE_VADDR: u64 = 0x3FE0_0000;
/// The heap.
pub const HEAP_BASE: u64 = 0x4000_0000;
/// Regions, device memory and anything else the root task maps without a fixed address.
pub const MAP_BASE: u64 = 0x1_0000_0000;
/// User address space ends here (lower half of the canonical range).
pub const USER_TOP: u64 = 0x7FFF_FFFF_F000;

/// Largest badge seL4 5.0 stores (28 bits).
pub const MAX_BADGE: u64 = (1 << 28) - 1;

/// The validated system description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct System {
    pub components: Vec<Component>,
    pub endpoints: Vec<Channel>,
    pub notifications: Vec<Channel>,
    pub regions: Vec<Region>,
    pub io_ports: Vec<IoPortGrant>,
    pub irqs: Vec<IrqGrant>,
    pub mmio: Vec<MmioGrant>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// Cargo package and binary that build this component's ELF.
    pub package: String,
    pub bin: String,
    pub priority: u8,
    /// Core of the main thread (SMP kernels only; 0 otherwise).
    pub core: u8,
    pub stack_size: u64,
    pub heap_size: u64,
    /// Extra threads in the same address space, created suspended; the runtime starts them.
    pub threads: Vec<Thread>,
    /// Restart the component when it faults (supervised), instead of leaving it dead.
    pub restart: bool,
    /// Free-form settings for the component (`[component.config]`), handed over unchanged.
    pub config: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub name: String,
    pub priority: u8,
    pub core: u8,
    pub stack_size: u64,
}

/// An endpoint or a notification and who holds a capability to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub holders: Vec<Holder>,
    /// Endpoints only: a region in which the root task announces the badges of holders that
    /// died (exited, faulted, or are being restarted), so the server can drop their state.
    /// Layout: see [`DEATH_NOTICES`].
    pub death_notices: Option<String>,
}

/// Layout of a death-notice region (first page): word 0 counts notices ever written; notice `n`
/// (from 0) is the badge in word `1 + n % DEATH_NOTICES`. The root task writes the badge, then
/// the count; a reader that falls more than `DEATH_NOTICES` behind has lost notices.
pub const DEATH_NOTICES: u64 = 511;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub component: String,
    /// 0 grants the original (unbadged) capability: the receiving side.
    pub badge: u64,
    /// Name under which the component finds the capability; defaults to the channel's name.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub size: u64,
    /// Physically contiguous, with its physical address told to every holder (for device DMA).
    pub dma: bool,
    pub maps: Vec<Mapping>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub component: String,
    pub name: String,
    pub writable: bool,
    /// Fixed virtual address; `None` lets the root task choose one above [`MAP_BASE`].
    pub vaddr: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoPortGrant {
    pub component: String,
    pub name: String,
    pub first: u16,
    pub last: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IrqSource {
    IoApic { ioapic: u8, pin: u8, level: bool, active_low: bool },
    Msi { bus: u8, dev: u8, func: u8, handle: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrqGrant {
    pub component: String,
    pub name: String,
    pub source: IrqSource,
    /// The notification (one the component holds) the interrupt is delivered to, and with which badge.
    pub notification: String,
    pub badge: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmioGrant {
    pub component: String,
    pub name: String,
    pub paddr: u64,
    pub size: u64,
}

/// One component ELF carried in the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elf<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What the root task embeds: the system and the ELFs of its components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image<'a> {
    pub magic: u64,
    pub system: System,
    #[serde(borrow)]
    pub elfs: Vec<Elf<'a>>,
}

pub const IMAGE_MAGIC: u64 = 0x5345_4c34_494d_4731; // "SEL4IMG1"

impl<'a> Image<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let image: Image<'a> = postcard::from_bytes(bytes).map_err(|_| "malformed system image")?;
        if image.magic != IMAGE_MAGIC {
            return Err("system image has a wrong magic number");
        }
        Ok(image)
    }

    pub fn encode(&self) -> Result<Vec<u8>, &'static str> {
        postcard::to_allocvec(self).map_err(|_| "cannot encode system image")
    }

    pub fn elf(&self, component: &Component) -> Option<&'a [u8]> {
        self.elfs.iter().find(|e| e.name == component.bin).map(|e| e.bytes)
    }
}

/// The kind of a capability handed to a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapKind {
    Endpoint,
    Notification,
    IrqHandler,
    IoPort,
    Tcb,
    CNode,
    VSpace,
    Frame,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapEntry {
    pub name: String,
    pub kind: CapKind,
    pub slot: u64,
    pub badge: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionEntry {
    pub name: String,
    pub vaddr: u64,
    pub size: u64,
    pub writable: bool,
    /// Physical address of the first byte (contiguous DMA regions and device memory only).
    pub paddr: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadEntry {
    pub name: String,
    /// The thread's TCB in the component's CSpace.
    pub tcb: u64,
    pub ipc_buffer: u64,
    pub stack_top: u64,
    pub priority: u8,
    pub core: u8,
    /// A notification only this thread waits on (blocking locks and wake-ups).
    pub wake: u64,
}

/// The typed start-up configuration every component receives (address in `rdi` at entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartInfo {
    pub name: String,
    pub id: u16,
    pub cnode: u64,
    pub cnode_size_bits: u8,
    pub vspace: u64,
    pub tcb: u64,
    /// The main thread's own notification (see [`ThreadEntry::wake`]).
    pub wake: u64,
    /// Empty slots in the component's own CNode, `[first, end)` (for SaveCaller and the like).
    pub free_slots: (u64, u64),
    pub caps: Vec<CapEntry>,
    pub regions: Vec<RegionEntry>,
    /// Extra threads (the main thread is not listed).
    pub threads: Vec<ThreadEntry>,
    pub ipc_buffer: u64,
    pub heap_base: u64,
    pub heap_size: u64,
    pub tsc_mhz: u64,
    pub num_nodes: u64,
    /// Fault endpoint (badged for this component) that the root task listens on; the runtime uses
    /// it only to report a clean exit.
    pub exit: u64,
    /// The component's settings from the system description.
    pub config: Vec<(String, String)>,
    /// Whether the system-wide console page is mapped at [`CONSOLE_VADDR`].
    pub console: bool,
}

impl StartInfo {
    pub fn cap(&self, name: &str) -> Option<&CapEntry> {
        self.caps.iter().find(|c| c.name == name)
    }
    pub fn region(&self, name: &str) -> Option<&RegionEntry> {
        self.regions.iter().find(|r| r.name == name)
    }
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn thread(&self, name: &str) -> Option<&ThreadEntry> {
        self.threads.iter().find(|t| t.name == name)
    }
}

/// Round `x` up to a multiple of [`PAGE_SIZE`].
pub const fn page_round_up(x: u64) -> u64 {
    (x + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The start-up page: a 24-byte header (body length u32, pad, heap base u64, heap size u64) then
/// the postcard body. The header lets the runtime set up its heap before decoding.
pub const START_HEADER: usize = 24;

impl StartInfo {
    /// Encodes the page the root task maps at [`START_INFO_VADDR`].
    pub fn to_page(&self) -> Result<Vec<u8>, &'static str> {
        let body = postcard::to_allocvec(self).map_err(|_| "cannot encode start-up configuration")?;
        if START_HEADER + body.len() > START_INFO_SIZE as usize {
            return Err("start-up configuration does not fit its page");
        }
        let mut page = Vec::with_capacity(START_HEADER + body.len());
        page.extend_from_slice(&(body.len() as u32).to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.extend_from_slice(&self.heap_base.to_le_bytes());
        page.extend_from_slice(&self.heap_size.to_le_bytes());
        page.extend_from_slice(&body);
        Ok(page)
    }

    /// Reads the header: (heap base, heap size).
    pub fn page_heap(page: &[u8]) -> Option<(u64, u64)> {
        let word = |o: usize| Some(u64::from_le_bytes(page.get(o..o + 8)?.try_into().ok()?));
        Some((word(8)?, word(16)?))
    }

    /// Decodes the page (needs a heap).
    pub fn from_page(page: &[u8]) -> Result<StartInfo, &'static str> {
        let len = u32::from_le_bytes(page.get(0..4).ok_or("short page")?.try_into().map_err(|_| "short page")?);
        let body = page.get(START_HEADER..START_HEADER + len as usize).ok_or("start-up body out of bounds")?;
        postcard::from_bytes(body).map_err(|_| "malformed start-up configuration")
    }
}
