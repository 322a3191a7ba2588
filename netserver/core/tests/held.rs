//! Held calls (`Server::handle_holding` / `Server::resume`): a blocking stream send with
//! `MsgFlags::HOLD` is answered once, when all of its buffer is in the socket, or when the
//! socket fails or closes; every held call ends, also when its client is closed as dead.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libsock::net_api::{
    decode_response, encode_request, AtomicRegion, BufDesc, DataArea, DataAreaLayout, Domain, Errno, MsgFlags,
    Request, Response, SockAddr, SockType, SocketHandle, MAX_MSG,
};
use libsock::TcpListener;
use netserver_core::held::Answer;
use netserver_core::host::{HostServer, Impairments};
use netserver_core::wake::{NoSignal, Signal};

#[derive(Default)]
struct Count(AtomicUsize);
impl Signal for Count {
    fn signal(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A client that builds requests by hand, with its data area.
struct Raw {
    server: HostServer,
    id: u64,
    epoch: u32,
    area: DataArea<Arc<AtomicRegion>>,
}

impl Raw {
    fn new(server: &HostServer, id: u64) -> Raw {
        let layout: DataAreaLayout = server.config().layout;
        let region = Arc::new(AtomicRegion::for_layout(&layout));
        server.register_client(id, Arc::new(NoSignal), Some(region.clone())).unwrap();
        Raw { server: server.clone(), id, epoch: server.config().epoch, area: DataArea::new(layout, region).unwrap() }
    }

    fn encode(&self, req: &Request) -> Vec<u8> {
        let mut buf = [0u8; MAX_MSG];
        let n = encode_request(self.epoch, req, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn call(&self, req: Request) -> Response {
        let mut out = [0u8; MAX_MSG];
        let n = self.server.handle(self.id, &self.encode(&req), &mut out);
        decode_response(&out[..n]).unwrap()
    }

    /// A connected stream socket to `to`.
    fn connect(&self, to: SockAddr) -> SocketHandle {
        let Response::Socket(h) = self.call(Request::Socket { domain: Domain::Inet, ty: SockType::Stream }) else {
            panic!("socket")
        };
        for _ in 0..1000 {
            match self.call(Request::Connect { handle: h, addr: to }) {
                Response::Ok | Response::Error(Errno::EISCONN) => return h,
                Response::Error(Errno::EINPROGRESS | Errno::EALREADY | Errno::EAGAIN) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                r => panic!("connect: {r:?}"),
            }
        }
        panic!("connect timed out")
    }

    /// A 64 KiB send of `byte` from TX slot 0, through the holding entry point.
    fn send_slot(&self, h: SocketHandle, byte: u8, flags: MsgFlags, holder: &Arc<dyn Signal>) -> Answer<netserver_core::host::HostRaw> {
        let slot = self.area.layout().tx_slot(0).unwrap();
        self.area.write_tx(slot, &vec![byte; slot.len as usize]).unwrap();
        let req = self.encode(&Request::Send { handle: h, buf: slot, flags, to: None });
        let mut out = [0u8; MAX_MSG];
        self.server.handle_holding(self.id, &req, &mut out, holder, true)
    }
}

fn answer(out: &[u8], len: usize) -> Response {
    decode_response(&out[..len]).unwrap()
}

fn slot_len(r: &Raw) -> usize {
    r.area.layout().tx_slot(0).map_or(0, |s: BufDesc| s.len as usize)
}

/// A listener on the server's loopback, a raw client connected to it, the accepted stream.
fn pair(port: u16) -> (common::Net, Raw, SocketHandle, libsock::TcpStream<libsock::host::HostTransport>) {
    let n = common::net(Impairments::default());
    let app = common::client(&n.a.server);
    let l = TcpListener::bind(&app, SockAddr::v4(127, 0, 0, 1, port)).unwrap();
    let raw = Raw::new(&n.a.server, 7);
    let h = raw.connect(SockAddr::v4(127, 0, 0, 1, port));
    let (s, _) = l.accept().unwrap();
    (n, raw, h, s)
}

fn read_exactly(s: &libsock::TcpStream<libsock::host::HostTransport>, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < len {
        let want = (len - got.len()).min(buf.len());
        let k = s.read(&mut buf[..want]).unwrap();
        assert!(k > 0, "early EOF after {}", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

#[test]
fn a_held_send_is_answered_once_when_all_its_bytes_are_taken() {
    let (_n, raw, h, s) = pair(5001);
    let count = Arc::new(Count::default());
    let holder: Arc<dyn Signal> = count.clone();
    let len = slot_len(&raw);
    // The first slot fills the receiver's socket buffer; the second cannot fit: held.
    let mut out = [0u8; MAX_MSG];
    let mut held = Vec::new();
    for byte in [1u8, 2] {
        match raw.send_slot(h, byte, MsgFlags::HOLD, &holder) {
            Answer::Reply(_) => {}
            Answer::Hold(x) => held.push(x),
        }
    }
    assert_eq!(held.len(), 1, "the second slot must be held");
    let mut held = held.pop().unwrap();
    assert_eq!(held.client(), 7);
    assert!(held.taken() < len);
    assert_eq!(count.0.load(Ordering::SeqCst), 0, "nobody read yet: no signal");
    // The receiver drains: the holder is signalled, and resuming finishes the call in full.
    let reader = std::thread::spawn(move || read_exactly(&s, 2 * len));
    let mut done = None;
    assert!(common::eventually(Duration::from_secs(10), || {
        if count.0.swap(0, Ordering::SeqCst) > 0 {
            done = raw.server.resume(&mut held, &mut out, &holder);
        }
        done.is_some()
    }));
    assert_eq!(answer(&out, done.unwrap()), Response::Sent { len: len as u32 });
    let got = reader.join().unwrap();
    assert!(got[..len].iter().all(|&b| b == 1) && got[len..].iter().all(|&b| b == 2));
}

#[test]
fn without_hold_or_without_room_to_hold_the_answer_is_immediate() {
    let (_n, raw, h, _s) = pair(5002);
    let holder: Arc<dyn Signal> = Arc::new(Count::default());
    assert!(matches!(raw.send_slot(h, 1, MsgFlags::HOLD, &holder), Answer::Reply(_)));
    // Full now: no HOLD flag means EAGAIN, as before.
    let mut out = [0u8; MAX_MSG];
    let slot = raw.area.layout().tx_slot(0).unwrap();
    let req = raw.encode(&Request::Send { handle: h, buf: slot, flags: MsgFlags::NONE, to: None });
    let Answer::Reply(n) = raw.server.handle_holding(raw.id, &req, &mut out, &holder, true) else { panic!("held") };
    assert_eq!(answer(&out, n), Response::Error(Errno::EAGAIN));
    // HOLD but the transport has no room to keep a call: EAGAIN too.
    let req = raw.encode(&Request::Send { handle: h, buf: slot, flags: MsgFlags::HOLD, to: None });
    let Answer::Reply(n) = raw.server.handle_holding(raw.id, &req, &mut out, &holder, false) else { panic!("held") };
    assert_eq!(answer(&out, n), Response::Error(Errno::EAGAIN));
    // HOLD with DONTWAIT: DONTWAIT wins.
    let req = raw.encode(&Request::Send { handle: h, buf: slot, flags: MsgFlags::HOLD | MsgFlags::DONTWAIT, to: None });
    let Answer::Reply(n) = raw.server.handle_holding(raw.id, &req, &mut out, &holder, true) else { panic!("held") };
    assert_eq!(answer(&out, n), Response::Error(Errno::EAGAIN));
}

#[test]
fn closing_the_socket_ends_a_held_send() {
    let (_n, raw, h, _s) = pair(5003);
    let count = Arc::new(Count::default());
    let holder: Arc<dyn Signal> = count.clone();
    assert!(matches!(raw.send_slot(h, 1, MsgFlags::HOLD, &holder), Answer::Reply(_)));
    let Answer::Hold(mut held) = raw.send_slot(h, 2, MsgFlags::HOLD, &holder) else { panic!("not held") };
    // Another thread of the client closes the socket; its handle may be reused at once.
    assert_eq!(raw.call(Request::Close { handle: h }), Response::Ok);
    assert!(count.0.load(Ordering::SeqCst) > 0, "the holder was signalled");
    let mut out = [0u8; MAX_MSG];
    let n = raw.server.resume(&mut held, &mut out, &holder).expect("a closed socket ends the call");
    match answer(&out, n) {
        Response::Sent { len } => assert_eq!(len as usize, held.taken()),
        Response::Error(_) => assert_eq!(held.taken(), 0),
        r => panic!("{r:?}"),
    }
}

#[test]
fn a_dead_client_s_held_send_ends_and_its_successor_is_untouched() {
    let (n, raw, h, s) = pair(5004);
    let count = Arc::new(Count::default());
    let holder: Arc<dyn Signal> = count.clone();
    assert!(matches!(raw.send_slot(h, 1, MsgFlags::HOLD, &holder), Answer::Reply(_)));
    let Answer::Hold(mut held) = raw.send_slot(h, 2, MsgFlags::HOLD, &holder) else { panic!("not held") };
    let taken = held.taken();
    // The client dies: the supervisor's notice closes its sockets; a new instance registers
    // with the same id and opens a socket (possibly with the same handle value).
    n.a.server.close_client(7);
    assert!(count.0.load(Ordering::SeqCst) > 0, "the holder was signalled");
    let fresh = Raw::new(&n.a.server, 7);
    assert!(matches!(fresh.call(Request::Socket { domain: Domain::Inet, ty: SockType::Stream }), Response::Socket(_)));
    let mut out = [0u8; MAX_MSG];
    let k = n.a.server.resume(&mut held, &mut out, &holder).expect("the call ends");
    assert!(matches!(answer(&out, k), Response::Sent { .. } | Response::Error(_)));
    assert_eq!(held.taken(), taken, "no byte of the dead client's call went anywhere after its death");
    drop(s);
}

#[test]
fn other_requests_get_the_same_answers_as_through_handle() {
    let (_n, raw, h, _s) = pair(5005);
    let holder: Arc<dyn Signal> = Arc::new(Count::default());
    let ask = |bytes: &[u8]| {
        let (mut a, mut b) = ([0u8; MAX_MSG], [0u8; MAX_MSG]);
        let n = raw.server.handle(raw.id, bytes, &mut a);
        let Answer::Reply(m) = raw.server.handle_holding(raw.id, bytes, &mut b, &holder, true) else { panic!("held") };
        assert_eq!(a[..n], b[..m]);
        answer(&b, m)
    };
    let opt = ask(&raw.encode(&Request::GetSockOpt { handle: h, opt: libsock::net_api::SockOpt::RcvBuf }));
    assert!(matches!(opt, Response::SockOpt(_)));
    assert_eq!(ask(&[0xff, 0xff, 0xff]), Response::Error(Errno::EBADMSG));
    let mut stale = raw.encode(&Request::Close { handle: h });
    stale[0] ^= 1; // another epoch
    assert!(matches!(ask(&stale), Response::Error(_)));
}

#[test]
fn a_call_given_back_is_answered_like_an_ordinary_send() {
    let (_n, raw, h, s) = pair(5006);
    let holder: Arc<dyn Signal> = Arc::new(Count::default());
    assert!(matches!(raw.send_slot(h, 1, MsgFlags::HOLD, &holder), Answer::Reply(_)));
    let Answer::Hold(held) = raw.send_slot(h, 2, MsgFlags::HOLD, &holder) else { panic!("not held") };
    let taken = held.taken();
    let mut out = [0u8; MAX_MSG];
    let n = raw.server.give_back(held, &mut out);
    if taken > 0 {
        assert_eq!(answer(&out, n), Response::Sent { len: taken as u32 });
    } else {
        assert_eq!(answer(&out, n), Response::Error(Errno::EAGAIN));
    }
    drop(s);
}

/// Adapts libsock's host notification to the server's [`Signal`].
struct Wakes(Arc<libsock::host::Signal>);
impl Signal for Wakes {
    fn signal(&self) {
        self.0.signal();
    }
}

/// A libsock client whose calls go through [`HostServer::handle_holding`]: a held call blocks
/// its caller until [`HostServer::resume`] answers it, as the seL4 transport's saved reply does.
fn holding_client(server: &HostServer, id: u64, holds: Arc<AtomicUsize>) -> libsock::Client<libsock::host::HostTransport> {
    let layout = server.config().layout;
    let region = Arc::new(AtomicRegion::for_layout(&layout));
    let wakes = Arc::new(libsock::host::Signal::new());
    server.register_client(id, Arc::new(Wakes(wakes.clone())), Some(region.clone())).unwrap();
    let s = server.clone();
    let transport = libsock::host::HostTransport::new(region, wakes, move |req: &[u8], resp: &mut [u8]| {
        let holder_wakes = Arc::new(libsock::host::Signal::new());
        let holder: Arc<dyn Signal> = Arc::new(Wakes(holder_wakes.clone()));
        match s.handle_holding(id, req, resp, &holder, true) {
            Answer::Reply(n) => Ok(n),
            Answer::Hold(mut held) => loop {
                holds.fetch_add(1, Ordering::Relaxed);
                if holder_wakes.wait(Some(Duration::from_secs(30))) == libsock::Wake::TimedOut {
                    return Err(Errno::ETIMEDOUT);
                }
                if let Some(n) = s.resume(&mut held, resp, &holder) {
                    return Ok(n);
                }
            },
        }
    });
    libsock::Client::new(transport).unwrap()
}

/// The data-area design's promise, against the real server and a real (lossy) link: a blocking
/// 1 MiB send costs one control round trip per 64 KiB slot, however slowly the peer reads.
#[test]
fn a_one_mib_send_is_one_round_trip_per_64_kib() {
    const MIB: usize = 1 << 20;
    let n = common::net(Impairments { loss_ppm: 2_000, duplicate_ppm: 2_000, reorder_ppm: 5_000, seed: 7 });
    let server_app = common::client(&n.b.server);
    let l = TcpListener::bind(&server_app, common::addr4(1, 5007)).unwrap();
    let holds = Arc::new(AtomicUsize::new(0));
    let sender = Arc::new(holding_client(&n.a.server, 9, holds.clone()));
    let s = libsock::TcpStream::connect(&sender, common::addr4(1, 5007)).unwrap();
    let (r, _) = l.accept().unwrap();
    let data = common::pattern(7, MIB);
    let reader = std::thread::spawn(move || read_exactly(&r, MIB));
    let before = sender.round_trips();
    assert_eq!(s.write(&data), Ok(MIB));
    let trips = sender.round_trips() - before;
    let got = reader.join().unwrap();
    assert_eq!(common::hash(&got), common::hash(&data), "the bytes arrived intact");
    assert_eq!(libsock::net_api::CHUNK_SIZE, 64 * 1024);
    assert_eq!(trips, (MIB / libsock::net_api::CHUNK_SIZE) as u64, "1 MiB in 64 KiB round trips");
    // The peer could not keep up with every call: some were held (and resumed), not retried.
    eprintln!("1 MiB: {trips} round trips, {} waits in held calls", holds.load(Ordering::Relaxed));
    assert!(holds.load(Ordering::Relaxed) > 0, "no call was held: the test did not exercise holding");
}
