//! [`Client`]: BSD-style socket calls over a [`Transport`].

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;

use net_api::{
    decode_response, encode_request, BufDesc, DataArea, DataAreaLayout, Domain, Errno, MsgFlags,
    PollEntry, PollEvents, PollList, Request, Response, ServerInfo, Shutdown, SockAddr, SockOpt,
    SockOptValue, SockType, SocketHandle, MAX_MSG, MAX_POLL_FDS, PROTOCOL_VERSION,
};

use crate::transport::{Transport, Wake};

/// One entry of a [`Client::poll`] call, like `struct pollfd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollFd {
    pub handle: SocketHandle,
    /// Events of interest (`PollEvents::IN`, `OUT`).
    pub events: PollEvents,
    /// Filled by `poll`: ready events, plus `ERR`/`HUP`/`NVAL` whether asked or not.
    pub revents: PollEvents,
}

impl PollFd {
    pub fn new(handle: SocketHandle, events: PollEvents) -> PollFd {
        PollFd { handle, events, revents: PollEvents::NONE }
    }
}

/// How long a thread waiting with a deadline polls before it asks the server for a wake-up and
/// blocks, on a transport whose timed waits poll (see [`Transport::timed_wait_polls`]).
pub const POLL_BEFORE_BLOCKING: Duration = Duration::from_millis(20);

/// Largest encoded request other than `Poll`, and largest encoded answer other than `Poll` and
/// `Stats` (the unit test `small_messages_fit` checks the worst cases).
pub(crate) const SMALL_MSG: usize = 96;

/// What the client remembers about each of its sockets.
#[derive(Clone, Copy, Debug)]
struct SockInfo {
    ty: SockType,
    nonblocking: bool,
}

#[derive(Clone, Copy, Debug)]
struct Session {
    epoch: u32,
    layout: DataAreaLayout,
}

/// Client-side slot allocator for one half of the data area. The server does not know about
/// slots; this only keeps two threads of this client from using the same buffer at once.
struct SlotPool {
    busy: Vec<AtomicBool>,
}

impl SlotPool {
    fn new(n: usize) -> SlotPool {
        SlotPool { busy: (0..n).map(|_| AtomicBool::new(false)).collect() }
    }
    fn try_acquire(&self) -> Option<usize> {
        self.busy.iter().position(|b| {
            b.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        })
    }
    fn release(&self, i: usize) {
        if let Some(b) = self.busy.get(i) {
            b.store(false, Ordering::Release);
        }
    }
    fn any_free(&self) -> bool {
        self.busy.iter().any(|b| !b.load(Ordering::Acquire))
    }
}

/// A held slot; released on drop (also on early return with `?`), waking threads parked for one.
struct Slot<'a, T: Transport> {
    pool: &'a SlotPool,
    transport: &'a T,
    index: usize,
    desc: BufDesc,
}

impl<T: Transport> Drop for Slot<'_, T> {
    fn drop(&mut self) {
        self.pool.release(self.index);
        self.transport.unpark_all();
    }
}

/// A session with the net server: BSD-style socket calls.
///
/// Every call is one or more control round trips ([`Client::round_trips`] counts them). Calls on
/// a blocking socket that the server answers with `EAGAIN` wait on the transport's notification
/// and retry (see the crate docs, "Blocking"). `Client` is `Sync` when its transport is: share it
/// between threads with an `Arc`.
pub struct Client<T: Transport> {
    transport: T,
    session: lock_api::Mutex<T::RawLock, Session>,
    sockets: lock_api::Mutex<T::RawLock, BTreeMap<SocketHandle, SockInfo>>,
    tx: SlotPool,
    rx: SlotPool,
    round_trips: AtomicU64,
    /// Bumped each time a thread of this client consumes a signal from the transport.
    wake_gen: AtomicU64,
    /// Held by the one thread currently blocked in `Transport::wait`.
    waiter: AtomicBool,
}

impl<T: Transport> Client<T> {
    /// Starts a session (`Hello`) and checks the announced data-area layout against the
    /// transport's region (`EPROTO` if it does not fit, `EPROTONOSUPPORT` for a version mismatch).
    pub fn new(transport: T) -> Result<Client<T>, Errno> {
        let client = Client {
            transport,
            session: lock_api::Mutex::new(Session { epoch: 0, layout: DataAreaLayout::DEFAULT }),
            sockets: lock_api::Mutex::new(BTreeMap::new()),
            tx: SlotPool::new(0),
            rx: SlotPool::new(0),
            round_trips: AtomicU64::new(0),
            wake_gen: AtomicU64::new(0),
            waiter: AtomicBool::new(false),
        };
        let info = client.hello()?;
        let Client { transport, session, sockets, round_trips, wake_gen, waiter, .. } = client;
        *session.lock() = Session { epoch: info.epoch, layout: info.layout };
        Ok(Client {
            transport,
            session,
            sockets,
            tx: SlotPool::new(info.layout.tx_slots as usize),
            rx: SlotPool::new(info.layout.rx_slots as usize),
            round_trips,
            wake_gen,
            waiter,
        })
    }

