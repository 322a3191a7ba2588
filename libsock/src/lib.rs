//! libsock: BSD-style socket calls and `std::net`-style types over the net server's protocol
//! ([`net_api`]). The only client stub: applications never build messages themselves.
//!
//! ```text
//!  app ── TcpStream / UdpSocket / TcpListener ── Client (BSD calls) ── Transport ── net server
//!                                                   │  encode/decode: net_api::codec
//!                                                   └─ bulk data: net_api::DataArea over Transport::region()
//! ```
//!
//! # The Transport contract
//!
//! [`Transport`] is the only way libsock reaches the server. An implementation (seL4 IPC; the
//! host one in `host` (feature `std`); fakes in tests) must provide:
//!
//! 1. **`call(request, response) -> Result<usize, Errno>`**: one synchronous control round trip.
//!    `request` is one encoded `net_api::Request` (≤ `MAX_MSG` = 960 bytes, produced by
//!    `net_api::encode_request`). The server's encoded response is written to the start of
//!    `response` (a `MAX_MSG`-byte buffer) and its length returned. The call returns only after
//!    the server has finished with the request, including every data-area buffer it names (a
//!    buffer is lent to the server for exactly the duration of the call). `Err` is for transport
//!    failure only (server gone: `ServerRestarted`); errors of the operation travel in the
//!    response as `Response::Error`. Calls from several threads may be in flight at once; they
//!    never share a data-area slot. On seL4: `seL4_Call` on the client's badged endpoint with the
//!    bytes in the message registers.
//! 2. **`wait(timeout) -> Wake`**: block until the server signals this client's notification or
//!    the timeout passes. Signals are *sticky* and *coalescing*: a signal sent at any time after
//!    the previous `wait` returned makes the next `wait` return `Signalled` immediately; several
//!    signals may be reported as one; spurious `Signalled` is allowed. On seL4: `seL4_Wait` on a
//!    notification (its word is the sticky flag). On the host: `host::Signal`.
//! 3. **`now() -> Duration`**: a monotonic clock, used only for poll timeouts.
//! 4. **`region() -> &Region`**: the client's data area, a `net_api::DataRegion` of at least the
//!    size the server announces in `Hello` (`DataAreaLayout::total_len`); the server maps the
//!    same memory. libsock writes only TX slots and reads only RX slots, one slot per operation.
//! 5. **`relax()`** (provided): called while every slot is taken by other threads.
//!
//! The server side of the contract (the net server's dispatcher): answer through
//! `net_api::codec::serve`; check every `BufDesc` with `DataAreaLayout::check_tx`/`check_rx`
//! against the server's own layout; never touch a buffer after replying; never block; answer
//! `EAGAIN` when an operation cannot complete and arm a wake-up for the socket under its lock;
//! signal the client's notification when an armed socket's readiness changes; reject requests
//! whose epoch is not the current one with `ServerRestarted` (except `Hello`).
//!
//! # Blocking and non-blocking
//!
//! The server never blocks. On a blocking socket, when the server answers `EAGAIN`, the
//! [`Client`] calls `Transport::wait` and repeats the request; it never trusts a wake-up
//! itself, so spurious wake-ups are harmless. No wake-up is lost: the server armed the wake-up
//! and then re-checked readiness before answering `EAGAIN`, and a signal sent before the client gets to
//! `wait` stays pending in the sticky notification. On a non-blocking socket (or with
//! `MSG_DONTWAIT`) `EAGAIN` goes to the caller. A blocking stream `connect` waits for the
//! handshake via `poll(OUT)` and `SO_ERROR`.
//!
//! One notification serves all of a client's sockets and threads. Consuming it clears it, so
//! the client shares it: one thread at a time blocks in `Transport::wait` and bumps a wake
//! generation for each signal it consumes; other blocked threads yield until the generation
//! passes the value they read *before* sending their request, then retry. A data-area slot is
//! released before waiting, so a blocked thread never holds a buffer another thread needs.
//!
//! # Costs
//!
//! One control round trip per operation, plus one per 64 KiB chunk for `send`, per `recv` call
//! (≤ 64 KiB each), and per 64 sockets for `poll`. [`Client::round_trips`] counts them.
//!
//! # Errors
//!
//! Every call returns [`Errno`], which prints as its errno name (`ECONNREFUSED`).
//! A reply that does not decode or does not match the request is `EPROTO`.

#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod client;
#[cfg(feature = "std")]
pub mod host;
mod net;
#[cfg(feature = "sel4")]
pub mod sel4;
mod transport;

pub use client::{Client, PollFd, POLL_BEFORE_BLOCKING};
pub use net::{TcpListener, TcpStream, UdpSocket};
pub use transport::{Transport, Wake};

/// The protocol crate, re-exported so applications need only libsock.
pub use net_api;
pub use net_api::{
    Domain, Errno, MsgFlags, PollEvents, Shutdown, SockAddr, SockOpt, SockOptValue, SockType,
    SocketHandle,
};
