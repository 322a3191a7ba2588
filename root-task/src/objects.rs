//! Kernel-object allocation: free slots of the root CNode and memory from untypeds.
//!
//! Untypeds are used as bump allocators mirroring the kernel's own rule (each new object is
//! placed at the next address aligned to its size), so the root task always knows the physical
//! address of what it creates — which DMA regions need.

use alloc::vec::Vec;

use sel4::bootinfo::{BootInfo, SlotRegion, UntypedDesc};
use sel4::{init, Cap, CapType, Error, ObjectType, Untyped};

/// Bump allocator over the root CNode's empty slots.
pub struct Slots {
    next: u64,
    end: u64,
    freed: Vec<u64>,
}

impl Slots {
    pub fn new(empty: SlotRegion) -> Self {
        Slots { next: empty.start, end: empty.end, freed: Vec::new() }
    }

    pub fn alloc(&mut self) -> Result<u64, Error> {
        if let Some(slot) = self.freed.pop() {
            return Ok(slot);
        }
        if self.next >= self.end {
            return Err(Error::NotEnoughMemory);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Returns an empty slot (the caller deleted its capability).
    pub fn free(&mut self, slot: u64) {
        self.freed.push(slot);
    }
}

struct Pool {
    cap: Cap<Untyped>,
    paddr: u64,
    size_bits: u8,
    /// Bytes used from the start of the untyped.
    used: u64,
}

/// An object just created: its capability slot and physical address.
#[derive(Clone, Copy, Debug)]
pub struct Object {
    pub slot: u64,
    pub paddr: u64,
}

impl Object {
    pub fn cap<T: CapType>(&self) -> Cap<T> {
        Cap::from_cptr(self.slot)
    }
}

/// Allocates kernel objects from RAM untypeds, and device frames from device untypeds.
///
/// Each component's own objects come from a private pool (an untyped carved once): tearing a
/// component down is one revoke of its pool, after which the pool is reused for the next
/// instance. While a pool is active ([`Memory::enter`]), every slot taken is recorded so it can
/// be freed at teardown.
pub struct Memory {
    pub slots: Slots,
    ram: Vec<Pool>,
    device: Vec<UntypedDesc>,
    pools: Vec<ComponentPool>,
    active: Option<usize>,
}

/// A component's private memory and the root-CNode slots its objects occupy.
struct ComponentPool {
    pool: Pool,
    /// Slot of the pool's untyped capability.
    slot: u64,
    /// Slots holding capabilities derived from the pool, or copies made for the component.
    taken: Vec<u64>,
}

impl Memory {
    pub fn new(bi: &BootInfo<'_>) -> Self {
        let mut ram = Vec::new();
        let mut device = Vec::new();
        for u in bi.untypeds() {
            if u.is_device {
                device.push(u);
            } else {
                ram.push(Pool { cap: Cap::from_cptr(u.slot), paddr: u.paddr, size_bits: u.size_bits, used: 0 });
            }
        }
        // Small pools first, so big contiguous ones stay whole for DMA and large requests.
        ram.sort_by_key(|p| p.size_bits);
        Memory { slots: Slots::new(bi.empty()), ram, device, pools: Vec::new(), active: None }
    }

    /// Carves a private pool of `2^bits` bytes; returns its number.
    pub fn new_pool(&mut self, bits: u64) -> Result<usize, Error> {
        let ut = self.alloc_untyped(bits)?;
        self.pools.push(ComponentPool {
            pool: Pool { cap: ut.cap(), paddr: ut.paddr, size_bits: bits as u8, used: 0 },
            slot: ut.slot,
            taken: Vec::new(),
        });
        Ok(self.pools.len() - 1)
    }

    /// From now on objects come from pool `pool` and slots are recorded against it.
    pub fn enter(&mut self, pool: usize) {
        self.active = Some(pool);
    }

    /// Back to the global memory.
    pub fn leave(&mut self) {
        self.active = None;
    }

    /// A root-CNode slot; recorded against the active pool, if any.
    pub fn slot(&mut self) -> Result<u64, Error> {
        let slot = self.slots.alloc()?;
        if let Some(p) = self.active {
            self.pools[p].taken.push(slot);
        }
        Ok(slot)
    }

    /// Deletes the capability in `slot`, made while building something that turned out not to be
    /// needed. Slots recorded against the active pool stay recorded (they are freed with it).
    pub fn discard(&mut self, slot: u64) {
        let _ = init::CNODE.delete(slot, 64);
        if self.active.is_none() {
            self.slots.free(slot);
        }
    }

    /// Destroys every object made from pool `pool` and every capability recorded against it,
    /// and makes the pool and the slots reusable.
    pub fn reset_pool(&mut self, pool: usize) -> Result<(), Error> {
        let p = &mut self.pools[pool];
        // Copies of global objects are not descendants of the pool: delete them one by one.
        for &slot in &p.taken {
            let _ = init::CNODE.delete(slot, 64);
        }
        // Everything retyped from the pool (and capabilities derived from it).
        init::CNODE.revoke(p.slot, 64)?;
        p.pool.used = 0;
        let taken = core::mem::take(&mut p.taken);
        for slot in taken {
            self.slots.free(slot);
        }
        Ok(())
    }

    /// Free RAM left in the untypeds, in bytes.
    pub fn free_bytes(&self) -> u64 {
        self.ram.iter().map(|p| (1u64 << p.size_bits) - p.used).sum()
    }

    /// Creates one object of `ty` and `size_bits` (the object's size, as retype wants it:
    /// radix bits for CNodes, object size for untypeds; ignored for fixed-size types whose
    /// `bytes_bits` says how big they are).
    pub fn alloc(&mut self, ty: ObjectType, size_bits: u64, bytes_bits: u64) -> Result<Object, Error> {
        let size = 1u64 << bytes_bits;
        let fits = |p: &Pool| align_up(p.used, size) + size <= 1u64 << p.size_bits;
        let slot = self.slot()?;
        let pool = match self.active {
            Some(i) if fits(&self.pools[i].pool) => &mut self.pools[i].pool,
            Some(_) => return Err(Error::NotEnoughMemory),
            None => match self.ram.iter_mut().find(|p| fits(p)) {
                Some(p) => p,
                None => {
                    self.slots.free(slot);
                    return Err(Error::NotEnoughMemory);
                }
            },
        };
        let offset = align_up(pool.used, size);
        if let Err(e) = pool.cap.retype(ty as u64, size_bits, init::CNODE, 0, 0, slot, 1) {
            return Err(e);
        }
        pool.used = offset + size;
        Ok(Object { slot, paddr: pool.paddr + offset })
    }

    pub fn alloc_fixed(&mut self, ty: ObjectType) -> Result<Object, Error> {
        use sel4::size_bits as sb;
        let bits = match ty {
            ObjectType::Tcb => sb::TCB,
            ObjectType::Endpoint => sb::ENDPOINT,
            ObjectType::Notification => sb::NOTIFICATION,
            ObjectType::X86Page4K => sb::PAGE,
            ObjectType::X86LargePage => sb::LARGE_PAGE,
            ObjectType::X86PageTable => sb::PAGE_TABLE,
            ObjectType::X86PageDirectory => sb::PAGE_DIRECTORY,
            ObjectType::X86Pdpt => sb::PDPT,
            ObjectType::X64Pml4 => sb::PML4,
            _ => return Err(Error::InvalidArgument),
        };
        self.alloc(ty, 0, bits)
    }

    /// A CNode with `2^radix` slots.
    pub fn alloc_cnode(&mut self, radix: u64) -> Result<Object, Error> {
        self.alloc(ObjectType::CapTable, radix, radix + sel4::size_bits::SLOT)
    }

    /// `2^bits` bytes of physically contiguous RAM as an untyped (for DMA regions).
    pub fn alloc_untyped(&mut self, bits: u64) -> Result<Object, Error> {
        self.alloc(ObjectType::Untyped, bits, bits)
    }

    /// A 4 KiB frame of device memory at physical address `paddr`: the device untyped holding
    /// it is split in halves until a page-sized piece sits exactly there.
    pub fn device_frame(&mut self, paddr: u64) -> Result<Object, Error> {
        let index = self
            .device
            .iter()
            .position(|u| u.paddr <= paddr && paddr < u.paddr + (1u64 << u.size_bits))
            .ok_or(Error::RangeError)?;
        let mut u = self.device.swap_remove(index);
        while u.size_bits as u64 > sel4::size_bits::PAGE {
            let half = u.size_bits - 1;
            let first = self.slots.alloc()?;
            let second = self.slots.alloc()?;
            let cap: Cap<Untyped> = Cap::from_cptr(u.slot);
            cap.retype(ObjectType::Untyped as u64, half as u64, init::CNODE, 0, 0, first, 1)?;
            cap.retype(ObjectType::Untyped as u64, half as u64, init::CNODE, 0, 0, second, 1)?;
            let lower = UntypedDesc { slot: first, paddr: u.paddr, size_bits: half, is_device: true };
            let upper = UntypedDesc { slot: second, paddr: u.paddr + (1u64 << half), size_bits: half, is_device: true };
            // Keep the half we do not descend into for later requests.
            if paddr < upper.paddr {
                self.device.push(upper);
                u = lower;
            } else {
                self.device.push(lower);
                u = upper;
            }
        }
        let slot = self.slots.alloc()?;
        Cap::<Untyped>::from_cptr(u.slot).retype(ObjectType::X86Page4K as u64, 0, init::CNODE, 0, 0, slot, 1)?;
        Ok(Object { slot, paddr })
    }
}

pub const fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}
