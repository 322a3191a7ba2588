//! The socket protocol between libsock (the only client stub) and the net server (the only
//! dispatcher). Defined once, here; both sides depend on this crate.
//!
//! # Messages
//!
//! A client makes one control call per operation: an encoded [`Request`] goes to the server, an
//! encoded [`Response`] comes back. [`codec`] is the only code that turns them into bytes
//! (postcard). Every message fits in [`MAX_MSG`] = 960 bytes, the seL4 IPC buffer's 120 message
//! registers, so a control call is a single `seL4_Call` with no shared-memory spill. Lists are
//! bounded: a poll names at most [`MAX_POLL_FDS`] sockets and libsock splits larger polls.
//!
//! Decoding never panics. A malformed request is answered with `Error(EBADMSG)` (use
//! [`codec::serve`]) and the server goes on serving everyone else.
//!
//! # Errors
//!
//! [`Errno`] has fixed codes equal to Linux errno numbers, prints as the errno name, and has a
//! [`Errno::ServerRestarted`] variant.
//!
//! # Sessions and restart
//!
//! A client starts with `Hello`; the answer carries the server's `epoch` (never 0) and the
//! client's [`DataAreaLayout`]. Every later request carries that epoch in its header. A restarted
//! server has a new epoch and answers any request with a stale epoch with `ServerRestarted`
//! (handles are per client and per incarnation; after a restart they are all gone).
//!
//! # Wake-ups (no lost wake-ups)
//!
//! The server never blocks a worker on one client. An operation that cannot complete now returns
//! `EAGAIN` (a `Poll` returns "nothing ready"), and a blocking client waits on its notification
//! and then retries. The rules that make this free of lost wake-ups:
//!
//! 1. *Arm, then re-check.* When the server would answer `EAGAIN`, or a poll finds an entry not
//!    ready, it records "client wants a wake-up for this socket" (under the socket's wake-up
//!    lock) and then re-reads the socket's readiness word; if it became ready meanwhile, the
//!    operation is retried. Either the re-read sees the change or the change finds the waiter.
//! 2. *Signal on change.* Whenever an armed socket's readiness changes (data arrived, send space
//!    freed, a connection became acceptable or established, error, hang-up, close), the server
//!    disarms it and signals the client's notification. Signalling more often is allowed.
//! 3. *Notifications are sticky.* A signal sent between the client receiving `EAGAIN` and the
//!    client calling `wait` is not lost: the notification stays pending (an seL4 notification
//!    word; a flag under a mutex on the host), and the next `wait` returns at once.
//! 4. *The client always re-checks.* After every wake-up, spurious or not, the client repeats the
//!    request; it never infers readiness from the signal itself. One notification per client
//!    covers all its sockets.
//!
//! # Data area
//!
//! Bulk data never travels in control messages. Each client shares one region with the server
//! (see [`DataAreaLayout`]): a client->server half for sends and a server->client half for
//! receives, each divided into slots of [`CHUNK_SIZE`] = 64 KiB (two per direction by default:
//! [`DEFAULT_DATA_AREA_SIZE`] = 256 KiB).
//!
//! ```text
//!  client data area (one region, mapped in the client and in the net server)
//!  0                     64K                   128K                  192K                  256K
//!  +---------------------+---------------------+---------------------+---------------------+
//!  |      TX slot 0      |      TX slot 1      |      RX slot 0      |      RX slot 1      |
//!  +---------------------+---------------------+---------------------+---------------------+
//!  |<--- client writes, server reads (send) --->|<-- server writes, client reads (recv) -->|
//! ```
//!
//! Buffers move by *lending for one call*, and the descriptor ([`BufDesc`]: offset and length
//! into the region) travels in the control request itself:
//!
//! * **send**: the client takes a free TX slot (a client-local allocator; the server does not
//!   track slots), copies up to 64 KiB into it, and calls `Send { buf }`. While the call is in
//!   flight the server owns the bytes in `buf`: it checks `buf` with
//!   [`DataAreaLayout::check_tx`] against its *own* copy of the layout, copies what fits into
//!   the socket's send buffer, and answers `Sent { len }`. From the answer on the client owns the
//!   slot again; the server never touches it after replying.
//! * **recv**: the client takes a free RX slot and calls `Recv { buf }`. While the call is in
//!   flight the server owns `buf`: it writes up to `buf.len` bytes and answers
//!   `Received { len }`. The client checks `len <= buf.len` and copies the bytes out, then frees
//!   the slot.
//!
//! So a 1 MiB send is 16 `Send` calls of 64 KiB: one control round trip per 64 KiB (more only
//! when the socket's send buffer is full and the server accepts less).
//!
//! There are no ring indices, headers or lengths in the shared region: every offset and length
//! comes from a control message and is checked by its receiver, so a hostile peer can only
//! scribble on payload bytes in its own area. Two threads of one client use two different slots,
//! so they never share a buffer. (The shared-ring crate's descriptor rings are what the driver
//! path uses; they would be the right tool for a later asynchronous mode in which the server
//! pushes received data before the client asks. See the README.)
//!
//! **Copy count.** Send: application buffer -> TX slot (client, copy 1) -> smoltcp socket send
//! buffer (server, copy 2, straight from the slot inside smoltcp's `send` closure) -> driver TX
//! frame (smoltcp emits the segment, copy 3). Receive: driver RX frame -> smoltcp socket receive
//! buffer (copy 1) -> RX slot (server, copy 2, inside smoltcp's `recv` closure) -> application
//! buffer (client, copy 3).
//!
//! # Features
//!
//! `alloc`: [`AtomicRegion`], a heap region shareable between host threads. `std`: also
//! `From<Errno> for std::io::Error`. `embedded-io`: `embedded_io::Error for Errno`.

