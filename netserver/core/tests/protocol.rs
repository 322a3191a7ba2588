//! The dispatcher against hostile clients: forged, stale and foreign handles, bad descriptors,
//! stale epochs, and a fuzzed decoder. Requests are built by hand (raw bytes) here, not by libsock.

mod common;

use std::sync::Arc;

use libsock::net_api::{
    decode_response, encode_request, AtomicRegion, BufDesc, DataAreaLayout, Domain, Errno, MsgFlags, PollEntry,
    PollEvents, PollList, Request, Response, SockAddr, SockType, SocketHandle, MAX_MSG,
};
use netserver_core::host::{HostServer, Impairments};
use netserver_core::wake::NoSignal;

struct Raw {
    server: HostServer,
    id: u64,
    epoch: u32,
}

impl Raw {
    fn new(server: &HostServer, id: u64) -> Raw {
        let layout: DataAreaLayout = server.config().layout;
        server
            .register_client(id, Arc::new(NoSignal), Some(Arc::new(AtomicRegion::for_layout(&layout))))
            .unwrap();
        Raw { server: server.clone(), id, epoch: server.config().epoch }
    }

    fn bytes(&self, req: &[u8]) -> Response {
        let mut out = [0u8; MAX_MSG];
        let n = self.server.handle(self.id, req, &mut out);
        decode_response(&out[..n]).expect("the server always answers with a valid response")
    }

    fn call(&self, req: Request) -> Response {
        let mut buf = [0u8; MAX_MSG];
        let n = encode_request(self.epoch, &req, &mut buf).unwrap();
        self.bytes(&buf[..n])
    }

    fn socket(&self) -> SocketHandle {
        match self.call(Request::Socket { domain: Domain::Inet, ty: SockType::Stream }) {
            Response::Socket(h) => h,
            r => panic!("{r:?}"),
        }
    }
}

