//! Mappings from the runtime's start-up configuration (feature `rt`, seL4 components only).

use spin::Mutex;

use crate::mapping::{Mapping, ViewError};

const MAX_TAKEN: usize = 16;
static TAKEN: Mutex<[u64; MAX_TAKEN]> = Mutex::new([0; MAX_TAKEN]);

/// The region (or MMIO window) named `name` in this component's start-up configuration, as a
/// [`Mapping`] — at most once per region, so the views made from it are the only way this
/// process reaches the memory. Do not also use `SharedRegion`'s own accessors on it.
pub fn take_region(name: &str) -> Result<Mapping, ViewError> {
    let r = sel4_rt::region(name).ok_or(ViewError::NoSuchRegion)?;
    if !r.writable {
        return Err(ViewError::ReadOnly);
    }
    let mut taken = TAKEN.lock();
    if taken.contains(&r.vaddr) {
        return Err(ViewError::AlreadyTaken);
    }
    let slot = taken.iter_mut().find(|v| **v == 0).ok_or(ViewError::AlreadyTaken)?;
    *slot = r.vaddr;
    let len = usize::try_from(r.size).map_err(|_| ViewError::TooSmall { needed: 0, got: 0 })?;
    // SAFETY: the root task mapped `size` bytes at `vaddr` for the component's whole life,
    // writable (checked above), physically contiguous from `paddr` when it reports one (DMA
    // regions and device memory). `TAKEN` makes this the only `Mapping` of the region in this
    // process; the rule above (no `SharedRegion` accessors on it) makes its view the only access.
    Ok(unsafe { Mapping::new(r.vaddr as usize, r.paddr, len) })
}
