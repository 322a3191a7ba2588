//! Two threads standing in for two processes move a million buffers through a pair of rings
//! (data out, buffers back) in heap memory, blocking with the wake-me protocol on both sides.
//!
//! The sender owns the buffers (a `BufferPool`) and writes a sequence number and a
//! pattern into each; the receiver checks every byte, then returns the buffer. Both rings are
//! smaller than the pool, so both sides block both for items and for space. A lost wake-up shows
//! up as a wait that gets no signal for a long time, and fails the test instead of hanging it.
#![cfg(not(loom))]

mod common;

use core::num::NonZeroU32;
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

use common::{RegionMem, RingMem};
use shared_ring::{BufferPool, Consumer, Desc, Notify, Producer, Region, Ring, RingError, Wait};

const TOTAL: u64 = 1_000_000;
const RING: usize = 16;
const BUFFERS: usize = 64;
const BUF: u32 = 256;
/// Far longer than any scheduling delay: a wait this long without a signal is a lost wake-up.
const LOST_WAKEUP: Duration = Duration::from_secs(60);

/// An seL4 notification: a sticky binary semaphore.
struct Notification {
    set: Mutex<bool>,
    cv: Condvar,
}

impl Notification {
    fn new() -> Self {
        Notification { set: Mutex::new(false), cv: Condvar::new() }
    }

    fn signal(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self, who: &str) {
        let set = self.set.lock().unwrap();
        let (mut set, timeout) = self.cv.wait_timeout_while(set, LOST_WAKEUP, |s| !*s).unwrap();
        assert!(!timeout.timed_out(), "{who}: lost wake-up (no signal for {LOST_WAKEUP:?})");
        *set = false;
    }
}

fn ring<'a>(mem: &'a RingMem) -> Ring<'a, Desc, RING> {
    let (base, len) = mem.raw();
    // SAFETY: the memory is atomics only, outlives the ring, and is only accessed atomically.
    unsafe { Ring::from_raw(base, len) }.unwrap()
}

fn payload_len(seq: u64) -> u32 {
    8 + (seq % u64::from(BUF - 8)) as u32
}

