//! libsock end to end against the in-memory fake server (tests/common): the real client code,
//! codec and data-area copies, over the host transport.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::FakeNet;
use libsock::net_api::{Request, CHUNK_SIZE, MAX_POLL_FDS};
use libsock::*;

const BIG: usize = 1 << 20;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect()
}

fn addr(port: u16) -> SockAddr {
    SockAddr::v4(127, 0, 0, 1, port)
}

fn read_exact<T: Transport>(s: &TcpStream<T>, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = s.read(&mut out[got..]).expect("read");
        assert!(k > 0, "unexpected EOF after {got} bytes");
        got += k;
    }
    out
}

#[test]
fn tcp_echo_between_two_clients_in_two_threads() {
    let net = FakeNet::new(64 * 1024);
    let server = net.client();
    let listener = TcpListener::bind(&server, addr(7)).unwrap();
    assert_eq!(listener.local_addr().unwrap(), addr(7));
    let t = thread::spawn(move || {
        let (s, peer) = listener.accept().unwrap();
        assert_eq!(peer.port(), s.peer_addr().unwrap().port());
        let mut buf = [0u8; 100];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let client = net.client();
    let s = TcpStream::connect(&client, addr(7)).unwrap();
    assert_eq!(s.peer_addr().unwrap(), addr(7));
    for i in 0..50u32 {
        let msg = format!("ping {i}");
        s.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_exact(&s, msg.len()), msg.as_bytes());
    }
    s.shutdown(Shutdown::Write).unwrap();
    t.join().unwrap();
    let mut b = [0u8; 8];
    assert_eq!(s.read(&mut b), Ok(0), "echo side closed: EOF");
}

#[test]
fn one_mib_send_is_one_round_trip_per_64k() {
    let net = FakeNet::new(2 * BIG);
    let a = net.client();
    let l = TcpListener::bind(&a, addr(80)).unwrap();
    let c = net.client();
    let s = TcpStream::connect(&c, addr(80)).unwrap();
    let (r, _) = l.accept().unwrap();
    let data = pattern(BIG);
    let before = c.round_trips();
    assert_eq!(s.write(&data), Ok(BIG));
    let trips = c.round_trips() - before;
    assert_eq!(trips, (BIG / CHUNK_SIZE) as u64, "1 MiB in 64 KiB chunks");
    assert_eq!(trips, 16);
    let before = a.round_trips();
    let got = read_exact(&r, BIG);
    assert_eq!(got, data);
    assert_eq!(a.round_trips() - before, 16, "receive: one round trip per 64 KiB too");
    // Every Send named a 64 KiB buffer inside the TX half, never inline data.
    let sends: Vec<_> = net
        .log()
        .into_iter()
        .filter_map(|r| match r {
            Request::Send { buf, .. } => Some(buf),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 16);
    assert!(sends.iter().all(|b| b.len as usize == CHUNK_SIZE));
}

#[test]
fn blocking_send_waits_for_the_reader_and_keeps_order() {
    // Receive queue of 10 000 bytes: the sender must wait and resume partial chunks.
    let net = FakeNet::new(10_000);
    let a = net.client();
    let l = TcpListener::bind(&a, addr(81)).unwrap();
    let c = net.client();
    let s = TcpStream::connect(&c, addr(81)).unwrap();
    let (r, _) = l.accept().unwrap();
    let data = pattern(300_000);
    let d2 = data.clone();
    let t = thread::spawn(move || {
        assert_eq!(s.write(&d2), Ok(d2.len()));
        s
    });
    let got = read_exact(&r, data.len());
    assert_eq!(got, data);
    let s = t.join().unwrap();
    drop(s);
    let mut b = [0u8; 4];
    assert_eq!(r.read(&mut b), Ok(0), "peer dropped: EOF");
}

#[test]
fn nonblocking_calls_return_eagain() {
    let net = FakeNet::new(1000);
    let a = net.client();
    let l = TcpListener::bind(&a, addr(82)).unwrap();
    l.set_nonblocking(true).unwrap();
    assert_eq!(l.accept().err(), Some(Errno::EAGAIN));
    let c = net.client();
    let s = TcpStream::connect(&c, addr(82)).unwrap();
    let (r, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    r.set_nonblocking(true).unwrap();
    assert!(c.is_nonblocking(s.handle()).unwrap());
    let mut b = [0u8; 10];
    assert_eq!(r.read(&mut b), Err(Errno::EAGAIN));
    // 1000 bytes of room: a 1500-byte write is partial, the next one would block.
    assert_eq!(s.write(&[7u8; 1500]), Ok(1000));
    assert_eq!(s.write(&[7u8; 10]), Err(Errno::EAGAIN));
    assert_eq!(format!("{}", Errno::EAGAIN), "EAGAIN");
    // MSG_DONTWAIT on a blocking socket.
    r.set_nonblocking(false).unwrap();
    let mut big = [0u8; 2000];
    assert_eq!(a.recv(r.handle(), &mut big, MsgFlags::DONTWAIT), Ok(1000));
    assert_eq!(a.recv(r.handle(), &mut big, MsgFlags::DONTWAIT), Err(Errno::EAGAIN));
}

#[test]
fn poll_over_100_sockets_uses_chunks_and_finds_the_ready_one() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let socks: Vec<_> = (0..100).map(|i| UdpSocket::bind(&c, addr(5000 + i)).unwrap()).collect();
    let mut fds: Vec<_> = socks.iter().map(|s| PollFd::new(s.handle(), PollEvents::IN)).collect();
    let before = c.round_trips();
    assert_eq!(c.poll(&mut fds, Some(Duration::ZERO)), Ok(0));
    assert_eq!(c.round_trips() - before, 100u64.div_ceil(MAX_POLL_FDS as u64));
    let sender = UdpSocket::bind(&c, addr(0)).unwrap();
    sender.send_to(b"hi", addr(5077)).unwrap();
    assert_eq!(c.poll(&mut fds, None), Ok(1));
    for (i, fd) in fds.iter().enumerate() {
        assert_eq!(fd.revents == PollEvents::IN, i == 77, "entry {i}: {:?}", fd.revents);
    }
    // A closed handle reports NVAL instead of failing the whole poll.
    let h = socks[3].handle();
    drop(socks);
    let mut fds = [PollFd::new(h, PollEvents::IN)];
    assert_eq!(c.poll(&mut fds, Some(Duration::ZERO)), Ok(1));
    assert_eq!(fds[0].revents, PollEvents::NVAL);
}

#[test]
fn poll_times_out_when_nothing_happens() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let u = UdpSocket::bind(&c, addr(6000)).unwrap();
    let mut fds = [PollFd::new(u.handle(), PollEvents::IN)];
    assert_eq!(c.poll(&mut fds, Some(Duration::from_millis(20))), Ok(0));
    assert_eq!(fds[0].revents, PollEvents::NONE);
}

#[test]
fn blocked_reader_is_woken_by_another_thread_many_times() {
    // Ping-pong 300 times: a lost wake-up would hang this test.
    let net = FakeNet::new(4096);
    let a = net.client();
    let l = TcpListener::bind(&a, addr(83)).unwrap();
    let c = net.client();
    let t = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut b = [0u8; 4];
        for i in 0..300u32 {
            let v = read_exact(&s, 4);
            assert_eq!(v, i.to_le_bytes());
            b.copy_from_slice(&v);
            s.write_all(&(i + 1).to_le_bytes()).unwrap();
        }
    });
    let s = TcpStream::connect(&c, addr(83)).unwrap();
    for i in 0..300u32 {
        s.write_all(&i.to_le_bytes()).unwrap();
        assert_eq!(read_exact(&s, 4), (i + 1).to_le_bytes());
    }
    t.join().unwrap();
}

