//! A safe face over `VirtIONetRaw`'s token API, in terms of netif's validated buffers.

use netif::{RxBuffer, TxFrame, HEADROOM};
use shared_ring::{Region, RingError};
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::Transport;

use crate::hal::Sel4Hal;

/// What went wrong between the driver and the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicError {
    /// virtio-drivers refused or failed.
    Virtio(virtio_drivers::Error),
    /// A buffer area failed the region check (cannot happen for validated buffers).
    Region(RingError),
    /// The device's header is longer than netif's headroom.
    HeaderTooLong(u32),
    /// The device completed a request with a header length other than the negotiated one.
    HeaderMismatch(u32),
}

impl From<virtio_drivers::Error> for NicError {
    fn from(e: virtio_drivers::Error) -> Self {
        NicError::Virtio(e)
    }
}

/// A virtio-net device driven through `VirtIONetRaw` with `Q`-entry queues, DMAing straight into
/// and out of the shared buffers.
///
/// Receive: the device gets the buffer from `HEADROOM - hdr_len` on, so it writes the header in
/// front of the frame position and the frame exactly at `HEADROOM`. Transmit: the driver writes
/// the header into the `hdr_len` bytes in front of the frame (the only bytes of a transmit buffer
/// the driver writes) and the device reads header and frame as one buffer.
///
/// Every buffer the device holds is recorded under its token; the same area is passed back when
/// the request completes, and this process does not touch it in between — the contract of
/// `receive_begin` / `transmit_begin`.
pub struct VirtioNic<T: Transport, const Q: usize> {
    net: VirtIONetRaw<Sel4Hal, T, Q>,
    hdr_len: u32,
    rx: [Option<RxBuffer>; Q],
    tx: [Option<TxFrame>; Q],
    rx_in_flight: usize,
    tx_in_flight: usize,
    lost: u64,
}

impl<T: Transport, const Q: usize> VirtioNic<T, Q> {
    /// Initialise the device (reset, negotiate features, set up both queues in the private DMA
    /// region; see [`Sel4Hal`]).
    pub fn new(transport: T) -> Result<Self, NicError> {
        let net = VirtIONetRaw::<Sel4Hal, T, Q>::new(transport)?;
        let mut scratch = [0u8; 64];
        let hdr_len = net.fill_buffer_header(&mut scratch)? as u32;
        if hdr_len > HEADROOM {
            return Err(NicError::HeaderTooLong(hdr_len));
        }
        Ok(VirtioNic {
            net,
            hdr_len,
            rx: core::array::from_fn(|_| None),
            tx: core::array::from_fn(|_| None),
            rx_in_flight: 0,
            tx_in_flight: 0,
            lost: 0,
        })
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.net.mac_address()
    }

    /// The virtio-net header length the device uses.
    pub fn hdr_len(&self) -> u32 {
        self.hdr_len
    }

    /// Buffers the device holds (receive, transmit).
    pub fn in_flight(&self) -> (usize, usize) {
        (self.rx_in_flight, self.tx_in_flight)
    }

    /// Buffers whose token could not be recorded (a virtio-drivers bug if ever non-zero).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Whether the receive queue has room for another buffer.
    pub fn can_receive(&self) -> bool {
        self.rx_in_flight < Q
    }

    /// Whether the transmit queue has room for another frame.
    pub fn can_send(&self) -> bool {
        self.tx_in_flight < Q && self.net.can_send()
    }

    /// Acknowledge the device's interrupt (reads and clears the ISR status, which deasserts a
    /// level-triggered INTx). Returns whether the device had anything to report.
    pub fn ack_interrupt(&mut self) -> bool {
        !self.net.ack_interrupt().is_empty()
    }

    /// Give the device an empty buffer to receive into. On error the buffer comes back.
    pub fn rx_submit(&mut self, region: &mut Region<'_>, buf: RxBuffer) -> Result<(), (RxBuffer, NicError)> {
        let Some(area) = buf.device_area(self.hdr_len) else { return Err((buf, NicError::HeaderTooLong(self.hdr_len))) };
        let bytes = match region.slice_mut(&area) {
            Ok(b) => b,
            Err(e) => return Err((buf, NicError::Region(e))),
        };
        // SAFETY: `bytes` is a buffer the server lent to this driver, inside the shared DMA
        // region (so `Sel4Hal::share` translates it). This process does not access it again
        // until `rx_poll` passes the identical area to `receive_complete` for this token: the
        // `RxBuffer` is moved into `self.rx` below and is the only handle to it here.
        match unsafe { self.net.receive_begin(bytes) } {
            Ok(token) => {
                self.rx_in_flight += 1;
                match self.rx.get_mut(usize::from(token)) {
                    Some(slot @ None) => *slot = Some(buf),
                    _ => self.lost += 1,
                }
                Ok(())
            }
            Err(e) => Err((buf, NicError::Virtio(e))),
        }
    }

