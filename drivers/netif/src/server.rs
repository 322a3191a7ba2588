//! The net server's role: own the buffers, lend them, validate what comes back, expose frames in
//! place, survive a hostile or restarting driver.

use shared_ring::{BufferPool, Consumer, Desc, Notify, Producer, Region, RingError, Wait};

use crate::{
    NetifError, RingSet, BUF_SIZE, DEFAULT_RX_TARGET, FLAG_ERROR, HEADROOM, MAX_FRAME, NUM_BUFFERS, RING_CAP,
};

/// A received frame, lent back by the driver and validated; read it in place with
/// [`ServerSide::frame`], then give the buffer back with [`ServerSide::recycle`].
///
/// Not `Clone`: it stands for the buffer. Dropping it without recycling leaks the buffer (it
/// stays held by the server until the server itself restarts).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "recycle the buffer, or it is leaked"]
pub struct RxFrame {
    id: u32,
    offset: u32,
    len: u32,
}

impl RxFrame {
    /// Length of the frame in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the frame is empty (never: empty receives are recycled internally).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// A transmit buffer the server holds: write a frame with [`ServerSide::tx_buf_mut`], then
/// [`ServerSide::send`] it (or [`ServerSide::drop_tx`]). Not `Clone`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "send or drop_tx the buffer, or it is leaked"]
pub struct TxBuf {
    id: u32,
    offset: u32,
}

impl TxBuf {
    /// The buffer's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// What the server knows about the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No driver has initialised the rings yet (or one is re-initialising them).
    Down,
    /// Attached to the driver's epoch.
    Up {
        /// The driver's epoch.
        epoch: u32,
        /// The MAC address the driver published.
        mac: [u8; 6],
        /// The MTU the driver published.
        mtu: u16,
    },
    /// The driver of `epoch` broke the protocol; it is ignored until it restarts (publishes a
    /// different info block: normally a new epoch).
    Faulty {
        /// The epoch that misbehaved.
        epoch: u32,
        /// What it did.
        error: NetifError,
    },
}

/// Counters, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Frames received (handed out by [`ServerSide::recv`]).
    pub rx_frames: u64,
    /// Receive buffers the driver returned empty or with an error flag.
    pub rx_errors: u64,
    /// Frames lent to the driver for sending.
    pub tx_frames: u64,
    /// Transmit buffers the driver returned.
    pub tx_done: u64,
    /// Frames not sent because `tx_submit` was full or no driver was attached.
    pub tx_dropped: u64,
    /// Times the server attached to a new epoch after the first.
    pub restarts: u64,
    /// Times a driver was declared faulty.
    pub faults: u64,
}

/// Which ring a buffer is lent on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loan {
    None,
    Rx,
    Tx,
}

struct Ends<'a> {
    epoch: u32,
    rx_free: Producer<'a, Desc, RING_CAP>,
    rx_used: Consumer<'a, Desc, RING_CAP>,
    tx_submit: Producer<'a, Desc, RING_CAP>,
    tx_done: Consumer<'a, Desc, RING_CAP>,
}

/// The net server's side of one interface.
///
/// It owns every buffer of the buffers region (a [`BufferPool`] of [`NUM_BUFFERS`]), keeps
/// `rx_target` of them lent to the driver on `rx_free`, and validates everything the driver
/// hands back: the id must name a buffer lent **on the matching ring** and not yet returned, the
/// length must fit, and the offset is taken from the server's own records. A driver that breaks
/// the protocol makes every call return [`NetifError::Faulty`] (the state says what it did)
/// until it restarts; nothing it writes makes this side panic or read outside the region.
///
/// # Event loop
///
/// ```text
/// loop {
///     server.service();                        // attach / re-attach, take back sent buffers, refill rx
///     while let Some(f) = server.recv()? {     // frames, in place
///         stack.input(server.frame(&f));
///         server.recycle(f);
///     }
///     // transmit: alloc_tx → tx_buf_mut (write the frame once) → send
///     if server.flush()? == Notify::Signal { driver_notification.signal() }
///     if server.prepare_wait()? == Wait::Block { my_notification.wait() }
/// }
/// ```
///
/// Every method is safe to call in any state; when no driver is attached, `recv` returns
/// `None`, `send` drops the frame ([`NetifError::Down`]), and `flush` is quiet.
pub struct ServerSide<'a> {
    rings: RingSet<'a>,
    region: Region<'a>,
    pool: BufferPool<NUM_BUFFERS>,
    loans: [Loan; NUM_BUFFERS],
    ends: Option<Ends<'a>>,
    state: LinkState,
    /// The info block (epoch, MAC, MTU) of the driver incarnation last attached to or declared
    /// faulty: a block that reads otherwise is another incarnation, even under the same epoch.
    incarnation: Option<(u32, [u8; 6], u16)>,
    ever_attached: bool,
    rx_target: u32,
    rx_lent: u32,
    stats: ServerStats,
}

