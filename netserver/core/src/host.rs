//! Host conveniences (feature `std`): what the tests and benchmarks run the server with.
//!
//! * [`StdClock`], [`HostSignal`]: the platform's clock and sticky signal.
//! * [`Link`]: an in-memory Ethernet link joining two servers (or a server and a test), which
//!   steers frames to the receiving side's workers with the server's own steering function and
//!   can lose, duplicate and reorder frames (seeded, so runs are repeatable in what they inject).
//! * [`Stack`]: a server with its workers running on threads, attached to one side of a link.
//! * [`client`]: a real libsock client of a server, through libsock's host transport: each call
//!   runs [`Server::handle`] on the calling thread, with the same encoding and data-area code as
//!   on seL4.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Condvar, Mutex as StdMutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use net_api::Errno;

use crate::lock::{Leaf, Mutex};
use crate::platform::{Clock, FrameRx, FrameTx};
use crate::server::{Server, ServerConfig};
use crate::steer::{Steering, Target};
use crate::wake::{Signal, Wait};

/// The raw mutex the host uses under every leveled lock.
pub type HostRaw = parking_lot::RawMutex;
/// A server with host locks.
pub type HostServer = Server<HostRaw>;

/// `std::time::Instant`-based clock.
#[derive(Debug)]
pub struct StdClock(Instant);

impl Default for StdClock {
    fn default() -> Self {
        StdClock(Instant::now())
    }
}

impl Clock for StdClock {
    fn now_micros(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A sticky binary semaphore: a flag under a mutex and a condition variable.
#[derive(Debug, Default)]
pub struct HostSignal {
    pending: StdMutex<bool>,
    cv: Condvar,
}

impl HostSignal {
    /// Not signalled.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Signal for HostSignal {
    fn signal(&self) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !*p {
            *p = true;
            self.cv.notify_all();
        }
    }
}

impl Wait for HostSignal {
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if *p {
                *p = false;
                return true;
            }
            match deadline {
                None => p = self.cv.wait(p).unwrap_or_else(PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    p = self.cv.wait_timeout(p, d - now).unwrap_or_else(PoisonError::into_inner).0;
                }
            }
        }
    }
}

/// What the link does to frames, in parts per million.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairments {
    /// Frames lost.
    pub loss_ppm: u32,
    /// Frames delivered twice.
    pub duplicate_ppm: u32,
    /// Frames delivered before the frame queued ahead of them.
    pub reorder_ppm: u32,
    /// RNG seed.
    pub seed: u64,
}

/// A frame observer: `(from_side, frame)`.
pub type Tap = dyn Fn(usize, &[u8]) + Send + Sync;

struct Queue {
    frames: Mutex<Leaf, VecDeque<Vec<u8>>, HostRaw>,
    signal: Arc<dyn Signal>,
}

struct Side {
    steering: Steering,
    queues: Vec<Arc<Queue>>,
}

/// Counters of what the link did.
#[derive(Debug, Default)]
pub struct LinkCounters {
    /// Frames offered.
    pub sent: AtomicU64,
    /// Frames lost on purpose.
    pub lost: AtomicU64,
    /// Frames duplicated.
    pub duplicated: AtomicU64,
    /// Frames reordered.
    pub reordered: AtomicU64,
    /// Frames dropped because a receive queue was full.
    pub overflow: AtomicU64,
}

/// An in-memory Ethernet link with two sides (0 and 1).
pub struct Link {
    sides: [Mutex<Leaf, Option<Side>, HostRaw>; 2],
    impair: Mutex<Leaf, (Impairments, u64), HostRaw>,
    tap: Mutex<Leaf, Option<Arc<Tap>>, HostRaw>,
    queue_limit: usize,
    /// What happened to frames.
    pub counters: LinkCounters,
}

impl Link {
    /// A link with the given impairments; each worker queue holds up to `queue_limit` frames.
    pub fn new(impair: Impairments, queue_limit: usize) -> Arc<Link> {
        Arc::new(Link {
            sides: [Mutex::new(None), Mutex::new(None)],
            impair: Mutex::new((impair, impair.seed | 1)),
            tap: Mutex::new(None),
            queue_limit,
            counters: LinkCounters::default(),
        })
    }

