//! Creating a component: its CSpace, VSpace, threads, memory, and its start-up configuration.
//!
//! Every component's CNode has 4096 slots (1024 for a component marked `restart`, see
//! [`cnode_bits`]), resolved with a guard of the remaining bits so that capability pointers are
//! plain slot numbers at depth 64 (as in the root task). Fixed slots:
//!
//! | slots | what |
//! |---|---|
//! | 1, 2, 3 | main thread's TCB, the CNode itself, the VSpace root |
//! | 16 + i | thread i's fault endpoint (badged: component and thread) |
//! | 80 + i | thread i's own wake-up notification |
//! | 144 + i | thread i's TCB (i = 0 is the main thread) |
//! | 256 … | capabilities the system description grants, in order; then free |

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use elf::abi::{PF_W, PT_LOAD};
use elf::endian::LittleEndian;
use elf::ElfBytes;
use sel4::{init, CNode, Cap, CapData, CapRights, Error, ObjectType, PrioProps, Tcb, UserContext, VmAttributes, X64Pml4, X86Page};
use sel4_rt::window::FrameWindow;
use sysdesc::{CapEntry, CapKind, RegionEntry, StartInfo, ThreadEntry, PAGE_SIZE};

use crate::objects::{Memory, Object};
use crate::vspace::VSpace;

/// Slots of a component's CNode (as a power of two). A component marked `restart` gets a
/// smaller one: the kernel clears every slot of a CNode when it destroys it, and with 4096
/// slots that was the largest single cost of a teardown (about 1.1 million instructions). Its
/// 1024 slots hold the fixed layout below and 768 grants or free slots (`StartInfo::free_slots`).
pub const CNODE_BITS: u64 = 12;
pub const CNODE_BITS_RESTART: u64 = 10;

/// The CNode size of component `desc`.
pub fn cnode_bits(desc: &sysdesc::Component) -> u64 {
    if desc.restart {
        CNODE_BITS_RESTART
    } else {
        CNODE_BITS
    }
}
const SLOT_TCB: u64 = 1;
const SLOT_CNODE: u64 = 2;
const SLOT_VSPACE: u64 = 3;
const SLOT_FAULT: u64 = 16;
const SLOT_WAKE: u64 = 80;
const SLOT_THREAD_TCB: u64 = 144;
const SLOT_GRANTS: u64 = 256;

/// What went wrong while building a component, with enough context to fix the description.
#[derive(Debug)]
pub struct BuildError(pub String);

impl From<Error> for BuildError {
    fn from(e: Error) -> Self {
        BuildError(format!("kernel refused: {e}"))
    }
}

pub type Result<T> = core::result::Result<T, BuildError>;

/// A live component as the root task tracks it.
pub struct Component {
    pub name: String,
    pub cnode: Cap<CNode>,
    cnode_bits: u64,
    pub vspace: VSpace,
    /// Thread 0 is the main thread.
    pub tcbs: Vec<Cap<Tcb>>,
    pub thread_names: Vec<String>,
    pub entry: u64,
    next_slot: u64,
    next_map: u64,
    pub info: StartInfo,
    pub alive: bool,
    /// Whether a thread of the component runs on the root task's core (core 0).
    shares_root_core: bool,
    /// TSC when [`Component::start`] let the main thread run.
    pub running_since: u64,
}

/// Size (as a power of two) of the private pool a component's objects come from: its CNode,
/// paging structures, TCBs, stacks, IPC buffers, heap, start-up page and loaded ELF, with slack.
pub fn pool_bits(desc: &sysdesc::Component, elf: &[u8]) -> u64 {
    let page = PAGE_SIZE;
    let mut bytes = (1u64 << (cnode_bits(desc) + sel4::size_bits::SLOT)) + 2 * page + sysdesc::START_INFO_SIZE;
    let threads = 1 + desc.threads.len() as u64;
    bytes += threads * (2048 + 2 * page + 64) + desc.stack_size;
    bytes += desc.threads.iter().map(|t| t.stack_size).sum::<u64>();
    bytes += desc.heap_size;
    if let Ok(file) = ElfBytes::<LittleEndian>::minimal_parse(elf) {
        if let Some(segments) = file.segments() {
            bytes += segments.iter().filter(|p| p.p_type == PT_LOAD).map(|p| p.p_memsz + 2 * page).sum::<u64>();
        }
    }
    // Paging structures (a few per mapped area) and alignment waste.
    bytes += 64 * page;
    bytes += bytes / 4;
    (64 - (bytes - 1).leading_zeros() as u64).max(20)
}

