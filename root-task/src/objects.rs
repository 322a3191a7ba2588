//! Kernel-object allocation: free slots of the root CNode and memory from untypeds.
//!
//! Untypeds are used as bump allocators mirroring the kernel's own rule (each new object is
//! placed at the next address aligned to its size), so the root task always knows the physical
//! address of what it creates — which DMA regions need.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use sel4::bootinfo::{BootInfo, SlotRegion, UntypedDesc};
use sel4::{init, Cap, CapType, Error, ObjectType, Untyped};

/// Objects one Untyped_Retype may create (the kernel's `RETYPE_FAN_OUT_LIMIT`, set in
/// `tools/xtask/src/kernel.rs`).
pub const RETYPE_FAN_OUT: u64 = 256;

/// Allocator over the root CNode's empty slots: a bump pointer plus the slots given back,
/// kept sorted so that runs of consecutive slots (which a batched retype needs) are found again.
pub struct Slots {
    start: u64,
    next: u64,
    end: u64,
    freed: BTreeSet<u64>,
}

impl Slots {
    pub fn new(empty: SlotRegion) -> Self {
        Slots { start: empty.start, next: empty.start, end: empty.end, freed: BTreeSet::new() }
    }

    pub fn alloc(&mut self) -> Result<u64, Error> {
        self.alloc_run(1)
    }

    /// `n` consecutive empty slots; returns the first.
    pub fn alloc_run(&mut self, n: u64) -> Result<u64, Error> {
        if n == 0 {
            return Err(Error::InvalidArgument);
        }
        // Lowest run of `n` among the freed slots.
        let mut run: Option<(u64, u64)> = None;
        for &slot in &self.freed {
            run = match run {
                Some((first, len)) if first + len == slot => Some((first, len + 1)),
                _ => Some((slot, 1)),
            };
            if let Some((first, len)) = run {
                if len == n {
                    for s in first..first + n {
                        self.freed.remove(&s);
                    }
                    return Ok(first);
                }
            }
        }
        if self.next + n > self.end {
            return Err(Error::NotEnoughMemory);
        }
        self.next += n;
        Ok(self.next - n)
    }

    /// Returns an empty slot (the caller deleted its capability).
    pub fn free(&mut self, slot: u64) {
        if slot < self.start || slot >= self.next || !self.freed.insert(slot) {
            sel4_rt::println!("slot accounting: slot {slot} freed but not in use");
        }
    }

    /// Slots holding (or reserved for) a capability.
    pub fn in_use(&self) -> u64 {
        self.next - self.start - self.freed.len() as u64
    }
}

struct Pool {
    cap: Cap<Untyped>,
    paddr: u64,
    size_bits: u8,
    /// Bytes used from the start of the untyped.
    used: u64,
}

impl Pool {
    /// Offset at which `count` objects of `2^bits` bytes would go, if they fit.
    fn place(&self, bits: u64, count: u64) -> Option<u64> {
        let size = 1u64 << bits;
        let offset = align_up(self.used, size);
        (offset + count * size <= 1u64 << self.size_bits).then_some(offset)
    }
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
///
/// A pool may have a **spare** of the same size ([`Memory::add_spare`], for components that
/// restart): the kernel zeroes an untyped's used memory when it is first retyped again after a
/// revoke, which under TCG costs about 2.5 ms per MiB. With a spare, a teardown switches the
/// next instance to the spare, which is already zero, and the memory of the dead instance is
/// zeroed later, off the restart's path ([`Memory::scrub`]).
pub struct Memory {
    pub slots: Slots,
    ram: Vec<Pool>,
    device: Vec<UntypedDesc>,
    pools: Vec<ComponentPool>,
    active: Option<usize>,
    /// Changes whenever slots or memory are taken outside a pool, so that a teardown can tell
    /// whether the slots in use should be what they were after the previous one.
    global_gen: u64,
    /// Invocation counts and time spent, for the restart measurements.
    pub prof: Profile,
}

/// Counts and TSC cycles of the invocations a build makes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Profile {
    pub retypes: u64,
    pub retype_cycles: u64,
    /// The slowest retype (a retype that first zeroes a revoked pool).
    pub retype_max_cycles: u64,
    pub maps: u64,
    pub map_cycles: u64,
    pub window: u64,
    pub window_cycles: u64,
    /// Time spent zeroing spares ([`Memory::scrub`]).
    pub scrub_cycles: u64,
}

/// What one teardown did and cost (TSC cycles).
#[derive(Clone, Copy, Debug, Default)]
pub struct Teardown {
    /// Address spaces destroyed first.
    pub vspaces_cycles: u64,
    /// Copies of global objects deleted one by one.
    pub copies: u64,
    pub copies_cycles: u64,
    /// Objects destroyed by the revoke of the pool.
    pub objects: u64,
    pub revoke_cycles: u64,
    /// Whether the next instance gets memory that is already zero (a clean spare).
    pub clean: bool,
    /// Root-CNode slots in use afterwards.
    pub slots_in_use: u64,
}

