//! `std::net`-style types: [`TcpListener`], [`TcpStream`], [`UdpSocket`].
//!
//! Each owns one socket handle and a shared reference to the [`Client`]; dropping it closes the
//! socket. Errors are [`Errno`], which prints as the errno name.

use alloc::sync::Arc;
use core::time::Duration;

use net_api::{
    Domain, Errno, MsgFlags, PollEvents, Shutdown, SockAddr, SockOpt, SockOptValue, SockType,
    SocketHandle,
};

use crate::{Client, PollFd, Transport};

fn domain_of(addr: &SockAddr) -> Domain {
    addr.domain()
}

fn get_bool<T: Transport>(c: &Client<T>, h: SocketHandle, opt: SockOpt) -> Result<bool, Errno> {
    match c.getsockopt(h, opt)? {
        SockOptValue::ReuseAddr(b)
        | SockOptValue::TcpNoDelay(b)
        | SockOptValue::KeepAlive(b)
        | SockOptValue::NonBlocking(b) => Ok(b),
        _ => Err(Errno::EPROTO),
    }
}

/// The socket shared by all three types: handle + client, closed on drop.
struct Sock<T: Transport> {
    client: Arc<Client<T>>,
    handle: SocketHandle,
}

impl<T: Transport> Sock<T> {
    fn open(client: &Arc<Client<T>>, domain: Domain, ty: SockType) -> Result<Self, Errno> {
        let handle = client.socket(domain, ty)?;
        Ok(Sock { client: client.clone(), handle })
    }

    fn ready(&self, events: PollEvents) -> Result<bool, Errno> {
        let mut fds = [PollFd::new(self.handle, events)];
        Ok(self.client.poll(&mut fds, Some(Duration::ZERO))? > 0)
    }
}

impl<T: Transport> Drop for Sock<T> {
    fn drop(&mut self) {
        let _ = self.client.close(self.handle);
    }
}

/// A TCP listening socket, like `std::net::TcpListener`.
pub struct TcpListener<T: Transport> {
    sock: Sock<T>,
}

impl<T: Transport> TcpListener<T> {
    /// `socket` + `SO_REUSEADDR` + `bind` + `listen(128)`.
    pub fn bind(client: &Arc<Client<T>>, addr: impl Into<SockAddr>) -> Result<Self, Errno> {
        Self::bind_with_backlog(client, addr, 128)
    }

    /// As [`TcpListener::bind`] with an explicit backlog.
    pub fn bind_with_backlog(
        client: &Arc<Client<T>>,
        addr: impl Into<SockAddr>,
        backlog: u32,
    ) -> Result<Self, Errno> {
        let addr = addr.into();
        let sock = Sock::open(client, domain_of(&addr), SockType::Stream)?;
        client.setsockopt(sock.handle, SockOptValue::ReuseAddr(true))?;
        client.bind(sock.handle, &addr)?;
        client.listen(sock.handle, backlog)?;
        Ok(TcpListener { sock })
    }

    /// Waits for a connection (or `EAGAIN` in non-blocking mode).
    pub fn accept(&self) -> Result<(TcpStream<T>, SockAddr), Errno> {
        let (handle, peer) = self.sock.client.accept(self.sock.handle)?;
        let sock = Sock { client: self.sock.client.clone(), handle };
        Ok((TcpStream { sock }, peer))
    }

    pub fn local_addr(&self) -> Result<SockAddr, Errno> {
        self.sock.client.getsockname(self.sock.handle)
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.sock.client.set_nonblocking(self.sock.handle, nonblocking)
    }

    /// The underlying handle, e.g. for [`Client::poll`].
    pub fn handle(&self) -> SocketHandle {
        self.sock.handle
    }
}

/// A TCP connection, like `std::net::TcpStream`. Implements `embedded_io::{Read, Write,
/// ReadReady, WriteReady}` and, with the `std` feature, `std::io::{Read, Write}`.
pub struct TcpStream<T: Transport> {
    sock: Sock<T>,
}

impl<T: Transport> TcpStream<T> {
    /// `socket` + blocking `connect`.
    pub fn connect(client: &Arc<Client<T>>, addr: impl Into<SockAddr>) -> Result<Self, Errno> {
        let addr = addr.into();
        let sock = Sock::open(client, domain_of(&addr), SockType::Stream)?;
        client.connect(sock.handle, &addr)?;
        Ok(TcpStream { sock })
    }

