//! In-guest micro-benchmarks for `cargo xtask bench` (system `benches/qemu/sysbench.toml`).
//!
//! Once the http app answers on the guest's loopback, in this one boot:
//! 1. raw seL4 IPC: `N` `Call`s to `ipc-echo` (it answers with `ReplyRecv`), one word, on the
//!    same core (`raw-local`) and on the other core (`raw-remote`); and the same with a byte
//!    message as long as the encoded no-op socket request (`sel4::bytes`, what libsock sends);
//!    and, same core, byte messages with both partners using the FPU (`raw-local-fpu`);
//! 2. a no-op socket call: `N` `getsockopt(SO_RCVBUF)` on a fresh TCP socket through libsock and
//!    the net server (libsock's round-trip counter must advance by exactly `N`);
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
use libsock::{Client, Domain, Errno, MsgFlags, SockAddr, SockOpt, SockType, SocketHandle, TcpStream,
    Transport, Wake};
use sel4::{Cap, Endpoint, MessageInfo};
use sel4_rt::{println, rdtsc, StartInfo};

sel4_rt::component_main!(main);

const HTTP: SockAddr = SockAddr::v4(127, 0, 0, 1, 80);
const N: u64 = 20_000;
const WARMUP: u64 = 1_000;
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

    let mut raw = [None, None];
    for (i, (grant, key)) in [("raw-local", "raw_local"), ("raw-remote", "raw_remote")].into_iter().enumerate() {
        let Some(ep) = sel4_rt::cap::<Endpoint>(grant) else {
            println!("sysbench: endpoint `{grant}` not granted; skipped");
            continue;
        };
        let (_, b) = raw_ipc(&mut json, key, ep, req.get(..req_len).unwrap_or(&[]));
        if let Some(r) = raw.get_mut(i) {
            *r = Some(pct(&b, 50));
        }
    }

    // The same-core raw round trip again, with both partners using the FPU (SSE) per call like
    // libsock and the net server do: the price of the kernel's lazy FPU switching (a trap on
    // each side per round trip).
    if let Some(ep) = sel4_rt::cap::<Endpoint>("raw-local-fpu") {
        let mut out = [0u8; MAX_MSG];
        let bytes = req.get(..req_len).unwrap_or(&[]);
        let mut fpu = |_| {
            core::hint::black_box([0u64; 4]);
            ep.call_bytes(bytes, &mut out).is_ok()
        };
        let _ = timed(WARMUP, &mut fpu);
        let t = timed(N, &mut fpu);
        stats(&mut json, "raw_local_fpu_bytes", &t);
    }

    match noop_calls(&client, h) {
        Ok((t, trips, fpu)) => {
            stats(&mut json, "noop", &t);
            let _ = write!(json, ",\"noop_round_trips_per_call\":{trips},\"noop_calls_client_fpu\":{fpu}");
            // The calls are served by whichever IPC thread of the net server waits longest
            // (one per core), so they are bimodal: split them at the geometric mean of the raw
            // same-core and other-core medians (request-sized bytes) and report each mode.
            if let [Some(local), Some(remote)] = raw {
                let cut = local.saturating_mul(remote).isqrt();
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
        Err(e) => println!("sysbench: no-op calls: {e}"),
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

/// Raw round trips to `ep`: one-word messages, then byte messages like `bytes`.
fn raw_ipc(json: &mut String, key: &str, ep: Cap<Endpoint>, bytes: &[u8]) -> (Vec<u64>, Vec<u64>) {
    let info = MessageInfo::new(1, 0, 0, 1);
    let words = |i: u64| {
        let _ = ep.call(info, [i, 0, 0, 0]);
        true
    };
    let _ = timed(WARMUP, words);
    let w = timed(N, words);
    let mut out = [0u8; MAX_MSG];
    let mut with_bytes = |_| ep.call_bytes(bytes, &mut out).is_ok();
    let _ = timed(WARMUP, &mut with_bytes);
    let b = timed(N, &mut with_bytes);
    stats(json, key, &w);
    stats(json, &alloc::format!("{key}_bytes"), &b);
    (w, b)
}

/// Per-call cycles of `getsockopt` through libsock and the net server (sorted), and libsock's
/// round trips per call (must be 1).
fn noop_calls(client: &Arc<C>, h: SocketHandle) -> Result<(Vec<u64>, u64, u64), Errno> {
    let mut err = None;
    let mut call = |_| match client.getsockopt(h, SockOpt::RcvBuf) {
        Ok(_) => true,
        Err(e) => {
            err = Some(e);
            false
        }
    };
    let _ = timed(WARMUP, &mut call);
    let r0 = client.round_trips();
    let f0 = client.transport().fpu_calls.load(Ordering::Relaxed);
    let t = timed(N, &mut call);
    let trips = (client.round_trips() - r0) / N;
    let fpu = client.transport().fpu_calls.load(Ordering::Relaxed) - f0;
    if let Some(e) = err {
        return Err(e);
    }
    client.close(h)?;
    Ok((t, trips, fpu))
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
