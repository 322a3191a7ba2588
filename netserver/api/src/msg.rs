//! The request and response enums: the whole control protocol.
//!
//! Every request is answered by exactly one response. `Response::Error(e)` is a valid answer to
//! any request; otherwise the expected answer is named on each request variant. A response of the
//! wrong kind is a protocol error (libsock reports `EPROTO`).
//!
//! No request blocks inside the server: when an operation cannot complete now the answer is
//! `Error(EAGAIN)` (or `Error(EINPROGRESS)` for a TCP connect), and the server arranges to signal
//! the client's notification when the socket's state changes (see the crate docs, "Wake-ups").

use alloc::boxed::Box;

use serde::{Deserialize, Serialize};

use crate::{
    BoundedList, BufDesc, DataAreaLayout, Domain, Errno, MsgFlags, PollEntry, PollEvents,
    SockAddr, SockOpt, SockOptValue, SockType, SocketHandle, Shutdown, MAX_POLL_FDS,
    MAX_STATS_RESTARTS, MAX_STATS_WORKERS, RESTART_CAUSE_LEN,
};

/// The sockets of one poll request (at most [`MAX_POLL_FDS`]; libsock splits larger polls).
pub type PollList = BoundedList<PollEntry, MAX_POLL_FDS>;
/// The answer to a poll request: `revents` for each entry, same order and length.
pub type PollReady = BoundedList<PollEvents, MAX_POLL_FDS>;

/// A control request from a client to the net server.
///
/// The poll list is boxed so that the enum stays small (under 64 bytes): requests are decoded,
/// passed and matched by value on every call, and inline the list made each move copy ~800
/// bytes — under QEMU TCG, where `memcpy` is byte by byte, that was most of a no-op call's cost.
/// Only `Poll` allocates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start (or restart) a session. Accepted whatever the header's epoch. → `Hello`.
    /// A `version` other than [`crate::PROTOCOL_VERSION`] gets `EPROTONOSUPPORT`.
    Hello { version: u16 },
    /// `socket(2)`. → `Socket`.
    Socket { domain: Domain, ty: SockType },
    /// `bind(2)`. Port 0 picks an ephemeral port. → `Ok`.
    Bind { handle: SocketHandle, addr: SockAddr },
    /// `listen(2)` (stream sockets). → `Ok`.
    Listen { handle: SocketHandle, backlog: u32 },
    /// `accept(2)`: `EAGAIN` when no connection is pending. → `Accepted`.
    Accept { handle: SocketHandle },
    /// `connect(2)`. Stream: `EINPROGRESS` once the handshake started (then poll for `OUT` and read
    /// `SockOpt::Error`), `EALREADY` while it is still in progress, `EISCONN` once connected.
    /// Datagram: sets the default peer. → `Ok`.
    Connect { handle: SocketHandle, addr: SockAddr },
    /// `send`/`sendto`: the bytes are in the client->server half of the data area at `buf`.
    /// The server copies out what fits (at most `buf.len`) before answering, and does not touch
    /// `buf` after answering. `to` must be `None` for a connected stream socket (else `EISCONN`).
    /// A datagram is sent whole or not at all. → `Sent`.
    Send { handle: SocketHandle, buf: BufDesc, flags: MsgFlags, to: Option<SockAddr> },
    /// `recv`/`recvfrom`: the server writes up to `buf.len` bytes into the server->client half of
    /// the data area at `buf`, then answers. `len == 0` on a stream means end of file. A datagram
    /// longer than `buf.len` is truncated (the rest is dropped, as with `recv(2)`). → `Received`.
    Recv { handle: SocketHandle, buf: BufDesc, flags: MsgFlags },
    /// `shutdown(2)`. → `Ok`.
    Shutdown { handle: SocketHandle, how: Shutdown },
    /// `close(2)`: the handle is invalid afterwards. → `Ok`.
    Close { handle: SocketHandle },
    /// `getsockname(2)`. → `Addr`.
    GetSockName { handle: SocketHandle },
    /// `getpeername(2)`: `ENOTCONN` when not connected. → `Addr`.
    GetPeerName { handle: SocketHandle },
    /// `setsockopt(2)`. → `Ok`.
    SetSockOpt { handle: SocketHandle, value: SockOptValue },
    /// `getsockopt(2)`. → `SockOpt` carrying the value for `opt`.
    GetSockOpt { handle: SocketHandle, opt: SockOpt },
    /// `poll(2)` over up to [`MAX_POLL_FDS`] sockets, evaluated immediately (never blocks).
    /// An invalid handle gets `NVAL` in its slot, not an error for the whole call. For every entry
    /// not ready for its `events`, the server arms a wake-up. → `Poll`.
    Poll { fds: Box<PollList> },
    /// The net server's counters (for a status page such as the http app's `/stats`); needs a
    /// session like every request but `Hello`. → `Stats`.
    Stats,
    /// Signal this client's notification once `micros` have passed (or earlier, if an earlier
    /// alarm is pending: the client keeps one, the earliest). For transports whose own waits
    /// cannot time out (seL4 5.0 has no timed `Wait`): a client about to block until a deadline
    /// asks for this, then blocks without one. → `Ok`.
    WakeAfter { micros: u64 },
}

