//! Property tests: a hostile peer writing anything into shared memory never makes this side
//! panic or touch memory outside the ring and region; an honest run delivers every item exactly
//! once, in order.
#![cfg(not(loom))]

mod common;

use core::num::NonZeroU32;
use std::collections::VecDeque;

use common::{RegionMem, RingMem};
use proptest::prelude::*;
use shared_ring::{BufferPool, Consumer, Desc, Notify, Producer, Region, Ring, RingError, Wait};
use std::sync::atomic::Ordering;

const N: usize = 8;
const REGION_LEN: usize = 16 * 1024;
const BUF: u32 = 2048;

// Byte offsets in the header (little-endian: the low half of an index word is the index).
const EPOCH: usize = 16;
const TAIL: usize = 64;
const P_FLAG: usize = 72;
const HEAD: usize = 128;
const C_FLAG: usize = 136;

fn ring(mem: &RingMem) -> Ring<'_, Desc, N> {
    let (base, len) = mem.raw();
    // SAFETY: the memory is atomics only, outlives the ring, and is only accessed atomically.
    unsafe { Ring::from_raw(base, len) }.unwrap()
}

/// One step of the honest side or of the hostile world.
#[derive(Clone, Debug)]
enum Op {
    Push(Desc),
    Publish,
    Pop,
    Release,
    ProducerWait,
    ConsumerWait,
    Free,
    Available,
    /// Write any value at any 32-bit word of the ring (header, padding, slots).
    Poke { word: usize, value: u32 },
    /// Nudge an index by a small amount (the interesting edge of the windows).
    Nudge { tail: bool, delta: i32 },
    Reinit,
    ReattachProducer,
    ReattachConsumer,
}

fn desc() -> impl Strategy<Value = Desc> {
    let edge = prop_oneof![Just(0u32), Just(1), Just(BUF - 1), Just(BUF), Just(REGION_LEN as u32), Just(u32::MAX), any::<u32>()];
    (edge.clone(), edge, any::<u32>(), any::<u32>()).prop_map(|(o, l, id, f)| Desc::new(o, l, id, f))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => desc().prop_map(Op::Push),
        2 => Just(Op::Publish),
        4 => Just(Op::Pop),
        2 => Just(Op::Release),
        1 => Just(Op::ProducerWait),
        1 => Just(Op::ConsumerWait),
        1 => Just(Op::Free),
        1 => Just(Op::Available),
        3 => (0..Ring::<Desc, N>::BYTES / 4, any::<u32>()).prop_map(|(word, value)| Op::Poke { word, value }),
        3 => (0..Ring::<Desc, N>::BYTES / 4, prop_oneof![Just(0u32), Just(1), Just(u32::MAX)])
            .prop_map(|(word, value)| Op::Poke { word, value }),
        3 => (any::<bool>(), -(N as i32 + 2)..(N as i32 + 3)).prop_map(|(tail, delta)| Op::Nudge { tail, delta }),
        1 => Just(Op::Reinit),
        1 => Just(Op::ReattachProducer),
        1 => Just(Op::ReattachConsumer),
    ]
}

