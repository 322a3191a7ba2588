//! netloop: the single-threaded event loop the applications (`echo`, `http`, `bench`) run on.
//!
//! One thread, non-blocking sockets, one [`Client::poll`] per turn over every socket of every
//! [`Source`], no thread per connection. Generic over [`libsock::Transport`], so the same loop
//! runs on seL4 and against the real net server on the host.
//!
//! ```text
//!  EventLoop::run_once ── register (each Source appends its PollFds and a deadline)
//!                      ── Client::poll (ceil(n / 64) round trips per check)
//!                      ── dispatch (each Source handles its own revents)
//! ```
//!
//! # TCP connections ([`TcpServer`])
//!
//! Each accepted connection has a fixed input buffer (`Config::in_cap`) and a fixed output
//! buffer (`Config::out_cap`), allocated at accept and never grown, and a [`Handler`] (the
//! protocol: echo, HTTP, ...). The loop guarantees:
//!
//! * **Backpressure.** The handler is called only when the output buffer is empty (everything it
//!   produced before has been handed to the net server), and the connection is read only when
//!   the output buffer is empty and the handler asked for input ([`Next::Read`]). A peer that
//!   does not read its responses stops being read; its buffers stay at their fixed size.
//! * **Streaming.** A handler producing more than fits answers [`Next::Write`] and is called
//!   again, with an empty buffer, once the previous output is flushed.
//! * **Every error stays with its connection.** A read or write error, an invalid handle, a peer
//!   that sends more than the input buffer holds without the handler consuming it, or an idle
//!   timeout closes that connection only. Only errors of the session itself
//!   ([`Errno::ServerRestarted`], a failed poll) leave [`EventLoop::run_once`]; [`serve`]
//!   rebuilds the application after a net server restart.
//! * **Graceful close.** [`Next::Close`] flushes the output, shuts down the sending side, then
//!   reads and discards what the peer still sends (at most `Config::linger_bytes`, for at most
//!   `Config::linger`) before closing, so that a response is not destroyed by a reset caused by
//!   unread input.
//! * **Fairness.** At most `Config::budget` reads/writes/handler calls per connection per turn;
//!   a connection that still has work is revisited at once in the next turn.
//! * **Bounded connection count.** At `Config::max_conns` open connections the listeners are
//!   not polled; new connections wait in the net server's backlog.
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use core::time::Duration;

use libsock::{Client, Errno, PollEvents, PollFd, Shutdown, SockAddr, TcpListener, TcpStream, Transport};

/// What a [`Handler`] wants after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Call me again when more input arrived (or at end of input), once the output is flushed.
    Read,
    /// Call me again as soon as the output is flushed (I have more to produce).
    Write,
    /// Flush the output and close the connection gracefully.
    Close,
}

/// A [`Handler`]'s answer: how many input bytes it consumed, and what next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Bytes consumed from the front of the input (the rest is shown again next time).
    pub consumed: usize,
    /// What the handler wants next.
    pub next: Next,
}

impl Step {
    /// Consumed `consumed` bytes; wants more input.
    pub fn read(consumed: usize) -> Step {
        Step { consumed, next: Next::Read }
    }
    /// Consumed `consumed` bytes; has more output to produce.
    pub fn write(consumed: usize) -> Step {
        Step { consumed, next: Next::Write }
    }
    /// Consumed `consumed` bytes; close after flushing.
    pub fn close(consumed: usize) -> Step {
        Step { consumed, next: Next::Close }
    }
}

/// A connection's output buffer as a handler sees it: fixed capacity, append only.
pub struct Output<'a> {
    buf: &'a mut [u8],
    len: &'a mut usize,
}

