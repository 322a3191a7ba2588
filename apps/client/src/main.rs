//! The client process: at start-up, connects to the configured host server, sends a line,
//! prints the reply and the ephemeral local port it was given, and exits. The target is the
//! `target` setting of the component's `config` table in the system description (e.g.
//! `config = { target = "10.0.2.2:7777" }`), else `client_core::DEFAULT_TARGET` (10.0.2.2:7777,
//! the host under QEMU user networking).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use core::time::Duration;

use client_core::{exchange, DEFAULT_TARGET, GREETING};
use libsock::net_api::SockAddr;
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

fn main(_info: &'static StartInfo) {
    let client = match libsock::sel4::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("cannot start: {e}");
            return;
        }
    };
    let target = match sel4_rt::config("target") {
        None => DEFAULT_TARGET,
        Some(text) => match text.parse::<core::net::SocketAddr>() {
            Ok(addr) => SockAddr::from(addr),
            Err(_) => {
                println!("cannot start: config `target` = {text:?} is not an address:port");
                return;
            }
        },
    };
    println!("client: connecting to {target}");
    match exchange(&client, target, GREETING, Duration::from_secs(30)) {
        Ok(r) => {
            let reply = String::from_utf8_lossy(&r.reply);
            println!("client: local address {} (ephemeral port {})", r.local, r.local.port());
            println!("client: reply from {}: {:?}", r.peer, reply.trim_end());
        }
        Err(f) => println!("client: {target}: {f}"),
    }
}
