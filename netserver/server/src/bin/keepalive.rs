//! In-QEMU test of TCP timers under load (`tests/qemu/netserver-timers.toml`): an application
//! that accepts connections on port 9100, turns `SO_KEEPALIVE` on for each and then holds them,
//! idle, forever. It never sends or reads: every segment the guest sends on these connections
//! afterwards is a keep-alive probe, sent by the net server's worker when its smoltcp keep-alive
//! timer fires (interval: the net server's `keepalive_ms`). The host measures those probes on
//! the wire (a pcap of the guest's frames) while another connection saturates the link.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use libsock::{SockAddr, TcpListener};
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

const PORT: u16 = 9100;

fn main(_info: &'static StartInfo) {
    let client = match libsock::sel4::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("cannot start: {e}");
            return;
        }
    };
    let listener = match TcpListener::bind(&client, SockAddr::v4(0, 0, 0, 0, PORT)) {
        Ok(l) => l,
        Err(e) => {
            println!("cannot start: bind port {PORT}: {e}");
            return;
        }
    };
    println!("listening on port {PORT}");
    let mut held = Vec::new();
    loop {
        let (conn, peer) = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                println!("accept: {e}");
                continue;
            }
        };
        match conn.set_keepalive(true).and_then(|()| conn.keepalive()) {
            Ok(true) => {
                held.push(conn);
                println!("connection {} from {peer}: SO_KEEPALIVE on, held idle", held.len());
            }
            Ok(false) => println!("connection from {peer}: SO_KEEPALIVE reads back off; dropped"),
            Err(e) => println!("connection from {peer}: SO_KEEPALIVE: {e}; dropped"),
        }
    }
}
