//! The HTTP process: HTTP/1.1 on port 80 (IPv4, and IPv6 when the net server has it). All the
//! logic is in `http-core`; this file connects to the net server through the grants `net`,
//! `net-wake`, `net-data` and reports on the console. `/stats` asks the net server for its
//! counters through the same client.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::rc::Rc;
use core::time::Duration;

use http_core::{ClientStats, HttpApp, PORT};
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
            let (app, bound) = HttpApp::bind(&client, PORT, Rc::new(ClientStats(client.clone())))?;
            for a in &bound.addrs {
                println!("http: listening on {a}");
            }
            if let Some(e) = bound.v6_error {
                println!("http: no IPv6 ({e})");
            }
            Ok(app)
        },
        |app| app.run_once(None).map(|_| true),
        |ev| match ev {
            Event::Serving(n) => println!("http: serving (incarnation {n})"),
            Event::ServerRestarted => println!("http: net server restarted, reconnecting"),
            Event::BuildFailed(e) => println!("http: cannot listen on port {PORT}: {e}"),
        },
        Duration::from_millis(100),
    );
    if let Err(e) = result {
        println!("http: stopped: {e}");
    }
}
