//! In-QEMU test client of the whole system (`tests/qemu/netserver.toml`): a libsock application
//! whose traffic goes app → net server (IPC, data area) → worker → driver rings → virtio-net →
//! QEMU user networking and back, checked byte for byte. It relies on the test's QEMU options:
//!
//! * `guestfwd=tcp:10.0.2.100:7-cmd:cat` — a TCP connection to 10.0.2.100:7 is joined to a `cat`
//!   process on the host: an echo server outside the guest;
//! * `tftp=<dir>` — QEMU's built-in TFTP server on 10.0.2.2:69 (UDP), which answers any read
//!   request (with data, or with an error packet for a missing file).
//!
//! Then it talks to the other applications of the system over the net server's loopback (the
//! echo app on port 7, the http app's `/stats`) and asks the net server for its counters.
//! Each step prints `TEST PASS: …` or `TEST FAIL: …`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use libsock::sel4::Sel4Transport;
use libsock::{Client, Errno, PollEvents, PollFd, SockAddr, TcpStream, UdpSocket};
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

type C = Arc<Client<Sel4Transport>>;

const GUESTFWD_ECHO: [u8; 4] = [10, 0, 2, 100];
const HOST: [u8; 4] = [10, 0, 2, 2];
const SELF: [u8; 4] = [10, 0, 2, 15];

fn v4(a: [u8; 4], port: u16) -> SockAddr {
    SockAddr::v4(a[0], a[1], a[2], a[3], port)
}

fn main(_info: &'static StartInfo) {
    let client: C = match libsock::sel4::connect() {
        Ok(c) => c,
        Err(e) => {
            println!("TEST FAIL: {e}");
            return;
        }
    };
    println!("TEST PASS: session with the net server (epoch {})", client.epoch());
    let mut ok = true;
    ok &= report("tcp echo through QEMU user networking (guestfwd to a host `cat`)", tcp_external(&client));
    ok &= report("udp through QEMU user networking (TFTP 10.0.2.2:69)", udp_tftp(&client));
    ok &= report("tcp to the echo app over loopback", tcp_echo_app(&client));
    ok &= report("tcp over IPv6 through QEMU user networking", tcp6_refused(&client));
    ok &= report("http /stats over loopback", http_stats(&client));
    ok &= report("net server stats", stats(&client));
    if ok {
        println!("nettest: all passed");
    } else {
        println!("nettest: FAILED");
    }
}

fn report(what: &str, r: Result<alloc::string::String, alloc::string::String>) -> bool {
    match r {
        Ok(detail) => {
            println!("TEST PASS: {what}: {detail}");
            true
        }
        Err(e) => {
            println!("TEST FAIL: {what}: {e}");
            false
        }
    }
}

fn err(step: &str, e: Errno) -> alloc::string::String {
    alloc::format!("{step}: {e}")
}

/// The byte at offset `i` of a test stream (not a multiple of anything the stack chunks by).
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 9)) as u8
}

/// Writes `n` pattern bytes and reads them back, in chunks, checking every byte.
fn echo_exchange(s: &TcpStream<Sel4Transport>, n: usize) -> Result<(), alloc::string::String> {
    let data: Vec<u8> = (0..n).map(pattern).collect();
    let mut back = alloc::vec![0u8; n];
    let mut sent = 0;
    let mut got = 0;
    // Write in 8 KiB pieces and read whatever came back in between, so neither side's buffers
    // have to hold the whole stream.
    while got < n {
        if sent < n {
            let end = (sent + 8192).min(n);
            s.write_all(&data[sent..end]).map_err(|e| err("write", e))?;
            sent = end;
        }
        while got < sent {
            let k = s.read(&mut back[got..]).map_err(|e| err("read", e))?;
            if k == 0 {
                return Err(alloc::format!("end of stream after {got} of {n} bytes"));
            }
            got += k;
            if sent < n {
                break;
            }
        }
    }
    if let Some(i) = (0..n).find(|&i| back[i] != data[i]) {
        return Err(alloc::format!("byte {i} differs: sent {:#04x}, got {:#04x}", data[i], back[i]));
    }
    Ok(())
}

fn tcp_external(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    let s = TcpStream::connect(c, v4(GUESTFWD_ECHO, 7)).map_err(|e| err("connect 10.0.2.100:7", e))?;
    let local = s.local_addr().map_err(|e| err("getsockname", e))?;
    let n = 256 * 1024;
    echo_exchange(&s, n)?;
    Ok(alloc::format!("{n} bytes echoed and verified (local {local})"))
}

/// Waits until `sock` is readable, at most `limit`.
fn readable(c: &C, h: libsock::SocketHandle, limit: Duration) -> Result<(), alloc::string::String> {
    let mut fds = [PollFd::new(h, PollEvents::IN)];
    match c.poll(&mut fds, Some(limit)) {
        Ok(0) => Err(alloc::format!("no answer within {} s", limit.as_secs())),
        Ok(_) => Ok(()),
        Err(e) => Err(err("poll", e)),
    }
}

