//! The virtio-net driver's logic, without the seL4 specifics: move buffers between the four
//! `netif` rings and a device.
//!
//! ```text
//!   rx_free ──take_rx_buffer──> device rx queue ──rx_poll──> complete_rx ──> rx_used
//!   tx_submit ─take_tx_frame──> device tx queue ──tx_poll──> complete_tx ──> tx_done
//! ```
//!
//! [`Driver::pump`] does one pass of all four moves and flushes the rings; the binary calls it
//! after every wake-up and blocks when [`Driver::prepare_wait`] says so. The device is anything
//! implementing [`NetDevice`]: [`sel4_dma::VirtioNic`] (virtio-drivers' `VirtIONetRaw`) in the
//! driver process, a fake device in the host tests (`tests/pump.rs`).
//!
//! The server is hostile: every descriptor is validated by [`netif::DriverSide`] before the
//! device sees it; a bad one is dropped and counted ([`Stats::bad_descriptors`]), and the pump
//! goes on. A corrupt ring (index outside the protocol window, header rewritten, epoch changed
//! under the driver) ends the pump with the error: the driver cannot repair the server, it can
//! only stop serving it and wait to be restarted.
#![no_std]
#![forbid(unsafe_code)]

use core::fmt::Debug;
use core::num::NonZeroU32;

use netif::{DriverSide, Interest, NetifError, Notify, Region, RxBuffer, TxFrame, Wait};
use virtio_drivers::transport::Transport;

pub mod pci;

/// A network device as the pump sees it: queues of validated netif buffers. Implementations
/// read and write a buffer only inside the areas [`RxBuffer`] / [`TxFrame`] describe, through
/// the region they are given.
pub trait NetDevice {
    /// What a device operation reports.
    type Error: Debug;