#[test]
fn connect_errors_come_back_as_errno_names() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let e = TcpStream::connect(&c, addr(9)).err().unwrap();
    assert_eq!(e, Errno::ECONNREFUSED);
    assert_eq!(e.to_string(), "ECONNREFUSED");
    let io: std::io::Error = e.into();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(io.to_string(), "ECONNREFUSED");
    // Non-blocking connect: EINPROGRESS, then poll reports the error and SO_ERROR holds it.
    let h = c.socket(Domain::Inet, SockType::Stream).unwrap();
    c.set_nonblocking(h, true).unwrap();
    assert_eq!(c.connect(h, &addr(9)), Err(Errno::EINPROGRESS));
    let mut fds = [PollFd::new(h, PollEvents::OUT)];
    assert_eq!(c.poll(&mut fds, Some(Duration::ZERO)), Ok(1));
    assert!(fds[0].revents.contains(PollEvents::ERR));
    assert_eq!(c.getsockopt(h, SockOpt::Error), Ok(SockOptValue::Error(Some(Errno::ECONNREFUSED))));
    assert_eq!(c.getsockopt(h, SockOpt::Error), Ok(SockOptValue::Error(None)), "SO_ERROR clears");
    c.close(h).unwrap();
    assert_eq!(c.close(h), Err(Errno::EBADF));
    // Address in use.
    let _l = TcpListener::bind(&c, addr(84)).unwrap();
    assert_eq!(TcpListener::bind(&c, addr(84)).err(), Some(Errno::EADDRINUSE));
}