    fn hello(&self) -> Result<ServerInfo, Errno> {
        let info = match self.rpc(&Request::Hello { version: PROTOCOL_VERSION })? {
            Response::Hello(info) => info,
            _ => return Err(Errno::EPROTO),
        };
        if info.version != PROTOCOL_VERSION {
            return Err(Errno::EPROTONOSUPPORT);
        }
        if info.epoch == 0 {
            return Err(Errno::EPROTO);
        }
        DataArea::new(info.layout, self.transport.region()).map_err(|_| Errno::EPROTO)?;
        Ok(info)
    }

    /// After [`Errno::ServerRestarted`]: starts a new session with the restarted server. Every
    /// handle of the old session is forgotten (the server forgot them too). The new server must
    /// announce the same data-area layout (else `EPROTO`).
    pub fn reconnect(&self) -> Result<(), Errno> {
        let info = self.hello()?;
        let mut s = self.session.lock();
        if info.layout != s.layout {
            return Err(Errno::EPROTO);
        }
        s.epoch = info.epoch;
        drop(s);
        self.sockets.lock().clear();
        Ok(())
    }

    /// The transport, e.g. to read transport-level statistics.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// Control round trips made so far (every `Transport::call`, including `Hello`).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// The session's epoch (from `Hello`).
    pub fn epoch(&self) -> u32 {
        self.session.lock().epoch
    }

    /// The data-area layout the server announced.
    pub fn layout(&self) -> DataAreaLayout {
        self.session.lock().layout
    }

    // ---- the one place requests are sent ----

    fn rpc(&self, req: &Request) -> Result<Response, Errno> {
        let epoch = self.session.lock().epoch;
        // Every request but `Poll` and every answer but `Poll`/`Stats` is at most `SMALL_MSG`
        // bytes (tested): small buffers on the hot path, because zeroing two 960-byte arrays
        // per call was a measurable part of a no-op call under QEMU TCG.
        if matches!(req, Request::Poll { .. } | Request::Stats) {
            self.rpc_in::<MAX_MSG, MAX_MSG>(epoch, req)
        } else {
            self.rpc_in::<SMALL_MSG, SMALL_MSG>(epoch, req)
        }
    }

    fn rpc_in<const Q: usize, const A: usize>(&self, epoch: u32, req: &Request) -> Result<Response, Errno> {
        let mut q = [0u8; Q];
        let n = encode_request(epoch, req, &mut q)?;
        let mut a = [0u8; A];
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let m = self.transport.call(q.get(..n).ok_or(Errno::EMSGSIZE)?, &mut a)?;
        let bytes = a.get(..m).ok_or(Errno::EPROTO)?;
        decode_response(bytes).map_err(|_| Errno::EPROTO)?.into_result()
    }

    fn rpc_ok(&self, req: &Request) -> Result<(), Errno> {
        match self.rpc(req)? {
            Response::Ok => Ok(()),
            _ => Err(Errno::EPROTO),
        }
    }

    fn rpc_addr(&self, req: &Request) -> Result<SockAddr, Errno> {
        match self.rpc(req)? {
            Response::Addr(a) => Ok(a),
            _ => Err(Errno::EPROTO),
        }
    }

    fn info(&self, h: SocketHandle) -> Result<SockInfo, Errno> {
        self.sockets.lock().get(&h).copied().ok_or(Errno::EBADF)
    }

    fn blocking(&self, h: SocketHandle, flags: MsgFlags) -> Result<bool, Errno> {
        Ok(!self.info(h)?.nonblocking && !flags.contains(MsgFlags::DONTWAIT))
    }

    /// Snapshot taken *before* a request whose `EAGAIN` the caller may wait out.
    fn wake_token(&self) -> u64 {
        self.wake_gen.load(Ordering::Acquire)
    }

