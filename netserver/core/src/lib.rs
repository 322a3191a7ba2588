//! The net server core: everything of the seL4 net server except the seL4 shell.
//!
//! A host-tested library (`#![no_std]` + `alloc`; the `std` feature adds host conveniences) that
//! executes the `net-api` socket protocol for many clients over several smoltcp stack instances:
//!
//! * [`port`]: the sharded port allocator (per protocol × family × residue shard, advancing
//!   cursor, reference-counted listen ports, SO_REUSEADDR/TIME-WAIT rules, RAII guards).
//! * [`lock`]: leveled locks over `lock_api` with a pluggable raw mutex; the lock order, written
//!   once, and a lockdep that panics on an inversion in debug builds.
//! * [`table`], [`socket`], [`accept`], [`wake`]: per-client handle tables with generations,
//!   per-socket locks, the accept queue with a real backlog, and lost-wake-up-free signalling.
//! * [`worker`], [`steer`]: one smoltcp stack per worker thread, flows steered by 4-tuple,
//!   listeners in every worker, bounded ingress so timers keep firing under load.
//! * [`Server`]: the operations, and [`Server::handle`], the dispatcher for encoded requests;
//!   [`held`]: [`Server::handle_holding`], the same for transports that can defer a reply
//!   (blocking sends answered once, when all their bytes are in the socket).
//! * [`platform`]: what the seL4 shell supplies (frame queues, clock, raw mutex, signals).
//! * `host` (feature `std`): std clock and signals, an in-memory link with loss, reordering and
//!   duplication, and a threaded harness.
//!
//! See `README.md` for the threading model, the lock order and the socket lifetime.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod accept;
mod dispatch;
pub mod held;
#[cfg(feature = "std")]
pub mod host;
pub mod lock;
pub mod platform;
pub mod port;
mod server;
pub mod socket;
pub mod stats;
pub mod steer;
pub mod sync;
pub mod table;
pub mod wake;
pub mod worker;

pub use server::{ClientId, Footprint, Region, Server, ServerConfig};
pub use worker::Worker;
