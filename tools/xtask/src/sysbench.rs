//! The system half of `cargo xtask bench`: boots `benches/qemu/sysbench.toml` (the product system
//! plus the in-guest micro-benchmarks of `apps/bench/src/bin/sysbench.rs`) with `-smp 2` and
//! user networking on free host ports, then measures from the host, in this order:
//!
//! 1. boot → first served HTTP response: QEMU started → first `GET /` answered `200` (polled
//!    every 50 ms with a fresh connection);
//! 2. the guest's `BENCH {json}` line (raw IPC vs no-op socket call, round trips of a 1 MiB send),
//!    awaited before the host loads the network so the two do not disturb each other;
//! 3. guest → host throughput (`GET /bytes/N`, every byte checked against the pattern),
//!    host → guest (`POST /sink` of N bytes, the reported length checked);
//! 4. HTTP requests/s: `REQUESTS` sequential `GET /` on one keep-alive connection.
//!
//! Writes `target/bench/system.json` and the console to `target/bench/system-console.log`, and
//! prints a table with the ratios and whether each target is met. Timings are reported, never
//! judged as pass/fail of the command (tests check behaviour, not timings); the command fails
//! only when a measurement could not be made.

use crate::image::BootImage;
use crate::kernel::{self, Variant};
use crate::{hostnet, image, load_system, qemu, step, Ws};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SYSTEM: &str = "benches/qemu/sysbench.toml";
/// Bytes moved each way for the throughput measurements.
const BYTES: u64 = 32 << 20;
/// Requests of the requests/s measurement.
const REQUESTS: u32 = 500;
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// Targets (issue 4 item 8): no-op socket call ≤ 2 × raw IPC round trip; ≤ 1 round trip per 64 KiB.
const NOOP_RATIO_TARGET: f64 = 2.0;
const SEND_TRIPS_TARGET: f64 = 16.0;

pub fn run(ws: &Ws, dir: &std::path::Path) -> Result<()> {
    let sys = load_system(ws, std::path::Path::new(SYSTEM))?;
    let k = kernel::build(ws, Variant::Smp)?;
    let boot = image::build(ws, &sys, &k)?;
    let result = measure(&boot, dir)?;
    let path = dir.join("system.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
    print_table(&result);
    println!("==> {}", path.display());
    Ok(())
}

/// The console, shared with its reader thread, with the time each line arrived.
#[derive(Default)]
struct Console {
    lines: Vec<(Duration, String)>,
    closed: bool,
}

impl Console {
    fn find(&self, fragment: &str) -> Option<&(Duration, String)> {
        self.lines.iter().find(|(_, l)| l.contains(fragment))
    }
}

fn measure(boot: &BootImage, dir: &std::path::Path) -> Result<Value> {
    let http = hostnet::free_port()?;
    let echo = hostnet::free_port()?;
    let extra = hostnet::user_net_args(
        &[("tcp", http, 80), ("tcp", echo, 7), ("udp", echo, 7)],
        None,
    );
    let mut cmd = qemu::command(boot, 2, qemu::Console::Plain, &extra);
    println!("==> {}", step::show(&cmd));
    let console = Arc::new(Mutex::new(Console::default()));
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", qemu::QEMU))?;
    if let Some(out) = child.stdout.take() {
        let console = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                c.lines.push((start.elapsed(), line));
            }
            console.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        });
    }
    let result = drive(http, &console, start);
    qemu::stop(&mut child);
    let log: String = {
        let c = console.lock().unwrap_or_else(|e| e.into_inner());
        c.lines
            .iter()
            .map(|(t, l)| format!("{:9.3} {l}\n", t.as_secs_f64()))
            .collect()
    };
    let log_path = dir.join("system-console.log");
    std::fs::write(&log_path, log)?;
    result.with_context(|| format!("console in {}", log_path.display()))
}

