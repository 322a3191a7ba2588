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

#[cfg(loom)]
impl ModelFault {
    /// Ordering for publishing an index.
    pub(crate) fn release(self) -> Ordering {
        if self == ModelFault::RelaxedIndices {
            Ordering::Relaxed
        } else {
            Ordering::Release
        }
    }

    /// Ordering for reading the peer's index.
    pub(crate) fn acquire(self) -> Ordering {
        if self == ModelFault::RelaxedIndices {
            Ordering::Relaxed
        } else {
            Ordering::Acquire
        }
    }

    /// The fence of the wake-up protocol (see the crate docs).
    pub(crate) fn wakeup_fence(self) {
        if self != ModelFault::NoWakeupFence {
            fence(Ordering::SeqCst);
        }
    }
}

/// The orderings of the protocol as documented (no fault can be injected outside loom).
#[cfg(not(loom))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Protocol;

#[cfg(not(loom))]
impl Protocol {
    pub(crate) fn release(self) -> Ordering {
        Ordering::Release
    }
    pub(crate) fn acquire(self) -> Ordering {
        Ordering::Acquire
    }
    pub(crate) fn wakeup_fence(self) {
        fence(Ordering::SeqCst);
    }
}
