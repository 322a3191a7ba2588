//! Model tests of the wake-me protocol and the index orderings, with loom.
//!
//! Run with (from the workspace root):
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" cargo test -p shared-ring --release --test loom
//! ```
//!
//! The ring code is the product's: under `--cfg loom` its atomics and fences are loom's. An seL4
//! notification (a sticky binary semaphore) is modelled with a loom mutex and condition variable.
//! A lost wake-up leaves a side blocked forever, which loom reports as a deadlock; a stale slot
//! read shows up as a wrong item. The `should_panic` tests inject a weakening into the very same
//! code and check that the model catches it, so these tests can fail.
#![cfg(loom)]

use loom::sync::{Condvar, Mutex};
use loom::thread;
use shared_ring::sync::{AtomicU32, ModelFault};
use shared_ring::{Consumer, Notify, Producer, Ring, RingError, RingHeader, Wait};

/// A seL4 notification: `signal` sets the word, `wait` blocks until it is set and clears it.
struct Notification {
    word: Mutex<bool>,
    cv: Condvar,
}

impl Notification {
    fn new() -> Self {
        Notification { word: Mutex::new(false), cv: Condvar::new() }
    }

    fn signal(&self) {
        *self.word.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn wait(&self) {
        let mut set = self.word.lock().unwrap();
        while !*set {
            set = self.cv.wait(set).unwrap();
        }
        *set = false;
    }
}

/// Enough for every scenario below: the bugs the fault tests inject need two preemptions.
const PREEMPTION_BOUND: usize = 4;

/// What both "processes" map: one ring and a notification for each side.
struct Shared {
    header: RingHeader,
    slots: Vec<AtomicU32>,
    consumer_wakes: Notification,
    producer_wakes: Notification,
}

impl Shared {
    /// Leaked rather than reference-counted: when loom reports a deadlock it unwinds the blocked
    /// threads, and dropping a loom `Arc` during that unwinding aborts the test process instead
    /// of failing the test. A few hundred bytes per explored execution is fine.
    fn new<const N: usize>() -> &'static Self {
        let shared = Shared {
            header: RingHeader::new(),
            slots: (0..Ring::<u32, N>::SLOT_WORDS).map(|_| AtomicU32::new(0)).collect(),
            consumer_wakes: Notification::new(),
            producer_wakes: Notification::new(),
        };
        let shared = Box::leak(Box::new(shared));
        Ring::<u32, N>::new(&shared.header, &shared.slots).unwrap().init(1.try_into().unwrap());
        shared
    }

    fn ring<const N: usize>(&self) -> Ring<'_, u32, N> {
        Ring::new(&self.header, &self.slots).unwrap()
    }
}

/// The producer process: push `1..=items`, waiting for space with the protocol when full.
fn produce<const N: usize>(shared: &Shared, items: u32, fault: ModelFault) {
    let mut tx = Producer::attach(shared.ring::<N>()).unwrap().with_model_fault(fault);
    for item in 1..=items {
        loop {
            match tx.push(item) {
                Ok(()) => break,
                Err(RingError::Full) => {
                    if tx.publish().unwrap() == Notify::Signal {
                        shared.consumer_wakes.signal();
                    }
                    if tx.prepare_wait().unwrap() == Wait::Block {
                        shared.producer_wakes.wait();
                    }
                }
                Err(e) => panic!("producer: {e}"),
            }
        }
        // Publish every item on its own: the most interleavings per item.
        if tx.publish().unwrap() == Notify::Signal {
            shared.consumer_wakes.signal();
        }
    }
}

/// The consumer process: pop until `items` have arrived, in order, waiting with the protocol.
fn consume<const N: usize>(shared: &Shared, items: u32, fault: ModelFault) {
    let mut rx = Consumer::attach(shared.ring::<N>()).unwrap().with_model_fault(fault);
    let mut next = 1;
    while next <= items {
        match rx.pop().unwrap() {
            Some(item) => {
                assert_eq!(item, next, "stale or reordered item");
                next += 1;
                // Release each slot at once, so a waiting producer can be woken.
                if rx.release().unwrap() == Notify::Signal {
                    shared.producer_wakes.signal();
                }
            }
            None => {
                if rx.prepare_wait().unwrap() == Wait::Block {
                    shared.consumer_wakes.wait();
                }
            }
        }
    }
    assert_eq!(rx.pop().unwrap(), None, "more items than were pushed");
}

