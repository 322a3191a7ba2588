//! All encoding and decoding of control messages happens here, and nowhere else.
//!
//! Wire format (postcard, varint integers):
//! - request  = `(epoch: u32, body: Request)`; `epoch` is 0 before the first `Hello`.
//! - response = `Response`.
//!
//! Every message is at most [`MAX_MSG`] bytes, the payload capacity of seL4's IPC buffer message
//! registers (120 words of 8 bytes). Encoding checks this; decoding refuses longer input,
//! trailing bytes, unknown variants, unknown errno codes and over-long lists. Decoding never
//! panics and allocates only the boxed lists of `Poll` and `Stats`: the fuzz tests feed it millions of random and mutated inputs.

use core::fmt;

use crate::{Errno, Request, Response, MAX_MSG};

/// A message that could not be decoded. The server answers it with [`Malformed::errno`]
/// (`EBADMSG`); libsock reports a malformed reply as `EPROTO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

impl Malformed {
    /// The error a peer gets for a malformed request.
    pub const fn errno(self) -> Errno {
        Errno::EBADMSG
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed control message")
    }
}

impl core::error::Error for Malformed {}

fn encode<T: serde::Serialize + ?Sized>(value: &T, out: &mut [u8]) -> Result<usize, Errno> {
    let limit = out.len().min(MAX_MSG);
    let out = out.get_mut(..limit).ok_or(Errno::EMSGSIZE)?;
    postcard::to_slice(value, out).map(|used| used.len()).map_err(|_| Errno::EMSGSIZE)
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, Malformed> {
    if bytes.len() > MAX_MSG {
        return Err(Malformed);
    }
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(Malformed),
    }
}

/// Encodes a request with the session `epoch` into `out`; returns the length.
/// `EMSGSIZE` if it does not fit in `out` or in [`MAX_MSG`] (cannot happen for a `Request`, all
/// of which fit; tested).
pub fn encode_request(epoch: u32, request: &Request, out: &mut [u8]) -> Result<usize, Errno> {
    encode(&(epoch, request), out)
}

/// Decodes a request: `(epoch, request)`.
pub fn decode_request(bytes: &[u8]) -> Result<(u32, Request), Malformed> {
    decode(bytes)
}

/// Encodes a response into `out`; returns the length.
pub fn encode_response(response: &Response, out: &mut [u8]) -> Result<usize, Errno> {
    encode(response, out)
}

/// Decodes a response.
pub fn decode_response(bytes: &[u8]) -> Result<Response, Malformed> {
    decode(bytes)
}