impl<'a> Output<'a> {
    /// An output over `buf`, of which the first `*len` bytes are taken.
    pub fn new(buf: &'a mut [u8], len: &'a mut usize) -> Output<'a> {
        *len = (*len).min(buf.len());
        Output { buf, len }
    }

    /// Bytes that can still be appended.
    pub fn room(&self) -> usize {
        self.buf.len().saturating_sub(*self.len)
    }

    /// Bytes appended so far.
    pub fn len(&self) -> usize {
        *self.len
    }

    /// Nothing appended yet.
    pub fn is_empty(&self) -> bool {
        *self.len == 0
    }

    /// The whole capacity.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends what fits of `data`; returns how much.
    pub fn write(&mut self, data: &[u8]) -> usize {
        self.fill(data.len(), |dst| {
            let n = dst.len().min(data.len());
            if let (Some(d), Some(s)) = (dst.get_mut(..n), data.get(..n)) {
                d.copy_from_slice(s);
            }
            n
        })
    }

    /// Appends all of `data` if it fits, else nothing; returns whether it did.
    pub fn write_all(&mut self, data: &[u8]) -> bool {
        if data.len() > self.room() {
            return false;
        }
        self.write(data) == data.len()
    }

    /// Lets `f` produce up to `max` bytes in place (it gets a slice of `min(max, room)` bytes and
    /// returns how many it wrote); returns that count.
    pub fn fill(&mut self, max: usize, f: impl FnOnce(&mut [u8]) -> usize) -> usize {
        let start = *self.len;
        let end = start.saturating_add(max.min(self.room()));
        let Some(dst) = self.buf.get_mut(start..end) else { return 0 };
        let n = f(dst).min(end - start);
        *self.len = start + n;
        n
    }
}

impl fmt::Write for Output<'_> {
    /// All or nothing per piece; an overflow is `fmt::Error` (build responses that fit).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.write_all(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// The protocol of one connection.
pub trait Handler {
    /// Called with every buffered, unconsumed input byte (`input`), whether the peer has closed
    /// its sending side (`eof`: no more input will come), and an **empty** output buffer.
    /// Must not assume anything about how input is split into calls.
    ///
    /// Answering [`Next::Read`] without consuming anything while the input buffer is full closes
    /// the connection (the handler cannot make progress); so does answering [`Next::Read`] after
    /// `eof` without consuming anything.
    fn process(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step;
}

/// Limits and behaviour of a [`TcpServer`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Input buffer per connection (bytes).
    pub in_cap: usize,
    /// Output buffer per connection (bytes).
    pub out_cap: usize,
    /// Open connections at most; beyond, new ones wait in the listener's backlog.
    pub max_conns: usize,
    /// Close a connection with no traffic for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// After a graceful close, how long to keep reading (and discarding) the peer's input.
    pub linger: Duration,
    /// After a graceful close, how many bytes of input to discard at most.
    pub linger_bytes: usize,
    /// Reads, writes and handler calls per connection per turn.
    pub budget: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// Set `TCP_NODELAY` on accepted connections.
    pub nodelay: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            in_cap: 4096,
            out_cap: 16 * 1024,
            max_conns: 256,
            idle_timeout: Some(Duration::from_secs(120)),
            linger: Duration::from_secs(2),
            linger_bytes: 256 * 1024,
            budget: 16,
            backlog: 128,
            nodelay: false,
        }
    }
}

/// Counters of a [`TcpServer`], shared (`Rc`) so handlers can report them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub accepted: Cell<u64>,
    /// Connections open now.
    pub open: Cell<u64>,
    /// Most connections open at once.
    pub max_open: Cell<u64>,
    /// Connections closed (any reason).
    pub closed: Cell<u64>,
    /// Connections closed because of an error (read/write error, invalid handle, stuck peer).
    pub errors: Cell<u64>,
    /// Connections closed by the idle timeout.
    pub timeouts: Cell<u64>,
    /// Bytes read from connections.
    pub bytes_in: Cell<u64>,
    /// Bytes written to connections.
    pub bytes_out: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// A set of sockets polled by an [`EventLoop`].