fn run<const N: usize>(items: u32, fault: ModelFault) {
    let mut model = loom::model::Builder::new();
    // Bounded preemptions keep the search finite on two cores; LOOM_MAX_PREEMPTIONS overrides.
    if model.preemption_bound.is_none() {
        model.preemption_bound = Some(PREEMPTION_BOUND);
    }
    model.check(move || {
        let shared = Shared::new::<N>();
        let producer = thread::spawn(move || produce::<N>(shared, items, fault));
        consume::<N>(shared, items, fault);
        producer.join().unwrap();
    });
}

/// The consumer waits on an empty ring; every publish it sleeps through wakes it.
#[test]
fn consumer_wakeup_is_never_lost() {
    run::<2>(3, ModelFault::None);
}

/// Capacity 1: both sides wait in turn (the producer for space, the consumer for items).
#[test]
fn producer_and_consumer_wakeups_are_never_lost() {
    run::<1>(3, ModelFault::None);
}

/// Without the SeqCst fences the store-buffering outcome is possible: the consumer re-checks and
/// still sees the old tail while the producer reads the old flag. Nobody signals; loom finds the
/// consumer blocked forever.
#[test]
#[should_panic(expected = "deadlock")]
fn without_the_fences_a_wakeup_is_lost() {
    run::<2>(1, ModelFault::NoWakeupFence);
}

/// The same weakening on the producer-waits-for-space side.
#[test]
#[should_panic(expected = "deadlock")]
fn without_the_fences_a_space_wakeup_is_lost() {
    run::<1>(2, ModelFault::NoWakeupFence);
}

/// With relaxed index stores and loads, the consumer can see the new tail before the slot's
/// content and read a stale item.
#[test]
#[should_panic(expected = "stale or reordered item")]
fn relaxed_indices_deliver_stale_items() {
    run::<2>(1, ModelFault::RelaxedIndices);
}

/// A peer re-initialising the ring while this side works is reported as a restart
/// (`EpochChanged`), never as corruption, although the re-initialisation resets the indices
/// under this side's feet; afterwards this side re-attaches to the fresh ring.
#[test]
fn concurrent_reinit_reads_as_a_restart_not_corruption() {
    let mut model = loom::model::Builder::new();
    if model.preemption_bound.is_none() {
        model.preemption_bound = Some(PREEMPTION_BOUND);
    }
    model.check(|| {
        let shared = Shared::new::<2>();
        let mut tx = Producer::attach(shared.ring::<2>()).unwrap();
        tx.push(7).unwrap();
        tx.push(8).unwrap();
        let _ = tx.publish().unwrap();
        let mut rx = Consumer::attach(shared.ring::<2>()).unwrap();
        let consumer = thread::spawn(move || {
            for _ in 0..3 {
                match rx.pop().and_then(|item| rx.release().map(|_| item)) {
                    Ok(Some(item)) => assert!(item == 7 || item == 8, "item {item} is not from epoch 1"),
                    Ok(None) => {}
                    Err(RingError::EpochChanged { attached: 1, .. }) => {}
                    Err(e) => panic!("re-initialisation misreported as {e:?}"),
                }
            }
            rx
        });
        // The driver restarts: the ring is re-initialised with epoch 2.
        shared.ring::<2>().init(2.try_into().unwrap());
        let mut rx = consumer.join().unwrap();
        // The epoch is 2 now, whatever the consumer saw meanwhile.
        assert_eq!(rx.pop(), Err(RingError::EpochChanged { attached: 1, now: 2 }));
        rx.reattach().unwrap();
        assert_eq!(rx.pop(), Ok(None));
    });
}