fn udp_tftp(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    let u = UdpSocket::bind(c, v4([0, 0, 0, 0], 0)).map_err(|e| err("bind", e))?;
    // RRQ "netserver-probe" octet.
    let mut rrq = Vec::new();
    rrq.extend_from_slice(&[0, 1]);
    rrq.extend_from_slice(b"netserver-probe\0octet\0");
    let mut answer = [0u8; 600];
    for attempt in 1..=3 {
        u.send_to(&rrq, v4(HOST, 69)).map_err(|e| err("sendto", e))?;
        if readable(c, u.handle(), Duration::from_secs(5)).is_err() {
            println!("udp: no TFTP answer to attempt {attempt}");
            continue;
        }
        let (n, from) = u.recv_from(&mut answer).map_err(|e| err("recvfrom", e))?;
        let opcode = answer.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
        return match opcode {
            3 | 5 => Ok(alloc::format!(
                "{} ({n} bytes) from {from}",
                if opcode == 3 { "DATA" } else { "ERROR" }
            )),
            _ => Err(alloc::format!("unexpected TFTP opcode {opcode} from {from}")),
        };
    }
    Err("no TFTP answer in 3 attempts".into())
}

fn tcp_echo_app(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    // The echo app may still be starting: retry refused connects for a while.
    let mut tries = 0;
    let s = loop {
        match TcpStream::connect(c, v4(SELF, 7)) {
            Ok(s) => break s,
            Err(Errno::ECONNREFUSED) if tries < 100 => {
                tries += 1;
                sleep_ms(100);
            }
            Err(e) => return Err(err("connect 10.0.2.15:7", e)),
        }
    };
    echo_exchange(&s, 64 * 1024)?;
    Ok("65536 bytes echoed and verified".into())
}

/// IPv6 through QEMU user networking: neighbour discovery for the gateway fec0::2, then a TCP
/// connect to a host port nothing listens on, which slirp answers with a reset.
fn tcp6_refused(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    let h = c.socket(libsock::Domain::Inet6, libsock::SockType::Stream).map_err(|e| err("socket", e))?;
    c.set_nonblocking(h, true).map_err(|e| err("nonblocking", e))?;
    let to = SockAddr::v6([0xfe, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 1);
    let r = match c.connect(h, &to) {
        Err(Errno::EINPROGRESS) => {
            let mut fds = [PollFd::new(h, PollEvents::OUT)];
            match c.poll(&mut fds, Some(Duration::from_secs(20))) {
                Ok(0) => Err("no answer within 20 s".into()),
                Ok(_) => match c.getsockopt(h, libsock::SockOpt::Error) {
                    Ok(libsock::SockOptValue::Error(Some(Errno::ECONNREFUSED))) => Ok(alloc::format!("[fec0::2]:1 refused (reset from slirp)")),
                    Ok(libsock::SockOptValue::Error(None)) => Ok(alloc::format!("[fec0::2]:1 connected")),
                    Ok(v) => Err(alloc::format!("connect ended with {v:?}")),
                    Err(e) => Err(err("getsockopt", e)),
                },
                Err(e) => Err(err("poll", e)),
            }
        }
        Err(Errno::ECONNREFUSED) => Ok("[fec0::2]:1 refused".into()),
        Ok(()) => Ok("[fec0::2]:1 connected".into()),
        Err(e) => Err(err("connect", e)),
    };
    let _ = c.close(h);
    r
}

fn http_stats(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    let s = TcpStream::connect(c, v4(SELF, 80)).map_err(|e| err("connect 10.0.2.15:80", e))?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: 10.0.2.15\r\nConnection: close\r\n\r\n").map_err(|e| err("write", e))?;
    let mut body = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        let n = s.read(&mut buf).map_err(|e| err("read", e))?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    let text = core::str::from_utf8(&body).map_err(|_| alloc::string::String::from("not UTF-8"))?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(alloc::format!("answer starts {:?}", text.get(..40)));
    }
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    if !json.contains("\"workers\":[{") {
        return Err(alloc::format!("no per-worker net stats in {json}"));
    }
    println!("http /stats: {}", json.trim_end());
    Ok(alloc::format!("200 with per-worker net stats ({} bytes)", body.len()))
}

fn stats(c: &C) -> Result<alloc::string::String, alloc::string::String> {
    let s = c.stats().map_err(|e| err("stats", e))?;
    for (i, w) in s.workers.iter().enumerate() {
        println!(
            "worker {i}: packets in {} out {}, sockets {}, connections {}",
            w.packets_in, w.packets_out, w.sockets, w.connections
        );
    }
    let packets: u64 = s.workers.iter().map(|w| w.packets_in).sum();
    if s.workers.is_empty() || packets == 0 {
        return Err(alloc::format!("no packets counted: {s:?}"));
    }
    let busy = s.workers.iter().filter(|w| w.packets_in > 0).count();
    Ok(alloc::format!(
        "{} workers ({busy} received frames), {packets} frames in, ports in use {}, ring drops {}, driver restarts {}",
        s.workers.len(),
        s.ports_in_use,
        s.ring_drops,
        s.driver_restarts
    ))
}

fn sleep_ms(ms: u64) {
    let mhz = sel4_rt::tsc_mhz().max(1);
    let until = sel4_rt::rdtsc() + ms * 1000 * mhz;
    while sel4_rt::rdtsc() < until {
        sel4::syscall::yield_now();
    }
}