    /// The next completed receive: the buffer and the frame length (at `HEADROOM`), or `None`.
    pub fn rx_poll(&mut self, region: &mut Region<'_>) -> Option<(RxBuffer, Result<u32, NicError>)> {
        let token = self.net.poll_receive()?;
        // A token with no record cannot be completed (virtio-drivers needs the buffer back);
        // it stays at the head of the used ring. Only a virtio-drivers bug leads here.
        let buf = self.rx.get_mut(usize::from(token))?.take()?;
        let result = match buf.device_area(self.hdr_len).map(|a| region.slice_mut(&a)) {
            Some(Ok(bytes)) => {
                // SAFETY: `bytes` is the same area, of the same buffer, that `rx_submit` passed
                // to `receive_begin` for this token (recorded in `self.rx[token]`).
                match unsafe { self.net.receive_complete(token, bytes) } {
                    Ok((hdr, len)) if hdr as u32 == self.hdr_len => Ok(len as u32),
                    Ok((hdr, _)) => Err(NicError::HeaderMismatch(hdr as u32)),
                    Err(e) => Err(NicError::Virtio(e)),
                }
            }
            Some(Err(e)) => Err(NicError::Region(e)),
            None => Err(NicError::HeaderTooLong(self.hdr_len)),
        };
        self.rx_in_flight -= 1;
        Some((buf, result))
    }

    /// Hand a frame to the device. On error the frame comes back.
    pub fn tx_submit(&mut self, region: &mut Region<'_>, frame: TxFrame) -> Result<(), (TxFrame, NicError)> {
        let (Some(header), Some(area)) = (frame.header_area(self.hdr_len), frame.device_area(self.hdr_len)) else {
            return Err((frame, NicError::HeaderTooLong(self.hdr_len)));
        };
        match region.slice_mut(&header) {
            Ok(h) => {
                if let Err(e) = self.net.fill_buffer_header(h) {
                    return Err((frame, NicError::Virtio(e)));
                }
            }
            Err(e) => return Err((frame, NicError::Region(e))),
        }
        let bytes = match region.slice(&area) {
            Ok(b) => b,
            Err(e) => return Err((frame, NicError::Region(e))),
        };
        // SAFETY: `bytes` (header + frame) lies in a buffer the server lent to this driver,
        // inside the shared DMA region. This process does not access it again until `tx_poll`
        // passes the identical area to `transmit_complete` for this token (the `TxFrame` is
        // moved into `self.tx` below).
        match unsafe { self.net.transmit_begin(bytes) } {
            Ok(token) => {
                self.tx_in_flight += 1;
                match self.tx.get_mut(usize::from(token)) {
                    Some(slot @ None) => *slot = Some(frame),
                    _ => self.lost += 1,
                }
                Ok(())
            }
            Err(e) => Err((frame, NicError::Virtio(e))),
        }
    }

    /// The next completed transmission, or `None`.
    pub fn tx_poll(&mut self, region: &mut Region<'_>) -> Option<(TxFrame, Result<(), NicError>)> {
        let token = self.net.poll_transmit()?;
        let frame = self.tx.get_mut(usize::from(token))?.take()?;
        let result = match frame.device_area(self.hdr_len).map(|a| region.slice(&a)) {
            Some(Ok(bytes)) => {
                // SAFETY: the same area of the same buffer that `tx_submit` passed to
                // `transmit_begin` for this token (recorded in `self.tx[token]`).
                match unsafe { self.net.transmit_complete(token, bytes) } {
                    Ok(_) => Ok(()),
                    Err(e) => Err(NicError::Virtio(e)),
                }
            }
            Some(Err(e)) => Err(NicError::Region(e)),
            None => Err(NicError::HeaderTooLong(self.hdr_len)),
        };
        self.tx_in_flight -= 1;
        Some((frame, result))
    }
}
