//! A small in-memory fake of the net server, speaking the real protocol through the real codec
//! and data-area code, used to test libsock end to end without netserver-core. TCP is a loopback
//! byte pipe with a bounded receive queue (to exercise partial sends and flow control), UDP a
//! datagram queue. It follows the server side of the Transport contract: it never blocks,
//! answers EAGAIN, and signals clients when state changes (it simply signals every client on
//! every change, which the contract allows).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use libsock::host::{HostTransport, Signal};
use libsock::net_api::codec::serve;
use libsock::net_api::*;
use libsock::Client;

struct Sock {
    owner: usize,
    ty: SockType,
    domain: Domain,
    local: Option<SockAddr>,
    peer_addr: Option<SockAddr>,
    peer: Option<usize>,
    listening: bool,
    backlog: VecDeque<usize>,
    rx: VecDeque<u8>,
    dgrams: VecDeque<(Vec<u8>, SockAddr)>,
    eof: bool,
    error: Option<Errno>,
    opts: [Option<SockOptValue>; 6],
}

struct Slot {
    generation: u32,
    sock: Option<Sock>,
}

struct ClientEnd {
    area: DataArea<Arc<AtomicRegion>>,
    signal: Arc<Signal>,
}

struct Net {
    epoch: u32,
    layout: DataAreaLayout,
    slots: Vec<Slot>,
    clients: Vec<ClientEnd>,
    /// Receive-queue capacity of a stream socket: a send takes at most the peer's free space.
    stream_cap: usize,
    next_port: u16,
    /// Every request seen, for tests that check what libsock sent.
    log: Vec<Request>,
}

/// The fake server. Cloneable handle.
#[derive(Clone)]
pub struct FakeNet {
    net: Arc<Mutex<Net>>,
}

impl FakeNet {
    pub fn new(stream_cap: usize) -> FakeNet {
        FakeNet::with_layout(stream_cap, DataAreaLayout::DEFAULT)
    }

    pub fn with_layout(stream_cap: usize, layout: DataAreaLayout) -> FakeNet {
        FakeNet {
            net: Arc::new(Mutex::new(Net {
                epoch: 1,
                layout,
                slots: Vec::new(),
                clients: Vec::new(),
                stream_cap,
                next_port: 49152,
                log: Vec::new(),
            })),
        }
    }

    /// A new client session over a host transport, with its own data area and notification.
    pub fn client(&self) -> Arc<Client<HostTransport>> {
        Arc::new(Client::new(self.transport()).expect("hello"))
    }

    pub fn transport(&self) -> HostTransport {
        let mut net = self.net.lock().unwrap();
        let layout = net.layout;
        let region = Arc::new(AtomicRegion::for_layout(&layout));
        let signal = Arc::new(Signal::new());
        let id = net.clients.len();
        net.clients.push(ClientEnd {
            area: DataArea::new(layout, region.clone()).unwrap(),
            signal: signal.clone(),
        });
        let me = self.clone();
        HostTransport::new(region, signal, move |req, resp| {
            Ok(serve(req, resp, |epoch, r| me.handle(id, epoch, r)))
        })
    }

    /// Simulates a server restart: new epoch, every socket gone.
    pub fn restart(&self) {
        let mut net = self.net.lock().unwrap();
        net.epoch += 1;
        net.slots.clear();
        for c in &net.clients {
            c.signal.signal();
        }
    }

    pub fn set_stream_cap(&self, cap: usize) {
        self.net.lock().unwrap().stream_cap = cap;
        self.wake_all();
    }

    pub fn log(&self) -> Vec<Request> {
        self.net.lock().unwrap().log.clone()
    }

    pub fn open_sockets(&self) -> usize {
        self.net.lock().unwrap().slots.iter().filter(|s| s.sock.is_some()).count()
    }

    fn wake_all(&self) {
        for c in &self.net.lock().unwrap().clients {
            c.signal.signal();
        }
    }

    fn handle(&self, client: usize, epoch: u32, req: Request) -> Response {
        let mut net = self.net.lock().unwrap();
        net.log.push(req.clone());
        if let Request::Hello { version } = req {
            if version != PROTOCOL_VERSION {
                return Response::Error(Errno::EPROTONOSUPPORT);
            }
            return Response::Hello(ServerInfo { version, epoch: net.epoch, layout: net.layout });
        }
        if epoch != net.epoch {
            return Response::Error(Errno::ServerRestarted);
        }
        let r = net.dispatch(client, req.clone());
        // "Signal on change": only requests that changed state signal (then every client, which
        // the contract allows). EAGAIN answers and pure queries do not, so a client that loses a
        // wake-up is not rescued by an unrelated retry.
        let changed = match req {
            Request::Poll { .. }
            | Request::GetSockName { .. }
            | Request::GetPeerName { .. }
            | Request::GetSockOpt { .. } => false,
            Request::Connect { .. } => true,
            _ => r.is_ok(),
        };
        if changed {
            for c in &net.clients {
                c.signal.signal();
            }
        }
        match r {
            Ok(resp) => resp,
            Err(e) => Response::Error(e),
        }
    }
}