/// One half of a component's memory: an untyped carved once.
struct Half {
    pool: Pool,
    /// Slot of the untyped capability.
    slot: u64,
    /// Revoked after use but not yet zeroed by the kernel.
    dirty: bool,
}

/// A component's private memory and the root-CNode slots its objects occupy.
struct ComponentPool {
    /// Where the current instance's objects come from.
    live: Half,
    /// Where the next instance's objects will come from, if the pool has a spare.
    spare: Option<Half>,
    /// Slots of capabilities retyped from `live` (the revoke destroys them).
    objects: Vec<u64>,
    /// Address-space roots among `objects`, destroyed first at teardown.
    vspaces: Vec<u64>,
    /// Slots of other capabilities recorded against the pool (copies of global objects).
    copies: Vec<u64>,
    /// After the last teardown: the global generation and the root-CNode slots in use.
    after_reset: Option<(u64, u64)>,
    /// Whether a spare was asked for (once, at the first build).
    spare_tried: bool,
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
        Memory { slots: Slots::new(bi.empty()), ram, device, pools: Vec::new(), active: None, global_gen: 0, prof: Profile::default() }
    }

    /// Carves a private pool of `2^bits` bytes; returns its number.
    pub fn new_pool(&mut self, bits: u64) -> Result<usize, Error> {
        let live = self.carve(bits)?;
        self.pools.push(ComponentPool { live, spare: None, objects: Vec::new(), vspaces: Vec::new(), copies: Vec::new(), after_reset: None, spare_tried: false });
        Ok(self.pools.len() - 1)
    }

    fn carve(&mut self, bits: u64) -> Result<Half, Error> {
        let active = self.active.take();
        let ut = self.alloc_untyped(bits);
        self.active = active;
        let ut = ut?;
        Ok(Half { pool: Pool { cap: ut.cap(), paddr: ut.paddr, size_bits: bits as u8, used: 0 }, slot: ut.slot, dirty: false })
    }

    /// Gives the active pool a spare of its size, from global memory, unless it has one or
    /// an earlier attempt failed (then it works without: each rebuild waits for the zeroing).
    pub fn add_spare(&mut self) -> Result<(), Error> {
        let Some(p) = self.active else { return Err(Error::InvalidArgument) };
        if self.pools[p].spare.is_some() || self.pools[p].spare_tried {
            return Ok(());
        }
        self.pools[p].spare_tried = true;
        let spare = self.carve(self.pools[p].live.pool.size_bits as u64)?;
        self.pools[p].spare = Some(spare);
        Ok(())
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
        match self.active {
            Some(p) => self.pools[p].copies.push(slot),
            None => self.global_gen += 1,
        }
        Ok(slot)
    }

    /// Deletes the capability in `slot`, made while building something that turned out not to be
    /// needed. Slots recorded against the active pool stay recorded (they are freed with it).
    pub fn discard(&mut self, slot: u64) {
        let _ = init::CNODE.delete(slot, 64);
        if self.active.is_none() {
            self.slots.free(slot);
            self.global_gen += 1;
        }
    }

    /// Destroys every object made from pool `pool` and every capability recorded against it,
    /// and makes the pool and the slots reusable.
    ///
    /// Order matters on the SMP kernel: the address spaces go first (revoking the copies of
    /// each root, then deleting it), which invalidates the dead instance's ASID once, on every
    /// core that ran it. Without an ASID, the unmapping done by every later delete finds no
    /// address space and returns early, where it would otherwise invalidate the paging-structure
    /// caches of the other core once per page table, directory and PDPT — one inter-processor
    /// interrupt each, which the sender waits for, very slow under TCG when the host is busy.
    pub fn reset_pool(&mut self, pool: usize) -> Result<Teardown, Error> {
        let p = &mut self.pools[pool];
        let t0 = sel4_rt::rdtsc();
        for &root in &p.vspaces {
            let _ = init::CNODE.revoke(root, 64);
            let _ = init::CNODE.delete(root, 64);
        }
        let t1 = sel4_rt::rdtsc();
        // Copies of global objects are not descendants of the pool: delete them one by one.
        for &slot in &p.copies {
            let _ = init::CNODE.delete(slot, 64);
        }
        let t2 = sel4_rt::rdtsc();
        // Everything retyped from the pool (and capabilities derived from it).
        init::CNODE.revoke(p.live.slot, 64)?;
        let t3 = sel4_rt::rdtsc();
        let (copies, objects) = (core::mem::take(&mut p.copies), core::mem::take(&mut p.objects));
        p.vspaces.clear();
        p.live.dirty |= p.live.pool.used > 0;
        p.live.pool.used = 0;
        if let Some(spare) = p.spare.as_mut() {
            core::mem::swap(&mut p.live, spare);
        }
        let clean = !p.live.dirty;
        let down = Teardown {
            vspaces_cycles: t1 - t0,
            copies: copies.len() as u64,
            copies_cycles: t2 - t1,
            objects: objects.len() as u64,
            revoke_cycles: t3 - t2,
            clean,
            slots_in_use: 0,
        };
        for slot in copies.into_iter().chain(objects) {
            self.slots.free(slot);
        }
        // Every instance of a component needs the same slots, so with nothing else taken or
        // given back meanwhile, each teardown must leave as many in use as the previous one.
        let now = (self.global_gen, self.slots.in_use());
        let p = &mut self.pools[pool];
        if let Some(before) = p.after_reset.filter(|b| b.0 == now.0 && b.1 != now.1) {
            sel4_rt::println!("slot accounting: pool {pool}: {} slots in use after this teardown, {} after the previous one", now.1, before.1);
        }
        p.after_reset = Some(now);
        Ok(Teardown { slots_in_use: now.1, ..down })
    }

    /// Whether some spare still holds a dead instance's memory (see [`Memory::scrub`]).
    pub fn needs_scrub(&self) -> bool {
        self.pools.iter().any(|p| p.spare.as_ref().is_some_and(|s| s.dirty))
    }

    /// Has the kernel zero every dirty spare now (one retype of a small object from it, which
    /// zeroes the memory the last instance used; the object is deleted at once). Takes about
    /// 2.5 ms per MiB under TCG, at the caller's priority; call it when nothing is waiting.
    pub fn scrub(&mut self) -> Result<(), Error> {
        let t0 = sel4_rt::rdtsc();
        let result = self.scrub_all();
        self.prof.scrub_cycles += sel4_rt::rdtsc() - t0;
        result
    }

    fn scrub_all(&mut self) -> Result<(), Error> {
        for i in 0..self.pools.len() {
            let Some(half) = self.pools[i].spare.as_ref().filter(|s| s.dirty) else { continue };
            let cap = half.pool.cap;
            let slot = self.slots.alloc()?;
            let made = cap.retype(ObjectType::Notification as u64, 0, init::CNODE, 0, 0, slot, 1);
            let _ = init::CNODE.delete(slot, 64);
            self.slots.free(slot);
            made?;
            if let Some(s) = self.pools[i].spare.as_mut() {
                s.dirty = false;
            }
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
        let objects = self.alloc_many(ty, size_bits, bytes_bits, 1)?;
        objects.first().copied().ok_or(Error::NotEnoughMemory)
    }

    /// Creates `count` objects of one type, up to [`RETYPE_FAN_OUT`] per invocation, into
    /// consecutive slots; physically consecutive too within one invocation.
    pub fn alloc_many(&mut self, ty: ObjectType, size_bits: u64, bytes_bits: u64, count: u64) -> Result<Vec<Object>, Error> {
        let mut made = Vec::with_capacity(count as usize);
        let mut left = count;
        while left > 0 {
            let n = left.min(RETYPE_FAN_OUT);
            let first = self.slots.alloc_run(n)?;
            let give_back = |slots: &mut Slots| (first..first + n).for_each(|s| slots.free(s));
            let (pool, offset) = match self.active {
                Some(i) => {
                    let pool = &mut self.pools[i].live.pool;
                    match pool.place(bytes_bits, n) {
                        Some(offset) => (pool, offset),
                        None => {
                            give_back(&mut self.slots);
                            return Err(Error::NotEnoughMemory);
                        }
                    }
                }
                None => match self.ram.iter_mut().find_map(|p| p.place(bytes_bits, n).map(|o| (p, o))) {
                    Some(found) => found,
                    None => {
                        give_back(&mut self.slots);
                        return Err(Error::NotEnoughMemory);
                    }
                },
            };
            let t0 = sel4_rt::rdtsc();
            let result = pool.cap.retype(ty as u64, size_bits, init::CNODE, 0, 0, first, n);
            let dt = sel4_rt::rdtsc() - t0;
            self.prof.retypes += 1;
            self.prof.retype_cycles += dt;
            self.prof.retype_max_cycles = self.prof.retype_max_cycles.max(dt);
            if let Err(e) = result {
                give_back(&mut self.slots);
                return Err(e);
            }
            pool.used = offset + (n << bytes_bits);
            let base = pool.paddr + offset;
            if self.active.is_none() {
                self.global_gen += 1;
            }
            if let Some(i) = self.active {
                let p = &mut self.pools[i];
                p.objects.extend(first..first + n);
                if ty == ObjectType::X64Pml4 {
                    p.vspaces.extend(first..first + n);
                }
            }
            made.extend((0..n).map(|k| Object { slot: first + k, paddr: base + (k << bytes_bits) }));
            left -= n;
        }
        Ok(made)
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
        self.global_gen += 1;
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