pub trait Source {
    /// Appends the sockets to poll (with the events of interest) and returns the time at which
    /// [`Source::dispatch`] must run even if nothing happens (`Some(now)`: at once).
    fn register(&mut self, fds: &mut Vec<PollFd>, now: Duration) -> Option<Duration>;
    /// Handles the poll results for exactly the entries `register` appended, in order. An `Err`
    /// is fatal for the session (only [`Errno::ServerRestarted`] and the like).
    fn dispatch(&mut self, fds: &[PollFd], now: Duration) -> Result<(), Errno>;
}

/// Polls several [`Source`]s with one [`Client::poll`] per turn.
pub struct EventLoop<T: Transport> {
    client: Arc<Client<T>>,
    fds: Vec<PollFd>,
    ranges: Vec<(usize, usize)>,
}

impl<T: Transport> EventLoop<T> {
    /// A loop over `client`'s sockets.
    pub fn new(client: &Arc<Client<T>>) -> EventLoop<T> {
        EventLoop { client: client.clone(), fds: Vec::new(), ranges: Vec::new() }
    }

    /// The client's clock.
    pub fn now(&self) -> Duration {
        self.client.transport().now()
    }

    /// One turn: register every source, poll (waiting at most until the earliest deadline or
    /// `max_wait`; `None`: no limit), dispatch. Returns the number of ready sockets.
    pub fn run_once(&mut self, sources: &mut [&mut dyn Source], max_wait: Option<Duration>) -> Result<usize, Errno> {
        let now = self.now();
        self.fds.clear();
        self.ranges.clear();
        let mut deadline = max_wait.map(|w| now.saturating_add(w));
        for s in sources.iter_mut() {
            let start = self.fds.len();
            if let Some(d) = s.register(&mut self.fds, now) {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
            self.ranges.push((start, self.fds.len()));
        }
        let timeout = deadline.map(|d| d.saturating_sub(now));
        let ready = if self.fds.is_empty() {
            // Nothing to poll: just let the time pass (sources with deadlines only).
            if timeout != Some(Duration::ZERO) {
                let _ = self.client.wait_for_signal(Some(timeout.unwrap_or(Duration::from_millis(100))));
            }
            0
        } else {
            self.client.poll(&mut self.fds, timeout)?
        };
        let now = self.now();
        for (s, &(a, b)) in sources.iter_mut().zip(self.ranges.iter()) {
            s.dispatch(self.fds.get(a..b).unwrap_or(&[]), now)?;
        }
        Ok(ready)
    }
}

/// What happened to an application under [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The application was (re)built and is serving; the number of the incarnation (0 first).
    Serving(u32),
    /// The net server restarted; sockets are gone, reconnecting.
    ServerRestarted,
    /// Building the application failed.
    BuildFailed(Errno),
}

