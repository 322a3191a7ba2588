//! Statistics: lock-free, striped, summed on read.
//!
//! Each counter exists once per stripe (a cache-line-padded block of atomics); a writer bumps the
//! stripe it is given (its worker index or a hash of its client), with a `Relaxed` add, so two
//! threads counting never share a cache line. A reader sums every stripe. As in the FreeBSD seed's
//! "atomic statistics", no lock is ever taken to count.

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::sync::{AtomicU64, CachePadded, Ordering};

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
/// Plain atomics (`core`'s, also under loom: no modelled protocol uses them).
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Frames dropped between the driver's rings and the workers (a full worker queue, a full
    /// transmit ring, no transmit buffer).
    pub ring_drops: core::sync::atomic::AtomicU64,
    /// Times the driver restarted (a new ring epoch after the first).
    pub driver_restarts: core::sync::atomic::AtomicU64,
    /// Times the transmit watchdog signalled the driver again (frames waiting, no progress).
    pub tx_kicks: core::sync::atomic::AtomicU64,
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
}
