//! The BootInfo page the kernel gives the root task (seL4 5.0, packed layout).
//!
//! Parsed from bytes with bounds-checked reads, so a malformed page yields `None`, never a panic.

/// A range of capability slots `[start, end)` in the root task's CNode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRegion {
    pub start: u64,
    pub end: u64,
}

impl SlotRegion {
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One untyped memory capability described by BootInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UntypedDesc {
    pub slot: u64,
    pub paddr: u64,
    pub size_bits: u8,
    pub is_device: bool,
}

/// A view of the BootInfo page.
#[derive(Clone, Copy)]
pub struct BootInfo<'a> {
    bytes: &'a [u8],
}

const EXTRA_LEN: usize = 0;
const NODE_ID: usize = 8;
const NUM_NODES: usize = 16;
const IPC_BUFFER: usize = 32;
const EMPTY: usize = 40;
const USER_IMAGE_FRAMES: usize = 72;
const USER_IMAGE_PAGING: usize = 88;
const CNODE_SIZE_BITS: usize = 136;
const ARCH_INFO: usize = 145;
const UNTYPED: usize = 153;
const UNTYPED_LIST: usize = 169;
const UNTYPED_DESC_SIZE: usize = 12;

impl<'a> BootInfo<'a> {
    /// Size of the page the kernel maps.
    pub const SIZE: usize = 4096;

    /// Wraps the bytes of a BootInfo page; `None` if they are too short to hold the header.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < UNTYPED_LIST {
            return None;
        }
        Some(BootInfo { bytes })
    }

    /// The BootInfo page at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be the BootInfo address the kernel passed to the root task: a readable page
    /// of [`BootInfo::SIZE`] bytes that stays mapped and unchanged for `'static`.
    pub unsafe fn from_ptr(ptr: *const u8) -> Option<BootInfo<'static>> {
        // SAFETY: the caller guarantees a mapped, immutable page of SIZE bytes.
        let bytes = unsafe { core::slice::from_raw_parts(ptr, Self::SIZE) };
        BootInfo::new(bytes)
    }

    fn word(&self, offset: usize) -> Option<u64> {
        let b = self.bytes.get(offset..offset + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn region(&self, offset: usize) -> Option<SlotRegion> {
        Some(SlotRegion { start: self.word(offset)?, end: self.word(offset + 8)? })
    }

    pub fn extra_len(&self) -> u64 {
        self.word(EXTRA_LEN).unwrap_or(0)
    }
    pub fn node_id(&self) -> u64 {
        self.word(NODE_ID).unwrap_or(0)
    }
    pub fn num_nodes(&self) -> u64 {
        self.word(NUM_NODES).unwrap_or(1)
    }
    /// Address of the root task's IPC buffer.
    pub fn ipc_buffer(&self) -> u64 {
        self.word(IPC_BUFFER).unwrap_or(0)
    }
    /// Free slots of the root CNode.
    pub fn empty(&self) -> SlotRegion {
        self.region(EMPTY).unwrap_or(SlotRegion { start: 0, end: 0 })
    }
    /// Frames holding the root task's own image.
    pub fn user_image_frames(&self) -> SlotRegion {
        self.region(USER_IMAGE_FRAMES).unwrap_or(SlotRegion { start: 0, end: 0 })
    }
    pub fn user_image_paging(&self) -> SlotRegion {
        self.region(USER_IMAGE_PAGING).unwrap_or(SlotRegion { start: 0, end: 0 })
    }
    pub fn cnode_size_bits(&self) -> u8 {
        self.bytes.get(CNODE_SIZE_BITS).copied().unwrap_or(0)
    }
    /// TSC frequency in MHz (x86 `archInfo`).
    pub fn tsc_mhz(&self) -> u64 {
        self.word(ARCH_INFO).unwrap_or(0)
    }
    pub fn untyped(&self) -> SlotRegion {
        self.region(UNTYPED).unwrap_or(SlotRegion { start: 0, end: 0 })
    }

    /// The untyped capabilities, in slot order; at most as many as the page has room for.
    pub fn untypeds(&self) -> impl Iterator<Item = UntypedDesc> + '_ {
        let region = self.untyped();
        // Never more entries than the page can hold, whatever the header claims.
        let fit = (self.bytes.len().saturating_sub(UNTYPED_LIST) / UNTYPED_DESC_SIZE) as u64;
        (0..region.len().min(fit)).filter_map(move |i| {
            let off = UNTYPED_LIST + i as usize * UNTYPED_DESC_SIZE;
            let d = self.bytes.get(off..off + UNTYPED_DESC_SIZE)?;
            Some(UntypedDesc {
                slot: region.start + i,
                paddr: u64::from_le_bytes(d[0..8].try_into().ok()?),
                size_bits: d[10],
                is_device: d[11] != 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> [u8; 4096] {
        let mut b = [0u8; 4096];
        let put = |b: &mut [u8; 4096], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put(&mut b, NUM_NODES, 2);
        put(&mut b, IPC_BUFFER, 0x51_0000);
        put(&mut b, EMPTY, 0xb0);
        put(&mut b, EMPTY + 8, 0x10000);
        b[CNODE_SIZE_BITS] = 16;
        // initThreadDomain is an unaligned word right after the size byte.
        put(&mut b, ARCH_INFO, 2596);
        put(&mut b, UNTYPED, 0x20);
        put(&mut b, UNTYPED + 8, 0x22);
        let d0 = UNTYPED_LIST;
        put(&mut b, d0, 0x10_0000);
        b[d0 + 10] = 20;
        let d1 = UNTYPED_LIST + UNTYPED_DESC_SIZE;
        put(&mut b, d1, 0xfebd_0000);
        b[d1 + 10] = 12;
        b[d1 + 11] = 1;
        b
    }

    #[test]
    fn parses_the_packed_layout() {
        let page = fixture();
        let bi = BootInfo::new(&page).unwrap();
        assert_eq!(bi.num_nodes(), 2);
        assert_eq!(bi.ipc_buffer(), 0x51_0000);
        assert_eq!(bi.empty(), SlotRegion { start: 0xb0, end: 0x10000 });
        assert_eq!(bi.cnode_size_bits(), 16);
        assert_eq!(bi.tsc_mhz(), 2596);
        let u: Vec<_> = bi.untypeds().collect();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0], UntypedDesc { slot: 0x20, paddr: 0x10_0000, size_bits: 20, is_device: false });
        assert_eq!(u[1], UntypedDesc { slot: 0x21, paddr: 0xfebd_0000, size_bits: 12, is_device: true });
    }

    #[test]
    fn malformed_pages_do_not_panic() {
        assert!(BootInfo::new(&[0u8; 100]).is_none());
        let mut page = fixture();
        // An absurd untyped range only yields the descriptors inside the page.
        page[UNTYPED + 8..UNTYPED + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        let bi = BootInfo::new(&page).unwrap();
        assert!(bi.untypeds().count() < 400);
    }

    extern crate std;
    use std::vec::Vec;
}