    /// Reads what is available (waits for some in blocking mode); 0 = end of file.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.sock.client.recv(self.sock.handle, buf, MsgFlags::NONE)
    }

    /// Like [`TcpStream::read`] but leaves the data in the socket (`MSG_PEEK`).
    pub fn peek(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.sock.client.recv(self.sock.handle, buf, MsgFlags::PEEK)
    }

    /// Writes; in blocking mode everything, in non-blocking mode what fits now.
    pub fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.sock.client.send(self.sock.handle, buf, MsgFlags::NONE)
    }

    /// Writes all of `buf`, waiting for room even in non-blocking mode.
    pub fn write_all(&self, mut buf: &[u8]) -> Result<(), Errno> {
        while !buf.is_empty() {
            match self.write(buf) {
                Ok(n) => buf = buf.get(n..).unwrap_or(&[]),
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.sock.handle, PollEvents::OUT)];
                    self.sock.client.poll(&mut fds, None)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn shutdown(&self, how: Shutdown) -> Result<(), Errno> {
        self.sock.client.shutdown(self.sock.handle, how)
    }

    pub fn local_addr(&self) -> Result<SockAddr, Errno> {
        self.sock.client.getsockname(self.sock.handle)
    }

    pub fn peer_addr(&self) -> Result<SockAddr, Errno> {
        self.sock.client.getpeername(self.sock.handle)
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.sock.client.set_nonblocking(self.sock.handle, nonblocking)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> Result<(), Errno> {
        self.sock.client.setsockopt(self.sock.handle, SockOptValue::TcpNoDelay(nodelay))
    }

    pub fn nodelay(&self) -> Result<bool, Errno> {
        get_bool(&self.sock.client, self.sock.handle, SockOpt::TcpNoDelay)
    }

    /// `SO_KEEPALIVE`.
    pub fn set_keepalive(&self, keepalive: bool) -> Result<(), Errno> {
        self.sock.client.setsockopt(self.sock.handle, SockOptValue::KeepAlive(keepalive))
    }

    pub fn keepalive(&self) -> Result<bool, Errno> {
        get_bool(&self.sock.client, self.sock.handle, SockOpt::KeepAlive)
    }

    /// `SO_ERROR`: takes the pending error.
    pub fn take_error(&self) -> Result<Option<Errno>, Errno> {
        match self.sock.client.getsockopt(self.sock.handle, SockOpt::Error)? {
            SockOptValue::Error(e) => Ok(e),
            _ => Err(Errno::EPROTO),
        }
    }

    pub fn handle(&self) -> SocketHandle {
        self.sock.handle
    }

    pub fn client(&self) -> &Arc<Client<T>> {
        &self.sock.client
    }
}

impl<T: Transport> embedded_io::ErrorType for TcpStream<T> {
    type Error = Errno;
}

impl<T: Transport> embedded_io::Read for TcpStream<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        TcpStream::read(self, buf)
    }
}

impl<T: Transport> embedded_io::Write for TcpStream<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        TcpStream::write(self, buf)
    }
    /// Data is handed to the server on `write`; nothing is buffered in the client.
    fn flush(&mut self) -> Result<(), Errno> {
        Ok(())
    }
}

impl<T: Transport> embedded_io::ReadReady for TcpStream<T> {
    fn read_ready(&mut self) -> Result<bool, Errno> {
        self.sock.ready(PollEvents::IN)
    }
}

impl<T: Transport> embedded_io::WriteReady for TcpStream<T> {
    fn write_ready(&mut self) -> Result<bool, Errno> {
        self.sock.ready(PollEvents::OUT)
    }
}

#[cfg(feature = "std")]
impl<T: Transport> std::io::Read for TcpStream<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        TcpStream::read(self, buf).map_err(Into::into)
    }
}

#[cfg(feature = "std")]
impl<T: Transport> std::io::Write for TcpStream<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        TcpStream::write(self, buf).map_err(Into::into)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A UDP socket, like `std::net::UdpSocket`.
pub struct UdpSocket<T: Transport> {
    sock: Sock<T>,
}

impl<T: Transport> UdpSocket<T> {
    /// `socket` + `bind` (port 0: ephemeral).
    pub fn bind(client: &Arc<Client<T>>, addr: impl Into<SockAddr>) -> Result<Self, Errno> {
        let addr = addr.into();
        let sock = Sock::open(client, domain_of(&addr), SockType::Datagram)?;
        client.bind(sock.handle, &addr)?;
        Ok(UdpSocket { sock })
    }

    /// Sends one datagram (at most 64 KiB).
    pub fn send_to(&self, buf: &[u8], to: impl Into<SockAddr>) -> Result<usize, Errno> {
        self.sock.client.sendto(self.sock.handle, buf, MsgFlags::NONE, &to.into())
    }

    /// Receives one datagram; a longer one is truncated to `buf`.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SockAddr), Errno> {
        self.recv_from_flags(buf, MsgFlags::NONE)
    }

    /// As [`UdpSocket::recv_from`], leaving the datagram queued.
    pub fn peek_from(&self, buf: &mut [u8]) -> Result<(usize, SockAddr), Errno> {
        self.recv_from_flags(buf, MsgFlags::PEEK)
    }

    fn recv_from_flags(&self, buf: &mut [u8], f: MsgFlags) -> Result<(usize, SockAddr), Errno> {
        match self.sock.client.recvfrom(self.sock.handle, buf, f)? {
            (n, Some(from)) => Ok((n, from)),
            (_, None) => Err(Errno::EPROTO),
        }
    }

    /// Sets the default peer for [`UdpSocket::send`]/[`UdpSocket::recv`].
    pub fn connect(&self, addr: impl Into<SockAddr>) -> Result<(), Errno> {
        self.sock.client.connect(self.sock.handle, &addr.into())
    }

    pub fn send(&self, buf: &[u8]) -> Result<usize, Errno> {
        self.sock.client.send(self.sock.handle, buf, MsgFlags::NONE)
    }

    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        self.sock.client.recv(self.sock.handle, buf, MsgFlags::NONE)
    }

    pub fn local_addr(&self) -> Result<SockAddr, Errno> {
        self.sock.client.getsockname(self.sock.handle)
    }

    pub fn peer_addr(&self) -> Result<SockAddr, Errno> {
        self.sock.client.getpeername(self.sock.handle)
    }

    pub fn set_nonblocking(&self, nonblocking: bool) -> Result<(), Errno> {
        self.sock.client.set_nonblocking(self.sock.handle, nonblocking)
    }

    pub fn handle(&self) -> SocketHandle {
        self.sock.handle
    }
}
