//! The NIC side of the net server: the driver's four rings (through `netif::ServerSide`), one
//! receive queue per worker, and each worker's [`FrameRx`] / [`FrameTx`].
//!
//! # Who touches what
//!
//! * `ServerSide` (buffer pool, loans, the four ring ends) is one object with `&mut self`
//!   methods, so it lives under one lock, [`Nic::state`] (a `sel4_rt::sync::Mutex`: spins
//!   briefly, then blocks — the rx thread runs above the workers). It is a leaf lock: nothing
//!   else is acquired while it is held except a worker queue's lock (order: NIC state → queue).
//! * **`rx_used` has one consumer, the rx thread** ([`Nic::rx_loop`], the process's main thread):
//!   it pops each validated frame, looks at it in place to pick its worker with the core's
//!   [`Steering::steer`] (4-tuple hash for TCP, port for UDP, every worker for ARP/NDP, worker
//!   0 for the rest) and queues the **buffer token** (`netif::RxFrame`: an id, not the bytes) on
//!   that worker's queue. ARP/NDP frames go to every worker as one `Arc`-shared token; the last
//!   worker done with it recycles the buffer. A full queue drops the frame (counted as a ring
//!   drop) and recycles the buffer at once.
//! * **A worker reads its frames in place**: [`NicRx::recv`] takes the NIC lock and hands smoltcp
//!   `ServerSide::frame` — a slice of the shared buffers region, the bytes the device wrote —
//!   then recycles the buffer onto `rx_free`. The lock is held while smoltcp processes the frame:
//!   the slice borrows `ServerSide`.
//! * **`tx_submit` has one producer at a time**: every transmit takes the NIC lock, allocates an
//!   idle buffer from the pool, lets smoltcp build the frame straight into it
//!   (`ServerSide::tx_buf_mut`) and pushes its descriptor on `tx_submit` — all under the lock,
//!   so the single-producer ring never sees two producers. Publishing (`flush`) happens every
//!   [`FLUSH_EVERY`] frames and at the end of every worker iteration; the driver is signalled
//!   only when it asked (its wake-me flag).
//! * **A reply smoltcp emits while it is still reading a received frame** (ARP and ICMP echo
//!   replies, RSTs, duplicate ACKs — smoltcp dispatches them from inside the receive token)
//!   cannot be built in place: the received frame borrows `ServerSide`, and a transmit buffer
//!   needs it mutably. Such a frame is built in a private buffer and copied into a transmit
//!   buffer once the received frame is released — the one copy on this path, only for replies
//!   generated during ingress (data and ACKs go out in the egress phase, in place).
//!
//! # A hostile driver
//!
//! `ServerSide` validates everything the driver returns (ids lent on the matching ring, lengths,
//! offsets from the server's own records) and declares the driver faulty on a violation; it is
//! then ignored until it restarts with a new epoch. This module reports each link transition on
//! the console (up, restarted, faulty) and the server keeps serving its clients (loopback and
//! socket calls work without a driver; network sockets see their peers go silent).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use netif::{LinkState, Notify, RxFrame, ServerSide, TxBuf, Wait, MAX_FRAME};
use netserver_core::platform::{FrameRx, FrameTx};
use netserver_core::steer::{Steering, Target};
use netserver_core::Server;
use sel4::{Cap, Notification};
use sel4_rt::println;
use sel4_rt::sync::{Mutex, RawMutex};

use crate::supervision::{Reporter, RestartLog};
use crate::time::Sleeper;

/// A transmit ring with frames waiting and no progress for this long gets the driver signalled
/// again (a lost wake-up costs no restart) ...
const TX_KICK_US: u64 = 100_000;
/// ... and this long after that kick, with still no progress, is a stalled driver.
const TX_STALL_US: u64 = 300_000;
/// The rx thread wakes at least this often (to run the stall check) while frames are in flight.
const WATCH_PERIOD: core::time::Duration = core::time::Duration::from_millis(20);
/// Each wait must also have seen this many of the rx thread's own checks: when the whole guest
/// stands still (TCG on a loaded host), time passes but checks do not, and nobody is stalled.
const MIN_CHECKS: u32 = 5;