/// The server's whole message path in one call: decode `request`, hand it to `handler`, encode
/// the answer into `response` and return its length.
///
/// A malformed request never reaches `handler`; it is answered with `Error(EBADMSG)`. If the
/// handler's answer cannot be encoded (it always can; tested) the answer is `Error(EMSGSIZE)`.
/// `response` should be [`MAX_MSG`] bytes; the result is 0 only if it is shorter than 3 bytes.
pub fn serve(
    request: &[u8],
    response: &mut [u8],
    handler: impl FnOnce(u32, Request) -> Response,
) -> usize {
    let answer = match decode_request(request) {
        Ok((epoch, req)) => handler(epoch, req),
        Err(m) => Response::Error(m.errno()),
    };
    encode_response(&answer, response)
        .or_else(|_| encode_response(&Response::Error(Errno::EMSGSIZE), response))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use alloc::boxed::Box;

    fn roundtrip_req(epoch: u32, r: Request) -> usize {
        let mut buf = [0u8; MAX_MSG];
        let n = encode_request(epoch, &r, &mut buf).unwrap();
        assert!(n <= MAX_MSG);
        assert_eq!(decode_request(&buf[..n]), Ok((epoch, r)));
        n
    }

    fn roundtrip_resp(r: Response) -> usize {
        let mut buf = [0u8; MAX_MSG];
        let n = encode_response(&r, &mut buf).unwrap();
        assert_eq!(decode_response(&buf[..n]), Ok(r));
        n
    }

    #[test]
    fn byte_fixtures() {
        // Error(EBADMSG) is variant 0 followed by varint 74: the malformed-request reply.
        let mut buf = [0u8; 8];
        let n = encode_response(&Response::Error(Errno::EBADMSG), &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x00, 74]);
        // ServerRestarted = 0x1000 -> varint [0x80, 0x20].
        let n = encode_response(&Response::Error(Errno::ServerRestarted), &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x00, 0x80, 0x20]);
        // Ok is variant 1.
        let n = encode_response(&Response::Ok, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x01]);
        // Hello{version 1} with epoch 0: [epoch=0, variant 0, version 1].
        let n = encode_request(0, &Request::Hello { version: 1 }, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[0x00, 0x00, 0x01]);
        // Close{handle {3, 7}} with epoch 5: [5, variant 9, 3, 7].
        let h = SocketHandle { index: 3, generation: 7 };
        let n = encode_request(5, &Request::Close { handle: h }, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[5, 9, 3, 7]);
        // Stats at epoch 5: [5, variant 15].
        let n = encode_request(5, &Request::Stats, &mut buf).unwrap();
        assert_eq!(&buf[..n], &[5, 15]);
        // Stats answer: [variant 10, 1 worker, its 4 counters, ports, drops, restarts, tx kicks,
        // 0 recent restarts].
        let mut workers = BoundedList::new();
        workers.push(WorkerStats { packets_in: 1, packets_out: 2, sockets: 3, connections: 4 }).unwrap();
        let mut stats = NetStats { workers, ports_in_use: 5, ring_drops: 300, driver_restarts: 0, tx_kicks: 7, ..NetStats::default() };
        let mut big = [0u8; 64];
        let n = encode_response(&Response::Stats(Box::new(stats)), &mut big).unwrap();
        assert_eq!(&big[..n], &[10, 1, 1, 2, 3, 4, 5, 0xac, 0x02, 0, 7, 0]);
        assert_eq!(decode_response(&big[..n]), Ok(Response::Stats(Box::new(stats))));
        // One recent restart: [restart, 16 cause bytes (zero-padded), running us, traffic us].
        let hang = RestartStat { restart: 2, cause: RestartStat::cause_from_str("hang"), fault_to_running_us: 1000, fault_to_traffic_us: 300 };
        stats.driver_restarts = 2;
        stats.recent_restarts.push(hang).unwrap();
        let n = encode_response(&Response::Stats(Box::new(stats)), &mut big).unwrap();
        let mut expected = std::vec![10, 1, 1, 2, 3, 4, 5, 0xac, 0x02, 2, 7, 1, 2, b'h', b'a', b'n', b'g'];
        expected.extend([0u8; 12]);
        expected.extend([0xe8, 0x07, 0xac, 0x02]);
        assert_eq!(&big[..n], expected.as_slice());
        assert_eq!(decode_response(&big[..n]), Ok(Response::Stats(Box::new(stats))));
        // A list longer than MAX_STATS_WORKERS is refused.
        let mut long = alloc_free_stats_bytes(MAX_STATS_WORKERS as u8 + 1, 0);
        assert_eq!(decode_response(long.as_mut_slice()), Err(Malformed));
        let ok = alloc_free_stats_bytes(MAX_STATS_WORKERS as u8, 0);
        assert!(matches!(decode_response(&ok), Ok(Response::Stats(s)) if s.workers.len() == MAX_STATS_WORKERS));
        // So is one longer than MAX_STATS_RESTARTS.
        let long = alloc_free_stats_bytes(1, MAX_STATS_RESTARTS as u8 + 1);
        assert_eq!(decode_response(&long), Err(Malformed));
        let ok = alloc_free_stats_bytes(1, MAX_STATS_RESTARTS as u8);
        assert!(matches!(decode_response(&ok), Ok(Response::Stats(s)) if s.recent_restarts.len() == MAX_STATS_RESTARTS));
    }

    /// `Stats` answer bytes with `n` all-zero workers and `r` all-zero recent restarts.
    fn alloc_free_stats_bytes(n: u8, r: u8) -> std::vec::Vec<u8> {
        let mut v = std::vec![10, n];
        v.extend(core::iter::repeat_n(0u8, 4 * n as usize));
        v.extend([0, 0, 0, 0, r]);
        v.extend(core::iter::repeat_n(0u8, (1 + RESTART_CAUSE_LEN + 2) * r as usize));
        v
    }

    /// A cause is 16 bytes on the wire whatever they are (not UTF-8, control bytes, no padding):
    /// the codec carries them unchanged, and `cause_bytes` stops at the padding.
    #[test]
    fn restart_causes_are_opaque_bytes() {
        let mut cause = [0xffu8; RESTART_CAUSE_LEN];
        cause[3] = b'"';
        cause[4] = 0x0a;
        let odd = RestartStat { restart: u32::MAX, cause, fault_to_running_us: 0, fault_to_traffic_us: u64::MAX };
        let stats = NetStats { recent_restarts: BoundedList::from_slice(&[odd, RestartStat::default()]).unwrap(), ..NetStats::default() };
        roundtrip_resp(Response::Stats(Box::new(stats)));
        assert_eq!(odd.cause_bytes(), &cause);
        assert_eq!(RestartStat::default().cause_bytes(), b"");
        let page = RestartStat { cause: RestartStat::cause_from_str("page fault"), ..RestartStat::default() };
        assert_eq!(page.cause_bytes(), b"page fault");
        // Truncated to 16 bytes on a character boundary.
        assert_eq!(RestartStat { cause: RestartStat::cause_from_str("reported faulty by netserver"), ..RestartStat::default() }.cause_bytes(), b"reported faulty ");
        assert_eq!(RestartStat { cause: RestartStat::cause_from_str("ééééééééé"), ..RestartStat::default() }.cause_bytes(), "éééééééé".as_bytes());
    }

    #[test]
    fn rejects_trailing_bytes_oversize_and_unknown_codes() {
        assert_eq!(decode_response(&[0x01, 0x00]), Err(Malformed));
        assert_eq!(decode_response(&[]), Err(Malformed));
        assert_eq!(decode_request(&[]), Err(Malformed));
        // Error(22) ok, Error(3) (ESRCH: not in the table) malformed.
        assert_eq!(decode_response(&[0x00, 22]), Ok(Response::Error(Errno::EINVAL)));
        assert_eq!(decode_response(&[0x00, 3]), Err(Malformed));
        // Unknown request variant.
        assert_eq!(decode_request(&[0x00, 0x7f]), Err(Malformed));
        // Longer than MAX_MSG, even if a prefix is valid.
        let mut long = [0u8; MAX_MSG + 1];
        long[..3].copy_from_slice(&[0, 0, 1]);
        assert_eq!(decode_request(&long), Err(Malformed));
    }

    #[test]
    fn serve_answers_malformed_with_ebadmsg_and_skips_handler() {
        let mut out = [0u8; MAX_MSG];
        let mut called = false;
        let n = serve(&[0xff, 0xff, 0xff], &mut out, |_, _| {
            called = true;
            Response::Ok
        });
        assert!(!called);
        assert_eq!(decode_response(&out[..n]), Ok(Response::Error(Errno::EBADMSG)));
        let mut req = [0u8; MAX_MSG];
        let m = encode_request(9, &Request::Hello { version: 1 }, &mut req).unwrap();
        let n = serve(&req[..m], &mut out, |epoch, r| {
            assert_eq!((epoch, r), (9, Request::Hello { version: 1 }));
            Response::Ok
        });
        assert_eq!(decode_response(&out[..n]), Ok(Response::Ok));
        // Tiny response buffers: falls back, then gives 0, never panics.
        let mut tiny = [0u8; 1];
        assert_eq!(serve(&req[..m], &mut tiny, |_, _| Response::Error(Errno::EINVAL)), 0);
    }

    fn worst_handle() -> SocketHandle {
        SocketHandle { index: u32::MAX, generation: u32::MAX }
    }

    fn worst_addr() -> SockAddr {
        SockAddr::V6(SockAddrV6 { ip: [0xff; 16], port: u16::MAX, flowinfo: u32::MAX, scope_id: u32::MAX })
    }

    /// Every variant with its largest field values fits in MAX_MSG.
    #[test]
    fn worst_case_messages_fit_max_msg() {
        let h = worst_handle();
        let a = worst_addr();
        let buf = BufDesc { offset: u32::MAX, len: u32::MAX };
        let flags = MsgFlags(u32::MAX);
        let mut fds = PollList::new();
        while fds.push(PollEntry { handle: h, events: PollEvents(u16::MAX) }).is_ok() {}
        assert_eq!(fds.len(), MAX_POLL_FDS);
        let reqs = [
            Request::Hello { version: u16::MAX },
            Request::Socket { domain: Domain::Inet6, ty: SockType::Datagram },
            Request::Bind { handle: h, addr: a },
            Request::Listen { handle: h, backlog: u32::MAX },
            Request::Accept { handle: h },
            Request::Connect { handle: h, addr: a },
            Request::Send { handle: h, buf, flags, to: Some(a) },
            Request::Recv { handle: h, buf, flags },
            Request::Shutdown { handle: h, how: Shutdown::Both },
            Request::Close { handle: h },
            Request::GetSockName { handle: h },
            Request::GetPeerName { handle: h },
            Request::SetSockOpt { handle: h, value: SockOptValue::SndBuf(u32::MAX) },
            Request::GetSockOpt { handle: h, opt: SockOpt::Error },
            Request::Poll { fds: Box::new(fds) },
            Request::Stats,
            Request::WakeAfter { micros: u64::MAX },
        ];
        let mut largest = 0;
        for r in reqs {
            largest = largest.max(roundtrip_req(u32::MAX, r));
        }
        assert!(largest <= MAX_MSG, "largest request {largest}");
        let mut revents = PollReady::new();
        while revents.push(PollEvents(u16::MAX)).is_ok() {}
        let info = ServerInfo {
            version: u16::MAX,
            epoch: u32::MAX,
            layout: DataAreaLayout { slot_size: u32::MAX, tx_slots: u16::MAX, rx_slots: u16::MAX },
        };
        let resps = [
            Response::Error(Errno::ServerRestarted),
            Response::Ok,
            Response::Hello(info),
            Response::Socket(h),
            Response::Accepted { handle: h, peer: a },
            Response::Sent { len: u32::MAX },
            Response::Received { len: u32::MAX, from: Some(a) },
            Response::Addr(a),
            Response::SockOpt(SockOptValue::Error(Some(Errno::ServerRestarted))),
            Response::Poll { revents: Box::new(revents) },
            Response::Stats(Box::new(worst_stats())),
        ];
        // 16 maximal workers (640 bytes), every counter and 4 maximal restarts (164 bytes).
        assert_eq!(roundtrip_resp(Response::Stats(Box::new(worst_stats()))), 847);
        for r in resps {
            largest = largest.max(roundtrip_resp(r));
        }
        assert!(largest <= MAX_MSG);
    }

    fn worst_stats() -> NetStats {
        let w = WorkerStats { packets_in: u64::MAX, packets_out: u64::MAX, sockets: u64::MAX, connections: u64::MAX };
        NetStats {
            workers: BoundedList::from_slice(&[w; MAX_STATS_WORKERS]).unwrap(),
            ports_in_use: u64::MAX,
            ring_drops: u64::MAX,
            driver_restarts: u64::MAX,
            tx_kicks: u64::MAX,
            recent_restarts: BoundedList::from_slice(&[worst_restart(); MAX_STATS_RESTARTS]).unwrap(),
        }
    }

    fn worst_restart() -> RestartStat {
        RestartStat { restart: u32::MAX, cause: [0xff; RESTART_CAUSE_LEN], fault_to_running_us: u64::MAX, fault_to_traffic_us: u64::MAX }
    }

    /// A poll over 100 sockets is split into chunks of MAX_POLL_FDS, each of which fits.
    #[test]
    fn poll_over_100_sockets_fits_in_chunks() {
        let entries: [PollEntry; 100] = core::array::from_fn(|i| PollEntry {
            handle: SocketHandle { index: i as u32, generation: u32::MAX - i as u32 },
            events: PollEvents::IN | PollEvents::OUT,
        });
        assert!(PollList::from_slice(&entries).is_none(), "100 > MAX_POLL_FDS: must chunk");
        let mut total = 0;
        for chunk in entries.chunks(MAX_POLL_FDS) {
            let fds = PollList::from_slice(chunk).unwrap();
            let n = roundtrip_req(u32::MAX, Request::Poll { fds: Box::new(fds) });
            assert!(n <= MAX_MSG);
            total += chunk.len();
        }
        assert_eq!(total, 100);
    }

    #[test]
    fn all_errnos_roundtrip_through_response() {
        for e in Errno::ALL {
            roundtrip_resp(Response::Error(e));
        }
    }
}
