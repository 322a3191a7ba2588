//! Socket-layer behaviour end to end: backlog, non-blocking calls, poll, resets, ports, handles.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libsock::{Domain, Errno, PollEvents, PollFd, SockOpt, SockOptValue, SockType, TcpListener, TcpStream};
use netserver_core::host::Impairments;
use netserver_core::port::PortConfig;

#[test]
fn backlog_64_takes_64_simultaneous_connects() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind_with_backlog(&cb, addr4(1, 8000), 64).unwrap();
    let mut fds = Vec::new();
    for _ in 0..65 {
        let h = ca.socket(Domain::Inet, SockType::Stream).unwrap();
        ca.set_nonblocking(h, true).unwrap();
        assert_eq!(ca.connect(h, &addr4(1, 8000)), Err(Errno::EINPROGRESS));
        fds.push(PollFd::new(h, PollEvents::OUT));
    }
    // 64 of the 65 complete their handshakes with nobody accepting (which 64 is a race).
    let ready = |fds: &[PollFd]| {
        let mut f = fds.to_vec();
        ca.poll(&mut f, Some(Duration::ZERO)).unwrap();
        f.iter().map(|p| p.revents.contains(PollEvents::OUT)).collect::<Vec<bool>>()
    };
    let all64 = eventually(Duration::from_secs(10), || ready(&fds).iter().filter(|&&r| r).count() == 64);
    if !all64 {
        let k = ready(&fds).iter().filter(|&&r| r).count();
        panic!("only {k} of 64 connects completed before accept; a {:?}\nb {:?}", n.a.server.stats(), n.b.server.stats());
    }
    // The 65th is neither connected nor refused: its SYN is dropped and the client retries.
    std::thread::sleep(Duration::from_millis(300));
    let r = ready(&fds);
    assert_eq!(r.iter().filter(|&&r| r).count(), 64, "65th connect must wait");
    let waiting = r.iter().position(|&r| !r).unwrap();
    for (i, fd) in fds.iter().enumerate() {
        assert_eq!(ca.getsockopt(fd.handle, SockOpt::Error).unwrap(), SockOptValue::Error(None), "socket {i}");
    }
    assert!(n.b.server.stats().syn_backlog_drops > 0);
    // Accept all 64 (they are all queued).
    let mut accepted = Vec::new();
    for _ in 0..64 {
        accepted.push(l.accept().unwrap());
    }
    // Now the 65th gets in on its SYN retransmission.
    let (s65, _) = l.accept().unwrap();
    let mut last = [fds[waiting]];
    assert_eq!(ca.poll(&mut last, Some(Duration::from_secs(10))).unwrap(), 1);
    assert_eq!(ca.getsockopt(fds[waiting].handle, SockOpt::Error).unwrap(), SockOptValue::Error(None));
    drop(s65);
    drop(accepted);
    for fd in fds {
        ca.close(fd.handle).unwrap();
    }
}