/// Badge of thread `thread`'s fault endpoint: identifies component and thread.
pub fn fault_badge(component: usize, thread: usize) -> u64 {
    ((component as u64 + 1) << 6) | thread as u64
}

pub fn decode_fault_badge(badge: u64) -> Option<(usize, usize)> {
    let component = (badge >> 6).checked_sub(1)?;
    Some((component as usize, (badge & 0x3f) as usize))
}

/// The heap's frames: 2 MiB pages for the part of the heap they cover whole (the heap's base is
/// 2 MiB aligned), 4 KiB pages for the rest. A 4 MiB heap costs 2 retypes and 2 maps
/// instead of 1024 of each.
struct HeapFrames {
    large: Vec<Object>,
    size: u64,
}

impl HeapFrames {
    const LARGE: u64 = 1 << sel4::size_bits::LARGE_PAGE;

    fn alloc(mem: &mut Memory, size: u64) -> Result<HeapFrames> {
        debug_assert!(sysdesc::HEAP_BASE % Self::LARGE == 0);
        let large = mem.alloc_many(ObjectType::X86LargePage, 0, sel4::size_bits::LARGE_PAGE, size / Self::LARGE)?;
        Ok(HeapFrames { large, size })
    }

    fn map(self, c: &mut Component, mem: &mut Memory) -> Result<()> {
        for (i, f) in self.large.iter().enumerate() {
            let vaddr = sysdesc::HEAP_BASE + i as u64 * Self::LARGE;
            c.vspace.map_large(mem, f.cap(), vaddr, CapRights::READ_WRITE, VmAttributes::DEFAULT)?;
        }
        let done = self.large.len() as u64 * Self::LARGE;
        if self.size > done {
            c.map_fresh(mem, sysdesc::HEAP_BASE + done, self.size - done, true)?;
        }
        Ok(())
    }
}

/// Copies `src` into `frame` at byte `at` through the root task's window.
fn write_frame(mem: &mut Memory, window: &mut FrameWindow, frame: Object, at: usize, src: &[u8]) -> Result<()> {
    let t0 = sel4_rt::rdtsc();
    let r = window.with_frame(frame.cap(), |p| p[at..at + src.len()].copy_from_slice(src));
    mem.prof.window += 1;
    mem.prof.window_cycles += sel4_rt::rdtsc() - t0;
    Ok(r?)
}

