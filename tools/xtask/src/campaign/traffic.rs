//! The host traffic a fault campaign keeps running, every byte verified:
//!
//! * TCP echo streams: each sends a deterministic byte stream (its own key per connection) and
//!   checks every echoed byte in order, with at most [`WINDOW`] bytes in flight;
//! * HTTP on one keep-alive connection, in turn: `POST /sink` of a deterministic body whose
//!   length and SHA-256 the guest reports (compared with the host's), and `GET /bytes/N` checked
//!   against the pattern of apps/README.md;
//! * UDP echo: numbered datagrams whose content is checked; losses are counted, not failures.
//!
//! A connection that ends other than by our own close (reset, early EOF, a timeout while
//! stopping, a corrupted byte) does not survive; the bytes sent on it that never came back are
//! lost. Streams reconnect after a failure so the campaign keeps measuring.
//!
//! Each TCP activity keeps a [`Flow`]: when it last made progress, and the pauses longer than
//! [`GAP_MIN`] between two progress events, from which the campaign derives the host-observed
//! stall of each fault.

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most bytes an echo stream has sent but not yet seen verified.
pub const WINDOW: u64 = 64 << 10;
/// Largest write of an echo stream.
const CHUNK: usize = 16 << 10;
/// Pauses between progress events shorter than this are not recorded.
pub const GAP_MIN: Duration = Duration::from_millis(20);
/// Poll interval of blocking reads (so that stop and abort are noticed).
const POLL: Duration = Duration::from_millis(200);
/// How long a TCP activity may make no progress at all before its connection is given up.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long stopping may wait for the last bytes to come back.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// 64 bits from 64 bits (SplitMix64's finaliser): the stream generator and the campaign's RNG.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes `offset..offset + buf.len()` of the stream with `key`: byte `o` is byte `o % 8` of
/// `mix(key ^ (o / 8) * K)`, so a shifted, repeated or foreign byte is caught.
pub fn stream_bytes(key: u64, offset: u64, buf: &mut [u8]) {
    let mut block = u64::MAX;
    let mut word = 0u64;
    for (i, b) in buf.iter_mut().enumerate() {
        let o = offset + i as u64;
        if o >> 3 != block {
            block = o >> 3;
            word = mix(key ^ block.wrapping_mul(0x0000_0100_0000_01B3));
        }
        *b = (word >> ((o & 7) * 8)) as u8;
    }
}

/// Byte `i` of `GET /bytes/N` (apps/README.md).
pub fn bytes_pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 8) % 251) as u8
}

/// When a TCP activity last made progress, and its recorded pauses.
#[derive(Default)]
pub struct Flow {
    state: Mutex<FlowState>,
}

#[derive(Default)]
struct FlowState {
    last: Option<Instant>,
    gaps: Vec<(Instant, Instant)>,
}

impl Flow {
    pub fn progressed(&self) {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = s.last {
            if now.duration_since(l) >= GAP_MIN {
                s.gaps.push((l, now));
                // Bounded even if nobody drains it for a long time.
                if s.gaps.len() > 100_000 {
                    s.gaps.drain(..50_000);
                }
            }
        }
        s.last = Some(now);
    }

    pub fn last(&self) -> Option<Instant> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).last
    }

    /// The recorded pauses, removed.
    pub fn take_gaps(&self) -> Vec<(Instant, Instant)> {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()).gaps)
    }
}

/// Counters of everything the traffic did (all monotonic).
#[derive(Default)]
pub struct Counters {
    /// Echo streams: bytes written, bytes echoed back and matching, bytes echoed back wrong,
    /// bytes written on connections that died and never came back.
    pub echo_sent: AtomicU64,
    pub echo_verified: AtomicU64,
    pub echo_corrupted: AtomicU64,
    pub echo_lost: AtomicU64,
    /// HTTP: upload bytes confirmed by the guest's length and SHA-256, download bytes matching
    /// the pattern, bytes of requests that failed, bytes found wrong.
    pub http_up_verified: AtomicU64,
    pub http_down_verified: AtomicU64,
    pub http_lost: AtomicU64,
    pub http_corrupted: AtomicU64,
    pub http_requests: AtomicU64,
    /// TCP connections (echo and HTTP): connected, ended by our own clean close, failed.
    pub tcp_established: AtomicU64,
    pub tcp_survived: AtomicU64,
    pub tcp_failed: AtomicU64,
    /// UDP echo: datagrams sent, distinct ones echoed intact, echoed wrong, duplicates.
    pub udp_sent: AtomicU64,
    pub udp_received: AtomicU64,
    pub udp_corrupted: AtomicU64,
    pub udp_duplicates: AtomicU64,
    /// The first problems, as text (time since start, what).
    pub problems: Mutex<Vec<String>>,
}