#[test]
fn non_blocking_calls_return_eagain_and_poll_wakes() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr6(1, 8100)).unwrap();
    l.set_nonblocking(true).unwrap();
    assert_eq!(l.accept().err(), Some(Errno::EAGAIN));
    let s = TcpStream::connect(&ca, addr6(1, 8100)).unwrap();
    let mut fds = [PollFd::new(l.handle(), PollEvents::IN)];
    assert_eq!(cb.poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
    let (peer, _) = l.accept().unwrap();
    peer.set_nonblocking(true).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(peer.read(&mut buf).err(), Some(Errno::EAGAIN));
    // Fill every buffer on the way until the sender gets EAGAIN (nobody reads).
    let chunk = vec![0xabu8; 65536];
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match s.write(&chunk) {
            Ok(k) => sent += k,
            Err(Errno::EAGAIN) => {
                // Allow the workers to drain what they can, then try once more.
                std::thread::sleep(Duration::from_millis(50));
                if s.write(&chunk).err() == Some(Errno::EAGAIN) {
                    break;
                }
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(Instant::now() < deadline, "never got EAGAIN");
    }
    assert!(sent >= 64 * 1024, "only {sent} bytes before EAGAIN");
    // Reading on the other side makes the sender writable again (an armed wake-up fires).
    let reader = std::thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + Duration::from_secs(10);
        while total < 200_000 && Instant::now() < end {
            match peer.read(&mut buf) {
                Ok(k) => total += k,
                Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
        total
    });
    let mut fds = [PollFd::new(s.handle(), PollEvents::OUT)];
    assert_eq!(ca.poll(&mut fds, Some(Duration::from_secs(10))).unwrap(), 1, "never writable again");
    assert!(reader.join().unwrap() > 0);
    // UDP: EAGAIN on an empty queue.
    let u = libsock::UdpSocket::bind(&ca, addr4(0, 0)).unwrap();
    u.set_nonblocking(true).unwrap();
    assert_eq!(u.recv_from(&mut buf).err(), Some(Errno::EAGAIN));
}

#[test]
fn poll_over_100_sockets() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind_with_backlog(&cb, addr4(1, 8200), 128).unwrap();
    let mut outs = Vec::new();
    let mut ins = Vec::new();
    for _ in 0..100 {
        outs.push(TcpStream::connect(&ca, addr4(1, 8200)).unwrap());
        ins.push(l.accept().unwrap().0);
    }
    let mut fds: Vec<PollFd> = ins.iter().map(|s| PollFd::new(s.handle(), PollEvents::IN)).collect();
    assert_eq!(cb.poll(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
    // A blocked poll over all 100 wakes when one of them gets data.
    let cb2 = cb.clone();
    let mut fds2 = fds.clone();
    let waiter = std::thread::spawn(move || {
        let n = cb2.poll(&mut fds2, Some(Duration::from_secs(20))).unwrap();
        (n, fds2)
    });
    std::thread::sleep(Duration::from_millis(100));
    outs[77].write_all(b"x").unwrap();
    let (k, fds2) = waiter.join().unwrap();
    assert_eq!(k, 1);
    assert!(fds2[77].revents.contains(PollEvents::IN));
    // Data on a subset: exactly that subset becomes readable.
    let chosen: Vec<usize> = (0..100).filter(|i| i % 7 == 3).collect();
    for &i in &chosen {
        if i != 77 {
            outs[i].write_all(b"y").unwrap();
        }
    }
    let mut want: Vec<usize> = chosen.clone();
    want.push(77);
    want.sort();
    want.dedup();
    assert!(eventually(Duration::from_secs(10), || {
        let mut f = fds.clone();
        cb.poll(&mut f, Some(Duration::ZERO)).unwrap() == want.len()
    }));
    let mut f = fds.clone();
    cb.poll(&mut f, Some(Duration::ZERO)).unwrap();
    let ready: Vec<usize> = f.iter().enumerate().filter(|(_, p)| p.revents.contains(PollEvents::IN)).map(|(i, _)| i).collect();
    assert_eq!(ready, want);
}

#[test]
fn close_with_unread_data_resets_the_peer() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8300)).unwrap();
    let s = TcpStream::connect(&ca, addr4(1, 8300)).unwrap();
    let (peer, _) = l.accept().unwrap();
    s.write_all(b"you will never read this").unwrap();
    let mut fds = [PollFd::new(peer.handle(), PollEvents::IN)];
    assert_eq!(cb.poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
    drop(peer); // close with unread data: RST
    let mut buf = [0u8; 8];
    let r = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(0),
            Ok(_) => continue,
            Err(e) => break Err(e),
        }
    };
    assert_eq!(r, Err(Errno::ECONNRESET));
    assert!(n.a.server.stats().tcp_resets + n.b.server.stats().tcp_resets > 0);
    // A graceful close with everything read is a FIN: EOF, no error.
    let s2 = TcpStream::connect(&ca, addr4(1, 8300)).unwrap();
    let (p2, _) = l.accept().unwrap();
    p2.write_all(b"bye").unwrap();
    drop(p2);
    let mut got = Vec::new();
    loop {
        let k = s2.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, b"bye");
}

#[test]
fn dead_client_resets_its_connections_and_frees_ports() {
    let n = net(Impairments::default());
    let (ca, id_a) = client_with_id(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8400)).unwrap();
    let mut streams = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..5 {
        streams.push(TcpStream::connect(&ca, addr4(1, 8400)).unwrap());
        peers.push(l.accept().unwrap().0);
    }
    let u = libsock::UdpSocket::bind(&ca, addr4(0, 0)).unwrap();
    assert_eq!(n.a.server.ports_in_use(), 6);
    n.a.server.close_client(id_a);
    for p in &peers {
        let mut buf = [0u8; 4];
        assert_eq!(p.read(&mut buf).err(), Some(Errno::ECONNRESET));
    }
    assert!(eventually(Duration::from_secs(5), || n.a.server.ports_in_use() == 0), "ports not freed");
    assert!(eventually(Duration::from_secs(5), || n.a.server.live_sockets() == 0), "sockets not freed");
    assert!(eventually(Duration::from_secs(5), || n.a.server.live_flows() == 0), "flows not freed");
    // The dead client's handles are gone with it.
    assert_eq!(u.local_addr().err(), Some(Errno::EPERM));
    std::mem::forget(streams); // their Drop would talk to the dead session
    std::mem::forget(u);
}