fn drive(http: u16, console: &Arc<Mutex<Console>>, start: Instant) -> Result<Value> {
    // 1. Boot to the first served response.
    let s = step::Step::start("boot → first HTTP 200");
    let first_200 = loop {
        if start.elapsed() > BOOT_TIMEOUT {
            bail!(
                "no HTTP 200 within {} s of starting QEMU",
                BOOT_TIMEOUT.as_secs()
            );
        }
        if console.lock().map(|c| c.closed).unwrap_or(true) {
            bail!("QEMU exited before serving HTTP");
        }
        if let Ok(true) = get_ok(http) {
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    s.done();
    let when = |fragment: &str| {
        console
            .lock()
            .ok()
            .and_then(|c| c.find(fragment).map(|(t, _)| t.as_secs_f64()))
    };

    // 2. The guest's micro-benchmarks.
    let s = step::Step::start("in-guest micro-benchmarks (BENCH line)");
    let guest: Value = loop {
        let line = console
            .lock()
            .ok()
            .and_then(|c| c.find("BENCH {").map(|(_, l)| l.clone()));
        if let Some(line) = line {
            let json = line.get(line.find('{').unwrap_or(0)..).unwrap_or("");
            break serde_json::from_str(json).with_context(|| format!("parsing `{line}`"))?;
        }
        if let Some(l) = console
            .lock()
            .ok()
            .and_then(|c| c.find("sysbench: ").map(|(_, l)| l.clone()))
        {
            if l.contains("nothing measured") || l.contains("cannot start") {
                bail!("the guest did not measure: {l}");
            }
        }
        if start.elapsed() > GUEST_TIMEOUT || console.lock().map(|c| c.closed).unwrap_or(true) {
            bail!("no BENCH line from the guest");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    s.done();

    // 3. Throughput both ways, 4. requests/s.
    let s = step::Step::start(format!("guest → host: GET /bytes/{BYTES}"));
    let down = download(http)?;
    s.done();
    let s = step::Step::start(format!("host → guest: POST /sink of {BYTES} bytes"));
    let up = upload(http)?;
    s.done();
    let s = step::Step::start(format!("{REQUESTS} × GET / on one keep-alive connection"));
    let rps = requests(http)?;
    s.done();

    let mib = |secs: f64| BYTES as f64 / (1 << 20) as f64 / secs;
    let f = |k: &str| guest.get(k).and_then(Value::as_f64);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let noop_vs_local = ratio(f("noop_cycles"), f("raw_local_cycles"));
    let noop_vs_local_bytes = ratio(f("noop_cycles"), f("raw_local_bytes_cycles"));
    let noop_vs_remote_bytes = ratio(f("noop_cycles"), f("raw_remote_bytes_cycles"));
    // The no-op calls served on the caller's core, against the same-core raw round trip.
    let fast_vs_local = ratio(f("noop_fast_cycles"), f("raw_local_cycles"));
    // Medians: robust against the host descheduling QEMU (means are not, on a shared machine).
    let noop_vs_local_p50 = ratio(f("noop_p50"), f("raw_local_p50"));
    let noop_vs_local_fpu_p50 = ratio(f("noop_p50"), f("raw_local_fpu_bytes_p50"));
    let trips = f("send_1mib_round_trips");
    Ok(json!({
        "note": "one run under QEMU TCG (-smp 2); wall-clock figures depend on the host's load",
        "boot": {
            "first_http_200_s": first_200.as_secs_f64(),
            "console_netserver_ready_s": when("[netserver] ready"),
            "console_http_serving_s": when("http: serving"),
        },
        "throughput": {
            "bytes": BYTES,
            "guest_to_host_s": down,
            "guest_to_host_mib_s": mib(down),
            "host_to_guest_s": up,
            "host_to_guest_mib_s": mib(up),
        },
        "http": { "requests": REQUESTS, "seconds": rps, "requests_per_s": REQUESTS as f64 / rps },
        "guest": guest,
        "ratios": {
            "noop_vs_raw_local": noop_vs_local,
            "noop_vs_raw_local_same_bytes": noop_vs_local_bytes,
            "noop_vs_raw_remote_same_bytes": noop_vs_remote_bytes,
            "noop_same_core_mode_vs_raw_local": fast_vs_local,
            "noop_p50_vs_raw_local_p50": noop_vs_local_p50,
            "noop_p50_vs_raw_local_fpu_bytes_p50": noop_vs_local_fpu_p50,
            "send_1mib_round_trips_per_64k": trips.map(|t| t / SEND_TRIPS_TARGET),
        },
        "targets": {
            // Judged on medians: on a shared host a few descheduled calls move a mean by 10x
            // (seen: raw same-core mean 418k cycles, median 26k), in either direction.
            "noop_le_2x_raw_ipc": noop_vs_local_p50.map(|r| r <= NOOP_RATIO_TARGET),
            "le_1_round_trip_per_64k": trips.map(|t| t <= SEND_TRIPS_TARGET),
        },
    }))
}

fn connect(port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One `GET /` on a fresh connection: answered with 200? (QEMU accepts forwarded connections
/// before the guest listens and then closes them, so "no" is normal during boot.)
fn get_ok(port: u16) -> Result<bool> {
    let mut s = connect(port)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(&head == b"HTTP/1.1 200")
}

/// Reads a response head; returns (status, Content-Length).
fn read_head(r: &mut impl BufRead) -> Result<(u32, Option<u64>)> {
    let mut status = None;
    let mut length = None;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in a response head");
        }
        let line = line.trim_end();
        if line.is_empty() {
            if status == Some(100) {
                status = None;
                continue;
            }
            break;
        }
        if status.is_none() {
            status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
        } else if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok();
            }
        }
    }
    Ok((status.context("no status line")?, length))
}

/// Byte `i` of `/bytes` (apps/README.md).
fn pattern(i: u64) -> u8 {
    ((i.wrapping_mul(31).wrapping_add(i >> 8)) % 251) as u8
}

fn download(port: u16) -> Result<f64> {
    let t0 = Instant::now();
    let mut s = BufReader::with_capacity(1 << 16, connect(port)?);
    write!(
        s.get_mut(),
        "GET /bytes/{BYTES} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )?;
    let (status, len) = read_head(&mut s)?;
    if status != 200 || len != Some(BYTES) {
        bail!("GET /bytes/{BYTES}: status {status}, length {len:?}");
    }
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0u64;
    while at < BYTES {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("GET /bytes: closed after {at} of {BYTES} bytes");
        }
        for (k, &b) in buf[..n].iter().enumerate() {
            if b != pattern(at + k as u64) {
                bail!(
                    "GET /bytes: byte {} is {b:#x}, expected {:#x}",
                    at + k as u64,
                    pattern(at + k as u64)
                );
            }
        }
        at += n as u64;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn upload(port: u16) -> Result<f64> {
    let t0 = Instant::now();
    let mut s = connect(port)?;
    write!(
        s,
        "POST /sink HTTP/1.1\r\nHost: bench\r\nContent-Length: {BYTES}\r\nConnection: close\r\n\r\n"
    )?;
    let chunk: Vec<u8> = (0..1u64 << 16).map(|i| i as u8).collect();
    let mut left = BYTES;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let mut r = BufReader::new(s);
    let (status, _) = read_head(&mut r)?;
    let mut body = String::new();
    r.read_to_string(&mut body)?;
    let secs = t0.elapsed().as_secs_f64();
    if status != 200 || !body.contains(&format!("\"length\":{BYTES}")) {
        bail!("POST /sink: status {status}, body {body:?}");
    }
    Ok(secs)
}

fn requests(port: u16) -> Result<f64> {
    let mut r = BufReader::new(connect(port)?);
    let t0 = Instant::now();
    for i in 0..REQUESTS {
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")?;
        let (status, len) = read_head(&mut r)?;
        if status != 200 {
            bail!("request {i}: status {status}");
        }
        let mut body = vec![0u8; len.context("GET / without Content-Length")? as usize];
        r.read_exact(&mut body)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn print_table(v: &Value) {
    let g = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    let num = |p: &str, digits: usize| match g(p).as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "—".into(),
    };
    let met = |p: &str| match g(p).as_bool() {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "not measured",
    };
    println!("==> system benchmark (one run, QEMU TCG, -smp 2):");
    let rows = [
        (
            "boot → first HTTP 200",
            num("/boot/first_http_200_s", 2),
            "s".to_string(),
        ),
        (
            "guest → host (GET /bytes)",
            num("/throughput/guest_to_host_mib_s", 2),
            "MiB/s".into(),
        ),
        (
            "host → guest (POST /sink)",
            num("/throughput/host_to_guest_mib_s", 2),
            "MiB/s".into(),
        ),
        (
            "HTTP requests/s (keep-alive, sequential)",
            num("/http/requests_per_s", 1),
            "req/s".into(),
        ),
        (
            "raw IPC round trip, same core",
            num("/guest/raw_local_cycles", 0),
            "cycles".into(),
        ),
        (
            "raw IPC round trip, same core, request-sized bytes",
            num("/guest/raw_local_bytes_cycles", 0),
            "cycles".into(),
        ),
        (
            "raw IPC round trip, other core",
            num("/guest/raw_remote_cycles", 0),
            "cycles".into(),
        ),
        (
            "raw IPC round trip, other core, request-sized bytes",
            num("/guest/raw_remote_bytes_cycles", 0),
            "cycles".into(),
        ),
        (
            "raw IPC same core, bytes, both sides using the FPU",
            format!(
                "{} (p50 {})",
                num("/guest/raw_local_fpu_bytes_cycles", 0),
                num("/guest/raw_local_fpu_bytes_p50", 0)
            ),
            "cycles".into(),
        ),
        (
            "no-op socket call (getsockopt), mean",
            num("/guest/noop_cycles", 0),
            "cycles".into(),
        ),
        (
            "  p10 / p50 / p90",
            format!(
                "{} / {} / {}",
                num("/guest/noop_p10", 0),
                num("/guest/noop_p50", 0),
                num("/guest/noop_p90", 0)
            ),
            "cycles".into(),
        ),
        (
            "  calls made after the client used the FPU (lazy-FPU trap)",
            format!("{} of {}", num("/guest/noop_calls_client_fpu", 0), num("/guest/noop_calls_probed", 0)),
            "".into(),
        ),
        (
            "  calls below the split (geo. mean of raw medians)",
            format!(
                "{} of {}",
                num("/guest/noop_fast_calls", 0),
                num("/guest/n", 0)
            ),
            format!("split at {} cycles", num("/guest/noop_split_cycles", 0)),
        ),
        (
            "  mean below / above the split",
            format!(
                "{} / {}",
                num("/guest/noop_fast_cycles", 0),
                num("/guest/noop_slow_cycles", 0)
            ),
            "cycles".into(),
        ),
        (
            "no-op / raw same core, means",
            num("/ratios/noop_vs_raw_local", 2),
            "".into(),
        ),
        (
            "no-op p50 / raw same core p50 (target ≤ 2)",
            num("/ratios/noop_p50_vs_raw_local_p50", 2),
            met("/targets/noop_le_2x_raw_ipc").into(),
        ),
        (
            "  medians: no-op p50 / raw same core with FPU p50",
            num("/ratios/noop_p50_vs_raw_local_fpu_bytes_p50", 2),
            "".into(),
        ),
        (
            "no-op / raw same core, same bytes",
            num("/ratios/noop_vs_raw_local_same_bytes", 2),
            "".into(),
        ),
        (
            "no-op / raw other core, same bytes",
            num("/ratios/noop_vs_raw_remote_same_bytes", 2),
            "".into(),
        ),
        (
            "no-op below the split / raw same core",
            num("/ratios/noop_same_core_mode_vs_raw_local", 2),
            "".into(),
        ),
        (
            "round trips of a 1 MiB send (target ≤ 16)",
            num("/guest/send_1mib_round_trips", 0),
            met("/targets/le_1_round_trip_per_64k").into(),
        ),
        (
            "  non-blocking: most bytes one Send moved",
            num("/guest/nb_max_accepted", 0),
            "bytes".into(),
        ),
        (
            "  non-blocking: Sends / EAGAIN answers",
            format!(
                "{} / {}",
                num("/guest/nb_sends", 0),
                num("/guest/nb_eagain", 0)
            ),
            "".into(),
        ),
    ];
    for (what, value, unit) in rows {
        println!("    {what:<52} {value:>12} {unit}");
    }
}
