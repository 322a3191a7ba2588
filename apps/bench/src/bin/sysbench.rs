//! In-guest micro-benchmarks for `cargo xtask bench` (system `benches/qemu/sysbench.toml`).
//!
//! Once the http app answers on the guest's loopback, in this one boot:
//! 1. raw seL4 IPC: `N` `Call`s to `ipc-echo` (it answers with `ReplyRecv`), one word, on the
//!    same core (`raw-local`) and on the other core (`raw-remote`); and the same with a byte
//!    message as long as the encoded no-op socket request (`sel4::bytes`, what libsock sends);
//!    and, same core, byte messages with both partners using the FPU (`raw-local-fpu`);
//! 2. a no-op socket call: `N` `getsockopt(SO_RCVBUF)` on a fresh TCP socket through libsock and
//!    the net server (libsock's round-trip counter must advance by exactly one per call), and how
//!    many of them were made after the client had used the FPU (`FpuProbe`);
//!
//!    the same-core kinds of 1 and 2 are measured interleaved, `BLOCK` calls of each in turn, so
//!    that a change in the host's load between them does not skew their ratios;
//! 3. a 1 MiB blocking `send` to the http app's `POST /sink` over loopback: the round trips
//!    libsock counts, and (second connection, non-blocking `MSG_DONTWAIT` sends of ≤ 64 KiB) how
//!    many bytes one `Send` round trip moves and how often the server answered `EAGAIN`;
//!
//! then prints one line `BENCH {json}` (cycles are TSC ticks; `tsc_mhz` converts) and exits.
//! Timings are reported, never judged here: `cargo xtask bench` computes the ratios.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use libsock::net_api::codec::encode_request;
use libsock::net_api::{Request, MAX_MSG};
use libsock::sel4::Sel4Transport;
use libsock::{Client, Domain, Errno, MsgFlags, SockAddr, SockOpt, SockType, TcpStream,
    Transport, Wake};
use sel4::{Cap, Endpoint, MessageInfo};
use sel4_rt::{println, rdtsc, StartInfo};

sel4_rt::component_main!(main);

const HTTP: SockAddr = SockAddr::v4(127, 0, 0, 1, 80);
const N: u64 = 20_000;
const WARMUP: u64 = 1_000;
/// Calls of one kind in a row when kinds are interleaved.
const BLOCK: u64 = 200;
const SEND_BYTES: usize = 1 << 20;
const CHUNK: usize = 64 << 10;

type C = Client<FpuProbe>;

/// The seL4 transport, noting for each call whether this thread had the FPU enabled when it
/// made it (`sel4_rt::fpu_enabled`, two instructions). The net server uses the FPU on every
/// call, so "enabled" at a call means the client used the FPU since the previous answer - and
/// paid a lazy-FPU trap for it. The no-op loop reports how many of its calls did.
struct FpuProbe {
    inner: Sel4Transport,
    fpu_calls: AtomicU64,
}

impl Transport for FpuProbe {
    type Region = <Sel4Transport as Transport>::Region;
    type RawLock = <Sel4Transport as Transport>::RawLock;
    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        if sel4_rt::fpu_enabled() {
            self.fpu_calls.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.call(request, response)
    }
    fn wait(&self, timeout: Option<Duration>) -> Wake {
        self.inner.wait(timeout)
    }
    fn now(&self) -> Duration {
        self.inner.now()
    }
    fn region(&self) -> &Self::Region {
        self.inner.region()
    }
    fn relax(&self) {
        self.inner.relax()
    }
    fn park_until(&self, ready: &dyn Fn() -> bool) {
        self.inner.park_until(ready)
    }
    fn unpark_all(&self) {
        self.inner.unpark_all()
    }
    fn timed_wait_polls(&self) -> bool {
        self.inner.timed_wait_polls()
    }
}