    /// Room in the receive queue for another buffer.
    fn can_receive(&self) -> bool;
    /// Queue an empty buffer (the device writes its header in front of the frame position and
    /// the frame at it). On error the buffer comes back.
    fn rx_submit(&mut self, region: &mut Region<'_>, buf: RxBuffer) -> Result<(), (RxBuffer, Self::Error)>;
    /// The next filled buffer and its frame length.
    fn rx_poll(&mut self, region: &mut Region<'_>) -> Option<(RxBuffer, Result<u32, Self::Error>)>;
    /// Room in the transmit queue for another frame.
    fn can_send(&self) -> bool;
    /// Queue a frame (the device header goes in front of it). On error the frame comes back.
    fn tx_submit(&mut self, region: &mut Region<'_>, frame: TxFrame) -> Result<(), (TxFrame, Self::Error)>;
    /// The next sent frame.
    fn tx_poll(&mut self, region: &mut Region<'_>) -> Option<(TxFrame, Result<(), Self::Error>)>;
    /// Acknowledge an interrupt at the device; whether the device had raised it.
    fn ack_interrupt(&mut self) -> bool;
}

impl<T: Transport, const Q: usize> NetDevice for sel4_dma::VirtioNic<T, Q> {
    type Error = sel4_dma::NicError;

    fn can_receive(&self) -> bool {
        sel4_dma::VirtioNic::can_receive(self)
    }
    fn rx_submit(&mut self, region: &mut Region<'_>, buf: RxBuffer) -> Result<(), (RxBuffer, Self::Error)> {
        sel4_dma::VirtioNic::rx_submit(self, region, buf)
    }
    fn rx_poll(&mut self, region: &mut Region<'_>) -> Option<(RxBuffer, Result<u32, Self::Error>)> {
        sel4_dma::VirtioNic::rx_poll(self, region)
    }
    fn can_send(&self) -> bool {
        sel4_dma::VirtioNic::can_send(self)
    }
    fn tx_submit(&mut self, region: &mut Region<'_>, frame: TxFrame) -> Result<(), (TxFrame, Self::Error)> {
        sel4_dma::VirtioNic::tx_submit(self, region, frame)
    }
    fn tx_poll(&mut self, region: &mut Region<'_>) -> Option<(TxFrame, Result<(), Self::Error>)> {
        sel4_dma::VirtioNic::tx_poll(self, region)
    }
    fn ack_interrupt(&mut self) -> bool {
        sel4_dma::VirtioNic::ack_interrupt(self)
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received and handed to the server.
    pub rx_frames: u64,
    /// Receive buffers returned with an error (device error or refusal).
    pub rx_errors: u64,
    /// Frames the device sent.
    pub tx_frames: u64,
    /// Frames the device refused or failed to send.
    pub tx_errors: u64,
    /// Descriptors from the server that failed validation (dropped).
    pub bad_descriptors: u64,
    /// Interrupts the device had raised.
    pub interrupts: u64,
    /// Interrupts with nothing raised at the device (a shared line, or a misconfigured pin).
    pub spurious_interrupts: u64,
    /// Buffers that could not be returned because the server's ring was full (lost until the
    /// next epoch; only a server that lends more than a ring holds causes it).
    pub lost: u64,
}

/// The driver: a device and the driver side of an interface.
pub struct Driver<'a, D: NetDevice> {
    dev: D,
    side: DriverSide<'a>,
    stats: Stats,
    rx_used_full: bool,
    tx_done_full: bool,
    /// Fault injection: the transmit ring is no longer processed.
    tx_stalled: bool,
}

impl<'a, D: NetDevice> Driver<'a, D> {
    /// A driver for `dev` over `side`. Call [`start`](Self::start) next.
    pub fn new(dev: D, side: DriverSide<'a>) -> Self {
        Driver { dev, side, stats: Stats::default(), rx_used_full: false, tx_done_full: false, tx_stalled: false }
    }

    /// (Re)initialise the rings with a new epoch and publish `mac`/`mtu`. The device must have
    /// been reset (no DMA in flight) before this; signal the server afterwards.
    pub fn start(&mut self, mac: [u8; 6], mtu: u16) -> Result<NonZeroU32, NetifError> {
        self.side.init(mac, mtu)
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The device interrupted: acknowledge it at the device (before the IRQ handler is acked).
    /// Counts it, and counts it as spurious when the device had raised nothing.
    pub fn interrupt(&mut self) -> bool {
        let raised = self.dev.ack_interrupt();
        if raised {
            self.stats.interrupts += 1;
        } else {
            self.stats.spurious_interrupts += 1;
        }
        raised
    }

    /// One pass: device completions to `rx_used` / `tx_done`, then `rx_free` / `tx_submit` to
    /// the device, then publish and release. Signal the server on [`Notify::Signal`]. An error
    /// means the server's rings are corrupt (or were re-initialised by someone else): stop.
    pub fn pump(&mut self) -> Result<Notify, NetifError> {
        if !self.tx_stalled {
            self.complete_tx()?;
        }
        self.complete_rx()?;
        self.post_rx()?;
        if !self.tx_stalled {
            self.post_tx()?;
        }
        self.side.flush()
    }

    /// Fault injection: stop processing the transmit ring (frames the server submits are
    /// never taken, sent frames never returned) while receiving goes on. The server must notice
    /// the stall and have this driver restarted.
    pub fn stall_tx(&mut self) {
        self.tx_stalled = true;
    }

    /// Fault injection: write garbage into a ring (see [`DriverSide::inject_garbage`]).
    pub fn inject_garbage(&mut self, variant: u64) -> Result<(), NetifError> {
        self.side.inject_garbage(variant)
    }

    /// Arm the wake-ups this driver needs from the server; block only on [`Wait::Block`]. The
    /// device's own completions arrive by interrupt.
    pub fn prepare_wait(&mut self) -> Result<Wait, NetifError> {
        let interest = Interest {
            rx_buffers: self.dev.can_receive(),
            tx_frames: self.dev.can_send() && !self.tx_stalled,
            rx_used_room: self.rx_used_full,
            tx_done_room: self.tx_done_full,
        };
        self.side.prepare_wait(interest)
    }

    fn complete_tx(&mut self) -> Result<(), NetifError> {
        self.tx_done_full = false;
        loop {
            if self.side.tx_done_room()? == 0 {
                self.tx_done_full = true;
                return Ok(());
            }
            let Some((frame, result)) = self.dev.tx_poll(self.side.region_mut()) else { return Ok(()) };
            let ok = result.is_ok();
            if ok {
                self.stats.tx_frames += 1;
            } else {
                self.stats.tx_errors += 1;
            }
            self.side.complete_tx(frame, ok)?;
        }
    }

    fn complete_rx(&mut self) -> Result<(), NetifError> {
        self.rx_used_full = false;
        loop {
            if self.side.rx_used_room()? == 0 {
                self.rx_used_full = true;
                return Ok(());
            }
            let Some((buf, result)) = self.dev.rx_poll(self.side.region_mut()) else { return Ok(()) };
            match result {
                Ok(len) if len > 0 && len <= buf.room() => {
                    self.stats.rx_frames += 1;
                    self.side.complete_rx(buf, len)?;
                }
                _ => {
                    self.stats.rx_errors += 1;
                    self.side.fail_rx(buf)?;
                }
            }
        }
    }

    /// A per-descriptor validation failure is counted and skipped; anything else stops.
    fn skip_bad(&mut self, e: NetifError) -> Result<(), NetifError> {
        match e {
            NetifError::BadDescriptor { .. } | NetifError::TooShort { .. } => {
                self.stats.bad_descriptors += 1;
                Ok(())
            }
            e => Err(e),
        }
    }

    fn post_rx(&mut self) -> Result<(), NetifError> {
        while self.dev.can_receive() {
            match self.side.take_rx_buffer() {
                Ok(Some(buf)) => {
                    if let Err((buf, _)) = self.dev.rx_submit(self.side.region_mut(), buf) {
                        self.stats.rx_errors += 1;
                        if self.side.fail_rx(buf).is_err() {
                            self.stats.lost += 1;
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => self.skip_bad(e)?,
            }
        }
        Ok(())
    }

    fn post_tx(&mut self) -> Result<(), NetifError> {
        while self.dev.can_send() {
            match self.side.take_tx_frame() {
                Ok(Some(frame)) => {
                    if let Err((frame, _)) = self.dev.tx_submit(self.side.region_mut(), frame) {
                        self.stats.tx_errors += 1;
                        if self.side.complete_tx(frame, false).is_err() {
                            self.stats.lost += 1;
                        }
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => self.skip_bad(e)?,
            }
        }
        Ok(())
    }
}
