//! Timers keep firing while another socket saturates the worker (the NetBSD seed's softint
//! starvation), shown deterministically: two single-worker servers driven by this thread with a
//! simulated clock; one worker's receive queue is flooded with datagrams for socket B (each frame
//! costs 50 µs of simulated time) while connection A sits idle with keep-alive on. With the
//! bounded ingress budget A's keep-alives go out on time during the flood; with an unbounded
//! budget (the control, i.e. smoltcp's plain `poll`) none go out until the flood ends.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libsock::net_api::{Domain, Errno, SockAddr, SockOptValue, SockType};
use netserver_core::host::HostServer;
use netserver_core::platform::{Clock, FrameRx, FrameTx};
use netserver_core::wake::{NoSignal, Signal};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpPacket, UdpPacket, UdpRepr,
};

#[derive(Default)]
struct SimClock(AtomicU64);
impl Clock for SimClock {
    fn now_micros(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

type Q = Arc<Mutex<VecDeque<Vec<u8>>>>;

struct Flood {
    frame: Vec<u8>,
    left: u64,
}

struct Rx {
    q: Q,
    flood: Arc<Mutex<Flood>>,
    clock: Arc<SimClock>,
}

impl FrameRx for Rx {
    fn peek<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if let Some(fr) = self.q.lock().unwrap().front() {
            return Some(f(fr));
        }
        let fl = self.flood.lock().unwrap();
        (fl.left > 0).then(|| f(&fl.frame))
    }
    fn recv<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if let Some(fr) = self.q.lock().unwrap().pop_front() {
            return Some(f(&fr));
        }
        let mut fl = self.flood.lock().unwrap();
        if fl.left == 0 {
            return None;
        }
        fl.left -= 1;
        // Each flood frame costs 50 µs.
        self.clock.0.fetch_add(50, Ordering::SeqCst);
        Some(f(&fl.frame))
    }
    fn pending(&self) -> bool {
        !self.q.lock().unwrap().is_empty() || self.flood.lock().unwrap().left > 0
    }
}

struct Tx(Q);
impl FrameTx for Tx {
    fn max_frame(&self) -> usize {
        1514
    }
    fn can_send(&self) -> bool {
        true
    }
    fn send<T>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> Option<T> {
        let mut b = vec![0u8; len];
        let r = f(&mut b);
        self.0.lock().unwrap().push_back(b);
        Some(r)
    }
}

