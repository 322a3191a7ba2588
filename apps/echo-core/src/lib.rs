//! The echo application (RFC 862) on port 7: TCP and UDP, IPv4 and IPv6, one thread.
//!
//! * **TCP**: every connection is a [`netloop`] connection with an [`Echo`] handler: what is
//!   read is written back, in order, through a fixed 4 KiB buffer each way. Backpressure is
//!   netloop's: a peer that does not read its echo stops being read. When the peer closes its
//!   sending side, the rest is echoed and the connection closed.
//! * **UDP**: [`UdpEcho`] answers each datagram (up to 65535 bytes) to its sender. An answer the
//!   net server cannot queue now (`EAGAIN`, `ENOBUFS`) is dropped and counted, as UDP allows.
//!
//! [`EchoApp`] binds both on the unspecified addresses (`0.0.0.0:7`, and `[::]:7` when the net
//! server has IPv6) and runs them on one [`netloop::EventLoop`]. The seL4 binary (`apps/echo`)
//! only creates the client and calls [`EchoApp::bind`] and [`EchoApp::run_once`].
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use libsock::{Client, Errno, PollEvents, PollFd, SockAddr, Transport, UdpSocket};
use netloop::{Config, EventLoop, Handler, Output, Source, Step, TcpServer};

/// The echo port.
pub const PORT: u16 = 7;

/// The largest UDP datagram echoed whole.
pub const MAX_DATAGRAM: usize = 65535;

/// The TCP echo protocol: input goes back out, unchanged and in order.
#[derive(Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    fn process(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step {
        let n = out.write(input);
        if eof && n == input.len() {
            Step::close(n)
        } else {
            Step::read(n)
        }
    }
}

/// The loop configuration for TCP echo: 4 KiB each way per connection, up to 512 at once.
pub fn tcp_config() -> Config {
    Config { in_cap: 4096, out_cap: 4096, max_conns: 512, backlog: 256, ..Config::default() }
}

/// UDP echo counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams echoed.
    pub echoed: u64,
    /// Answers dropped (no room in the net server, or a send error).
    pub dropped: u64,
    /// The error of the last dropped answer.
    pub last_error: Option<Errno>,
}

/// UDP echo over one or more bound sockets.
pub struct UdpEcho<T: Transport> {
    sockets: Vec<UdpSocket<T>>,
    /// Each socket's bound address.
    local: Vec<SockAddr>,
    buf: Box<[u8]>,
    budget: usize,
    again: bool,
    /// What happened so far.
    pub counters: UdpCounters,
}

impl<T: Transport> UdpEcho<T> {
    /// No socket yet (add them with [`UdpEcho::bind`]).
    pub fn new() -> UdpEcho<T> {
        UdpEcho { sockets: Vec::new(), local: Vec::new(), buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(), budget: 64, again: false, counters: UdpCounters::default() }
    }

    /// Binds a non-blocking socket to `addr`; returns the bound address.
    pub fn bind(&mut self, client: &Arc<Client<T>>, addr: SockAddr) -> Result<SockAddr, Errno> {
        let s = UdpSocket::bind(client, addr)?;
        s.set_nonblocking(true)?;
        let a = s.local_addr()?;
        self.sockets.push(s);
        self.local.push(a);
        Ok(a)
    }

    fn serve(&mut self, i: usize) -> Result<bool, Errno> {
        let Some(s) = self.sockets.get(i) else { return Ok(false) };
        let port = self.local.get(i).map(|a| a.port());
        for _ in 0..self.budget {
            let (n, from) = match s.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(Errno::EAGAIN) => return Ok(false),
                Err(Errno::ServerRestarted) => return Err(Errno::ServerRestarted),
                // Nothing sensible to do about a failed receive but to try again next turn.
                Err(_) => return Ok(false),
            };
            self.counters.received += 1;
            let data = self.buf.get(..n).unwrap_or(&[]);
            // Answer from the socket of the sender's family on the same port: a socket bound to
            // the unspecified address of one family may be handed datagrams of the other.
            let reply = self
                .local
                .iter()
                .position(|a| a.domain() == from.domain() && Some(a.port()) == port)
                .and_then(|j| self.sockets.get(j))
                .unwrap_or(s);
            match reply.send_to(data, from) {
                Ok(_) => self.counters.echoed += 1,
                Err(Errno::ServerRestarted) => return Err(Errno::ServerRestarted),
                Err(e) => {
                    self.counters.dropped += 1;
                    self.counters.last_error = Some(e);
                }
            }
        }
        Ok(true)
    }
}