impl Component {
    /// Creates the component's objects and loads its ELF, leaving its threads suspended.
    pub fn create(
        desc: &sysdesc::Component,
        index: usize,
        elf: &[u8],
        mem: &mut Memory,
        window: &mut FrameWindow,
        fault_ep: u64,
        num_nodes: u64,
        tsc_mhz: u64,
    ) -> Result<Component> {
        if desc.restart {
            // Zeroed memory ready for the next instance (see `Memory::reset_pool`).
            if let Err(e) = mem.add_spare() {
                sel4_rt::println!("{}: no spare memory for fast restarts ({e}); restarts wait for zeroing", desc.name);
            }
        }
        // The heap's 2 MiB pages first, where the fresh pool is aligned for them.
        let heap = HeapFrames::alloc(mem, desc.heap_size)?;
        let bits = cnode_bits(desc);
        let (depth, guard) = (bits as u8, CapData::guard(0, 64 - bits));
        let cnode_obj = mem.alloc_cnode(bits)?;
        let cnode: Cap<CNode> = cnode_obj.cap();
        let pml4 = mem.alloc_fixed(ObjectType::X64Pml4)?;
        init::ASID_POOL.assign(pml4.cap::<X64Pml4>().upcast())?;
        let mut c = Component {
            name: desc.name.clone(),
            cnode,
            cnode_bits: bits,
            vspace: VSpace::new(pml4.cap()),
            tcbs: Vec::new(),
            thread_names: Vec::new(),
            entry: 0,
            next_slot: SLOT_GRANTS,
            next_map: sysdesc::MAP_BASE,
            info: StartInfo {
                name: desc.name.clone(),
                id: index as u16,
                cnode: SLOT_CNODE,
                cnode_size_bits: depth,
                vspace: SLOT_VSPACE,
                tcb: SLOT_TCB,
                wake: SLOT_WAKE,
                free_slots: (0, 0),
                caps: Vec::new(),
                regions: Vec::new(),
                threads: Vec::new(),
                ipc_buffer: sysdesc::IPC_BUFFER_BASE,
                heap_base: sysdesc::HEAP_BASE,
                heap_size: desc.heap_size,
                tsc_mhz,
                num_nodes,
                exit: SLOT_FAULT,
                config: desc.config.clone(),
                console: None,
                console_release: None,
                health: false,
            },
            alive: false,
            shares_root_core: !sel4::SMP
                || core::iter::once(desc.core).chain(desc.threads.iter().map(|t| t.core)).any(|c| c == 0 || c as u64 >= num_nodes),
            running_since: 0,
        };
        // The CNode and VSpace, reachable from inside at depth 64.
        cnode.mint(SLOT_CNODE, depth, init::CNODE, cnode_obj.slot, 64, CapRights::ALL, guard)?;
        cnode.copy(SLOT_VSPACE, depth, init::CNODE, pml4.slot, 64, CapRights::ALL)?;

        c.entry = c.load_elf(elf, mem, window)?;

        // Threads: the main one, then the description's extra threads.
        let mut threads: Vec<(String, u8, u8, u64)> = Vec::new();
        threads.push(("main".to_string(), desc.priority, desc.core, desc.stack_size));
        for t in &desc.threads {
            threads.push((t.name.clone(), t.priority, t.core, t.stack_size));
        }
        for (i, (name, prio, core, stack)) in threads.iter().enumerate() {
            let i64_ = i as u64;
            // Fault endpoint, badged with (component, thread): send and grant only (what the
            // kernel needs to deliver a fault and wait for the reply). With the read right a
            // component could receive other components' fault messages and answer them.
            let badge = CapData::badge(fault_badge(index, i)).ok_or(BuildError("too many components".into()))?;
            cnode.mint(SLOT_FAULT + i64_, depth, init::CNODE, fault_ep, 64, CapRights::new(true, false, true), badge)?;
            // Own notification.
            let wake = mem.alloc_fixed(ObjectType::Notification)?;
            cnode.copy(SLOT_WAKE + i64_, depth, init::CNODE, wake.slot, 64, CapRights::ALL)?;
            // Stack below its slot's top, guard page under it.
            let top = sysdesc::STACK_BASE + (i64_ + 1) * sysdesc::STACK_SLOT;
            c.map_fresh(mem, top - stack, *stack, true)?;
            // IPC buffer.
            let ipc_vaddr = sysdesc::IPC_BUFFER_BASE + i64_ * PAGE_SIZE;
            let ipc = c.map_fresh(mem, ipc_vaddr, PAGE_SIZE, true)?;
            let tcb_obj = mem.alloc_fixed(ObjectType::Tcb)?;
            let tcb: Cap<Tcb> = tcb_obj.cap();
            tcb.configure(
                SLOT_FAULT + i64_,
                PrioProps::new(*prio, *prio),
                cnode,
                guard,
                c.vspace.root.cast(),
                CapData::NONE,
                ipc_vaddr,
                ipc[0].cap::<X86Page>().upcast(),
            )?;
            if *core as u64 >= num_nodes.max(1) {
                sel4_rt::println!("{}: thread `{name}` wants core {core}, only {num_nodes} present; using core 0", desc.name);
            } else if sel4::SMP {
                tcb.set_core(*core as u64)?;
            }
            sel4::syscall::debug_name_thread(tcb.cptr(), &format!("{}:{name}", desc.name));
            cnode.copy(SLOT_THREAD_TCB + i64_, depth, init::CNODE, tcb_obj.slot, 64, CapRights::ALL)?;
            if i == 0 {
                cnode.copy(SLOT_TCB, depth, init::CNODE, tcb_obj.slot, 64, CapRights::ALL)?;
            } else {
                c.info.threads.push(ThreadEntry {
                    name: name.clone(),
                    tcb: SLOT_THREAD_TCB + i64_,
                    ipc_buffer: ipc_vaddr,
                    stack_top: top,
                    priority: *prio,
                    core: *core,
                    wake: SLOT_WAKE + i64_,
                });
            }
            c.tcbs.push(tcb);
            c.thread_names.push(name.clone());
        }
        heap.map(&mut c, mem)?;
        Ok(c)
    }

    /// Maps fresh zeroed frames over `[vaddr, vaddr + size)`.
    fn map_fresh(&mut self, mem: &mut Memory, vaddr: u64, size: u64, writable: bool) -> Result<Vec<Object>> {
        let rights = if writable { CapRights::READ_WRITE } else { CapRights::READ };
        let frames = mem.alloc_many(ObjectType::X86Page4K, 0, sel4::size_bits::PAGE, size.div_ceil(PAGE_SIZE))?;
        for (i, f) in frames.iter().enumerate() {
            self.vspace.map(mem, f.cap(), vaddr + i as u64 * PAGE_SIZE, rights, VmAttributes::DEFAULT)?;
        }
        Ok(frames)
    }