fn main(_info: &'static StartInfo) {
    let Some(transport) = Sel4Transport::from_start_info() else {
        println!("cannot start: grants `net`, `net-wake`, `net-data` missing");
        return;
    };
    let client = match Client::new(FpuProbe { inner: transport, fpu_calls: AtomicU64::new(0) }) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            println!("cannot start: hello to the net server: {e}");
            return;
        }
    };
    if !wait_for_http(&client) {
        println!("sysbench: http at {HTTP} does not answer; nothing measured");
        return;
    }
    let mut json = String::from("{");
    let _ = write!(json, "\"tsc_mhz\":{},\"n\":{N}", sel4_rt::tsc_mhz());

    // The socket of the no-op calls, and their encoded request, to size the raw byte-message
    // baseline like the real one.
    let h = match client.socket(Domain::Inet, SockType::Stream) {
        Ok(h) => h,
        Err(e) => {
            println!("sysbench: socket: {e}; nothing measured");
            return;
        }
    };
    let mut req = [0u8; MAX_MSG];
    let probe = Request::GetSockOpt { handle: h, opt: SockOpt::RcvBuf };
    let req_len = encode_request(client.epoch(), &probe, &mut req).unwrap_or(0);
    let _ = write!(json, ",\"noop_request_bytes\":{req_len}");

    let bytes = req.get(..req_len).unwrap_or(&[]);

    // The other core, on its own (a reference point, not a target).
    let remote = match sel4_rt::cap::<Endpoint>("raw-remote") {
        Some(ep) => {
            let (mut words, mut with_bytes) = (raw_words(ep), raw_bytes(ep, bytes));
            let _ = (timed(WARMUP, &mut words), timed(WARMUP, &mut with_bytes));
            let (w, b) = (timed(N, &mut words), timed(N, &mut with_bytes));
            stats(&mut json, "raw_remote", &w);
            stats(&mut json, "raw_remote_bytes", &b);
            Some(pct(&b, 50))
        }
        None => {
            println!("sysbench: endpoint `raw-remote` not granted; skipped");
            None
        }
    };

    // Same core: the raw round trips and the no-op socket call, interleaved so that the host's
    // load (this machine is shared) weighs on each alike.
    let Some(local) = sel4_rt::cap::<Endpoint>("raw-local") else {
        println!("sysbench: endpoint `raw-local` not granted; nothing measured");
        return;
    };
    let mut noop_err = None;
    let mut kinds: Vec<(&str, Box<dyn FnMut(u64) -> bool + '_>)> = vec![
        ("raw_local", Box::new(raw_words(local))),
        ("raw_local_bytes", Box::new(raw_bytes(local, bytes))),
        (
            "noop",
            Box::new(|_| match client.getsockopt(h, SockOpt::RcvBuf) {
                Ok(_) => true,
                Err(e) => {
                    noop_err = Some(e);
                    false
                }
            }),
        ),
    ];
    // The same-core raw round trip again, with both partners using the FPU (SSE) per call like
    // libsock and the net server do: the price of the kernel's lazy FPU switching (a trap on
    // each side per round trip).
    if let Some(ep) = sel4_rt::cap::<Endpoint>("raw-local-fpu") {
        let mut out = [0u8; MAX_MSG];
        kinds.push((
            "raw_local_fpu_bytes",
            Box::new(move |_| {
                core::hint::black_box([0u64; 4]);
                ep.call_bytes(bytes, &mut out).is_ok()
            }),
        ));
    }
    let r0 = client.round_trips();
    let f0 = client.transport().fpu_calls.load(Ordering::Relaxed);
    let times = interleaved(&mut kinds);
    let trips = (client.round_trips() - r0) / (N + WARMUP);
    let fpu_calls = client.transport().fpu_calls.load(Ordering::Relaxed) - f0;
    let keys: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
    drop(kinds);
    for (key, t) in keys.iter().zip(&times) {
        stats(&mut json, key, t);
    }
    let measured = |key: &str| keys.iter().position(|k| *k == key).and_then(|i| times.get(i));
    match (noop_err, measured("noop"), measured("raw_local_bytes")) {
        (Some(e), _, _) => println!("sysbench: no-op calls: {e}"),
        (None, Some(t), Some(local_bytes)) => {
            let _ = write!(json, ",\"noop_round_trips_per_call\":{trips},\"noop_calls_client_fpu\":{fpu_calls},\"noop_calls_probed\":{}", N + WARMUP);
            // Calls can be slowed by threads of the net server on this core (workers, the
            // timer) and by the other core, so they are bimodal: split them at the geometric
            // mean of the raw same-core and other-core medians (request-sized bytes) and report
            // each mode.
            if let Some(remote) = remote {
                let cut = pct(local_bytes, 50).saturating_mul(remote).isqrt();
                let split = t.partition_point(|&c| c < cut);
                let (fast, slow) = t.split_at(split);
                let _ = write!(
                    json,
                    ",\"noop_split_cycles\":{cut},\"noop_fast_calls\":{},\"noop_fast_cycles\":{},\"noop_slow_cycles\":{}",
                    fast.len(),
                    mean(fast),
                    mean(slow)
                );
            }
        }
        _ => {}
    }
    if let Err(e) = client.close(h) {
        println!("sysbench: close: {e}");
    }

    match send_blocking(&client) {
        Ok((trips, cycles)) => {
            let _ = write!(json, ",\"send_1mib_round_trips\":{trips},\"send_1mib_cycles\":{cycles}");
        }
        Err(e) => println!("sysbench: 1 MiB blocking send: {e}"),
    }
    match send_nonblocking(&client) {
        Ok(s) => {
            let _ = write!(
                json,
                ",\"nb_sends\":{},\"nb_eagain\":{},\"nb_max_accepted\":{},\"nb_round_trips\":{}",
                s.sends, s.eagain, s.max_accepted, s.trips
            );
        }
        Err(e) => println!("sysbench: 1 MiB non-blocking send: {e}"),
    }
    json.push('}');
    println!("BENCH {json}");
    println!("sysbench: done");
}

