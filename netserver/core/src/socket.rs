//! The server's socket object and its buffers.
//!
//! A [`Socket`] is what a client handle names. It is reference counted (`Arc`); the references
//! are, in the FreeBSD seed's terms:
//!
//! * the **handle reference**: one slot of the owning client's handle table;
//! * the **protocol reference** (`SS_PROTOREF`): the worker's flow record, while the smoltcp
//!   socket (the PCB) still needs to deliver data or state to it;
//! * the **queue reference**: a listener's accept queue, for a connection not yet accepted;
//! * the **peer reference** of a loopback pair (weak: a pair never keeps itself alive).
//!
//! The socket never points at the PCB; it names it ([`Pcb`]: worker index and flow id) and reaches
//! it only through that worker's mailbox. So a live handle always reaches a valid socket whose
//! state says where the connection is, or that it is gone and why (pending error, EOF); there is
//! no dangling PCB pointer to check. Close and abort only record the request and post it to the
//! worker: they cannot fail.

use alloc::collections::VecDeque;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;

use net_api::{Errno, SockType};
use smoltcp::wire::IpEndpoint;

use crate::accept::AcceptQueue;
use crate::lock::{Listen, Mutex, RawLock, Sock, SockBuf};
use crate::port::{Family, PortGuard};
use crate::stats::{Counter, Stats, Stripe};
use crate::wake::WaitSlot;

/// A byte ring for stream data. Storage is allocated on first use, so an idle socket costs only
/// the struct.
#[derive(Debug, Default)]
pub struct ByteRing {
    buf: Vec<u8>,
    head: usize,
    len: usize,
    cap: usize,
}

impl ByteRing {
    /// An empty ring that will hold up to `cap` bytes.
    pub fn new(cap: usize) -> Self {
        ByteRing { buf: Vec::new(), head: 0, len: 0, cap: cap.max(1) }
    }

    /// Bytes stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Free bytes.
    pub fn free(&self) -> usize {
        self.cap.saturating_sub(self.len)
    }

    /// Changes the capacity (takes effect for the storage once the ring is empty).
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap.max(1);
        if self.len == 0 {
            self.buf = Vec::new();
            self.head = 0;
        }
    }

    /// Makes room for at least `additional` more bytes, growing the capacity if needed and
    /// keeping what is stored.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len.saturating_add(additional);
        if need <= self.cap {
            return;
        }
        if self.len > 0 {
            let mut buf = alloc::vec![0u8; need];
            let n = self.pop_into(&mut buf);
            self.buf = buf;
            self.head = 0;
            self.len = n;
        }
        self.cap = need;
    }

    fn storage(&mut self) -> usize {
        if self.len == 0 && self.buf.len() != self.cap {
            self.buf = alloc::vec![0u8; self.cap];
            self.head = 0;
        }
        self.buf.len()
    }

    /// Lets `f` write into free space, up to `max` bytes; `f` returns how many it wrote into the
    /// slice it was given (fewer stops the fill). Returns the total.
    pub fn fill(&mut self, max: usize, mut f: impl FnMut(&mut [u8]) -> usize) -> usize {
        let size = self.storage();
        let mut done = 0;
        while done < max && self.len < size && self.len < self.cap {
            let tail = (self.head + self.len) % size;
            let contiguous = if tail >= self.head { size - tail } else { self.head - tail };
            let n = contiguous.min(max - done).min(self.cap - self.len);
            let Some(dst) = self.buf.get_mut(tail..tail + n) else { break };
            let wrote = f(dst).min(n);
            self.len += wrote;
            done += wrote;
            if wrote < n {
                break;
            }
        }
        done
    }

    /// Appends as much of `data` as fits.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let mut off = 0;
        self.fill(data.len(), |dst| {
            let n = dst.len().min(data.len() - off);
            dst[..n].copy_from_slice(&data[off..off + n]);
            off += n;
            n
        })
    }

    /// Lets `f` consume stored bytes, up to `max`; `f` returns how many it took from the slice it
    /// was given. Returns the total. With `peek`, nothing is removed.
    pub fn drain(&mut self, max: usize, peek: bool, mut f: impl FnMut(&[u8]) -> usize) -> usize {
        let size = self.buf.len();
        let (mut head, mut len, mut done) = (self.head, self.len, 0);
        while done < max && len > 0 && size > 0 {
            let n = (size - head).min(len).min(max - done);
            let Some(src) = self.buf.get(head..head + n) else { break };
            let took = f(src).min(n);
            head = (head + took) % size;
            len -= took;
            done += took;
            if took < n {
                break;
            }
        }
        if !peek {
            self.head = if len == 0 { 0 } else { head };
            self.len = len;
        }
        done
    }

    /// Removes up to `out.len()` bytes into `out`.
    pub fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let mut off = 0;
        self.drain(out.len(), false, |src| {
            out[off..off + src.len()].copy_from_slice(src);
            off += src.len();
            src.len()
        })
    }
}

