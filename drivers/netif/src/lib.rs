//! The network-interface contract between a NIC driver process and the net server.
//!
//! One `no_std` crate both sides depend on, on top of [`shared_ring`]: which rings exist, who
//! produces what, how big the buffers are, where the frame sits inside a buffer, how the two
//! shared regions are laid out, what the notification badges mean, and how a restarted driver
//! re-handshakes. Each side takes its **role type** — [`DriverSide`] or [`ServerSide`] — and
//! cannot do the other side's job (a driver cannot lend buffers; a server cannot complete them).
//! **Each side treats the other as hostile**: nothing the peer writes can make it panic, touch
//! memory outside the two regions, or take back a buffer it did not lend.
//!
//! # The rings
//!
//! Four single-producer single-consumer rings of [`RING_CAP`] [`Desc`]s each:
//!
//! | ring | producer → consumer | carries | `Desc.len` |
//! |---|---|---|---|
//! | `rx_free`   | server → driver | empty buffers to receive into | the buffer's length ([`BUF_SIZE`]) |
//! | `rx_used`   | driver → server | received frames, in the buffers from `rx_free` | the frame's length (0 with [`FLAG_ERROR`]) |
//! | `tx_submit` | server → driver | frames to send | the frame's length |
//! | `tx_done`   | driver → server | buffers of sent frames, back | the frame's length (ignored) |
//!
//! A descriptor's `offset` is the byte offset of the **buffer's start** in the buffers region —
//! never a pointer — and its `id` is the server's buffer id, which the driver echoes. The frame
//! itself always starts [`HEADROOM`] bytes into the buffer: the bytes in front of it are where the
//! driver puts (transmit) or the device writes (receive) the virtio-net header, so the device DMAs
//! straight into and out of the buffer and nobody copies a frame.
//!
//! ```text
//!  buffer (BUF_SIZE = 2048 bytes, at Desc.offset in the buffers region)
//!  ┌──────────────── HEADROOM = 32 ───────────────┬──────────── up to MAX_FRAME = 2016 ───────────┐
//!  │ unused … │ virtio-net header (driver/device) │ Ethernet frame (Desc.len bytes)                │
//!  └──────────┴───────────────────────────────────┴────────────────────────────────────────────────┘
//! ```
//!
//! # The regions
//!
//! - **rings** ([`RINGS_REGION_SIZE`] bytes, mapped by both): the [`DeviceInfo`] block at
//!   [`INFO_OFFSET`], then the four rings at [`RX_FREE_OFFSET`], [`RX_USED_OFFSET`],
//!   [`TX_SUBMIT_OFFSET`], [`TX_DONE_OFFSET`] (each [`RING_STRIDE`] apart, 64-byte aligned).
//! - **buffers** ([`BUFFERS_REGION_SIZE`] bytes, `dma = true`, mapped by both): [`NUM_BUFFERS`]
//!   buffers of [`BUF_SIZE`] bytes. The driver translates buffer addresses to physical addresses
//!   for the device; it never sees anything but this region and its own private DMA memory.
//!
//! # Ownership of a buffer
//!
//! The server owns every buffer ([`shared_ring::BufferPool`]); a buffer is *lent* to the driver
//! when its descriptor is pushed on `rx_free` or `tx_submit`, and comes home when its descriptor
//! pops out of `rx_used` or `tx_done`. The server accepts it back only if the id names a buffer it
//! lent **on the matching ring** (`rx_used` returns `rx_free` loans, `tx_done` returns
//! `tx_submit` loans), not returned yet, with a length that fits; it rebuilds the descriptor from
//! its own record (the driver's `offset` is ignored). A receive frame is then read **in place**
//! ([`ServerSide::frame`]) and recycled ([`ServerSide::recycle`]); a transmit frame is written
//! once, in place, into a buffer the server holds ([`ServerSide::tx_buf_mut`]) and lent with
//! [`ServerSide::send`].
//!
//! The driver validates every descriptor against the buffers region ([`shared_ring::Region`]):
//! inside the region, inside one buffer, long enough. It cannot check that the server lends a
//! buffer only once at a time — a server that does so only corrupts its own data.
//!
//! # Wake-ups
//!
//! One notification each way, with the ring crate's wake-me flags deciding whether to signal:
//!
//! - **driver → server**: the driver holds a badged capability to the server's notification.
//!   The server picks the badge per driver in the system description (one bit per driver, so a
//!   server serving several NICs knows which to look at); [`SERVER_BADGE_DRIVER`] is the
//!   conventional bit for the first one. A signal means "look at `rx_used` / `tx_done`, or at
//!   the epoch (I (re)started)".
//! - **server → driver**: the driver waits on its own notification, on which two badges arrive:
//!   [`DRIVER_BADGE_IRQ`] (bit 0) from the device's IRQ handler, and [`DRIVER_BADGE_SERVER`]
//!   (bit 1) from the server's capability ("look at `rx_free` / `tx_submit`, or there is room
//!   on `rx_used` / `tx_done` again").
//!
//! A side signals only when a ring operation returns [`Notify::Signal`] (the peer asked to be
//! woken), and blocks only when `prepare_wait` returns [`Wait::Block`] (the re-check after arming
//! the flag found nothing). The driver additionally signals once after every (re)initialisation.
//!
//! # Epochs and restart
//!
//! The **driver** initialises the rings: at start (and after being restarted) it resets its
//! device first — which stops all DMA into buffers of the previous incarnation — and then
//! [`DriverSide::init`] picks an epoch newer than anything in the region (after `u32::MAX` it
//! wraps, skipping 0 and every epoch still found in the region), re-initialises the
//! four rings with it and publishes it, with the MAC address, in the [`DeviceInfo`] block.
//! The server sees [`RingError::EpochChanged`] (or notices the new epoch — or, should a wrapped
//! epoch repeat one it is still on, a different info block — in [`ServerSide::service`]), takes
//! back every buffer it had lent, re-attaches to all four rings, re-posts its receive buffers and
//! resumes transmitting. Frames that were in flight are lost
//! (as on a NIC reset); buffers the net server held (frames being read, transmit buffers being
//! filled) stay valid across the restart. A driver that broke the protocol is marked faulty and
//! ignored until it is restarted (a new epoch, or a different info block).
#![no_std]
#![forbid(unsafe_code)]

