//! The HTTP/1.1 application on port 80: one thread, many keep-alive connections, streamed
//! bodies of any size in fixed buffers. Generic over [`libsock::Transport`]; the seL4 binary
//! (`apps/http`) only creates the client and runs [`HttpApp`].
//!
//! | request | answer |
//! |---|---|
//! | `GET /` | 200 `text/html`: what this system is, and this table |
//! | `GET /stats` | 200 `application/json`: [`stats::render`] (application counters; the net server's from a [`StatsSource`], normally [`ClientStats`]) |
//! | `GET /bytes/N` | 200 `application/octet-stream`, N bytes of [`pattern`] (N ≤ [`MAX_BYTES`]), generated as the connection drains |
//! | `POST /sink` | reads the body (`Content-Length` ≤ [`MAX_SINK`]) and answers 200 `application/json` `{"length":N,"sha256":"<hex>"}` |
//!
//! `HEAD` is accepted wherever `GET` is; `POST /sink` with `Expect: 100-continue` gets the
//! interim `100 Continue` first. Errors: 400 (malformed request, bad N, HTTP/1.1
//! without `Host`), 404 (unknown path), 405 (known path, wrong method; with `Allow`), 411
//! (`POST /sink` without `Content-Length`), 413 (body over [`MAX_SINK`]), 431 (head over the
//! input buffer or over 64 fields), 501 (`Transfer-Encoding`: chunked bodies are not
//! supported), 505 (HTTP/2 and later in an HTTP/1 request line). An unparsable or
//! unacceptable request (400 for its syntax or missing `Host`, 411, 413, 431, 501, 505) is
//! answered and the connection closed; a well-formed request for something that is not there
//! (404, 405, 400 for a bad N) keeps the connection (a body of up to 64 KiB is read and
//! discarded; a larger one closes it).
//!
//! Connections: HTTP/1.1 is persistent unless `Connection: close`; HTTP/1.0 only with
//! `Connection: keep-alive`. Pipelined requests are answered in order. Every state is bounded:
//! the head must fit the input buffer ([`config`]: 16 KiB), responses are produced into the
//! 32 KiB output buffer as it drains, the sink hashes as it reads, and nothing is read while a
//! response is not yet handed to the net server (netloop's backpressure).
#![no_std]
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod request;
pub mod stats;

use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt::Write;
use core::time::Duration;

use libsock::{Client, Errno, SockAddr, Transport};
use netloop::{Config, Counters, EventLoop, Handler, Output, Step, TcpServer};
use sha2::{Digest, Sha256};

use request::{ParseError, Version};
pub use stats::{AppStats, ClientStats, NetStats, NoNetStats, RestartStats, StatsSource, WorkerStats};

/// The HTTP port.
pub const PORT: u16 = 80;
/// Largest `N` of `GET /bytes/N` (16 GiB).
pub const MAX_BYTES: u64 = 1 << 34;
/// Largest `POST /sink` body (16 GiB).
pub const MAX_SINK: u64 = 1 << 34;
/// Largest body of another request that is read and discarded to keep the connection.
pub const MAX_DISCARD: u64 = 64 * 1024;

/// Byte `i` of the `/bytes` pattern: `(i * 31 + (i >> 8)) mod 251`, with `i` counted from 0 as
/// an unsigned 64-bit number (no overflow below 2^59).
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 8) % 251) as u8
}

/// Fills `buf` with the pattern bytes `offset .. offset + buf.len()`.
pub fn pattern(offset: u64, buf: &mut [u8]) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset.wrapping_add(k as u64));
    }
}

/// Response statuses this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 400 Bad Request.
    BadRequest,
    /// 404 Not Found.
    NotFound,
    /// 405 Method Not Allowed.
    MethodNotAllowed,
    /// 411 Length Required.
    LengthRequired,
    /// 413 Content Too Large.
    ContentTooLarge,
    /// 431 Request Header Fields Too Large.
    HeaderFieldsTooLarge,
    /// 501 Not Implemented.
    NotImplemented,
    /// 505 HTTP Version Not Supported.
    VersionNotSupported,
}