    /// Changes the impairments (e.g. clean for the handshake, lossy for the transfer).
    pub fn set_impairments(&self, i: Impairments) {
        let mut g = self.impair.lock();
        g.0 = i;
    }

    /// Installs an observer called for every frame offered to the link.
    pub fn set_tap(&self, tap: Option<Arc<Tap>>) {
        *self.tap.lock() = tap;
    }

    /// Attaches one side: one receive queue per worker, signalling that worker's signal.
    /// Returns each worker's receive and transmit ends.
    pub fn attach(self: &Arc<Self>, side: usize, steering: Steering, signals: &[Arc<dyn Signal>]) -> Vec<(LinkRx, LinkTx)> {
        let queues: Vec<Arc<Queue>> = signals
            .iter()
            .map(|s| Arc::new(Queue { frames: Mutex::new(VecDeque::new()), signal: s.clone() }))
            .collect();
        if let Some(slot) = self.sides.get(side) {
            *slot.lock() = Some(Side { steering, queues: queues.clone() });
        }
        queues
            .into_iter()
            .map(|q| (LinkRx { queue: q }, LinkTx { link: self.clone(), side }))
            .collect()
    }

    fn rand(&self) -> (Impairments, u32, u32, u32) {
        let mut g = self.impair.lock();
        let mut next = || {
            let mut x = g.1;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            g.1 = x;
            (x % 1_000_000) as u32
        };
        let (a, b, c) = (next(), next(), next());
        (g.0, a, b, c)
    }

    /// Offers a frame from `from` to the other side (what a worker's transmit does).
    pub fn transmit(&self, from: usize, frame: Vec<u8>) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
        let tap = self.tap.lock().clone();
        if let Some(t) = tap {
            t(from, &frame);
        }
        let (imp, r_loss, r_dup, r_reorder) = self.rand();
        if r_loss < imp.loss_ppm {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if r_dup < imp.duplicate_ppm {
            self.counters.duplicated.fetch_add(1, Ordering::Relaxed);
            2
        } else {
            1
        };
        let reorder = r_reorder < imp.reorder_ppm;
        self.deliver(1 - from.min(1), frame, copies, reorder);
    }

    /// Puts a frame straight into side `to`'s receive queues (tests inject frames this way).
    pub fn inject(&self, to: usize, frame: Vec<u8>) {
        self.deliver(to, frame, 1, false);
    }

    fn deliver(&self, to: usize, frame: Vec<u8>, copies: usize, reorder: bool) {
        let (target, queues) = {
            let Some(side) = self.sides.get(to) else { return };
            let g = side.lock();
            let Some(side) = g.as_ref() else { return };
            (side.steering.steer(&frame), side.queues.clone())
        };
        let targets: Vec<&Arc<Queue>> = match target {
            Target::All => queues.iter().collect(),
            Target::Worker(i) => queues.get(i).into_iter().collect(),
        };
        for q in targets {
            {
                let mut f = q.frames.lock();
                for _ in 0..copies {
                    if f.len() >= self.queue_limit {
                        self.counters.overflow.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if reorder && !f.is_empty() {
                        let at = f.len() - 1;
                        f.insert(at, frame.clone());
                        self.counters.reordered.fetch_add(1, Ordering::Relaxed);
                    } else {
                        f.push_back(frame.clone());
                    }
                }
            }
            q.signal.signal();
        }
    }

    /// Frames waiting in side `side`'s queues.
    pub fn queued(&self, side: usize) -> usize {
        let queues = match self.sides.get(side).map(|s| s.lock().as_ref().map(|s| s.queues.clone())) {
            Some(Some(q)) => q,
            _ => return 0,
        };
        queues.iter().map(|q| q.frames.lock().len()).sum()
    }
}

/// A worker's receive end of a [`Link`].
pub struct LinkRx {
    queue: Arc<Queue>,
}

impl FrameRx for LinkRx {
    fn peek<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let q = self.queue.frames.lock();
        q.front().map(|fr| f(fr))
    }

