//! The atomics the protocol is built from.
//!
//! Normally these are `core::sync::atomic`; under `--cfg loom` they are loom's, so the model checker
//! explores exactly the code the product runs (see the crate docs for the command).
//!
//! Under loom a `ModelFault` can also be injected into a [`Producer`](crate::Producer) or
//! [`Consumer`](crate::Consumer) to weaken the protocol on purpose; the model tests use it to show
//! that the model catches the resulting bugs (a test that cannot fail is a defect).

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A deliberate protocol weakening, only for model tests (exists only under `--cfg loom`).
#[cfg(loom)]
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFault {
    /// The protocol as documented.
    None,
    /// Leave out the `SeqCst` fences of the wake-up protocol (between "publish my index" and
    /// "read the peer's wake-me flag", and between "set my wake-me flag" and "re-check the ring").
    NoWakeupFence,
    /// Publish and read indices with `Relaxed` instead of release/acquire.
    RelaxedIndices,
}