/// Frames a worker's queue holds before the rx thread drops more.
pub const QUEUE_LIMIT: usize = 256;
/// Frames the rx thread takes from `rx_used` per lock hold.
const RX_BATCH: usize = 64;
/// Frames pushed on `tx_submit` before they are published without waiting for the end of the
/// worker's iteration.
pub const FLUSH_EVERY: usize = 32;

/// A received frame's buffer token as queued for a worker.
enum Queued {
    /// Steered to one worker.
    Own(RxFrame),
    /// ARP / neighbour discovery: every worker reads it; the last one recycles it.
    Shared(Arc<RxFrame>),
}

impl Queued {
    fn frame(&self) -> &RxFrame {
        match self {
            Queued::Own(f) => f,
            Queued::Shared(f) => f,
        }
    }
}

/// What the NIC lock protects.
pub struct NicState {
    side: ServerSide<'static>,
    /// Frames on `tx_submit` not yet published.
    unflushed: usize,
    /// The last link state reported on the console.
    reported: Option<LinkState>,
    /// Transmit progress as of `tx_progress_at` (µs): frames the driver had returned then.
    tx_done_seen: u64,
    tx_progress_at: u64,
    /// The watchdog's checks since then, and whether the driver was signalled again.
    tx_checks: u32,
    tx_kicked: bool,
    /// Tells the supervisor when the driver is found faulty.
    reporter: Option<Reporter>,
    restart_log: Option<RestartLog>,
    /// A restarted driver came up (TSC, epoch, restarts) and no frame has arrived through it
    /// yet.
    recovering: Option<(u64, u32, u64)>,
}

struct WorkerQueue {
    frames: Mutex<VecDeque<Queued>>,
    len: AtomicUsize,
    sleeper: &'static Sleeper,
}

/// The NIC, shared by the rx thread and the workers.
pub struct Nic {
    state: Mutex<NicState>,
    driver: Cap<Notification>,
    queues: Vec<WorkerQueue>,
    steering: Steering,
    server: Server<RawMutex>,
    max_frame: usize,
}

/// Per-worker state shared by its [`NicRx`] and [`NicTx`] (both used only by that worker's
/// thread; the atomics and the spin lock are never contended).
#[derive(Default)]
struct WorkerCtx {
    /// Inside `NicRx::recv`: the NIC lock is held and a received frame is borrowed.
    in_rx: AtomicBool,
    /// Replies built while `in_rx`, to copy into transmit buffers afterwards.
    deferred: spin::Mutex<Vec<Vec<u8>>>,
    /// Something was lent to the driver since the last flush.
    dirty: AtomicBool,
}

impl NicState {
    /// The server side of the rings, not yet attached.
    pub fn new(side: ServerSide<'static>) -> Self {
        NicState {
            side,
            unflushed: 0,
            reported: None,
            tx_done_seen: 0,
            tx_progress_at: 0,
            tx_checks: 0,
            tx_kicked: false,
            reporter: Reporter::from_grants(),
            restart_log: RestartLog::from_grants(),
            recovering: None,
        }
    }