#[test]
fn udp_send_to_recv_from_peek_and_truncation() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let a = UdpSocket::bind(&c, addr(53)).unwrap();
    let b = UdpSocket::bind(&c, addr(0)).unwrap();
    let b_addr = b.local_addr().unwrap();
    assert_ne!(b_addr.port(), 0, "port 0 binds an ephemeral port");
    assert_eq!(b.send_to(b"hello", addr(53)), Ok(5));
    let mut buf = [0u8; 16];
    assert_eq!(a.peek_from(&mut buf), Ok((5, b_addr)));
    assert_eq!(a.recv_from(&mut buf), Ok((5, b_addr)));
    assert_eq!(&buf[..5], b"hello");
    // Truncation: a 5-byte buffer gets the first 5 bytes; the rest of the datagram is gone.
    b.send_to(b"0123456789", addr(53)).unwrap();
    let mut small = [0u8; 5];
    assert_eq!(a.recv_from(&mut small), Ok((5, b_addr)));
    assert_eq!(&small, b"01234");
    a.set_nonblocking(true).unwrap();
    assert_eq!(a.recv_from(&mut buf).err(), Some(Errno::EAGAIN));
    // Connected UDP.
    b.connect(addr(53)).unwrap();
    assert_eq!(b.peer_addr(), Ok(addr(53)));
    b.send(b"x").unwrap();
    assert_eq!(a.recv(&mut buf), Ok(1));
    // A datagram larger than one slot is refused before any round trip.
    let before = c.round_trips();
    assert_eq!(b.send_to(&vec![0u8; CHUNK_SIZE + 1], addr(53)), Err(Errno::EMSGSIZE));
    assert_eq!(c.round_trips(), before);
    // An empty datagram is still a datagram.
    assert_eq!(b.send_to(&[], addr(53)), Ok(0));
    a.set_nonblocking(false).unwrap();
    assert_eq!(a.recv_from(&mut buf), Ok((0, b_addr)));
}

#[test]
fn socket_options_round_trip() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let l = TcpListener::bind(&c, addr(85)).unwrap();
    let s = TcpStream::connect(&c, addr(85)).unwrap();
    let _r = l.accept().unwrap();
    assert_eq!(s.nodelay(), Ok(false));
    s.set_nodelay(true).unwrap();
    assert_eq!(s.nodelay(), Ok(true));
    s.set_keepalive(true).unwrap();
    assert_eq!(s.keepalive(), Ok(true));
    let h = s.handle();
    c.setsockopt(h, SockOptValue::RcvBuf(12345)).unwrap();
    assert_eq!(c.getsockopt(h, SockOpt::RcvBuf), Ok(SockOptValue::RcvBuf(12345)));
    c.setsockopt(h, SockOptValue::SndBuf(777)).unwrap();
    assert_eq!(c.getsockopt(h, SockOpt::SndBuf), Ok(SockOptValue::SndBuf(777)));
    assert_eq!(c.getsockopt(l.handle(), SockOpt::ReuseAddr), Ok(SockOptValue::ReuseAddr(true)));
    s.set_nonblocking(true).unwrap();
    assert_eq!(c.getsockopt(h, SockOpt::NonBlocking), Ok(SockOptValue::NonBlocking(true)));
    assert_eq!(c.setsockopt(h, SockOptValue::Error(None)), Err(Errno::ENOPROTOOPT));
    assert_eq!(s.take_error(), Ok(None));
}

