//! Statistics: lock-free, striped, summed on read.
//!
//! Each counter exists once per stripe (a cache-line-padded block of atomics); a writer bumps the
//! stripe it is given (its worker index or a hash of its client), with a `Relaxed` add, so two
//! threads counting never share a cache line. A reader sums every stripe. As in the FreeBSD seed's
//! "atomic statistics", no lock is ever taken to count.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::sync::{fence, spin_loop, AtomicU64, CachePadded, Ordering};

macro_rules! counters {
    ($($(#[$m:meta])* $name:ident,)*) => {
        /// A counter name.
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($(#[$m])* $name,)* }

        const COUNT: usize = [$(Counter::$name),*].len();

        /// A sum of every stripe, at one moment (each counter read once; not a consistent cut).
        #[allow(missing_docs)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot { $($(#[$m])* pub $name: u64,)* }

        impl Snapshot {
            fn from_array(a: [u64; COUNT]) -> Snapshot {
                let mut it = a.into_iter();
                Snapshot { $($name: it.next().unwrap_or(0),)* }
            }
        }
    };
}

counters! {
    /// Sockets created (socket() and accepted children).
    sockets_created,
    /// Socket objects freed.
    sockets_freed,
    /// TCP connects started.
    tcp_active_opens,
    /// TCP connections established from a listener.
    tcp_passive_opens,
    /// Connections that ended in a reset (sent or received).
    tcp_resets,
    /// SYNs dropped because the listener's backlog was full.
    syn_backlog_drops,
    /// Frames received by workers.
    frames_in,
    /// Frames sent by workers.
    frames_out,
    /// Frames dropped by the ingress filter (malformed, backlog, duplicate SYN).
    frames_filtered,
    /// UDP datagrams delivered to sockets.
    udp_in,
    /// UDP datagrams sent.
    udp_out,
    /// UDP datagrams dropped (receive queue full or unsendable).
    udp_drops,
    /// Ports handed out (ephemeral or bound).
    ports_allocated,
    /// Client requests handled.
    requests,
    /// Malformed client requests.
    malformed_requests,
    /// Worker loop iterations.
    worker_iterations,
}

/// What the platform shell counts about the frame device, reported in `Request::Stats`.
/// The counters are plain atomics (`core`'s, also under loom: no modelled protocol uses them);
/// `restarts` is a seqlock ring whose atomics are loom's under loom (modelled in tests/loom.rs).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Frames dropped between the driver's rings and the workers (a full worker queue, a full
    /// transmit ring, no transmit buffer).
    pub ring_drops: core::sync::atomic::AtomicU64,
    /// Times the driver restarted (a new ring epoch after the first).
    pub driver_restarts: core::sync::atomic::AtomicU64,
    /// Times the transmit watchdog signalled the driver again (frames waiting, no progress).
    pub tx_kicks: core::sync::atomic::AtomicU64,
    /// The most recent driver restarts' details (cause, recovery times).
    pub restarts: RecentRestarts,
}

/// Restarts [`RecentRestarts`] keeps: as many as a `Stats` answer carries.
pub const RECENT_RESTARTS: usize = net_api::MAX_STATS_RESTARTS;

/// How often a reader re-reads a slot it found being written before leaving that record out.
/// The writer (the net server's rx thread) runs above the readers (workers), so a slot is seen
/// mid-write only when the writer is on another core, for a few stores; a bound still keeps a
/// reader from spinning on a writer preempted mid-record.
const READ_TRIES: usize = 64;

/// Words of one record: restart number, the cause's 16 bytes (two words), two durations.
const WORDS: usize = 5;

/// One slot of [`RecentRestarts`]: a sequence word and the record's words.
///
/// `seq` is 0 while the slot was never written, `2n + 1` while record number `n` (counted from
/// 0 over all slots) is being written, and `2n + 2` once it is complete: each write moves it to a
/// value it never had before, so a reader that sees the same even value before and after
/// reading the words has read one record, whole.
#[derive(Debug)]
struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl Default for Slot {
    fn default() -> Slot {
        Slot { seq: AtomicU64::new(0), words: core::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

/// The last [`RECENT_RESTARTS`] driver restarts, lock-free: one writer (the rx thread, the only
/// caller of [`RecentRestarts::record`]), any number of readers ([`RecentRestarts::recent`],
/// from workers answering `Stats`), never blocked by each other.
///
/// A ring of slots, each a seqlock built from atomics only (no `unsafe`, every word an
/// `AtomicU64`): the writer makes the slot's sequence odd, issues a release fence, stores the
/// words, then stores the new even sequence with release; a reader loads the sequence with
/// acquire, the words, issues an acquire fence and loads the sequence again, and keeps the
/// record only if both loads saw the same even value (H.-J. Boehm, "Can seqlocks get along with
/// programming language memory models?", 2012). If a reader's word load saw a store of a later
/// write, the fences order that write's odd sequence before the second load, which then
/// differs; if the first load saw a write's even sequence, every word of that write is visible.
///
/// Two concurrent writers are not supported (they could interleave in one slot); the rx thread
/// is the only one, and it records under the NIC lock besides.
#[derive(Debug)]
pub struct RecentRestarts {
    /// Records written so far (the writer's own counter).
    written: AtomicU64,
    slots: [Slot; RECENT_RESTARTS],
}

impl Default for RecentRestarts {
    fn default() -> RecentRestarts {
        RecentRestarts { written: AtomicU64::new(0), slots: core::array::from_fn(|_| Slot::default()) }
    }
}

fn to_words(r: &net_api::RestartStat) -> [u64; WORDS] {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    for (d, s) in lo.iter_mut().chain(hi.iter_mut()).zip(r.cause.iter()) {
        *d = *s;
    }
    [u64::from(r.restart), u64::from_le_bytes(lo), u64::from_le_bytes(hi), r.fault_to_running_us, r.fault_to_traffic_us]
}

fn from_words(w: [u64; WORDS]) -> net_api::RestartStat {
    let [restart, lo, hi, running, traffic] = w;
    let mut cause = [0u8; net_api::RESTART_CAUSE_LEN];
    for (d, s) in cause.iter_mut().zip(lo.to_le_bytes().into_iter().chain(hi.to_le_bytes())) {
        *d = s;
    }
    net_api::RestartStat { restart: restart as u32, cause, fault_to_running_us: running, fault_to_traffic_us: traffic }
}

impl RecentRestarts {
    /// Records one restart, replacing the oldest of the last [`RECENT_RESTARTS`]. Wait-free.
    /// Only one thread may call this (see the type's docs).
    pub fn record(&self, r: &net_api::RestartStat) {
        let n = self.written.load(Ordering::Relaxed);
        self.written.store(n.wrapping_add(1), Ordering::Relaxed);
        let Some(slot) = self.slots.get((n % RECENT_RESTARTS as u64) as usize) else { return };
        slot.seq.store(n.wrapping_mul(2).wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (a, w) in slot.words.iter().zip(to_words(r)) {
            a.store(w, Ordering::Relaxed);
        }
        slot.seq.store(n.wrapping_mul(2).wrapping_add(2), Ordering::Release);
    }

    /// Record number and contents of `slot`, or `None` if it was never written or was being
    /// rewritten on each of [`READ_TRIES`] attempts.
    fn read(slot: &Slot) -> Option<(u64, net_api::RestartStat)> {
        for _ in 0..READ_TRIES {
            let before = slot.seq.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before % 2 == 1 {
                spin_loop();
                continue;
            }
            let words: [u64; WORDS] = core::array::from_fn(|i| slot.words.get(i).map_or(0, |a| a.load(Ordering::Relaxed)));
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == before {
                return Some((before / 2 - 1, from_words(words)));
            }
        }
        None
    }

    /// The recorded restarts, newest first, each one whole (never a mix of two records). Lock-
    /// free; a record being written at this very moment may be left out, and a record written
    /// during the call may replace an older one in the list.
    pub fn recent(&self) -> net_api::BoundedList<net_api::RestartStat, RECENT_RESTARTS> {
        let mut found: [(u64, net_api::RestartStat); RECENT_RESTARTS] = Default::default();
        let mut n = 0;
        for slot in &self.slots {
            if let (Some(r), Some(f)) = (Self::read(slot), found.get_mut(n)) {
                *f = r;
                n += 1;
            }
        }
        let found = found.get_mut(..n).unwrap_or(&mut []);
        found.sort_unstable_by_key(|f| core::cmp::Reverse(f.0));
        let mut list = net_api::BoundedList::new();
        for (_, r) in found.iter() {
            let _ = list.push(*r);
        }
        list
    }
}

/// One stripe: a cache-line-aligned block of every counter.
pub struct Stripe(CachePadded<[AtomicU64; COUNT]>);

impl Stripe {
    /// Adds `n` to `c`.
    #[inline]
    pub fn add(&self, c: Counter, n: u64) {
        if let Some(a) = self.0 .0.get(c as usize) {
            a.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Striped counters. Each stripe is its own `Arc`, so an object that counts on drop (a socket)
/// keeps only its stripe alive, and threads on different stripes share no reference count.
pub struct Stats {
    stripes: Vec<Arc<Stripe>>,
}

impl Stats {
    /// `stripes` independent blocks (at least 1).
    pub fn new(stripes: usize) -> Stats {
        let n = stripes.max(1);
        Stats { stripes: (0..n).map(|_| Arc::new(Stripe(CachePadded(core::array::from_fn(|_| AtomicU64::new(0)))))).collect() }
    }

    /// Stripe `hint % stripes`.
    pub fn stripe(&self, hint: usize) -> Option<&Arc<Stripe>> {
        self.stripes.get(hint % self.stripes.len().max(1))
    }

    /// Adds `n` to `c` in stripe `hint % stripes`.
    #[inline]
    pub fn add(&self, hint: usize, c: Counter, n: u64) {
        if let Some(stripe) = self.stripe(hint) {
            stripe.add(c, n);
        }
    }

    /// Adds 1.
    #[inline]
    pub fn inc(&self, hint: usize, c: Counter) {
        self.add(hint, c, 1);
    }

    /// Stripe `hint % stripes` alone (a worker's frame counters live in the stripe of its index).
    pub fn stripe_snapshot(&self, hint: usize) -> Snapshot {
        let mut sum = [0u64; COUNT];
        if let Some(s) = self.stripe(hint) {
            for (acc, a) in sum.iter_mut().zip(s.0 .0.iter()) {
                *acc = a.load(Ordering::Relaxed);
            }
        }
        Snapshot::from_array(sum)
    }

    /// Sums every stripe.
    pub fn snapshot(&self) -> Snapshot {
        let mut sum = [0u64; COUNT];
        for s in &self.stripes {
            for (acc, a) in sum.iter_mut().zip(s.0 .0.iter()) {
                *acc = acc.wrapping_add(a.load(Ordering::Relaxed));
            }
        }
        Snapshot::from_array(sum)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn stripes_sum_on_read() {
        let s = Stats::new(4);
        std::thread::scope(|sc| {
            for t in 0..4 {
                let s = &s;
                sc.spawn(move || {
                    for _ in 0..1000 {
                        s.inc(t, Counter::frames_in);
                    }
                });
            }
        });
        s.add(7, Counter::udp_in, 5);
        let snap = s.snapshot();
        assert_eq!(snap.frames_in, 4000);
        assert_eq!(snap.udp_in, 5);
        assert_eq!(snap.frames_out, 0);
    }

    /// Record `k` of the stress test: every field derived from `k`, so a mix of two records shows.
    fn patterned(k: u64) -> net_api::RestartStat {
        let mut cause = [0u8; net_api::RESTART_CAUSE_LEN];
        for (i, c) in cause.iter_mut().enumerate() {
            *c = (k as u8).wrapping_add(i as u8);
        }
        net_api::RestartStat { restart: k as u32, cause, fault_to_running_us: k.wrapping_mul(3), fault_to_traffic_us: !k }
    }

    #[test]
    fn recent_restarts_keep_the_last_four_newest_first() {
        let r = RecentRestarts::default();
        assert!(r.recent().is_empty());
        let page = net_api::RestartStat {
            restart: 1,
            cause: net_api::RestartStat::cause_from_str("page fault"),
            fault_to_running_us: 11_000,
            fault_to_traffic_us: 41_000,
        };
        r.record(&page);
        assert_eq!(r.recent().as_slice(), &[page]);
        // Any cause bytes survive the trip through the words unchanged.
        let odd = net_api::RestartStat { restart: 2, cause: [0xff, b'"', 0, 0x0a, 0x80, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0xc3], fault_to_running_us: 0, fault_to_traffic_us: u64::MAX };
        r.record(&odd);
        assert_eq!(r.recent().as_slice(), &[odd, page]);
        for k in 3..=6 {
            r.record(&patterned(k));
        }
        assert_eq!(r.recent().as_slice(), &[patterned(6), patterned(5), patterned(4), patterned(3)]);
        for k in 7..=9 {
            r.record(&patterned(k));
        }
        let restarts: std::vec::Vec<u32> = r.recent().iter().map(|s| s.restart).collect();
        assert_eq!(restarts, [9, 8, 7, 6]);
    }

    /// One writer records as fast as it can while readers read: every record a reader gets is
    /// one whole record (never words of two), and the list is newest first.
    #[test]
    fn recent_restarts_reader_never_sees_a_torn_record() {
        const WRITES: u64 = 200_000;
        let r = RecentRestarts::default();
        let done = core::sync::atomic::AtomicBool::new(false);
        let (reads, records) = std::thread::scope(|sc| {
            let readers: std::vec::Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        let (mut reads, mut records) = (0u64, 0u64);
                        loop {
                            let finished = done.load(core::sync::atomic::Ordering::Acquire);
                            let list = r.recent();
                            reads += 1;
                            let mut last = u32::MAX;
                            for s in list.iter() {
                                assert_eq!(*s, patterned(u64::from(s.restart)), "torn record");
                                assert!(s.restart < last, "not newest first: {list:?}");
                                last = s.restart;
                                records += 1;
                            }
                            if finished {
                                return (reads, records);
                            }
                        }
                    })
                })
                .collect();
            for k in 1..=WRITES {
                r.record(&patterned(k));
            }
            done.store(true, core::sync::atomic::Ordering::Release);
            readers.into_iter().map(|h| h.join().unwrap()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        });
        assert!(reads > 0 && records > 0);
        // After the writer stopped, the last four are all there.
        let restarts: std::vec::Vec<u32> = r.recent().iter().map(|s| s.restart).collect();
        let w = WRITES as u32;
        assert_eq!(restarts, [w, w - 1, w - 2, w - 3]);
    }
}
