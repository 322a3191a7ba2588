//! The client application: shows outbound connections and ephemeral ports.
//!
//! [`exchange`] opens a TCP connection to a target (non-blocking connect, with a deadline),
//! notes the local address the net server chose (an ephemeral port), sends one line, and reads
//! one line back (up to [`MAX_REPLY`] bytes, or until the peer closes). Every step has the same
//! deadline, so an unreachable or silent target ends in `ETIMEDOUT`, never a hang; every
//! failure names its step.
//!
//! The seL4 binary takes the target from the `target` setting of its `config` table in the
//! system description; without one it uses [`DEFAULT_TARGET`], the host as QEMU's user
//! networking shows it to the guest (10.0.2.2), port 7777.
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use libsock::{Client, Errno, MsgFlags, PollEvents, PollFd, SockAddr, SockOpt, SockOptValue, SockType, SocketHandle, Transport};

/// Where the client connects by default: QEMU user networking's host address, port 7777.
pub const DEFAULT_TARGET: SockAddr = SockAddr::v4(10, 0, 2, 2, 7777);

/// The line the client sends.
pub const GREETING: &[u8] = b"hello from the seL4 client\n";

/// The longest reply read.
pub const MAX_REPLY: usize = 1024;

/// What an exchange found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The local address the net server chose (the port is ephemeral).
    pub local: SockAddr,
    /// The target.
    pub peer: SockAddr,
    /// The reply: up to and including the first newline, or what came before the peer closed.
    pub reply: Vec<u8>,
}

/// A failed step and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `socket`, `connect`, `getsockname`, `send` or `recv`.
    pub step: &'static str,
    /// The error.
    pub errno: Errno,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.errno)
    }
}

/// A socket handle closed on drop.
struct Owned<'a, T: Transport> {
    client: &'a Client<T>,
    handle: SocketHandle,
}

impl<T: Transport> Drop for Owned<'_, T> {
    fn drop(&mut self) {
        let _ = self.client.close(self.handle);
    }
}

fn at<E>(step: &'static str) -> impl Fn(E) -> Failure
where
    Errno: From<E>,
{
    move |e| Failure { step, errno: Errno::from(e) }
}

/// Waits for `events` on `h` until `deadline`; `ETIMEDOUT` after it.
fn wait_for<T: Transport>(client: &Client<T>, h: SocketHandle, events: PollEvents, deadline: Duration) -> Result<PollEvents, Errno> {
    let now = client.transport().now();
    if now >= deadline {
        return Err(Errno::ETIMEDOUT);
    }
    let mut fds = [PollFd::new(h, events)];
    if client.poll(&mut fds, Some(deadline - now))? == 0 {
        return Err(Errno::ETIMEDOUT);
    }
    Ok(fds.first().map_or(PollEvents::NONE, |f| f.revents))
}

/// Connects to `target`, sends `line`, reads one line back; everything within `timeout`.
pub fn exchange<T: Transport>(client: &Arc<Client<T>>, target: SockAddr, line: &[u8], timeout: Duration) -> Result<Report, Failure> {
    let c: &Client<T> = client;
    let deadline = c.transport().now().saturating_add(timeout);
    let s = Owned { client: c, handle: c.socket(target.domain(), SockType::Stream).map_err(at("socket"))? };
    let h = s.handle;
    c.set_nonblocking(h, true).map_err(at("socket"))?;

    match c.connect(h, &target) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(Failure { step: "connect", errno: e }),
    }
    wait_for(c, h, PollEvents::OUT, deadline).map_err(at("connect"))?;
    match c.getsockopt(h, SockOpt::Error).map_err(at("connect"))? {
        SockOptValue::Error(None) => {}
        SockOptValue::Error(Some(e)) => return Err(Failure { step: "connect", errno: e }),
        _ => return Err(Failure { step: "connect", errno: Errno::EPROTO }),
    }
    let local = c.getsockname(h).map_err(at("getsockname"))?;

    let mut sent = 0;
    while sent < line.len() {
        match c.send(h, line.get(sent..).unwrap_or(&[]), MsgFlags::NONE) {
            Ok(n) => sent += n,
            Err(Errno::EAGAIN) => {
                wait_for(c, h, PollEvents::OUT, deadline).map_err(at("send"))?;
            }
            Err(e) => return Err(Failure { step: "send", errno: e }),
        }
    }

    let mut reply = Vec::new();
    let mut buf = [0u8; 256];
    while reply.len() < MAX_REPLY && !reply.contains(&b'\n') {
        let want = (MAX_REPLY - reply.len()).min(buf.len());
        match c.recv(h, buf.get_mut(..want).unwrap_or(&mut []), MsgFlags::NONE) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(buf.get(..n).unwrap_or(&[])),
            Err(Errno::EAGAIN) => {
                wait_for(c, h, PollEvents::IN, deadline).map_err(at("recv"))?;
            }
            Err(e) => return Err(Failure { step: "recv", errno: e }),
        }
    }
    if let Some(nl) = reply.iter().position(|&b| b == b'\n') {
        reply.truncate(nl + 1);
    }
    Ok(Report { local, peer: target, reply })
}