#[test]
fn drop_closes_sockets() {
    let net = FakeNet::new(1000);
    let c = net.client();
    {
        let l = TcpListener::bind(&c, addr(86)).unwrap();
        let s = TcpStream::connect(&c, addr(86)).unwrap();
        let (r, _) = l.accept().unwrap();
        assert_eq!(net.open_sockets(), 3);
        drop(s);
        let mut b = [0u8; 1];
        assert_eq!(r.read(&mut b), Ok(0));
        assert_eq!(r.write(b"x"), Err(Errno::EPIPE));
    }
    assert_eq!(net.open_sockets(), 0);
}

#[test]
fn embedded_io_and_std_io_traits() {
    let net = FakeNet::new(100_000);
    let c = net.client();
    let l = TcpListener::bind(&c, addr(87)).unwrap();
    let mut s = TcpStream::connect(&c, addr(87)).unwrap();
    let (mut r, _) = l.accept().unwrap();
    fn ew<W: embedded_io::Write>(w: &mut W, d: &[u8]) -> Result<(), W::Error> {
        w.write_all(d)?;
        w.flush()
    }
    fn er<R: embedded_io::Read>(r: &mut R, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        r.read_exact(&mut v).map_err(|_| ()).unwrap();
        v
    }
    ew(&mut s, b"embedded").unwrap();
    use embedded_io::ReadReady;
    assert_eq!(r.read_ready(), Ok(true));
    assert_eq!(er(&mut r, 8), b"embedded");
    assert_eq!(r.read_ready(), Ok(false));
    use std::io::{Read, Write};
    Write::write_all(&mut s, b"std").unwrap();
    let mut v = [0u8; 3];
    Read::read_exact(&mut r, &mut v).unwrap();
    assert_eq!(&v, b"std");
    r.set_nonblocking(true).unwrap();
    let e = Read::read(&mut r, &mut v).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn server_restart_is_reported_and_reconnect_recovers() {
    let net = FakeNet::new(1000);
    let c = net.client();
    let u = UdpSocket::bind(&c, addr(88)).unwrap();
    let epoch = c.epoch();
    net.restart();
    assert_eq!(u.local_addr(), Err(Errno::ServerRestarted));
    assert_eq!(Errno::ServerRestarted.to_string(), "ESERVERRESTARTED");
    c.reconnect().unwrap();
    assert_ne!(c.epoch(), epoch);
    let u2 = UdpSocket::bind(&c, addr(88)).unwrap();
    assert_eq!(u2.local_addr(), Ok(addr(88)));
    drop(u); // closing a stale handle fails quietly
}

/// Four threads of client `c` each send 200 kB (a pattern of their own) to a listener of
/// another client on `port`, all at once through `c`'s two slots; every stream arrives whole.
fn four_concurrent_senders<T: Transport + 'static>(net: &FakeNet, c: &Arc<Client<T>>, port: u16)
where
    Client<T>: Send + Sync,
{
    let srv = net.client();
    let l = TcpListener::bind(&srv, addr(port)).unwrap();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for k in 0..4u8 {
        let s = TcpStream::connect(c, addr(port)).unwrap();
        let (r, _) = l.accept().unwrap();
        let data: Vec<u8> = pattern(200_000).into_iter().map(|b| b.wrapping_add(k)).collect();
        receivers.push((r, data.clone()));
        senders.push(thread::spawn(move || {
            assert_eq!(s.write(&data), Ok(data.len()));
            s
        }));
    }
    let streams: Vec<_> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    for (r, data) in receivers {
        assert_eq!(read_exact(&r, data.len()), data);
    }
    drop(streams);
}

#[test]
fn concurrent_senders_share_two_slots_without_mixing_data() {
    let net = FakeNet::new(4 * BIG);
    four_concurrent_senders(&net, &net.client(), 89);
}

#[test]
fn threads_of_one_client_blocked_on_different_sockets_all_wake() {
    // Three threads of one client block in recv on three sockets; one notification serves them
    // all. Data arrives for one socket at a time and its thread must wake, whichever thread
    // happens to consume the notification. (A client whose threads each waited on the
    // transport directly fails this: the wrong thread eats the signal and the right one sleeps.)
    use std::sync::mpsc;
    for round in 0..10u16 {
        let net = FakeNet::new(1000);
        let c = net.client();
        let base = 7000 + round * 10;
        let (done_tx, done_rx) = mpsc::channel();
        for i in 0..3u16 {
            let s = UdpSocket::bind(&c, addr(base + i)).unwrap();
            let done = done_tx.clone();
            thread::spawn(move || {
                let mut b = [0u8; 8];
                let (n, _) = s.recv_from(&mut b).unwrap();
                done.send((i, b[..n].to_vec())).unwrap();
            });
        }
        // Let all three block.
        thread::sleep(Duration::from_millis(20));
        let other = net.client();
        let tx = UdpSocket::bind(&other, addr(0)).unwrap();
        for i in [2u16, 0, 1] {
            tx.send_to(&[i as u8], addr(base + i)).unwrap();
            let got = done_rx.recv_timeout(Duration::from_secs(10)).expect("blocked thread never woke");
            assert_eq!(got, (i, vec![i as u8]));
        }
    }
}

/// A host transport that counts how often a thread polled (`relax`) instead of parking.
struct Counting {
    inner: libsock::host::HostTransport,
    relaxed: std::sync::atomic::AtomicU64,
}

impl Transport for Counting {
    type Region = <libsock::host::HostTransport as Transport>::Region;
    type RawLock = <libsock::host::HostTransport as Transport>::RawLock;
    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        self.inner.call(request, response)
    }
    fn wait(&self, timeout: Option<Duration>) -> Wake {
        self.inner.wait(timeout)
    }
    fn now(&self) -> Duration {
        self.inner.now()
    }
    fn region(&self) -> &Self::Region {
        self.inner.region()
    }
    fn relax(&self) {
        self.relaxed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.relax()
    }
    fn park_until(&self, ready: &dyn Fn() -> bool) {
        self.inner.park_until(ready)
    }
    fn unpark_all(&self) {
        self.inner.unpark_all()
    }
}

