//! Memory shared with other components, as the start-up configuration describes it.
//!
//! Another component may change the bytes at any time, so no `&[u8]` is ever handed out:
//! bytes are copied in and out with volatile accesses, and words are reached as atomics. Every
//! access is bounds-checked against the region the root task mapped, and writes to a
//! read-only mapping are refused instead of faulting.

use core::sync::atomic::AtomicU64;

use sysdesc::RegionEntry;

/// Why an access to a shared region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessError {
    OutOfBounds,
    Misaligned,
    ReadOnly,
}

/// A region mapped into this component.
#[derive(Clone, Copy, Debug)]
pub struct SharedRegion {
    base: u64,
    len: u64,
    writable: bool,
    paddr: Option<u64>,
}

impl SharedRegion {
    /// The region named `name` in this component's start-up configuration.
    pub fn named(name: &str) -> Option<SharedRegion> {
        crate::region(name).map(Self::from_entry)
    }

    fn from_entry(r: &RegionEntry) -> SharedRegion {
        SharedRegion { base: r.vaddr, len: r.size, writable: r.writable, paddr: r.paddr }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    /// Physical address of the first byte (DMA regions and device memory).
    pub fn paddr(&self) -> Option<u64> {
        self.paddr
    }
    /// Virtual address of the first byte, for crates that build their own checked views
    /// (e.g. the ring crate's unsafe constructor).
    pub fn vaddr(&self) -> u64 {
        self.base
    }

    fn check(&self, offset: usize, len: usize) -> Result<u64, AccessError> {
        let end = offset.checked_add(len).ok_or(AccessError::OutOfBounds)?;
        if end as u64 > self.len {
            return Err(AccessError::OutOfBounds);
        }
        Ok(self.base + offset as u64)
    }

    /// Copies `out.len()` bytes starting at `offset` out of the region.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), AccessError> {
        let at = self.check(offset, out.len())?;
        let mut i = 0;
        // Bytes up to an 8-byte boundary, then whole words, then the tail.
        while i < out.len() && !(at + i as u64).is_multiple_of(8) {
            // SAFETY: `check` proved [at, at + len) lies inside the mapping the root task made
            // for this component; volatile reads tolerate concurrent writers.
            out[i] = unsafe { core::ptr::read_volatile((at + i as u64) as *const u8) };
            i += 1;
        }
        while i + 8 <= out.len() {
            // SAFETY: as above; the address is 8-aligned here.
            let w = unsafe { core::ptr::read_volatile((at + i as u64) as *const u64) };
            out[i..i + 8].copy_from_slice(&w.to_le_bytes());
            i += 8;
        }
        while i < out.len() {
            // SAFETY: as above.
            out[i] = unsafe { core::ptr::read_volatile((at + i as u64) as *const u8) };
            i += 1;
        }
        Ok(())
    }

    /// Copies `data` into the region at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), AccessError> {
        if !self.writable {
            return Err(AccessError::ReadOnly);
        }
        let at = self.check(offset, data.len())?;
        let mut i = 0;
        while i < data.len() && !(at + i as u64).is_multiple_of(8) {
            // SAFETY: inside the mapping (checked) and the mapping is writable (checked).
            unsafe { core::ptr::write_volatile((at + i as u64) as *mut u8, data[i]) };
            i += 1;
        }
        while i + 8 <= data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&data[i..i + 8]);
            // SAFETY: as above; the address is 8-aligned here.
            unsafe { core::ptr::write_volatile((at + i as u64) as *mut u64, u64::from_le_bytes(w)) };
            i += 8;
        }
        while i < data.len() {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile((at + i as u64) as *mut u8, data[i]) };
            i += 1;
        }
        Ok(())
    }

    /// The 8-byte word at `offset` as an atomic (`offset` must be 8-aligned).
    pub fn atomic_u64(&self, offset: usize) -> Result<&'static AtomicU64, AccessError> {
        if !offset.is_multiple_of(8) {
            return Err(AccessError::Misaligned);
        }
        let at = self.check(offset, 8)?;
        // SAFETY: the word lies inside a mapping that lives as long as the component, is
        // 8-aligned, and AtomicU64 permits concurrent access from other threads/components.
        // A read-only mapping yields an atomic whose stores fault, so refuse those below.
        let word = unsafe { &*(at as *const AtomicU64) };
        Ok(word)
    }

    /// Like [`SharedRegion::atomic_u64`], but only for writable mappings.
    pub fn atomic_u64_mut(&self, offset: usize) -> Result<&'static AtomicU64, AccessError> {
        if !self.writable {
            return Err(AccessError::ReadOnly);
        }
        self.atomic_u64(offset)
    }
}
