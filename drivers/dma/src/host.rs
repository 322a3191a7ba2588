//! Heap memory standing in for a shared region in host tests (feature `host-test`).

use core::sync::atomic::{AtomicU32, Ordering};
use std::alloc::{alloc_zeroed, Layout};

use crate::mapping::Mapping;

/// Zeroed, page-aligned heap memory that lives for the rest of the test process (it is leaked),
/// shared by stand-in "processes" (threads) the way a region is shared by components. Its
/// "physical address" is its virtual address.
#[derive(Clone, Copy, Debug)]
pub struct HostMem {
    base: usize,
    len: usize,
}

impl HostMem {
    /// `len` bytes (rounded up to a page).
    pub fn new(len: usize) -> Self {
        let len = len.max(1).div_ceil(4096) * 4096;
        let Ok(layout) = Layout::from_size_align(len, 4096) else { panic!("bad test layout") };
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null(), "out of memory");
        HostMem { base: base as usize, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the memory is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapping one stand-in process has of the memory. Call it once per stand-in process
    /// and role (for example once for the server's view and once for the driver's).
    pub fn map(&self) -> Mapping {
        // SAFETY: the memory is leaked, so it stays valid for the process's life. Several
        // `Mapping`s of it exist only as stand-ins for separate processes: rings are reached only
        // atomically, and the buffers of a region are reached by one stand-in at a time, as the
        // ring protocol hands them over (the case shared-ring's `Region::from_raw` allows for
        // host tests). `poke` below writes only atomically.
        unsafe { Mapping::new(self.base, Some(self.base as u64), self.len) }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len, "poke/peek outside the memory");
        // SAFETY: in bounds and 4-aligned (checked; the base is page aligned), valid for the
        // process's life; `AtomicU32` permits concurrent atomic access from other threads.
        unsafe { &*((self.base + offset) as *const AtomicU32) }
    }

    /// Write the `u32` at `offset` atomically: what a hostile peer does. Use it on ring memory
    /// (only ever accessed atomically), or on buffers while no view's slice of them is alive.
    pub fn poke(&self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Relaxed);
    }

    /// Read the `u32` at `offset` atomically.
    pub fn peek(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Relaxed)
    }
}
