//! The server side of the IPC self-test: badged calls, deferred replies, and shared memory
//! announced by a notification.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sel4::{Cap, CNode, Endpoint, MessageInfo, Notification};
use sel4_rt::println;
use sel4_rt::shared::SharedRegion;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

/// Labels of the self-test protocol.
const ECHO: u64 = 1;
const PARK: u64 = 2;
const RELEASE: u64 = 3;
const PING_BADGE: u64 = 7;
const PING2_BADGE: u64 = 8;
/// `bytes` sends byte messages (`sel4::bytes`, label = length): answered reversed and
/// complemented.
const BYTES_BADGE: u64 = 9;

fn main(info: &'static StartInfo) {
    let ep: Cap<Endpoint> = sel4_rt::cap("pp").expect("endpoint `pp` granted");
    let bell: Cap<Notification> = sel4_rt::cap("bell").expect("notification `bell` granted");
    let shared = SharedRegion::named("shared").expect("region `shared` mapped");
    let cnode: Cap<CNode> = Cap::from_cptr(info.cnode);
    let (park_slot, release_slot) = (info.free_slots.0, info.free_slots.0 + 1);
    println!("up: waiting for the bell");

    // Shared memory + notification: the client fills the region, then rings.
    let bits = bell.wait();
    let mut ok = bits == 1 && !shared.is_writable();
    for i in 0..shared.len() / 8 {
        let word = shared.atomic_u64(i * 8).map(|w| w.load(core::sync::atomic::Ordering::Acquire)).unwrap_or(0);
        ok &= word == 0x5eed_0000 + i as u64;
    }
    if ok {
        println!("TEST PASS: shared-memory-and-notification ({} bytes, badge bits {bits:#x})", shared.len());
    } else {
        println!("TEST FAIL: shared memory or bell wrong (badge bits {bits:#x})");
    }
    // And back: the client waits for this one.
    let answer: Cap<Notification> = sel4_rt::cap("answer").expect("notification `answer` granted");
    answer.signal();

    // Calls: echo replies at once; PARK is answered only after RELEASE arrives (and vice versa).
    let (mut parked, mut released) = (false, false);
    let (mut badge, mut msg, mut mr) = ep.recv();
    let mut bytes = [0u8; sel4::bytes::MAX_BYTES];
    loop {
        if badge == BYTES_BADGE {
            let reply = match sel4::bytes::unload(msg, mr, &mut bytes) {
                Ok(n) => {
                    bytes[..n].reverse();
                    bytes[..n].iter_mut().for_each(|b| *b = !*b);
                    &bytes[..n]
                }
                Err(e) => {
                    println!("TEST FAIL: byte message refused: {e:?}");
                    &[][..]
                }
            };
            match ep.reply_recv_bytes(reply) {
                Ok(next) => (badge, msg, mr) = next,
                Err(_) => (badge, msg, mr) = ep.recv(),
            }
            continue;
        }
        match msg.label() {
            ECHO => {
                if badge != PING_BADGE {
                    println!("TEST FAIL: echo call with badge {badge}, expected {PING_BADGE}");
                }
                let reply = MessageInfo::new(0, 0, 0, 2);
                (badge, msg, mr) = ep.reply_recv(reply, [mr[0] + 1, badge, 0, 0]);
                continue;
            }
            PARK | RELEASE => {
                let slot = if msg.label() == PARK { park_slot } else { release_slot };
                if let Err(e) = cnode.save_caller(slot, 64) {
                    println!("TEST FAIL: save_caller: {e}");
                }
                if msg.label() == PARK {
                    parked = badge == PING_BADGE;
                } else {
                    released = badge == PING2_BADGE;
                }
                if parked && released {
                    // Both callers wait on saved reply capabilities: answer them now.
                    Cap::<Endpoint>::from_cptr(park_slot).send(MessageInfo::new(0, 0, 0, 1), [42, 0, 0, 0]);
                    Cap::<Endpoint>::from_cptr(release_slot).send(MessageInfo::new(0, 0, 0, 1), [43, 0, 0, 0]);
                    println!("TEST PASS: deferred-replies (two saved callers answered later)");
                    (parked, released) = (false, false);
                }
            }
            other => println!("unknown label {other} from badge {badge}"),
        }
        (badge, msg, mr) = ep.recv();
    }
}
