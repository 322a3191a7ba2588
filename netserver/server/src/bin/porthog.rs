//! In-QEMU test of app death (`tests/qemu/app-death.toml`): an application that holds a
//! listening port and a connection, then faults. The supervisor restarts it and tells the net
//! server, which must have closed the dead instance's sockets and freed its ports: the new
//! instance binds the same port again. A counter in a shared region says which life this is.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use core::sync::atomic::Ordering::SeqCst;

use libsock::{SockAddr, TcpListener, TcpStream};
use sel4_rt::shared::SharedRegion;
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

const PORT: u16 = 9000;

fn main(_info: &'static StartInfo) {
    let Some(memo) = SharedRegion::named("memo").and_then(|m| m.atomic_u64_mut(0).ok()) else {
        println!("TEST FAIL: region `memo` missing");
        return;
    };
    let life = memo.fetch_add(1, SeqCst) + 1;
    let client = match libsock::sel4::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("TEST FAIL: {e}");
            return;
        }
    };
    let listener = match TcpListener::bind(&client, SockAddr::v4(0, 0, 0, 0, PORT)) {
        Ok(l) => l,
        Err(e) => {
            println!("TEST FAIL: life {life}: bind port {PORT}: {e}");
            return;
        }
    };
    if life == 1 {
        // Hold the port and a live connection to ourselves, then die without closing anything.
        let conn = TcpStream::connect(&client, SockAddr::v4(10, 0, 2, 15, PORT));
        let accepted = listener.accept();
        println!("life 1: port {PORT} bound, connection {}; now faulting", conn.is_ok() && accepted.is_ok());
        fault();
    }
    println!("TEST PASS: life {life}: port {PORT} bound again after the previous instance died");
    drop(listener);
}

#[allow(unsafe_code)]
fn fault() {
    // SAFETY: not safe on purpose; the access faults and the thread never continues.
    let v = unsafe { core::ptr::read_volatile(0x1800_0000 as *const u64) };
    println!("TEST FAIL: read {v:#x} from an unmapped page");
}
