//! The net server process: a thin shell over `netserver-core` (see README.md for the data path,
//! the threads and their priorities, and the grants).
//!
//! Start-up (main thread):
//! 1. sleepers (one notification per worker and one for the NIC) and the timer thread (PIT);
//! 2. the NIC: `netif::ServerSide` over the `rings` and `buffers` regions; wait (at most
//!    [`LINK_WAIT`]) for the driver to publish its MAC and MTU;
//! 3. the server core (`Server::new`), one worker per `worker<N>` thread of the description,
//!    each pinned to its core by the description;
//! 4. the clients named by the description (`client.<id>.wake`, `client.<id>.data`);
//! 5. the IPC threads (`ipc<N>`), each on its core's endpoint `net.<N>`;
//! 6. then the main thread becomes the rx thread: the only consumer of the driver's `rx_used`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

mod clients;
mod nic;
mod supervision;
mod time;

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::time::Duration;

use netif::{LinkState, ServerSide, BUF_SIZE};
use netserver_core::platform::Clock;
use netserver_core::wake::Signal;
use netserver_core::{Server, ServerConfig};
use sel4::{Endpoint, Notification};
use sel4_dma::take_region;
use sel4_rt::sync::RawMutex;
use sel4_rt::{println, StartInfo};

use nic::{Nic, NicState};
use time::{Sleeper, Timer, TscClock};

sel4_rt::component_main!(main);

/// Defaults for QEMU user networking (slirp): the guest's address, the gateway (the host), and
/// slirp's default IPv6 prefix fec0::/64 with the host at fec0::2. The description's
/// `[component.config]` may override each: `ipv4 = "10.0.2.15/24"`, `gateway4 = "10.0.2.2"`,
/// `ipv6 = "fec0::15/64"`, `gateway6 = "fec0::2"` (`"none"` turns a family or a gateway off).
const IPV4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 2, 15), 24);
const GATEWAY4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const IPV6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0x15), 64);
const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);
/// QEMU's default MAC, used when no driver shows up in time.
const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// How long start-up waits for the driver to publish its MAC.
const LINK_WAIT: Duration = Duration::from_secs(5);
/// Most workers (one per core).
const MAX_WORKERS: usize = 16;

macro_rules! need {
    ($e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                println!("cannot start: {}: {:?}", $what, e);
                return;
            }
        }
    };
}

/// Threads of this component named `<prefix><n>` for n = 0, 1, ... (stops at the first gap).
fn numbered_threads(info: &StartInfo, prefix: &str) -> usize {
    (0..MAX_WORKERS).take_while(|i| info.thread(&format!("{prefix}{i}")).is_some()).count()
}

/// `"addr/prefix"` from the component's configuration, `default` when absent, `None` for
/// `"none"`; a malformed value is reported and the default used.
fn config_cidr<A: core::str::FromStr + Copy>(key: &str, default: (A, u8), max: u8) -> Option<(A, u8)> {
    let Some(text) = sel4_rt::config(key) else { return Some(default) };
    if text == "none" {
        return None;
    }
    let parsed = text.split_once('/').and_then(|(a, p)| Some((a.parse().ok()?, p.parse::<u8>().ok().filter(|p| *p <= max)?)));
    if parsed.is_none() {
        println!("config `{key}` = {text:?} is not address/prefix; using the default");
    }
    Some(parsed.unwrap_or(default))
}

/// An address from the configuration (see [`config_cidr`]).
fn config_addr<A: core::str::FromStr + Copy>(key: &str, default: A) -> Option<A> {
    let Some(text) = sel4_rt::config(key) else { return Some(default) };
    if text == "none" {
        return None;
    }
    Some(text.parse().unwrap_or_else(|_| {
        println!("config `{key}` = {text:?} is not an address; using the default");
        default
    }))
}

/// A duration in milliseconds from the configuration (`key = "1000"`), `default` when absent; a
/// malformed or zero value is reported and the default used.
fn config_millis(key: &str, default: Duration) -> Duration {
    let Some(text) = sel4_rt::config(key) else { return default };
    match text.parse::<u64>() {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => {
            println!("config `{key}` = {text:?} is not a positive number of milliseconds; using the default");
            default
        }
    }
}

