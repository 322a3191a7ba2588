//! A worker: one smoltcp stack instance on one thread.
//!
//! smoltcp's `Interface::poll` needs `&mut` the whole `SocketSet`, so a set cannot be shared by
//! threads with per-socket locks. Instead every worker owns a complete stack (interface, neighbour
//! cache, socket set) for the same addresses, and flows are steered to workers by their 4-tuple
//! ([`crate::steer`]). Nothing in a worker is locked: the smoltcp sockets (the PCBs) are touched by
//! this thread only. Other threads reach them by posting commands to the worker's mailbox.
//!
//! # One loop iteration ([`Worker::poll`])
//!
//! 1. Take every command from the mailbox and execute it (create/close/abort connections,
//!    install/remove listeners, open UDP sockets, set options).
//! 2. Ingress, **at most `ingress_budget` frames**: each frame is classified first (SYN to a
//!    full listener: dropped; duplicate SYN of a known flow: dropped; SYN reusing a TIME-WAIT
//!    flow's tuple: the old flow goes), then handed to smoltcp. After a SYN reached a listener the
//!    worker turns the listening smoltcp socket that took it into an embryonic flow and puts a
//!    fresh listening socket in its place, so the next SYN finds one (smoltcp has no backlog).
//! 3. Pump: for every flow, move received bytes from smoltcp into the socket's receive buffer
//!    and queued bytes from the socket's send buffer into smoltcp, notice state changes
//!    (established, reset, closed, TIME-WAIT), complete handshakes into accept queues, and wake
//!    waiting clients.
//! 4. Egress and **timers**: `poll_egress` dispatches every socket (retransmissions, delayed
//!    ACKs, keep-alives, TIME-WAIT expiry), a bounded number of rounds.
//! 5. Decide how long to sleep: not at all if frames or commands are waiting, else until
//!    smoltcp's next timer or a TIME-WAIT deadline, or until signalled.
//!
//! Because step 2 is bounded, step 4 runs at least once per `ingress_budget` frames however
//! fast frames arrive: a flood on one socket cannot starve another socket's timers (the NetBSD
//! seed's softint starvation). `tests/timers.rs` shows it.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;

use net_api::{Errno, SockType};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{tcp, udp};
use smoltcp::time::{Duration as SDuration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::lock::RawLock;
use crate::platform::{FrameRx, FrameTx};
use crate::port::{Family, PortGuard};
use crate::server::{Cmd, Server, Shared};
use crate::socket::{Datagram, Options, Pcb, Phase, Socket};
use crate::stats::Counter;
use crate::steer::{classify, FrameInfo};
use crate::sync::Ordering;
use crate::wake::{Wait, HUP, IN, OUT};

const EGRESS_ROUNDS: usize = 64;
const ABORT_LINGER: SDuration = SDuration::from_millis(2000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FState {
    /// SYN received on a listening socket; holds a reservation in the listener's queue.
    Embryonic,
    /// Our SYN sent.
    Connecting,
    /// Established (or closing gracefully).
    Open,
    /// Reset sent or being sent; removed once smoltcp forgot the tuple.
    Aborting(Instant),
}

struct Flow<R: RawLock> {
    handle: SocketHandle,
    udp: bool,
    tuple: Option<(IpEndpoint, IpEndpoint)>,
    /// The protocol reference to the socket (None once detached: closed by its owner).
    sock: Option<Arc<Socket<R>>>,
    port: Option<PortGuard<R>>,
    listener: Option<u64>,
    state: FState,
    close: bool,
    shut_wr: bool,
    fin_sent: bool,
    rst_seen: bool,
    tw_deadline: Option<Instant>,
    orphan_deadline: Option<Instant>,
}

struct WListener<R: RawLock> {
    sock: Arc<Socket<R>>,
    endpoint: IpListenEndpoint,
    family: Family,
    port: PortGuard<R>,
    opts: Options,
    idle: Option<SocketHandle>,
}

/// Size of a flow record with its two map entries (flow id and 4-tuple), for [`crate::Footprint`].
pub(crate) fn flow_record_size<R: RawLock>() -> usize {
    use core::mem::size_of;
    // BTreeMap nodes hold up to 11 entries; count one entry's share of key + value, plus the
    // node's bookkeeping amortized (about 2 words per entry).
    size_of::<(u64, Flow<R>)>() + size_of::<((IpEndpoint, IpEndpoint), u64)>() + 4 * size_of::<usize>()
}

/// One smoltcp stack instance and the flows steered to it.
pub struct Worker<R: RawLock, Rx: FrameRx, Tx: FrameTx> {
    index: usize,
    shared: Arc<Shared<R>>,
    iface: Interface,
    sockets: SocketSet<'static>,
    rx: Rx,
    tx: Tx,
    flows: BTreeMap<u64, Flow<R>>,
    tuples: BTreeMap<(IpEndpoint, IpEndpoint), u64>,
    listeners: BTreeMap<u64, WListener<R>>,
    listen_ports: BTreeMap<(Family, u16), u64>,
    cmds: VecDeque<Cmd<R>>,
    reap: Vec<u64>,
}

struct Dev<'a, Rx, Tx> {
    rx: &'a mut Rx,
    tx: &'a mut Tx,
    sent: usize,
}

struct RxTok<'a, Rx>(&'a mut Rx);
struct TxTok<'a, Tx> {
    tx: &'a mut Tx,
    sent: &'a mut usize,
}