    /// Waits until some thread of this client has consumed a server signal after `token` was
    /// taken, or `deadline` passes.
    ///
    /// One notification serves all of a client's threads, and consuming it clears it, so the
    /// threads share it: one thread at a time (the holder of `waiter`) blocks in
    /// `Transport::wait` and bumps `wake_gen` for every signal it consumes; the others park
    /// (`Transport::park_until`; with a deadline, after asking the server for a wake-up by then,
    /// or else polling with `Transport::relax`) until `wake_gen` moves or the waiter's place is
    /// free. No wake-up
    /// is lost: the signal provoked by a request is sent after the server processed it, hence
    /// after the caller's token; whichever thread consumes it bumps `wake_gen` past the token
    /// and unparks the others.
    fn wait_since(&self, token: u64, deadline: Option<Duration>) -> Wake {
        loop {
            if self.wake_gen.load(Ordering::Acquire) != token {
                return Wake::Signalled;
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = self.transport.now();
                    if now >= d {
                        return Wake::TimedOut;
                    }
                    Some(d - now)
                }
            };
            if self
                .waiter
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // Re-check: the previous waiter may have bumped the generation just now.
                if self.wake_gen.load(Ordering::Acquire) != token {
                    self.waiter.store(false, Ordering::Release);
                    return Wake::Signalled;
                }
                let w = match timeout {
                    Some(t) if self.transport.timed_wait_polls() => self.wait_polling_then_blocking(t),
                    _ => self.transport.wait(timeout),
                };
                if w == Wake::Signalled {
                    self.wake_gen.fetch_add(1, Ordering::AcqRel);
                }
                self.waiter.store(false, Ordering::Release);
                self.transport.unpark_all();
                return w;
            }
            // Behind the waiter: park until it passes a signal on or leaves. With a deadline,
            // park only if the server will signal by then (the alarm wakes the waiter, which
            // unparks everyone); else poll.
            let parkable = match timeout {
                None => true,
                Some(t) => self.transport.timed_wait_polls() && self.alarm(t),
            };
            if parkable {
                self.transport.park_until(&|| {
                    self.wake_gen.load(Ordering::Acquire) != token || !self.waiter.load(Ordering::Acquire)
                });
            } else {
                self.transport.relax();
            }
        }
    }

    /// A wait of at most `t` on a transport whose timed waits poll: poll for up to
    /// [`POLL_BEFORE_BLOCKING`] (an answer usually comes sooner, and a blocked thread's wake-up
    /// costs more than that under QEMU: measured, blocking at once halved HTTP requests/s), then
    /// ask the server for a wake-up at the deadline and block.
    fn wait_polling_then_blocking(&self, t: Duration) -> Wake {
        if t <= POLL_BEFORE_BLOCKING {
            return self.transport.wait(Some(t));
        }
        if self.transport.wait(Some(POLL_BEFORE_BLOCKING)) == Wake::Signalled {
            return Wake::Signalled;
        }
        let rest = t - POLL_BEFORE_BLOCKING;
        if self.alarm(rest) {
            self.transport.wait(None)
        } else {
            self.transport.wait(Some(rest))
        }
    }

    /// Asks the server to signal this client after `t` (`Request::WakeAfter`); whether it will.
    fn alarm(&self, t: Duration) -> bool {
        let micros = u64::try_from(t.as_micros()).unwrap_or(u64::MAX).max(1);
        matches!(self.rpc(&Request::WakeAfter { micros }), Ok(Response::Ok))
    }

    /// Blocks until the server signals this client (some socket's readiness changed) or
    /// `timeout` passes: for event loops that wait with nothing to poll. Spurious wake-ups are
    /// possible; callers re-check their state.
    pub fn wait_for_signal(&self, timeout: Option<Duration>) -> Wake {
        let token = self.wake_token();
        let deadline = timeout.map(|t| self.transport.now() + t);
        self.wait_since(token, deadline)
    }

    fn acquire<'a>(&'a self, pool: &'a SlotPool, tx: bool) -> Result<Slot<'a, T>, Errno> {
        let layout = self.layout();
        loop {
            if let Some(index) = pool.try_acquire() {
                let desc = if tx { layout.tx_slot(index) } else { layout.rx_slot(index) };
                return match desc {
                    Some(desc) => Ok(Slot { pool, transport: &self.transport, index, desc }),
                    None => {
                        pool.release(index);
                        Err(Errno::EPROTO)
                    }
                };
            }
            // Every slot is in use by other threads of this client (a held send keeps one for
            // as long as the peer is slow): park until one is released.
            self.transport.park_until(&|| pool.any_free());
        }
    }

    fn area(&self) -> Result<DataArea<&T::Region>, Errno> {
        DataArea::new(self.layout(), self.transport.region())
    }

    // ---- BSD-style calls ----

    /// `socket(2)`. New sockets are blocking.
    pub fn socket(&self, domain: Domain, ty: SockType) -> Result<SocketHandle, Errno> {
        let h = match self.rpc(&Request::Socket { domain, ty })? {
            Response::Socket(h) => h,
            _ => return Err(Errno::EPROTO),
        };
        self.sockets.lock().insert(h, SockInfo { ty, nonblocking: false });
        Ok(h)
    }

    /// `bind(2)`.
    pub fn bind(&self, h: SocketHandle, addr: &SockAddr) -> Result<(), Errno> {
        self.rpc_ok(&Request::Bind { handle: h, addr: *addr })
    }

    /// `listen(2)`.
    pub fn listen(&self, h: SocketHandle, backlog: u32) -> Result<(), Errno> {
        self.rpc_ok(&Request::Listen { handle: h, backlog })
    }

    /// `accept(2)`: waits for a connection on a blocking listener; `EAGAIN` on a non-blocking one.
    /// The new socket is blocking.
    pub fn accept(&self, h: SocketHandle) -> Result<(SocketHandle, SockAddr), Errno> {
        let blocking = self.blocking(h, MsgFlags::NONE)?;
        loop {
            let token = self.wake_token();
            match self.rpc(&Request::Accept { handle: h }) {
                Ok(Response::Accepted { handle, peer }) => {
                    let info = SockInfo { ty: SockType::Stream, nonblocking: false };
                    self.sockets.lock().insert(handle, info);
                    return Ok((handle, peer));
                }
                Ok(_) => return Err(Errno::EPROTO),
                Err(Errno::EAGAIN) if blocking => {
                    self.wait_since(token, None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `connect(2)`. Stream, blocking: waits for the handshake and returns its outcome
    /// (`ECONNREFUSED`, `ETIMEDOUT`, ...). Stream, non-blocking: `EINPROGRESS`; poll for `OUT`, then
    /// read [`SockOpt::Error`]. Datagram: sets the default peer.
    pub fn connect(&self, h: SocketHandle, addr: &SockAddr) -> Result<(), Errno> {
        let blocking = self.blocking(h, MsgFlags::NONE)?;
        match self.rpc_ok(&Request::Connect { handle: h, addr: *addr }) {
            Err(Errno::EINPROGRESS) | Err(Errno::EALREADY) if blocking => self.finish_connect(h),
            other => other,
        }
    }

    fn finish_connect(&self, h: SocketHandle) -> Result<(), Errno> {
        loop {
            let mut fds = [PollFd::new(h, PollEvents::OUT)];
            self.poll(&mut fds, None)?;
            let re = fds[0].revents;
            if re.contains(PollEvents::NVAL) {
                return Err(Errno::EBADF);
            }
            if let SockOptValue::Error(Some(e)) = self.getsockopt(h, SockOpt::Error)? {
                return Err(e);
            }
            if re.contains(PollEvents::OUT) {
                return Ok(());
            }
            if re.intersects(PollEvents::HUP | PollEvents::ERR) {
                return Err(Errno::ECONNREFUSED);
            }
        }
    }

    /// `send(2)` on a connected socket. See [`Client::sendto`].
    pub fn send(&self, h: SocketHandle, data: &[u8], flags: MsgFlags) -> Result<usize, Errno> {
        self.send_inner(h, data, flags, None)
    }

    /// `sendto(2)`.
    ///
    /// Stream, blocking: sends everything (one round trip per 64 KiB chunk while the server
    /// keeps up), returning the count; an error after some bytes went out returns the count.
    /// Stream, non-blocking: sends what fits now; `EAGAIN` if nothing did. Datagram: one
    /// datagram, at most one slot (64 KiB; larger is `EMSGSIZE`).
    pub fn sendto(
        &self,
        h: SocketHandle,
        data: &[u8],
        flags: MsgFlags,
        to: &SockAddr,
    ) -> Result<usize, Errno> {
        self.send_inner(h, data, flags, Some(*to))
    }

    fn send_inner(
        &self,
        h: SocketHandle,
        data: &[u8],
        flags: MsgFlags,
        to: Option<SockAddr>,
    ) -> Result<usize, Errno> {
        let info = self.info(h)?;
        let blocking = !info.nonblocking && !flags.contains(MsgFlags::DONTWAIT);
        let area = self.area()?;
        let slot_size = area.layout().slot_size as usize;
        if info.ty == SockType::Datagram && data.len() > slot_size {
            return Err(Errno::EMSGSIZE);
        }
        // A blocking stream send may be held by the server until the whole chunk is in the
        // socket (one round trip per chunk); a server that cannot hold answers as without it.
        let wire_flags = if blocking && info.ty == SockType::Stream { flags | MsgFlags::HOLD } else { flags };
        let mut total = 0usize;
        let mut sent_once = false;
        // A slot is held only while calls for it are in flight: it is released before waiting,
        // so a thread blocked on one socket never starves the others of slots.
        'chunk: while total < data.len() || !sent_once {
            let slot = self.acquire(&self.tx, true)?;
            let end = data.len().min(total + slot_size);
            let chunk = data.get(total..end).ok_or(Errno::EINVAL)?;
            area.write_tx(slot.desc, chunk)?;
            // `done` bytes of this chunk are accepted; the rest is still in the slot at offset
            // `done`, so a partial send is resumed without copying again.
            let mut done = 0usize;
            while done < chunk.len() || !sent_once {
                let len = chunk.len() - done;
                let buf = BufDesc { offset: slot.desc.offset + done as u32, len: len as u32 };
                let token = self.wake_token();
                match self.rpc(&Request::Send { handle: h, buf, flags: wire_flags, to }) {
                    Ok(Response::Sent { len: sent }) => {
                        let sent = sent as usize;
                        if sent > len || (sent == 0 && len > 0) {
                            return Err(Errno::EPROTO);
                        }
                        sent_once = true;
                        done += sent;
                        total += sent;
                        if done < chunk.len() && !blocking {
                            return Ok(total);
                        }
                    }
                    Ok(_) => return Err(Errno::EPROTO),
                    Err(Errno::EAGAIN) if blocking => {
                        drop(slot);
                        self.wait_since(token, None);
                        continue 'chunk;
                    }
                    // Bytes already sent are reported; the error shows on the next call.
                    Err(_) if total > 0 => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(total)
    }

    /// `recv(2)`. See [`Client::recvfrom`].
    pub fn recv(&self, h: SocketHandle, buf: &mut [u8], flags: MsgFlags) -> Result<usize, Errno> {
        self.recvfrom(h, buf, flags).map(|(n, _)| n)
    }

    /// `recvfrom(2)`: at most one slot (64 KiB) per call. Stream: 0 means end of file. Blocking:
    /// waits for data; non-blocking: `EAGAIN`. The address is the datagram's sender (`None` for
    /// streams).
    pub fn recvfrom(
        &self,
        h: SocketHandle,
        buf: &mut [u8],
        flags: MsgFlags,
    ) -> Result<(usize, Option<SockAddr>), Errno> {
        let blocking = self.blocking(h, flags)?;
        let area = self.area()?;
        loop {
            // As for send: hold the slot only while the call is in flight.
            let slot = self.acquire(&self.rx, false)?;
            let want = buf.len().min(slot.desc.len as usize);
            let desc = BufDesc { offset: slot.desc.offset, len: want as u32 };
            let token = self.wake_token();
            match self.rpc(&Request::Recv { handle: h, buf: desc, flags }) {
                Ok(Response::Received { len, from }) => {
                    let len = len as usize;
                    area.read_rx(desc, len, buf)?;
                    return Ok((len, from));
                }
                Ok(_) => return Err(Errno::EPROTO),
                Err(Errno::EAGAIN) if blocking => {
                    drop(slot);
                    self.wait_since(token, None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, h: SocketHandle, how: Shutdown) -> Result<(), Errno> {
        self.rpc_ok(&Request::Shutdown { handle: h, how })
    }

    /// `close(2)`. The handle is forgotten even if the server reports an error.
    pub fn close(&self, h: SocketHandle) -> Result<(), Errno> {
        self.sockets.lock().remove(&h);
        self.rpc_ok(&Request::Close { handle: h })
    }

    /// The net server's counters (`Request::Stats`): per worker packets, sockets and
    /// connections, ports in use, ring drops, driver restarts. Not a socket call; for status pages.
    pub fn stats(&self) -> Result<net_api::NetStats, Errno> {
        match self.rpc(&Request::Stats)? {
            Response::Stats(s) => Ok(*s),
            _ => Err(Errno::EPROTO),
        }
    }

    /// `getsockname(2)`.
    pub fn getsockname(&self, h: SocketHandle) -> Result<SockAddr, Errno> {
        self.rpc_addr(&Request::GetSockName { handle: h })
    }

    /// `getpeername(2)`.
    pub fn getpeername(&self, h: SocketHandle) -> Result<SockAddr, Errno> {
        self.rpc_addr(&Request::GetPeerName { handle: h })
    }

    /// `setsockopt(2)`. `NonBlocking` also changes how this client waits on the socket.
    pub fn setsockopt(&self, h: SocketHandle, value: SockOptValue) -> Result<(), Errno> {
        self.info(h)?;
        self.rpc_ok(&Request::SetSockOpt { handle: h, value })?;
        if let SockOptValue::NonBlocking(nb) = value {
            if let Some(i) = self.sockets.lock().get_mut(&h) {
                i.nonblocking = nb;
            }
        }
        Ok(())
    }

    /// `getsockopt(2)`.
    pub fn getsockopt(&self, h: SocketHandle, opt: SockOpt) -> Result<SockOptValue, Errno> {
        match self.rpc(&Request::GetSockOpt { handle: h, opt })? {
            Response::SockOpt(v) if v.opt() == opt => Ok(v),
            _ => Err(Errno::EPROTO),
        }
    }

    /// Sets or clears `O_NONBLOCK`.
    pub fn set_nonblocking(&self, h: SocketHandle, nonblocking: bool) -> Result<(), Errno> {
        self.setsockopt(h, SockOptValue::NonBlocking(nonblocking))
    }

    /// Whether this client treats `h` as non-blocking (no round trip).
    pub fn is_nonblocking(&self, h: SocketHandle) -> Result<bool, Errno> {
        Ok(self.info(h)?.nonblocking)
    }

    /// `poll(2)`: fills every `revents` and returns how many entries have any. `timeout`:
    /// `None` waits indefinitely, `Some(ZERO)` checks once. Sockets are checked in requests of
    /// at most [`MAX_POLL_FDS`] (so `fds.len().div_ceil(64)` round trips per check); between
    /// checks the client waits on its notification.
    pub fn poll(&self, fds: &mut [PollFd], timeout: Option<Duration>) -> Result<usize, Errno> {
        let deadline = timeout.map(|t| self.transport.now().saturating_add(t));
        loop {
            let token = self.wake_token();
            let mut ready = 0;
            for chunk in fds.chunks_mut(MAX_POLL_FDS) {
                let mut list = PollList::new();
                for fd in chunk.iter() {
                    list.push(PollEntry { handle: fd.handle, events: fd.events })
                        .map_err(|_| Errno::EINVAL)?;
                }
                let revents = match self.rpc(&Request::Poll { fds: alloc::boxed::Box::new(list) })? {
                    Response::Poll { revents } if revents.len() == chunk.len() => revents,
                    _ => return Err(Errno::EPROTO),
                };
                for (fd, re) in chunk.iter_mut().zip(revents.iter()) {
                    fd.revents = *re;
                    if !re.is_empty() {
                        ready += 1;
                    }
                }
            }
            if ready > 0 {
                return Ok(ready);
            }
            if timeout == Some(Duration::ZERO) {
                return Ok(0);
            }
            if self.wait_since(token, deadline) == Wake::TimedOut {
                // The deadline passed with no signal, so no armed socket changed.
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Protocol-violation tests against a scripted in-crate transport: each call pops the next
    //! canned response (raw bytes), so a misbehaving server can be imitated exactly.

    use super::*;
    use alloc::sync::Arc;
    use core::cell::{Cell, RefCell};
    use net_api::{encode_response, AtomicRegion, DataRegion};
    use std::collections::VecDeque;
    use std::vec;

    struct Script {
        replies: RefCell<VecDeque<Result<Vec<u8>, Errno>>>,
        requests: RefCell<Vec<(u32, Request)>>,
        waits: Cell<u32>,
        region: Arc<AtomicRegion>,
    }

    fn enc(r: Response) -> Vec<u8> {
        let mut b = [0u8; MAX_MSG];
        let n = encode_response(&r, &mut b).unwrap();
        b[..n].to_vec()
    }

    fn hello(epoch: u32) -> Vec<u8> {
        enc(Response::Hello(ServerInfo {
            version: PROTOCOL_VERSION,
            epoch,
            layout: DataAreaLayout::DEFAULT,
        }))
    }

    impl Script {
        fn new(replies: Vec<Result<Vec<u8>, Errno>>) -> Script {
            Script {
                replies: RefCell::new(replies.into()),
                requests: RefCell::new(Vec::new()),
                waits: Cell::new(0),
                region: Arc::new(AtomicRegion::for_layout(&DataAreaLayout::DEFAULT)),
            }
        }
    }

    impl Transport for Script {
        type Region = Arc<AtomicRegion>;
        type RawLock = spin::Mutex<()>;
        fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
            self.requests.borrow_mut().push(net_api::decode_request(request).unwrap());
            let r = self.replies.borrow_mut().pop_front().expect("script ran out")?;
            response[..r.len()].copy_from_slice(&r);
            Ok(r.len())
        }
        fn wait(&self, _: Option<Duration>) -> Wake {
            self.waits.set(self.waits.get() + 1);
            Wake::Signalled
        }
        fn now(&self) -> Duration {
            Duration::ZERO
        }
        fn region(&self) -> &Arc<AtomicRegion> {
            &self.region
        }
    }

    const H: SocketHandle = SocketHandle { index: 1, generation: 1 };

    fn client_with_socket(ty: SockType, more: Vec<Result<Vec<u8>, Errno>>) -> Client<Script> {
        let mut replies = vec![Ok(hello(7)), Ok(enc(Response::Socket(H)))];
        replies.extend(more);
        let c = Client::new(Script::new(replies)).unwrap();
        assert_eq!(c.socket(Domain::Inet, ty), Ok(H));
        c
    }

    #[test]
    fn hello_is_checked() {
        let mut bad = ServerInfo { version: 99, epoch: 1, layout: DataAreaLayout::DEFAULT };
        let c = Client::new(Script::new(vec![Ok(enc(Response::Hello(bad)))]));
        assert_eq!(c.err(), Some(Errno::EPROTONOSUPPORT));
        bad.version = PROTOCOL_VERSION;
        bad.epoch = 0;
        let c = Client::new(Script::new(vec![Ok(enc(Response::Hello(bad)))]));
        assert_eq!(c.err(), Some(Errno::EPROTO));
        // A layout larger than the transport's region.
        bad.epoch = 1;
        bad.layout.tx_slots = 8;
        let c = Client::new(Script::new(vec![Ok(enc(Response::Hello(bad)))]));
        assert_eq!(c.err(), Some(Errno::EPROTO));
        let c = Client::new(Script::new(vec![Ok(enc(Response::Ok))]));
        assert_eq!(c.err(), Some(Errno::EPROTO));
        let c = Client::new(Script::new(vec![Err(Errno::ServerRestarted)]));
        assert_eq!(c.err(), Some(Errno::ServerRestarted));
    }

    #[test]
    fn requests_carry_the_session_epoch() {
        let c = client_with_socket(SockType::Stream, vec![Ok(enc(Response::Ok))]);
        c.listen(H, 5).unwrap();
        let reqs = c.transport().requests.borrow();
        assert_eq!(reqs[0], (0, Request::Hello { version: PROTOCOL_VERSION }));
        assert!(reqs[1..].iter().all(|(e, _)| *e == 7));
        assert_eq!(reqs[2].1, Request::Listen { handle: H, backlog: 5 });
        assert_eq!(c.round_trips(), 3);
    }

    #[test]
    fn malformed_or_mismatched_replies_are_eproto() {
        let c = client_with_socket(
            SockType::Stream,
            vec![
                Ok(vec![0xff, 0xff]),                          // garbage
                Ok(enc(Response::Sent { len: 1 })),            // wrong kind for bind
                Ok(vec![]),                                    // empty
                Ok(enc(Response::SockOpt(SockOptValue::KeepAlive(true)))), // wrong option
            ],
        );
        let a = SockAddr::any_v4(1);
        assert_eq!(c.bind(H, &a), Err(Errno::EPROTO));
        assert_eq!(c.bind(H, &a), Err(Errno::EPROTO));
        assert_eq!(c.bind(H, &a), Err(Errno::EPROTO));
        assert_eq!(c.getsockopt(H, SockOpt::TcpNoDelay), Err(Errno::EPROTO));
    }

    #[test]
    fn server_errors_pass_through_by_name() {
        let c = client_with_socket(SockType::Stream, vec![Ok(enc(Response::Error(Errno::EADDRINUSE)))]);
        let e = c.bind(H, &SockAddr::any_v4(80)).unwrap_err();
        assert_eq!(std::format!("{e}"), "EADDRINUSE");
    }

    #[test]
    fn recv_reply_longer_than_the_buffer_is_eproto() {
        let c = client_with_socket(
            SockType::Stream,
            vec![Ok(enc(Response::Received { len: 11, from: None }))],
        );
        let mut buf = [0u8; 10];
        assert_eq!(c.recv(H, &mut buf, MsgFlags::NONE), Err(Errno::EPROTO));
        // The request named at most 10 bytes of an RX slot.
        let reqs = c.transport().requests.borrow();
        let Request::Recv { buf: d, .. } = reqs.last().unwrap().1 else { panic!() };
        assert_eq!(d.len, 10);
        assert_eq!(DataAreaLayout::DEFAULT.check_rx(d).map(|r| r.len()), Ok(10));
    }

    #[test]
    fn sent_more_than_asked_is_eproto() {
        let c = client_with_socket(SockType::Stream, vec![Ok(enc(Response::Sent { len: 6 }))]);
        assert_eq!(c.send(H, b"12345", MsgFlags::NONE), Err(Errno::EPROTO));
    }

    #[test]
    fn blocking_call_waits_and_retries_on_eagain() {
        let eagain = || Ok(enc(Response::Error(Errno::EAGAIN)));
        let c = client_with_socket(
            SockType::Stream,
            vec![eagain(), eagain(), Ok(enc(Response::Received { len: 2, from: None }))],
        );
        // The "server" wrote the bytes at the RX slot before replying.
        let rx = DataAreaLayout::DEFAULT.rx_slot(0).unwrap();
        c.transport().region.write(rx.offset as usize, b"ok").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(H, &mut buf, MsgFlags::NONE), Ok(2));
        assert_eq!(&buf[..2], b"ok");
        assert_eq!(c.transport().waits.get(), 2);
    }

    #[test]
    fn nonblocking_call_returns_eagain_without_waiting() {
        let c = client_with_socket(
            SockType::Stream,
            vec![Ok(enc(Response::Ok)), Ok(enc(Response::Error(Errno::EAGAIN)))],
        );
        c.set_nonblocking(H, true).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(H, &mut buf, MsgFlags::NONE), Err(Errno::EAGAIN));
        assert_eq!(c.transport().waits.get(), 0);
    }

    #[test]
    fn partial_send_resumes_from_the_slot_and_recopies_only_after_waiting() {
        let c = client_with_socket(
            SockType::Stream,
            vec![
                Ok(enc(Response::Sent { len: 3 })),
                Ok(enc(Response::Error(Errno::EAGAIN))),
                Ok(enc(Response::Sent { len: 7 })),
            ],
        );
        assert_eq!(c.send(H, b"0123456789", MsgFlags::NONE), Ok(10));
        let reqs = c.transport().requests.borrow();
        let bufs: Vec<BufDesc> = reqs
            .iter()
            .filter_map(|(_, r)| match r {
                Request::Send { buf, .. } => Some(*buf),
                _ => None,
            })
            .collect();
        assert_eq!(bufs, vec![
            BufDesc { offset: 0, len: 10 },
            BufDesc { offset: 3, len: 7 },
            // The slot was released while waiting; the rest was copied again.
            BufDesc { offset: 0, len: 7 },
        ]);
        assert_eq!(c.transport().waits.get(), 1);
    }

    #[test]
    fn unknown_handles_are_ebadf_without_a_round_trip() {
        let c = Client::new(Script::new(vec![Ok(hello(1))])).unwrap();
        let before = c.round_trips();
        let mut b = [0u8; 1];
        assert_eq!(c.recv(H, &mut b, MsgFlags::NONE), Err(Errno::EBADF));
        assert_eq!(c.send(H, b"x", MsgFlags::NONE), Err(Errno::EBADF));
        assert_eq!(c.round_trips(), before);
    }

    #[test]
    fn poll_reply_with_wrong_length_is_eproto() {
        let mut short = net_api::PollReady::new();
        short.push(PollEvents::IN).unwrap();
        let c = client_with_socket(SockType::Datagram, vec![Ok(enc(Response::Poll { revents: alloc::boxed::Box::new(short) }))]);
        let mut fds = [PollFd::new(H, PollEvents::IN), PollFd::new(H, PollEvents::OUT)];
        assert_eq!(c.poll(&mut fds, Some(Duration::ZERO)), Err(Errno::EPROTO));
    }

    #[test]
    fn small_messages_fit() {
        use net_api::codec::encode_response;
        use net_api::{BufDesc, Domain, Errno, ServerInfo, Shutdown, SockOpt, SockOptValue};
        let h = SocketHandle { index: u32::MAX, generation: u32::MAX };
        let a = SockAddr::V6(net_api::SockAddrV6 { ip: [0xff; 16], port: u16::MAX, flowinfo: u32::MAX, scope_id: u32::MAX });
        let buf = BufDesc { offset: u32::MAX, len: u32::MAX };
        let flags = MsgFlags(u32::MAX);
        let reqs = [
            Request::Hello { version: u16::MAX },
            Request::Socket { domain: Domain::Inet6, ty: SockType::Datagram },
            Request::Bind { handle: h, addr: a },
            Request::Listen { handle: h, backlog: u32::MAX },
            Request::Accept { handle: h },
            Request::Connect { handle: h, addr: a },
            Request::Send { handle: h, buf, flags, to: Some(a) },
            Request::Recv { handle: h, buf, flags },
            Request::Shutdown { handle: h, how: Shutdown::Both },
            Request::Close { handle: h },
            Request::GetSockName { handle: h },
            Request::GetPeerName { handle: h },
            Request::SetSockOpt { handle: h, value: SockOptValue::SndBuf(u32::MAX) },
            Request::GetSockOpt { handle: h, opt: SockOpt::Error },
            Request::WakeAfter { micros: u64::MAX },
        ];
        for r in &reqs {
            let mut out = [0u8; SMALL_MSG];
            assert!(encode_request(u32::MAX, r, &mut out).is_ok(), "{r:?} does not fit {SMALL_MSG} bytes");
        }
        let info = ServerInfo {
            version: u16::MAX,
            epoch: u32::MAX,
            layout: DataAreaLayout { slot_size: u32::MAX, tx_slots: u16::MAX, rx_slots: u16::MAX },
        };
        let resps = [
            Response::Error(Errno::ServerRestarted),
            Response::Ok,
            Response::Hello(info),
            Response::Socket(h),
            Response::Accepted { handle: h, peer: a },
            Response::Sent { len: u32::MAX },
            Response::Received { len: u32::MAX, from: Some(a) },
            Response::Addr(a),
            Response::SockOpt(SockOptValue::Error(Some(Errno::ServerRestarted))),
            Response::SockOpt(SockOptValue::RcvBuf(u32::MAX)),
        ];
        for r in &resps {
            let mut out = [0u8; SMALL_MSG];
            assert!(encode_response(r, &mut out).is_ok(), "{r:?} does not fit {SMALL_MSG} bytes");
        }
    }
}