fn opt_index(o: SockOpt) -> Option<usize> {
    Some(match o {
        SockOpt::ReuseAddr => 0,
        SockOpt::RcvBuf => 1,
        SockOpt::SndBuf => 2,
        SockOpt::TcpNoDelay => 3,
        SockOpt::KeepAlive => 4,
        SockOpt::NonBlocking => 5,
        SockOpt::Error => return None,
    })
}

fn default_opt(o: SockOpt) -> SockOptValue {
    match o {
        SockOpt::ReuseAddr => SockOptValue::ReuseAddr(false),
        SockOpt::RcvBuf => SockOptValue::RcvBuf(65536),
        SockOpt::SndBuf => SockOptValue::SndBuf(65536),
        SockOpt::TcpNoDelay => SockOptValue::TcpNoDelay(false),
        SockOpt::KeepAlive => SockOptValue::KeepAlive(false),
        SockOpt::NonBlocking => SockOptValue::NonBlocking(false),
        SockOpt::Error => SockOptValue::Error(None),
    }
}

impl Net {
    fn lookup(&self, client: usize, h: SocketHandle) -> Result<usize, Errno> {
        let i = h.index as usize;
        match self.slots.get(i) {
            Some(Slot { generation, sock: Some(s) }) if *generation == h.generation && s.owner == client => Ok(i),
            _ => Err(Errno::EBADF),
        }
    }

    fn sock(&mut self, i: usize) -> &mut Sock {
        self.slots[i].sock.as_mut().unwrap()
    }

    fn handle_of(&self, i: usize) -> SocketHandle {
        SocketHandle { index: i as u32, generation: self.slots[i].generation }
    }