impl Status {
    /// Every status, in the order of [`AppStats::responses`].
    pub const ALL: [Status; 9] = [
        Status::Ok,
        Status::BadRequest,
        Status::NotFound,
        Status::MethodNotAllowed,
        Status::LengthRequired,
        Status::ContentTooLarge,
        Status::HeaderFieldsTooLarge,
        Status::NotImplemented,
        Status::VersionNotSupported,
    ];

    /// The numeric code.
    pub const fn code(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::MethodNotAllowed => 405,
            Status::LengthRequired => 411,
            Status::ContentTooLarge => 413,
            Status::HeaderFieldsTooLarge => 431,
            Status::NotImplemented => 501,
            Status::VersionNotSupported => 505,
        }
    }

    /// The reason phrase.
    pub const fn reason(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::BadRequest => "Bad Request",
            Status::NotFound => "Not Found",
            Status::MethodNotAllowed => "Method Not Allowed",
            Status::LengthRequired => "Length Required",
            Status::ContentTooLarge => "Content Too Large",
            Status::HeaderFieldsTooLarge => "Request Header Fields Too Large",
            Status::NotImplemented => "Not Implemented",
            Status::VersionNotSupported => "HTTP Version Not Supported",
        }
    }

    fn index(self) -> usize {
        Status::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// The page `GET /` returns.
pub const INDEX_HTML: &str = include_str!("index.html");

/// Counters shared by every connection's handler.
#[derive(Debug, Default)]
pub struct HttpCounters {
    requests: Cell<u64>,
    responses: [Cell<u64>; Status::ALL.len()],
    bytes_served: Cell<u64>,
    bytes_sunk: Cell<u64>,
}

fn add(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// What every handler shares: counters and the statistics source.
pub struct Shared {
    counters: HttpCounters,
    conns: Rc<Counters>,
    source: Rc<dyn StatsSource>,
}

impl Shared {
    /// The application's counters now.
    pub fn snapshot(&self) -> AppStats {
        let mut responses = [0; Status::ALL.len()];
        for (r, c) in responses.iter_mut().zip(self.counters.responses.iter()) {
            *r = c.get();
        }
        AppStats {
            connections_accepted: self.conns.accepted.get(),
            connections_open: self.conns.open.get(),
            requests: self.counters.requests.get(),
            responses,
            bytes_served: self.counters.bytes_served.get(),
            bytes_sunk: self.counters.bytes_sunk.get(),
        }
    }
}

/// What a request asked for, decided from its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Index,
    Stats,
    Bytes(u64),
    Error(Status),
}

enum State {
    /// Waiting for a request head.
    Head,
    /// Reading and discarding a request body before answering.
    Discard { left: u64, reply: Reply, head_only: bool, close: bool, keep_alive_10: bool },
    /// Hashing a `/sink` body.
    Sink { left: u64, total: u64, hasher: Sha256, close: bool },
    /// Sending a prepared response (head and body).
    Send { data: Vec<u8>, pos: usize, close: bool },
    /// Sending `/bytes` body bytes `pos .. len`.
    Bytes { pos: u64, len: u64, close: bool },
}

/// One connection's HTTP state machine (a [`netloop::Handler`]).
pub struct Http {
    state: State,
    shared: Rc<Shared>,
}

impl Http {
    /// A connection sharing `shared`'s counters.
    pub fn new(shared: Rc<Shared>) -> Http {
        Http { state: State::Head, shared }
    }

    fn count(&self, s: Status) {
        if let Some(c) = self.shared.counters.responses.get(s.index()) {
            add(c, 1);
        }
    }

    /// Writes a response head into `out` (which is empty, so it fits).
    fn head(&self, out: &mut Output<'_>, status: Status, ctype: &str, len: u64, close: bool, keep_alive_10: bool) -> bool {
        self.count(status);
        let allow = status == Status::MethodNotAllowed;
        write!(out, "HTTP/1.1 {} {}\r\nServer: sel4-netserver-http\r\nContent-Type: {ctype}\r\nContent-Length: {len}\r\n", status.code(), status.reason()).is_ok()
            && (!allow || out.write_all(b"Allow: GET, HEAD\r\n"))
            && (!close || out.write_all(b"Connection: close\r\n"))
            && (close || !keep_alive_10 || out.write_all(b"Connection: keep-alive\r\n"))
            && out.write_all(b"\r\n")
    }

    /// Ends a response: close, or wait for the next request.
    fn done(&mut self, consumed: usize, close: bool) -> Step {
        self.state = State::Head;
        if close {
            Step::close(consumed)
        } else {
            Step::read(consumed)
        }
    }

    /// Starts the answer to `reply` (the body of the request, if any, has been read).
    fn respond(&mut self, reply: Reply, head_only: bool, close: bool, keep_alive_10: bool, consumed: usize, out: &mut Output<'_>) -> Step {
        let (status, ctype, body): (Status, &str, Vec<u8>) = match reply {
            Reply::Index => (Status::Ok, "text/html; charset=utf-8", INDEX_HTML.as_bytes().to_vec()),
            Reply::Stats => {
                let mut s = String::new();
                let net = self.shared.source.net_stats();
                stats::render(&mut s, &self.shared.snapshot(), net.as_ref());
                (Status::Ok, "application/json", s.into_bytes())
            }
            Reply::Error(st) => {
                let mut s = String::new();
                let _ = writeln!(s, "{} {}", st.code(), st.reason());
                (st, "text/plain; charset=utf-8", s.into_bytes())
            }
            Reply::Bytes(n) => {
                if !self.head(out, Status::Ok, "application/octet-stream", n, close, keep_alive_10) {
                    return Step::close(consumed);
                }
                if head_only || n == 0 {
                    return self.done(consumed, close);
                }
                self.state = State::Bytes { pos: 0, len: n, close };
                return self.bytes(consumed, out);
            }
        };
        if !self.head(out, status, ctype, body.len() as u64, close, keep_alive_10) {
            return Step::close(consumed);
        }
        if head_only {
            return self.done(consumed, close);
        }
        self.state = State::Send { data: body, pos: 0, close };
        self.send(consumed, out)
    }

    fn send(&mut self, consumed: usize, out: &mut Output<'_>) -> Step {
        let State::Send { data, pos, close } = &mut self.state else { return Step::close(consumed) };
        *pos += out.write(data.get(*pos..).unwrap_or(&[]));
        if *pos >= data.len() {
            let close = *close;
            self.done(consumed, close)
        } else {
            Step::write(consumed)
        }
    }

    fn bytes(&mut self, consumed: usize, out: &mut Output<'_>) -> Step {
        let State::Bytes { pos, len, close } = &mut self.state else { return Step::close(consumed) };
        let left = *len - *pos;
        let start = *pos;
        let n = out.fill(usize::try_from(left).unwrap_or(usize::MAX), |buf| {
            pattern(start, buf);
            buf.len()
        });
        *pos += n as u64;
        add(&self.shared.counters.bytes_served, n as u64);
        if *pos >= *len {
            let close = *close;
            self.done(consumed, close)
        } else {
            Step::write(consumed)
        }
    }

    fn sink(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step {
        let State::Sink { left, total, hasher, close } = &mut self.state else { return Step::close(0) };
        let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        let body = input.get(..take).unwrap_or(&[]);
        hasher.update(body);
        *left -= take as u64;
        add(&self.shared.counters.bytes_sunk, take as u64);
        if *left > 0 {
            // The client stopped sending before the announced length: nothing to answer.
            return if eof { Step::close(take) } else { Step::read(take) };
        }
        let (total, close) = (*total, *close);
        let digest = core::mem::take(hasher).finalize();
        let mut body = String::with_capacity(100);
        let _ = write!(body, "{{\"length\":{total},\"sha256\":\"");
        for b in digest.iter() {
            let _ = write!(body, "{b:02x}");
        }
        body.push_str("\"}\n");
        if !self.head(out, Status::Ok, "application/json", body.len() as u64, close, false) {
            return Step::close(take);
        }
        self.state = State::Send { data: body.into_bytes(), pos: 0, close };
        self.send(take, out)
    }

    fn discard(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step {
        let State::Discard { left, reply, head_only, close, keep_alive_10 } = &mut self.state else { return Step::close(0) };
        let take = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        *left -= take as u64;
        if *left > 0 {
            return if eof { Step::close(take) } else { Step::read(take) };
        }
        let (reply, head_only, close, keep_alive_10) = (*reply, *head_only, *close, *keep_alive_10);
        self.respond(reply, head_only, close, keep_alive_10, take, out)
    }

    fn request(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step {
        let (head, n) = match request::parse(input) {
            Ok(r) => r,
            Err(ParseError::Incomplete) => {
                if eof {
                    // A client that closes between requests is normal; a partial head is not.
                    if input.iter().all(|b| b.is_ascii_whitespace()) {
                        return Step::close(input.len());
                    }
                    return self.reject(Status::BadRequest, input.len(), out);
                }
                if input.len() >= HEAD_LIMIT {
                    return self.reject(Status::HeaderFieldsTooLarge, input.len(), out);
                }
                return Step::read(0);
            }
            Err(ParseError::Reject(s)) => return self.reject(s, input.len(), out),
        };
        add(&self.shared.counters.requests, 1);
        let close = !head.persistent();
        let keep_alive_10 = head.version == Version::Http10 && !close;
        if head.transfer_encoding {
            return self.reject(Status::NotImplemented, input.len(), out);
        }
        if head.version == Version::Http11 && !head.host {
            return self.reject(Status::BadRequest, input.len(), out);
        }
        let body = head.content_length.unwrap_or(0);
        let (get, post) = (head.method == "GET" || head.method == "HEAD", head.method == "POST");
        let head_only = head.method == "HEAD";
        let reply = match head.path {
            "/" | "/index.html" if get => Reply::Index,
            "/stats" if get => Reply::Stats,
            "/sink" if post => {
                let Some(len) = head.content_length else { return self.reject(Status::LengthRequired, input.len(), out) };
                if len > MAX_SINK {
                    return self.reject(Status::ContentTooLarge, input.len(), out);
                }
                // curl and others wait for this before sending a large body (RFC 9110 §10.1.1).
                if head.expect_continue && head.version == Version::Http11 && !out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n") {
                    return Step::close(input.len());
                }
                self.state = State::Sink { left: len, total: len, hasher: Sha256::new(), close };
                let rest = input.get(n..).unwrap_or(&[]);
                let step = self.sink(rest, eof, out);
                return Step { consumed: n + step.consumed, next: step.next };
            }
            "/" | "/index.html" | "/stats" => Reply::Error(Status::MethodNotAllowed),
            "/sink" => Reply::Error(Status::MethodNotAllowed),
            p => match p.strip_prefix("/bytes/") {
                Some(num) if get => match request::parse_decimal(num) {
                    Some(n) if n <= MAX_BYTES => Reply::Bytes(n),
                    _ => Reply::Error(Status::BadRequest),
                },
                Some(_) => Reply::Error(Status::MethodNotAllowed),
                None => Reply::Error(Status::NotFound),
            },
        };
        if body > 0 {
            if body > MAX_DISCARD {
                return self.respond(reply, head_only, true, false, input.len(), out);
            }
            self.state = State::Discard { left: body, reply, head_only, close, keep_alive_10 };
            let step = self.discard(input.get(n..).unwrap_or(&[]), eof, out);
            return Step { consumed: n + step.consumed, next: step.next };
        }
        self.respond(reply, head_only, close, keep_alive_10, n, out)
    }

    /// Answers `status` and closes (the rest of the input is dropped).
    fn reject(&mut self, status: Status, consumed: usize, out: &mut Output<'_>) -> Step {
        self.respond(Reply::Error(status), false, true, false, consumed, out)
    }
}

/// A head that has not ended within this many bytes is answered 431 (the input buffer of
/// [`config`] is this size).
pub const HEAD_LIMIT: usize = 16 * 1024;

impl Handler for Http {
    fn process(&mut self, input: &[u8], eof: bool, out: &mut Output<'_>) -> Step {
        match self.state {
            State::Head => self.request(input, eof, out),
            State::Discard { .. } => self.discard(input, eof, out),
            State::Sink { .. } => self.sink(input, eof, out),
            State::Send { .. } => self.send(0, out),
            State::Bytes { .. } => self.bytes(0, out),
        }
    }
}

/// The loop configuration: 16 KiB in (the longest head), 32 KiB out, 128 connections,
/// keep-alive connections idle for 60 s are closed.
pub fn config() -> Config {
    Config {
        in_cap: HEAD_LIMIT,
        out_cap: 32 * 1024,
        max_conns: 128,
        idle_timeout: Some(Duration::from_secs(60)),
        nodelay: true,
        ..Config::default()
    }
}

/// Where an [`HttpApp`] listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The listeners' addresses.
    pub addrs: Vec<SockAddr>,
    /// Why IPv6 is not served, if it is not.
    pub v6_error: Option<Errno>,
}

type NewHttp = alloc::boxed::Box<dyn FnMut(SockAddr) -> Http>;

/// The HTTP server on one event loop.
pub struct HttpApp<T: Transport> {
    tcp: TcpServer<T, Http, NewHttp>,
    shared: Rc<Shared>,
    ev: EventLoop<T>,
}

impl<T: Transport> HttpApp<T> {
    /// Listens on `0.0.0.0:port` (required) and `[::]:port` (if the net server allows).
    /// `source` feeds `/stats`.
    pub fn bind(client: &Arc<Client<T>>, port: u16, source: Rc<dyn StatsSource>) -> Result<(HttpApp<T>, Bound), Errno> {
        let conns = Rc::new(Counters::default());
        let shared = Rc::new(Shared { counters: HttpCounters::default(), conns: conns.clone(), source });
        let s2 = shared.clone();
        let make: NewHttp = alloc::boxed::Box::new(move |_peer| Http::new(s2.clone()));
        let mut tcp = TcpServer::with_counters(client, config(), conns, make);
        let mut bound = alloc::vec![tcp.listen(SockAddr::any_v4(port))?];
        let v6 = match tcp.listen(SockAddr::any_v6(port)) {
            Ok(a) => {
                bound.push(a);
                None
            }
            Err(Errno::ServerRestarted) => return Err(Errno::ServerRestarted),
            Err(e) => Some(e),
        };
        Ok((HttpApp { tcp, shared, ev: EventLoop::new(client) }, Bound { addrs: bound, v6_error: v6 }))
    }

    /// One turn of the loop, waiting at most `max_wait` for something to happen.
    pub fn run_once(&mut self, max_wait: Option<Duration>) -> Result<usize, Errno> {
        self.ev.run_once(&mut [&mut self.tcp], max_wait)
    }

    /// The application's counters now (what `/stats` reports under `"http"`).
    pub fn stats(&self) -> AppStats {
        self.shared.snapshot()
    }

    /// The connection loop's counters.
    pub fn loop_counters(&self) -> &Counters {
        self.tcp.counters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_fixture() {
        let mut b = [0u8; 6];
        pattern(0, &mut b);
        assert_eq!(b, [0, 31, 62, 93, 124, 155]);
        // i = 256: 256 * 31 + 1 = 7937 = 31 * 251 + 156.
        assert_eq!(pattern_byte(256), 156);
        let mut c = [0u8; 3];
        pattern(255, &mut c);
        assert_eq!(c, [pattern_byte(255), 156, pattern_byte(257)]);
        assert_eq!(pattern_byte(255), (255 * 31 % 251) as u8);
    }

    #[test]
    fn status_lines() {
        assert_eq!(Status::ALL.map(Status::code), [200, 400, 404, 405, 411, 413, 431, 501, 505]);
        assert_eq!(Status::ContentTooLarge.reason(), "Content Too Large");
    }
}
