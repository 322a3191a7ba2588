//! The driver-private DMA region as a page allocator.

use core::ptr::NonNull;

use crate::mapping::Window;

/// Most pages a [`DmaPool`] manages (1 MiB); a larger region is used up to this size.
pub const MAX_PAGES: usize = 256;
const PAGE: usize = 4096;

/// First-fit allocation of runs of pages, one bit per page. Pure bookkeeping (host-tested).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageBitmap {
    used: [u64; MAX_PAGES / 64],
    pages: usize,
}

impl PageBitmap {
    /// `pages` free pages (at most [`MAX_PAGES`]).
    pub fn new(pages: usize) -> Self {
        PageBitmap { used: [0; MAX_PAGES / 64], pages: pages.min(MAX_PAGES) }
    }

    fn is_used(&self, page: usize) -> bool {
        self.used[page / 64] & (1 << (page % 64)) != 0
    }

    fn set(&mut self, page: usize, used: bool) {
        let bit = 1u64 << (page % 64);
        if used {
            self.used[page / 64] |= bit;
        } else {
            self.used[page / 64] &= !bit;
        }
    }

    /// The first page of the first run of `count` free pages, now marked used.
    pub fn alloc(&mut self, count: usize) -> Option<usize> {
        if count == 0 || count > self.pages {
            return None;
        }
        let mut start = 0;
        while start + count <= self.pages {
            match (start..start + count).find(|&p| self.is_used(p)) {
                Some(used) => start = used + 1,
                None => {
                    (start..start + count).for_each(|p| self.set(p, true));
                    return Some(start);
                }
            }
        }
        None
    }

    /// Free `count` pages from `first`; false (and nothing changes) unless all are in range and used.
    pub fn free(&mut self, first: usize, count: usize) -> bool {
        let Some(end) = first.checked_add(count) else { return false };
        if count == 0 || end > self.pages || (first..end).any(|p| !self.is_used(p)) {
            return false;
        }
        (first..end).for_each(|p| self.set(p, false));
        true
    }

    /// Pages free right now.
    pub fn free_pages(&self) -> usize {
        (0..self.pages).filter(|&p| !self.is_used(p)).count()
    }
}

/// The driver's private DMA region (virtqueues): zeroed, physically contiguous pages.
#[derive(Debug)]
pub struct DmaPool {
    window: Window,
    pages: PageBitmap,
}

impl DmaPool {
    /// A pool over `window`.
    ///
    /// # Safety
    ///
    /// The window's virtual range must be mapped readable and writable for the rest of the
    /// process's life, physically contiguous from `window.paddr`, and reached in this process
    /// only through this pool (and the allocations it hands out).
    pub(crate) unsafe fn new(window: Window) -> Self {
        DmaPool { window, pages: PageBitmap::new(window.len / PAGE) }
    }

    /// The pool's address window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// `count` zeroed pages: (physical address, pointer), or `None` when no run is free.
    pub fn alloc(&mut self, count: usize) -> Option<(u64, NonNull<u8>)> {
        let first = self.pages.alloc(count)?;
        let off = first * PAGE;
        let vaddr = self.window.vaddr + off;
        // SAFETY: `first + count <= pages <= len / PAGE`, so the `count` pages lie inside the
        // window, which is mapped writable for the process's life (`new`'s contract); the bitmap
        // just marked them used, so no other allocation covers them.
        unsafe { core::ptr::write_bytes(vaddr as *mut u8, 0, count * PAGE) };
        let ptr = NonNull::new(vaddr as *mut u8)?;
        Some((self.window.paddr + off as u64, ptr))
    }

    /// Give back an allocation; false if `(paddr, count)` is not one this pool handed out.
    pub fn free(&mut self, paddr: u64, vaddr: NonNull<u8>, count: usize) -> bool {
        let Some(len) = count.checked_mul(PAGE) else { return false };
        match self.window.phys_to_virt(paddr, len) {
            Some(v) if v == vaddr.as_ptr() as usize && (v - self.window.vaddr).is_multiple_of(PAGE) => {
                self.pages.free((v - self.window.vaddr) / PAGE, count)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_runs_and_exact_frees() {
        let mut b = PageBitmap::new(8);
        assert_eq!(b.alloc(3), Some(0));
        assert_eq!(b.alloc(2), Some(3));
        assert_eq!(b.alloc(4), None, "only 3 left");
        assert!(b.free(0, 3));
        assert!(!b.free(0, 3), "twice");
        assert!(!b.free(4, 2), "page 5 is free");
        assert_eq!(b.alloc(4), None, "0..3 and 5..8 are separate runs");
        assert_eq!(b.alloc(3), Some(0));
        assert_eq!(b.alloc(3), Some(5));
        assert_eq!(b.free_pages(), 0);
        assert_eq!(b.alloc(0), None);
        assert!(!b.free(7, usize::MAX), "overflow");
    }

    #[test]
    fn capacity_is_capped() {
        let mut b = PageBitmap::new(10_000);
        assert_eq!(b.free_pages(), MAX_PAGES);
        assert_eq!(b.alloc(MAX_PAGES), Some(0));
        assert_eq!(b.alloc(1), None);
    }
}
