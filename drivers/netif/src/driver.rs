//! The driver's role: initialise the rings, take buffers and frames the server lends, hand them
//! back filled or sent.

use core::num::NonZeroU32;

use shared_ring::{Consumer, Desc, Notify, Producer, Region, RingError, Wait};

use crate::{NetifError, RingSet, BUF_SIZE, FLAG_ERROR, HEADROOM, MIN_RX_ROOM, MIN_TX_FRAME, RING_CAP};

/// An empty receive buffer the server lent, validated: `offset .. offset + len` lies inside one
/// buffer of the region and leaves at least [`MIN_RX_ROOM`] bytes after the headroom.
///
/// Not `Clone`: the driver holds each loan once and gives it back exactly once
/// ([`DriverSide::complete_rx`]).
#[derive(Debug, PartialEq, Eq)]
pub struct RxBuffer {
    desc: Desc,
}

impl RxBuffer {
    /// The server's id for the buffer.
    pub fn id(&self) -> u32 {
        self.desc.id
    }

    /// Bytes available for a frame (after the headroom).
    pub fn room(&self) -> u32 {
        self.desc.len - HEADROOM
    }

    /// The part of the buffer to hand to the device: a `hdr_len`-byte header area right in front
    /// of the frame position, then the frame room. `None` if `hdr_len > HEADROOM`.
    pub fn device_area(&self, hdr_len: u32) -> Option<Desc> {
        let skip = HEADROOM.checked_sub(hdr_len)?;
        // Validated at take time: offset + len fits and len >= HEADROOM.
        Some(Desc::new(self.desc.offset + skip, self.desc.len - skip, 0, 0))
    }

    /// Where the frame lands: `len` bytes at the frame position.
    pub fn frame_area(&self, len: u32) -> Desc {
        Desc::new(self.desc.offset + HEADROOM, len.min(self.room()), 0, 0)
    }
}

/// A frame the server asks the driver to send, validated: the frame (`len` bytes at
/// `offset + HEADROOM`) lies inside one buffer of the region and is at least [`MIN_TX_FRAME`]
/// bytes long. Not `Clone`; given back with [`DriverSide::complete_tx`].
#[derive(Debug, PartialEq, Eq)]
pub struct TxFrame {
    desc: Desc,
}

impl TxFrame {
    /// The server's id for the buffer.
    pub fn id(&self) -> u32 {
        self.desc.id
    }

    /// Length of the frame.
    pub fn len(&self) -> u32 {
        self.desc.len
    }

    /// Whether the frame is empty (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.desc.len == 0
    }

    /// The frame's bytes.
    pub fn frame_area(&self) -> Desc {
        Desc::new(self.desc.offset + HEADROOM, self.desc.len, 0, 0)
    }

    /// The `hdr_len` bytes right in front of the frame, where the driver writes the device
    /// header. `None` if `hdr_len > HEADROOM`.
    pub fn header_area(&self, hdr_len: u32) -> Option<Desc> {
        let skip = HEADROOM.checked_sub(hdr_len)?;
        Some(Desc::new(self.desc.offset + skip, hdr_len, 0, 0))
    }

    /// Header and frame together: what the device reads.
    pub fn device_area(&self, hdr_len: u32) -> Option<Desc> {
        let skip = HEADROOM.checked_sub(hdr_len)?;
        Some(Desc::new(self.desc.offset + skip, hdr_len + self.desc.len, 0, 0))
    }
}

/// Which wake-ups the driver wants before it blocks ([`DriverSide::prepare_wait`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// The device can take more receive buffers: wake me when `rx_free` has some.
    pub rx_buffers: bool,
    /// The device can take more frames: wake me when `tx_submit` has some.
    pub tx_frames: bool,
    /// Received frames are waiting for room on `rx_used`.
    pub rx_used_room: bool,
    /// Sent buffers are waiting for room on `tx_done`.
    pub tx_done_room: bool,
}

struct Ends<'a> {
    rx_free: Consumer<'a, Desc, RING_CAP>,
    rx_used: Producer<'a, Desc, RING_CAP>,
    tx_submit: Consumer<'a, Desc, RING_CAP>,
    tx_done: Producer<'a, Desc, RING_CAP>,
}

/// The driver's side of an interface.
///
/// It initialises the rings ([`init`](Self::init)), consumes `rx_free` and `tx_submit`,
/// produces `rx_used` and `tx_done`, and checks every descriptor against the buffers region:
/// the server is as untrusted as the driver is to it. It owns the driver's view of the buffers
/// region, which the device code borrows through [`region_mut`](Self::region_mut).
pub struct DriverSide<'a> {
    rings: RingSet<'a>,
    region: Region<'a>,
    ends: Option<Ends<'a>>,
}