fn udp_frame(dst_port: u16) -> Vec<u8> {
    let payload = [0x55u8; 64];
    let udp = UdpRepr { src_port: 9999, dst_port };
    let ip = Ipv4Repr {
        src_addr: common::V4[1],
        dst_addr: common::V4[0],
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 2]),
        dst_addr: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + udp.header_len() + payload.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &ChecksumCapabilities::default());
    let mut u = UdpPacket::new_unchecked(p.payload_mut());
    udp.emit(
        &mut u,
        &IpAddress::Ipv4(ip.src_addr),
        &IpAddress::Ipv4(ip.dst_addr),
        payload.len(),
        |b| b.copy_from_slice(&payload),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// Segments of the TCP connection from local port `port` in `frames`, as (count).
fn segments_from(frames: &[Vec<u8>], port: u16) -> usize {
    frames
        .iter()
        .filter(|fr| {
            let Ok(e) = EthernetFrame::new_checked(&fr[..]) else { return false };
            if e.ethertype() != EthernetProtocol::Ipv4 {
                return false;
            }
            let Ok(p) = Ipv4Packet::new_checked(e.payload()) else { return false };
            if p.next_header() != IpProtocol::Tcp {
                return false;
            }
            TcpPacket::new_checked(p.payload()).is_ok_and(|t| t.src_port() == port)
        })
        .count()
}

/// Returns how many keep-alives connection A sent while the flood lasted.
fn run(ingress_budget: usize) -> (usize, u64) {
    let clock = Arc::new(SimClock::default());
    let mk = |side: usize| {
        let mut cfg = common::config(side);
        cfg.workers = 1;
        cfg.ingress_budget = ingress_budget;
        cfg.keepalive_interval = Duration::from_millis(50);
        cfg.connect_timeout = Duration::from_secs(600);
        HostServer::new(cfg, clock.clone(), vec![Arc::new(NoSignal) as Arc<dyn Signal>]).unwrap()
    };
    let (sa, sb) = (mk(0), mk(1));
    let (qa, qb): (Q, Q) = Default::default();
    let (ta, tb): (Q, Q) = Default::default();
    let flood = Arc::new(Mutex::new(Flood { frame: udp_frame(7000), left: 0 }));
    let no_flood = Arc::new(Mutex::new(Flood { frame: Vec::new(), left: 0 }));
    let mut wa = sa.worker(0, Rx { q: qa.clone(), flood: flood.clone(), clock: clock.clone() }, Tx(ta.clone())).unwrap();
    let mut wb = sb.worker(0, Rx { q: qb.clone(), flood: no_flood, clock: clock.clone() }, Tx(tb.clone())).unwrap();
    let mut sent_by_a: Vec<Vec<u8>> = Vec::new();
    let mut step = |sent_by_a: &mut Vec<Vec<u8>>| {
        wa.poll();
        let frames: Vec<Vec<u8>> = ta.lock().unwrap().drain(..).collect();
        sent_by_a.extend(frames.iter().cloned());
        qb.lock().unwrap().extend(frames);
        wb.poll();
        let frames: Vec<Vec<u8>> = tb.lock().unwrap().drain(..).collect();
        qa.lock().unwrap().extend(frames);
        clock.0.fetch_add(1000, Ordering::SeqCst);
    };
    for (s, id) in [(&sa, 1u64), (&sb, 2u64)] {
        s.register_client(id, Arc::new(NoSignal), None).unwrap();
    }
    // B listens; A connects (connection A) and turns keep-alive on.
    let l = sb.socket(2, Domain::Inet, SockType::Stream).unwrap();
    sb.bind(2, l, SockAddr::v4(10, 0, 0, 2, 80)).unwrap();
    sb.listen(2, l, 4).unwrap();
    let c = sa.socket(1, Domain::Inet, SockType::Stream).unwrap();
    assert_eq!(sa.connect(1, c, SockAddr::v4(10, 0, 0, 2, 80)), Err(Errno::EINPROGRESS));
    for _ in 0..50 {
        step(&mut sent_by_a);
    }
    assert!(sb.accept(2, l).is_ok(), "connection A established");
    let port = match sa.local_addr(1, c).unwrap() {
        SockAddr::V4(a) => a.port,
        _ => unreachable!(),
    };
    sa.set_option(1, c, SockOptValue::KeepAlive(true)).unwrap();
    // Socket B: a bound UDP socket whose owner never reads.
    let u = sa.socket(1, Domain::Inet, SockType::Datagram).unwrap();
    sa.bind(1, u, SockAddr::v4(10, 0, 0, 1, 7000)).unwrap();
    for _ in 0..5 {
        step(&mut sent_by_a);
    }
    // The flood: 200 000 datagrams at 50 µs each, 10 s of simulated time.
    sent_by_a.clear();
    flood.lock().unwrap().left = 200_000;
    let start = clock.0.load(Ordering::SeqCst);
    while flood.lock().unwrap().left > 0 {
        step(&mut sent_by_a);
    }
    let elapsed = clock.0.load(Ordering::SeqCst) - start;
    (segments_from(&sent_by_a, port), elapsed)
}

#[test]
fn keepalive_fires_on_time_while_another_socket_floods_the_worker() {
    let (bounded, us) = run(32);
    // 10 s of flood at a 50 ms keep-alive interval: about 200 keep-alives if the timer is never
    // late. Allow a generous margin; starvation gives 0 (see the control below).
    assert!(us >= 10_000_000, "flood lasted {us} us");
    assert!(bounded >= 150, "only {bounded} keep-alives during a {us} us flood");

    // Control: the same flood with an unbounded ingress budget starves the timer completely,
    // which shows that this test can fail.
    let (unbounded, _) = run(usize::MAX);
    eprintln!("keep-alives during the flood: bounded budget {bounded}, unbounded {unbounded}");
    assert!(unbounded <= 1, "control: {unbounded} keep-alives with an unbounded budget");
}

/// The same property on the real threaded system: one worker per server, connection B moving
/// data as fast as it can, connection A idle with keep-alive on; A's keep-alives keep going out
/// while B saturates the worker.
#[test]
fn keepalive_fires_while_a_bulk_transfer_saturates_the_same_worker() {
    use common::*;
    use libsock::{TcpListener, TcpStream};
    use netserver_core::host::{tap, Impairments};
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    let mut a = config(0);
    let mut b = config(1);
    a.workers = 1;
    b.workers = 1;
    let n = net_with(Impairments::default(), a, b);
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let l = TcpListener::bind(&cb, addr4(1, 9300)).unwrap();
    let conn_a = TcpStream::connect(&ca, addr4(1, 9300)).unwrap();
    let (_peer_a, _) = l.accept().unwrap();
    let port_a = match conn_a.local_addr().unwrap() {
        SockAddr::V4(x) => x.port,
        _ => unreachable!(),
    };
    let counting = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    {
        let (counting, seen) = (counting.clone(), seen.clone());
        n.link.set_tap(Some(tap(move |from, frame| {
            if from == 0 && counting.load(Ordering::Relaxed) && segments_from(&[frame.to_vec()], port_a) == 1 {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        })));
    }
    conn_a.set_keepalive(true).unwrap();
    // Connection B: a bulk transfer from side 0 to side 1 on the same (only) worker.
    let conn_b = TcpStream::connect(&ca, addr4(1, 9300)).unwrap();
    let (peer_b, _) = l.accept().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        let mut total = 0usize;
        loop {
            match peer_b.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(k) => total += k,
            }
        }
    });
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let chunk = vec![0x5au8; 65536];
    while start.elapsed() < Duration::from_millis(1500) {
        conn_b.write_all(&chunk).unwrap();
    }
    counting.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    drop(conn_b);
    let moved = reader.join().unwrap();
    let ka = seen.load(Ordering::Relaxed);
    eprintln!("{ka} keep-alive segments on A while B moved {moved} bytes in {elapsed:?}");
    assert!(moved > 1 << 20, "B did not saturate anything ({moved} bytes)");
    // 50 ms interval over 1.5 s: about 30 if on time; demand a few, not punctuality.
    assert!(ka >= 5, "only {ka} keep-alives during the transfer");
}