impl<'a> ServerSide<'a> {
    /// The server side over the interface's rings and buffers region (cut into [`BUF_SIZE`]
    /// buffers; up to [`NUM_BUFFERS`] of them are used), keeping [`DEFAULT_RX_TARGET`] receive
    /// buffers lent. Does not touch shared memory; the first [`service`](Self::service) attaches.
    pub fn new(rings: RingSet<'a>, region: Region<'a>) -> Result<Self, NetifError> {
        Self::with_rx_target(rings, region, DEFAULT_RX_TARGET)
    }

    /// As [`new`](Self::new), keeping `rx_target` receive buffers lent (at most [`RING_CAP`] and
    /// at most the number of buffers).
    pub fn with_rx_target(rings: RingSet<'a>, region: Region<'a>, rx_target: u32) -> Result<Self, NetifError> {
        if region.buf_size() != BUF_SIZE {
            return Err(NetifError::BufferSize { found: region.buf_size() });
        }
        let mut pool = BufferPool::new();
        let n = pool.add_all(&region);
        let rx_target = rx_target.min(RING_CAP as u32).min(n);
        Ok(ServerSide {
            rings,
            region,
            pool,
            loans: [Loan::None; NUM_BUFFERS],
            ends: None,
            state: LinkState::Down,
            incarnation: None,
            ever_attached: false,
            rx_target,
            rx_lent: 0,
            stats: ServerStats::default(),
        })
    }

    /// The link state.
    pub fn link(&self) -> LinkState {
        self.state
    }

