//! The server: shared state and the socket operations clients invoke.
//!
//! Every operation here runs on the caller's thread (the thread serving a client's IPC) and never
//! blocks on the network: it updates socket-layer state under the socket's own locks and posts
//! work for the protocol engine to the owning worker's mailbox. There is no global lock on any of
//! these paths (unless [`ServerConfig::global_lock`] builds the baseline): a handle is resolved in
//! the client's own table, the socket is locked on its own, ports come from a shard.

#![allow(clippy::type_complexity)]

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::time::Duration;

use net_api::{DataArea, DataAreaLayout, DataRegion, Domain, Errno, PollEntry, PollEvents, SockAddr, SockOpt,
    SockOptValue, SockType, SocketHandle};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::accept::AcceptQueue;
use crate::lock::{Binds, Global, Handles, Mailbox, Mutex, MutexGuard, RawLock, Registry};
use crate::platform::Clock;
use crate::port::{Family, PortAllocator, PortClass, PortConfig, Proto};
use crate::socket::{Datagram, ListenState, Options, Pcb, Phase, Socket};
use crate::stats::{Counter, DeviceCounters, Snapshot, Stats};
use crate::steer::Steering;
use crate::sync::{AtomicU64, AtomicUsize, CachePadded, Ordering};
use crate::table::HandleTable;
use crate::wake::{Signal, ALWAYS, ERR, HUP, IN, OUT};

/// A client, as the transport identifies it (the badge on seL4).
pub type ClientId = u64;

/// A client's shared data area, as the server sees it.
pub type Region = Arc<dyn DataRegion + Send + Sync>;

/// Server configuration.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Ethernet address (unicast).
    pub mac: [u8; 6],
    /// IPv4 address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    /// IPv6 address and prefix length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// IPv4 default gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// Worker threads (smoltcp stack instances).
    pub workers: usize,
    /// Port allocator.
    pub ports: PortConfig,
    /// smoltcp TCP buffer per direction per connection.
    pub tcp_buffer: usize,
    /// Server-side socket buffer per direction (data between client calls and the worker).
    pub socket_buffer: usize,
    /// smoltcp UDP buffer (bytes) per direction per socket.
    pub udp_buffer: usize,
    /// smoltcp UDP datagrams per direction per socket.
    pub udp_packets: usize,
    /// Largest listen backlog.
    pub max_backlog: u32,
    /// How long a connection stays in TIME-WAIT (holding its port) at this layer.
    pub time_wait: Duration,
    /// Connect and user timeout (no answer from the peer for this long aborts).
    pub connect_timeout: Duration,
    /// How long a closed connection may wait in FIN-WAIT-2 for the peer's FIN.
    pub fin_wait2_timeout: Duration,
    /// Keep-alive interval for sockets with SO_KEEPALIVE.
    pub keepalive_interval: Duration,
    /// Frames a worker takes in per loop iteration before it runs timers and egress again.
    pub ingress_budget: usize,
    /// Sockets per client.
    pub max_sockets_per_client: usize,
    /// Shards of the client registry.
    pub registry_shards: usize,
    /// Server incarnation, sent in `Hello` (never 0).
    pub epoch: u32,
    /// Data-area layout given to clients.
    pub layout: DataAreaLayout,
    /// Seed for smoltcp (ISNs) and flow steering.
    pub seed: u64,
    /// Build the single-global-lock baseline: one lock around every operation and worker step,
    /// and a port allocator with one lock.
    pub global_lock: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            mac: [0x02, 0, 0, 0, 0, 1],
            ipv4: Some((Ipv4Addr::new(10, 0, 0, 1), 24)),
            ipv6: Some((Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1), 64)),
            gateway4: None,
            gateway6: None,
            workers: 2,
            ports: PortConfig::default(),
            tcp_buffer: 64 * 1024,
            socket_buffer: 64 * 1024,
            udp_buffer: 64 * 1024,
            udp_packets: 64,
            max_backlog: 1024,
            time_wait: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(75),
            fin_wait2_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(75),
            ingress_budget: 32,
            max_sockets_per_client: 4096,
            registry_shards: 16,
            epoch: 1,
            layout: DataAreaLayout::DEFAULT,
            seed: 0x5eed,
            global_lock: false,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), Errno> {
        let mac_ok = self.mac[0] & 1 == 0 && self.mac != [0; 6];
        let v4_ok = self.ipv4.is_none_or(|(_, p)| p <= 32);
        let v6_ok = self.ipv6.is_none_or(|(_, p)| p <= 128);
        if !mac_ok
            || !v4_ok
            || !v6_ok
            || self.workers == 0
            || self.workers > 64
            || self.epoch == 0
            || self.tcp_buffer == 0
            || self.socket_buffer == 0
            || self.ingress_budget == 0
        {
            return Err(Errno::EINVAL);
        }
        self.layout.validate()
    }
}

/// Work for a worker.
pub(crate) enum Cmd<R: RawLock> {
    Connect { sock: Arc<Socket<R>>, local: IpEndpoint, remote: IpEndpoint, port: crate::port::PortGuard<R>, opts: Options },
    Listen { sock: Arc<Socket<R>>, endpoint: IpListenEndpoint, port: crate::port::PortGuard<R>, opts: Options },
    Unlisten { listener: u64 },
    UdpOpen { sock: Arc<Socket<R>>, endpoint: IpListenEndpoint },
    Close { flow: u64, abort: bool },
    ShutdownWrite { flow: u64 },
    SetOptions { flow: u64, opts: Options },
}

pub(crate) struct WorkerPort<R: RawLock> {
    pub mailbox: Mutex<Mailbox, VecDeque<Cmd<R>>, R>,
    pub signal: Arc<dyn Signal>,
    pub flows: AtomicUsize,
    /// smoltcp sockets (flows plus idle listening sockets), for `Stats`.
    pub sockets: AtomicUsize,
    /// TCP flows, for `Stats`.
    pub tcp: AtomicUsize,
    pub claimed: crate::sync::AtomicBool,
}

