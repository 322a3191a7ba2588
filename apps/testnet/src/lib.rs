//! Host test fixture for the applications (a dev-dependency only).
//!
//! Two real net servers (`netserver_core::host::Stack`, smoltcp workers on threads) joined by an
//! in-memory link, addressed like QEMU user networking: the **guest** side (10.0.2.15,
//! fec0::15), where the application under test runs as a libsock client, and the **host** side
//! (10.0.2.2, fec0::2), where the test's own clients play the outside world. Every call goes
//! through libsock's host transport into the server's dispatcher: the same encoding and
//! data-area code as on seL4.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libsock::host::HostTransport;
use libsock::SockAddr;
use netserver_core::host::{HostServer, Impairments, Link, Stack};
use netserver_core::ServerConfig;

/// A libsock client of one of the test servers.
pub type Client = libsock::Client<HostTransport>;

/// The guest's IPv4 address (QEMU user networking).
pub const GUEST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The host's IPv4 address as the guest sees it (QEMU user networking's gateway).
pub const HOST_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The guest's IPv6 address.
pub const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0x15);
/// The host's IPv6 address.
pub const HOST_V6: Ipv6Addr = Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 2);

/// `10.0.2.15:port`.
pub fn guest4(port: u16) -> SockAddr {
    let o = GUEST_V4.octets();
    SockAddr::v4(o[0], o[1], o[2], o[3], port)
}

/// `[fec0::15]:port`.
pub fn guest6(port: u16) -> SockAddr {
    SockAddr::v6(GUEST_V6.octets(), port)
}

/// `10.0.2.2:port`.
pub fn host4(port: u16) -> SockAddr {
    let o = HOST_V4.octets();
    SockAddr::v4(o[0], o[1], o[2], o[3], port)
}

fn config(guest: bool) -> ServerConfig {
    let (v4, v6, gw4, last) = if guest { (GUEST_V4, GUEST_V6, HOST_V4, 0x15) } else { (HOST_V4, HOST_V6, GUEST_V4, 0x02) };
    ServerConfig {
        mac: [0x02, 0, 0, 0, 0, last],
        ipv4: Some((v4, 24)),
        ipv6: Some((v6, 64)),
        gateway4: Some(gw4),
        workers: 2,
        time_wait: Duration::from_millis(200),
        connect_timeout: Duration::from_secs(20),
        seed: 0xa995 + u64::from(last),
        ..ServerConfig::default()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1000);

/// The two servers and the link.
pub struct Net {
    /// The link (its counters tell what happened to frames).
    pub link: Arc<Link>,
    /// The guest's net server (side 0).
    pub guest: Stack,
    /// The host's net server (side 1).
    pub host: Stack,
}

impl Net {
    /// A clean link with both servers running.
    pub fn start() -> Net {
        let link = Link::new(Impairments::default(), 8192);
        let guest = Stack::start(config(true), &link, 0).expect("guest stack");
        let host = Stack::start(config(false), &link, 1).expect("host stack");
        Net { link, guest, host }
    }

    /// A new libsock client of the guest's net server (what an application gets).
    pub fn guest_client(&self) -> Arc<Client> {
        client_of(&self.guest.server)
    }

    /// A new libsock client of the host's net server (the test's "outside world").
    pub fn host_client(&self) -> Arc<Client> {
        client_of(&self.host.server)
    }
}

/// A new libsock client of `server` under a fresh client id.
pub fn client_of(server: &HostServer) -> Arc<Client> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Arc::new(netserver_core::host::client(server, id).expect("client"))
}

/// What an application thread is told and tells.
#[derive(Clone, Default)]
pub struct Control {
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
}

impl Control {
    /// Whether the test asked the application to stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Tells the test that the application is listening.
    pub fn ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

/// An application running on its own thread until stopped.
pub struct AppThread<R> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<R>>,
}

impl<R: Send + 'static> AppThread<R> {
    /// Runs `app(client, control)` on a new thread with a fresh client of `server`, and waits
    /// (up to 10 s) until it calls [`Control::ready`] or ends. `app` should return soon after
    /// [`Control::stopped`] becomes true.
    pub fn spawn(server: &HostServer, app: impl FnOnce(Arc<Client>, &Control) -> R + Send + 'static) -> AppThread<R> {
        let control = Control::default();
        let client = client_of(server);
        let c = control.clone();
        let handle = std::thread::Builder::new()
            .name("app".into())
            .spawn(move || app(client, &c))
            .expect("spawn app");
        let t = AppThread { stop: control.stop.clone(), handle: Some(handle) };
        assert!(
            eventually(Duration::from_secs(10), || control.ready.load(Ordering::Acquire) || t.finished()),
            "the application did not get ready"
        );
        t
    }

    /// Whether the application's thread has ended (e.g. it failed).
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stops the application and returns what it returned.
    pub fn stop(mut self) -> R {
        self.stop.store(true, Ordering::Release);
        self.handle.take().expect("joined once").join().expect("app thread panicked")
    }
}

impl<R> Drop for AppThread<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
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
