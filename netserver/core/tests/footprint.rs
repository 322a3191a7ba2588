//! Memory per idle socket, measured: a counting global allocator tracks the live heap while
//! sockets are opened, so everything the server allocates for them counts (socket objects,
//! handle tables, port-allocator entries, flow records and maps, smoltcp's socket set), not only
//! the sizes of the types `Server::footprint` adds up. Target: ≤ 2 KiB per idle socket beyond its
//! buffers. One test per file: the allocator is process-wide.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use common::*;
use libsock::{Domain, SockType, TcpListener, TcpStream};
use netserver_core::host::Impairments;
use netserver_core::ServerConfig;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers every operation to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The live heap once the workers are quiet (the least of a few samples: a worker's transient
/// allocations in one iteration must not count).
fn live() -> isize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            LIVE.load(Ordering::Relaxed)
        })
        .min()
        .unwrap()
}

const TCP_BUFFER: usize = 4096;
const N: usize = 400;

#[test]
fn an_idle_socket_costs_at_most_2_kib_beyond_its_buffers() {
    let cfg = |side| ServerConfig { tcp_buffer: TCP_BUFFER, keepalive_interval: Duration::from_secs(75), ..config(side) };
    let n = net_with(Impairments::default(), cfg(0), cfg(1));
    let (ca, cb) = (client(&n.a.server), client(&n.b.server));
    let l = TcpListener::bind(&cb, addr4(1, 9000)).unwrap();
    // Warm up: ARP, first connection, first entries of every map.
    let warm = TcpStream::connect(&ca, addr4(1, 9000)).unwrap();
    let warm_peer = l.accept().unwrap();
    let opened: Vec<_> = (0..N).map(|_| ca.socket(Domain::Inet, SockType::Stream).unwrap()).collect();
    for &h in &opened {
        ca.close(h).unwrap();
    }

    // Sockets that are only open (socket(2), nothing else).
    let before = live();
    let opened: Vec<_> = (0..N).map(|_| ca.socket(Domain::Inet, SockType::Stream).unwrap()).collect();
    let per_open = (live() - before) / N as isize;

    // Idle connections: both ends are sockets of a server here (one on each stack); each end
    // has a smoltcp socket with two buffers of TCP_BUFFER; the server's own socket buffers are
    // allocated on first use, so an idle connection has none.
    let before = live();
    let mut conns = Vec::new();
    for _ in 0..N {
        let s = TcpStream::connect(&ca, addr4(1, 9000)).unwrap();
        conns.push((s, l.accept().unwrap()));
    }
    let sockets = 2 * N as isize;
    let buffers = sockets * 2 * TCP_BUFFER as isize;
    let per_connected = (live() - before - buffers) / sockets;
    eprintln!(
        "live heap per socket: open {per_open} B; connected and idle {per_connected} B beyond {} B of buffers \
         (estimate from type sizes: {} B)",
        2 * TCP_BUFFER,
        netserver_core::host::HostServer::footprint().total()
    );
    assert!(per_open > 0 && per_connected > 0, "the allocator saw the sockets");
    assert!(per_open <= 2048, "an open socket costs {per_open} B");
    assert!(per_connected <= 2048, "an idle connected socket costs {per_connected} B beyond its buffers");
    drop((opened, conns, warm, warm_peer));
}