impl Counters {
    pub fn problem(&self, start: Instant, what: String) {
        let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() < 200 {
            p.push(format!("{:9.3} s: {what}", start.elapsed().as_secs_f64()));
        }
    }
}

/// What the traffic is sent to and how much of it.
#[derive(Clone, Debug)]
pub struct Config {
    pub echo: SocketAddr,
    pub http: Option<SocketAddr>,
    pub streams: usize,
    /// Bytes per second each echo stream sends at most.
    pub stream_rate: u64,
    /// Bytes per second the HTTP activity moves at most (averaged over its requests).
    pub http_rate: u64,
    pub udp: bool,
    pub udp_interval: Duration,
    pub seed: u64,
}

/// The running traffic.
pub struct Traffic {
    pub counters: Arc<Counters>,
    /// One per echo stream, then the HTTP activity's.
    pub flows: Vec<(String, Arc<Flow>)>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    udp_done: Option<Arc<AtomicBool>>,
}

struct Ctx {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    start: Instant,
}

impl Traffic {
    pub fn start(cfg: &Config, start: Instant) -> std::io::Result<Traffic> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let abort = Arc::new(AtomicBool::new(false));
        let mut flows = Vec::new();
        let mut threads = Vec::new();
        let ctx = || {
            Arc::new(Ctx {
                counters: counters.clone(),
                stop: stop.clone(),
                abort: abort.clone(),
                start,
            })
        };
        for i in 0..cfg.streams {
            let flow = Arc::new(Flow::default());
            flows.push((format!("echo stream {i}"), flow.clone()));
            let (c, addr, rate) = (ctx(), cfg.echo, cfg.stream_rate);
            let seed = mix(cfg.seed ^ (i as u64 + 1) << 40);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("echo-{i}"))
                    .spawn(move || echo_stream(&c, addr, rate, seed, &flow))?,
            );
        }
        if let Some(addr) = cfg.http {
            let flow = Arc::new(Flow::default());
            flows.push(("http".to_string(), flow.clone()));
            let (c, seed, rate) = (ctx(), mix(cfg.seed ^ 0x4854_5450), cfg.http_rate);
            threads.push(
                std::thread::Builder::new()
                    .name("http".into())
                    .spawn(move || http_loop(&c, addr, seed, rate, &flow))?,
            );
        }
        let mut udp_done = None;
        if cfg.udp {
            let done = Arc::new(AtomicBool::new(false));
            let (c, addr, every, key) = (
                ctx(),
                cfg.echo,
                cfg.udp_interval,
                mix(cfg.seed ^ 0x0055_4450),
            );
            let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            sock.connect(addr)?;
            sock.set_read_timeout(Some(POLL))?;
            let rx = sock.try_clone()?;
            let seen = Arc::new(Mutex::new(Vec::<bool>::new()));
            let (c2, seen2, done2) = (c.clone(), seen.clone(), done.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("udp-tx".into())
                    .spawn(move || {
                        udp_sender(&c, &sock, every, key);
                    })?,
            );
            threads.push(
                std::thread::Builder::new()
                    .name("udp-rx".into())
                    .spawn(move || {
                        udp_receiver(&c2, &rx, key, &seen2, &done2);
                    })?,
            );
            udp_done = Some(done);
        }
        Ok(Traffic {
            counters,
            flows,
            stop,
            abort,
            threads,
            udp_done,
        })
    }

    /// Stops sending, lets every connection drain and close cleanly (or fail), and waits for the
    /// threads. With `abort`, nothing is drained (the guest is gone).
    pub fn finish(mut self, abort: bool) -> Arc<Counters> {
        if abort {
            self.abort.store(true, SeqCst);
        }
        self.stop.store(true, SeqCst);
        // The UDP receiver keeps listening a moment for the last echoes.
        if let Some(done) = &self.udp_done {
            std::thread::sleep(if abort {
                Duration::ZERO
            } else {
                Duration::from_secs(1)
            });
            done.store(true, SeqCst);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.counters.clone()
    }
}