/// Aligned so that two clients' hot fields (reference count, table lock) never share a line.
#[repr(align(128))]
pub(crate) struct Client<R: RawLock> {
    pub signal: Arc<dyn Signal>,
    pub area: Option<DataArea<Region>>,
    pub table: Mutex<Handles, HandleTable<Arc<Socket<R>>>, R>,
    /// When (clock micros) to signal the client for `WakeAfter`; `u64::MAX`: no alarm.
    pub alarm: core::sync::atomic::AtomicU64,
}

pub(crate) struct Shared<R: RawLock> {
    pub cfg: ServerConfig,
    pub ports: PortAllocator<R>,
    pub registry: Vec<CachePadded<Mutex<Registry, BTreeMap<ClientId, Arc<Client<R>>>, R>>>,
    pub binds: Vec<CachePadded<Mutex<Binds, BTreeMap<(Family, u16), Weak<Socket<R>>>, R>>>,
    pub workers: Vec<CachePadded<WorkerPort<R>>>,
    pub stats: Arc<Stats>,
    pub device: DeviceCounters,
    pub clock: Arc<dyn Clock>,
    pub steering: Steering,
    ids: Vec<CachePadded<AtomicU64>>,
    big: Option<Mutex<Global, (), R>>,
}

const ID_STRIPES: usize = 64;

impl<R: RawLock> Shared<R> {
    /// A new unique id; `hint` picks a stripe so concurrent callers do not share a cache line.
    pub fn next_id(&self, hint: usize) -> u64 {
        let stripe = hint % ID_STRIPES;
        let n = self.ids.get(stripe).map_or(0, |c| c.fetch_add(1, Ordering::Relaxed));
        (n << 6) | stripe as u64
    }

    pub fn big_lock(&self) -> Option<MutexGuard<'_, Global, (), R>> {
        self.big.as_ref().map(|m| m.lock())
    }

    pub fn post(&self, worker: usize, cmd: Cmd<R>) {
        if let Some(w) = self.workers.get(worker) {
            w.mailbox.lock().push_back(cmd);
            w.signal.signal();
        }
    }

    pub fn kick(&self, worker: usize) {
        if let Some(w) = self.workers.get(worker) {
            w.signal.signal();
        }
    }

    fn binds_shard(&self, family: Family, port: u16) -> Option<&Mutex<Binds, BTreeMap<(Family, u16), Weak<Socket<R>>>, R>> {
        let i = usize::from(port) % self.binds.len().max(1);
        let _ = family;
        self.binds.get(i).map(|p| &p.0)
    }

    pub fn our_addr(&self, family: Family) -> Option<IpAddress> {
        match family {
            Family::V4 => self.cfg.ipv4.map(|(a, _)| IpAddress::Ipv4(a)),
            Family::V6 => self.cfg.ipv6.map(|(a, _)| IpAddress::Ipv6(a)),
        }
    }

    fn is_local(&self, addr: &IpAddress) -> bool {
        match addr {
            IpAddress::Ipv4(a) => a.is_loopback() || self.cfg.ipv4.is_some_and(|(o, _)| o == *a),
            IpAddress::Ipv6(a) => a.is_loopback() || self.cfg.ipv6.is_some_and(|(o, _)| o == *a),
        }
    }

    pub fn new_socket(&self, id: u64, ty: SockType, family: Family) -> Socket<R> {
        let cap = self.cfg.socket_buffer;
        Socket::new(id, ty, family, cap, cap, &self.stats)
    }

    /// Records that a connection is gone (worker or loopback peer): pending error, EOF, wake-ups.
    pub fn connection_gone(&self, sock: &Socket<R>, err: Option<Errno>) {
        {
            let mut st = sock.state.lock();
            if st.phase != Phase::Closed {
                st.phase = Phase::Closed;
            }
            if st.error.is_none() {
                st.error = err;
            }
            st.pcb = None;
        }
        let mut bits = {
            let mut rx = sock.rx.lock();
            rx.eof = true;
            if rx.error.is_none() {
                rx.error = err;
            }
            sock.wake.mark(IN | HUP | if err.is_some() { ERR } else { 0 })
        };
        bits |= sock.wake.mark(OUT);
        sock.wake.wake(bits | HUP);
    }
}

/// The net server. Cheap to clone (a shared reference).
pub struct Server<R: RawLock> {
    pub(crate) inner: Arc<Shared<R>>,
}

impl<R: RawLock> Clone for Server<R> {
    fn clone(&self) -> Self {
        Server { inner: self.inner.clone() }
    }
}

fn family_of(domain: Domain) -> Family {
    match domain {
        Domain::Inet => Family::V4,
        Domain::Inet6 => Family::V6,
    }
}

fn class_of(ty: SockType, family: Family) -> PortClass {
    PortClass {
        proto: match ty {
            SockType::Stream => Proto::Tcp,
            SockType::Datagram => Proto::Udp,
        },
        family,
    }
}

fn endpoint(addr: SockAddr) -> IpEndpoint {
    IpEndpoint::from(core::net::SocketAddr::from(addr))
}

fn sockaddr(ep: IpEndpoint) -> SockAddr {
    SockAddr::from(core::net::SocketAddr::from(ep))
}

fn family_of_addr(a: &IpAddress) -> Family {
    match a {
        IpAddress::Ipv4(_) => Family::V4,
        IpAddress::Ipv6(_) => Family::V6,
    }
}

