//! Test helper: a ring in heap memory, reached only through `Ring::from_raw` (the product's path).

use core::marker::PhantomData;
use core::num::NonZeroU32;
use core::sync::atomic::{AtomicU32, Ordering};
use std::vec::Vec;

use crate::{Consumer, Item, Producer, Ring};

/// One cache line of atomics: the allocation is 64-byte aligned and only accessed atomically.
#[repr(C, align(64))]
struct Line([AtomicU32; 16]);

/// Zeroed, 64-byte aligned heap memory holding one `Ring<T, N>`, plus two spare lines after it
/// (a canary against writes past the end).
pub(crate) struct HeapRing<T, const N: usize> {
    lines: Vec<Line>,
    _t: PhantomData<T>,
}

pub(crate) const CANARY: u32 = 0xdead_beef;

impl<T: Item, const N: usize> HeapRing<T, N> {
    pub(crate) fn new() -> Self {
        let lines = Ring::<T, N>::BYTES.div_ceil(64) + 2;
        let lines: Vec<Line> = (0..lines).map(|_| Line([const { AtomicU32::new(0) }; 16])).collect();
        let this = HeapRing { lines, _t: PhantomData };
        for word in this.canary_words() {
            word.store(CANARY, Ordering::Relaxed);
        }
        this
    }

    fn canary_words(&self) -> impl Iterator<Item = &AtomicU32> {
        let first = Ring::<T, N>::BYTES / 4;
        self.lines.iter().flat_map(|l| l.0.iter()).skip(first)
    }

    /// Whether every word after the ring still holds the canary.
    pub(crate) fn canary_intact(&self) -> bool {
        self.canary_words().all(|w| w.load(Ordering::Relaxed) == CANARY)
    }

    pub(crate) fn ring(&self) -> Ring<'_, T, N> {
        let base = self.lines.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: the lines live as long as `self`, are 64-byte aligned, span at least
        // `Ring::BYTES` bytes, and consist of atomics, which are only ever accessed atomically.
        unsafe { Ring::from_raw(base, self.lines.len() * 64) }.unwrap()
    }

    /// Initialise with epoch 1 and attach both sides.
    pub(crate) fn pair(&self) -> (Producer<'_, T, N>, Consumer<'_, T, N>) {
        let ring = self.ring();
        ring.init(NonZeroU32::MIN);
        (Producer::attach(ring).unwrap(), Consumer::attach(ring).unwrap())
    }

    /// The word at byte `offset` of the ring (what a hostile peer would write).
    pub(crate) fn word(&self, offset: usize) -> &AtomicU32 {
        &self.lines[offset / 64].0[(offset % 64) / 4]
    }

    pub(crate) fn poke(&self, offset: usize, value: u32) {
        self.word(offset).store(value, Ordering::Relaxed);
    }

    pub(crate) fn peek(&self, offset: usize) -> u32 {
        self.word(offset).load(Ordering::Relaxed)
    }

    /// The ring's bytes as they are in memory (for byte fixtures).
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.lines
            .iter()
            .flat_map(|l| l.0.iter())
            .take(Ring::<T, N>::BYTES / 4)
            .flat_map(|w| w.load(Ordering::Relaxed).to_ne_bytes())
            .collect()
    }
}