/// Connects to the http app until it accepts (it starts with us), up to 60 s.
fn wait_for_http(client: &Arc<C>) -> bool {
    let deadline = client.transport().now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(client, HTTP) {
            Ok(_) => return true,
            Err(Errno::ServerRestarted) => return false,
            Err(_) if client.transport().now() >= deadline => return false,
            Err(_) => {
                let _ = client.transport().wait(Some(Duration::from_millis(100)));
            }
        }
    }
}

/// Per-call cycles of `n` calls of `f`, sorted.
fn timed(n: u64, mut f: impl FnMut(u64) -> bool) -> Vec<u64> {
    let mut t = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t0 = rdtsc();
        if !f(i) {
            break;
        }
        t.push(rdtsc() - t0);
    }
    t.sort_unstable();
    t
}

fn mean(t: &[u64]) -> u64 {
    t.iter().sum::<u64>() / (t.len() as u64).max(1)
}

/// The `p`-th percentile of sorted `t`.
fn pct(t: &[u64], p: usize) -> u64 {
    t.get(t.len() * p / 100).or(t.last()).copied().unwrap_or(0)
}

/// `"key_cycles":mean,"key_p10":…,"key_p50":…,"key_p90":…`
fn stats(json: &mut String, key: &str, t: &[u64]) {
    let _ = write!(
        json,
        ",\"{key}_cycles\":{},\"{key}_p10\":{},\"{key}_p50\":{},\"{key}_p90\":{}",
        mean(t),
        pct(t, 10),
        pct(t, 50),
        pct(t, 90)
    );
}

/// A raw round trip to `ep` (it answers with `ReplyRecv`): a one-word message.
fn raw_words(ep: Cap<Endpoint>) -> impl FnMut(u64) -> bool {
    let info = MessageInfo::new(1, 0, 0, 1);
    move |i| {
        let _ = ep.call(info, [i, 0, 0, 0]);
        true
    }
}

/// A raw round trip to `ep` with a byte message like `bytes` (`sel4::bytes`, as libsock sends).
fn raw_bytes(ep: Cap<Endpoint>, bytes: &[u8]) -> impl FnMut(u64) -> bool + '_ {
    let mut out = [0u8; MAX_MSG];
    move |_| ep.call_bytes(bytes, &mut out).is_ok()
}

