//! Raw-IPC partner for `sysbench`: answers every `Call` on its endpoint `raw` with the same
//! message (label, length and registers reflected by `ReplyRecv`), doing nothing else. It is
//! the baseline a socket call through libsock and the net server is compared against.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use sel4::{Cap, Endpoint};
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

fn main(_info: &'static StartInfo) {
    let Some(ep) = sel4_rt::cap::<Endpoint>("raw") else {
        println!("cannot start: endpoint `raw` not granted");
        return;
    };
    let ep: Cap<Endpoint> = ep;
    // The received message is in our registers and IPC buffer: replying with the same info
    // sends it back unchanged.
    let (_badge, mut info, mut mr) = ep.recv();
    loop {
        (_, info, mr) = ep.reply_recv(info, mr);
    }
}
