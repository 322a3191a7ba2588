//! 8 MiB each way at once over one connection, over IPv4 and IPv6, on a link that loses,
//! duplicates and reorders frames; both directions verified by hash.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libsock::{SockAddr, TcpListener, TcpStream};
use netserver_core::host::Impairments;

const SIZE: usize = 8 << 20;

fn read_all(s: &TcpStream<libsock::host::HostTransport>, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = s.read(&mut out[got..]).expect("read");
        assert!(n > 0, "early EOF after {got} bytes");
        got += n;
    }
    out
}

fn transfer(listen: SockAddr, to: SockAddr) {
    let imp = Impairments { loss_ppm: 2_000, duplicate_ppm: 2_000, reorder_ppm: 5_000, seed: 42 };
    let n = net(imp);
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, listen).expect("bind");
    let up = pattern(1, SIZE);
    let down = pattern(2, SIZE);
    let (hu, hd) = (hash(&up), hash(&down));
    let start = Instant::now();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().expect("accept");
        let s = Arc::new(s);
        let w = {
            let s = s.clone();
            std::thread::spawn(move || s.write_all(&down).expect("server write"))
        };
        let got = read_all(&s, SIZE);
        w.join().unwrap();
        hash(&got)
    });
    let s = Arc::new(TcpStream::connect(&ca, to).expect("connect"));
    let w = {
        let s = s.clone();
        std::thread::spawn(move || s.write_all(&up).expect("client write"))
    };
    let got = read_all(&s, SIZE);
    w.join().unwrap();
    assert_eq!(hash(&got), hd, "server->client data corrupted");
    assert_eq!(server.join().unwrap(), hu, "client->server data corrupted");
    let c = &n.link.counters;
    eprintln!(
        "{:?}: 2 x {} MiB in {:?}; link sent {} lost {} dup {} reordered {}",
        to,
        SIZE >> 20,
        start.elapsed(),
        c.sent.load(std::sync::atomic::Ordering::Relaxed),
        c.lost.load(std::sync::atomic::Ordering::Relaxed),
        c.duplicated.load(std::sync::atomic::Ordering::Relaxed),
        c.reordered.load(std::sync::atomic::Ordering::Relaxed),
    );
    for (what, n) in [("loss", &c.lost), ("duplication", &c.duplicated), ("reordering", &c.reordered)] {
        assert!(n.load(std::sync::atomic::Ordering::Relaxed) > 0, "the link injected no {what}");
    }
    drop(s);
    assert!(eventually(Duration::from_secs(10), || n.a.server.live_sockets() == 0 && n.b.server.live_sockets() <= 1));
}

#[test]
fn eight_mib_each_way_v4_lossy() {
    transfer(addr4(1, 9000), addr4(1, 9000));
}

#[test]
fn eight_mib_each_way_v6_lossy() {
    transfer(addr6(1, 9001), addr6(1, 9001));
}