    /// The server side itself (start-up: wait for the link).
    pub fn side(&mut self) -> &mut ServerSide<'static> {
        &mut self.side
    }

    /// Publishes what was lent and returns whether the driver asked to be signalled.
    fn flush(&mut self) -> bool {
        self.unflushed = 0;
        match self.side.flush() {
            Ok(Notify::Signal) => true,
            Ok(Notify::Quiet) => false,
            Err(_) => false,
        }
    }

    /// A transmit buffer, taking back sent ones first if none is idle.
    fn alloc(&mut self) -> Option<TxBuf> {
        if let Some(b) = self.side.alloc_tx() {
            return Some(b);
        }
        self.side.service();
        self.side.alloc_tx()
    }

    /// Reports a link transition once, and keeps the restart count in the server's counters.
    fn note_link(&mut self, server: &Server<RawMutex>) {
        let now = self.side.link();
        let before = self.reported;
        let changed = match (before, now) {
            (Some(LinkState::Up { epoch: a, .. }), LinkState::Up { epoch: b, .. }) => a != b,
            (Some(LinkState::Faulty { epoch: a, .. }), LinkState::Faulty { epoch: b, .. }) => a != b,
            (Some(LinkState::Down), LinkState::Down) => false,
            _ => true,
        };
        if !changed {
            return;
        }
        self.reported = Some(now);
        let restarts = self.side.stats().restarts;
        server.device_counters().driver_restarts.store(restarts, Ordering::Relaxed);
        match now {
            LinkState::Up { epoch, mac, mtu } => {
                let m = mac;
                if matches!(before, Some(LinkState::Up { .. } | LinkState::Faulty { .. } | LinkState::Down)) {
                    // Said once traffic flows (`recovered`): printing takes milliseconds.
                    self.recovering = Some((sel4_rt::rdtsc(), epoch, restarts));
                } else {
                    println!(
                        "link up: MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, MTU {mtu}, epoch {epoch}, {} receive buffers lent",
                        m[0], m[1], m[2], m[3], m[4], m[5], self.side.lent()
                    );
                }
            }
            LinkState::Faulty { epoch, error } => {
                let asked = match &self.reporter {
                    Some(r) => {
                        r.report();
                        "asked the supervisor to restart it"
                    }
                    None => "ignoring it until it restarts",
                };
                println!("driver faulty (epoch {epoch}): {error}; {asked}; still serving clients");
            }
            LinkState::Down => {
                if before.is_some() {
                    println!("link down (driver re-initialising its rings)");
                }
            }
        }
    }
}

impl NicState {
    /// The transmit-ring watchdog, run by the rx thread each time it wakes: frames waiting at
    /// the driver and none returned for [`TX_KICK_US`] gets the driver signalled again; no
    /// progress for [`TX_STALL_US`] more means it stopped serving the ring (it is declared
    /// faulty, which reports it).
    fn watch_tx(&mut self, now_us: u64, server: &Server<RawMutex>) -> TxWatch {
        if !matches!(self.side.link(), LinkState::Up { .. }) {
            return TxWatch::Idle;
        }
        let done = self.side.stats().tx_done;
        let in_flight = self.side.tx_in_flight() > 0;
        if !in_flight || done != self.tx_done_seen || self.tx_progress_at == 0 {
            self.tx_done_seen = done;
            self.tx_progress_at = now_us;
            self.tx_checks = 0;
            self.tx_kicked = false;
            return if in_flight { TxWatch::Watching } else { TxWatch::Idle };
        }
        self.tx_checks += 1;
        let waited = now_us.saturating_sub(self.tx_progress_at);
        if self.tx_checks < MIN_CHECKS {
            return TxWatch::Watching;
        }
        if !self.tx_kicked && waited > TX_KICK_US {
            self.tx_kicked = true;
            self.tx_progress_at = now_us;
            self.tx_checks = 0;
            server.device_counters().tx_kicks.fetch_add(1, Ordering::Relaxed);
            return TxWatch::Kick;
        }
        if self.tx_kicked && waited > TX_STALL_US {
            self.side.declare_faulty(netif::NetifError::TxStalled { ms: (waited + TX_KICK_US) / 1000 });
            self.tx_progress_at = 0;
            self.note_link(server);
            return TxWatch::Idle;
        }
        TxWatch::Watching
    }

