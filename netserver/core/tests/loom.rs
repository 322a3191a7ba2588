//! Model checks (loom) of the port allocator, the accept queue, the wake-up path and the restart
//! ring's seqlock.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p netserver-core --test loom` (tests/loom_models.rs
//! does exactly that, in target/loom, as part of the normal test run). Under `--cfg loom` every
//! leveled lock and every atomic of the crate is loom's, so loom explores the product code.

#![cfg(loom)]

use std::sync::Arc as StdArc;

use loom::sync::{Condvar, Mutex as LMutex};
use loom::thread;
use netserver_core::accept::AcceptQueue;
use netserver_core::lock::{Listen, Mutex, SockBuf};
use netserver_core::port::{PortAllocator, PortClass, PortConfig};
use netserver_core::stats::RecentRestarts;
use netserver_core::wake::{Signal, WaitSlot, HUP, IN};

type Raw = parking_lot::RawMutex;

/// A sticky binary semaphore built from loom primitives (what a notification is).
#[derive(Default)]
struct LSignal {
    set: LMutex<bool>,
    cv: Condvar,
}

impl Signal for LSignal {
    fn signal(&self) {
        *self.set.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl LSignal {
    fn wait(&self) {
        let mut g = self.set.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
        *g = false;
    }
}

#[test]
fn port_allocator_never_hands_out_a_port_twice_and_frees_exactly_once() {
    loom::model(|| {
        let cfg = PortConfig { ephemeral_lo: 1000, ephemeral_hi: 1001, shards_per_class: 2, global_lock: false };
        let a = StdArc::new(PortAllocator::<Raw>::new(cfg).unwrap());
        let a2 = a.clone();
        let t = thread::spawn(move || a2.ephemeral(PortClass::TCP4, 0, false).ok());
        let mine = a.ephemeral(PortClass::TCP4, 0, false).ok();
        let theirs = t.join().unwrap();
        // Two ports, two callers: both succeed and differ, whatever the interleaving.
        let (m, o) = (mine.expect("a port"), theirs.expect("a port"));
        assert_ne!(m.port(), o.port());
        // A third allocation finds nothing.
        assert!(a.ephemeral(PortClass::TCP4, 1, false).is_err());
        // Share, time-wait and drop concurrently; everything comes back exactly once.
        let shared = m.share();
        let t = thread::spawn(move || drop(shared));
        let tw = o.into_time_wait();
        drop(m);
        t.join().unwrap();
        assert_eq!(a.in_use(PortClass::TCP4), 1, "only the TIME-WAIT reference is left");
        drop(tw);
        assert_eq!(a.total_in_use(), 0);
    });
}

#[test]
fn explicit_binds_race_cleanly() {
    loom::model(|| {
        let a = StdArc::new(PortAllocator::<Raw>::new(PortConfig { shards_per_class: 1, ..PortConfig::default() }).unwrap());
        let a2 = a.clone();
        let t = thread::spawn(move || a2.bind(PortClass::UDP6, 53, false, 0).ok());
        let mine = a.bind(PortClass::UDP6, 53, false, 0).ok();
        let theirs = t.join().unwrap();
        assert!(mine.is_some() != theirs.is_some(), "exactly one bind wins");
        drop((mine, theirs));
        assert!(a.is_free(PortClass::UDP6, 53));
    });
}

/// A worker completes a connection into the accept queue while the client accepts (arming a
/// wake-up when the queue is empty) and another thread closes the listener: the connection is
/// accepted, handed back by close, or bounced to the worker, exactly once; no reservation leaks;
/// and the client never sleeps through a pending connection or the close.
#[test]
fn accept_queue_and_wakeup() {
    #[derive(Debug, PartialEq)]
    enum W {
        NoSlot,
        Queued,
        Bounced,
    }
    loom::model(|| {
        let q = StdArc::new(Mutex::<Listen, AcceptQueue<u32>, Raw>::new(AcceptQueue::new(1)));
        let slot = StdArc::new(WaitSlot::<Raw>::new());
        let sig = StdArc::new(LSignal::default());
        let dyn_sig: std::sync::Arc<dyn Signal> = sig.clone();

        // Worker: reserve (a SYN arrived), then complete (handshake done).
        let (wq, wslot) = (q.clone(), slot.clone());
        let worker = thread::spawn(move || {
            if !wq.lock().try_reserve() {
                return W::NoSlot;
            }
            let res = {
                let mut g = wq.lock();
                g.complete(7).map(|_| wslot.mark(IN))
            };
            match res {
                Ok(bits) => {
                    wslot.wake(bits);
                    W::Queued
                }
                Err(_) => W::Bounced, // the worker aborts it
            }
        });

        // Closer: the listener's close drains the queue and signals hang-up (as close_socket does).
        let (cq, cslot) = (q.clone(), slot.clone());
        let closer = thread::spawn(move || {
            let drained: Vec<u32> = cq.lock().close().into_iter().collect();
            cslot.set(HUP);
            drained
        });

        // Client: accept until it gets the connection or sees the listener closed.
        let accepted = loop {
            let (conn, closed) = {
                let mut g = q.lock();
                let c = g.pop();
                if g.is_empty() {
                    slot.clear(IN);
                }
                (c, g.is_closed())
            };
            if conn.is_some() || closed {
                break conn;
            }
            if slot.arm(IN, &dyn_sig) == 0 {
                sig.wait();
            }
        };
        let w = worker.join().unwrap();
        let drained = closer.join().unwrap();
        match w {
            W::Queued => assert_eq!(usize::from(accepted.is_some()) + drained.len(), 1, "accepted or drained, once"),
            W::Bounced | W::NoSlot => assert!(accepted.is_none() && drained.is_empty()),
        }
        assert_eq!(q.lock().reserved(), 0, "reservation leaked");
    });
}

/// The wake-up protocol of `wake.rs`: arm, then re-check; notify sets the bit, then looks for a
/// waiter. The waiter must never sleep forever (loom reports a deadlock if it does).
#[test]
fn wakeup_is_never_lost() {
    loom::model(|| {
        let buf = StdArc::new(Mutex::<SockBuf, u32, Raw>::new(0));
        let slot = StdArc::new(WaitSlot::<Raw>::new());
        let sig = StdArc::new(LSignal::default());
        let dyn_sig: std::sync::Arc<dyn Signal> = sig.clone();
        let (b2, s2) = (buf.clone(), slot.clone());
        let producer = thread::spawn(move || {
            let bits = {
                let mut g = b2.lock();
                *g += 1;
                s2.mark(IN)
            };
            s2.wake(bits);
        });
        // Consumer: recv; on EAGAIN arm and sleep.
        loop {
            {
                let mut g = buf.lock();
                if *g > 0 {
                    *g -= 1;
                    slot.clear(IN);
                    break;
                }
            }
            if slot.arm(IN, &dyn_sig) == 0 {
                sig.wait();
            }
        }
        producer.join().unwrap();
    });
}

/// The same consumer with the classic bug (check readiness, *then* register, no re-check):
/// loom finds the interleaving where the wake-up is lost and the consumer sleeps forever.
/// This shows the model test above can fail.
#[test]
#[should_panic(expected = "deadlock")]
fn wakeup_without_recheck_is_lost() {
    loom::model(|| {
        let slot = StdArc::new(WaitSlot::<Raw>::new());
        let sig = StdArc::new(LSignal::default());
        let dyn_sig: std::sync::Arc<dyn Signal> = sig.clone();
        let s2 = slot.clone();
        let producer = thread::spawn(move || {
            s2.set(IN);
        });
        if slot.readiness() & IN == 0 {
            let _ = slot.arm(IN, &dyn_sig); // registers, but the result is ignored: the bug
            sig.wait();
        }
        producer.join().unwrap();
    });
}

/// The restart ring's seqlock (`stats::RecentRestarts`): one writer records restarts (the fifth
/// reuses the first slot) while a reader reads. Whatever the interleaving and whichever stores
/// the reader's loads see, every record it gets is one whole record, newest first; once the
/// writer is done the last four are all there.
#[test]
fn restart_records_are_never_torn() {
    fn rec(k: u32) -> net_api::RestartStat {
        let b = k as u8;
        net_api::RestartStat { restart: k, cause: [b; 16], fault_to_running_us: u64::from(k) * 3, fault_to_traffic_us: !u64::from(k) }
    }
    // Unbounded, the writer's 50 and the reader's 32 atomic operations keep loom busy for more
    // than 5 minutes; 2 preemptions already find a missing acquire fence or a missing sequence
    // check (tried), 3 take about a second.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let r = StdArc::new(RecentRestarts::default());
        let w = r.clone();
        let writer = thread::spawn(move || {
            for k in 1..=5 {
                w.record(&rec(k));
            }
        });
        let seen = r.recent();
        let mut last = u32::MAX;
        for s in seen.iter() {
            assert_eq!(*s, rec(s.restart), "torn record in {seen:?}");
            assert!(s.restart < last, "not newest first: {seen:?}");
            last = s.restart;
        }
        writer.join().unwrap();
        let after: Vec<u32> = r.recent().iter().map(|s| s.restart).collect();
        assert_eq!(after, [5, 4, 3, 2]);
    });
}