#[test]
fn port_exhaustion_time_wait_and_reuse() {
    let mut a = config(0);
    a.ports = PortConfig { ephemeral_lo: 50000, ephemeral_hi: 50009, ..PortConfig::default() };
    a.time_wait = Duration::from_millis(300);
    let mut b = config(1);
    b.time_wait = Duration::from_secs(30);
    let n = net_with(Impairments::default(), a, b);
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8500)).unwrap();
    let mut conns = Vec::new();
    for _ in 0..10 {
        let s = TcpStream::connect(&ca, addr4(1, 8500)).unwrap();
        let p = s.local_addr().unwrap().port();
        assert!((50000..=50009).contains(&p));
        conns.push((s, l.accept().unwrap().0));
    }
    assert_eq!(TcpStream::connect(&ca, addr4(1, 8500)).err(), Some(Errno::EADDRNOTAVAIL));
    // The client closes first: its port sits in TIME-WAIT, so still nothing free...
    let (s, p) = conns.pop().unwrap();
    drop(s);
    let mut buf = [0u8; 1];
    assert_eq!(p.read(&mut buf).unwrap(), 0);
    drop(p);
    assert!(eventually(Duration::from_secs(5), || n.a.server.live_flows() <= 10));
    // ...until TIME-WAIT ends; then the port is reused.
    assert!(eventually(Duration::from_secs(5), || TcpStream::connect(&ca, addr4(1, 8500)).is_ok()));

    // Server side: bind conflicts and SO_REUSEADDR across TIME-WAIT.
    let h = cb.socket(Domain::Inet, SockType::Stream).unwrap();
    assert_eq!(cb.bind(h, &addr4(1, 8500)), Err(Errno::EADDRINUSE), "the listener holds it");
    cb.close(h).unwrap();
    let (s, p) = conns.pop().unwrap();
    drop(p); // server closes first: TIME-WAIT on the server, on the listener's port
    assert_eq!(s.read(&mut buf).unwrap(), 0);
    drop(s);
    drop(l);
    std::thread::sleep(Duration::from_millis(200));
    let h = cb.socket(Domain::Inet, SockType::Stream).unwrap();
    assert_eq!(cb.bind(h, &addr4(1, 8500)), Err(Errno::EADDRINUSE), "TIME-WAIT holds the port");
    cb.setsockopt(h, SockOptValue::ReuseAddr(true)).unwrap();
    cb.bind(h, &addr4(1, 8500)).expect("SO_REUSEADDR binds over TIME-WAIT");
    cb.listen(h, 8).unwrap();
    drop(conns);
}

#[test]
fn loopback_connections_share_the_socket_layer() {
    let n = net(Impairments::default());
    let c = client(&n.a.server);
    let l = TcpListener::bind(&c, addr4(0, 8600)).unwrap();
    let s = TcpStream::connect(&c, libsock::SockAddr::v4(127, 0, 0, 1, 8600)).unwrap();
    let (p, _) = l.accept().unwrap();
    let data = pattern(9, 300_000);
    let d2 = data.clone();
    let w = std::thread::spawn(move || {
        s.write_all(&d2).unwrap();
        s
    });
    let mut got = vec![0u8; data.len()];
    let mut k = 0;
    while k < got.len() {
        k += p.read(&mut got[k..]).unwrap();
    }
    assert_eq!(hash(&got), hash(&data));
    drop(w.join().unwrap());
    let mut b = [0u8; 1];
    assert_eq!(p.read(&mut b).unwrap(), 0, "EOF after the peer closed");
    assert_eq!(TcpStream::connect(&c, libsock::SockAddr::v4(127, 0, 0, 1, 8601)).err(), Some(Errno::ECONNREFUSED));
    drop(p);
    drop(l);
    assert!(eventually(Duration::from_secs(2), || n.a.server.ports_in_use() == 0));
}

#[test]
fn keepalive_and_options_round_trip() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8700)).unwrap();
    let s = Arc::new(TcpStream::connect(&ca, addr4(1, 8700)).unwrap());
    let _p = l.accept().unwrap();
    s.set_nodelay(true).unwrap();
    assert!(s.nodelay().unwrap());
    s.set_keepalive(true).unwrap();
    assert!(s.keepalive().unwrap());
    assert_eq!(s.take_error().unwrap(), None);
    assert_eq!(s.peer_addr().unwrap(), addr4(1, 8700));
}

