//! The echo process: TCP and UDP echo on port 7 (IPv4, and IPv6 when the net server has it).
//! All the logic is in `echo-core`; this file only connects to the net server through the
//! grants `net`, `net-wake`, `net-data` and reports on the console.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use core::time::Duration;

use echo_core::{EchoApp, PORT};
use netloop::Event;
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
    let result = netloop::serve(
        &client,
        || {
            let (app, bound) = EchoApp::bind(&client, PORT)?;
            for a in &bound.tcp {
                println!("echo: tcp {a}");
            }
            for a in &bound.udp {
                println!("echo: udp {a}");
            }
            if let Some(e) = bound.v6_error {
                println!("echo: no IPv6 ({e})");
            }
            Ok(app)
        },
        |app| app.run_once(None).map(|_| true),
        |ev| match ev {
            Event::Serving(n) => println!("echo: serving (incarnation {n})"),
            Event::ServerRestarted => println!("echo: net server restarted, reconnecting"),
            Event::BuildFailed(e) => println!("echo: cannot bind port {PORT}: {e}"),
        },
        Duration::from_millis(100),
    );
    if let Err(e) = result {
        println!("echo: stopped: {e}");
    }
}