/// Session information returned by `Hello`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's protocol version ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The server incarnation. The client puts it in the header of every later request; after a
    /// server restart the epoch differs and every stale request gets `ServerRestarted`.
    /// Never 0 (0 is "no session yet").
    pub epoch: u32,
    /// How this client's data area is divided.
    pub layout: DataAreaLayout,
}

/// A control response from the net server. Large answers are boxed, as in [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The request failed. Variant 0 on purpose: the reply to a malformed request is always the
    /// two bytes `[0x00, 74]` (`Error(EBADMSG)`).
    Error(Errno),
    /// Success without a value.
    Ok,
    Hello(ServerInfo),
    Socket(SocketHandle),
    Accepted { handle: SocketHandle, peer: SockAddr },
    /// Bytes taken from the send buffer (stream: may be less than asked; never 0 for a non-empty
    /// send, which is `EAGAIN` instead).
    Sent { len: u32 },
    /// Bytes written at the start of the `Recv` buffer, and the sender for datagram sockets.
    Received { len: u32, from: Option<SockAddr> },
    Addr(SockAddr),
    SockOpt(SockOptValue),
    Poll { revents: Box<PollReady> },
    /// The answer to `Stats`.
    Stats(Box<NetStats>),
}

/// One net server worker (one smoltcp stack instance on its own thread)'s counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Frames this worker received (since the server started).
    pub packets_in: u64,
    /// Frames this worker sent.
    pub packets_out: u64,
    /// smoltcp sockets in this worker now: connections, embryonic connections, UDP sockets and
    /// one idle listening socket per listener.
    pub sockets: u64,
    /// TCP connections (established, being set up or closing) in this worker now.
    pub connections: u64,
}

/// The net server's counters, answer to [`Request::Stats`]. Counts are since the server
/// started; `sockets`/`connections`/`ports_in_use` are current values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    /// Per worker, in worker order (at most [`MAX_STATS_WORKERS`]).
    pub workers: BoundedList<WorkerStats, MAX_STATS_WORKERS>,
    /// Ports held (bound, listening, connected, TIME-WAIT), all protocols and families.
    pub ports_in_use: u64,
    /// Frames dropped between the driver rings and the workers: received frames a worker's
    /// queue had no room for, and frames to send that found `tx_submit` full or no buffer.
    pub ring_drops: u64,
    /// Times the NIC driver was restarted (a new ring epoch after the first).
    pub driver_restarts: u64,
    /// Times the transmit watchdog signalled the driver again (frames waiting, no progress).
    pub tx_kicks: u64,
    /// The most recent driver restarts whose details the server learnt (from the supervisor's
    /// restart log, once traffic flowed again), newest first; at most [`MAX_STATS_RESTARTS`].
    pub recent_restarts: BoundedList<RestartStat, MAX_STATS_RESTARTS>,
}

/// One driver restart as the net server saw it, in [`NetStats::recent_restarts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartStat {
    /// The driver's restart count, this one included (the supervisor's numbering).
    pub restart: u32,
    /// What happened, as the supervisor wrote it (`page fault`, `hang`, `stall-tx`, ...): up to
    /// [`RESTART_CAUSE_LEN`] bytes, padded with zeros. Untrusted bytes, not necessarily UTF-8
    /// (it crossed two protection boundaries): see [`RestartStat::cause_bytes`].
    pub cause: [u8; RESTART_CAUSE_LEN],
    /// Microseconds from the fault to the new driver instance running (0: unknown).
    pub fault_to_running_us: u64,
    /// Microseconds from the fault to the first frame received through the new instance.
    pub fault_to_traffic_us: u64,
}

impl RestartStat {
    /// The cause up to its first zero byte (the padding). Still untrusted: may be any bytes.
    pub fn cause_bytes(&self) -> &[u8] {
        let len = self.cause.iter().position(|&b| b == 0).unwrap_or(self.cause.len());
        self.cause.get(..len).unwrap_or(&[])
    }

    /// `cause` truncated to [`RESTART_CAUSE_LEN`] bytes (on a character boundary) and padded.
    pub fn cause_from_str(text: &str) -> [u8; RESTART_CAUSE_LEN] {
        let mut out = [0u8; RESTART_CAUSE_LEN];
        let mut n = text.len().min(RESTART_CAUSE_LEN);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        for (o, b) in out.iter_mut().zip(text.as_bytes().iter().take(n)) {
            *o = *b;
        }
        out
    }
}

impl Response {
    /// `Ok(self)` unless this is `Error(e)`.
    pub fn into_result(self) -> Result<Response, Errno> {
        match self {
            Response::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

impl From<Errno> for Response {
    fn from(e: Errno) -> Response {
        Response::Error(e)
    }
}