/// SO_SNDBUF and SO_RCVBUF size the socket's buffers in the server (the bytes between the
/// client's calls and the TCP state): a send never takes more than the send buffer holds, a
/// receive never finds more than the receive buffer holds, and the stream still arrives whole.
/// Values are clamped to 1 KiB..=4 MiB, and the getters report what is in force.
#[test]
fn buffer_size_options_bound_what_one_call_moves() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8701)).unwrap();
    let s = TcpStream::connect(&ca, addr4(1, 8701)).unwrap();
    let (p, _) = l.accept().unwrap();
    let get = |c: &Client, h, opt| c.getsockopt(h, opt).unwrap();
    assert_eq!(get(&ca, s.handle(), SockOpt::SndBuf), SockOptValue::SndBuf(64 * 1024), "the configured default");
    for (asked, in_force) in [(1u32, 1024u32), (u32::MAX, 4 << 20), (4096, 4096)] {
        ca.setsockopt(s.handle(), SockOptValue::SndBuf(asked)).unwrap();
        assert_eq!(get(&ca, s.handle(), SockOpt::SndBuf), SockOptValue::SndBuf(in_force));
    }
    cb.setsockopt(p.handle(), SockOptValue::RcvBuf(2048)).unwrap();
    assert_eq!(get(&cb, p.handle(), SockOpt::RcvBuf), SockOptValue::RcvBuf(2048));

    // One non-blocking send of 256 KiB takes at most the 4 KiB send buffer.
    let data = pattern(3, 256 * 1024);
    s.set_nonblocking(true).unwrap();
    let first = s.write(&data).unwrap();
    assert!(first > 0 && first <= 4096, "one send moved {first} bytes");
    s.set_nonblocking(false).unwrap();
    let rest = data[first..].to_vec();
    let w = std::thread::spawn(move || {
        s.write_all(&rest).unwrap();
        s
    });
    // Every receive finds at most the 2 KiB receive buffer; all of it arrives in order.
    let (mut got, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
    while got.len() < data.len() {
        let k = p.read(&mut buf).unwrap();
        assert!(k > 0 && k <= 2048, "one receive found {k} bytes");
        got.extend_from_slice(&buf[..k]);
    }
    drop(w.join().unwrap());
    assert_eq!(hash(&got), hash(&data));
}

#[test]
fn orphan_in_fin_wait_2_is_reaped() {
    let mut a = config(0);
    a.fin_wait2_timeout = Duration::from_millis(1500);
    let n = net_with(Impairments::default(), a, config(1));
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8800)).unwrap();
    let s = TcpStream::connect(&ca, addr4(1, 8800)).unwrap();
    let (peer, _) = l.accept().unwrap();
    drop(s); // FIN; the peer never closes, so this side waits in FIN-WAIT-2
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0);
    assert!(n.a.server.ports_in_use() == 1, "the orphan still holds its port");
    assert!(eventually(Duration::from_secs(5), || n.a.server.ports_in_use() == 0 && n.a.server.live_flows() == 0));
    drop(peer);
}

#[test]
fn data_before_the_peers_fin_survives_the_end_of_the_connection() {
    // This side shuts down its sending side first, stops reading, and the peer sends more than
    // this side's socket buffer holds, then closes. The rest waits in smoltcp's receive buffer
    // when the connection reaches TIME-WAIT and the flow goes: every byte must still be read
    // before EOF.
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 8900)).unwrap();
    let s = TcpStream::connect(&ca, addr4(1, 8900)).unwrap();
    let (peer, _) = l.accept().unwrap();
    s.shutdown(libsock::Shutdown::Write).unwrap();
    let mut b = [0u8; 1];
    assert_eq!(peer.read(&mut b).unwrap(), 0, "the half-close reached the peer");
    let payload = pattern(9, config(0).socket_buffer + 20_000);
    peer.write_all(&payload).unwrap();
    drop(peer); // FIN after the data
    // Both ends are done (the peer's FIN acknowledged, this side's TIME-WAIT over) before a byte
    // is read here.
    assert!(
        eventually(Duration::from_secs(10), || n.a.server.live_flows() == 0 && n.b.server.live_flows() == 0),
        "flows left: {} + {}",
        n.a.server.live_flows(),
        n.b.server.live_flows()
    );
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let k = s.read(&mut buf).expect("read");
        if k == 0 {
            break;
        }
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got.len(), payload.len(), "bytes before EOF");
    assert!(got == payload, "the data differs");
}
