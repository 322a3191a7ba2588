//! A window in the caller's own address space through which it reads and writes frames it does
//! not keep mapped (the root task fills component frames this way).
//!
//! The window is the page at [`sysdesc::WINDOW_VADDR`], which the address-space layout reserves
//! for it. The kernel refuses to map a second frame where one is mapped, and `with_frame`
//! borrows the window mutably and unmaps before returning, so no two views of the page exist.

use sel4::{Cap, CNode, CapRights, Error, VmAttributes, X64Pml4, X86Page};

/// The window plus one spare CNode slot for a copy of the frame capability (a frame capability
/// maps only once, so the window maps a copy).
pub struct FrameWindow {
    slot: u64,
    cnode: Cap<CNode>,
    vspace: Cap<X64Pml4>,
}

impl FrameWindow {
    /// `slot`: an empty slot of `cnode` (the caller's CSpace root, depth 64). The page table
    /// under the window must exist (else every use fails with `FailedLookup`).
    pub fn new(slot: u64, cnode: Cap<CNode>, vspace: Cap<X64Pml4>) -> Self {
        FrameWindow { slot, cnode, vspace }
    }

    /// Runs `f` on the contents of `frame`.
    pub fn with_frame<R>(&mut self, frame: Cap<X86Page>, f: impl FnOnce(&mut [u8; 4096]) -> R) -> Result<R, Error> {
        self.cnode.copy(self.slot, 64, self.cnode, frame.cptr(), 64, CapRights::READ_WRITE)?;
        let copy: Cap<X86Page> = Cap::from_cptr(self.slot);
        let vaddr = sysdesc::WINDOW_VADDR;
        let mapped = copy.map(self.vspace.upcast(), vaddr, CapRights::READ_WRITE, VmAttributes::DEFAULT);
        let result = mapped.map(|()| {
            // SAFETY: the kernel just mapped this 4 KiB frame read-write at `vaddr`, a page the
            // layout reserves for this window and that held no other mapping (else `map` would
            // have failed); the reference dies before the frame is unmapped below.
            let page = unsafe { &mut *(vaddr as *mut [u8; 4096]) };
            f(page)
        });
        let _ = copy.unmap();
        let _ = self.cnode.delete(self.slot, 64);
        result
    }
}