/// One datagram with its peer.
#[derive(Debug)]
pub struct Datagram {
    /// Source (receive) or destination (send).
    pub peer: IpEndpoint,
    /// Payload.
    pub data: Vec<u8>,
}

/// A queue of whole datagrams with a byte budget.
#[derive(Debug, Default)]
pub struct DgramQueue {
    q: VecDeque<Datagram>,
    bytes: usize,
    cap: usize,
}

impl DgramQueue {
    /// An empty queue holding up to `cap` payload bytes.
    pub fn new(cap: usize) -> Self {
        DgramQueue { q: VecDeque::new(), bytes: 0, cap }
    }
    /// Whether a datagram of `len` bytes fits now.
    pub fn fits(&self, len: usize) -> bool {
        self.bytes + len <= self.cap
    }
    /// Appends (the caller checked [`fits`](Self::fits)).
    pub fn push(&mut self, d: Datagram) {
        self.bytes += d.data.len();
        self.q.push_back(d);
    }
    /// Removes the oldest.
    pub fn pop(&mut self) -> Option<Datagram> {
        let d = self.q.pop_front()?;
        self.bytes -= d.data.len();
        Some(d)
    }
    /// The oldest, without removing it.
    pub fn front(&self) -> Option<&Datagram> {
        self.q.front()
    }
    /// Puts a datagram back at the front (could not be sent yet).
    pub fn push_front(&mut self, d: Datagram) {
        self.bytes += d.data.len();
        self.q.push_front(d);
    }
    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    /// Changes the budget.
    pub fn set_capacity(&mut self, cap: usize) {
        self.cap = cap;
    }
    /// Space for another datagram of at least one byte.
    pub fn has_space(&self) -> bool {
        self.bytes < self.cap
    }
}

/// The receive side (level `SockBuf`).
#[derive(Debug)]
pub struct RxBuf {
    /// Stream bytes.
    pub stream: ByteRing,
    /// Datagrams.
    pub dgrams: DgramQueue,
    /// The peer finished sending (FIN) and every byte before it is in `stream`.
    pub eof: bool,
    /// The connection is gone with this error (reset, timeout); reported by recv once drained.
    pub error: Option<Errno>,
    /// The worker left bytes in smoltcp because `stream` was full: recv must kick the worker.
    pub stalled: bool,
    /// `shutdown(SHUT_RD)`.
    pub shut: bool,
}

/// The send side (level `SockBuf`).
#[derive(Debug)]
pub struct TxBuf {
    /// Stream bytes not yet handed to smoltcp.
    pub stream: ByteRing,
    /// Datagrams not yet handed to smoltcp.
    pub dgrams: DgramQueue,
}

/// Where a socket's protocol state lives.
pub enum Pcb<R: RawLock> {
    /// A smoltcp socket owned by worker `worker`, flow `flow`.
    Flow {
        /// Worker index.
        worker: usize,
        /// Flow id in that worker.
        flow: u64,
    },
    /// A loopback connection: the other end is a socket of this server.
    Loop {
        /// The other end.
        peer: Weak<Socket<R>>,
    },
}

impl<R: RawLock> Clone for Pcb<R> {
    fn clone(&self) -> Self {
        match self {
            Pcb::Flow { worker, flow } => Pcb::Flow { worker: *worker, flow: *flow },
            Pcb::Loop { peer } => Pcb::Loop { peer: peer.clone() },
        }
    }
}

/// A socket's life, from the socket layer's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created.
    Open,
    /// Bound to a local port.
    Bound,
    /// Listening.
    Listening,
    /// Connect in progress.
    Connecting,
    /// Connected (or a connected datagram socket).
    Connected,
    /// Connection gone or socket closed.
    Closed,
}

/// Socket options.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// SO_REUSEADDR.
    pub reuse_addr: bool,
    /// TCP_NODELAY.
    pub nodelay: bool,
    /// SO_KEEPALIVE.
    pub keepalive: bool,
    /// O_NONBLOCK (recorded only; libsock decides whether to wait).
    pub nonblocking: bool,
}

/// The state behind the socket lock (level `Sock`).
pub struct SockState<R: RawLock> {
    /// Where in its life the socket is.
    pub phase: Phase,
    /// Options.
    pub opts: Options,
    /// The port reference the socket itself holds (bound, listening, loopback). A connection on a
    /// worker keeps its port reference in the flow instead, so it outlives the handle.
    pub port: Option<PortGuard<R>>,
    /// Local address.
    pub local: Option<IpEndpoint>,
    /// Peer address.
    pub remote: Option<IpEndpoint>,
    /// Protocol state link.
    pub pcb: Option<Pcb<R>>,
    /// SO_ERROR: pending asynchronous error.
    pub error: Option<Errno>,
    /// shutdown(SHUT_WR) done.
    pub shut_wr: bool,
}

