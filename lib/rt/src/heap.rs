//! The heap: talc over a region the root task maps (components) or a `.bss` array (root task).

use talc::{ErrOnOom, Span, Talc, Talck};

use crate::sync::RawMutex;

#[global_allocator]
static ALLOCATOR: Talck<RawMutex, ErrOnOom> = Talc::new(ErrOnOom).lock();

/// Hands `[base, base + size)` to the allocator.
pub(crate) fn init(base: u64, size: u64) {
    if size == 0 {
        return;
    }
    // SAFETY: the root task maps this range read-write for this component alone and nothing
    // else in the component uses it (sysdesc::HEAP_BASE is reserved for the heap).
    unsafe {
        let _ = ALLOCATOR.lock().claim(Span::from_base_size(base as *mut u8, size as usize));
    }
}

#[cfg(feature = "root-task")]
const ROOT_HEAP_SIZE: usize = 8 * 1024 * 1024;

#[cfg(feature = "root-task")]
#[repr(C, align(4096))]
struct RootHeap([u8; ROOT_HEAP_SIZE]);

#[cfg(feature = "root-task")]
static mut ROOT_HEAP: RootHeap = RootHeap([0; ROOT_HEAP_SIZE]);

#[cfg(feature = "root-task")]
pub(crate) fn init_root() {
    // SAFETY: ROOT_HEAP is used only here, once, before anything allocates.
    let base = core::ptr::addr_of_mut!(ROOT_HEAP) as u64;
    init(base, ROOT_HEAP_SIZE as u64);
}