/// `Region::check`, computed independently with 128-bit arithmetic.
fn reference_check(d: &Desc) -> bool {
    let (off, len) = (d.offset as u128, d.len as u128);
    off + len <= REGION_LEN as u128 && (off % BUF as u128) + len <= BUF as u128
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Both honest endpoints run against one ring while the "hostile peer" writes anything
    /// anywhere in it. Nothing panics (proptest would report it), nothing is written outside the
    /// ring (canary), no count exceeds N, and every descriptor the consumer receives is either
    /// rejected by the region or names bytes inside one buffer of it.
    #[test]
    fn hostile_writes_never_panic_or_escape(ops in prop::collection::vec(op(), 1..200)) {
        let mem = RingMem::new(Ring::<Desc, N>::BYTES);
        let data = RegionMem::new(REGION_LEN);
        let (base, len) = data.raw();
        // SAFETY: the buffer outlives the region; only this region touches it.
        let region = unsafe { Region::from_raw(base, len, BUF) }.unwrap();
        let r = ring(&mem);
        r.init(NonZeroU32::MIN);
        let mut tx = Producer::attach(r).unwrap();
        let mut rx = Consumer::attach(r).unwrap();

        for op in ops {
            match op {
                Op::Push(d) => { let _ = tx.push(d); }
                Op::Publish => { let _ = tx.publish(); }
                Op::Pop => {
                    if let Ok(Some(d)) = rx.pop() {
                        match region.slice(&d) {
                            Ok(bytes) => {
                                prop_assert!(reference_check(&d), "accepted {d:?}");
                                prop_assert!(data.contains(bytes));
                                prop_assert_eq!(bytes.len(), d.len as usize);
                            }
                            Err(e) => {
                                prop_assert!(!reference_check(&d), "rejected {d:?}: {e}");
                                prop_assert!(e.is_peer_fault());
                            }
                        }
                    }
                }
                Op::Release => { let _ = rx.release(); }
                Op::ProducerWait => { let _ = tx.prepare_wait(); }
                Op::ConsumerWait => { let _ = rx.prepare_wait(); }
                Op::Free => if let Ok(n) = tx.free() { prop_assert!(n as usize <= N) },
                Op::Available => if let Ok(n) = rx.available() { prop_assert!(n as usize <= N) },
                Op::Poke { word, value } => mem.word(word * 4).store(value, Ordering::Relaxed),
                Op::Nudge { tail, delta } => {
                    let w = mem.word(if tail { TAIL } else { HEAD });
                    let v = w.load(Ordering::Relaxed);
                    w.store(v.wrapping_add_signed(delta), Ordering::Relaxed);
                }
                Op::Reinit => { r.reinit(); }
                Op::ReattachProducer => { let _ = tx.reattach(); }
                Op::ReattachConsumer => { let _ = rx.reattach(); }
            }
            prop_assert!(mem.canary_intact(), "a write escaped the ring");
            prop_assert!(tx.unpublished() as usize <= N);
            prop_assert!(rx.unreleased() as usize <= N);
        }
    }

    /// A consumer attaching to arbitrary bytes gets an error or a consistent ring, never a panic;
    /// if it attaches, it never reports more than N items.
    #[test]
    fn attaching_to_garbage_is_safe(words in prop::collection::vec(any::<u32>(), Ring::<Desc, N>::BYTES / 4)) {
        let mem = RingMem::new(Ring::<Desc, N>::BYTES);
        for (i, w) in words.iter().enumerate() {
            mem.word(i * 4).store(*w, Ordering::Relaxed);
        }
        let r = ring(&mem);
        if let Ok(mut rx) = Consumer::attach(r) {
            let mut n = 0;
            while let Ok(Some(_)) = rx.pop() {
                n += 1;
                prop_assert!(n <= N);
            }
        }
        if let Ok(mut tx) = Producer::attach(r) {
            for i in 0..=N as u32 {
                if tx.push(Desc::new(i, 0, 0, 0)).is_err() { break; }
            }
            prop_assert!(tx.unpublished() as usize <= N);
        }
        prop_assert!(mem.canary_intact());
    }

    /// `Region::check` accepts exactly the descriptors inside one buffer of the region.
    #[test]
    fn region_check_matches_the_reference(d in desc(), buf in prop_oneof![Just(1u32), Just(BUF), Just(3000), any::<u32>().prop_map(|b| b | 1)]) {
        let data = RegionMem::new(REGION_LEN);
        let (base, len) = data.raw();
        // SAFETY: the buffer outlives the region; only this region touches it.
        let region = unsafe { Region::from_raw(base, len, buf) }.unwrap();
        let (off, l, b) = (d.offset as u128, d.len as u128, buf as u128);
        let expected = off + l <= REGION_LEN as u128 && off % b + l <= b;
        match region.slice(&d) {
            Ok(s) => {
                prop_assert!(expected);
                prop_assert!(data.contains(s));
                prop_assert_eq!(s.as_ptr() as usize - base as usize, d.offset as usize);
            }
            Err(_) => prop_assert!(!expected),
        }
    }

    /// The pool takes back exactly the buffers it lent, once each, with lengths up to the
    /// recorded one, and always answers with its own recorded offset.
    #[test]
    fn pool_accepts_exactly_what_it_lent(
        lends in prop::collection::vec(0u32..8, 0..8),
        returns in prop::collection::vec((0u32..12, prop_oneof![Just(0u32), Just(BUF), Just(BUF + 1), any::<u32>()], any::<u32>()), 0..24),
    ) {
        let data = RegionMem::new(REGION_LEN);
        let (base, len) = data.raw();
        // SAFETY: the buffer outlives the region; only this region touches it.
        let region = unsafe { Region::from_raw(base, len, BUF) }.unwrap();
        let mut pool = BufferPool::<8>::new();
        prop_assert_eq!(pool.add_all(&region), 8);
        let mem = RingMem::new(Ring::<Desc, N>::BYTES);
        let r = ring(&mem);
        r.init(NonZeroU32::MIN);
        let mut tx = Producer::attach(r).unwrap();

        let mut lent = [false; 8];
        let mut held: Vec<Desc> = (0..8).filter_map(|_| pool.alloc()).collect();
        for i in lends {
            if let Some(pos) = held.iter().position(|d| d.id == i) {
                let d = held.remove(pos);
                pool.lend(d.id, d.len, 0, &mut tx).unwrap();
                lent[d.id as usize] = true;
            }
        }
        for (id, len, offset) in returns {
            let got = pool.reclaim(Desc::new(offset, len, id, 7));
            let ok = (id as usize) < 8 && lent[id as usize] && len <= BUF;
            prop_assert_eq!(got.is_ok(), ok, "id {} len {} -> {:?}", id, len, got);
            if let Ok(d) = got {
                lent[id as usize] = false;
                prop_assert_eq!(d.offset, id * BUF, "the pool's own record, not the peer's offset");
                prop_assert_eq!((d.len, d.id, d.flags), (len, id, 7));
                prop_assert!(region.slice(&d).is_ok());
            }
            prop_assert_eq!(pool.lent() as usize, lent.iter().filter(|l| **l).count());
        }
    }
}