/// The accept side of a listener (level `Listen`).
pub struct ListenState<R: RawLock> {
    /// Connections: embryonic reservations and established ones.
    pub queue: AcceptQueue<Arc<Socket<R>>>,
    /// A reference to the listening port to share with loopback children.
    pub port: Option<PortGuard<R>>,
}

/// A server socket. Aligned to a cache line so that two sockets' locks and readiness words (used
/// by different threads) never share one.
#[repr(align(64))]
pub struct Socket<R: RawLock> {
    /// Unique id (never reused).
    pub id: u64,
    /// Stream or datagram.
    pub ty: SockType,
    /// Address family.
    pub family: Family,
    /// Socket lock.
    pub state: Mutex<Sock, SockState<R>, R>,
    /// Receive buffer.
    pub rx: Mutex<SockBuf, RxBuf, R>,
    /// Send buffer.
    pub tx: Mutex<SockBuf, TxBuf, R>,
    /// Accept queue, once listening.
    pub listen: Mutex<Listen, Option<ListenState<R>>, R>,
    /// Readiness and waiter.
    pub wake: WaitSlot<R>,
    stats: Option<Arc<Stripe>>,
}

impl<R: RawLock> Socket<R> {
    /// A new socket in phase `Open` (or already connected, for accepted children).
    pub(crate) fn new(id: u64, ty: SockType, family: Family, rxcap: usize, txcap: usize, stats: &Arc<Stats>) -> Self {
        // Ids carry their creator's stripe in the low 6 bits (see `Shared::next_id`).
        stats.inc((id & 63) as usize, Counter::sockets_created);
        let s = Socket {
            id,
            ty,
            family,
            state: Mutex::new(SockState {
                phase: Phase::Open,
                opts: Options::default(),
                port: None,
                local: None,
                remote: None,
                pcb: None,
                error: None,
                shut_wr: false,
            }),
            rx: Mutex::new(RxBuf {
                stream: ByteRing::new(rxcap),
                dgrams: DgramQueue::new(rxcap),
                eof: false,
                error: None,
                stalled: false,
                shut: false,
            }),
            tx: Mutex::new(TxBuf { stream: ByteRing::new(txcap), dgrams: DgramQueue::new(txcap) }),
            listen: Mutex::new(None),
            wake: WaitSlot::new(),
            stats: stats.stripe((id & 63) as usize).cloned(),
        };
        if ty == SockType::Datagram {
            s.wake.mark(crate::wake::OUT);
        }
        s
    }
}

impl<R: RawLock> Drop for Socket<R> {
    fn drop(&mut self) {
        if let Some(s) = &self.stats {
            s.add(Counter::sockets_freed, 1);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn ring_wraps_and_peeks() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        let mut out = [0u8; 4];
        assert_eq!(r.pop_into(&mut out), 4);
        assert_eq!(&out, b"abcd");
        assert_eq!(r.push(b"ghijklmn"), 6); // wraps; 8 bytes stored
        assert_eq!(r.free(), 0);
        let mut seen = Vec::new();
        r.drain(100, true, |s| {
            seen.extend_from_slice(s);
            s.len()
        });
        assert_eq!(seen, b"efghijkl");
        assert_eq!(r.len(), 8);
        let mut out = [0u8; 8];
        assert_eq!(r.pop_into(&mut out), 8);
        assert_eq!(&out, b"efghijkl");
        assert!(r.is_empty());
    }

    #[test]
    fn ring_partial_fill_stops() {
        let mut r = ByteRing::new(16);
        let n = r.fill(10, |dst| dst.len().min(3));
        assert_eq!(n, 3);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn reserve_grows_and_keeps_the_data() {
        let mut r = ByteRing::new(8);
        assert_eq!(r.push(b"abcdef"), 6);
        let mut out = [0u8; 4];
        assert_eq!(r.pop_into(&mut out), 4);
        assert_eq!(r.push(b"ghijkl"), 6); // wraps; full
        r.reserve(5);
        assert_eq!((r.len(), r.free(), r.capacity()), (8, 5, 13));
        assert_eq!(r.push(b"mnopqrs"), 5);
        let mut out = [0u8; 13];
        assert_eq!(r.pop_into(&mut out), 13);
        assert_eq!(&out, b"efghijklmnopq");
        r.reserve(4); // already room: unchanged
        assert_eq!(r.capacity(), 13);
    }

    #[test]
    fn idle_ring_allocates_nothing() {
        let r = ByteRing::new(65536);
        assert_eq!(r.buf.capacity(), 0);
    }
}