    /// The first frame arrived through a restarted driver: say how long recovery took, from
    /// the fault (the supervisor's record) to traffic flowing again. One machine-readable line;
    /// the same numbers go to the server's recent restarts (`Request::Stats`).
    fn recovered(&mut self, server: &Server<RawMutex>) -> Option<String> {
        let (up, epoch, restarts) = self.recovering.take()?;
        let now = sel4_rt::rdtsc();
        let mhz = sel4_rt::tsc_mhz().max(1);
        let name = crate::supervision::driver_name();
        let mut text = format!("driver restarted: link up again (epoch {epoch}, restarts {restarts})\n");
        let Some(r) = self.restart_log.as_ref().and_then(|log| log.recent(name, 1).pop()) else {
            text.push_str(&format!("RECOVERY component={name} restart=? cause=unknown first frame {} us after link up", now.wrapping_sub(up) / mhz));
            return Some(text);
        };
        let us = |t: u64| t.saturating_sub(r.fault_tsc) / mhz;
        server.device_counters().restarts.record(&net_api::RestartStat {
            restart: r.restart,
            cause: r.cause,
            fault_to_running_us: us(r.running_tsc),
            fault_to_traffic_us: us(now),
        });
        let cause = r.cause_str().replace(' ', "-");
        text.push_str(&format!(
            "RECOVERY component={name} restart={} cause={cause} fault_to_running_us={} fault_to_traffic_us={} fault_to_link_us={}",
            r.restart,
            us(r.running_tsc),
            us(now),
            us(up)
        ));
        Some(text)
    }
}

/// What the transmit watchdog wants of the rx thread.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TxWatch {
    /// Nothing in flight: sleep until woken.
    Idle,
    /// Frames in flight: wake again within [`WATCH_PERIOD`].
    Watching,
    /// The driver seems to have missed a wake-up: signal it, and keep watching.
    Kick,
}