    /// The driver's MAC address, when attached.
    pub fn mac(&self) -> Option<[u8; 6]> {
        match self.state {
            LinkState::Up { mac, .. } => Some(mac),
            _ => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Buffers currently lent to the driver (receive and transmit).
    pub fn lent(&self) -> u32 {
        self.pool.lent()
    }

    /// Buffers idle in the pool.
    pub fn idle(&self) -> u32 {
        self.pool.available()
    }

    /// Do the housekeeping a driver signal asks for: attach to the driver's epoch if not
    /// attached, or if the info block no longer reads as it did when this side attached — the
    /// driver re-initialised, perhaps with the same epoch (after a restart: take back every
    /// loan first, then re-post receive buffers),
    /// take back sent buffers from `tx_done`, and top up `rx_free` to the receive target.
    /// Returns the link state. Follow it with [`flush`](Self::flush).
    pub fn service(&mut self) -> LinkState {
        // Twice at most: a pass that finds the driver restarted detaches, and the second pass
        // attaches to the new epoch.
        for _ in 0..2 {
            if !self.info_is_current() {
                self.detach();
            }
            if self.ends.is_none() && !self.try_attach() {
                break;
            }
            self.drain_tx_done();
            self.refill_rx();
            if self.ends.is_some() {
                break;
            }
        }
        self.state
    }

    /// The next received frame, validated, or `None` — also when no driver is attached. When
    /// the driver restarted it detaches, takes every loan back and returns `None` (call
    /// [`service`](Self::service) to attach to the new epoch); after a protocol violation it
    /// returns [`NetifError::Faulty`].
    pub fn recv(&mut self) -> Result<Option<RxFrame>, NetifError> {
        loop {
            let Some(ends) = self.ends.as_mut() else {
                return match self.state {
                    LinkState::Faulty { .. } => Err(NetifError::Faulty),
                    _ => Ok(None),
                };
            };
            let desc = match ends.rx_used.pop() {
                Ok(Some(d)) => d,
                Ok(None) => return Ok(None),
                Err(e) => return self.ring_failure(e).map(|()| None),
            };
            let back = self.take_back(desc, Loan::Rx)?;
            self.rx_lent -= 1;
            if back.flags & FLAG_ERROR != 0 || back.len == 0 {
                self.stats.rx_errors += 1;
                self.relend_or_free(back.id);
                continue;
            }
            if back.len > MAX_FRAME {
                let _ = self.pool.free(back.id);
                return Err(self.fault(NetifError::FrameLength { id: back.id, len: back.len }));
            }
            self.stats.rx_frames += 1;
            return Ok(Some(RxFrame { id: back.id, offset: back.offset, len: back.len }));
        }
    }

    /// The bytes of a received frame, in the buffer the device wrote them to (no copy).
    ///
    /// The driver cannot change the buffer any more through the protocol, but a hostile driver
    /// can still write the shared memory: parse the frame once, into local values.
    pub fn frame(&self, frame: &RxFrame) -> &[u8] {
        // Validated in `recv` (offset from the pool's record, len <= MAX_FRAME), so the check
        // cannot fail; an empty slice stands in rather than a panic.
        let area = Desc::new(frame.offset + HEADROOM, frame.len, 0, 0);
        self.region.slice(&area).unwrap_or(&[])
    }

    /// Give a received frame's buffer back: lent again on `rx_free` while fewer than the
    /// receive target are lent, otherwise kept idle for transmit.
    pub fn recycle(&mut self, frame: RxFrame) {
        self.relend_or_free(frame.id);
    }

    /// A transmit buffer, if one is idle beyond what the receive side needs to reach its target.
    pub fn alloc_tx(&mut self) -> Option<TxBuf> {
        let reserve = if self.ends.is_some() { self.rx_target.saturating_sub(self.rx_lent) } else { 0 };
        if self.pool.available() <= reserve {
            return None;
        }
        let d = self.pool.alloc()?;
        Some(TxBuf { id: d.id, offset: d.offset })
    }

    /// The frame area of a transmit buffer ([`MAX_FRAME`] bytes): write the frame here, once.
    pub fn tx_buf_mut(&mut self, buf: &TxBuf) -> &mut [u8] {
        let area = Desc::new(buf.offset + HEADROOM, MAX_FRAME, 0, 0);
        self.region.slice_mut(&area).unwrap_or(&mut [])
    }

    /// Lend the first `len` bytes of the buffer's frame area to the driver for sending (visible
    /// to it at the next [`flush`](Self::flush)). If the frame cannot be queued — no driver,
    /// `tx_submit` full, a bad length — the buffer goes back to the pool and the error says why
    /// (`Ring(Full)` is flow control: the frame is dropped, as a full NIC queue drops).
    pub fn send(&mut self, buf: TxBuf, len: u32) -> Result<(), NetifError> {
        let id = buf.id;
        if len == 0 || len > MAX_FRAME {
            let _ = self.pool.free(id);
            return Err(NetifError::FrameLength { id, len });
        }
        let Some(ends) = self.ends.as_mut() else {
            let _ = self.pool.free(id);
            self.stats.tx_dropped += 1;
            return Err(self.not_up());
        };
        match self.pool.lend(id, len, 0, &mut ends.tx_submit) {
            Ok(()) => {
                self.set_loan(id, Loan::Tx);
                self.stats.tx_frames += 1;
                Ok(())
            }
            Err(e) => {
                let _ = self.pool.free(id);
                self.stats.tx_dropped += 1;
                match e {
                    RingError::Full => Err(NetifError::Ring(RingError::Full)),
                    e => match self.ring_failure(e) {
                        Ok(()) => Err(NetifError::Down),
                        Err(e) => Err(e),
                    },
                }
            }
        }
    }

    /// Give a transmit buffer back unused.
    pub fn drop_tx(&mut self, buf: TxBuf) {
        let _ = self.pool.free(buf.id);
    }

    /// Publish what was lent (`rx_free`, `tx_submit`) and release what was taken back
    /// (`rx_used`, `tx_done`). Signal the driver's notification when this returns
    /// [`Notify::Signal`].
    pub fn flush(&mut self) -> Result<Notify, NetifError> {
        let Some(e) = self.ends.as_mut() else { return Ok(Notify::Quiet) };
        let r = (|| {
            let all = [e.rx_free.publish()?, e.tx_submit.publish()?, e.rx_used.release()?, e.tx_done.release()?];
            Ok(if all.contains(&Notify::Signal) { Notify::Signal } else { Notify::Quiet })
        })();
        match r {
            Ok(n) => Ok(n),
            Err(e) => self.ring_failure(e).map(|()| Notify::Quiet),
        }
    }

    /// Arm the wake-me flags on `rx_used` and `tx_done` and re-check. Block on the server's
    /// notification only on [`Wait::Block`]. Call [`flush`](Self::flush) first. When no driver
    /// is attached it tries to attach and blocks if it cannot (the driver signals after it has
    /// initialised the rings).
    pub fn prepare_wait(&mut self) -> Result<Wait, NetifError> {
        if self.ends.is_none() {
            return Ok(if self.try_attach() { Wait::Retry } else { Wait::Block });
        }
        let Some(e) = self.ends.as_mut() else { return Ok(Wait::Block) };
        let r = (|| {
            let a = e.rx_used.prepare_wait()?;
            let b = e.tx_done.prepare_wait()?;
            Ok(if a == Wait::Retry || b == Wait::Retry { Wait::Retry } else { Wait::Block })
        })();
        match r {
            Ok(w) => Ok(w),
            Err(RingError::Unpublished) => Err(NetifError::Ring(RingError::Unpublished)),
            Err(e) => self.ring_failure(e).map(|()| Wait::Retry),
        }
    }

    /// Frames lent on `tx_submit` that the driver has not returned.
    pub fn tx_in_flight(&self) -> usize {
        self.loans.iter().filter(|&&l| l == Loan::Tx).count()
    }

    /// Declares the attached driver faulty for something the server found itself (a watchdog:
    /// [`NetifError::TxStalled`]), as if it had broken the protocol: ignored until it restarts.
    pub fn declare_faulty(&mut self, error: NetifError) {
        if self.ends.is_some() {
            let _ = self.fault(error);
        }
    }

    // ---- internals ----

    fn not_up(&self) -> NetifError {
        match self.state {
            LinkState::Faulty { .. } => NetifError::Faulty,
            _ => NetifError::Down,
        }
    }

    fn set_loan(&mut self, id: u32, loan: Loan) {
        if let Some(l) = self.loans.get_mut(id as usize) {
            *l = loan;
        }
    }

    /// Attach to all four rings if the driver has published a consistent info block that is not
    /// the one of the incarnation already declared faulty. Returns whether it attached.
    fn try_attach(&mut self) -> bool {
        let Some(info) = self.rings.info.read() else { return false };
        if matches!(self.state, LinkState::Faulty { .. }) && self.incarnation == Some(info) {
            return false;
        }
        let (epoch, mac, mtu) = info;
        let attach = || -> Result<Ends<'a>, RingError> {
            Ok(Ends {
                epoch,
                rx_free: Producer::attach(self.rings.rx_free)?,
                rx_used: Consumer::attach(self.rings.rx_used)?,
                tx_submit: Producer::attach(self.rings.tx_submit)?,
                tx_done: Consumer::attach(self.rings.tx_done)?,
            })
        };
        let ends = match attach() {
            Ok(ends) => ends,
            Err(e) if e.is_peer_fault() => {
                self.stats.faults += 1;
                self.state = LinkState::Faulty { epoch, error: NetifError::Ring(e) };
                self.incarnation = Some(info);
                return false;
            }
            Err(_) => return false, // not ready: the driver is still initialising
        };
        let epochs = [ends.rx_free.epoch(), ends.rx_used.epoch(), ends.tx_submit.epoch(), ends.tx_done.epoch()];
        if epochs.iter().any(|&e| e != epoch) || self.rings.info.epoch() != epoch {
            return false; // half re-initialised; try again after the driver's signal
        }
        // Everything lent to an earlier epoch comes home; the old rings are gone.
        self.reclaim_all();
        if self.ever_attached {
            self.stats.restarts += 1;
        }
        self.ever_attached = true;
        self.ends = Some(ends);
        self.state = LinkState::Up { epoch, mac, mtu };
        self.incarnation = Some(info);
        self.refill_rx();
        true
    }

    /// Whether the info block still says what this side attached to (always true when not
    /// attached). The driver writes the block only while (re)initialising, and a driver that
    /// restarts with the epoch this side is attached to — it can only choose from what the
    /// region holds, which may have been overwritten — leaves every ring looking unchanged: a
    /// different MAC or MTU, or a block that is being rewritten, is then the only sign.
    fn info_is_current(&self) -> bool {
        self.ends.is_none() || self.rings.info.read() == self.incarnation
    }

    /// Leave the attached epoch as after a restart: every loan comes home.
    fn detach(&mut self) {
        self.ends = None;
        self.state = LinkState::Down;
        self.reclaim_all();
    }

    fn reclaim_all(&mut self) {
        self.pool.reclaim_all_lent();
        self.loans = [Loan::None; NUM_BUFFERS];
        self.rx_lent = 0;
    }

    /// A ring operation failed. A restart (epoch changed / not ready) detaches and takes every
    /// loan back: `Ok(())` (the next [`service`](Self::service) or
    /// [`prepare_wait`](Self::prepare_wait) attaches to the new epoch; not attaching here keeps
    /// a driver that flips epochs from driving this side into recursion). A protocol violation
    /// marks the driver faulty: `Err(Faulty)`. Anything else is passed on.
    fn ring_failure(&mut self, e: RingError) -> Result<(), NetifError> {
        match e {
            RingError::EpochChanged { .. } | RingError::NotReady => {
                self.detach();
                Ok(())
            }
            e if e.is_peer_fault() => Err(self.fault(NetifError::Ring(e))),
            e => Err(NetifError::Ring(e)),
        }
    }

    /// Declare the attached driver faulty. Its loans stay lent (it may still be writing them)
    /// until a new epoch appears.
    fn fault(&mut self, error: NetifError) -> NetifError {
        let epoch = self.ends.as_ref().map_or(0, |e| e.epoch);
        if self.ends.is_none() {
            self.incarnation = None;
        }
        self.ends = None;
        self.state = LinkState::Faulty { epoch, error };
        self.stats.faults += 1;
        NetifError::Faulty
    }

    /// Validate a returned descriptor against the loans and the pool: `Ok` with the pool's own
    /// record (offset) and the driver's length and flags, or the driver is faulty.
    fn take_back(&mut self, desc: Desc, ring: Loan) -> Result<Desc, NetifError> {
        let loan = self.loans.get(desc.id as usize).copied().unwrap_or(Loan::None);
        if loan != Loan::None && loan != ring {
            return Err(self.fault(NetifError::WrongRing { id: desc.id }));
        }
        match self.pool.reclaim(desc) {
            Ok(back) => {
                self.set_loan(back.id, Loan::None);
                Ok(back)
            }
            Err(reason) => Err(self.fault(NetifError::BadDescriptor { desc, reason })),
        }
    }

    fn drain_tx_done(&mut self) {
        loop {
            let Some(ends) = self.ends.as_mut() else { return };
            let desc = match ends.tx_done.pop() {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    let _ = self.ring_failure(e);
                    return;
                }
            };
            match self.take_back(desc, Loan::Tx) {
                Ok(back) => {
                    let _ = self.pool.free(back.id);
                    self.stats.tx_done += 1;
                }
                Err(_) => return,
            }
        }
    }

    fn refill_rx(&mut self) {
        while self.rx_lent < self.rx_target {
            let Some(d) = self.pool.alloc() else { return };
            if !self.lend_rx(d.id) {
                let _ = self.pool.free(d.id);
                return;
            }
        }
    }

    /// Lend held buffer `id` on `rx_free`, full length. False if it could not be.
    fn lend_rx(&mut self, id: u32) -> bool {
        let Some(ends) = self.ends.as_mut() else { return false };
        match self.pool.lend(id, BUF_SIZE, 0, &mut ends.rx_free) {
            Ok(()) => {
                self.set_loan(id, Loan::Rx);
                self.rx_lent += 1;
                true
            }
            Err(RingError::Full) | Err(RingError::NotHeld { .. }) | Err(RingError::TooLong { .. }) => false,
            Err(e) => {
                let _ = self.ring_failure(e);
                false
            }
        }
    }

    fn relend_or_free(&mut self, id: u32) {
        if self.ends.is_some() && self.rx_lent < self.rx_target && self.lend_rx(id) {
            return;
        }
        let _ = self.pool.free(id);
    }
}