#[test]
fn threads_waiting_for_each_other_park_instead_of_polling() {
    // Four threads of one client block in recv (one of them in the transport's wait, the others
    // behind it), then four threads send 200 kB each through the client's two slots. Nobody
    // polls: on seL4 a polling thread would keep lower priorities on its core from running.
    use std::sync::atomic::{AtomicU64, Ordering};
    let net = FakeNet::new(4 * BIG);
    let c = Arc::new(Client::new(Counting { inner: net.transport(), relaxed: AtomicU64::new(0) }).unwrap());
    let mut readers = Vec::new();
    for i in 0..4u16 {
        let s = UdpSocket::bind(&c, addr(7100 + i)).unwrap();
        readers.push(thread::spawn(move || {
            let mut b = [0u8; 8];
            let (n, _) = s.recv_from(&mut b).unwrap();
            b[..n].to_vec()
        }));
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(c.transport().relaxed.load(Ordering::Relaxed), 0, "blocked threads polled");
    let other = net.client();
    let tx = UdpSocket::bind(&other, addr(0)).unwrap();
    for i in 0..4u16 {
        tx.send_to(&[i as u8], addr(7100 + i)).unwrap();
    }
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(r.join().unwrap(), vec![i as u8]);
    }

    four_concurrent_senders(&net, &c, 7110);
    assert_eq!(c.transport().relaxed.load(Ordering::Relaxed), 0, "threads waiting for a slot polled");
}