    /// Loads every PT_LOAD segment; returns the entry point.
    fn load_elf(&mut self, bytes: &[u8], mem: &mut Memory, window: &mut FrameWindow) -> Result<u64> {
        let bad = |what: &str| BuildError(format!("ELF: {what}"));
        let file = ElfBytes::<LittleEndian>::minimal_parse(bytes).map_err(|_| bad("not a 64-bit little-endian ELF"))?;
        let segments = file.segments().ok_or_else(|| bad("no program headers"))?;
        // Page -> writable; text and data may share a page.
        let mut wanted: BTreeMap<u64, bool> = BTreeMap::new();
        for ph in segments.iter().filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0) {
            let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or_else(|| bad("segment wraps"))?;
            if ph.p_vaddr < sysdesc::IMAGE_BASE || end > sysdesc::IMAGE_LIMIT {
                return Err(bad("segment outside the image range"));
            }
            let mut page = ph.p_vaddr & !(PAGE_SIZE - 1);
            while page < end {
                *wanted.entry(page).or_insert(false) |= ph.p_flags & PF_W != 0;
                page += PAGE_SIZE;
            }
        }
        if wanted.is_empty() {
            return Err(bad("nothing to load"));
        }
        // All frames in as few retypes as possible; page -> (frame, writable).
        let frames = mem.alloc_many(ObjectType::X86Page4K, 0, sel4::size_bits::PAGE, wanted.len() as u64)?;
        let pages: BTreeMap<u64, (Object, bool)> = wanted.into_iter().zip(frames).map(|((page, w), f)| (page, (f, w))).collect();
        for ph in segments.iter().filter(|p| p.p_type == PT_LOAD && p.p_memsz > 0) {
            let end = ph.p_vaddr.checked_add(ph.p_memsz).ok_or_else(|| bad("segment wraps"))?;
            if ph.p_filesz > ph.p_memsz {
                return Err(bad("segment file size exceeds its memory size"));
            }
            let file_end = ph.p_offset.checked_add(ph.p_filesz).ok_or_else(|| bad("segment offset wraps"))?;
            let data = bytes.get(ph.p_offset as usize..file_end as usize).ok_or_else(|| bad("segment data outside the file"))?;
            let mut page = ph.p_vaddr & !(PAGE_SIZE - 1);
            while page < end {
                let entry = pages.get(&page).ok_or_else(|| bad("page not allocated"))?;
                // Copy the part of the segment's file data that falls in this page.
                let lo = page.max(ph.p_vaddr);
                let hi = (page + PAGE_SIZE).min(ph.p_vaddr + ph.p_filesz);
                if lo < hi {
                    let src = &data[(lo - ph.p_vaddr) as usize..(hi - ph.p_vaddr) as usize];
                    let at = (lo - page) as usize;
                    write_frame(mem, window, entry.0, at, src)?;
                }
                page += PAGE_SIZE;
            }
        }
        for (vaddr, (frame, writable)) in pages {
            let rights = if writable { CapRights::READ_WRITE } else { CapRights::READ };
            self.vspace.map(mem, frame.cap(), vaddr, rights, VmAttributes::DEFAULT)?;
        }
        Ok(file.ehdr.e_entry)
    }

    fn take_slot(&mut self) -> Result<u64> {
        if self.next_slot >= 1 << self.cnode_bits {
            return Err(BuildError(format!("component `{}` has no CNode slots left", self.name)));
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    /// Gives the component a copy of the root task's capability at `root_slot`, badged when
    /// `badge` is not zero.
    pub fn grant(&mut self, name: &str, kind: CapKind, root_slot: u64, rights: CapRights, data: CapData, badge: u64) -> Result<u64> {
        let slot = self.take_slot()?;
        self.cnode.mint(slot, self.cnode_bits as u8, init::CNODE, root_slot, 64, rights, data)?;
        self.info.caps.push(CapEntry { name: name.to_string(), kind, slot, badge });
        Ok(slot)
    }

    /// Maps `frames` (root-task slots; each mapped once, so copies are made) at `vaddr` or at
    /// the next free place, and records the region.
    pub fn map_region(
        &mut self,
        mem: &mut Memory,
        name: &str,
        frames: &[Object],
        vaddr: Option<u64>,
        writable: bool,
        attr: VmAttributes,
        paddr: Option<u64>,
    ) -> Result<u64> {
        let size = frames.len() as u64 * PAGE_SIZE;
        let base = match vaddr {
            Some(v) => v,
            None => {
                let v = self.next_map;
                // Leave an unmapped page between regions so overruns fault. Fixed addresses
                // start at FIXED_BASE (checked by sysdesc), so placed ones stay below it.
                self.next_map += size + PAGE_SIZE;
                if self.next_map > sysdesc::FIXED_BASE {
                    return Err(BuildError(format!("{}: regions without an address reach {:#x}", self.name, sysdesc::FIXED_BASE)));
                }
                v
            }
        };
        let rights = if writable { CapRights::READ_WRITE } else { CapRights::READ };
        for (i, f) in frames.iter().enumerate() {
            let copy = mem.slot()?;
            init::CNODE.copy(copy, 64, init::CNODE, f.slot, 64, CapRights::ALL)?;
            self.vspace.map(mem, Cap::from_cptr(copy), base + i as u64 * PAGE_SIZE, rights, attr)?;
        }
        self.info.regions.push(RegionEntry { name: name.to_string(), vaddr: base, size, writable, paddr });
        Ok(base)
    }

    /// Maps the system-wide console page (whose word 0 serialises lines across components),
    /// gives the component its own console notification to block on while another holds the
    /// lock (the root task keeps a copy to wake it: returned), and a send-only capability on the
    /// supervisor's notification to ask for that wake-up. No component holds another's
    /// notification, so none can steal, or redirect, another's console wake-ups.
    pub fn map_console(&mut self, mem: &mut Memory, console: &Object, supervisor: u64) -> Result<u64> {
        let copy = mem.slot()?;
        init::CNODE.copy(copy, 64, init::CNODE, console.slot, 64, CapRights::ALL)?;
        self.vspace.map(mem, Cap::from_cptr(copy), sysdesc::CONSOLE_VADDR, CapRights::READ_WRITE, VmAttributes::DEFAULT)?;
        let wake = mem.alloc_fixed(ObjectType::Notification)?;
        let slot = self.take_slot()?;
        self.cnode.copy(slot, self.cnode_bits as u8, init::CNODE, wake.slot, 64, CapRights::READ_WRITE)?;
        self.info.console = Some(slot);
        let badge = CapData::badge(crate::watch::NOTIFY | crate::watch::CONSOLE).ok_or(BuildError("console badge".into()))?;
        let slot = self.take_slot()?;
        self.cnode.mint(slot, self.cnode_bits as u8, init::CNODE, supervisor, 64, CapRights::new(false, false, true), badge)?;
        self.info.console_release = Some(slot);
        Ok(wake.slot)
    }

    /// Writes the start-up configuration and starts the main thread.
    pub fn start(&mut self, mem: &mut Memory, window: &mut FrameWindow) -> Result<()> {
        self.info.free_slots = (self.next_slot, 1 << self.cnode_bits);
        let page = self.info.to_page().map_err(|e| BuildError(format!("{}: {e}", self.name)))?;
        let frames = mem.alloc_many(ObjectType::X86Page4K, 0, sel4::size_bits::PAGE, sysdesc::START_INFO_SIZE / PAGE_SIZE)?;
        for (i, &f) in frames.iter().enumerate() {
            let i = i as u64;
            let lo = (i * PAGE_SIZE) as usize;
            if lo < page.len() {
                let chunk = &page[lo..page.len().min(lo + PAGE_SIZE as usize)];
                write_frame(mem, window, f, 0, chunk)?;
            }
            self.vspace.map(mem, f.cap(), sysdesc::START_INFO_VADDR + i * PAGE_SIZE, CapRights::READ, VmAttributes::DEFAULT)?;
        }
        let ctx = UserContext {
            rip: self.entry,
            rsp: sysdesc::STACK_BASE + sysdesc::STACK_SLOT,
            rflags: 0x202,
            rdi: sysdesc::START_INFO_VADDR,
            ..UserContext::default()
        };
        self.tcbs[0].write_registers(true, 0, UserContext::WORDS, &ctx)?;
        self.running_since = sel4_rt::rdtsc();
        self.alive = true;
        // The memory of a previous instance is zeroed now if that costs the new instance
        // nothing: it runs on another core meanwhile. Otherwise it waits for `Memory::scrub`
        // from the supervisor's idle time (or the next teardown, which then pays for it).
        if !self.shares_root_core && mem.needs_scrub() {
            if let Err(e) = mem.scrub() {
                // Harmless: a dirty spare is zeroed by the kernel when it is next used.
                sel4_rt::println!("{}: zeroing a spare failed ({e}); the next restart will", self.name);
            }
        }
        Ok(())
    }

    /// Stops every thread of the component (it stays in memory for inspection). The root task
    /// stops signalling its console notification first: the object goes with its memory.
    pub fn stop(&mut self) {
        sel4_rt::log::set_console_waiter(self.info.id, None);
        for tcb in &self.tcbs {
            let _ = tcb.suspend();
        }
        self.alive = false;
    }
}

