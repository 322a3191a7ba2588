//! TCP end to end: real libsock clients, two servers, an in-memory link.

mod common;

use std::time::Duration;

use common::*;
use libsock::{Errno, TcpListener, TcpStream};
use netserver_core::host::Impairments;

#[test]
fn connect_accept_echo_v4_and_v6() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    for (i, (bind, to)) in [(addr4(1, 0), addr4(1, 7000)), (addr6(1, 0), addr6(1, 7001))].into_iter().enumerate() {
        let mut bind = bind;
        bind.set_port(7000 + i as u16);
        let l = TcpListener::bind(&cb, bind).expect("bind");
        let t = std::thread::spawn({
            let cb = cb.clone();
            let _ = &cb;
            move || {
                let (s, peer) = l.accept().expect("accept");
                let mut buf = [0u8; 5];
                let mut got = 0;
                while got < 5 {
                    got += s.read(&mut buf[got..]).expect("read");
                }
                s.write_all(&buf).expect("echo");
                peer
            }
        });
        let s = TcpStream::connect(&ca, to).expect("connect");
        s.write_all(b"hello").expect("write");
        let mut buf = [0u8; 5];
        let mut got = 0;
        while got < 5 {
            got += s.read(&mut buf[got..]).expect("read");
        }
        assert_eq!(&buf, b"hello");
        let peer = t.join().unwrap();
        assert_eq!(peer, s.local_addr().unwrap());
    }
}

#[test]
fn refused_connect() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let r = TcpStream::connect(&ca, addr4(1, 4444));
    assert_eq!(r.err(), Some(Errno::ECONNREFUSED));
    let r = TcpStream::connect(&ca, addr6(1, 4444));
    assert_eq!(r.err(), Some(Errno::ECONNREFUSED));
    assert!(eventually(Duration::from_secs(5), || n.a.server.ports_in_use() == 0), "ports leaked");
}

/// `Request::Stats` through libsock: per-worker frame and connection counts follow the traffic,
/// ports in use follow the sockets, device counters come from the shell, and an unregistered
/// client gets `EPERM`.
#[test]
fn stats_follow_connections() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let before = cb.stats().expect("stats");
    assert_eq!(before.workers.len(), n.b.server.config().workers);
    assert!(before.workers.iter().all(|w| w.connections == 0 && w.packets_in == 0));
    assert_eq!(before.ports_in_use, 0);

    let l = TcpListener::bind(&cb, addr4(1, 7100)).expect("bind");
    let t = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(l.accept().expect("accept").0);
        }
        (l, held)
    });
    let streams: Vec<_> = (0..4).map(|_| TcpStream::connect(&ca, addr4(1, 7100)).expect("connect")).collect();
    let (_l, held) = t.join().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || cb.stats().unwrap().workers.iter().map(|w| w.connections).sum::<u64>() == 4),
        "4 connections in {:?}",
        cb.stats()
    );
    let during = cb.stats().unwrap();
    assert!(during.workers.iter().map(|w| w.packets_in).sum::<u64>() >= 8, "{during:?}");
    assert!(during.workers.iter().map(|w| w.packets_out).sum::<u64>() >= 4, "{during:?}");
    // Every worker has an idle listening socket besides its connections.
    assert!(during.workers.iter().all(|w| w.sockets > w.connections), "{during:?}");
    // One listening port (held once however many workers listen).
    assert_eq!(during.ports_in_use, 1, "{during:?}");

    n.b.server.device_counters().ring_drops.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    let s = cb.stats().unwrap();
    assert_eq!((s.ring_drops, s.driver_restarts, s.tx_kicks), (3, 0, 0));
    assert!(s.recent_restarts.is_empty());
    // The shell's transmit kicks and restart records come back, the restarts newest first.
    let dev = n.b.server.device_counters();
    dev.tx_kicks.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    let restart = |k: u32, cause: &str| net_api::RestartStat {
        restart: k,
        cause: net_api::RestartStat::cause_from_str(cause),
        fault_to_running_us: u64::from(k) * 1000,
        fault_to_traffic_us: u64::from(k) * 4000,
    };
    for (k, cause) in [(1, "page fault"), (2, "hang"), (3, "stall-tx"), (4, "panic"), (5, "reported faulty")] {
        dev.restarts.record(&restart(k, cause));
    }
    let s = cb.stats().unwrap();
    assert_eq!(s.tx_kicks, 2);
    assert_eq!(s.recent_restarts.as_slice(), &[restart(5, "reported faulty"), restart(4, "panic"), restart(3, "stall-tx"), restart(2, "hang")]);
    drop(streams);
    drop(held);

    // Stats need a registered client.
    let mut out = [0u8; libsock::net_api::MAX_MSG];
    let mut req = [0u8; libsock::net_api::MAX_MSG];
    let k = libsock::net_api::encode_request(n.b.server.config().epoch, &libsock::net_api::Request::Stats, &mut req).unwrap();
    let m = n.b.server.handle(0xdead_beef, &req[..k], &mut out);
    assert_eq!(libsock::net_api::decode_response(&out[..m]), Ok(libsock::net_api::Response::Error(Errno::EPERM)));
}