    fn alloc(&mut self, s: Sock) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.sock.is_none()) {
            self.slots[i].generation += 1;
            self.slots[i].sock = Some(s);
            i
        } else {
            self.slots.push(Slot { generation: 1, sock: Some(s) });
            self.slots.len() - 1
        }
    }

    fn new_sock(owner: usize, domain: Domain, ty: SockType) -> Sock {
        Sock {
            owner,
            ty,
            domain,
            local: None,
            peer_addr: None,
            peer: None,
            listening: false,
            backlog: VecDeque::new(),
            rx: VecDeque::new(),
            dgrams: VecDeque::new(),
            eof: false,
            error: None,
            opts: [None; 6],
        }
    }

    fn find_bound(&self, ty: SockType, port: u16, listening: Option<bool>) -> Option<usize> {
        self.slots.iter().position(|s| match &s.sock {
            Some(s) => {
                s.ty == ty
                    && s.local.map(|a| a.port()) == Some(port)
                    && listening.is_none_or(|l| l == s.listening)
            }
            None => false,
        })
    }

    fn ephemeral(&mut self, domain: Domain) -> SockAddr {
        self.next_port += 1;
        match domain {
            Domain::Inet => SockAddr::v4(127, 0, 0, 1, self.next_port),
            Domain::Inet6 => {
                let mut ip = [0; 16];
                ip[15] = 1;
                SockAddr::v6(ip, self.next_port)
            }
        }
    }

    fn local_or_bind(&mut self, i: usize) -> SockAddr {
        match self.sock(i).local {
            Some(a) => a,
            None => {
                let d = self.sock(i).domain;
                let a = self.ephemeral(d);
                self.sock(i).local = Some(a);
                a
            }
        }
    }

    fn dispatch(&mut self, client: usize, req: Request) -> Result<Response, Errno> {
        match req {
            Request::Hello { .. } => Err(Errno::EINVAL),
            Request::Socket { domain, ty } => {
                let i = self.alloc(Net::new_sock(client, domain, ty));
                Ok(Response::Socket(self.handle_of(i)))
            }
            Request::Bind { handle, addr } => {
                let i = self.lookup(client, handle)?;
                if addr.domain() != self.sock(i).domain {
                    return Err(Errno::EAFNOSUPPORT);
                }
                let ty = self.sock(i).ty;
                let mut addr = addr;
                if addr.port() == 0 {
                    let p = self.ephemeral(addr.domain()).port();
                    addr.set_port(p);
                } else if self.find_bound(ty, addr.port(), None).is_some() {
                    return Err(Errno::EADDRINUSE);
                }
                self.sock(i).local = Some(addr);
                Ok(Response::Ok)
            }
            Request::Listen { handle, .. } => {
                let i = self.lookup(client, handle)?;
                if self.sock(i).ty != SockType::Stream {
                    return Err(Errno::EOPNOTSUPP);
                }
                self.local_or_bind(i);
                self.sock(i).listening = true;
                Ok(Response::Ok)
            }
            Request::Accept { handle } => {
                let i = self.lookup(client, handle)?;
                if !self.sock(i).listening {
                    return Err(Errno::EINVAL);
                }
                let Some(c) = self.sock(i).backlog.pop_front() else {
                    return Err(Errno::EAGAIN);
                };
                self.sock(c).owner = client;
                let peer = self.sock(c).peer_addr.unwrap();
                Ok(Response::Accepted { handle: self.handle_of(c), peer })
            }
            Request::Connect { handle, addr } => {
                let i = self.lookup(client, handle)?;
                if self.sock(i).ty == SockType::Datagram {
                    self.local_or_bind(i);
                    self.sock(i).peer_addr = Some(addr);
                    return Ok(Response::Ok);
                }
                if self.sock(i).peer.is_some() || self.sock(i).eof {
                    return Err(Errno::EISCONN);
                }
                let me = self.local_or_bind(i);
                match self.find_bound(SockType::Stream, addr.port(), Some(true)) {
                    Some(l) => {
                        let (lowner, ldomain, laddr) = {
                            let l = self.sock(l);
                            (l.owner, l.domain, l.local.unwrap())
                        };
                        let mut s = Net::new_sock(lowner, ldomain, SockType::Stream);
                        s.local = Some(SockAddr::v4(127, 0, 0, 1, laddr.port()));
                        s.peer_addr = Some(me);
                        s.peer = Some(i);
                        let c = self.alloc(s);
                        self.sock(l).backlog.push_back(c);
                        self.sock(i).peer = Some(c);
                        self.sock(i).peer_addr = Some(addr);
                    }
                    None => {
                        self.sock(i).error = Some(Errno::ECONNREFUSED);
                        self.sock(i).eof = true;
                    }
                }
                Err(Errno::EINPROGRESS)
            }
            Request::Send { handle, buf, flags, to } => {
                let i = self.lookup(client, handle)?;
                if !flags.is_known() {
                    return Err(Errno::EINVAL);
                }
                let area = &self.clients[client].area;
                area.layout().check_tx(buf)?;
                let mut data = vec![0u8; buf.len as usize];
                area.read_tx(buf, 0, &mut data)?;
                if self.sock(i).ty == SockType::Datagram {
                    let from = self.local_or_bind(i);
                    let dest = to.or(self.sock(i).peer_addr).ok_or(Errno::EDESTADDRREQ)?;
                    if let Some(d) = self.find_bound(SockType::Datagram, dest.port(), None) {
                        self.sock(d).dgrams.push_back((data, from));
                    }
                    return Ok(Response::Sent { len: buf.len });
                }
                if to.is_some() {
                    return Err(Errno::EISCONN);
                }
                let (peer, eof) = (self.sock(i).peer, self.sock(i).eof);
                let p = match peer {
                    Some(p) if self.slots[p].sock.is_some() => p,
                    Some(_) => return Err(Errno::EPIPE),
                    None if eof => return Err(Errno::EPIPE),
                    None => return Err(Errno::ENOTCONN),
                };
                let space = self.stream_cap.saturating_sub(self.sock(p).rx.len());
                if space == 0 && !data.is_empty() {
                    return Err(Errno::EAGAIN);
                }
                let n = space.min(data.len());
                self.sock(p).rx.extend(&data[..n]);
                Ok(Response::Sent { len: n as u32 })
            }
            Request::Recv { handle, buf, flags } => {
                let i = self.lookup(client, handle)?;
                self.clients[client].area.layout().check_rx(buf)?;
                let peek = flags.contains(MsgFlags::PEEK);
                if self.sock(i).ty == SockType::Datagram {
                    let Some((d, from)) = self.sock(i).dgrams.front().cloned() else {
                        return Err(Errno::EAGAIN);
                    };
                    if !peek {
                        self.sock(i).dgrams.pop_front();
                    }
                    let n = self.clients[client].area.write_rx(buf, 0, &d)?;
                    return Ok(Response::Received { len: n as u32, from: Some(from) });
                }
                if self.sock(i).rx.is_empty() {
                    let closed = self.sock(i).eof
                        || self.sock(i).peer.is_some_and(|p| self.slots[p].sock.is_none());
                    return if closed { Ok(Response::Received { len: 0, from: None }) } else { Err(Errno::EAGAIN) };
                }
                let n = (buf.len as usize).min(self.sock(i).rx.len());
                let bytes: Vec<u8> = if peek {
                    self.sock(i).rx.iter().take(n).copied().collect()
                } else {
                    self.sock(i).rx.drain(..n).collect()
                };
                self.clients[client].area.write_rx(buf, 0, &bytes)?;
                Ok(Response::Received { len: n as u32, from: None })
            }
            Request::Shutdown { handle, how } => {
                let i = self.lookup(client, handle)?;
                if matches!(how, Shutdown::Write | Shutdown::Both) {
                    if let Some(p) = self.sock(i).peer {
                        if let Some(ps) = self.slots[p].sock.as_mut() {
                            ps.eof = true;
                        }
                    }
                }
                Ok(Response::Ok)
            }
            Request::Close { handle } => {
                let i = self.lookup(client, handle)?;
                let s = self.slots[i].sock.take().unwrap();
                if let Some(p) = s.peer {
                    if let Some(ps) = self.slots[p].sock.as_mut() {
                        ps.eof = true;
                        ps.peer = None;
                    }
                }
                for c in s.backlog {
                    self.slots[c].sock = None;
                }
                Ok(Response::Ok)
            }
            Request::GetSockName { handle } => {
                let i = self.lookup(client, handle)?;
                let d = self.sock(i).domain;
                Ok(Response::Addr(self.sock(i).local.unwrap_or(match d {
                    Domain::Inet => SockAddr::any_v4(0),
                    Domain::Inet6 => SockAddr::any_v6(0),
                })))
            }
            Request::GetPeerName { handle } => {
                let i = self.lookup(client, handle)?;
                let s = self.sock(i);
                match (s.ty, s.peer, s.peer_addr) {
                    (SockType::Stream, Some(_), Some(a)) | (SockType::Datagram, _, Some(a)) => Ok(Response::Addr(a)),
                    _ => Err(Errno::ENOTCONN),
                }
            }
            Request::SetSockOpt { handle, value } => {
                let i = self.lookup(client, handle)?;
                let k = opt_index(value.opt()).ok_or(Errno::ENOPROTOOPT)?;
                self.sock(i).opts[k] = Some(value);
                Ok(Response::Ok)
            }
            Request::GetSockOpt { handle, opt } => {
                let i = self.lookup(client, handle)?;
                match opt_index(opt) {
                    Some(k) => Ok(Response::SockOpt(self.sock(i).opts[k].unwrap_or(default_opt(opt)))),
                    None => Ok(Response::SockOpt(SockOptValue::Error(self.sock(i).error.take()))),
                }
            }
            // The fake server keeps no counters.
            Request::Stats | Request::WakeAfter { .. } => Err(Errno::ENOSYS),
            Request::Poll { fds } => {
                let mut revents = PollReady::new();
                for e in fds.iter() {
                    let r = match self.lookup(client, e.handle) {
                        Err(_) => PollEvents::NVAL,
                        Ok(i) => self.readiness(i),
                    };
                    let always = PollEvents::ERR | PollEvents::HUP | PollEvents::NVAL;
                    let _ = revents.push(PollEvents(r.0 & (e.events.0 | always.0)));
                }
                Ok(Response::Poll { revents: Box::new(revents) })
            }
        }
    }

    fn readiness(&mut self, i: usize) -> PollEvents {
        let cap = self.stream_cap;
        let slots = &self.slots;
        let s = slots[i].sock.as_ref().unwrap();
        let mut r = PollEvents::NONE;
        if s.error.is_some() {
            r |= PollEvents::ERR;
        }
        match s.ty {
            SockType::Datagram => {
                r |= PollEvents::OUT;
                if !s.dgrams.is_empty() {
                    r |= PollEvents::IN;
                }
            }
            SockType::Stream if s.listening => {
                if !s.backlog.is_empty() {
                    r |= PollEvents::IN;
                }
            }
            SockType::Stream => {
                let peer = s.peer.and_then(|p| slots[p].sock.as_ref());
                if !s.rx.is_empty() || s.eof {
                    r |= PollEvents::IN;
                }
                if s.eof && s.peer.is_none() {
                    r |= PollEvents::HUP;
                }
                if let Some(p) = peer {
                    if p.rx.len() < cap {
                        r |= PollEvents::OUT;
                    }
                }
            }
        }
        r
    }
}
