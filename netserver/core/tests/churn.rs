//! 2 threads × 10 000 connect/accept/close cycles through two servers: no port, socket or flow
//! may leak.

mod common;

use std::time::{Duration, Instant};

use common::*;
use libsock::{TcpListener, TcpStream};
use netserver_core::host::Impairments;

const CYCLES: usize = 10_000;

#[test]
fn two_threads_times_10000_connect_close_cycles_leak_nothing() {
    let n = net(Impairments::default());
    let start = Instant::now();
    let mut threads = Vec::new();
    for t in 0..2u16 {
        let ca = client(&n.a.server);
        let cb = client(&n.b.server);
        let port = 9100 + t;
        let to = if t == 0 { addr4(1, port) } else { addr6(1, port) };
        let l = TcpListener::bind(&cb, to).unwrap();
        threads.push(std::thread::spawn(move || {
            for _ in 0..CYCLES {
                let (s, _) = l.accept().expect("accept");
                drop(s);
            }
            Some(l)
        }));
        threads.push(std::thread::spawn(move || {
            for i in 0..CYCLES {
                let s = TcpStream::connect(&ca, to).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
                drop(s);
            }
            // Keep the listener alive until both sides are done: return nothing.
            let _ = &ca;
            None::<TcpListener<libsock::host::HostTransport>>
        }));
    }
    let mut listeners = Vec::new();
    for t in threads {
        if let Some(l) = t.join().unwrap_or_else(|_| panic!("a churn thread failed")) {
            listeners.push(l);
        }
    }
    let took = start.elapsed();
    eprintln!("{} cycles in {took:?}", 2 * CYCLES);
    let (a, b) = (&n.a.server, &n.b.server);
    assert_eq!(a.stats().tcp_active_opens, 2 * CYCLES as u64);
    assert_eq!(b.stats().tcp_passive_opens, 2 * CYCLES as u64);
    // After TIME-WAIT (200 ms here) everything is gone but the two listeners.
    let clean = eventually(Duration::from_secs(10), || {
        a.ports_in_use() == 0
            && a.live_sockets() == 0
            && a.live_flows() == 0
            && b.ports_in_use() == 2
            && b.live_sockets() == 2
            && b.live_flows() == 0
    });
    assert!(
        clean,
        "leak: a ports {} sockets {} flows {}; b ports {} sockets {} flows {}",
        a.ports_in_use(),
        a.live_sockets(),
        a.live_flows(),
        b.ports_in_use(),
        b.live_sockets(),
        b.live_flows()
    );
    drop(listeners);
    assert!(eventually(Duration::from_secs(5), || b.ports_in_use() == 0 && b.live_sockets() == 0));
}
