//! Raw-IPC partner for `sysbench`: answers every `Call` on its endpoint `raw` with the same
//! message (label, length and registers reflected by `ReplyRecv`), doing nothing else. It is
//! the baseline a socket call through libsock and the net server is compared against.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use sel4::{Cap, Endpoint};
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

/// Badge of the sysbench capability whose calls are answered after using the FPU.
const FPU_BADGE: u64 = 2;

fn main(_info: &'static StartInfo) {
    let Some(ep) = sel4_rt::cap::<Endpoint>("raw") else {
        println!("cannot start: endpoint `raw` not granted");
        return;
    };
    let ep: Cap<Endpoint> = ep;
    // The received message is in our registers and IPC buffer: replying with the same info
    // sends it back unchanged. A call with badge `FPU_BADGE` is answered after touching the FPU
    // (SSE registers), as any Rust code that zeroes or moves a buffer does: with a caller that
    // does the same, the kernel's lazy FPU switch then traps once on each side per round trip.
    let (mut badge, mut info, mut mr) = ep.recv();
    loop {
        if badge == FPU_BADGE {
            core::hint::black_box([0u64; 4]);
        }
        (badge, info, mr) = ep.reply_recv(info, mr);
    }
}
