//! Address spaces: mapping frames (creating paging structures on demand) and writing into
//! frames the root task does not keep mapped.

use alloc::collections::BTreeSet;

use sel4::{init, Cap, CapRights, Error, ObjectType, VmAttributes, X64Pml4, X86Page, X86PageDirectory, X86PageTable, X86Pdpt};

use crate::objects::Memory;
use sel4_rt::window::FrameWindow;

/// One address space and the paging structures known to exist in it.
pub struct VSpace {
    pub root: Cap<X64Pml4>,
    present: BTreeSet<(u8, u64)>,
}

const LEVELS: [(u8, u32); 3] = [(3, 39), (2, 30), (1, 21)];

impl VSpace {
    pub fn new(root: Cap<X64Pml4>) -> Self {
        VSpace { root, present: BTreeSet::new() }
    }

    /// Maps the 4 KiB `frame` at `vaddr`, creating missing paging structures.
    pub fn map(&mut self, mem: &mut Memory, frame: Cap<X86Page>, vaddr: u64, rights: CapRights, attr: VmAttributes) -> Result<(), Error> {
        self.map_at_level(mem, frame, vaddr, rights, attr, &LEVELS)
    }

    /// Maps the 2 MiB `frame` at `vaddr` (2 MiB aligned): its entry is in a page directory.
    pub fn map_large(&mut self, mem: &mut Memory, frame: Cap<X86Page>, vaddr: u64, rights: CapRights, attr: VmAttributes) -> Result<(), Error> {
        self.map_at_level(mem, frame, vaddr, rights, attr, &LEVELS[..2])
    }

    fn map_at_level(
        &mut self,
        mem: &mut Memory,
        frame: Cap<X86Page>,
        vaddr: u64,
        rights: CapRights,
        attr: VmAttributes,
        levels: &[(u8, u32)],
    ) -> Result<(), Error> {
        let mut tries = 0;
        loop {
            let t0 = sel4_rt::rdtsc();
            let r = frame.map(self.root.upcast(), vaddr, rights, attr);
            mem.prof.maps += 1;
            mem.prof.map_cycles += sel4_rt::rdtsc() - t0;
            match r {
                // One round of creating what is missing; a second failure is real.
                Err(Error::FailedLookup) if tries == 0 => self.add_paging(mem, vaddr, levels)?,
                other => return other,
            }
            tries += 1;
        }
    }

    fn add_paging(&mut self, mem: &mut Memory, vaddr: u64, levels: &[(u8, u32)]) -> Result<(), Error> {
        for &(level, shift) in levels {
            let key = (level, vaddr >> shift);
            if self.present.contains(&key) {
                continue;
            }
            let (ty, result) = match level {
                3 => {
                    let o = mem.alloc_fixed(ObjectType::X86Pdpt)?;
                    (o, o.cap::<X86Pdpt>().map(self.root, vaddr, VmAttributes::DEFAULT))
                }
                2 => {
                    let o = mem.alloc_fixed(ObjectType::X86PageDirectory)?;
                    (o, o.cap::<X86PageDirectory>().map(self.root.upcast(), vaddr, VmAttributes::DEFAULT))
                }
                _ => {
                    let o = mem.alloc_fixed(ObjectType::X86PageTable)?;
                    (o, o.cap::<X86PageTable>().map(self.root.upcast(), vaddr, VmAttributes::DEFAULT))
                }
            };
            match result {
                Ok(()) => {}
                // Already there (made by the kernel for the root task's image): forget ours.
                Err(Error::DeleteFirst) => mem.discard(ty.slot),
                Err(e) => return Err(e),
            }
            self.present.insert(key);
        }
        Ok(())
    }
}

/// Prepares the root task's frame window: the page table under it, and a spare slot.
pub fn frame_window(mem: &mut Memory, own: &mut VSpace) -> Result<FrameWindow, Error> {
    // Map (and unmap) a throwaway frame once so the paging structures exist.
    let probe = mem.alloc_fixed(ObjectType::X86Page4K)?;
    own.map(mem, probe.cap(), sysdesc::WINDOW_VADDR, CapRights::READ_WRITE, VmAttributes::DEFAULT)?;
    probe.cap::<X86Page>().unmap()?;
    let slot = mem.slots.alloc()?;
    Ok(FrameWindow::new(slot, init::CNODE, init::VSPACE))
}
