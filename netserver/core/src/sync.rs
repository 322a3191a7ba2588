//! The atomics and `Arc` the concurrent parts are built from.
//!
//! Normally `core`/`alloc`; under `--cfg loom` they are loom's, so the model tests in
//! `tests/loom.rs` explore exactly the code the product runs. Trait objects (`Arc<dyn Signal>`)
//! always use `alloc::sync::Arc`: loom's `Arc` cannot coerce to `dyn`, and those references are not
//! part of any modelled protocol.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;

#[cfg(not(loom))]
pub(crate) use alloc::sync::Arc;
#[cfg(not(loom))]
pub(crate) use core::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Aligns (and pads) `T` to 128 bytes so that two shards, stripes or mailboxes never share a cache
/// line (two adjacent 64-byte lines are prefetched together on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> core::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