impl Nic {
    /// The NIC over `state`, with one queue per worker sleeper. `driver` is the driver's
    /// notification (badge `netif::DRIVER_BADGE_SERVER`).
    pub fn new(
        state: NicState,
        driver: Cap<Notification>,
        workers: &[&'static Sleeper],
        server: Server<RawMutex>,
        mtu: u16,
    ) -> Self {
        let max_frame = (usize::from(mtu) + 14).min(MAX_FRAME as usize);
        Nic {
            state: Mutex::new(state),
            driver,
            queues: workers
                .iter()
                .map(|s| WorkerQueue { frames: Mutex::new(VecDeque::new()), len: AtomicUsize::new(0), sleeper: s })
                .collect(),
            steering: server.steering(),
            server,
            max_frame,
        }
    }

    /// Worker `index`'s frame queues, for `Server::worker`, and what the worker's loop calls
    /// after each iteration.
    pub fn worker_io(&'static self, index: usize) -> (NicRx, NicTx, Flusher) {
        let ctx = Arc::new(WorkerCtx::default());
        (
            NicRx { nic: self, index, head: None, ctx: ctx.clone() },
            NicTx { nic: self, ctx: ctx.clone() },
            Flusher { nic: self, ctx },
        )
    }

    fn server_micros(&self) -> u64 {
        sel4_rt::rdtsc() / sel4_rt::tsc_mhz().max(1)
    }

    fn drop_frames(&self, n: u64) {
        self.server.device_counters().ring_drops.fetch_add(n, Ordering::Relaxed);
    }

    /// Publishes what worker (or rx thread) lent and signals the driver if it asked.
    fn flush(&self) {
        let signal = self.state.lock().flush();
        if signal {
            self.driver.signal();
        }
    }


    /// The rx thread: the only consumer of `rx_used`. Services the rings (attach after a driver
    /// restart, take back sent buffers, refill `rx_free`), steers each received frame's buffer
    /// token to its worker, and blocks on `sleeper` (the driver's signals) when there is nothing
    /// to do.
    pub fn rx_loop(&'static self, sleeper: &'static Sleeper) -> ! {
        let workers = self.queues.len();
        let mut woken = alloc::vec![false; workers];
        loop {
            let mut taken = 0;
            let mut drops = 0;
            let mut recovery = None;
            let signal = {
                let mut st = self.state.lock();
                st.side.service();
                st.note_link(&self.server);
                while taken < RX_BATCH {
                    let frame = match st.side.recv() {
                        Ok(Some(f)) => f,
                        Ok(None) => break,
                        Err(_) => {
                            st.note_link(&self.server);
                            break;
                        }
                    };
                    taken += 1;
                    let target = self.steering.steer(st.side.frame(&frame));
                    match target {
                        Target::Worker(i) => {
                            if let Some(back) = self.enqueue(i, Queued::Own(frame), &mut woken) {
                                if let Queued::Own(f) = back {
                                    st.side.recycle(f);
                                }
                                drops += 1;
                            }
                        }
                        Target::All => {
                            let shared = Arc::new(frame);
                            for i in 0..workers {
                                if let Some(back) = self.enqueue(i, Queued::Shared(shared.clone()), &mut woken) {
                                    drop(back);
                                    drops += 1;
                                }
                            }
                            // If every queue refused it, this is the last reference.
                            if let Some(f) = Arc::into_inner(shared) {
                                st.side.recycle(f);
                            }
                        }
                    }
                }
                if taken > 0 {
                    recovery = st.recovered(&self.server);
                }
                st.flush()
            };
            if signal {
                self.driver.signal();
            }
            if drops > 0 {
                self.drop_frames(drops);
            }
            for (i, w) in woken.iter_mut().enumerate() {
                if core::mem::take(w) {
                    if let Some(q) = self.queues.get(i) {
                        netserver_core::wake::Signal::signal(q.sleeper);
                    }
                }
            }
            // Outside the lock and after the workers were woken: printing is slow.
            for line in recovery.iter().flat_map(|t| t.lines()) {
                println!("{line}");
            }
            if taken == RX_BATCH {
                continue;
            }
            let (wait, watching) = {
                let mut st = self.state.lock();
                let w = st.side.prepare_wait();
                st.note_link(&self.server);
                let now = self.server_micros();
                (w, st.watch_tx(now, &self.server))
            };
            if watching == TxWatch::Kick {
                self.driver.signal();
            }
            match wait {
                Ok(Wait::Retry) => continue,
                Ok(Wait::Block) | Err(_) => {
                    sleeper.sleep((watching != TxWatch::Idle).then_some(WATCH_PERIOD));
                }
            }
        }
    }

    /// Queues `q` for worker `i`; gives it back when the queue is full (or there is no such
    /// worker).
    fn enqueue(&self, i: usize, q: Queued, woken: &mut [bool]) -> Option<Queued> {
        let Some(wq) = self.queues.get(i) else { return Some(q) };
        let mut frames = wq.frames.lock();
        if frames.len() >= QUEUE_LIMIT {
            return Some(q);
        }
        frames.push_back(q);
        wq.len.store(frames.len(), Ordering::Release);
        if let Some(w) = woken.get_mut(i) {
            *w = true;
        }
        None
    }
}

/// Publishes what one worker lent.
pub struct Flusher {
    nic: &'static Nic,
    ctx: Arc<WorkerCtx>,
}

impl Flusher {
    /// After a worker iteration: publish what it lent (transmit frames, recycled receive
    /// buffers) and signal the driver if it asked.
    pub fn end_of_iteration(&self) {
        if self.ctx.dirty.swap(false, Ordering::Relaxed) {
            self.nic.flush();
        }
    }
}

/// A worker's receive side: its queue of buffer tokens, read in place.
pub struct NicRx {
    nic: &'static Nic,
    index: usize,
    /// The frame at the head of the queue, taken out so it can be peeked without holding the
    /// queue lock.
    head: Option<Queued>,
    ctx: Arc<WorkerCtx>,
}

impl NicRx {
    fn fill_head(&mut self) -> bool {
        if self.head.is_some() {
            return true;
        }
        let Some(q) = self.nic.queues.get(self.index) else { return false };
        if q.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut frames = q.frames.lock();
        self.head = frames.pop_front();
        q.len.store(frames.len(), Ordering::Release);
        self.head.is_some()
    }
}

impl FrameRx for NicRx {
    fn peek<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if !self.fill_head() {
            return None;
        }
        let head = self.head.as_ref()?;
        let st = self.nic.state.lock();
        Some(f(st.side.frame(head.frame())))
    }