    fn recv<T>(&mut self, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let frame = self.queue.frames.lock().pop_front()?;
        Some(f(&frame))
    }

    fn pending(&self) -> bool {
        !self.queue.frames.lock().is_empty()
    }
}

/// A worker's transmit end of a [`Link`].
pub struct LinkTx {
    link: Arc<Link>,
    side: usize,
}

impl FrameTx for LinkTx {
    fn max_frame(&self) -> usize {
        1514
    }

    fn can_send(&self) -> bool {
        true
    }

    fn send<T>(&mut self, len: usize, f: impl FnOnce(&mut [u8]) -> T) -> Option<T> {
        let mut frame = alloc::vec![0u8; len];
        let r = f(&mut frame);
        self.link.transmit(self.side, frame);
        Some(r)
    }
}

/// A server whose workers run on their own threads, attached to one side of a link.
pub struct Stack {
    /// The server.
    pub server: HostServer,
    stop: Arc<AtomicBool>,
    signals: Vec<Arc<HostSignal>>,
    threads: Vec<JoinHandle<()>>,
}

impl Stack {
    /// Starts a server with `cfg` on `side` of `link`.
    pub fn start(cfg: ServerConfig, link: &Arc<Link>, side: usize) -> Result<Stack, Errno> {
        let signals: Vec<Arc<HostSignal>> = (0..cfg.workers).map(|_| Arc::new(HostSignal::new())).collect();
        let dyn_signals: Vec<Arc<dyn Signal>> = signals.iter().map(|s| s.clone() as Arc<dyn Signal>).collect();
        let server = HostServer::new(cfg, Arc::new(StdClock::default()), dyn_signals.clone())?;
        let ends = link.attach(side, server.steering(), &dyn_signals);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, (rx, tx)) in ends.into_iter().enumerate() {
            let mut worker = server.worker(i, rx, tx)?;
            let (stop, signal) = (stop.clone(), signals.get(i).cloned().ok_or(Errno::EINVAL)?);
            let t = std::thread::Builder::new()
                .name(alloc::format!("net-worker-{side}-{i}"))
                .spawn(move || worker.run(&*signal, &stop))
                .map_err(|_| Errno::ENOMEM)?;
            threads.push(t);
        }
        Ok(Stack { server, stop, signals, threads })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for s in &self.signals {
            s.signal();
        }
        // A worker's panic (a lockdep inversion, a broken invariant) fails the test that owns
        // this stack, instead of surfacing only as a timeout.
        let panicked = self.threads.drain(..).filter_map(|t| t.join().err()).count();
        if panicked > 0 && !std::thread::panicking() {
            panic!("{panicked} net worker thread(s) panicked (message above)");
        }
    }
}

/// A boxed tap from a closure.
pub fn tap(f: impl Fn(usize, &[u8]) + Send + Sync + 'static) -> Arc<Tap> {
    let b: Box<Tap> = Box::new(f);
    Arc::from(b)
}

/// Adapts libsock's host notification to the server's [`Signal`].
struct LibsockSignal(Arc<libsock::host::Signal>);

impl Signal for LibsockSignal {
    fn signal(&self) {
        self.0.signal();
    }
}

/// A libsock client of `server`, registered as client `id` (re-registering an id replaces that
/// client's session). Its data area is a heap region shared with the server.
pub fn client(server: &HostServer, id: crate::ClientId) -> Result<libsock::Client<libsock::host::HostTransport>, Errno> {
    let layout = server.config().layout;
    let region = Arc::new(net_api::AtomicRegion::for_layout(&layout));
    let sig = Arc::new(libsock::host::Signal::new());
    server.register_client(id, Arc::new(LibsockSignal(sig.clone())), Some(region.clone()))?;
    let s = server.clone();
    let t = libsock::host::HostTransport::new(region, sig, move |req: &[u8], resp: &mut [u8]| Ok(s.handle(id, req, resp)));
    libsock::Client::new(t)
}
