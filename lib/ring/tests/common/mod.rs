//! Heap memory standing in for pages mapped into two processes.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// One cache line of atomics: 64-byte aligned, and only ever accessed atomically, which is what
/// `Ring::from_raw` requires of ring memory.
#[repr(C, align(64))]
struct Line([AtomicU32; 16]);

/// Ring memory: zeroed lines, plus `spare` lines after the ring filled with a canary.
pub struct RingMem {
    lines: Vec<Line>,
    ring_bytes: usize,
}

pub const CANARY: u32 = 0xdead_beef;

impl RingMem {
    pub fn new(ring_bytes: usize) -> Self {
        let n = ring_bytes.div_ceil(64) + 2;
        let lines = (0..n).map(|_| Line(std::array::from_fn(|_| AtomicU32::new(0)))).collect();
        let mem = RingMem { lines, ring_bytes };
        for w in mem.words().skip(ring_bytes / 4) {
            w.store(CANARY, Ordering::Relaxed);
        }
        mem
    }

    fn words(&self) -> impl Iterator<Item = &AtomicU32> {
        self.lines.iter().flat_map(|l| l.0.iter())
    }

    /// Base pointer and length to hand to `Ring::from_raw`.
    pub fn raw(&self) -> (*mut u8, usize) {
        (self.lines.as_ptr().cast::<u8>().cast_mut(), self.lines.len() * 64)
    }

    /// The 32-bit word at byte `offset` of the ring (what a hostile peer would write).
    pub fn word(&self, offset: usize) -> &AtomicU32 {
        &self.lines[offset / 64].0[(offset % 64) / 4]
    }

    pub fn canary_intact(&self) -> bool {
        self.words().skip(self.ring_bytes / 4).all(|w| w.load(Ordering::Relaxed) == CANARY)
    }
}

/// Region memory: a byte buffer reached only through the raw pointer taken at creation.
pub struct RegionMem {
    _buf: Vec<u8>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY (test helper): the pointer is only used to build `Region`s, whose users follow the
// buffer hand-over protocol.
unsafe impl Send for RegionMem {}
unsafe impl Sync for RegionMem {}

impl RegionMem {
    pub fn new(len: usize) -> Self {
        let mut buf = vec![0u8; len];
        let ptr = buf.as_mut_ptr();
        RegionMem { _buf: buf, ptr, len }
    }

    pub fn raw(&self) -> (*mut u8, usize) {
        (self.ptr, self.len)
    }

    pub fn contains(&self, s: &[u8]) -> bool {
        let start = self.ptr as usize;
        let p = s.as_ptr() as usize;
        p >= start && p + s.len() <= start + self.len
    }
}