mod driver;
mod error;
mod info;
mod server;

pub use driver::{DriverSide, Interest, RxBuffer, TxFrame};
pub use error::NetifError;
pub use info::DeviceInfo;
pub use server::{LinkState, RxFrame, ServerSide, ServerStats, TxBuf};
pub use shared_ring::{Desc, Notify, Region, Ring, RingError, Wait};

/// Capacity of each of the four rings.
pub const RING_CAP: usize = 256;
/// A ring of the interface.
pub type NetRing<'a> = Ring<'a, Desc, RING_CAP>;

/// Size of every packet buffer.
pub const BUF_SIZE: u32 = 2048;
/// Bytes in front of the frame in each buffer, for the virtio-net header (10 or 12 bytes, or
/// 20 with hash reports) so the device reads and writes the buffer in place.
pub const HEADROOM: u32 = 32;
/// Largest frame a buffer holds.
pub const MAX_FRAME: u32 = BUF_SIZE - HEADROOM;
/// Room for a frame a receive buffer must have: an Ethernet frame with a VLAN tag, no FCS.
pub const MIN_RX_ROOM: u32 = 1518;
/// Shortest frame the driver accepts for transmission (an Ethernet header).
pub const MIN_TX_FRAME: u32 = 14;
/// Number of buffers in the buffers region.
pub const NUM_BUFFERS: usize = 512;
/// Size of the buffers region (`dma = true`).
pub const BUFFERS_REGION_SIZE: usize = NUM_BUFFERS * BUF_SIZE as usize;
/// Receive buffers the server keeps lent to the driver by default.
pub const DEFAULT_RX_TARGET: u32 = 128;

/// Offset of the [`DeviceInfo`] block in the rings region.
pub const INFO_OFFSET: usize = 0;
/// Distance between the rings in the rings region (each ring is `192 + 16 * 256` bytes).
pub const RING_STRIDE: usize = 0x2000;
/// Offset of `rx_free` in the rings region.
pub const RX_FREE_OFFSET: usize = 0x1000;
/// Offset of `rx_used` in the rings region.
pub const RX_USED_OFFSET: usize = RX_FREE_OFFSET + RING_STRIDE;
/// Offset of `tx_submit` in the rings region.
pub const TX_SUBMIT_OFFSET: usize = RX_USED_OFFSET + RING_STRIDE;
/// Offset of `tx_done` in the rings region.
pub const TX_DONE_OFFSET: usize = TX_SUBMIT_OFFSET + RING_STRIDE;
/// Size of the rings region.
pub const RINGS_REGION_SIZE: usize = TX_DONE_OFFSET + RING_STRIDE;

/// `rx_used` flag: the device reported an error for this buffer; `len` is 0, drop it.
pub const FLAG_ERROR: u32 = 1;

/// Driver's notification: the device interrupted (the IRQ handler's badge).
pub const DRIVER_BADGE_IRQ: u64 = 1 << 0;
/// Driver's notification: the server signalled.
pub const DRIVER_BADGE_SERVER: u64 = 1 << 1;
/// Server's notification: conventional badge of the first driver's capability.
pub const SERVER_BADGE_DRIVER: u64 = 1 << 0;

const _: () = {
    assert!(NetRing::BYTES <= RING_STRIDE);
    assert!(RX_FREE_OFFSET.is_multiple_of(64) && RING_STRIDE.is_multiple_of(64));
    assert!(INFO_OFFSET + info::INFO_BYTES <= RX_FREE_OFFSET);
    assert!(RINGS_REGION_SIZE.is_multiple_of(4096) && BUFFERS_REGION_SIZE.is_multiple_of(4096));
    assert!(DEFAULT_RX_TARGET as usize <= RING_CAP);
    assert!(DEFAULT_RX_TARGET as usize <= NUM_BUFFERS);
    assert!(HEADROOM + MIN_RX_ROOM <= BUF_SIZE);
};

/// The shared state of one interface as seen from one process: the info block and the four
/// rings (views only; each side makes its role type from them).
#[derive(Clone, Copy)]
pub struct RingSet<'a> {
    /// The driver's published epoch, MAC and MTU.
    pub info: DeviceInfo<'a>,
    /// Empty receive buffers, server → driver.
    pub rx_free: NetRing<'a>,
    /// Received frames, driver → server.
    pub rx_used: NetRing<'a>,
    /// Frames to send, server → driver.
    pub tx_submit: NetRing<'a>,
    /// Sent buffers, driver → server.
    pub tx_done: NetRing<'a>,
}

impl RingSet<'_> {
    /// The four rings in the order the driver initialises them.
    fn all(&self) -> [NetRing<'_>; 4] {
        [self.rx_free, self.rx_used, self.tx_submit, self.tx_done]
    }
}