impl<'a> DriverSide<'a> {
    /// The driver side over the interface's rings and buffers region (cut into [`BUF_SIZE`]
    /// buffers). Nothing is written until [`init`](Self::init).
    pub fn new(rings: RingSet<'a>, region: Region<'a>) -> Result<Self, NetifError> {
        if region.buf_size() != BUF_SIZE {
            return Err(NetifError::BufferSize { found: region.buf_size() });
        }
        Ok(DriverSide { rings, region, ends: None })
    }

    /// (Re)initialise all four rings with an epoch newer than any found in the region, publish
    /// it with `mac` and `mtu`, and attach. Call it after resetting the device (so no DMA from
    /// a previous incarnation is in flight), then signal the server. Returns the epoch.
    pub fn init(&mut self, mac: [u8; 6], mtu: u16) -> Result<NonZeroU32, NetifError> {
        // The epoch after the newest one found, skipping 0 and every epoch still in the region.
        // The epochs are untrusted: one written as `u32::MAX` makes `newest + 1` wrap, and a
        // wrapped epoch equal to the one the server is still attached to would look like no
        // restart at all (the server would keep its old loans, MAC and MTU).
        let info = self.rings.info.epoch();
        let rings = self.rings.all().map(|r| r.epoch());
        let in_use = |e: u32| e == 0 || e == info || rings.contains(&e);
        let mut epoch = rings.iter().copied().fold(info, u32::max).wrapping_add(1);
        while in_use(epoch) {
            // At most 6 values are excluded, so this ends within 6 steps.
            epoch = epoch.wrapping_add(1);
        }
        let epoch = NonZeroU32::new(epoch).unwrap_or(NonZeroU32::MIN);
        self.ends = None;
        self.rings.info.begin();
        for ring in self.rings.all() {
            ring.init(epoch);
        }
        self.rings.info.publish(epoch.get(), mac, mtu);
        self.ends = Some(Ends {
            rx_free: Consumer::attach(self.rings.rx_free)?,
            rx_used: Producer::attach(self.rings.rx_used)?,
            tx_submit: Consumer::attach(self.rings.tx_submit)?,
            tx_done: Producer::attach(self.rings.tx_done)?,
        });
        Ok(epoch)
    }

    /// The epoch this side initialised (0 before [`init`](Self::init)).
    pub fn epoch(&self) -> u32 {
        self.ends.as_ref().map_or(0, |e| e.rx_free.epoch())
    }