/// Calls of each kind, `WARMUP` then `N` timed, interleaved in blocks of `BLOCK` (kind 1, kind 2,
/// …, kind 1, …); a kind whose call fails is not called again. Each kind's cycles, sorted.
fn interleaved(kinds: &mut [(&str, Box<dyn FnMut(u64) -> bool + '_>)]) -> Vec<Vec<u64>> {
    let mut alive: Vec<bool> = kinds.iter_mut().map(|(_, f)| (0..WARMUP).all(|i| f(i))).collect();
    let mut times: Vec<Vec<u64>> = kinds.iter().map(|_| Vec::with_capacity(N as usize)).collect();
    for round in 0..N / BLOCK {
        for (((_, f), t), alive) in kinds.iter_mut().zip(&mut times).zip(&mut alive) {
            for i in 0..BLOCK {
                if !*alive {
                    break;
                }
                let t0 = rdtsc();
                *alive = f(round * BLOCK + i);
                if *alive {
                    t.push(rdtsc() - t0);
                }
            }
        }
    }
    for t in &mut times {
        t.sort_unstable();
    }
    times
}

fn sink_head() -> String {
    alloc::format!(
        "POST /sink HTTP/1.1\r\nHost: bench\r\nContent-Length: {SEND_BYTES}\r\nConnection: close\r\n\r\n"
    )
}

/// Reads the answer to `POST /sink` until the server closes; checks the length it reports.
fn finish_sink(stream: &TcpStream<FpuProbe>) -> Result<(), Errno> {
    let mut answer = vec![0u8; 4096];
    let mut got = 0;
    loop {
        let Some(room) = answer.get_mut(got..) else { break };
        if room.is_empty() {
            break;
        }
        match stream.read(room)? {
            0 => break,
            n => got += n,
        }
    }
    let text = core::str::from_utf8(answer.get(..got).unwrap_or(&[])).unwrap_or("");
    let want = alloc::format!("\"length\":{SEND_BYTES}");
    if text.starts_with("HTTP/1.1 200") && text.contains(want.as_str()) {
        Ok(())
    } else {
        println!("sysbench: unexpected /sink answer: {text:?}");
        Err(Errno::EPROTO)
    }
}

/// One blocking `write_all` of 1 MiB: (round trips libsock counted, cycles).
fn send_blocking(client: &Arc<C>) -> Result<(u64, u64), Errno> {
    let stream = TcpStream::connect(client, HTTP)?;
    stream.write_all(sink_head().as_bytes())?;
    let data = vec![0x5au8; SEND_BYTES];
    let r0 = client.round_trips();
    let t0 = rdtsc();
    stream.write_all(&data)?;
    let cycles = rdtsc() - t0;
    let trips = client.round_trips() - r0;
    finish_sink(&stream)?;
    Ok((trips, cycles))
}

struct NbStats {
    sends: u64,
    eagain: u64,
    max_accepted: usize,
    trips: u64,
}

/// 1 MiB as non-blocking sends of at most 64 KiB: how much one `Send` moves.
fn send_nonblocking(client: &Arc<C>) -> Result<NbStats, Errno> {
    let stream = TcpStream::connect(client, HTTP)?;
    stream.write_all(sink_head().as_bytes())?;
    let data = vec![0xa5u8; SEND_BYTES];
    let h = stream.handle();
    let mut s = NbStats { sends: 0, eagain: 0, max_accepted: 0, trips: 0 };
    let r0 = client.round_trips();
    let mut off = 0;
    while off < SEND_BYTES {
        let chunk = data.get(off..SEND_BYTES.min(off + CHUNK)).unwrap_or(&[]);
        match client.send(h, chunk, MsgFlags::DONTWAIT) {
            Ok(n) => {
                s.sends += 1;
                s.max_accepted = s.max_accepted.max(n);
                off += n;
            }
            Err(Errno::EAGAIN) => {
                s.eagain += 1;
                let _ = client.transport().wait(Some(Duration::from_millis(20)));
            }
            Err(e) => return Err(e),
        }
    }
    s.trips = client.round_trips() - r0;
    finish_sink(&stream)?;
    Ok(s)
}