#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic))]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod addr;
pub mod codec;
mod data;
mod errno;
mod msg;
mod types;

pub use addr::{SockAddr, SockAddrV4, SockAddrV6};
pub use codec::{decode_request, decode_response, encode_request, encode_response, Malformed};
#[cfg(feature = "alloc")]
pub use data::AtomicRegion;
pub use data::{
    region_range, DataArea, DataAreaLayout, DataRegion, DEFAULT_DATA_AREA_SIZE,
    DEFAULT_SLOTS_PER_DIRECTION, MAX_DATA_AREA_SIZE, MAX_SLOT_SIZE,
};
pub use errno::{Errno, UnknownErrno, EWOULDBLOCK};
pub use msg::{NetStats, PollList, PollReady, Request, Response, RestartStat, ServerInfo, WorkerStats};
pub use types::{
    BoundedList, BufDesc, Domain, MsgFlags, PollEntry, PollEvents, Shutdown, SockOpt,
    SockOptValue, SockType, SocketHandle,
};

/// Protocol version, checked by `Hello`.
pub const PROTOCOL_VERSION: u16 = 1;

/// Largest encoded control message, request or response: 120 message registers x 8 bytes.
pub const MAX_MSG: usize = 960;

/// Largest transfer per control round trip, and the default data-area slot size.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Most sockets in one `Poll` request. The worst case (every handle field at `u32::MAX`, every
/// event mask at `u16::MAX`) is 13 bytes per entry, so 64 entries fit in [`MAX_MSG`] with room
/// to spare; libsock splits a longer poll into several requests.
pub const MAX_POLL_FDS: usize = 64;

/// Most workers a [`NetStats`] answer lists (a server with more reports the first ones). With
/// every counter at `u64::MAX` (10 varint bytes) one worker costs 40 bytes, so the answer stays
/// far below [`MAX_MSG`].
pub const MAX_STATS_WORKERS: usize = 16;

/// Most driver restarts a [`NetStats`] answer details (the most recent ones). One costs at most
/// 41 bytes (a 5-byte restart number, [`RESTART_CAUSE_LEN`] cause bytes, two 10-byte
/// durations): with 16 maximal workers the largest answer is 847 bytes, under [`MAX_MSG`]
/// (tested).
pub const MAX_STATS_RESTARTS: usize = 4;

/// Bytes of a [`RestartStat`]'s cause (the supervisor's restart log keeps as many).
pub const RESTART_CAUSE_LEN: usize = 16;

/// Largest UDP payload over IPv4 (65535 - 8 - 20). It fits in one [`CHUNK_SIZE`] slot.
pub const MAX_UDP_PAYLOAD: usize = 65507;