    fn recv<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if !self.fill_head() {
            return None;
        }
        let q = self.head.take()?;
        let mut st = self.nic.state.lock();
        self.ctx.in_rx.store(true, Ordering::Relaxed);
        let out = f(st.side.frame(q.frame()));
        self.ctx.in_rx.store(false, Ordering::Relaxed);
        let last = match q {
            Queued::Own(frame) => Some(frame),
            Queued::Shared(shared) => Arc::into_inner(shared),
        };
        if let Some(frame) = last {
            st.side.recycle(frame);
        }
        self.ctx.dirty.store(true, Ordering::Relaxed);
        // Replies smoltcp built while the frame was borrowed: copy each into a transmit buffer.
        let deferred = core::mem::take(&mut *self.ctx.deferred.lock());
        let mut drops = 0;
        for bytes in deferred {
            if !transmit_copy(&mut st, &bytes) {
                drops += 1;
            }
        }
        let signal = st.unflushed >= FLUSH_EVERY && st.flush();
        drop(st);
        if signal {
            self.nic.driver.signal();
        }
        if drops > 0 {
            self.nic.drop_frames(drops);
        }
        Some(out)
    }

    fn pending(&self) -> bool {
        self.head.is_some() || self.nic.queues.get(self.index).is_some_and(|q| q.len.load(Ordering::Acquire) > 0)
    }
}

/// Copies a frame into a fresh transmit buffer and lends it on `tx_submit`.
fn transmit_copy(st: &mut NicState, bytes: &[u8]) -> bool {
    let Some(buf) = st.alloc() else { return false };
    match st.side.tx_buf_mut(&buf).get_mut(..bytes.len()) {
        Some(dst) => dst.copy_from_slice(bytes),
        None => {
            st.side.drop_tx(buf);
            return false;
        }
    }
    submit(st, buf, bytes.len())
}

fn submit(st: &mut NicState, buf: TxBuf, len: usize) -> bool {
    let ok = st.side.send(buf, len as u32).is_ok();
    if ok {
        st.unflushed += 1;
    }
    ok
}

/// A worker's transmit side: frames built in place in buffers from the pool.
pub struct NicTx {
    nic: &'static Nic,
    ctx: Arc<WorkerCtx>,
}

impl FrameTx for NicTx {
    fn max_frame(&self) -> usize {
        self.nic.max_frame
    }

    fn can_send(&self) -> bool {
        if self.ctx.in_rx.load(Ordering::Relaxed) {
            return true;
        }
        let st = self.nic.state.lock();
        matches!(st.side.link(), LinkState::Up { .. }) && st.side.idle() > 0
    }

    fn send<T>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> Option<T> {
        if len > self.nic.max_frame {
            return None;
        }
        if self.ctx.in_rx.load(Ordering::Relaxed) {
            // The NIC lock is held by this thread's `recv`: build it aside (see the module docs).
            let mut bytes = alloc::vec![0u8; len];
            let out = f(&mut bytes);
            self.ctx.deferred.lock().push(bytes);
            return Some(out);
        }
        let mut st = self.nic.state.lock();
        let Some(buf) = st.alloc() else {
            drop(st);
            self.nic.drop_frames(1);
            return None;
        };
        let out = match st.side.tx_buf_mut(&buf).get_mut(..len) {
            Some(dst) => f(dst),
            None => {
                st.side.drop_tx(buf);
                return None;
            }
        };
        let sent = submit(&mut st, buf, len);
        if !sent {
            st.note_link(&self.nic.server);
        }
        let signal = st.unflushed >= FLUSH_EVERY && st.flush();
        drop(st);
        self.ctx.dirty.store(true, Ordering::Relaxed);
        if signal {
            self.nic.driver.signal();
        }
        if !sent {
            self.nic.drop_frames(1);
        }
        Some(out)
    }
}