impl<Rx: FrameRx> RxToken for RxTok<'_, Rx> {
    fn consume<T, F: FnOnce(&[u8]) -> T>(self, f: F) -> T {
        let mut f = Some(f);
        let mut out = None;
        self.0.recv(|frame| {
            if let Some(f) = f.take() {
                out = Some(f(frame));
            }
        });
        match (out, f) {
            (Some(v), _) => v,
            // No frame after all: smoltcp ignores an empty one.
            (None, Some(f)) => f(&[]),
            (None, None) => unreachable!("the closure ran, so it produced a value"),
        }
    }
}

impl<Tx: FrameTx> TxToken for TxTok<'_, Tx> {
    fn consume<T, F: FnOnce(&mut [u8]) -> T>(self, len: usize, f: F) -> T {
        let mut f = Some(f);
        let mut out = None;
        self.tx.send(len, |buf| {
            if let Some(f) = f.take() {
                out = Some(f(buf));
            }
        });
        match (out, f) {
            (Some(v), _) => {
                *self.sent += 1;
                v
            }
            // No transmit buffer after all: build the frame in scratch memory and drop it
            // (TCP retransmits; it is never worse than a lost frame).
            (None, Some(f)) => f(&mut alloc::vec![0u8; len]),
            (None, None) => unreachable!("the closure ran, so it produced a value"),
        }
    }
}

impl<Rx: FrameRx, Tx: FrameTx> Device for Dev<'_, Rx, Tx> {
    type RxToken<'b>
        = RxTok<'b, Rx>
    where
        Self: 'b;
    type TxToken<'b>
        = TxTok<'b, Tx>
    where
        Self: 'b;

    fn receive(&mut self, _t: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.rx.pending() {
            return None;
        }
        Some((RxTok(self.rx), TxTok { tx: self.tx, sent: &mut self.sent }))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Self::TxToken<'_>> {
        if !self.tx.can_send() {
            return None;
        }
        Some(TxTok { tx: self.tx, sent: &mut self.sent })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.tx.max_frame().max(64);
        c
    }
}

fn family_of(ep: &IpEndpoint) -> Family {
    match ep.addr {
        IpAddress::Ipv4(_) => Family::V4,
        IpAddress::Ipv6(_) => Family::V6,
    }
}

impl<R: RawLock> Server<R> {
    /// Builds worker `index` over its frame queues. Each index can be built once.
    pub fn worker<Rx: FrameRx, Tx: FrameTx>(&self, index: usize, rx: Rx, tx: Tx) -> Result<Worker<R, Rx, Tx>, Errno> {
        let port = self.inner.workers.get(index).ok_or(Errno::EINVAL)?;
        if port.claimed.swap(true, Ordering::SeqCst) {
            return Err(Errno::EBUSY);
        }
        Worker::new(self.inner.clone(), index, rx, tx)
    }
}

