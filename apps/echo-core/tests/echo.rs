//! The echo application against the real net server core: the app runs as a libsock client of
//! the guest's server, the test's clients talk to it from the host's server over the link.

use std::time::Duration;

use app_testnet::{eventually, guest4, guest6, host4, AppThread, Client, Net};
use echo_core::{EchoApp, UdpCounters, PORT};
use libsock::{Errno, PollEvents, PollFd, SockAddr, TcpStream, UdpSocket};

struct Report {
    accepted: u64,
    max_open: u64,
    closed: u64,
    udp: UdpCounters,
}

fn start(net: &Net) -> AppThread<Report> {
    AppThread::spawn(&net.guest.server, |client, ctl| {
        let (mut app, bound) = EchoApp::bind(&client, PORT).expect("bind");
        assert_eq!(bound.tcp.len(), 2, "v4 and v6: {bound:?}");
        assert_eq!(bound.tcp[0], SockAddr::any_v4(PORT));
        ctl.ready();
        while !ctl.stopped() {
            app.run_once(Some(Duration::from_millis(20))).expect("turn");
        }
        let c = app.tcp_counters();
        Report { accepted: c.accepted.get(), max_open: c.max_open.get(), closed: c.closed.get(), udp: app.udp_counters() }
    })
}

fn data(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(7).wrapping_add(seed.wrapping_mul(131)) % 253) as u8).collect()
}

fn read_exact(s: &TcpStream<libsock::host::HostTransport>, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        let n = s.read(&mut buf[got..]).expect("read");
        assert!(n > 0, "EOF after {got} of {} bytes", buf.len());
        got += n;
    }
}

fn recv_within(c: &Client, s: &UdpSocket<libsock::host::HostTransport>, buf: &mut [u8]) -> (usize, SockAddr) {
    let mut fds = [PollFd::new(s.handle(), PollEvents::IN)];
    assert_eq!(c.poll(&mut fds, Some(Duration::from_secs(10))).expect("poll"), 1, "no echo within 10 s");
    s.recv_from(buf).expect("recv")
}

#[test]
fn hundred_concurrent_tcp_connections_each_verified() {
    let net = Net::start();
    let app = start(&net);
    let host = net.host_client();
    const N: usize = 100;
    // All connections are open at once before any data moves.
    let conns: Vec<_> = (0..N).map(|_| TcpStream::connect(&host, guest4(PORT)).expect("connect")).collect();
    for (i, s) in conns.iter().enumerate() {
        s.write_all(&data(i, 1000 + i)).expect("write");
    }
    for (i, s) in conns.iter().enumerate() {
        let mut got = vec![0u8; 1000 + i];
        read_exact(s, &mut got);
        assert_eq!(got, data(i, 1000 + i), "connection {i} echoed something else");
    }
    // A second round on the same connections, in reverse order.
    for (i, s) in conns.iter().enumerate().rev() {
        s.write_all(&data(i + N, 333)).expect("write");
        let mut got = vec![0u8; 333];
        read_exact(s, &mut got);
        assert_eq!(got, data(i + N, 333));
    }
    drop(conns);
    // The test's side of every connection is gone once the app closed its side too.
    let closed = eventually(Duration::from_secs(10), || net.host.server.live_flows() == 0);
    let r = app.stop();
    assert!(closed, "connections not closed: {} flows, app closed {}", net.host.server.live_flows(), r.closed);
    assert_eq!(r.accepted, N as u64);
    assert!(r.max_open >= N as u64, "only {} open at once", r.max_open);
    assert_eq!(r.closed, N as u64);
}

