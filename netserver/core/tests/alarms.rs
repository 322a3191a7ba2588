//! `WakeAfter` alarms: a client whose transport cannot wait with a timeout (seL4 5.0 has no
//! timed `Wait`) still blocks — never polls — until a deadline: it asks the server for a wake-up
//! at the deadline, which the platform's timer fires (`Server::fire_alarms` on every tick).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use libsock::host::HostTransport;
use libsock::net_api::{AtomicRegion, Errno};
use libsock::{Client, PollEvents, PollFd, Transport, UdpSocket, Wake};
use netserver_core::host::{HostServer, Impairments};
use netserver_core::wake::Signal;

/// A host transport that behaves like the seL4 one: its timed waits could only poll, so the
/// client must not wait longer than `POLL_BEFORE_BLOCKING` with one. Counts any longer timed
/// wait, and any polling for another thread.
struct Sel4Like {
    inner: HostTransport,
    timed_waits: AtomicU64,
    relaxes: AtomicU64,
}

impl Transport for Sel4Like {
    type Region = <HostTransport as Transport>::Region;
    type RawLock = <HostTransport as Transport>::RawLock;
    fn call(&self, request: &[u8], response: &mut [u8]) -> Result<usize, Errno> {
        self.inner.call(request, response)
    }
    fn wait(&self, timeout: Option<Duration>) -> Wake {
        // Short polls before blocking are the client's choice; anything longer would spin.
        if timeout.is_some_and(|t| t > libsock::POLL_BEFORE_BLOCKING) {
            self.timed_waits.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.wait(timeout)
    }
    fn now(&self) -> Duration {
        self.inner.now()
    }
    fn region(&self) -> &Self::Region {
        self.inner.region()
    }
    fn relax(&self) {
        self.relaxes.fetch_add(1, Ordering::Relaxed);
        self.inner.relax()
    }
    fn park_until(&self, ready: &dyn Fn() -> bool) {
        self.inner.park_until(ready)
    }
    fn unpark_all(&self) {
        self.inner.unpark_all()
    }
    fn timed_wait_polls(&self) -> bool {
        true
    }
}

struct Wakes(Arc<libsock::host::Signal>);
impl Signal for Wakes {
    fn signal(&self) {
        self.0.signal();
    }
}

fn sel4_like_client(server: &HostServer, id: u64) -> Arc<Client<Sel4Like>> {
    let region = Arc::new(AtomicRegion::for_layout(&server.config().layout));
    let wakes = Arc::new(libsock::host::Signal::new());
    server.register_client(id, Arc::new(Wakes(wakes.clone())), Some(region.clone())).unwrap();
    let s = server.clone();
    let inner = HostTransport::new(region, wakes, move |req: &[u8], resp: &mut [u8]| Ok(s.handle(id, req, resp)));
    Arc::new(Client::new(Sel4Like { inner, timed_waits: AtomicU64::new(0), relaxes: AtomicU64::new(0) }).unwrap())
}

/// The platform's timer: fires due alarms every 2 ms until dropped.
struct Ticker(Arc<AtomicBool>, Option<std::thread::JoinHandle<()>>);
impl Ticker {
    fn start(server: &HostServer) -> Ticker {
        let (stop, s) = (Arc::new(AtomicBool::new(false)), server.clone());
        let flag = stop.clone();
        let t = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                s.fire_alarms();
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Ticker(stop, Some(t))
    }
}
impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn timed_waits_block_on_server_alarms() {
    let n = net(Impairments::default());
    let _timer = Ticker::start(&n.a.server);
    let c = sel4_like_client(&n.a.server, 40);
    let u = UdpSocket::bind(&c, addr4(0, 7300)).unwrap();

    // Nothing arrives: the poll ends at its deadline, woken by the alarm.
    let mut fds = [PollFd::new(u.handle(), PollEvents::IN)];
    let start = Instant::now();
    assert_eq!(c.poll(&mut fds, Some(Duration::from_millis(200))), Ok(0));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200) && took < Duration::from_secs(5), "{took:?}");

    // A datagram before the deadline ends the wait early.
    let other = client(&n.b.server);
    let tx = UdpSocket::bind(&other, addr4(1, 0)).unwrap();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        tx.send_to(b"x", addr4(0, 7300)).unwrap();
    });
    let start = Instant::now();
    assert_eq!(c.poll(&mut fds, Some(Duration::from_secs(20))), Ok(1));
    assert!(start.elapsed() < Duration::from_secs(10));
    sender.join().unwrap();

    // An event loop's idle wait, with nothing to poll.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(100) {
        let _ = c.wait_for_signal(Some(Duration::from_millis(100).saturating_sub(start.elapsed())));
    }

    let t = c.transport();
    assert_eq!(t.timed_waits.load(Ordering::Relaxed), 0, "a long timed wait would have polled on seL4");
    assert_eq!(t.relaxes.load(Ordering::Relaxed), 0, "the client polled");
}

#[test]
fn alarms_fire_once_when_due_and_the_earliest_wins() {
    let n = net(Impairments::default());
    let c = sel4_like_client(&n.a.server, 41);
    let signals = c.transport().inner.signal().clone();
    let ask = |micros: u64| {
        let mut req = [0u8; 64];
        let len = libsock::net_api::encode_request(c.epoch(), &libsock::net_api::Request::WakeAfter { micros }, &mut req).unwrap();
        let mut out = [0u8; 64];
        let k = n.a.server.handle(41, &req[..len], &mut out);
        libsock::net_api::decode_response(&out[..k]).unwrap()
    };
    assert_eq!(ask(3_600_000_000), libsock::net_api::Response::Ok);
    assert_eq!(ask(1), libsock::net_api::Response::Ok); // earlier: replaces the hour
    std::thread::sleep(Duration::from_millis(2));
    let _ = signals.wait(Some(Duration::ZERO)); // whatever came before
    assert_eq!(n.a.server.fire_alarms(), 1);
    assert_eq!(signals.wait(Some(Duration::ZERO)), Wake::Signalled);
    assert_eq!(n.a.server.fire_alarms(), 0, "fired once");
    // An unregistered client gets EPERM, like every other request.
    let mut req = [0u8; 64];
    let len = libsock::net_api::encode_request(c.epoch(), &libsock::net_api::Request::WakeAfter { micros: 1 }, &mut req).unwrap();
    let mut out = [0u8; 64];
    let k = n.a.server.handle(999, &req[..len], &mut out);
    assert!(matches!(libsock::net_api::decode_response(&out[..k]).unwrap(), libsock::net_api::Response::Error(_)));
}