fn pattern(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

#[derive(Default, Debug)]
struct Counts {
    blocks: u64,
    signals: u64,
}

/// The buffer owner: fill buffers, lend them on `out`, take them back from `back`.
fn sender(
    mut region: Region<'_>,
    mut out: Producer<'_, Desc, RING>,
    mut back: Consumer<'_, Desc, RING>,
    me: &Notification,
    peer: &Notification,
) -> Counts {
    let mut pool = BufferPool::<BUFFERS>::new();
    assert_eq!(pool.add_all(&region), BUFFERS as u32);
    let mut counts = Counts::default();
    let mut sent = 0u64;
    while sent < TOTAL || pool.lent() > 0 {
        let mut progress = false;
        while let Some(d) = back.pop().unwrap() {
            let d = pool.reclaim(d).unwrap();
            assert_eq!(d.len, 0, "the receiver returns buffers emptied");
            pool.free(d.id).unwrap();
            progress = true;
        }
        if back.release().unwrap() == Notify::Signal {
            peer.signal();
            counts.signals += 1;
        }
        let mut out_full = false;
        while sent < TOTAL {
            let Some(buf) = pool.alloc() else { break };
            let len = payload_len(sent);
            let bytes = region.slice_mut(&Desc::new(buf.offset, len, buf.id, 0)).unwrap();
            bytes[..8].copy_from_slice(&sent.to_le_bytes());
            for (i, b) in bytes[8..].iter_mut().enumerate() {
                *b = pattern(sent, i);
            }
            match pool.lend(buf.id, len, 0, &mut out) {
                Ok(()) => {
                    sent += 1;
                    progress = true;
                }
                Err(RingError::Full) => {
                    pool.free(buf.id).unwrap();
                    out_full = true;
                    break;
                }
                Err(e) => panic!("sender: {e}"),
            }
        }
        if out.publish().unwrap() == Notify::Signal {
            peer.signal();
            counts.signals += 1;
        }
        if !progress {
            // Waiting for returned buffers, and for space if that is what stopped us.
            let mut block = back.prepare_wait().unwrap() == Wait::Block;
            if out_full {
                block &= out.prepare_wait().unwrap() == Wait::Block;
            }
            if block {
                counts.blocks += 1;
                me.wait("sender");
            }
        }
    }
    assert_eq!((pool.lent(), pool.available()), (0, BUFFERS as u32));
    counts
}

/// The peer: check each buffer's bytes, hand it back emptied.
fn receiver(
    region: Region<'_>,
    mut inbox: Consumer<'_, Desc, RING>,
    mut back: Producer<'_, Desc, RING>,
    me: &Notification,
    peer: &Notification,
) -> Counts {
    let mut counts = Counts::default();
    let mut expected = 0u64;
    let mut pending: Option<Desc> = None;
    while expected < TOTAL {
        let mut progress = false;
        loop {
            if pending.is_none() {
                let Some(d) = inbox.pop().unwrap() else { break };
                let bytes = region.slice(&d).unwrap();
                assert_eq!(d.len, payload_len(expected));
                assert_eq!(bytes[..8], expected.to_le_bytes(), "out of order or lost");
                assert!(bytes[8..].iter().enumerate().all(|(i, b)| *b == pattern(expected, i)), "corrupt payload");
                expected += 1;
                pending = Some(Desc { len: 0, ..d });
                progress = true;
            }
            match back.push(pending.unwrap_or_default()) {
                Ok(()) => pending = None,
                Err(RingError::Full) => break,
                Err(e) => panic!("receiver: {e}"),
            }
        }
        if inbox.release().unwrap() == Notify::Signal {
            peer.signal();
            counts.signals += 1;
        }
        if back.publish().unwrap() == Notify::Signal {
            peer.signal();
            counts.signals += 1;
        }
        if !progress {
            let block = if pending.is_some() {
                back.prepare_wait().unwrap() == Wait::Block
            } else {
                inbox.prepare_wait().unwrap() == Wait::Block
            };
            if block {
                counts.blocks += 1;
                me.wait("receiver");
            }
        }
    }
    // Hand back the last buffer.
    if let Some(d) = pending {
        loop {
            match back.push(d) {
                Ok(()) => break,
                Err(RingError::Full) => {
                    if back.prepare_wait().unwrap() == Wait::Block {
                        me.wait("receiver");
                    }
                }
                Err(e) => panic!("receiver: {e}"),
            }
        }
    }
    if back.publish().unwrap() == Notify::Signal {
        peer.signal();
    }
    counts
}

#[test]
fn a_million_buffers_with_wakeups() {
    let out_mem = RingMem::new(Ring::<Desc, RING>::BYTES);
    let back_mem = RingMem::new(Ring::<Desc, RING>::BYTES);
    let data = RegionMem::new(BUFFERS * BUF as usize);
    let (out_ring, back_ring) = (ring(&out_mem), ring(&back_mem));
    out_ring.init(NonZeroU32::MIN);
    back_ring.init(NonZeroU32::MIN);
    let (sender_wakes, receiver_wakes) = (Notification::new(), Notification::new());

    let (base, len) = data.raw();
    // SAFETY: the two regions stand for the two processes' mappings of one buffer area. The
    // buffer hand-over through the rings (release/acquire) keeps their slices of any one buffer
    // from ever being alive at the same time, which is what the contract asks within a process.
    let (sender_region, receiver_region) =
        unsafe { (Region::from_raw(base, len, BUF).unwrap(), Region::from_raw(base, len, BUF).unwrap()) };

    let (s, r) = thread::scope(|scope| {
        let s = scope.spawn(|| {
            let out = Producer::attach(out_ring).unwrap();
            let back = Consumer::attach(back_ring).unwrap();
            sender(sender_region, out, back, &sender_wakes, &receiver_wakes)
        });
        let r = scope.spawn(|| {
            let inbox = Consumer::attach(out_ring).unwrap();
            let back = Producer::attach(back_ring).unwrap();
            receiver(receiver_region, inbox, back, &receiver_wakes, &sender_wakes)
        });
        (s.join().unwrap(), r.join().unwrap())
    });
    assert!(out_mem.canary_intact() && back_mem.canary_intact());
    // Informational (timing-dependent, so not asserted): how often each side slept.
    eprintln!("sender {s:?}, receiver {r:?}");
}