/// Runs an application until `turn` returns `Ok(false)` or an error other than a net server
/// restart. `build` creates the application (binds its sockets); `turn` runs one loop turn.
/// After [`Errno::ServerRestarted`] the application is dropped (its sockets were forgotten by
/// the restarted server), the client reconnects (retrying for up to about `retry * 50`) and the
/// application is built again. `event` reports each step (for the console).
pub fn serve<T: Transport, A>(
    client: &Client<T>,
    mut build: impl FnMut() -> Result<A, Errno>,
    mut turn: impl FnMut(&mut A) -> Result<bool, Errno>,
    mut event: impl FnMut(Event),
    retry: Duration,
) -> Result<(), Errno> {
    let mut incarnation = 0;
    loop {
        let err = match build() {
            Ok(mut app) => {
                event(Event::Serving(incarnation));
                loop {
                    match turn(&mut app) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => {
                event(Event::BuildFailed(e));
                e
            }
        };
        if err != Errno::ServerRestarted {
            return Err(err);
        }
        event(Event::ServerRestarted);
        let mut attempts = 0;
        while let Err(e) = client.reconnect() {
            attempts += 1;
            if attempts >= 50 {
                return Err(e);
            }
            let _ = client.transport().wait(Some(retry));
        }
        incarnation += 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// Sending side shut down; discarding input until EOF, `until`, or `left` bytes.
    Lingering { until: Duration, left: usize },
}

enum Drive {
    /// Blocked: poll for these events.
    Wait(PollEvents),
    /// Budget used up with work left: revisit at once.
    Again,
    /// Finished (closed gracefully or failed).
    Done,
}

struct Conn<T: Transport, H> {
    stream: TcpStream<T>,
    handler: H,
    inbuf: Box<[u8]>,
    in_len: usize,
    outbuf: Box<[u8]>,
    out_len: usize,
    out_pos: usize,
    next: Next,
    /// Input (or EOF) the handler has not been shown since it last made progress.
    fresh: bool,
    eof: bool,
    phase: Phase,
    last: Duration,
    want: PollEvents,
    again: bool,
    dead: bool,
}

impl<T: Transport, H: Handler> Conn<T, H> {
    fn process(&mut self) {
        let was_write = self.next == Next::Write;
        let in_len = self.in_len.min(self.inbuf.len());
        let input = self.inbuf.get(..in_len).unwrap_or(&[]);
        self.out_len = 0;
        self.out_pos = 0;
        let mut out = Output::new(&mut self.outbuf, &mut self.out_len);
        let step = self.handler.process(input, self.eof, &mut out);
        let consumed = step.consumed.min(in_len);
        self.inbuf.copy_within(consumed..in_len, 0);
        self.in_len = in_len - consumed;
        // Progress with input left over (pipelined requests), or the end of a response the
        // handler was streaming while input waited: show the rest again.
        self.fresh = (consumed > 0 || was_write) && (self.in_len > 0 || self.eof);
        self.next = step.next;
    }

    fn drive(&mut self, cfg: &Config, now: Duration, counters: &Counters) -> Drive {
        for _ in 0..cfg.budget.max(1) {
            // 1. Flush what the handler produced; nothing else happens until that is done.
            if self.out_pos < self.out_len {
                let pending = self.outbuf.get(self.out_pos..self.out_len).unwrap_or(&[]);
                match self.stream.write(pending) {
                    Ok(n) => {
                        self.out_pos += n;
                        bump(&counters.bytes_out, n as u64);
                        self.last = now;
                        if self.out_pos >= self.out_len {
                            self.out_pos = 0;
                            self.out_len = 0;
                        }
                        continue;
                    }
                    Err(Errno::EAGAIN) => return Drive::Wait(PollEvents::OUT),
                    Err(_) => {
                        bump(&counters.errors, 1);
                        return Drive::Done;
                    }
                }
            }
            // 2. Closing: discard the peer's input until it closes too.
            if let Phase::Lingering { until, left } = self.phase {
                if now >= until || left == 0 {
                    return Drive::Done;
                }
                let want = left.min(self.inbuf.len());
                let Some(scratch) = self.inbuf.get_mut(..want) else { return Drive::Done };
                match self.stream.read(scratch) {
                    Ok(0) => return Drive::Done,
                    Ok(n) => self.phase = Phase::Lingering { until, left: left.saturating_sub(n) },
                    Err(Errno::EAGAIN) => return Drive::Wait(PollEvents::IN),
                    Err(_) => return Drive::Done,
                }
                continue;
            }
            // 3. The handler.
            match self.next {
                Next::Close => {
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.in_len = 0;
                    self.phase = Phase::Lingering { until: now.saturating_add(cfg.linger), left: cfg.linger_bytes };
                }
                Next::Write => self.process(),
                Next::Read if self.fresh => self.process(),
                Next::Read => {
                    if self.eof {
                        // The handler has seen the end of input and still wants more.
                        self.next = Next::Close;
                        continue;
                    }
                    let Some(spare) = self.inbuf.get_mut(self.in_len..) else { return Drive::Done };
                    if spare.is_empty() {
                        // A full buffer the handler will not consume: the peer is misbehaving.
                        bump(&counters.errors, 1);
                        self.next = Next::Close;
                        continue;
                    }
                    match self.stream.read(spare) {
                        Ok(0) => {
                            self.eof = true;
                            self.fresh = true;
                        }
                        Ok(n) => {
                            self.in_len += n;
                            self.fresh = true;
                            self.last = now;
                            bump(&counters.bytes_in, n as u64);
                        }
                        Err(Errno::EAGAIN) => return Drive::Wait(PollEvents::IN),
                        Err(_) => {
                            bump(&counters.errors, 1);
                            return Drive::Done;
                        }
                    }
                }
            }
        }
        Drive::Again
    }

    fn deadline(&self, cfg: &Config) -> Option<Duration> {
        match self.phase {
            Phase::Lingering { until, .. } => Some(until),
            Phase::Open => cfg.idle_timeout.map(|t| self.last.saturating_add(t)),
        }
    }
}

/// TCP listeners and their connections, each served by a [`Handler`] made by `new_handler`
/// (given the peer's address). See the crate docs for the guarantees.
pub struct TcpServer<T: Transport, H, F> {
    client: Arc<Client<T>>,
    listeners: Vec<TcpListener<T>>,
    conns: Vec<Conn<T, H>>,
    new_handler: F,
    cfg: Config,
    counters: Rc<Counters>,
    polled_listeners: bool,
}

impl<T: Transport, H: Handler, F: FnMut(SockAddr) -> H> TcpServer<T, H, F> {
    /// A server with no listener yet (add them with [`TcpServer::listen`]).
    pub fn new(client: &Arc<Client<T>>, cfg: Config, new_handler: F) -> TcpServer<T, H, F> {
        Self::with_counters(client, cfg, Rc::new(Counters::default()), new_handler)
    }

    /// As [`TcpServer::new`], counting into `counters` (e.g. ones the handlers already hold).
    pub fn with_counters(client: &Arc<Client<T>>, cfg: Config, counters: Rc<Counters>, new_handler: F) -> TcpServer<T, H, F> {
        TcpServer {
            client: client.clone(),
            listeners: Vec::new(),
            conns: Vec::new(),
            new_handler,
            cfg,
            counters,
            polled_listeners: false,
        }
    }

    /// Listens on `addr` (non-blocking, `SO_REUSEADDR`); returns the bound address.
    pub fn listen(&mut self, addr: SockAddr) -> Result<SockAddr, Errno> {
        let l = TcpListener::bind_with_backlog(&self.client, addr, self.cfg.backlog)?;
        l.set_nonblocking(true)?;
        let bound = l.local_addr()?;
        self.listeners.push(l);
        Ok(bound)
    }

    /// The counters (shared; handlers may hold a clone).
    pub fn counters(&self) -> &Rc<Counters> {
        &self.counters
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    fn accept_from(&mut self, i: usize, now: Duration) -> Result<(), Errno> {
        while self.conns.len() < self.cfg.max_conns {
            let Some(l) = self.listeners.get(i) else { return Ok(()) };
            match l.accept() {
                Ok((stream, peer)) => {
                    if stream.set_nonblocking(true).is_err() {
                        bump(&self.counters.errors, 1);
                        continue;
                    }
                    if self.cfg.nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    let handler = (self.new_handler)(peer);
                    self.conns.push(Conn {
                        stream,
                        handler,
                        inbuf: vec![0u8; self.cfg.in_cap.max(1)].into_boxed_slice(),
                        in_len: 0,
                        outbuf: vec![0u8; self.cfg.out_cap.max(1)].into_boxed_slice(),
                        out_len: 0,
                        out_pos: 0,
                        next: Next::Read,
                        fresh: false,
                        eof: false,
                        phase: Phase::Open,
                        last: now,
                        want: PollEvents::IN,
                        again: false,
                        dead: false,
                    });
                    bump(&self.counters.accepted, 1);
                    let open = self.conns.len() as u64;
                    self.counters.open.set(open);
                    if open > self.counters.max_open.get() {
                        self.counters.max_open.set(open);
                    }
                }
                Err(Errno::EAGAIN) => return Ok(()),
                Err(Errno::ServerRestarted) => return Err(Errno::ServerRestarted),
                // A connection that died in the backlog, or a resource limit: try later.
                Err(_) => {
                    bump(&self.counters.errors, 1);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn reap(&mut self) {
        let before = self.conns.len();
        self.conns.retain(|c| !c.dead);
        let gone = (before - self.conns.len()) as u64;
        bump(&self.counters.closed, gone);
        self.counters.open.set(self.conns.len() as u64);
    }
}

impl<T: Transport, H: Handler, F: FnMut(SockAddr) -> H> Source for TcpServer<T, H, F> {
    fn register(&mut self, fds: &mut Vec<PollFd>, now: Duration) -> Option<Duration> {
        // Time-outs first, so dead connections are not polled.
        let cfg = &self.cfg;
        let mut timed_out = 0;
        for c in self.conns.iter_mut() {
            if c.deadline(cfg).is_some_and(|d| now >= d) {
                if c.phase == Phase::Open {
                    timed_out += 1;
                }
                c.dead = true;
            }
        }
        bump(&self.counters.timeouts, timed_out);
        self.reap();
        self.polled_listeners = self.conns.len() < self.cfg.max_conns;
        if self.polled_listeners {
            fds.extend(self.listeners.iter().map(|l| PollFd::new(l.handle(), PollEvents::IN)));
        }
        let mut deadline: Option<Duration> = None;
        for c in &self.conns {
            fds.push(PollFd::new(c.stream.handle(), c.want));
            let d = if c.again { Some(now) } else { c.deadline(&self.cfg) };
            if let Some(d) = d {
                deadline = Some(deadline.map_or(d, |x| x.min(d)));
            }
        }
        deadline
    }

    fn dispatch(&mut self, fds: &[PollFd], now: Duration) -> Result<(), Errno> {
        let nl = if self.polled_listeners { self.listeners.len().min(fds.len()) } else { 0 };
        let (lfds, cfds) = fds.split_at(nl);
        for (c, fd) in self.conns.iter_mut().zip(cfds.iter()) {
            if fd.revents.is_empty() && !c.again {
                continue;
            }
            if fd.revents.contains(PollEvents::NVAL) {
                bump(&self.counters.errors, 1);
                c.dead = true;
                continue;
            }
            match c.drive(&self.cfg, now, &self.counters) {
                Drive::Wait(ev) => {
                    c.want = ev;
                    c.again = false;
                }
                Drive::Again => c.again = true,
                Drive::Done => c.dead = true,
            }
        }
        self.reap();
        let ready: Vec<usize> =
            lfds.iter().enumerate().filter(|(_, fd)| !fd.revents.is_empty()).map(|(i, _)| i).collect();
        for i in ready {
            self.accept_from(i, now)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_and_all_or_nothing() {
        let mut buf = [0u8; 8];
        let mut len = 0;
        let mut out = Output::new(&mut buf, &mut len);
        assert_eq!(out.write(b"hello"), 5);
        assert_eq!(out.room(), 3);
        assert!(!out.write_all(b"world"));
        assert_eq!(out.len(), 5);
        assert_eq!(out.write(b"world"), 3);
        assert_eq!(out.room(), 0);
        assert_eq!(out.fill(10, |d| d.len()), 0);
        assert_eq!(&buf, b"hellowor");
    }

    #[test]
    fn fmt_write_fails_instead_of_truncating() {
        use core::fmt::Write;
        let mut buf = [0u8; 4];
        let mut len = 0;
        let mut out = Output::new(&mut buf, &mut len);
        assert!(write!(out, "ab").is_ok());
        assert!(write!(out, "cde").is_err());
        assert_eq!(len, 2);
    }

    #[test]
    fn fill_writes_in_place_and_clamps() {
        let mut buf = [0u8; 6];
        let mut len = 1;
        let mut out = Output::new(&mut buf, &mut len);
        // The closure claims more than it was given: clamped.
        assert_eq!(out.fill(3, |d| { d.fill(7); 99 }), 3);
        assert_eq!(len, 4);
        assert_eq!(buf, [0, 7, 7, 7, 0, 0]);
    }
}