impl<R: RawLock, Rx: FrameRx, Tx: FrameTx> Worker<R, Rx, Tx> {
    fn new(shared: Arc<Shared<R>>, index: usize, mut rx: Rx, mut tx: Tx) -> Result<Self, Errno> {
        let cfg = &shared.cfg;
        let mac = EthernetAddress(cfg.mac);
        if !mac.is_unicast() {
            return Err(Errno::EINVAL);
        }
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = cfg.seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let now = Instant::from_micros(shared.clock.now_micros() as i64);
        let mut iface = {
            let mut dev = Dev { rx: &mut rx, tx: &mut tx, sent: 0 };
            Interface::new(config, &mut dev, now)
        };
        iface.update_ip_addrs(|addrs| {
            if let Some((a, p)) = cfg.ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(a), p));
            }
            if let Some((a, p)) = cfg.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(a), p));
            }
        });
        if let Some(g) = cfg.gateway4 {
            let _ = iface.routes_mut().add_default_ipv4_route(g);
        }
        if let Some(g) = cfg.gateway6 {
            let _ = iface.routes_mut().add_default_ipv6_route(g);
        }
        Ok(Worker {
            index,
            shared,
            iface,
            sockets: SocketSet::new(Vec::new()),
            rx,
            tx,
            flows: BTreeMap::new(),
            tuples: BTreeMap::new(),
            listeners: BTreeMap::new(),
            listen_ports: BTreeMap::new(),
            cmds: VecDeque::new(),
            reap: Vec::new(),
        })
    }

    /// This worker's index.
    pub fn index(&self) -> usize {
        self.index
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.shared.clock.now_micros() as i64)
    }

    fn tcp_socket(&self) -> tcp::Socket<'static> {
        let n = self.shared.cfg.tcp_buffer;
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(alloc::vec![0u8; n]),
            tcp::SocketBuffer::new(alloc::vec![0u8; n]),
        );
        s.set_timeout(Some(to_sduration(self.shared.cfg.connect_timeout)));
        s
    }


    /// One loop iteration (see the module docs). Returns how long the worker may sleep before
    /// the next one: `Some(0)` for "go again now", `None` for "until signalled".
    pub fn poll(&mut self) -> Option<core::time::Duration> {
        let shared = self.shared.clone();
        let _big = shared.big_lock();
        let now = self.now();
        shared.stats.inc(self.index, Counter::worker_iterations);

        // 1. Commands.
        if let Some(port) = shared.workers.get(self.index) {
            core::mem::swap(&mut *port.mailbox.lock(), &mut self.cmds);
        }
        while let Some(cmd) = self.cmds.pop_front() {
            self.exec(cmd, now);
        }

        // 2. Ingress, bounded.
        let mut frames = 0;
        while frames < shared.cfg.ingress_budget && self.ingress_one(now) {
            frames += 1;
        }
        if frames > 0 {
            shared.stats.add(self.index, Counter::frames_in, frames as u64);
        }

        // 3. Pump data and state between smoltcp and the sockets.
        self.pump_all(now);

        // 4. Egress and timers, bounded.
        let mut dev = Dev { rx: &mut self.rx, tx: &mut self.tx, sent: 0 };
        for _ in 0..EGRESS_ROUNDS {
            if self.iface.poll_egress(now, &mut dev, &mut self.sockets) == PollResult::None {
                break;
            }
        }
        let sent = dev.sent;
        if sent > 0 {
            shared.stats.add(self.index, Counter::frames_out, sent as u64);
        }
        if let Some(port) = shared.workers.get(self.index) {
            port.flows.store(self.flows.len(), Ordering::Relaxed);
            let tcp = self.flows.values().filter(|f| !f.udp).count();
            let idle = self.listeners.values().filter(|l| l.idle.is_some()).count();
            port.tcp.store(tcp, Ordering::Relaxed);
            port.sockets.store(self.flows.len() + idle, Ordering::Relaxed);
        }

        // 5. How long may we sleep?
        if self.rx.pending() || frames >= shared.cfg.ingress_budget {
            return Some(core::time::Duration::ZERO);
        }
        let mut delay = self.iface.poll_delay(now, &self.sockets).map(to_core);
        for f in self.flows.values() {
            let d = match (f.state, f.tw_deadline.or(f.orphan_deadline)) {
                (FState::Aborting(_), _) => Some(core::time::Duration::from_millis(1)),
                (_, Some(t)) => Some(to_core(if t > now { t - now } else { SDuration::ZERO })),
                _ => None,
            };
            if let Some(d) = d {
                delay = Some(delay.map_or(d, |x| x.min(d)));
            }
        }
        delay
    }

    /// Runs the loop until `stop` is set, sleeping on `wake` (which the server signals when it
    /// posts work or a client frees buffer space, and the frame queue signals when frames arrive).
    pub fn run(&mut self, wake: &dyn Wait, stop: &core::sync::atomic::AtomicBool) {
        while !stop.load(core::sync::atomic::Ordering::Acquire) {
            match self.poll() {
                Some(d) if d.is_zero() => {}
                d => {
                    wake.wait(d);
                }
            }
        }
    }

    fn exec(&mut self, cmd: Cmd<R>, now: Instant) {
        match cmd {
            Cmd::Connect { sock, local, remote, port, opts } => {
                let id = sock.id;
                if self.tuples.contains_key(&(local, remote)) {
                    self.shared.connection_gone(&sock, Some(Errno::EADDRINUSE));
                    return;
                }
                let mut s = self.tcp_socket();
                apply_opts(&self.shared.cfg, &mut s, &opts);
                if s.connect(self.iface.context(), remote, local).is_err() {
                    self.shared.connection_gone(&sock, Some(Errno::ENETUNREACH));
                    return;
                }
                let handle = self.sockets.add(s);
                self.tuples.insert((local, remote), id);
                self.flows.insert(
                    id,
                    Flow {
                        handle,
                        udp: false,
                        tuple: Some((local, remote)),
                        sock: Some(sock),
                        port: Some(port),
                        listener: None,
                        state: FState::Connecting,
                        close: false,
                        shut_wr: false,
                        fin_sent: false,
                        rst_seen: false,
                        tw_deadline: None,
                        orphan_deadline: None,
                    },
                );
            }
            Cmd::Listen { sock, endpoint, port, opts } => {
                let family = match endpoint.addr {
                    Some(IpAddress::Ipv6(_)) => Family::V6,
                    _ => sock.family,
                };
                let key = (family, endpoint.port);
                // A listener replaced by a new one on the same port (SO_REUSEADDR restart).
                if let Some(old) = self.listen_ports.insert(key, sock.id) {
                    if old != sock.id {
                        self.unlisten(old, now);
                        self.listen_ports.insert(key, sock.id);
                    }
                }
                let idle = self.new_listen_socket(endpoint, &opts);
                self.listeners.insert(sock.id, WListener { sock, endpoint, family, port, opts, idle });
            }
            Cmd::Unlisten { listener } => self.unlisten(listener, now),
            Cmd::UdpOpen { sock, endpoint } => {
                let n = self.shared.cfg.udp_buffer;
                let k = self.shared.cfg.udp_packets.max(1);
                let mut s = udp::Socket::new(
                    udp::PacketBuffer::new(alloc::vec![udp::PacketMetadata::EMPTY; k], alloc::vec![0u8; n]),
                    udp::PacketBuffer::new(alloc::vec![udp::PacketMetadata::EMPTY; k], alloc::vec![0u8; n]),
                );
                if s.bind(endpoint).is_err() {
                    self.shared.connection_gone(&sock, Some(Errno::EADDRNOTAVAIL));
                    return;
                }
                let handle = self.sockets.add(s);
                self.flows.insert(
                    sock.id,
                    Flow {
                        handle,
                        udp: true,
                        tuple: None,
                        sock: Some(sock),
                        port: None,
                        listener: None,
                        state: FState::Open,
                        close: false,
                        shut_wr: false,
                        fin_sent: false,
                        rst_seen: false,
                        tw_deadline: None,
                        orphan_deadline: None,
                    },
                );
            }
            Cmd::Close { flow, abort } => {
                let Some(f) = self.flows.get_mut(&flow) else { return };
                if f.udp {
                    // Datagrams queued before the close still go out (they were accepted): move
                    // them into smoltcp now; the flow goes once smoltcp has sent them.
                    f.close = true;
                    f.state = FState::Aborting(now);
                    self.pump_udp(flow, now);
                    if let Some(f) = self.flows.get_mut(&flow) {
                        f.sock = None;
                    }
                    return;
                }
                let s = self.sockets.get_mut::<tcp::Socket>(f.handle);
                if abort || s.recv_queue() > 0 || f.state == FState::Connecting {
                    s.abort();
                    f.state = FState::Aborting(now);
                    f.sock = None;
                    self.shared.stats.inc(self.index, Counter::tcp_resets);
                } else {
                    f.close = true;
                }
            }
            Cmd::ShutdownWrite { flow } => {
                if let Some(f) = self.flows.get_mut(&flow) {
                    f.shut_wr = true;
                }
            }
            Cmd::SetOptions { flow, opts } => {
                if let Some(f) = self.flows.get(&flow) {
                    if !f.udp {
                        apply_opts(&self.shared.cfg, self.sockets.get_mut::<tcp::Socket>(f.handle), &opts);
                    }
                }
            }
        }
    }

    fn new_listen_socket(&mut self, endpoint: IpListenEndpoint, opts: &Options) -> Option<SocketHandle> {
        let mut s = self.tcp_socket();
        apply_opts(&self.shared.cfg, &mut s, opts);
        s.listen(endpoint).ok()?;
        Some(self.sockets.add(s))
    }

    fn unlisten(&mut self, id: u64, now: Instant) {
        let Some(l) = self.listeners.remove(&id) else { return };
        if let Some(h) = l.idle {
            self.sockets.remove(h);
        }
        let key = (l.family, l.endpoint.port);
        if self.listen_ports.get(&key) == Some(&id) {
            self.listen_ports.remove(&key);
        }
        // Embryonic connections of this listener are reset.
        let embryonic: Vec<u64> = self.flows.iter().filter(|(_, f)| f.listener == Some(id)).map(|(k, _)| *k).collect();
        for fid in embryonic {
            if let Some(f) = self.flows.get_mut(&fid) {
                self.sockets.get_mut::<tcp::Socket>(f.handle).abort();
                f.state = FState::Aborting(now);
                f.listener = None;
            }
        }
        drop(l);
    }

    /// Takes one frame in; false when none was waiting.
    fn ingress_one(&mut self, now: Instant) -> bool {
        let Some(info) = self.rx.peek(classify) else { return false };
        let mut reserved: Option<u64> = None;
        if let FrameInfo::Tcp { local, remote, syn, ack, rst } = info {
            let pure_syn = syn && !ack;
            if let Some(&fid) = self.tuples.get(&(local, remote)) {
                let mut assassinate = false;
                if let Some(f) = self.flows.get_mut(&fid) {
                    if rst {
                        f.rst_seen = true;
                    }
                    if pure_syn {
                        let st = self.sockets.get::<tcp::Socket>(f.handle).state();
                        if st == tcp::State::TimeWait {
                            assassinate = true;
                        } else {
                            // A retransmitted SYN of a connection we already track: the flow's own
                            // SYN-ACK retransmission answers it; a listening socket must not.
                            self.drop_frame();
                            return true;
                        }
                    }
                }
                if assassinate {
                    self.remove_flow(fid);
                }
            }
            if pure_syn && !self.tuples.contains_key(&(local, remote)) {
                if let Some(&lid) = self.listen_ports.get(&(family_of(&local), local.port)) {
                    let ok = match self.listeners.get(&lid) {
                        Some(l) if l.idle.is_some() => {
                            l.sock.listen.lock().as_mut().is_some_and(|q| q.queue.try_reserve())
                        }
                        _ => false,
                    };
                    if !ok {
                        self.shared.stats.inc(self.index, Counter::syn_backlog_drops);
                        self.drop_frame();
                        return true;
                    }
                    reserved = Some(lid);
                }
            }
        }
        let mut dev = Dev { rx: &mut self.rx, tx: &mut self.tx, sent: 0 };
        let _ = self.iface.poll_ingress_single(now, &mut dev, &mut self.sockets);
        if dev.sent > 0 {
            self.shared.stats.add(self.index, Counter::frames_out, dev.sent as u64);
        }
        if let Some(lid) = reserved {
            self.after_syn(lid);
        }
        true
    }

    fn drop_frame(&mut self) {
        self.rx.recv(|_| ());
        self.shared.stats.inc(self.index, Counter::frames_filtered);
    }

    /// A SYN was let through to listener `lid` with a reservation: if its listening socket took
    /// it, that socket becomes an embryonic flow holding the reservation and a fresh listening
    /// socket replaces it; otherwise the reservation is given back.
    fn after_syn(&mut self, lid: u64) {
        let Some(l) = self.listeners.get(&lid) else { return };
        let Some(idle) = l.idle else { return };
        let s = self.sockets.get::<tcp::Socket>(idle);
        let tuple = match (s.state() != tcp::State::Listen, s.local_endpoint(), s.remote_endpoint()) {
            (true, Some(a), Some(b)) => Some((a, b)),
            _ => None,
        };
        let Some(tuple) = tuple else {
            if let Some(q) = l.sock.listen.lock().as_mut() {
                q.queue.cancel();
            }
            return;
        };
        let (endpoint, opts, port) = (l.endpoint, l.opts, l.port.share());
        let id = self.shared.next_id(self.index + 1);
        self.tuples.insert(tuple, id);
        self.flows.insert(
            id,
            Flow {
                handle: idle,
                udp: false,
                tuple: Some(tuple),
                sock: None,
                port: Some(port),
                listener: Some(lid),
                state: FState::Embryonic,
                close: false,
                shut_wr: false,
                fin_sent: false,
                rst_seen: false,
                tw_deadline: None,
                orphan_deadline: None,
            },
        );
        let fresh = self.new_listen_socket(endpoint, &opts);
        if let Some(l) = self.listeners.get_mut(&lid) {
            l.idle = fresh;
        }
    }

    fn remove_flow(&mut self, id: u64) {
        if let Some(f) = self.flows.remove(&id) {
            if let Some(t) = f.tuple {
                if self.tuples.get(&t) == Some(&id) {
                    self.tuples.remove(&t);
                }
            }
            if let Some(lid) = f.listener {
                if let Some(l) = self.listeners.get(&lid) {
                    if let Some(q) = l.sock.listen.lock().as_mut() {
                        q.queue.cancel();
                    }
                }
            }
            self.sockets.remove(f.handle);
            if let Some(sock) = &f.sock {
                let err = if f.udp { None } else { Some(Errno::ECONNABORTED) };
                self.shared.connection_gone(sock, err);
            }
            // Dropping `f` drops the port reference and the protocol reference, in that order.
            drop(f);
        }
    }

    fn pump_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.flows.keys().copied().collect();
        for id in ids {
            let remove = if self.flows.get(&id).is_some_and(|f| f.udp) { self.pump_udp(id, now) } else { self.pump_tcp(id, now) };
            if remove {
                self.reap.push(id);
            }
        }
        while let Some(id) = self.reap.pop() {
            self.remove_flow(id);
        }
    }

    fn pump_udp(&mut self, id: u64, now: Instant) -> bool {
        let Some(f) = self.flows.get_mut(&id) else { return false };
        let s = self.sockets.get_mut::<udp::Socket>(f.handle);
        let Some(sock) = f.sock.clone() else {
            return match f.state {
                FState::Aborting(since) => s.send_queue() == 0 || now - since > ABORT_LINGER,
                _ => true,
            };
        };
        let stats = &self.shared.stats;
        let mut bits = 0;
        {
            let mut rx = sock.rx.lock();
            while s.can_recv() {
                if !rx.dgrams.has_space() {
                    break;
                }
                match s.recv() {
                    Ok((data, meta)) => {
                        if rx.dgrams.fits(data.len()) {
                            rx.dgrams.push(Datagram { peer: meta.endpoint, data: data.to_vec() });
                            stats.inc(self.index, Counter::udp_in);
                        } else {
                            stats.inc(self.index, Counter::udp_drops);
                        }
                    }
                    Err(_) => break,
                }
            }
            if !rx.dgrams.is_empty() {
                bits |= sock.wake.mark(IN);
            }
        }
        {
            let mut tx = sock.tx.lock();
            while let Some(d) = tx.dgrams.pop() {
                match s.send_slice(&d.data, d.peer) {
                    Ok(()) => stats.inc(self.index, Counter::udp_out),
                    Err(udp::SendError::BufferFull) => {
                        tx.dgrams.push_front(d);
                        break;
                    }
                    Err(udp::SendError::Unaddressable) => stats.inc(self.index, Counter::udp_drops),
                }
            }
            if tx.dgrams.has_space() {
                bits |= sock.wake.mark(OUT);
            }
        }
        sock.wake.wake(bits);
        false
    }

    /// Returns true when the flow should be removed.
    fn pump_tcp(&mut self, id: u64, now: Instant) -> bool {
        let Some(f) = self.flows.get_mut(&id) else { return false };
        let s = self.sockets.get_mut::<tcp::Socket>(f.handle);
        let st = s.state();
        match f.state {
            FState::Aborting(since) => {
                return st == tcp::State::Closed && s.remote_endpoint().is_none() || now - since > ABORT_LINGER;
            }
            FState::Embryonic => match st {
                tcp::State::SynReceived => return false,
                tcp::State::Listen | tcp::State::Closed => return true,
                _ => {
                    // Handshake done: a new socket for the listener's accept queue.
                    let Some(lid) = f.listener.take() else { return true };
                    let Some(l) = self.listeners.get(&lid) else {
                        s.abort();
                        f.state = FState::Aborting(now);
                        return false;
                    };
                    let mut child = Socket::new(
                        id,
                        SockType::Stream,
                        l.sock.family,
                        self.shared.cfg.socket_buffer,
                        self.shared.cfg.socket_buffer,
                        &self.shared.stats,
                    );
                    {
                        let cs = child.state.get_mut();
                        cs.phase = Phase::Connected;
                        cs.local = f.tuple.map(|t| t.0);
                        cs.remote = f.tuple.map(|t| t.1);
                        cs.pcb = Some(Pcb::Flow { worker: self.index, flow: id });
                        cs.opts = l.opts;
                    }
                    child.wake.mark(OUT);
                    let child = Arc::new(child);
                    // Counted under the listen lock, before an accept can see the child, so
                    // whoever accepted it also sees the count.
                    let res = match l.sock.listen.lock().as_mut() {
                        Some(q) => q.queue.complete(child.clone()).map(|_| {
                            self.shared.stats.inc(self.index, Counter::tcp_passive_opens);
                            l.sock.wake.mark(IN)
                        }),
                        None => Err(child.clone()),
                    };
                    match res {
                        Ok(bits) => {
                            l.sock.wake.wake(bits);
                            f.sock = Some(child);
                            f.state = FState::Open;
                        }
                        Err(_) => {
                            s.abort();
                            f.state = FState::Aborting(now);
                            return false;
                        }
                    }
                }
            },
            FState::Connecting => match st {
                tcp::State::SynSent | tcp::State::SynReceived => return false,
                tcp::State::Closed => {
                    let e = if f.rst_seen { Errno::ECONNREFUSED } else { Errno::ETIMEDOUT };
                    if let Some(sock) = f.sock.take() {
                        self.shared.connection_gone(&sock, Some(e));
                    }
                    return true;
                }
                _ => {
                    f.state = FState::Open;
                    if let Some(sock) = &f.sock {
                        let mut stt = sock.state.lock();
                        if stt.phase == Phase::Connecting {
                            stt.phase = Phase::Connected;
                        }
                    }
                }
            },
            FState::Open => {}
        }

        // How the connection ended, if it did: recorded in the receive buffer in the same
        // critical section that marks end-of-stream, so a reader never sees a plain EOF first.
        let gone = (st == tcp::State::Closed).then_some(if f.rst_seen {
            Some(Errno::ECONNRESET)
        } else if f.fin_sent {
            None
        } else {
            Some(Errno::ETIMEDOUT)
        });

        // Data.
        let mut drained = true;
        if let Some(sock) = f.sock.clone() {
            let mut bits = 0;
            {
                let mut rx = sock.rx.lock();
                if let Some(Some(e)) = gone {
                    rx.error.get_or_insert(e);
                }
                if rx.shut {
                    while s.recv(|b| (b.len(), ())).is_ok_and(|()| s.recv_queue() > 0) {}
                } else {
                    if matches!(st, tcp::State::TimeWait | tcp::State::Closed) {
                        // The connection is over and the socket is detached below: what smoltcp
                        // still holds (the stream was full) moves now or never. The stream grows
                        // by at most one smoltcp buffer for it, once.
                        rx.stream.reserve(s.recv_queue());
                    }
                    for _ in 0..2 {
                        let free = rx.stream.free();
                        if free == 0 || !s.can_recv() {
                            break;
                        }
                        let _ = s.recv(|b| {
                            let n = rx.stream.push(&b[..b.len().min(free)]);
                            (n, ())
                        });
                    }
                    rx.stalled = s.recv_queue() > 0;
                }
                if !rx.eof && !s.may_recv() && s.recv_queue() == 0 && st != tcp::State::SynSent && st != tcp::State::SynReceived {
                    rx.eof = true;
                }
                if !rx.stream.is_empty() || rx.eof {
                    bits |= sock.wake.mark(IN);
                }
            }
            {
                let mut tx = sock.tx.lock();
                while !tx.stream.is_empty() && s.can_send() {
                    let moved = s.send(|b| {
                        let n = tx.stream.pop_into(b);
                        (n, n)
                    });
                    if moved.unwrap_or(0) == 0 {
                        break;
                    }
                }
                if tx.stream.free() > 0 && s.may_send() {
                    bits |= sock.wake.mark(OUT);
                }
                drained = tx.stream.is_empty();
            }
            sock.wake.wake(bits);
        }
        if drained && (f.close || f.shut_wr) && !f.fin_sent {
            s.close();
            f.fin_sent = true;
        }
        if f.close && drained {
            // Detach: the owner closed the socket and everything it sent is in smoltcp.
            f.sock = None;
        }

        // Endings.
        match st {
            tcp::State::Closed => {
                if let Some(sock) = f.sock.take() {
                    let e = gone.flatten();
                    if f.rst_seen {
                        self.shared.stats.inc(self.index, Counter::tcp_resets);
                    }
                    self.shared.connection_gone(&sock, e);
                }
                true
            }
            tcp::State::TimeWait => {
                match f.tw_deadline {
                    None => {
                        f.tw_deadline = Some(now + to_sduration(self.shared.cfg.time_wait));
                        f.port = f.port.take().map(PortGuard::into_time_wait);
                        if let Some(sock) = f.sock.take() {
                            self.shared.connection_gone(&sock, None);
                        }
                        false
                    }
                    Some(t) => now >= t,
                }
            }
            tcp::State::FinWait2 if f.sock.is_none() => {
                // An orphan (its owner closed it) whose peer never sends FIN: give up after the
                // FIN-WAIT-2 timeout instead of holding the port forever.
                let limit = now + to_sduration(self.shared.cfg.fin_wait2_timeout);
                let deadline = *f.orphan_deadline.get_or_insert(limit);
                if now >= deadline {
                    s.abort();
                    f.state = FState::Aborting(now);
                }
                false
            }
            _ => {
                if let Some(sock) = &f.sock {
                    if !s.may_send() && !s.may_recv() {
                        let bits = sock.wake.mark(HUP);
                        sock.wake.wake(bits);
                    }
                }
                false
            }
        }
    }
}

fn to_sduration(d: core::time::Duration) -> SDuration {
    SDuration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn to_core(d: SDuration) -> core::time::Duration {
    core::time::Duration::from_micros(d.total_micros())
}

fn apply_opts(cfg: &crate::server::ServerConfig, s: &mut tcp::Socket<'static>, opts: &Options) {
    s.set_nagle_enabled(!opts.nodelay);
    s.set_keep_alive(opts.keepalive.then_some(to_sduration(cfg.keepalive_interval)));
}
