//! Shared helpers of the host tests: an interface in heap memory, and a notification stand-in.
#![allow(dead_code)]

use std::sync::{Condvar, Mutex};

use netif::{Desc, DriverSide, NetRing, RingSet, ServerSide, BUFFERS_REGION_SIZE, BUF_SIZE, RINGS_REGION_SIZE};
use sel4_dma::host::HostMem;

/// The two shared regions of one interface.
#[derive(Clone, Copy)]
pub struct Iface {
    pub rings: HostMem,
    pub bufs: HostMem,
}

impl Iface {
    pub fn new() -> Self {
        Iface { rings: HostMem::new(RINGS_REGION_SIZE), bufs: HostMem::new(BUFFERS_REGION_SIZE) }
    }

    /// A ring set as one more stand-in process sees it (e.g. a hostile one).
    pub fn ring_set(&self) -> RingSet<'static> {
        self.rings.map().into_netif_rings().unwrap()
    }

    pub fn server(&self) -> ServerSide<'static> {
        ServerSide::new(self.ring_set(), self.bufs.map().into_region(BUF_SIZE).unwrap()).unwrap()
    }

    pub fn driver(&self) -> DriverSide<'static> {
        DriverSide::new(self.ring_set(), self.bufs.map().into_region(BUF_SIZE).unwrap()).unwrap()
    }
}

/// Byte offset of a ring's `tail` index (low half) within the rings region.
pub fn tail_of(ring_offset: usize) -> usize {
    ring_offset + 64
}
/// Byte offset of a ring's `head` index (low half).
pub fn head_of(ring_offset: usize) -> usize {
    ring_offset + 128
}
/// Byte offset of slot `i`'s descriptor.
pub fn slot_of(ring_offset: usize, i: usize) -> usize {
    ring_offset + 192 + 16 * i
}

/// A seL4 notification stand-in: a word of badge bits, OR-ed by `signal`, taken by `wait`.
pub struct Notif {
    bits: Mutex<u64>,
    cv: Condvar,
}

impl Notif {
    pub fn new() -> Self {
        Notif { bits: Mutex::new(0), cv: Condvar::new() }
    }
    pub fn signal(&self, badge: u64) {
        *self.bits.lock().unwrap() |= badge;
        self.cv.notify_all();
    }
    pub fn wait(&self) -> u64 {
        let mut bits = self.bits.lock().unwrap();
        while *bits == 0 {
            bits = self.cv.wait(bits).unwrap();
        }
        std::mem::take(&mut *bits)
    }
}

/// Push raw descriptors on a ring, as a hostile producer would.
pub fn push_raw(ring: NetRing<'static>, descs: &[Desc]) {
    let mut p = shared_ring::Producer::attach(ring).unwrap();
    for d in descs {
        p.push(*d).unwrap();
    }
    let _ = p.publish().unwrap();
}
