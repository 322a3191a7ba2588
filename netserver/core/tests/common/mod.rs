//! Shared test fixtures: two servers joined by an in-memory link, and real libsock clients
//! talking to them through a host transport that runs the server's dispatcher (same encoding,
//! same data-area code as on seL4).

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libsock::host::HostTransport;
use libsock::net_api::SockAddr;
use netserver_core::host::{HostServer, Impairments, Link, Stack};
use netserver_core::ServerConfig;

pub type Client = libsock::Client<HostTransport>;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(100);

/// A libsock client of `server`, registered under a fresh id (`host::client`).
pub fn client(server: &HostServer) -> Arc<Client> {
    client_with_id(server).0
}

pub fn client_with_id(server: &HostServer) -> (Arc<Client>, u64) {
    let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
    (Arc::new(netserver_core::host::client(server, id).expect("client")), id)
}

pub const V4: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
pub const V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
];

pub fn addr4(side: usize, port: u16) -> SockAddr {
    let o = V4[side].octets();
    SockAddr::v4(o[0], o[1], o[2], o[3], port)
}

pub fn addr6(side: usize, port: u16) -> SockAddr {
    SockAddr::v6(V6[side].octets(), port)
}

/// Configuration of side `side` (0 or 1) of a test network.
pub fn config(side: usize) -> ServerConfig {
    ServerConfig {
        mac: [0x02, 0, 0, 0, 0, side as u8 + 1],
        ipv4: Some((V4[side], 24)),
        ipv6: Some((V6[side], 64)),
        workers: 2,
        time_wait: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(20),
        keepalive_interval: Duration::from_millis(50),
        seed: 0x1234 + side as u64,
        ..ServerConfig::default()
    }
}

pub struct Net {
    pub link: Arc<Link>,
    pub a: Stack,
    pub b: Stack,
}

pub fn net_with(imp: Impairments, a: ServerConfig, b: ServerConfig) -> Net {
    let link = Link::new(imp, 8192);
    let sa = Stack::start(a, &link, 0).expect("stack a");
    let sb = Stack::start(b, &link, 1).expect("stack b");
    Net { link, a: sa, b: sb }
}

pub fn net(imp: Impairments) -> Net {
    net_with(imp, config(0), config(1))
}

/// Waits (polling) until `f` holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A deterministic pseudo-random byte stream.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// FNV-1a 64 (a content hash for transfers; not cryptographic, enough to catch corruption).
pub fn hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