    fn ends(&mut self) -> Result<&mut Ends<'a>, NetifError> {
        self.ends.as_mut().ok_or(NetifError::NotInitialised)
    }

    /// The driver's view of the buffers region (for the device code, which reads and writes
    /// buffers only through validated [`RxBuffer`] / [`TxFrame`] areas).
    pub fn region_mut(&mut self) -> &mut Region<'a> {
        &mut self.region
    }

    /// Take the next empty buffer from `rx_free`, validated. A descriptor that fails
    /// validation is consumed and reported ([`NetifError::BadDescriptor`] /
    /// [`NetifError::TooShort`]); the caller may go on taking the next one.
    pub fn take_rx_buffer(&mut self) -> Result<Option<RxBuffer>, NetifError> {
        let Some(desc) = self.ends()?.rx_free.pop()? else { return Ok(None) };
        if let Err(reason) = self.region.check(&desc) {
            return Err(NetifError::BadDescriptor { desc, reason });
        }
        if desc.len < HEADROOM + MIN_RX_ROOM {
            return Err(NetifError::TooShort { desc });
        }
        Ok(Some(RxBuffer { desc }))
    }

    /// Free slots on `rx_used` right now: how many buffers [`complete_rx`](Self::complete_rx)
    /// can return without [`RingError::Full`].
    pub fn rx_used_room(&mut self) -> Result<u32, NetifError> {
        Ok(self.ends()?.rx_used.free()?)
    }

    /// Give a receive buffer back on `rx_used` holding a `frame_len`-byte frame at the frame
    /// position. A length longer than the buffer's room is reported to the server as an error
    /// (`len` 0, [`FLAG_ERROR`]). On [`RingError::Full`] the buffer is lost to this epoch (check
    /// [`rx_used_room`](Self::rx_used_room) first).
    pub fn complete_rx(&mut self, buf: RxBuffer, frame_len: u32) -> Result<(), NetifError> {
        let d = buf.desc;
        let out = if frame_len <= buf.room() {
            Desc::new(d.offset, frame_len, d.id, 0)
        } else {
            Desc::new(d.offset, 0, d.id, FLAG_ERROR)
        };
        Ok(self.ends()?.rx_used.push(out)?)
    }

    /// Give a receive buffer back unused (the device refused it or reported an error).
    pub fn fail_rx(&mut self, buf: RxBuffer) -> Result<(), NetifError> {
        let d = buf.desc;
        Ok(self.ends()?.rx_used.push(Desc::new(d.offset, 0, d.id, FLAG_ERROR))?)
    }

    /// Take the next frame to send from `tx_submit`, validated (see [`TxFrame`]); invalid
    /// descriptors are consumed and reported, as in [`take_rx_buffer`](Self::take_rx_buffer).
    pub fn take_tx_frame(&mut self) -> Result<Option<TxFrame>, NetifError> {
        let Some(desc) = self.ends()?.tx_submit.pop()? else { return Ok(None) };
        let whole = match HEADROOM.checked_add(desc.len) {
            Some(len) => Desc::new(desc.offset, len, desc.id, 0),
            None => return Err(NetifError::BadDescriptor { desc, reason: RingError::OutOfRegion { offset: desc.offset, len: desc.len } }),
        };
        if let Err(reason) = self.region.check(&whole) {
            return Err(NetifError::BadDescriptor { desc, reason });
        }
        if desc.len < MIN_TX_FRAME {
            return Err(NetifError::TooShort { desc });
        }
        Ok(Some(TxFrame { desc }))
    }

    /// Free slots on `tx_done` right now.
    pub fn tx_done_room(&mut self) -> Result<u32, NetifError> {
        Ok(self.ends()?.tx_done.free()?)
    }

    /// Give a sent (or refused) frame's buffer back on `tx_done`.
    pub fn complete_tx(&mut self, frame: TxFrame, ok: bool) -> Result<(), NetifError> {
        let d = frame.desc;
        let flags = if ok { 0 } else { FLAG_ERROR };
        Ok(self.ends()?.tx_done.push(Desc::new(d.offset, d.len, d.id, flags))?)
    }

    /// Publish everything pushed and release everything popped. Signal the server when this
    /// returns [`Notify::Signal`].
    pub fn flush(&mut self) -> Result<Notify, NetifError> {
        let e = self.ends()?;
        let results = [e.rx_used.publish()?, e.tx_done.publish()?, e.rx_free.release()?, e.tx_submit.release()?];
        Ok(if results.contains(&Notify::Signal) { Notify::Signal } else { Notify::Quiet })
    }

    /// Fault injection, to test the server's defences: write garbage into a ring as a broken
    /// driver would. `variant` picks what: even — a forged descriptor on `rx_used` (a buffer the
    /// server never lent, outside the region); odd — `rx_used`'s producer index moved far past
    /// the protocol window. The server must declare this driver faulty and touch nothing.
    pub fn inject_garbage(&mut self, variant: u64) -> Result<(), NetifError> {
        let e = self.ends()?;
        if variant % 2 == 0 {
            e.rx_used.push(Desc::new(u32::MAX - 0xFFF, 1514, 0xFFFF_FFF0, 0))?;
            let _ = e.rx_used.publish()?;
        } else {
            e.rx_used.ring().scribble_producer_index(3 * RING_CAP as u32 + 7);
        }
        Ok(())
    }

    /// Arm the wake-me flags for what the driver is waiting for, re-checking each ring after
    /// arming. Block on the notification only on [`Wait::Block`]. Call [`flush`](Self::flush)
    /// first.
    pub fn prepare_wait(&mut self, interest: Interest) -> Result<Wait, NetifError> {
        let e = self.ends()?;
        let mut wait = Wait::Block;
        if interest.rx_buffers && e.rx_free.prepare_wait()? == Wait::Retry {
            wait = Wait::Retry;
        }
        if interest.tx_frames && e.tx_submit.prepare_wait()? == Wait::Retry {
            wait = Wait::Retry;
        }
        if interest.rx_used_room && e.rx_used.prepare_wait()? == Wait::Retry {
            wait = Wait::Retry;
        }
        if interest.tx_done_room && e.tx_done.prepare_wait()? == Wait::Retry {
            wait = Wait::Retry;
        }
        Ok(wait)
    }
}
