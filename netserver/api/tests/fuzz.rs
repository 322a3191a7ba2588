//! Fuzzing the decoders with a seeded generator (deterministic, no extra dependencies):
//! random bytes, random well-formed messages, and mutations of well-formed messages.
//! Properties: decoding never panics; whatever decodes re-encodes within MAX_MSG and decodes to
//! the same value; `serve` always produces a decodable reply; a malformed request is answered
//! with EBADMSG.

use net_api::codec::serve;
use net_api::*;

/// xorshift64*: small, deterministic, good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn u32(&mut self) -> u32 {
        // Bias towards boundary values, where varint encodings change length.
        match self.below(4) {
            0 => [0, 1, 127, 128, 16383, 16384, u32::MAX][self.below(7) as usize],
            _ => self.next() as u32,
        }
    }
    fn u16(&mut self) -> u16 {
        self.u32() as u16
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn handle(r: &mut Rng) -> SocketHandle {
    SocketHandle { index: r.u32(), generation: r.u32() }
}

fn addr(r: &mut Rng) -> SockAddr {
    if r.bool() {
        SockAddr::V4(SockAddrV4 { ip: (r.next() as u32).to_be_bytes(), port: r.u16() })
    } else {
        let mut ip = [0u8; 16];
        ip[..8].copy_from_slice(&r.next().to_be_bytes());
        ip[8..].copy_from_slice(&r.next().to_be_bytes());
        SockAddr::V6(SockAddrV6 { ip, port: r.u16(), flowinfo: r.u32(), scope_id: r.u32() })
    }
}

fn errno(r: &mut Rng) -> Errno {
    Errno::ALL[r.below(Errno::ALL.len() as u64) as usize]
}

fn opt_value(r: &mut Rng) -> SockOptValue {
    match r.below(7) {
        0 => SockOptValue::ReuseAddr(r.bool()),
        1 => SockOptValue::RcvBuf(r.u32()),
        2 => SockOptValue::SndBuf(r.u32()),
        3 => SockOptValue::TcpNoDelay(r.bool()),
        4 => SockOptValue::KeepAlive(r.bool()),
        5 => SockOptValue::NonBlocking(r.bool()),
        _ => SockOptValue::Error(if r.bool() { Some(errno(r)) } else { None }),
    }
}

fn request(r: &mut Rng) -> Request {
    let h = handle(r);
    let buf = BufDesc { offset: r.u32(), len: r.u32() };
    match r.below(17) {
        14 => Request::Stats,
        16 => Request::WakeAfter { micros: (u64::from(r.u32()) << 32) | u64::from(r.u32()) },
        0 => Request::Hello { version: r.u16() },
        1 => Request::Socket {
            domain: if r.bool() { Domain::Inet } else { Domain::Inet6 },
            ty: if r.bool() { SockType::Stream } else { SockType::Datagram },
        },
        2 => Request::Bind { handle: h, addr: addr(r) },
        3 => Request::Listen { handle: h, backlog: r.u32() },
        4 => Request::Accept { handle: h },
        5 => Request::Connect { handle: h, addr: addr(r) },
        6 => Request::Send {
            handle: h,
            buf,
            flags: MsgFlags(r.u32()),
            to: if r.bool() { Some(addr(r)) } else { None },
        },
        7 => Request::Recv { handle: h, buf, flags: MsgFlags(r.u32()) },
        8 => Request::Shutdown {
            handle: h,
            how: [Shutdown::Read, Shutdown::Write, Shutdown::Both][r.below(3) as usize],
        },
        9 => Request::Close { handle: h },
        10 => Request::GetSockName { handle: h },
        11 => Request::GetPeerName { handle: h },
        12 => Request::SetSockOpt { handle: h, value: opt_value(r) },
        13 => Request::GetSockOpt { handle: h, opt: opt_value(r).opt() },
        _ => {
            let mut fds = PollList::new();
            for _ in 0..r.below(MAX_POLL_FDS as u64 + 1) {
                let _ = fds.push(PollEntry { handle: handle(r), events: PollEvents(r.u16()) });
            }
            Request::Poll { fds: Box::new(fds) }
        }
    }
}

fn response(r: &mut Rng) -> Response {
    match r.below(11) {
        9 => {
            let mut workers = BoundedList::new();
            for _ in 0..r.below(MAX_STATS_WORKERS as u64 + 1) {
                let _ = workers.push(WorkerStats {
                    packets_in: r.next(),
                    packets_out: r.next(),
                    sockets: r.next(),
                    connections: r.next(),
                });
            }
            let mut recent_restarts = BoundedList::new();
            for _ in 0..r.below(MAX_STATS_RESTARTS as u64 + 1) {
                let mut cause = [0u8; RESTART_CAUSE_LEN];
                for c in cause.iter_mut() {
                    *c = r.next() as u8;
                }
                let _ = recent_restarts.push(RestartStat {
                    restart: r.u32(),
                    cause,
                    fault_to_running_us: r.next(),
                    fault_to_traffic_us: r.next(),
                });
            }
            Response::Stats(Box::new(NetStats {
                workers,
                ports_in_use: r.next(),
                ring_drops: r.next(),
                driver_restarts: r.next(),
                tx_kicks: r.next(),
                recent_restarts,
            }))
        }
        0 => Response::Error(errno(r)),
        1 => Response::Ok,
        2 => Response::Hello(ServerInfo {
            version: r.u16(),
            epoch: r.u32(),
            layout: DataAreaLayout { slot_size: r.u32(), tx_slots: r.u16(), rx_slots: r.u16() },
        }),
        3 => Response::Socket(handle(r)),
        4 => Response::Accepted { handle: handle(r), peer: addr(r) },
        5 => Response::Sent { len: r.u32() },
        6 => Response::Received { len: r.u32(), from: if r.bool() { Some(addr(r)) } else { None } },
        7 => Response::Addr(addr(r)),
        8 => Response::SockOpt(opt_value(r)),
        _ => {
            let mut revents = PollReady::new();
            for _ in 0..r.below(MAX_POLL_FDS as u64 + 1) {
                let _ = revents.push(PollEvents(r.u16()));
            }
            Response::Poll { revents: Box::new(revents) }
        }
    }
}

fn mutate(r: &mut Rng, msg: &mut Vec<u8>) {
    for _ in 0..=r.below(4) {
        match r.below(6) {
            0 if !msg.is_empty() => {
                let i = r.below(msg.len() as u64) as usize;
                msg[i] ^= 1 << r.below(8);
            }
            1 if !msg.is_empty() => {
                let i = r.below(msg.len() as u64) as usize;
                msg[i] = r.next() as u8;
            }
            2 => msg.truncate(r.below(msg.len() as u64 + 1) as usize),
            3 => {
                let i = r.below(msg.len() as u64 + 1) as usize;
                msg.insert(i, r.next() as u8);
            }
            4 if !msg.is_empty() => {
                let i = r.below(msg.len() as u64) as usize;
                msg.remove(i);
            }
            _ => msg.extend(std::iter::repeat_n(0xff, r.below(8) as usize)),
        }
    }
}

/// Checks the decoder's properties on one input; returns whether it decoded as a request.
fn check_request_bytes(bytes: &[u8]) -> bool {
    let decoded = decode_request(bytes);
    if let Ok((epoch, req)) = decoded.clone() {
        let mut buf = [0u8; MAX_MSG];
        let n = encode_request(epoch, &req, &mut buf).expect("decoded request re-encodes");
        assert_eq!(decode_request(&buf[..n]), Ok((epoch, req)));
    }
    // The server path: always a decodable reply, EBADMSG exactly when malformed.
    let mut out = [0u8; MAX_MSG];
    let n = serve(bytes, &mut out, |_, _| Response::Ok);
    let reply = decode_response(&out[..n]).expect("serve's reply decodes");
    if decoded.is_err() {
        assert_eq!(reply, Response::Error(Errno::EBADMSG));
    } else {
        assert_eq!(reply, Response::Ok);
    }
    decoded.is_ok()
}

fn check_response_bytes(bytes: &[u8]) -> bool {
    match decode_response(bytes) {
        Ok(resp) => {
            let mut buf = [0u8; MAX_MSG];
            let n = encode_response(&resp, &mut buf).expect("decoded response re-encodes");
            assert_eq!(decode_response(&buf[..n]), Ok(resp));
            true
        }
        Err(Malformed) => false,
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut r = Rng(0x5eed_0001);
    let mut decoded = 0;
    for _ in 0..150_000 {
        let len = match r.below(8) {
            0 => r.below(MAX_MSG as u64 + 64) as usize,
            _ => r.below(24) as usize,
        };
        let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        decoded += check_request_bytes(&bytes) as u32;
        decoded += check_response_bytes(&bytes) as u32;
    }
    // Short random inputs decode fairly often; if nothing ever decoded, the test is not
    // exercising the success path.
    assert!(decoded > 50, "only {decoded} random inputs decoded");
}

#[test]
fn random_valid_messages_roundtrip_and_fit() {
    let mut r = Rng(0x5eed_0002);
    let mut buf = [0u8; MAX_MSG];
    for _ in 0..50_000 {
        let epoch = r.u32();
        let req = request(&mut r);
        let n = encode_request(epoch, &req, &mut buf).expect("every request fits MAX_MSG");
        assert_eq!(decode_request(&buf[..n]), Ok((epoch, req)));
        let resp = response(&mut r);
        let n = encode_response(&resp, &mut buf).expect("every response fits MAX_MSG");
        assert_eq!(decode_response(&buf[..n]), Ok(resp));
    }
}

#[test]
fn mutated_valid_messages_never_panic() {
    let mut r = Rng(0x5eed_0003);
    let mut buf = [0u8; MAX_MSG];
    let (mut ok, mut bad) = (0u32, 0u32);
    for _ in 0..100_000 {
        let n = encode_request(r.u32(), &request(&mut r), &mut buf).unwrap();
        let mut msg = buf[..n].to_vec();
        mutate(&mut r, &mut msg);
        if check_request_bytes(&msg) { ok += 1 } else { bad += 1 }
        let n = encode_response(&response(&mut r), &mut buf).unwrap();
        let mut msg = buf[..n].to_vec();
        mutate(&mut r, &mut msg);
        check_response_bytes(&msg);
    }
    // Both outcomes must occur, or the mutator is not doing its job.
    assert!(ok > 1000 && bad > 1000, "ok {ok} bad {bad}");
}

#[test]
fn hostile_length_prefixes_fail_cleanly() {
    // Poll with a list length of u32::MAX and no elements.
    let msg = [0x00, 14, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(decode_request(&msg), Err(Malformed));
    // Poll with MAX_POLL_FDS + 1 valid elements.
    let mut msg = vec![0x00, 14, (MAX_POLL_FDS + 1) as u8];
    for _ in 0..=MAX_POLL_FDS {
        msg.extend_from_slice(&[1, 1, 1]);
    }
    assert_eq!(decode_request(&msg), Err(Malformed));
    // Exactly MAX_POLL_FDS decodes.
    let mut msg = vec![0x00, 14, MAX_POLL_FDS as u8];
    for _ in 0..MAX_POLL_FDS {
        msg.extend_from_slice(&[1, 1, 1]);
    }
    assert!(matches!(decode_request(&msg), Ok((0, Request::Poll { fds })) if fds.len() == MAX_POLL_FDS));
    // Stats with no workers, zero counters and u32::MAX recent restarts, none present.
    let msg = [10, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(decode_response(&msg), Err(Malformed));
}