#[test]
fn a_megabyte_each_way_with_backpressure_and_eof() {
    let net = Net::start();
    let app = start(&net);
    let host = net.host_client();
    let s = TcpStream::connect(&host, guest4(PORT)).expect("connect");
    s.set_nonblocking(true).unwrap();
    let payload = data(5, 1 << 20);
    // One thread, one poll for both directions (the server keeps one waiter per socket).
    let (mut sent, mut got) = (0, Vec::with_capacity(payload.len()));
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < payload.len() {
        let mut progress = false;
        if sent < payload.len() {
            match s.write(&payload[sent..(sent + 64 * 1024).min(payload.len())]) {
                Ok(n) => {
                    sent += n;
                    progress = true;
                    if sent == payload.len() {
                        s.shutdown(libsock::Shutdown::Write).expect("shutdown");
                    }
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!("EOF after {} bytes", got.len()),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                progress = true;
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
        if !progress {
            let ev = if sent < payload.len() { PollEvents::IN.union(PollEvents::OUT) } else { PollEvents::IN };
            let mut fds = [PollFd::new(s.handle(), ev)];
            assert_eq!(host.poll(&mut fds, Some(Duration::from_secs(20))).expect("poll"), 1, "stalled");
        }
    }
    assert!(got == payload, "echo differs");
    s.set_nonblocking(false).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).expect("read"), 0, "the app closes after echoing everything");
    drop(s);
    app.stop();
}

#[test]
fn a_peer_that_never_reads_does_not_stop_the_others() {
    let net = Net::start();
    let app = start(&net);
    let host = net.host_client();
    let hog = TcpStream::connect(&host, guest4(PORT)).expect("connect");
    hog.set_nonblocking(true).unwrap();
    let chunk = vec![0x55u8; 64 * 1024];
    let mut sent = 0usize;
    // Fill every buffer between the hog and the app (it echoes into a peer that never reads).
    let stalled = eventually(Duration::from_secs(20), || match hog.write(&chunk) {
        Ok(n) => {
            sent += n;
            false
        }
        Err(Errno::EAGAIN) => true,
        Err(e) => panic!("write: {e}"),
    });
    assert!(stalled && sent > 0, "the app kept reading a peer that does not read ({sent} bytes)");
    for round in 0..3 {
        let s = TcpStream::connect(&host, guest4(PORT)).expect("connect");
        s.write_all(b"still here").unwrap();
        let mut got = [0u8; 10];
        read_exact(&s, &mut got);
        assert_eq!(&got, b"still here", "round {round}");
    }
    drop(hog);
    assert!(!app.finished());
    app.stop();
}

#[test]
fn ipv6_tcp_and_udp_echo() {
    let net = Net::start();
    let app = start(&net);
    let host = net.host_client();
    let s = TcpStream::connect(&host, guest6(PORT)).expect("connect v6");
    s.write_all(b"over ipv6").unwrap();
    let mut got = [0u8; 9];
    read_exact(&s, &mut got);
    assert_eq!(&got, b"over ipv6");
    drop(s);

    let u = UdpSocket::bind(&host, SockAddr::any_v4(0)).expect("udp bind");
    // Up to about one frame: the net server does not fragment IP. (1471 and 1472 bytes, which
    // still fit a 1500-byte MTU, are not echoed: reported to the net server's owner.)
    let mut buf = vec![0u8; 70000];
    for (i, len) in [1usize, 64, 1000, 1400, 1470].into_iter().enumerate() {
        let d = data(i, len);
        assert_eq!(u.send_to(&d, guest4(PORT)).expect("send"), len);
        let (n, from) = recv_within(&host, &u, &mut buf);
        assert_eq!(from, guest4(PORT));
        assert_eq!(&buf[..n], &d[..], "datagram of {len} bytes");
    }
    let u6 = UdpSocket::bind(&host, SockAddr::any_v6(0)).expect("udp6 bind");
    u6.send_to(b"v6 datagram", guest6(PORT)).unwrap();
    let (n, from) = recv_within(&host, &u6, &mut buf);
    assert_eq!((&buf[..n], from), (&b"v6 datagram"[..], guest6(PORT)));
    let r = app.stop();
    assert_eq!(r.udp.received, 6);
    assert_eq!(r.udp.echoed, 6);
    let _ = host4(0);
}
