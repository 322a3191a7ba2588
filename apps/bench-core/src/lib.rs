//! The bench application's measurements, each a load generator with a result that is checked,
//! not just timed:
//!
//! * [`connection_rate`]: `total` TCP connections to an echo server, at most `concurrency` in
//!   flight at once on one thread (non-blocking connects, one [`Client::poll`] per turn); each
//!   sends one byte and must get it back before it counts.
//! * [`download`]: `GET /bytes/N` from the HTTP application; every byte is compared with
//!   [`http_core::pattern`].
//! * [`upload`]: `POST /sink` of N pattern bytes; the answer's length and SHA-256 must match what
//!   was sent.
//!
//! Times come from the transport's clock ([`libsock::Transport::now`]). Every wait has a
//! deadline, so a missing or silent target ends in an error, never a hang.
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::{self, Write};
use core::time::Duration;

use libsock::{Client, Errno, MsgFlags, PollEvents, PollFd, SockAddr, SockOpt, SockOptValue, SockType, SocketHandle, TcpStream, Transport};
use sha2::{Digest, Sha256};

/// Why a measurement failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// A socket call failed at this step.
    Net(&'static str, Errno),
    /// The server answered something wrong.
    Protocol(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Net(step, e) => write!(f, "{step}: {e}"),
            BenchError::Protocol(what) => write!(f, "bad answer: {what}"),
        }
    }
}

fn net(step: &'static str) -> impl Fn(Errno) -> BenchError {
    move |e| BenchError::Net(step, e)
}

/// `n` bytes per `elapsed` as "12.34 MiB/s".
pub fn per_second(n: u64, elapsed: Duration, unit: u64, name: &str) -> String {
    let us = elapsed.as_micros().max(1);
    let hundredths = u128::from(n) * 100 * 1_000_000 / us / u128::from(unit.max(1));
    format!("{}.{:02} {name}/s", hundredths / 100, hundredths % 100)
}

/// A verified transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// Body bytes moved (and verified).
    pub bytes: u64,
    /// From the request to the last byte of the answer.
    pub elapsed: Duration,
}

impl fmt::Display for Transfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes in {} ms = {} (verified)", self.bytes, self.elapsed.as_millis(), per_second(self.bytes, self.elapsed, 1 << 20, "MiB"))
    }
}

/// A connection-rate run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Connections that completed their one-byte echo.
    pub completed: u64,
    /// Connections that failed (refused, reset, timed out, wrong byte).
    pub failed: u64,
    /// Most connections in flight at once.
    pub max_in_flight: usize,
    /// The whole run.
    pub elapsed: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections ({} failed, up to {} at once) in {} ms = {}",
            self.completed,
            self.failed,
            self.max_in_flight,
            self.elapsed.as_millis(),
            per_second(self.completed, self.elapsed, 1, "conn")
        )
    }
}

/// A non-blocking stream with a deadline on every wait.
struct Io<T: Transport> {
    s: TcpStream<T>,
    deadline: Duration,
}

impl<T: Transport> Io<T> {
    fn connect(client: &Arc<Client<T>>, to: SockAddr, timeout: Duration) -> Result<Io<T>, BenchError> {
        let deadline = client.transport().now().saturating_add(timeout);
        let s = TcpStream::connect(client, to).map_err(net("connect"))?;
        s.set_nonblocking(true).map_err(net("connect"))?;
        Ok(Io { s, deadline })
    }

    fn wait(&self, ev: PollEvents, step: &'static str) -> Result<(), BenchError> {
        let c = self.s.client();
        let now = c.transport().now();
        let mut fds = [PollFd::new(self.s.handle(), ev)];
        if now >= self.deadline || c.poll(&mut fds, Some(self.deadline - now)).map_err(net(step))? == 0 {
            return Err(BenchError::Net(step, Errno::ETIMEDOUT));
        }
        Ok(())
    }

    fn write_all(&self, mut data: &[u8]) -> Result<(), BenchError> {
        while !data.is_empty() {
            match self.s.write(data) {
                Ok(n) => data = data.get(n..).unwrap_or(&[]),
                Err(Errno::EAGAIN) => self.wait(PollEvents::OUT, "send")?,
                Err(e) => return Err(BenchError::Net("send", e)),
            }
        }
        Ok(())
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, BenchError> {
        loop {
            match self.s.read(buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EAGAIN) => self.wait(PollEvents::IN, "recv")?,
                Err(e) => return Err(BenchError::Net("recv", e)),
            }
        }
    }