/// The ephemeral port range from the configuration (`ephemeral = "LO-HI"`), or the default.
fn config_ephemeral() -> netserver_core::port::PortConfig {
    let default = netserver_core::port::PortConfig::default();
    let Some(text) = sel4_rt::config("ephemeral") else { return default };
    let range = text.split_once('-').and_then(|(lo, hi)| Some((lo.trim().parse::<u16>().ok()?, hi.trim().parse::<u16>().ok()?)));
    match range {
        Some((lo, hi)) if 0 < lo && lo <= hi => netserver_core::port::PortConfig { ephemeral_lo: lo, ephemeral_hi: hi, ..default },
        _ => {
            println!("config `ephemeral` = {text:?} is not a port range LO-HI; using the default");
            default
        }
    }
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn main(info: &'static StartInfo) {
    let clock = TscClock::new();
    let workers = numbered_threads(info, "worker");
    let ipc_threads = numbered_threads(info, "ipc");
    if workers == 0 || ipc_threads == 0 {
        println!("cannot start: the description gives no `worker0` or no `ipc0` thread");
        return;
    }

    // 1. Sleepers and the timer.
    let nic_sleeper: &'static Sleeper = leak(need!(Sleeper::from_grants("nic", clock), "notification `nic`"));
    let mut worker_sleepers: Vec<&'static Sleeper> = Vec::new();
    for i in 0..workers {
        let name: &'static str = Box::leak(format!("worker.{i}").into_boxed_str());
        worker_sleepers.push(leak(need!(Sleeper::from_grants(name, clock), name)));
    }
    let mut all: Vec<&'static Sleeper> = worker_sleepers.clone();
    all.push(nic_sleeper);
    let sleepers: &'static [&'static Sleeper] = Box::leak(all.into_boxed_slice());
    let timer = need!(Timer::from_grants(sleepers, clock), "timer");
    need!(sel4_rt::thread::spawn("timer", move || timer.run()), "thread `timer`");

    // 2. The NIC: rings and buffers shared with the driver; wait for it to come up.
    let rings = need!(take_region("rings").and_then(|m| m.into_netif_rings()), "region `rings`");
    let region = need!(take_region("buffers").and_then(|m| m.into_region(BUF_SIZE)), "region `buffers`");
    let driver = need!(sel4_rt::cap::<Notification>("driver").ok_or("missing"), "notification `driver`");
    let mut state = NicState::new(need!(ServerSide::new(rings, region), "netif server side"));
    let start = clock.now_micros();
    let (mac, mtu) = loop {
        if let LinkState::Up { mac, mtu, .. } = state.side().service() {
            break (mac, mtu);
        }
        let waited = Duration::from_micros(clock.now_micros().saturating_sub(start));
        if waited >= LINK_WAIT {
            println!("no driver after {} s: using MAC 52:54:00:12:34:56 until one comes up", LINK_WAIT.as_secs());
            break (DEFAULT_MAC, 1500);
        }
        if state.side().flush().is_ok_and(|n| n == netif::Notify::Signal) {
            driver.signal();
        }
        nic_sleeper.sleep(Some(LINK_WAIT - waited));
    };

    // 3. The server core and its workers.
    let (ipv4, ipv6) = (config_cidr("ipv4", IPV4, 32), config_cidr("ipv6", IPV6, 128));
    let (gateway4, gateway6) = (config_addr("gateway4", GATEWAY4), config_addr("gateway6", GATEWAY6));
    let cfg = ServerConfig {
        mac,
        ipv4,
        ipv6,
        gateway4,
        gateway6,
        workers,
        // 64 KiB per direction in smoltcp and in the server socket: one client send of a whole
        // 64 KiB data-area slot fits once the previous one drained (one round trip per 64 KiB).
        tcp_buffer: 64 * 1024,
        socket_buffer: 64 * 1024,
        udp_buffer: 16 * 1024,
        udp_packets: 32,
        seed: sel4_rt::rdtsc() | 1,
        // A new epoch per instance: were the net server restarted, its predecessor's clients
        // would get `ServerRestarted` for their old handles, never someone else's socket.
        epoch: (sel4_rt::rdtsc() as u32) | 1,
        ports: config_ephemeral(),
        keepalive_interval: config_millis("keepalive_ms", ServerConfig::default().keepalive_interval),
        ..ServerConfig::default()
    };
    let signals: Vec<Arc<dyn Signal>> = worker_sleepers
        .iter()
        .filter_map(|s| s.signaller())
        .map(|s| Arc::new(s) as Arc<dyn Signal>)
        .collect();
    if signals.len() != workers {
        println!("cannot start: every `worker.<n>` notification needs a `worker.<n>.signal` capability");
        return;
    }
    let server: Server<RawMutex> = need!(Server::new(cfg, Arc::new(clock), signals), "server configuration");
    let nic: &'static Nic = leak(Nic::new(state, driver, &worker_sleepers, server.clone(), mtu));
    for (i, sleeper) in worker_sleepers.iter().copied().enumerate() {
        let (rx, tx, flusher) = nic.worker_io(i);
        let mut worker = need!(server.worker(i, rx, tx), "worker");
        let name = format!("worker{i}");
        let core = info.thread(&name).map_or(0, |t| t.core);
        need!(
            sel4_rt::thread::spawn(&name, move || {
                println!("worker {i} running on core {core}");
                loop {
                    let delay = worker.poll();
                    flusher.end_of_iteration();
                    match delay {
                        Some(d) if d.is_zero() => {}
                        d => {
                            sleeper.sleep(d);
                        }
                    }
                }
            }),
            name
        );
    }

    // 4. Clients.
    let registered: &'static [u64] = Box::leak(clients::register_all(&server).into_boxed_slice());

    // On every timer tick: death notices from the supervisor, and the clients' `WakeAfter`
    // alarms (how an app blocks until a deadline: seL4 5.0 has no timed wait).
    {
        let deaths = clients::DeathNotices::from_grants();
        let server = server.clone();
        time::on_tick(move || {
            if let Some(deaths) = &deaths {
                deaths.reap(&server);
            }
            server.fire_alarms();
        });
    }

    // 5. IPC threads: `ipc<n>` serves endpoint `net.<n>` (one per core; a description with one
    // shared endpoint `net` still works, calls then cross cores), holding blocking sends when
    // it has its notification `ipc.<n>` (see `clients::serve`).
    let shared = sel4_rt::cap::<Endpoint>("net");
    let (first, end) = info.free_slots;
    let per_thread = (end.saturating_sub(first) / ipc_threads as u64).min(clients::HELD_PER_THREAD);
    for i in 0..ipc_threads {
        let server = server.clone();
        let endpoint = need!(sel4_rt::cap::<Endpoint>(&format!("net.{i}")).or(shared).ok_or("missing"), "endpoint `net.<n>` or `net`");
        let slots = first + i as u64 * per_thread..first + (i as u64 + 1) * per_thread;
        let holding = clients::holding(info, i, slots);
        need!(
            sel4_rt::thread::spawn(&format!("ipc{i}"), move || clients::serve(server, endpoint, registered, holding)),
            "IPC thread"
        );
    }

    let m = mac;
    let cores: Vec<u8> = (0..workers).map(|i| info.thread(&format!("worker{i}")).map_or(0, |t| t.core)).collect();
    let show = |a: Option<alloc::string::String>| a.unwrap_or_else(|| "none".into());
    println!(
        "ready: {workers} worker(s) on cores {cores:?}, {ipc_threads} IPC thread(s), clients {registered:?}; {} gw {}, {} gw {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        show(ipv4.map(|(a, p)| format!("{a}/{p}"))),
        show(gateway4.map(|a| format!("{a}"))),
        show(ipv6.map(|(a, p)| format!("{a}/{p}"))),
        show(gateway6.map(|a| format!("{a}"))),
        m[0], m[1], m[2], m[3], m[4], m[5]
    );

    // 6. The rx thread.
    nic.rx_loop(nic_sleeper)
}