#[test]
fn stale_and_foreign_handles_get_ebadf() {
    let n = common::net(Impairments::default());
    let x = Raw::new(&n.a.server, 1);
    let y = Raw::new(&n.a.server, 2);
    let hx = x.socket();
    // Another client cannot name x's socket, whatever it tries.
    assert_eq!(y.call(Request::Close { handle: hx }), Response::Error(Errno::EBADF));
    assert_eq!(y.call(Request::GetSockName { handle: hx }), Response::Error(Errno::EBADF));
    let mut bad = 0;
    for index in 0..4 {
        for generation in 0..2000 {
            let h = SocketHandle { index, generation };
            if y.call(Request::Listen { handle: h, backlog: 1 }) == Response::Error(Errno::EBADF) {
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 8000, "y has no sockets, so every handle is invalid for y");
    // x still has its socket, untouched.
    assert!(matches!(x.call(Request::GetSockName { handle: hx }), Response::Addr(_)));
    // Stale: after close, the handle is dead even once the slot is reused.
    assert_eq!(x.call(Request::Close { handle: hx }), Response::Ok);
    assert_eq!(x.call(Request::Close { handle: hx }), Response::Error(Errno::EBADF));
    let hx2 = x.socket();
    assert_eq!(hx2.index, hx.index, "slot reused");
    assert_eq!(x.call(Request::GetSockName { handle: hx }), Response::Error(Errno::EBADF));
    assert!(matches!(x.call(Request::GetSockName { handle: hx2 }), Response::Addr(_)));
    // Poll reports NVAL per entry instead of failing the call.
    let fds = PollList::from_slice(&[
        PollEntry { handle: hx, events: PollEvents::IN },
        PollEntry { handle: hx2, events: PollEvents::IN },
    ])
    .unwrap();
    match x.call(Request::Poll { fds: Box::new(fds) }) {
        Response::Poll { revents } => {
            assert!(revents.as_slice()[0].contains(PollEvents::NVAL));
            assert!(!revents.as_slice()[1].contains(PollEvents::NVAL));
        }
        r => panic!("{r:?}"),
    }
    // A client the transport never registered has no sockets at all.
    let mut buf = [0u8; MAX_MSG];
    let k = encode_request(1, &Request::Close { handle: hx2 }, &mut buf).unwrap();
    let mut out = [0u8; MAX_MSG];
    let m = n.a.server.handle(999, &buf[..k], &mut out);
    assert_eq!(decode_response(&out[..m]), Ok(Response::Error(Errno::EPERM)));
}

#[test]
fn bad_descriptors_epochs_and_flags() {
    let n = common::net(Impairments::default());
    let x = Raw::new(&n.a.server, 3);
    let h = match x.call(Request::Socket { domain: Domain::Inet, ty: SockType::Datagram }) {
        Response::Socket(h) => h,
        r => panic!("{r:?}"),
    };
    let to = Some(SockAddr::v4(10, 0, 0, 2, 9));
    let layout = n.a.server.config().layout;
    let send = |buf: BufDesc, flags: MsgFlags| x.call(Request::Send { handle: h, buf, flags, to });
    // Outside the send half, into the receive half, wrapping, too long.
    assert_eq!(send(BufDesc { offset: layout.tx_len() as u32, len: 10 }, MsgFlags::NONE), Response::Error(Errno::EFAULT));
    assert_eq!(send(BufDesc { offset: u32::MAX, len: 10 }, MsgFlags::NONE), Response::Error(Errno::EFAULT));
    assert_eq!(send(BufDesc { offset: 0, len: layout.slot_size + 1 }, MsgFlags::NONE), Response::Error(Errno::EMSGSIZE));
    assert_eq!(send(BufDesc { offset: 0, len: 10 }, MsgFlags(0x8000)), Response::Error(Errno::EINVAL));
    let recv = x.call(Request::Recv { handle: h, buf: BufDesc { offset: 0, len: 10 }, flags: MsgFlags::NONE });
    assert_eq!(recv, Response::Error(Errno::EFAULT), "a receive buffer in the send half");
    // A request from an old incarnation.
    let mut buf = [0u8; MAX_MSG];
    let k = encode_request(x.epoch + 1, &Request::Close { handle: h }, &mut buf).unwrap();
    assert_eq!(x.bytes(&buf[..k]), Response::Error(Errno::ServerRestarted));
    // Hello with the wrong version.
    assert_eq!(x.call(Request::Hello { version: 999 }), Response::Error(Errno::EPROTONOSUPPORT));
    // A good send still works.
    assert_eq!(send(BufDesc { offset: 0, len: 10 }, MsgFlags::NONE), Response::Sent { len: 10 });
}

#[test]
fn fuzzed_requests_never_break_the_server() {
    let n = common::net(Impairments::default());
    let x = Raw::new(&n.a.server, 4);
    let live = x.socket();
    // Valid requests to mutate.
    let seeds: Vec<Vec<u8>> = [
        Request::Hello { version: 1 },
        Request::Socket { domain: Domain::Inet6, ty: SockType::Datagram },
        Request::Bind { handle: live, addr: SockAddr::v4(10, 0, 0, 1, 1234) },
        Request::Send { handle: live, buf: BufDesc { offset: 0, len: 100 }, flags: MsgFlags::NONE, to: None },
        Request::Recv { handle: live, buf: BufDesc { offset: 131072, len: 100 }, flags: MsgFlags::PEEK },
        Request::Connect { handle: live, addr: SockAddr::v6([1; 16], 80) },
        Request::Poll {
            fds: Box::new(PollList::from_slice(&[PollEntry { handle: live, events: PollEvents::IN }; 20]).unwrap()),
        },
    ]
    .iter()
    .map(|r| {
        let mut b = [0u8; MAX_MSG];
        let k = encode_request(x.epoch, r, &mut b).unwrap();
        b[..k].to_vec()
    })
    .collect();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut malformed = 0;
    for i in 0..30_000 {
        let req: Vec<u8> = if i % 3 == 0 {
            let len = (next() % 64) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut r = seeds[(next() % seeds.len() as u64) as usize].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % r.len().max(1);
                match next() % 3 {
                    0 => {
                        if let Some(b) = r.get_mut(at) {
                            *b ^= 1 << (next() % 8);
                        }
                    }
                    1 => r.truncate(at),
                    _ => r.insert(at.min(r.len()), next() as u8),
                }
            }
            r
        };
        if x.bytes(&req) == Response::Error(Errno::EBADMSG) {
            malformed += 1;
        }
    }
    assert!(malformed > 5_000, "the fuzzer produced too few malformed requests ({malformed})");
    assert_eq!(n.a.server.stats().malformed_requests, malformed);
    // Oversized input.
    assert_eq!(x.bytes(&vec![0u8; MAX_MSG + 1]), Response::Error(Errno::EBADMSG));
    // The server still serves, this client and others.
    let y = Raw::new(&n.a.server, 5);
    let hy = y.socket();
    assert_eq!(y.call(Request::Bind { handle: hy, addr: SockAddr::v4(10, 0, 0, 1, 4321) }), Response::Ok);
    assert_eq!(y.call(Request::Listen { handle: hy, backlog: 4 }), Response::Ok);
}