fn unspecified(family: Family) -> IpAddress {
    match family {
        Family::V4 => IpAddress::Ipv4(Ipv4Addr::UNSPECIFIED),
        Family::V6 => IpAddress::Ipv6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Per-socket memory that does not depend on traffic, in bytes (see the README and the bench).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// The server socket object (locks, state, empty buffers, readiness).
    pub socket: usize,
    /// Its `Arc` header.
    pub arc_header: usize,
    /// A handle-table slot.
    pub handle_slot: usize,
    /// The worker's flow record plus its map entries (flow id and 4-tuple).
    pub flow: usize,
    /// The smoltcp TCP socket struct and its socket-set slot, buffers excluded.
    pub smoltcp_socket: usize,
}

impl Footprint {
    /// Everything.
    pub fn total(&self) -> usize {
        self.socket + self.arc_header + self.handle_slot + self.flow + self.smoltcp_socket
    }
}

impl<R: RawLock> Server<R> {
    /// A server with `worker_signals.len()` (= `cfg.workers`) workers; build each with
    /// [`Server::worker`] and run it on its own thread.
    pub fn new(cfg: ServerConfig, clock: Arc<dyn Clock>, worker_signals: Vec<Arc<dyn Signal>>) -> Result<Self, Errno> {
        cfg.validate()?;
        if worker_signals.len() != cfg.workers {
            return Err(Errno::EINVAL);
        }
        let pcfg = if cfg.global_lock { cfg.ports.global() } else { cfg.ports };
        let ports = PortAllocator::new(pcfg)?;
        let shards = cfg.registry_shards.max(1);
        let stats = Arc::new(Stats::new(cfg.workers + 16));
        let steering = Steering { workers: cfg.workers, seed: cfg.seed as u32 };
        let workers = worker_signals
            .into_iter()
            .map(|signal| {
                CachePadded(WorkerPort {
                    mailbox: Mutex::new(VecDeque::new()),
                    signal,
                    flows: AtomicUsize::new(0),
                    sockets: AtomicUsize::new(0),
                    tcp: AtomicUsize::new(0),
                    claimed: crate::sync::AtomicBool::new(false),
                })
            })
            .collect();
        let big = cfg.global_lock.then(|| Mutex::new(()));
        Ok(Server {
            inner: Arc::new(Shared {
                registry: (0..shards).map(|_| CachePadded(Mutex::new(BTreeMap::new()))).collect(),
                binds: (0..shards).map(|_| CachePadded(Mutex::new(BTreeMap::new()))).collect(),
                ids: (0..ID_STRIPES).map(|_| CachePadded(AtomicU64::new(1))).collect(),
                workers,
                ports,
                stats,
                device: DeviceCounters::default(),
                clock,
                steering,
                big,
                cfg,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    /// The steering function (the driver side uses it to pick a worker's queue for a frame).
    pub fn steering(&self) -> Steering {
        self.inner.steering
    }

    /// Statistics, summed over every stripe.
    pub fn stats(&self) -> Snapshot {
        self.inner.stats.snapshot()
    }

    /// Counters the platform shell keeps about the frame device (ring drops, driver restarts and
    /// the latest ones' details, transmit kicks); reported by [`Server::net_stats`].
    pub fn device_counters(&self) -> &DeviceCounters {
        &self.inner.device
    }

    /// The answer to `Request::Stats`: per worker frames in/out (its statistics stripe) and
    /// smoltcp sockets and TCP connections (published by the worker at the end of each
    /// iteration), ports in use, and the shell's device counters.
    pub fn net_stats(&self) -> net_api::NetStats {
        let mut workers = net_api::BoundedList::new();
        for (i, w) in self.inner.workers.iter().enumerate() {
            let s = self.inner.stats.stripe_snapshot(i);
            let entry = net_api::WorkerStats {
                packets_in: s.frames_in,
                packets_out: s.frames_out,
                sockets: w.sockets.load(Ordering::Relaxed) as u64,
                connections: w.tcp.load(Ordering::Relaxed) as u64,
            };
            if workers.push(entry).is_err() {
                break;
            }
        }
        net_api::NetStats {
            workers,
            ports_in_use: self.ports_in_use() as u64,
            ring_drops: self.inner.device.ring_drops.load(core::sync::atomic::Ordering::Relaxed),
            driver_restarts: self.inner.device.driver_restarts.load(core::sync::atomic::Ordering::Relaxed),
            tx_kicks: self.inner.device.tx_kicks.load(core::sync::atomic::Ordering::Relaxed),
            recent_restarts: self.inner.device.restarts.recent(),
        }
    }

    /// Socket objects alive (created minus freed).
    pub fn live_sockets(&self) -> u64 {
        let s = self.stats();
        s.sockets_created.saturating_sub(s.sockets_freed)
    }

    /// Flows (smoltcp sockets other than idle listeners) alive in all workers.
    pub fn live_flows(&self) -> usize {
        self.inner.workers.iter().map(|w| w.flows.load(Ordering::Relaxed)).sum()
    }

    /// Ports held (any class, TIME-WAIT included).
    pub fn ports_in_use(&self) -> usize {
        self.inner.ports.total_in_use()
    }

    /// The per-socket memory that does not depend on traffic.
    pub fn footprint() -> Footprint {
        use core::mem::size_of;
        Footprint {
            socket: size_of::<Socket<R>>(),
            arc_header: core::mem::align_of::<Socket<R>>().max(2 * size_of::<usize>()),
            handle_slot: size_of::<(u32, Option<Arc<Socket<R>>>)>() + size_of::<u32>(),
            flow: crate::worker::flow_record_size::<R>(),
            smoltcp_socket: size_of::<smoltcp::iface::SocketStorage<'static>>(),
        }
    }

    fn lookup_client(&self, c: ClientId) -> Result<Arc<Client<R>>, Errno> {
        let shard = self.inner.registry.get((c as usize) % self.inner.registry.len().max(1)).ok_or(Errno::EPERM)?;
        shard.lock().get(&c).cloned().ok_or(Errno::EPERM)
    }

    pub(crate) fn lookup(&self, c: ClientId, h: SocketHandle) -> Result<(Arc<Client<R>>, Arc<Socket<R>>), Errno> {
        let client = self.lookup_client(c)?;
        let sock = client.table.lock().get(h)?.clone();
        Ok((client, sock))
    }

    pub(crate) fn hint(c: ClientId) -> usize {
        c as usize
    }

    /// Registers a client: its identity, the signal that wakes it, and its data area (`None`
    /// for clients that only use the typed API). Re-registering replaces the previous session,
    /// closing its sockets.
    pub fn register_client(&self, c: ClientId, signal: Arc<dyn Signal>, region: Option<Region>) -> Result<(), Errno> {
        let area = match region {
            Some(r) => Some(DataArea::new(self.inner.cfg.layout, r)?),
            None => None,
        };
        let seed = (self.inner.cfg.seed as u32) ^ (c as u32).wrapping_mul(0x9e37_79b9) ^ ((c >> 32) as u32);
        let client = Arc::new(Client {
            signal,
            area,
            table: Mutex::new(HandleTable::new(seed | 1, self.inner.cfg.max_sockets_per_client)),
            alarm: core::sync::atomic::AtomicU64::new(u64::MAX),
        });
        let old = {
            let shard = self.inner.registry.get((c as usize) % self.inner.registry.len().max(1)).ok_or(Errno::EINVAL)?;
            shard.lock().insert(c, client)
        };
        if let Some(old) = old {
            self.close_all(&old);
        }
        Ok(())
    }

    /// `WakeAfter`: the client's alarm, kept at the earliest one asked for.
    pub fn wake_after(&self, c: ClientId, micros: u64) -> Result<(), Errno> {
        let client = self.lookup_client(c)?;
        let at = self.inner.clock.now_micros().saturating_add(micros);
        client.alarm.fetch_min(at, core::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// Signals every client whose `WakeAfter` alarm is due, and clears it; returns how many.
    /// The platform's timer calls it on each tick (that tick is the alarms' resolution). A
    /// client that set a later alarm meanwhile may be woken early: it re-checks its deadline and
    /// asks again, so nothing is lost.
    pub fn fire_alarms(&self) -> usize {
        use core::sync::atomic::Ordering;
        let now = self.inner.clock.now_micros();
        let mut fired = 0;
        for shard in &self.inner.registry {
            for client in shard.lock().values() {
                if client.alarm.load(Ordering::Acquire) <= now && client.alarm.swap(u64::MAX, Ordering::AcqRel) <= now {
                    client.signal.signal();
                    fired += 1;
                }
            }
        }
        fired
    }

    /// A client died (or disconnected): closes all its sockets with RST to the peers and frees
    /// their ports. Cannot fail; unknown clients are ignored.
    pub fn close_client(&self, c: ClientId) {
        let _big = self.inner.big_lock();
        let old = self
            .inner
            .registry
            .get((c as usize) % self.inner.registry.len().max(1))
            .and_then(|shard| shard.lock().remove(&c));
        if let Some(old) = old {
            self.close_all(&old);
        }
    }

    fn close_all(&self, client: &Client<R>) {
        let socks = client.table.lock().drain();
        for s in socks {
            self.close_socket(&s, true);
        }
    }

    pub(crate) fn client_area(&self, c: ClientId) -> Result<Arc<Client<R>>, Errno> {
        self.lookup_client(c)
    }

    /// Arms a wake-up of client `c` for `bits` on `h`, signalling at once if already ready.
    pub fn arm(&self, c: ClientId, h: SocketHandle, bits: u32) {
        if let Ok((client, sock)) = self.lookup(c, h) {
            if sock.wake.arm(bits, &client.signal) != 0 {
                client.signal.signal();
            }
        }
    }

    /// `socket(2)`.
    pub fn socket(&self, c: ClientId, domain: Domain, ty: SockType) -> Result<SocketHandle, Errno> {
        let _big = self.inner.big_lock();
        let family = family_of(domain);
        if self.inner.our_addr(family).is_none() {
            return Err(Errno::EAFNOSUPPORT);
        }
        let client = self.lookup_client(c)?;
        let sock = Arc::new(self.inner.new_socket(self.inner.next_id(Self::hint(c)), ty, family));
        let h = client.table.lock().insert(sock)?;
        self.inner.stats.inc(Self::hint(c), Counter::requests);
        Ok(h)
    }

    /// `bind(2)`: port 0 picks an ephemeral port.
    pub fn bind(&self, c: ClientId, h: SocketHandle, addr: SockAddr) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        let ep = endpoint(addr);
        if family_of_addr(&ep.addr) != sock.family {
            return Err(Errno::EAFNOSUPPORT);
        }
        if !ep.addr.is_unspecified() && !self.inner.is_local(&ep.addr) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let mut st = sock.state.lock();
        if st.port.is_some() || st.phase != Phase::Open {
            return Err(Errno::EINVAL);
        }
        self.bind_locked(&sock, &mut st, ep, Self::hint(c))
    }

    fn bind_locked(&self, sock: &Arc<Socket<R>>, st: &mut crate::socket::SockState<R>, ep: IpEndpoint, hint: usize) -> Result<(), Errno> {
        let class = class_of(sock.ty, sock.family);
        let guard = self.inner.ports.bind(class, ep.port, st.opts.reuse_addr, hint)?;
        self.inner.stats.inc(hint, Counter::ports_allocated);
        let local = IpEndpoint::new(ep.addr, guard.port());
        st.local = Some(local);
        st.phase = Phase::Bound;
        if sock.ty == SockType::Datagram {
            let worker = self.inner.steering.udp(sock.family, guard.port());
            st.pcb = Some(Pcb::Flow { worker, flow: sock.id });
            let lep = IpListenEndpoint {
                addr: if ep.addr.is_unspecified() { None } else { Some(ep.addr) },
                port: guard.port(),
            };
            self.inner.post(worker, Cmd::UdpOpen { sock: sock.clone(), endpoint: lep });
        }
        st.port = Some(guard);
        Ok(())
    }

    /// `listen(2)`.
    pub fn listen(&self, c: ClientId, h: SocketHandle, backlog: u32) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        if sock.ty != SockType::Stream {
            return Err(Errno::EOPNOTSUPP);
        }
        let limit = backlog.clamp(1, self.inner.cfg.max_backlog.max(1)) as usize;
        let mut st = sock.state.lock();
        match st.phase {
            Phase::Listening => {
                if let Some(l) = sock.listen.lock().as_mut() {
                    l.queue.set_limit(limit);
                }
                return Ok(());
            }
            Phase::Open => {
                let any = IpEndpoint::new(unspecified(sock.family), 0);
                self.bind_locked(&sock, &mut st, any, Self::hint(c))?;
            }
            Phase::Bound => {}
            _ => return Err(Errno::EINVAL),
        }
        let local = st.local.ok_or(Errno::EINVAL)?;
        let port = st.port.as_mut().ok_or(Errno::EINVAL)?;
        port.listen()?;
        let share_for_loop = port.share();
        let mut shares: Vec<_> = (0..self.inner.workers.len()).map(|_| port.share()).collect();
        *sock.listen.lock() = Some(ListenState { queue: AcceptQueue::new(limit), port: Some(share_for_loop) });
        st.phase = Phase::Listening;
        if let Some(b) = self.inner.binds_shard(sock.family, local.port) {
            b.lock().insert((sock.family, local.port), Arc::downgrade(&sock));
        }
        let addr = if local.addr.is_unspecified() { self.inner.our_addr(sock.family) } else { Some(local.addr) };
        let endpoint = IpListenEndpoint { addr, port: local.port };
        for w in (0..self.inner.workers.len()).rev() {
            if let Some(port) = shares.pop() {
                self.inner.post(w, Cmd::Listen { sock: sock.clone(), endpoint, port, opts: st.opts });
            }
        }
        Ok(())
    }

    /// `accept(2)`: `EAGAIN` when nothing is pending.
    pub fn accept(&self, c: ClientId, h: SocketHandle) -> Result<(SocketHandle, SockAddr), Errno> {
        let _big = self.inner.big_lock();
        let (client, sock) = self.lookup(c, h)?;
        let child = {
            let mut l = sock.listen.lock();
            let l = l.as_mut().ok_or(Errno::EINVAL)?;
            let child = l.queue.pop();
            if l.queue.is_empty() {
                sock.wake.clear(IN);
            }
            child
        };
        let child = child.ok_or(Errno::EAGAIN)?;
        let peer = child.state.lock().remote.map(sockaddr).ok_or(Errno::ECONNABORTED)?;
        let inserted = client.table.lock().insert(child.clone());
        match inserted {
            Ok(handle) => Ok((handle, peer)),
            Err(e) => {
                self.close_socket(&child, true);
                Err(e)
            }
        }
    }

    /// `connect(2)`.
    pub fn connect(&self, c: ClientId, h: SocketHandle, addr: SockAddr) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        let remote = endpoint(addr);
        if family_of_addr(&remote.addr) != sock.family {
            return Err(Errno::EAFNOSUPPORT);
        }
        if remote.addr.is_unspecified() || remote.port == 0 {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let mut st = sock.state.lock();
        if sock.ty == SockType::Datagram {
            if st.port.is_none() {
                let any = IpEndpoint::new(unspecified(sock.family), 0);
                self.bind_locked(&sock, &mut st, any, Self::hint(c))?;
            }
            st.remote = Some(remote);
            st.phase = Phase::Connected;
            return Ok(());
        }
        match st.phase {
            Phase::Connecting => return Err(Errno::EALREADY),
            Phase::Connected => return Err(Errno::EISCONN),
            Phase::Listening => return Err(Errno::EINVAL),
            Phase::Closed => return Err(st.error.take().unwrap_or(Errno::ECONNABORTED)),
            Phase::Open | Phase::Bound => {}
        }
        let our = self.inner.our_addr(sock.family).ok_or(Errno::EAFNOSUPPORT)?;
        if self.inner.is_local(&remote.addr) {
            return self.connect_loopback(&sock, &mut st, remote, Self::hint(c));
        }
        let port = match st.port.take() {
            Some(p) => p,
            None => {
                let g = self.inner.ports.ephemeral(class_of(sock.ty, sock.family), Self::hint(c), st.opts.reuse_addr)?;
                self.inner.stats.inc(Self::hint(c), Counter::ports_allocated);
                g
            }
        };
        let local = IpEndpoint::new(our, port.port());
        let worker = self.inner.steering.tcp(local, remote);
        st.local = Some(local);
        st.remote = Some(remote);
        st.phase = Phase::Connecting;
        st.pcb = Some(Pcb::Flow { worker, flow: sock.id });
        self.inner.stats.inc(Self::hint(c), Counter::tcp_active_opens);
        self.inner.post(worker, Cmd::Connect { sock: sock.clone(), local, remote, port, opts: st.opts });
        Err(Errno::EINPROGRESS)
    }

    fn connect_loopback(&self, sock: &Arc<Socket<R>>, st: &mut crate::socket::SockState<R>, remote: IpEndpoint, hint: usize) -> Result<(), Errno> {
        let listener = self
            .inner
            .binds_shard(sock.family, remote.port)
            .and_then(|b| b.lock().get(&(sock.family, remote.port)).and_then(Weak::upgrade))
            .ok_or(Errno::ECONNREFUSED)?;
        let port = match st.port.take() {
            Some(p) => p,
            None => self.inner.ports.ephemeral(class_of(sock.ty, sock.family), hint, st.opts.reuse_addr)?,
        };
        let local = IpEndpoint::new(remote.addr, port.port());
        let mut child = self.inner.new_socket(self.inner.next_id(hint), SockType::Stream, sock.family);
        {
            let cs = child.state.get_mut();
            cs.phase = Phase::Connected;
            cs.local = Some(remote);
            cs.remote = Some(local);
            cs.pcb = Some(Pcb::Loop { peer: Arc::downgrade(sock) });
        }
        child.wake.mark(OUT);
        let child = Arc::new(child);
        let woke = {
            let mut l = listener.listen.lock();
            let Some(l) = l.as_mut() else {
                st.port = Some(port);
                return Err(Errno::ECONNREFUSED);
            };
            if !l.queue.try_reserve() {
                st.port = Some(port);
                return Err(Errno::EAGAIN);
            }
            if let Some(share) = l.port.as_ref().map(|p| p.share()) {
                // The child is not shared yet: nobody else can hold its lock.
                if let Some(mut cs) = child.state.try_lock() {
                    cs.port = Some(share);
                }
            }
            match l.queue.complete(child.clone()) {
                Ok(_) => {
                    // Counted before an accept can see the child (as in the worker).
                    self.inner.stats.inc(hint, Counter::tcp_active_opens);
                    self.inner.stats.inc(hint, Counter::tcp_passive_opens);
                    listener.wake.mark(IN)
                }
                Err(_) => {
                    st.port = Some(port);
                    return Err(Errno::ECONNREFUSED);
                }
            }
        };
        listener.wake.wake(woke);
        st.port = Some(port);
        st.local = Some(local);
        st.remote = Some(remote);
        st.phase = Phase::Connected;
        st.pcb = Some(Pcb::Loop { peer: Arc::downgrade(&child) });
        let w = sock.wake.mark(OUT);
        sock.wake.wake(w);
        Ok(())
    }

    /// `send`/`sendto` with the bytes supplied by `read(skip, out) -> copied`. Returns the bytes
    /// taken; `EAGAIN` when none fit.
    pub fn send_with(
        &self,
        c: ClientId,
        h: SocketHandle,
        len: usize,
        to: Option<SockAddr>,
        read: &mut dyn FnMut(usize, &mut [u8]) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        self.inner.stats.inc(Self::hint(c), Counter::requests);
        match sock.ty {
            SockType::Stream => self.send_stream(&sock, len, to, read),
            SockType::Datagram => self.send_dgram(&sock, len, to, read, Self::hint(c)),
        }
    }

    pub(crate) fn send_stream(&self, sock: &Arc<Socket<R>>, len: usize, to: Option<SockAddr>, read: &mut dyn FnMut(usize, &mut [u8]) -> Result<usize, Errno>) -> Result<usize, Errno> {
        let pcb = {
            let mut st = sock.state.lock();
            if to.is_some() && st.phase == Phase::Connected {
                return Err(Errno::EISCONN);
            }
            if st.shut_wr {
                return Err(Errno::EPIPE);
            }
            match st.phase {
                Phase::Connected => {}
                Phase::Connecting => return Err(Errno::EAGAIN),
                Phase::Closed => return Err(st.error.take().unwrap_or(Errno::EPIPE)),
                _ => return Err(Errno::ENOTCONN),
            }
            st.pcb.clone().ok_or(Errno::EPIPE)?
        };
        if len == 0 {
            return Ok(0);
        }
        let mut err = None;
        let mut fill = |buf: &mut ByteSink<'_>| {
            let mut off = 0;
            buf.fill(len, &mut |dst: &mut [u8]| match read(off, dst) {
                Ok(n) => {
                    off += n;
                    n
                }
                Err(e) => {
                    err = Some(e);
                    0
                }
            })
        };
        let n = match pcb {
            Pcb::Flow { worker, .. } => {
                let (n, was_empty) = {
                    let mut tx = sock.tx.lock();
                    let was_empty = tx.stream.is_empty();
                    let n = fill(&mut ByteSink(&mut tx.stream));
                    if tx.stream.free() == 0 {
                        sock.wake.clear(OUT);
                    }
                    (n, was_empty)
                };
                if n > 0 && was_empty {
                    self.inner.kick(worker);
                }
                n
            }
            Pcb::Loop { peer } => {
                let peer = peer.upgrade().ok_or(Errno::EPIPE)?;
                let (n, bits) = {
                    let mut prx = peer.rx.lock();
                    if prx.shut || prx.error.is_some() {
                        return Err(Errno::EPIPE);
                    }
                    let n = fill(&mut ByteSink(&mut prx.stream));
                    if prx.stream.free() == 0 {
                        sock.wake.clear(OUT);
                    }
                    let bits = if n > 0 { peer.wake.mark(IN) } else { 0 };
                    (n, bits)
                };
                peer.wake.wake(bits);
                n
            }
        };
        if let Some(e) = err {
            if n == 0 {
                return Err(e);
            }
        }
        if n == 0 {
            return Err(Errno::EAGAIN);
        }
        Ok(n)
    }

    fn send_dgram(&self, sock: &Arc<Socket<R>>, len: usize, to: Option<SockAddr>, read: &mut dyn FnMut(usize, &mut [u8]) -> Result<usize, Errno>, hint: usize) -> Result<usize, Errno> {
        if len > net_api::MAX_UDP_PAYLOAD {
            return Err(Errno::EMSGSIZE);
        }
        let (dest, worker) = {
            let mut st = sock.state.lock();
            let dest = match to {
                Some(a) => endpoint(a),
                None => st.remote.ok_or(Errno::EDESTADDRREQ)?,
            };
            if family_of_addr(&dest.addr) != sock.family {
                return Err(Errno::EAFNOSUPPORT);
            }
            if dest.port == 0 || dest.addr.is_unspecified() {
                return Err(Errno::EINVAL);
            }
            if st.port.is_none() {
                let any = IpEndpoint::new(unspecified(sock.family), 0);
                self.bind_locked(sock, &mut st, any, hint)?;
            }
            match st.pcb {
                Some(Pcb::Flow { worker, .. }) => (dest, worker),
                _ => return Err(Errno::EPIPE),
            }
        };
        let mut data = alloc::vec![0u8; len];
        let mut off = 0;
        while off < len {
            let n = read(off, data.get_mut(off..).unwrap_or(&mut []))?;
            if n == 0 {
                return Err(Errno::EFAULT);
            }
            off += n;
        }
        {
            let mut tx = sock.tx.lock();
            if !tx.dgrams.fits(len) {
                sock.wake.clear(OUT);
                return Err(Errno::EAGAIN);
            }
            tx.dgrams.push(Datagram { peer: dest, data });
        }
        self.inner.kick(worker);
        Ok(len)
    }

    /// `send` of a slice (typed API).
    pub fn send(&self, c: ClientId, h: SocketHandle, data: &[u8], to: Option<SockAddr>) -> Result<usize, Errno> {
        self.send_with(c, h, data.len(), to, &mut |skip, out| {
            let src = data.get(skip..).unwrap_or(&[]);
            let n = src.len().min(out.len());
            out[..n].copy_from_slice(&src[..n]);
            Ok(n)
        })
    }

    /// `recv`/`recvfrom` into `write(at, bytes) -> copied`, at most `max` bytes. `Ok(0)` on a
    /// stream is end of file; `EAGAIN` when nothing is there yet.
    pub fn recv_with(
        &self,
        c: ClientId,
        h: SocketHandle,
        max: usize,
        peek: bool,
        write: &mut dyn FnMut(usize, &[u8]) -> Result<usize, Errno>,
    ) -> Result<(usize, Option<SockAddr>), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        self.inner.stats.inc(Self::hint(c), Counter::requests);
        let pcb = {
            let st = sock.state.lock();
            match (sock.ty, st.phase) {
                (SockType::Stream, Phase::Open | Phase::Bound | Phase::Listening) => return Err(Errno::ENOTCONN),
                (SockType::Stream, Phase::Connecting) => return Err(Errno::EAGAIN),
                _ => st.pcb.clone(),
            }
        };
        let loop_peer = match &pcb {
            Some(Pcb::Loop { peer }) => peer.upgrade(),
            _ => None,
        };
        let mut err = None;
        let mut kick = false;
        let mut peer_bits = 0;
        let result = {
            let mut rx = sock.rx.lock();
            if sock.ty == SockType::Datagram {
                match rx.dgrams.front() {
                    None => Err(Errno::EAGAIN),
                    Some(d) => {
                        let from = Some(sockaddr(d.peer));
                        let take = d.data.len().min(max);
                        let n = write(0, d.data.get(..take).unwrap_or(&[]))?;
                        if !peek {
                            let _ = rx.dgrams.pop();
                            kick = true;
                        }
                        if rx.dgrams.is_empty() {
                            sock.wake.clear(IN);
                        }
                        Ok((n, from))
                    }
                }
            } else if !rx.stream.is_empty() {
                let mut at = 0;
                let n = rx.stream.drain(max, peek, |src| match write(at, src) {
                    Ok(k) => {
                        at += k;
                        k
                    }
                    Err(e) => {
                        err = Some(e);
                        0
                    }
                });
                if rx.stream.is_empty() && !rx.eof {
                    sock.wake.clear(IN);
                }
                if n > 0 && !peek {
                    if rx.stalled {
                        rx.stalled = false;
                        kick = true;
                    }
                    if let Some(p) = &loop_peer {
                        peer_bits = p.wake.mark(OUT);
                    }
                }
                match err {
                    Some(e) if n == 0 => Err(e),
                    _ => Ok((n, None)),
                }
            } else if let Some(e) = rx.error {
                Err(e)
            } else if rx.eof || rx.shut {
                Ok((0, None))
            } else {
                Err(Errno::EAGAIN)
            }
        };
        if let Some(p) = &loop_peer {
            p.wake.wake(peer_bits);
        }
        if kick {
            if let Some(Pcb::Flow { worker, .. }) = pcb {
                self.inner.kick(worker);
            }
        }
        result
    }

    /// `recv` into a slice (typed API).
    pub fn recv(&self, c: ClientId, h: SocketHandle, out: &mut [u8], peek: bool) -> Result<(usize, Option<SockAddr>), Errno> {
        let max = out.len();
        self.recv_with(c, h, max, peek, &mut |at, src| {
            let dst = out.get_mut(at..).unwrap_or(&mut []);
            let n = dst.len().min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
            Ok(n)
        })
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, c: ClientId, h: SocketHandle, how: net_api::Shutdown) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        let (rd, wr) = match how {
            net_api::Shutdown::Read => (true, false),
            net_api::Shutdown::Write => (false, true),
            net_api::Shutdown::Both => (true, true),
        };
        let pcb = {
            let mut st = sock.state.lock();
            if sock.ty == SockType::Stream && !matches!(st.phase, Phase::Connected | Phase::Closed) {
                return Err(Errno::ENOTCONN);
            }
            if wr {
                st.shut_wr = true;
            }
            st.pcb.clone()
        };
        if rd {
            let bits = {
                let mut rx = sock.rx.lock();
                rx.shut = true;
                sock.wake.mark(IN)
            };
            sock.wake.wake(bits);
        }
        if wr {
            match pcb {
                Some(Pcb::Flow { worker, flow }) if sock.ty == SockType::Stream => {
                    self.inner.post(worker, Cmd::ShutdownWrite { flow });
                }
                Some(Pcb::Loop { peer }) => {
                    if let Some(p) = peer.upgrade() {
                        let bits = {
                            let mut prx = p.rx.lock();
                            prx.eof = true;
                            p.wake.mark(IN)
                        };
                        p.wake.wake(bits);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `close(2)`. The handle is invalid afterwards; the connection closes in the background
    /// (FIN after the queued data, or RST if unread data was left). Only `EBADF` can come back.
    pub fn close(&self, c: ClientId, h: SocketHandle) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let client = self.lookup_client(c)?;
        let sock = client.table.lock().remove(h)?;
        self.close_socket(&sock, false);
        Ok(())
    }

    /// Closes (or with `abort`, resets) a socket whose handle is gone. Cannot fail.
    pub(crate) fn close_socket(&self, sock: &Arc<Socket<R>>, abort: bool) {
        let (pcb, was_listening, local, port) = {
            let mut st = sock.state.lock();
            let was_listening = st.phase == Phase::Listening;
            st.phase = Phase::Closed;
            (st.pcb.take(), was_listening, st.local, st.port.take())
        };
        drop(port);
        if was_listening {
            if let Some(local) = local {
                if let Some(b) = self.inner.binds_shard(sock.family, local.port) {
                    let mut b = b.lock();
                    let mine = b.get(&(sock.family, local.port)).is_some_and(|w| core::ptr::eq(w.as_ptr(), Arc::as_ptr(sock)));
                    if mine {
                        b.remove(&(sock.family, local.port));
                    }
                }
            }
            for w in 0..self.inner.workers.len() {
                self.inner.post(w, Cmd::Unlisten { listener: sock.id });
            }
            let (children, port) = match sock.listen.lock().as_mut() {
                Some(l) => (l.queue.close(), l.port.take()),
                None => (VecDeque::new(), None),
            };
            drop(port);
            for child in children {
                self.close_socket(&child, true);
            }
        }
        let unread = {
            let rx = sock.rx.lock();
            !rx.stream.is_empty() || rx.stalled
        };
        match pcb {
            Some(Pcb::Flow { worker, flow }) => {
                self.inner.post(worker, Cmd::Close { flow, abort: abort || unread });
            }
            Some(Pcb::Loop { peer }) => {
                if let Some(p) = peer.upgrade() {
                    self.inner.connection_gone(&p, if abort || unread { Some(Errno::ECONNRESET) } else { None });
                }
            }
            None => {}
        }
        sock.wake.set(HUP);
        // A server thread holding a call on this socket gives it back now (with an error).
        sock.wake.release_held();
    }

    /// `getsockname(2)`.
    pub fn local_addr(&self, c: ClientId, h: SocketHandle) -> Result<SockAddr, Errno> {
        let (_, sock) = self.lookup(c, h)?;
        let st = sock.state.lock();
        Ok(sockaddr(st.local.unwrap_or(IpEndpoint::new(unspecified(sock.family), 0))))
    }

    /// `getpeername(2)`.
    pub fn peer_addr(&self, c: ClientId, h: SocketHandle) -> Result<SockAddr, Errno> {
        let (_, sock) = self.lookup(c, h)?;
        let st = sock.state.lock();
        match (st.phase, st.remote) {
            (Phase::Connected, Some(r)) => Ok(sockaddr(r)),
            _ => Err(Errno::ENOTCONN),
        }
    }

    /// `setsockopt(2)`.
    pub fn set_option(&self, c: ClientId, h: SocketHandle, v: SockOptValue) -> Result<(), Errno> {
        let _big = self.inner.big_lock();
        let (_, sock) = self.lookup(c, h)?;
        let clamp = |n: u32| (n as usize).clamp(1024, 4 << 20);
        match v {
            SockOptValue::RcvBuf(n) => {
                let mut rx = sock.rx.lock();
                rx.stream.set_capacity(clamp(n));
                rx.dgrams.set_capacity(clamp(n));
                return Ok(());
            }
            SockOptValue::SndBuf(n) => {
                let mut tx = sock.tx.lock();
                tx.stream.set_capacity(clamp(n));
                tx.dgrams.set_capacity(clamp(n));
                return Ok(());
            }
            SockOptValue::Error(_) => return Err(Errno::ENOPROTOOPT),
            _ => {}
        }
        let mut st = sock.state.lock();
        match v {
            SockOptValue::ReuseAddr(b) => st.opts.reuse_addr = b,
            SockOptValue::TcpNoDelay(b) => st.opts.nodelay = b,
            SockOptValue::KeepAlive(b) => st.opts.keepalive = b,
            SockOptValue::NonBlocking(b) => st.opts.nonblocking = b,
            _ => {}
        }
        if sock.ty == SockType::Stream && matches!(v, SockOptValue::TcpNoDelay(_) | SockOptValue::KeepAlive(_)) {
            if let Some(Pcb::Flow { worker, flow }) = st.pcb.clone() {
                self.inner.post(worker, Cmd::SetOptions { flow, opts: st.opts });
            }
        }
        Ok(())
    }

    /// `getsockopt(2)`.
    pub fn get_option(&self, c: ClientId, h: SocketHandle, opt: SockOpt) -> Result<SockOptValue, Errno> {
        let (_, sock) = self.lookup(c, h)?;
        match opt {
            SockOpt::RcvBuf => return Ok(SockOptValue::RcvBuf(sock.rx.lock().stream.capacity() as u32)),
            SockOpt::SndBuf => return Ok(SockOptValue::SndBuf(sock.tx.lock().stream.capacity() as u32)),
            _ => {}
        }
        let mut st = sock.state.lock();
        Ok(match opt {
            SockOpt::ReuseAddr => SockOptValue::ReuseAddr(st.opts.reuse_addr),
            SockOpt::TcpNoDelay => SockOptValue::TcpNoDelay(st.opts.nodelay),
            SockOpt::KeepAlive => SockOptValue::KeepAlive(st.opts.keepalive),
            SockOpt::NonBlocking => SockOptValue::NonBlocking(st.opts.nonblocking),
            SockOpt::Error => {
                let e = st.error.take();
                if e.is_some() {
                    sock.wake.clear(ERR);
                }
                SockOptValue::Error(e)
            }
            SockOpt::RcvBuf | SockOpt::SndBuf => return Err(Errno::ENOPROTOOPT),
        })
    }

    /// `poll(2)` without blocking: fills `out` (same length as `fds`) and, with `arm`, arms a
    /// wake-up on every entry that is not ready. Returns how many entries are ready.
    pub fn poll(&self, c: ClientId, fds: &[PollEntry], out: &mut [PollEvents], arm: bool) -> Result<usize, Errno> {
        let _big = self.inner.big_lock();
        let client = self.lookup_client(c)?;
        let mut ready = 0;
        for (e, o) in fds.iter().zip(out.iter_mut()) {
            let sock = client.table.lock().get(e.handle).ok().cloned();
            let bits = match sock {
                None => PollEvents::NVAL.0 as u32,
                Some(s) => {
                    let want = u32::from(e.events.0) | ALWAYS;
                    let mut b = s.wake.readiness() & want;
                    if b == 0 && arm {
                        b = s.wake.arm(u32::from(e.events.0), &client.signal);
                    }
                    b
                }
            };
            *o = PollEvents(bits as u16);
            if bits != 0 {
                ready += 1;
            }
        }
        Ok(ready)
    }

    /// Sockets open in client `c`'s table.
    pub fn client_sockets(&self, c: ClientId) -> usize {
        self.lookup_client(c).map(|cl| cl.table.lock().len()).unwrap_or(0)
    }
}

#[cfg(all(test, feature = "std", not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn idle_socket_costs_at_most_2_kib_beyond_buffers() {
        let fp = Server::<parking_lot::RawMutex>::footprint();
        assert!(fp.total() <= 2048, "{fp:?}");
        // Buffers are not allocated until used.
        let stats = Arc::new(Stats::new(1));
        let s = Socket::<parking_lot::RawMutex>::new(1, SockType::Stream, Family::V4, 65536, 65536, &stats);
        assert_eq!(s.rx.lock().stream.len(), 0);
    }
}

/// Adapter so the send paths can fill either ring.
struct ByteSink<'a>(&'a mut crate::socket::ByteRing);

impl ByteSink<'_> {
    fn fill(&mut self, max: usize, f: &mut dyn FnMut(&mut [u8]) -> usize) -> usize {
        self.0.fill(max, f)
    }
}
