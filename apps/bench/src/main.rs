//! The bench process: once the echo (port 7) and http (port 80) apps answer on the guest's
//! loopback, measures the connection rate (one-byte echo per connection, 16 in flight), then a
//! download (`GET /bytes/N`, every byte checked) and an upload (`POST /sink`, SHA-256 checked),
//! prints the results and exits. Everything crosses the net server; nothing leaves the guest.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use core::time::Duration;

use bench_core::{connection_rate, download, upload};
use libsock::{Errno, SockAddr, Transport};
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

const ECHO: SockAddr = SockAddr::v4(127, 0, 0, 1, 7);
const HTTP: SockAddr = SockAddr::v4(127, 0, 0, 1, 80);
const CONNECTIONS: u64 = 500;
const CONCURRENCY: usize = 16;
const BYTES: u64 = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

fn main(_info: &'static StartInfo) {
    let client = match libsock::sel4::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("cannot start: {e}");
            return;
        }
    };
    // The apps start with this process: give them up to 30 s to listen.
    let ready = |addr: SockAddr| {
        let deadline = client.transport().now() + Duration::from_secs(30);
        loop {
            match connection_rate(&client, addr, 1, 1, Duration::from_secs(5)) {
                Ok(r) if r.completed == 1 => return true,
                Err(Errno::ServerRestarted) => return false,
                _ if client.transport().now() >= deadline => return false,
                _ => {
                    let _ = client.transport().wait(Some(Duration::from_millis(200)));
                }
            }
        }
    };
    if !ready(ECHO) {
        println!("bench: echo at {ECHO} does not answer; nothing measured");
        return;
    }
    match connection_rate(&client, ECHO, CONNECTIONS, CONCURRENCY, TIMEOUT) {
        Ok(r) => println!("bench: connection rate to {ECHO}: {r}"),
        Err(e) => println!("bench: connection rate: {e}"),
    }
    match download(&client, HTTP, BYTES, TIMEOUT) {
        Ok(t) => println!("bench: download from {HTTP}: {t}"),
        Err(e) => println!("bench: download: {e}"),
    }
    match upload(&client, HTTP, BYTES, TIMEOUT) {
        Ok(t) => println!("bench: upload to {HTTP}: {t}"),
        Err(e) => println!("bench: upload: {e}"),
    }
    println!("bench: done");
}