/// Steps of an honest run; flag pokes model a peer that only scribbles on the wake-me flags.
#[derive(Clone, Debug)]
enum Step {
    Push(usize),
    Publish,
    Pop(usize),
    Release,
    ConsumerWait,
    ProducerWait,
    PokeFlag { consumer: bool, value: u32 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1..=N + 2).prop_map(Step::Push),
        3 => Just(Step::Publish),
        4 => (1..=N + 2).prop_map(Step::Pop),
        3 => Just(Step::Release),
        1 => Just(Step::ConsumerWait),
        1 => Just(Step::ProducerWait),
        1 => (any::<bool>(), any::<u32>()).prop_map(|(consumer, value)| Step::PokeFlag { consumer, value }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every pushed item comes out exactly once, in order; nothing is lost at the end.
    /// Starts near the u32 wrap so the indices cross it.
    #[test]
    fn honest_run_delivers_everything_once_in_order(steps in prop::collection::vec(step(), 1..300), start in prop_oneof![Just(0u32), Just(u32::MAX - 20), any::<u32>()]) {
        let mem = RingMem::new(Ring::<Desc, N>::BYTES);
        let r = ring(&mem);
        r.init(NonZeroU32::MIN);
        mem.word(TAIL).store(start, Ordering::Relaxed);
        mem.word(HEAD).store(start, Ordering::Relaxed);
        let mut tx = Producer::attach(r).unwrap();
        let mut rx = Consumer::attach(r).unwrap();
        let mut next_push = 0u32;
        let mut in_flight: VecDeque<u32> = VecDeque::new();
        let mut next_pop = 0u32;

        let pop = |rx: &mut Consumer<'_, Desc, N>, in_flight: &mut VecDeque<u32>, next_pop: &mut u32| -> Result<bool, TestCaseError> {
            match rx.pop() {
                Ok(Some(d)) => {
                    prop_assert_eq!(d, Desc::new(*next_pop, 1, *next_pop ^ 0x5555, 3));
                    prop_assert_eq!(in_flight.pop_front(), Some(*next_pop));
                    *next_pop += 1;
                    Ok(true)
                }
                Ok(None) => Ok(false),
                Err(e) => Err(TestCaseError::fail(format!("honest pop failed: {e}"))),
            }
        };

        for s in steps {
            match s {
                Step::Push(k) => for _ in 0..k {
                    match tx.push(Desc::new(next_push, 1, next_push ^ 0x5555, 3)) {
                        Ok(()) => { in_flight.push_back(next_push); next_push += 1; }
                        Err(RingError::Full) => {
                            // Full means exactly N pushed items whose slots the consumer has not
                            // handed back yet.
                            let released = next_pop - rx.unreleased();
                            prop_assert_eq!((next_push - released) as usize, N);
                            break;
                        }
                        Err(e) => return Err(TestCaseError::fail(format!("honest push failed: {e}"))),
                    }
                },
                Step::Publish => { let _: Notify = tx.publish().unwrap(); }
                Step::Pop(k) => for _ in 0..k { if !pop(&mut rx, &mut in_flight, &mut next_pop)? { break } },
                Step::Release => { let _: Notify = rx.release().unwrap(); }
                Step::ConsumerWait => if rx.unreleased() == 0 {
                    let w = rx.prepare_wait().unwrap();
                    // Block only if nothing at all is published and unread.
                    prop_assert_eq!(w == Wait::Block, rx.available().unwrap() == 0);
                },
                Step::ProducerWait => if tx.unpublished() == 0 {
                    let w = tx.prepare_wait().unwrap();
                    prop_assert_eq!(w == Wait::Block, tx.free().unwrap() == 0);
                },
                Step::PokeFlag { consumer, value } => {
                    mem.word(if consumer { C_FLAG } else { P_FLAG }).store(value, Ordering::Relaxed);
                }
            }
            prop_assert_eq!(mem.word(EPOCH).load(Ordering::Relaxed), 1);
        }
        // Drain: publish, pop and release until everything pushed has come out.
        let _ = tx.publish().unwrap();
        while pop(&mut rx, &mut in_flight, &mut next_pop)? {}
        let _ = rx.release().unwrap();
        prop_assert!(in_flight.is_empty(), "lost {:?}", in_flight);
        prop_assert_eq!(next_pop, next_push);
        prop_assert_eq!(tx.free().unwrap() as usize, N);
    }
}