fn connect(c: &Ctx, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(POLL))?;
    s.set_write_timeout(Some(POLL))?;
    c.counters.tcp_established.fetch_add(1, SeqCst);
    Ok(s)
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// One echo stream: connections one after the other until stopped.
fn echo_stream(c: &Ctx, addr: SocketAddr, rate: u64, seed: u64, flow: &Arc<Flow>) {
    let mut n = 0u64;
    while !c.stop.load(SeqCst) {
        let key = mix(seed ^ n);
        n += 1;
        match connect(c, addr) {
            Ok(s) => match echo_connection(c, s, rate, key, flow) {
                Ok(()) => {
                    c.counters.tcp_survived.fetch_add(1, SeqCst);
                    return;
                }
                Err(why) => {
                    c.counters.tcp_failed.fetch_add(1, SeqCst);
                    c.counters
                        .problem(c.start, format!("echo connection {key:016x}: {why}"));
                }
            },
            Err(e) => c.counters.problem(c.start, format!("echo connect: {e}")),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Per-connection shared state of an echo stream.
#[derive(Default)]
struct Conn {
    sent: AtomicU64,
    verified: AtomicU64,
    corrupted: AtomicU64,
    failed: AtomicBool,
    /// We shut our sending side down; EOF from the peer is then the clean end.
    closing: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Conn {
    fn fail(&self, why: String) {
        let mut w = self.why.lock().unwrap_or_else(|e| e.into_inner());
        if w.is_none() {
            *w = Some(why);
        }
        self.failed.store(true, SeqCst);
    }
}

/// Runs one echo connection: `Ok` when it ended by our clean close with every byte verified.
fn echo_connection(
    c: &Ctx,
    s: TcpStream,
    rate: u64,
    key: u64,
    flow: &Arc<Flow>,
) -> Result<(), String> {
    let conn = Arc::new(Conn::default());
    let reader = {
        let (conn, flow, mut r) = (
            conn.clone(),
            flow.clone(),
            s.try_clone().map_err(|e| e.to_string())?,
        );
        let (stop, abort, counters) = (c.stop.clone(), c.abort.clone(), c.counters.clone());
        std::thread::spawn(move || {
            echo_reader(&mut r, &conn, &flow, key, &counters, &stop, &abort);
        })
    };
    let mut w = s;
    let mut buf = vec![0u8; CHUNK];
    let began = Instant::now();
    let mut last_write = Instant::now();
    while !c.stop.load(SeqCst) && !conn.failed.load(SeqCst) {
        let sent = conn.sent.load(SeqCst);
        let outstanding =
            sent.saturating_sub(conn.verified.load(SeqCst) + conn.corrupted.load(SeqCst));
        let allowed = (began.elapsed().as_secs_f64() * rate as f64) as u64 + CHUNK as u64;
        let room = WINDOW
            .saturating_sub(outstanding)
            .min(allowed.saturating_sub(sent));
        if room == 0 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let n = (room as usize).min(CHUNK);
        stream_bytes(key, sent, &mut buf[..n]);
        // Counted as sent before the write: the echo can arrive before `write` returns. The
        // part not written is taken back.
        conn.sent.fetch_add(n as u64, SeqCst);
        let written = w.write(&buf[..n]);
        let k = *written.as_ref().unwrap_or(&0);
        conn.sent.fetch_sub((n - k) as u64, SeqCst);
        c.counters.echo_sent.fetch_add(k as u64, SeqCst);
        match written {
            Ok(0) => conn.fail("write returned 0".into()),
            Ok(_) => last_write = Instant::now(),
            Err(e) if timed_out(&e) => {
                if last_write.elapsed() > STALL_LIMIT {
                    conn.fail(format!("no write possible for {} s", STALL_LIMIT.as_secs()));
                }
            }
            Err(e) => conn.fail(format!("write: {e}")),
        }
    }
    // Stopping: wait until everything came back, then close our side; the echo server closes
    // its side after echoing the rest, which the reader sees as the clean end.
    if !conn.failed.load(SeqCst) && !c.abort.load(SeqCst) {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while conn.verified.load(SeqCst) < conn.sent.load(SeqCst) && !conn.failed.load(SeqCst) {
            if Instant::now() > deadline || c.abort.load(SeqCst) {
                conn.fail(format!(
                    "{} bytes still not echoed {} s after stopping",
                    conn.sent.load(SeqCst) - conn.verified.load(SeqCst),
                    DRAIN_LIMIT.as_secs()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        conn.closing.store(true, SeqCst);
        if let Err(e) = w.shutdown(Shutdown::Write) {
            conn.fail(format!("shutdown: {e}"));
        }
    }
    if c.abort.load(SeqCst) && !conn.failed.load(SeqCst) {
        conn.fail("campaign aborted".into());
    }
    if conn.failed.load(SeqCst) {
        let _ = w.shutdown(Shutdown::Both);
    }
    let _ = reader.join();
    let (sent, verified, corrupted) = (
        conn.sent.load(SeqCst),
        conn.verified.load(SeqCst),
        conn.corrupted.load(SeqCst),
    );
    let lost = sent.saturating_sub(verified + corrupted);
    c.counters.echo_lost.fetch_add(lost, SeqCst);
    let why = conn.why.lock().unwrap_or_else(|e| e.into_inner()).take();
    match why {
        Some(why) => Err(format!(
            "{why} ({sent} sent, {verified} verified, {lost} lost)"
        )),
        None if lost > 0 || corrupted > 0 => {
            Err(format!("{lost} bytes lost, {corrupted} corrupted"))
        }
        None => Ok(()),
    }
}

fn echo_reader(
    r: &mut TcpStream,
    conn: &Conn,
    flow: &Flow,
    key: u64,
    counters: &Counters,
    stop: &AtomicBool,
    abort: &AtomicBool,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut want = vec![0u8; CHUNK];
    let mut last = Instant::now();
    let mut stop_seen: Option<Instant> = None;
    loop {
        if conn.failed.load(SeqCst) || abort.load(SeqCst) {
            return;
        }
        if stop.load(SeqCst) && stop_seen.is_none() {
            stop_seen = Some(Instant::now());
        }
        if stop_seen.is_some_and(|t| t.elapsed() > DRAIN_LIMIT + Duration::from_secs(5)) {
            conn.fail("no end of stream after stopping".into());
            return;
        }
        match r.read(&mut buf) {
            Ok(0) => {
                if conn.closing.load(SeqCst) && conn.verified.load(SeqCst) == conn.sent.load(SeqCst)
                {
                    return; // the clean end
                }
                conn.fail("closed by the peer".into());
                return;
            }
            Ok(n) => {
                let at = conn.verified.load(SeqCst);
                if at + n as u64 > conn.sent.load(SeqCst) {
                    conn.corrupted.fetch_add(n as u64, SeqCst);
                    counters.echo_corrupted.fetch_add(n as u64, SeqCst);
                    conn.fail(format!(
                        "{n} bytes echoed beyond the {} sent",
                        conn.sent.load(SeqCst)
                    ));
                    return;
                }
                stream_bytes(key, at, &mut want[..n]);
                if let Some(first) = (0..n).find(|&i| buf[i] != want[i]) {
                    // Everything from the first wrong byte on is counted as corrupted.
                    conn.verified.fetch_add(first as u64, SeqCst);
                    counters.echo_verified.fetch_add(first as u64, SeqCst);
                    let bad = (n - first) as u64;
                    conn.corrupted.fetch_add(bad, SeqCst);
                    counters.echo_corrupted.fetch_add(bad, SeqCst);
                    conn.fail(format!(
                        "echoed byte {} is {:#04x}, sent {:#04x}",
                        at + first as u64,
                        buf[first],
                        want[first]
                    ));
                    return;
                }
                conn.verified.fetch_add(n as u64, SeqCst);
                counters.echo_verified.fetch_add(n as u64, SeqCst);
                flow.progressed();
                last = Instant::now();
            }
            Err(e) if timed_out(&e) => {
                let waiting = conn.verified.load(SeqCst) < conn.sent.load(SeqCst);
                if waiting && last.elapsed() > STALL_LIMIT {
                    conn.fail(format!("nothing echoed for {} s", STALL_LIMIT.as_secs()));
                    return;
                }
                if !waiting {
                    last = Instant::now();
                }
            }
            Err(e) => {
                conn.fail(format!("read: {e}"));
                return;
            }
        }
    }
}

/// HTTP on one keep-alive connection: uploads and downloads in turn until stopped.
fn http_loop(c: &Ctx, addr: SocketAddr, seed: u64, rate: u64, flow: &Flow) {
    let mut n = 0u64;
    let began = Instant::now();
    let mut moved = 0u64;
    while !c.stop.load(SeqCst) {
        let s = match connect(c, addr) {
            Ok(s) => s,
            Err(e) => {
                c.counters.problem(c.start, format!("http connect: {e}"));
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let Ok(w) = s.try_clone() else { continue };
        let mut h = Http {
            r: BufReader::with_capacity(1 << 16, s),
            w,
            flow,
            c,
        };
        let end = loop {
            if c.stop.load(SeqCst) {
                break Ok(());
            }
            let r = mix(seed ^ n);
            n += 1;
            let len = (64 << 10) + r % (448 << 10);
            let result = if n % 2 == 1 {
                h.upload(r, len)
            } else {
                h.download(len)
            };
            match result {
                Ok(()) => {
                    c.counters.http_requests.fetch_add(1, SeqCst);
                    // Keep to the rate: wait until the bytes moved so far are due.
                    moved += len;
                    let due = Duration::from_secs_f64(moved as f64 / rate.max(1) as f64);
                    while began.elapsed() < due && !c.stop.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                Err(HttpError::Corrupt(why)) => {
                    c.counters.http_corrupted.fetch_add(len, SeqCst);
                    break Err(why);
                }
                Err(HttpError::Failed(why)) => {
                    c.counters.http_lost.fetch_add(len, SeqCst);
                    break Err(why);
                }
            }
        };
        match end {
            Ok(()) => {
                // Our clean close: the server sees EOF after a complete request.
                let _ = h.w.shutdown(Shutdown::Write);
                c.counters.tcp_survived.fetch_add(1, SeqCst);
                return;
            }
            Err(why) => {
                let _ = h.w.shutdown(Shutdown::Both);
                c.counters.tcp_failed.fetch_add(1, SeqCst);
                c.counters
                    .problem(c.start, format!("http connection: {why}"));
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

enum HttpError {
    /// The guest answered wrongly (hash, length or body mismatch).
    Corrupt(String),
    /// The connection failed (reset, EOF, stall, malformed answer).
    Failed(String),
}

struct Http<'a> {
    r: BufReader<TcpStream>,
    w: TcpStream,
    flow: &'a Flow,
    c: &'a Ctx,
}

impl Http<'_> {
    /// Waits out read/write timeouts while the connection is merely slow.
    fn retry<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&mut Self) -> std::io::Result<T>,
    ) -> Result<T, HttpError> {
        let began = Instant::now();
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(e) if timed_out(&e) => {
                    if self.c.abort.load(SeqCst) {
                        return Err(HttpError::Failed("campaign aborted".into()));
                    }
                    if began.elapsed() > STALL_LIMIT {
                        return Err(HttpError::Failed(format!(
                            "{what}: no progress for {} s",
                            STALL_LIMIT.as_secs()
                        )));
                    }
                }
                Err(e) => return Err(HttpError::Failed(format!("{what}: {e}"))),
            }
        }
    }

    fn write_all(&mut self, mut data: &[u8]) -> Result<(), HttpError> {
        while !data.is_empty() {
            let n = self.retry("write", |h| h.w.write(data))?;
            if n == 0 {
                return Err(HttpError::Failed("write returned 0".into()));
            }
            data = &data[n..];
            self.flow.progressed();
        }
        Ok(())
    }

    fn line(&mut self) -> Result<String, HttpError> {
        let mut line = Vec::new();
        loop {
            let n = self.retry("read", |h| h.r.read_until(b'\n', &mut line))?;
            if n == 0 {
                return Err(HttpError::Failed(
                    "closed by the peer in a response head".into(),
                ));
            }
            if line.ends_with(b"\n") {
                self.flow.progressed();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            if line.len() > 16 << 10 {
                return Err(HttpError::Failed("response head line too long".into()));
            }
        }
    }

    /// Status and Content-Length of the next final response.
    fn head(&mut self) -> Result<(u32, Option<u64>), HttpError> {
        loop {
            let status_line = self.line()?;
            let status: u32 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HttpError::Failed(format!("bad status line {status_line:?}")))?;
            let mut length = None;
            loop {
                let l = self.line()?;
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().ok();
                    }
                }
            }
            if status != 100 {
                return Ok((status, length));
            }
        }
    }

    /// Reads exactly `len` body bytes, giving each chunk to `f`.
    fn body(
        &mut self,
        len: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        let mut at = 0u64;
        let mut buf = vec![0u8; 32 << 10];
        while at < len {
            let want = ((len - at) as usize).min(buf.len());
            let n = self.retry("read", |h| h.r.read(&mut buf[..want]))?;
            if n == 0 {
                return Err(HttpError::Failed(format!(
                    "closed by the peer after {at} of {len} body bytes"
                )));
            }
            f(at, &buf[..n])?;
            at += n as u64;
            self.flow.progressed();
        }
        Ok(())
    }

    fn upload(&mut self, key: u64, len: u64) -> Result<(), HttpError> {
        let head = format!(
            "POST /sink HTTP/1.1\r\nHost: campaign\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n\r\n"
        );
        self.write_all(head.as_bytes())?;
        let mut hash = Sha256::new();
        let mut buf = vec![0u8; 32 << 10];
        let mut at = 0u64;
        while at < len {
            let n = ((len - at) as usize).min(buf.len());
            stream_bytes(key, at, &mut buf[..n]);
            hash.update(&buf[..n]);
            self.write_all(&buf[..n])?;
            at += n as u64;
        }
        let want: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let (status, length) = self.head()?;
        let blen = length
            .ok_or_else(|| HttpError::Failed("POST /sink answer without Content-Length".into()))?;
        if blen > 4096 {
            return Err(HttpError::Failed(format!(
                "POST /sink answer of {blen} bytes"
            )));
        }
        let mut body = Vec::new();
        self.body(blen, |_, b| {
            body.extend_from_slice(b);
            Ok(())
        })?;
        let body = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(HttpError::Failed(format!(
                "POST /sink: status {status}: {body}"
            )));
        }
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| HttpError::Failed(format!("POST /sink answer {body:?}: {e}")))?;
        if v["length"].as_u64() != Some(len) || v["sha256"].as_str() != Some(want.as_str()) {
            return Err(HttpError::Corrupt(format!(
                "POST /sink of {len} bytes (sha256 {want}): the guest reports {body}"
            )));
        }
        self.c.counters.http_up_verified.fetch_add(len, SeqCst);
        Ok(())
    }

    fn download(&mut self, len: u64) -> Result<(), HttpError> {
        self.write_all(format!("GET /bytes/{len} HTTP/1.1\r\nHost: campaign\r\n\r\n").as_bytes())?;
        let (status, length) = self.head()?;
        if status != 200 || length != Some(len) {
            return Err(HttpError::Failed(format!(
                "GET /bytes/{len}: status {status}, length {length:?}"
            )));
        }
        self.body(len, |at, b| {
            match b
                .iter()
                .enumerate()
                .find(|&(k, &x)| x != bytes_pattern(at + k as u64))
            {
                Some((k, &x)) => Err(HttpError::Corrupt(format!(
                    "GET /bytes/{len}: byte {} is {x:#04x}, expected {:#04x}",
                    at + k as u64,
                    bytes_pattern(at + k as u64)
                ))),
                None => Ok(()),
            }
        })?;
        self.c.counters.http_down_verified.fetch_add(len, SeqCst);
        Ok(())
    }
}

/// A UDP datagram: sequence number, then `32 + seq % 480` bytes of the stream of `key ^ seq`.
pub fn udp_datagram(key: u64, seq: u64) -> Vec<u8> {
    let len = 32 + (seq % 480) as usize;
    let mut d = vec![0u8; 8 + len];
    d[..8].copy_from_slice(&seq.to_le_bytes());
    stream_bytes(mix(key ^ seq), 0, &mut d[8..]);
    d
}

fn udp_sender(c: &Ctx, sock: &UdpSocket, every: Duration, key: u64) {
    let mut seq = 0u64;
    let began = Instant::now();
    while !c.stop.load(SeqCst) {
        let due = began + every * (seq as u32);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        // A failed send (ECONNREFUSED from an earlier datagram's ICMP, a full buffer) is not
        // counted as sent; its number is skipped.
        if sock.send(&udp_datagram(key, seq)).is_ok() {
            c.counters.udp_sent.fetch_add(1, SeqCst);
        }
        seq += 1;
    }
}

fn udp_receiver(c: &Ctx, sock: &UdpSocket, key: u64, seen: &Mutex<Vec<bool>>, done: &AtomicBool) {
    let mut buf = vec![0u8; 2048];
    while !done.load(SeqCst) {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let d = &buf[..n];
                let seq = d
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                let ok = seq.filter(|&s| s < 1 << 32 && udp_datagram(key, s) == d);
                match ok {
                    Some(s) => {
                        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                        let i = s as usize;
                        if seen.len() <= i {
                            seen.resize(i + 1, false);
                        }
                        if seen[i] {
                            c.counters.udp_duplicates.fetch_add(1, SeqCst);
                        } else {
                            seen[i] = true;
                            c.counters.udp_received.fetch_add(1, SeqCst);
                        }
                    }
                    None => {
                        c.counters.udp_corrupted.fetch_add(1, SeqCst);
                        c.counters.problem(
                            c.start,
                            format!("UDP echo of {n} bytes does not match any datagram sent"),
                        );
                    }
                }
            }
            Err(e) if timed_out(&e) => {}
            // ICMP port unreachable while the guest is not listening, etc.: keep listening.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn the_bytes_pattern_matches_the_readme() {
        let start: Vec<u8> = (0..6).map(bytes_pattern).collect();
        assert_eq!(start, [0x00, 0x1f, 0x3e, 0x5d, 0x7c, 0x9b]);
        assert_eq!(bytes_pattern(256), 156);
    }

    #[test]
    fn stream_bytes_are_the_same_in_any_split_and_differ_by_key() {
        let mut whole = vec![0u8; 100];
        stream_bytes(7, 3, &mut whole);
        let mut parts = vec![0u8; 100];
        stream_bytes(7, 3, &mut parts[..13]);
        stream_bytes(7, 16, &mut parts[13..]);
        assert_eq!(whole, parts);
        let mut other = vec![0u8; 100];
        stream_bytes(8, 3, &mut other);
        assert_ne!(whole, other);
        // A dropped byte shifts the rest: never the same bytes.
        assert_ne!(whole[1..], whole[..99]);
    }

    /// A host echo server on a free port; `corrupt_at` flips the byte at that offset of every
    /// connection; `reset_after` resets every connection after that many bytes.
    fn echo_server(corrupt_at: Option<u64>, reset_after: Option<u64>) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        let udp = UdpSocket::bind(addr).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        });
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut at = 0u64;
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if let Some(c) = corrupt_at {
                            if (at..at + n as u64).contains(&c) {
                                buf[(c - at) as usize] ^= 0x40;
                            }
                        }
                        if reset_after.is_some_and(|r| at + n as u64 > r) {
                            let _ = s.shutdown(Shutdown::Both);
                            return;
                        }
                        at += n as u64;
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn cfg(echo: SocketAddr) -> Config {
        Config {
            echo,
            http: None,
            streams: 2,
            stream_rate: 4 << 20,
            http_rate: 4 << 20,
            udp: true,
            udp_interval: Duration::from_millis(5),
            seed: 42,
        }
    }

    #[test]
    fn a_faithful_echo_verifies_everything_and_every_connection_survives() {
        let t = Traffic::start(&cfg(echo_server(None, None)), Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        assert!(t.flows.iter().all(|(_, f)| f.last().is_some()));
        let c = t.finish(false);
        let sent = c.echo_sent.load(SeqCst);
        assert!(sent > 100_000, "{sent}");
        let p = c.problems.lock().unwrap().clone();
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.echo_verified.load(SeqCst), sent);
        assert_eq!(c.echo_lost.load(SeqCst) + c.echo_corrupted.load(SeqCst), 0);
        assert_eq!(c.tcp_established.load(SeqCst), 2);
        assert_eq!(c.tcp_survived.load(SeqCst), 2);
        assert_eq!(c.tcp_failed.load(SeqCst), 0);
        assert!(c.udp_sent.load(SeqCst) > 50);
        assert_eq!(c.udp_received.load(SeqCst), c.udp_sent.load(SeqCst));
        assert_eq!(c.udp_corrupted.load(SeqCst), 0);
    }

    #[test]
    fn a_corrupted_byte_is_caught() {
        let t = Traffic::start(&cfg(echo_server(Some(70_000), None)), Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let c = t.finish(false);
        assert!(c.echo_corrupted.load(SeqCst) > 0);
        assert!(
            c.tcp_failed.load(SeqCst) >= 2,
            "{}",
            c.tcp_failed.load(SeqCst)
        );
        let p = c.problems.lock().unwrap();
        assert!(p.iter().any(|p| p.contains("echoed byte 70000")), "{p:?}");
    }

    #[test]
    fn a_reset_connection_loses_bytes_and_does_not_survive() {
        let t = Traffic::start(&cfg(echo_server(None, Some(50_000))), Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let c = t.finish(false);
        assert!(c.echo_lost.load(SeqCst) > 0);
        assert_eq!(c.tcp_survived.load(SeqCst), 0);
        assert!(c.tcp_failed.load(SeqCst) >= 2);
    }

    /// A keep-alive HTTP server for `/sink` and `/bytes/N`; `bad_hash` answers a wrong SHA-256,
    /// `bad_byte` flips one byte of every `/bytes` body.
    fn http_server(bad_hash: bool, bad_byte: Option<u64>) -> SocketAddr {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split(' ').nth(1).unwrap_or("").to_string();
                        let mut len = 0u64;
                        loop {
                            let mut h = String::new();
                            r.read_line(&mut h).unwrap();
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        if path == "/sink" {
                            let mut body = vec![0u8; len as usize];
                            r.read_exact(&mut body).unwrap();
                            let mut hex: String = Sha256::digest(&body)
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            if bad_hash {
                                hex.replace_range(0..1, if &hex[..1] == "0" { "1" } else { "0" });
                            }
                            let json = format!("{{\"length\":{len},\"sha256\":\"{hex}\"}}");
                            let _ = write!(
                                w,
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
                                json.len()
                            );
                        } else if let Some(n) = path.strip_prefix("/bytes/") {
                            let n: u64 = n.parse().unwrap();
                            let mut body: Vec<u8> = (0..n).map(bytes_pattern).collect();
                            if let Some(b) = bad_byte.filter(|&b| b < n) {
                                body[b as usize] ^= 1;
                            }
                            let _ = write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
                            let _ = w.write_all(&body);
                        } else {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn http_only(http: SocketAddr) -> Config {
        Config {
            http: Some(http),
            streams: 0,
            udp: false,
            ..cfg(http)
        }
    }

    #[test]
    fn http_uploads_and_downloads_are_verified_at_both_ends() {
        let t = Traffic::start(&http_only(http_server(false, None)), Instant::now()).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let c = t.finish(false);
        let p = c.problems.lock().unwrap().clone();
        assert!(p.is_empty(), "{p:?}");
        assert!(c.http_requests.load(SeqCst) >= 2);
        assert!(c.http_up_verified.load(SeqCst) > 0 && c.http_down_verified.load(SeqCst) > 0);
        assert_eq!(c.http_lost.load(SeqCst) + c.http_corrupted.load(SeqCst), 0);
        assert_eq!(
            (c.tcp_established.load(SeqCst), c.tcp_survived.load(SeqCst)),
            (1, 1)
        );
    }

    #[test]
    fn a_wrong_hash_or_byte_from_the_guest_is_caught() {
        for (bad_hash, bad_byte, what) in [(true, None, "sha256"), (false, Some(1000), "byte 1000")]
        {
            let t = Traffic::start(&http_only(http_server(bad_hash, bad_byte)), Instant::now())
                .unwrap();
            std::thread::sleep(Duration::from_millis(800));
            let c = t.finish(false);
            assert!(c.http_corrupted.load(SeqCst) > 0, "{what}");
            assert!(c.tcp_failed.load(SeqCst) > 0, "{what}");
            let p = c.problems.lock().unwrap().clone();
            assert!(p.iter().any(|p| p.contains(what)), "{what}: {p:?}");
        }
    }

    #[test]
    fn flows_record_pauses() {
        let f = Flow::default();
        f.progressed();
        std::thread::sleep(GAP_MIN * 3);
        f.progressed();
        f.progressed();
        let g = f.take_gaps();
        assert_eq!(g.len(), 1);
        assert!(g[0].1 - g[0].0 >= GAP_MIN * 3);
        assert!(f.take_gaps().is_empty());
    }
}