    /// Reads a response head; returns (status, Content-Length, body bytes read past the head).
    fn response_head(&self) -> Result<(u16, u64, Vec<u8>), BenchError> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            if buf.len() > 8192 {
                return Err(BenchError::Protocol("response head over 8 KiB".into()));
            }
            let n = self.read(&mut chunk)?;
            if n == 0 {
                return Err(BenchError::Protocol("closed before the response head".into()));
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        };
        let head = core::str::from_utf8(buf.get(..end).unwrap_or(&[])).map_err(|_| BenchError::Protocol("head not UTF-8".into()))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| BenchError::Protocol("no status line".into()))?;
        let len = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| http_core::request::parse_decimal(v.trim()))
            .ok_or_else(|| BenchError::Protocol("no Content-Length".into()))?;
        Ok((status, len, buf.get(end + 4..).unwrap_or(&[]).to_vec()))
    }
}

/// `GET /bytes/n` from `http`; every byte checked against the pattern.
pub fn download<T: Transport>(client: &Arc<Client<T>>, http: SockAddr, n: u64, timeout: Duration) -> Result<Transfer, BenchError> {
    let start = client.transport().now();
    let io = Io::connect(client, http, timeout)?;
    io.write_all(format!("GET /bytes/{n} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes())?;
    let (status, len, first) = io.response_head()?;
    if status != 200 || len != n {
        return Err(BenchError::Protocol(format!("status {status}, Content-Length {len} for {n} bytes")));
    }
    let mut pos = 0u64;
    let mut expect = vec![0u8; 64 * 1024];
    let mut check = |data: &[u8], pos: &mut u64| -> Result<(), BenchError> {
        let part = expect.get_mut(..data.len()).unwrap_or(&mut []);
        http_core::pattern(*pos, part);
        if part != data || *pos + data.len() as u64 > n {
            return Err(BenchError::Protocol(format!("body differs from the pattern near byte {pos}")));
        }
        *pos += data.len() as u64;
        Ok(())
    };
    check(&first, &mut pos)?;
    let mut buf = vec![0u8; 64 * 1024];
    while pos < n {
        let want = usize::try_from(n - pos).unwrap_or(usize::MAX).min(buf.len());
        let got = io.read(buf.get_mut(..want).unwrap_or(&mut []))?;
        if got == 0 {
            return Err(BenchError::Protocol(format!("closed after {pos} of {n} bytes")));
        }
        check(buf.get(..got).unwrap_or(&[]), &mut pos)?;
    }
    Ok(Transfer { bytes: n, elapsed: client.transport().now().saturating_sub(start) })
}

/// `POST /sink` of `n` pattern bytes to `http`; the answer must give back `n` and the SHA-256.
pub fn upload<T: Transport>(client: &Arc<Client<T>>, http: SockAddr, n: u64, timeout: Duration) -> Result<Transfer, BenchError> {
    let start = client.transport().now();
    let io = Io::connect(client, http, timeout)?;
    io.write_all(format!("POST /sink HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n").as_bytes())?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    while pos < n {
        let k = usize::try_from(n - pos).unwrap_or(usize::MAX).min(chunk.len());
        let part = chunk.get_mut(..k).unwrap_or(&mut []);
        http_core::pattern(pos, part);
        hasher.update(&*part);
        io.write_all(part)?;
        pos += k as u64;
    }
    let mut want = format!("{{\"length\":{n},\"sha256\":\"");
    for b in hasher.finalize().iter() {
        let _ = write!(want, "{b:02x}");
    }
    want.push_str("\"}\n");
    let (status, len, mut body) = io.response_head()?;
    let mut buf = [0u8; 256];
    while (body.len() as u64) < len && body.len() < 1024 {
        let got = io.read(&mut buf)?;
        if got == 0 {
            break;
        }
        body.extend_from_slice(buf.get(..got).unwrap_or(&[]));
    }
    if status != 200 || body != want.as_bytes() {
        return Err(BenchError::Protocol(format!("status {status}, answer {:?}, expected {want:?}", String::from_utf8_lossy(&body))));
    }
    Ok(Transfer { bytes: n, elapsed: client.transport().now().saturating_sub(start) })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Echoing,
}

struct Slot {
    h: SocketHandle,
    phase: Phase,
    deadline: Duration,
}

/// `total` one-byte echo connections to `echo`, `concurrency` at a time; each must finish
/// within `timeout`. Errors of the session itself (e.g. the net server restarted) end the run.
pub fn connection_rate<T: Transport>(client: &Arc<Client<T>>, echo: SockAddr, total: u64, concurrency: usize, timeout: Duration) -> Result<Rate, Errno> {
    let c: &Client<T> = client;
    let start = c.transport().now();
    let (mut started, mut completed, mut failed, mut max_in_flight) = (0u64, 0u64, 0u64, 0usize);
    let mut slots: Vec<Slot> = Vec::new();
    let mut fds: Vec<PollFd> = Vec::new();
    let fatal = |e: Errno| e == Errno::ServerRestarted;
    while completed + failed < total {
        while slots.len() < concurrency.max(1) && started < total {
            started += 1;
            let h = match c.socket(echo.domain(), SockType::Stream) {
                Ok(h) => h,
                Err(e) if fatal(e) => return Err(e),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            };
            let r = c.set_nonblocking(h, true).and_then(|()| match c.connect(h, &echo) {
                Ok(()) | Err(Errno::EINPROGRESS) => Ok(()),
                Err(e) => Err(e),
            });
            match r {
                Ok(()) => slots.push(Slot { h, phase: Phase::Connecting, deadline: c.transport().now().saturating_add(timeout) }),
                Err(e) => {
                    let _ = c.close(h);
                    if fatal(e) {
                        return Err(e);
                    }
                    failed += 1;
                }
            }
        }
        max_in_flight = max_in_flight.max(slots.len());
        if slots.is_empty() {
            continue;
        }
        fds.clear();
        fds.extend(slots.iter().map(|s| PollFd::new(s.h, if s.phase == Phase::Connecting { PollEvents::OUT } else { PollEvents::IN })));
        let now = c.transport().now();
        let next = slots.iter().map(|s| s.deadline).min().unwrap_or(now);
        c.poll(&mut fds, Some(next.saturating_sub(now)))?;
        let now = c.transport().now();
        let mut i = 0;
        while let (Some(slot), Some(fd)) = (slots.get_mut(i), fds.get(i)) {
            // Some(true): completed, Some(false): failed, None: still going.
            let outcome = if fd.revents.is_empty() {
                (now >= slot.deadline).then_some(false)
            } else {
                match slot.phase {
                    Phase::Connecting => match c.getsockopt(slot.h, SockOpt::Error) {
                        Ok(SockOptValue::Error(None)) => match c.send(slot.h, b"x", MsgFlags::NONE) {
                            Ok(1) => {
                                slot.phase = Phase::Echoing;
                                None
                            }
                            Err(Errno::EAGAIN) => None,
                            Err(e) if fatal(e) => return Err(e),
                            _ => Some(false),
                        },
                        Err(e) if fatal(e) => return Err(e),
                        _ => Some(false),
                    },
                    Phase::Echoing => {
                        let mut b = [0u8; 1];
                        match c.recv(slot.h, &mut b, MsgFlags::NONE) {
                            Ok(1) => Some(b == *b"x"),
                            Err(Errno::EAGAIN) => (now >= slot.deadline).then_some(false),
                            Err(e) if fatal(e) => return Err(e),
                            _ => Some(false),
                        }
                    }
                }
            };
            match outcome {
                None => i += 1,
                Some(ok) => {
                    let _ = c.close(slot.h);
                    if ok {
                        completed += 1;
                    } else {
                        failed += 1;
                    }
                    slots.swap_remove(i);
                    fds.swap_remove(i);
                }
            }
        }
    }
    Ok(Rate { completed, failed, max_in_flight, elapsed: c.transport().now().saturating_sub(start) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_two_decimals() {
        assert_eq!(per_second(3 << 20, Duration::from_secs(2), 1 << 20, "MiB"), "1.50 MiB/s");
        assert_eq!(per_second(1000, Duration::from_millis(250), 1, "conn"), "4000.00 conn/s");
        assert_eq!(per_second(5, Duration::ZERO, 1, "conn"), "5000000.00 conn/s", "zero time counts as 1 µs");
    }
}
