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