impl<T: Transport> Default for UdpEcho<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Transport> Source for UdpEcho<T> {
    fn register(&mut self, fds: &mut Vec<PollFd>, now: Duration) -> Option<Duration> {
        fds.extend(self.sockets.iter().map(|s| PollFd::new(s.handle(), PollEvents::IN)));
        self.again.then_some(now)
    }

    fn dispatch(&mut self, fds: &[PollFd], _now: Duration) -> Result<(), Errno> {
        let again = self.again;
        self.again = false;
        for (i, fd) in fds.iter().enumerate() {
            if again || fd.revents.contains(PollEvents::IN) {
                self.again |= self.serve(i)?;
            }
        }
        Ok(())
    }
}

/// Where an [`EchoApp`] listens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bound {
    /// TCP listeners.
    pub tcp: Vec<SockAddr>,
    /// UDP sockets.
    pub udp: Vec<SockAddr>,
    /// Why IPv6 is not served, if it is not.
    pub v6_error: Option<Errno>,
}

/// TCP and UDP echo on one event loop.
pub struct EchoApp<T: Transport> {
    tcp: TcpServer<T, Echo, fn(SockAddr) -> Echo>,
    udp: UdpEcho<T>,
    ev: EventLoop<T>,
}

fn new_echo(_: SockAddr) -> Echo {
    Echo
}

impl<T: Transport> EchoApp<T> {
    /// Binds TCP and UDP on `0.0.0.0:port` (required) and `[::]:port` (if the net server allows).
    pub fn bind(client: &Arc<Client<T>>, port: u16) -> Result<(EchoApp<T>, Bound), Errno> {
        let mut tcp = TcpServer::new(client, tcp_config(), new_echo as fn(SockAddr) -> Echo);
        let mut udp = UdpEcho::new();
        let mut bound = Bound::default();
        bound.tcp.push(tcp.listen(SockAddr::any_v4(port))?);
        bound.udp.push(udp.bind(client, SockAddr::any_v4(port))?);
        match tcp.listen(SockAddr::any_v6(port)).and_then(|t| Ok((t, udp.bind(client, SockAddr::any_v6(port))?))) {
            Ok((t, u)) => {
                bound.tcp.push(t);
                bound.udp.push(u);
            }
            Err(Errno::ServerRestarted) => return Err(Errno::ServerRestarted),
            Err(e) => bound.v6_error = Some(e),
        }
        Ok((EchoApp { tcp, udp, ev: EventLoop::new(client) }, bound))
    }

    /// One turn of the loop, waiting at most `max_wait` for something to happen.
    pub fn run_once(&mut self, max_wait: Option<Duration>) -> Result<usize, Errno> {
        self.ev.run_once(&mut [&mut self.tcp, &mut self.udp], max_wait)
    }

    /// TCP counters.
    pub fn tcp_counters(&self) -> &netloop::Counters {
        self.tcp.counters()
    }

    /// UDP counters.
    pub fn udp_counters(&self) -> UdpCounters {
        self.udp.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Echo, input: &[u8], eof: bool, cap: usize) -> (Step, Vec<u8>) {
        let mut buf = vec![0u8; cap];
        let mut len = 0;
        let step = h.process(input, eof, &mut Output::new(&mut buf, &mut len));
        buf.truncate(len);
        (step, buf)
    }

    #[test]
    fn echoes_what_fits_and_keeps_the_rest() {
        let mut e = Echo;
        assert_eq!(run(&mut e, b"hello", false, 16), (Step::read(5), b"hello".to_vec()));
        assert_eq!(run(&mut e, b"hello", false, 3), (Step::read(3), b"hel".to_vec()));
    }

    #[test]
    fn closes_after_the_last_byte_at_eof() {
        let mut e = Echo;
        assert_eq!(run(&mut e, b"hello", true, 3), (Step::read(3), b"hel".to_vec()));
        assert_eq!(run(&mut e, b"lo", true, 3), (Step::close(2), b"lo".to_vec()));
        assert_eq!(run(&mut e, b"", true, 3), (Step::close(0), Vec::new()));
    }
}
