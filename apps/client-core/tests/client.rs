//! The client application against the real net server core: the app connects from the guest
//! to a line server the test runs on the host side (10.0.2.2:7777, as under QEMU).

use std::time::Duration;

use app_testnet::{host4, Net, GUEST_V4};
use client_core::{exchange, Failure, DEFAULT_TARGET, GREETING};
use libsock::{Errno, SockAddr, TcpListener};

#[test]
fn the_default_target_is_qemus_host_address() {
    assert_eq!(DEFAULT_TARGET, host4(7777));
}

#[test]
fn connects_out_with_an_ephemeral_port_and_reads_the_reply() {
    let net = Net::start();
    let host = net.host_client();
    let l = TcpListener::bind(&host, SockAddr::any_v4(7777)).unwrap();
    let server = std::thread::spawn(move || {
        let mut peers = Vec::new();
        for _ in 0..2 {
            let (s, peer) = l.accept().unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 64];
            while !line.contains(&b'\n') {
                let n = s.read(&mut b).unwrap();
                assert!(n > 0);
                line.extend_from_slice(&b[..n]);
            }
            assert_eq!(line, GREETING);
            s.write_all(format!("hello {peer}\nnot part of the reply\n").as_bytes()).unwrap();
            peers.push(peer);
        }
        peers
    });
    let app = net.guest_client();
    let a = exchange(&app, DEFAULT_TARGET, GREETING, Duration::from_secs(10)).expect("exchange");
    let b = exchange(&app, DEFAULT_TARGET, GREETING, Duration::from_secs(10)).expect("exchange");
    let peers = server.join().unwrap();
    for (r, peer) in [(&a, peers[0]), (&b, peers[1])] {
        assert_eq!(r.local, peer, "the host saw the address the client reported");
        assert_eq!(r.local.to_string(), format!("{GUEST_V4}:{}", r.local.port()));
        assert!((49152..=65535).contains(&r.local.port()), "not ephemeral: {}", r.local);
        assert_eq!(String::from_utf8(r.reply.clone()).unwrap(), format!("hello {}\n", r.local));
    }
}

#[test]
fn refused_and_silent_targets_fail_in_time() {
    let net = Net::start();
    let app = net.guest_client();
    let r = exchange(&app, host4(7778), GREETING, Duration::from_secs(10));
    assert_eq!(r, Err(Failure { step: "connect", errno: Errno::ECONNREFUSED }));
    // A server that accepts (in its backlog) and never answers.
    let host = net.host_client();
    let _l = TcpListener::bind(&host, SockAddr::any_v4(7779)).unwrap();
    let r = exchange(&app, host4(7779), GREETING, Duration::from_millis(300));
    assert_eq!(r, Err(Failure { step: "recv", errno: Errno::ETIMEDOUT }));
    assert_eq!(Failure { step: "recv", errno: Errno::ETIMEDOUT }.to_string(), "recv: ETIMEDOUT");
}
