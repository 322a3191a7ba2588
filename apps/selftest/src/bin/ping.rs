//! The client side of the IPC self-test. One binary serves both clients: `ping` (badge 7)
//! fills the shared region, rings, echoes and parks; `ping2` (badge 8) releases the parked call;
//! `bytes` (badge 9) sends byte messages (`sel4::bytes`) of every length; `thief-*` try to
//! receive on what they may only send to (see [`steal`]).
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sel4::{Cap, Endpoint, MessageInfo, Notification};
use sel4_rt::println;
use sel4_rt::shared::SharedRegion;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

fn main(info: &'static StartInfo) {
    if let Some(target) = info.name.strip_prefix("thief-") {
        steal(target, info);
        return;
    }
    let ep: Cap<Endpoint> = sel4_rt::cap("pp").expect("endpoint `pp` granted");
    if info.name == "ping2" {
        let (_, [value, ..]) = ep.call(MessageInfo::new(3, 0, 0, 0), [0; 4]);
        if value == 43 {
            println!("TEST PASS: released (deferred reply {value})");
        } else {
            println!("TEST FAIL: release got {value}");
        }
        return;
    }
    if info.name == "bytes" {
        byte_messages(ep);
        return;
    }
    let bell: Cap<Notification> = sel4_rt::cap("bell").expect("notification `bell` granted");
    let shared = SharedRegion::named("shared").expect("region `shared` mapped");
    for i in 0..shared.len() / 8 {
        if let Ok(w) = shared.atomic_u64_mut(i * 8) {
            w.store(0x5eed_0000 + i as u64, core::sync::atomic::Ordering::Release);
        }
    }
    bell.signal();
    let answer: Cap<Notification> = sel4_rt::cap("answer").expect("notification `answer` granted");
    match answer.wait() {
        1 => println!("TEST PASS: answered-bell (pong signalled back, badge bits 0x1)"),
        bits => println!("TEST FAIL: answer came with badge bits {bits:#x}"),
    }

    let mut ok = true;
    for i in 0..1000u64 {
        let (reply, mr) = ep.call(MessageInfo::new(1, 0, 0, 1), [i, 0, 0, 0]);
        ok &= reply.label() == 0 && mr[0] == i + 1 && mr[1] == 7;
    }
    if ok {
        println!("TEST PASS: badged-call (1000 round trips, server saw badge 7)");
    } else {
        println!("TEST FAIL: echo replies wrong");
    }
    let (_, [value, ..]) = ep.call(MessageInfo::new(2, 0, 0, 0), [0; 4]);
    if value == 42 {
        println!("TEST PASS: parked (deferred reply {value})");
    } else {
        println!("TEST FAIL: park got {value}");
    }
}

/// Byte messages of every length from 0 to `MAX_BYTES`: the first four words travel in CPU
/// registers, the rest in the IPC buffer; `pong` answers each with its bytes reversed and
/// complemented. Also: a reply longer than the caller's buffer is refused, and so is an
/// over-long request.
fn byte_messages(ep: Cap<Endpoint>) {
    use sel4::bytes::{BytesError, MAX_BYTES};
    let mut request = [0u8; MAX_BYTES + 1];
    let mut reply = [0u8; MAX_BYTES];
    let mut bad = 0;
    for len in 0..=MAX_BYTES {
        for (i, b) in request[..len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31) ^ (len as u8);
        }
        reply.fill(0xee);
        match ep.call_bytes(&request[..len], &mut reply) {
            Ok(n) if n == len && (0..len).all(|i| reply[i] == !request[len - 1 - i]) => {}
            other => {
                if bad < 3 {
                    println!("TEST FAIL: byte message of {len} bytes: {other:?}");
                }
                bad += 1;
            }
        }
    }
    let short = ep.call_bytes(&request[..40], &mut reply[..39]);
    let long = ep.call_bytes(&request, &mut reply);
    if bad == 0 && short == Err(BytesError::Malformed) && long == Err(BytesError::TooLong) {
        println!("TEST PASS: byte-messages (0..={MAX_BYTES} bytes echoed; short buffer and over-long request refused)");
    } else {
        println!("TEST FAIL: byte messages: {bad} wrong, short buffer {short:?}, over-long {long:?}");
    }
}

/// A client holds a badged (send-only) capability: receiving on it must fault, not take
/// messages meant for the owner. `thief-endpoint` waits on the server's endpoint (it would take
/// `ping`'s calls), `thief-bell` on the server's notification (it would take `ping`'s ring),
/// `thief-faults` on its own fault endpoint (it would take other components' faults). Each
/// runs before the owner and should die by a capability fault the root task reports; if the
/// receive returns, it says what it stole.
fn steal(target: &str, info: &StartInfo) {
    println!("trying to receive on {target}");
    let stolen = match target {
        "endpoint" => sel4_rt::cap::<Endpoint>("pp").map(|ep| ep.recv().0),
        "bell" => sel4_rt::cap::<Notification>("bell").map(|n| n.wait()),
        "faults" => Some(Cap::<Endpoint>::from_cptr(info.exit).recv().0),
        _ => None,
    };
    println!("TEST FAIL: a send-only capability received (badge {stolen:?})");
}
