//! The pump against a fake device: frames from the "wire" land in the server's buffers where
//! the device wrote them, frames the server sends reach the wire with the device header in
//! front, a hostile server's bad descriptors never reach the device, a restarted driver
//! re-handshakes — and, in two threads, nobody polls: both sides block on notifications.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use netif::{
    Desc, DriverSide, LinkState, NetifError, Notify, Region, RingError, RxBuffer, ServerSide, TxFrame, Wait,
    BUFFERS_REGION_SIZE, BUF_SIZE, DRIVER_BADGE_IRQ, DRIVER_BADGE_SERVER, HEADROOM, RINGS_REGION_SIZE,
    SERVER_BADGE_DRIVER,
};
use sel4_dma::host::HostMem;
use virtio_net_core::{Driver, NetDevice};

const HDR: u32 = 12;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

/// Frames on both sides of the fake device, shared with the test.
#[derive(Default)]
struct Wire {
    /// Frames arriving from the network, not yet received.
    incoming: VecDeque<Vec<u8>>,
    /// Frames the device sent.
    sent: Vec<Vec<u8>>,
    /// Every area the device touched was inside the region (checked by `Region`), and these
    /// are the buffer ids it saw, to check none came from a refused descriptor.
    rx_ids: Vec<u32>,
}

/// A device with `q`-entry queues that "DMAs" through the region like the real one: header in
/// front of the frame position, frame at it.
struct FakeDevice {
    q: usize,
    wire: Arc<Mutex<Wire>>,
    rx: VecDeque<RxBuffer>,
    tx: VecDeque<TxFrame>,
    irq: Option<Arc<Notif>>,
    pending_irq: bool,
}

impl FakeDevice {
    fn new(q: usize, wire: Arc<Mutex<Wire>>) -> Self {
        FakeDevice { q, wire, rx: VecDeque::new(), tx: VecDeque::new(), irq: None, pending_irq: false }
    }
}

impl FakeDevice {
    fn raise(&mut self) {
        self.pending_irq = true;
        if let Some(irq) = &self.irq {
            irq.signal(DRIVER_BADGE_IRQ);
        }
    }
}

impl NetDevice for FakeDevice {
    type Error = RingError;

    fn can_receive(&self) -> bool {
        self.rx.len() < self.q
    }
    fn rx_submit(&mut self, _region: &mut Region<'_>, buf: RxBuffer) -> Result<(), (RxBuffer, RingError)> {
        let waiting = {
            let mut wire = self.wire.lock().unwrap();
            wire.rx_ids.push(buf.id());
            !wire.incoming.is_empty()
        };
        self.rx.push_back(buf);
        // Like a real device: a frame waiting for a buffer is received into it, and that
        // completion interrupts.
        if waiting {
            self.raise();
        }
        Ok(())
    }
    fn rx_poll(&mut self, region: &mut Region<'_>) -> Option<(RxBuffer, Result<u32, RingError>)> {
        let frame = {
            let mut wire = self.wire.lock().unwrap();
            if self.rx.is_empty() {
                return None;
            }
            wire.incoming.pop_front()?
        };
        let buf = self.rx.pop_front()?;
        let area = buf.device_area(HDR).unwrap();
        let bytes = match region.slice_mut(&area) {
            Ok(b) => b,
            Err(e) => return Some((buf, Err(e))),
        };
        let n = frame.len().min(bytes.len() - HDR as usize);
        bytes[..HDR as usize].fill(0);
        bytes[HDR as usize..HDR as usize + n].copy_from_slice(&frame[..n]);
        Some((buf, Ok(n as u32)))
    }
    fn can_send(&self) -> bool {
        self.tx.len() < self.q
    }
    fn tx_submit(&mut self, region: &mut Region<'_>, frame: TxFrame) -> Result<(), (TxFrame, RingError)> {
        match region.slice_mut(&frame.header_area(HDR).unwrap()) {
            Ok(h) => h.fill(0),
            Err(e) => return Err((frame, e)),
        }
        let bytes = match region.slice(&frame.device_area(HDR).unwrap()) {
            Ok(b) => b.to_vec(),
            Err(e) => return Err((frame, e)),
        };
        assert!(bytes[..HDR as usize].iter().all(|&b| b == 0), "header written in front of the frame");
        self.wire.lock().unwrap().sent.push(bytes[HDR as usize..].to_vec());
        self.tx.push_back(frame);
        self.raise();
        Ok(())
    }
    fn tx_poll(&mut self, _region: &mut Region<'_>) -> Option<(TxFrame, Result<(), RingError>)> {
        Some((self.tx.pop_front()?, Ok(())))
    }
    fn ack_interrupt(&mut self) -> bool {
        std::mem::take(&mut self.pending_irq)
    }
}

/// Notification stand-in.
struct Notif {
    bits: Mutex<u64>,
    cv: Condvar,
}

impl Notif {
    fn new() -> Self {
        Notif { bits: Mutex::new(0), cv: Condvar::new() }
    }
    fn signal(&self, badge: u64) {
        *self.bits.lock().unwrap() |= badge;
        self.cv.notify_all();
    }
    /// Waits for a signal; a wait of more than 20 s is a lost wake-up and fails the test.
    fn wait(&self) -> u64 {
        let mut bits = self.bits.lock().unwrap();
        while *bits == 0 {
            let (b, timeout) = self.cv.wait_timeout(bits, std::time::Duration::from_secs(20)).unwrap();
            assert!(!timeout.timed_out() || *b != 0, "lost wake-up: blocked for 20 s");
            bits = b;
        }
        std::mem::take(&mut *bits)
    }
}

#[derive(Clone, Copy)]
struct Iface {
    rings: HostMem,
    bufs: HostMem,
}

impl Iface {
    fn new() -> Self {
        Iface { rings: HostMem::new(RINGS_REGION_SIZE), bufs: HostMem::new(BUFFERS_REGION_SIZE) }
    }
    fn server(&self) -> ServerSide<'static> {
        ServerSide::new(self.rings.map().into_netif_rings().unwrap(), self.bufs.map().into_region(BUF_SIZE).unwrap()).unwrap()
    }
    fn driver(&self, dev: FakeDevice) -> Driver<'static, FakeDevice> {
        let side =
            DriverSide::new(self.rings.map().into_netif_rings().unwrap(), self.bufs.map().into_region(BUF_SIZE).unwrap())
                .unwrap();
        Driver::new(dev, side)
    }
}

fn frame(seq: u32) -> Vec<u8> {
    let len = 60 + (seq as usize * 31) % 1454;
    (0..len).map(|i| (seq as usize + i * 3) as u8).collect()
}

/// Single thread: pump both sides until `done`.
fn settle(server: &mut ServerSide<'_>, driver: &mut Driver<'_, FakeDevice>, mut on_frame: impl FnMut(&[u8])) {
    for _ in 0..50 {
        server.service();
        while let Some(f) = server.recv().unwrap() {
            on_frame(server.frame(&f));
            server.recycle(f);
        }
        let _ = server.flush().unwrap();
        let _ = driver.pump().unwrap();
    }
}

#[test]
fn received_frames_arrive_in_place_in_order_and_buffers_cycle() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut driver = iface.driver(FakeDevice::new(64, wire.clone()));
    driver.start(MAC, 1500).unwrap();
    let mut server = iface.server();
    assert!(matches!(server.service(), LinkState::Up { mac: MAC, .. }));
    wire.lock().unwrap().incoming.extend((0..1000).map(frame));
    let mut got = 0u32;
    settle(&mut server, &mut driver, |bytes| {
        assert_eq!(bytes, &frame(got)[..], "frame {got}");
        got += 1;
    });
    assert_eq!(got, 1000);
    assert_eq!(driver.stats().rx_frames, 1000);
    assert_eq!(server.lent(), netif::DEFAULT_RX_TARGET, "receive loans back at the target");
}

#[test]
fn sent_frames_reach_the_wire_with_the_header_in_the_headroom() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut driver = iface.driver(FakeDevice::new(32, wire.clone()));
    driver.start(MAC, 1500).unwrap();
    let mut server = iface.server();
    server.service();
    let mut sent = 0u32;
    while sent < 1000 {
        while sent < 1000 {
            let Some(tx) = server.alloc_tx() else { break };
            let f = frame(sent);
            server.tx_buf_mut(&tx)[..f.len()].copy_from_slice(&f);
            match server.send(tx, f.len() as u32) {
                Ok(()) => sent += 1,
                Err(NetifError::Ring(RingError::Full)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        settle(&mut server, &mut driver, |_| {});
    }
    let wire = wire.lock().unwrap();
    assert_eq!(wire.sent.len(), 1000);
    assert!(wire.sent.iter().enumerate().all(|(i, f)| *f == frame(i as u32)), "every frame intact, in order");
    assert_eq!(server.stats().tx_done, 1000);
    assert_eq!(server.lent(), netif::DEFAULT_RX_TARGET, "no transmit buffer left with the driver");
}

#[test]
fn bad_descriptors_from_a_hostile_server_never_reach_the_device() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut driver = iface.driver(FakeDevice::new(64, wire.clone()));
    driver.start(MAC, 1500).unwrap();
    // No ServerSide: the "server" writes raw descriptors.
    let rings = iface.rings.map().into_netif_rings().unwrap();
    let mut rx_free = shared_ring::Producer::attach(rings.rx_free).unwrap();
    let mut tx_submit = shared_ring::Producer::attach(rings.tx_submit).unwrap();
    for d in [
        Desc::new(BUFFERS_REGION_SIZE as u32, BUF_SIZE, 100, 0),
        Desc::new(BUF_SIZE - 1, BUF_SIZE, 101, 0),
        Desc::new(0, 64, 102, 0),
        Desc::new(4 * BUF_SIZE, BUF_SIZE, 7, 0),
    ] {
        rx_free.push(d).unwrap();
    }
    for d in [Desc::new(0, BUF_SIZE, 103, 0), Desc::new(0, 3, 104, 0), Desc::new(8 * BUF_SIZE, 100, 8, 0)] {
        tx_submit.push(d).unwrap();
    }
    let _ = rx_free.publish().unwrap();
    let _ = tx_submit.publish().unwrap();
    let _ = driver.pump().unwrap();
    let _ = driver.pump().unwrap(); // the send completes
    assert_eq!(driver.stats().bad_descriptors, 5);
    assert_eq!(wire.lock().unwrap().rx_ids, [7], "only the valid receive buffer reached the device");
    assert_eq!(wire.lock().unwrap().sent.len(), 1, "only the valid frame was sent");
    // The valid transmit buffer came back on tx_done.
    let mut tx_done = shared_ring::Consumer::attach(rings.tx_done).unwrap();
    assert_eq!(tx_done.pop().unwrap().map(|d| d.id), Some(8));
}

#[test]
fn a_corrupt_server_ring_stops_the_pump_with_an_error() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut driver = iface.driver(FakeDevice::new(8, wire));
    driver.start(MAC, 1500).unwrap();
    iface.rings.poke(netif::RX_FREE_OFFSET + 64, 1 << 30); // rx_free tail far beyond capacity
    let e = driver.pump().unwrap_err();
    assert!(e.is_peer_fault(), "{e:?}");
}

#[test]
fn a_restarted_driver_re_handshakes_and_traffic_resumes() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut old = iface.driver(FakeDevice::new(16, wire.clone()));
    assert_eq!(old.start(MAC, 1500).unwrap().get(), 1);
    let mut server = iface.server();
    wire.lock().unwrap().incoming.extend((0..10).map(frame));
    let mut got = Vec::new();
    settle(&mut server, &mut old, |b| got.push(b.to_vec()));
    assert_eq!(got.len(), 10);
    drop(old); // the old process dies holding 16 receive buffers in its "device"

    let mut new = iface.driver(FakeDevice::new(16, wire.clone()));
    assert_eq!(new.start(MAC, 1500).unwrap().get(), 2);
    wire.lock().unwrap().incoming.extend((10..20).map(frame));
    settle(&mut server, &mut new, |b| got.push(b.to_vec()));
    assert_eq!(got.len(), 20);
    assert!(got.iter().enumerate().all(|(i, f)| *f == frame(i as u32)));
    assert_eq!(server.stats().restarts, 1);
    assert!(matches!(server.link(), LinkState::Up { epoch: 2, .. }));
}

#[test]
fn two_threads_block_on_notifications_and_nothing_is_lost() {
    const N: u32 = 2000;
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let to_driver = Arc::new(Notif::new());
    let to_server = Arc::new(Notif::new());
    let stop = Arc::new(AtomicBool::new(false));
    let driver_thread = {
        let (wire, to_driver, to_server, stop) = (wire.clone(), to_driver.clone(), to_server.clone(), stop.clone());
        thread::spawn(move || {
            let mut dev = FakeDevice::new(32, wire);
            dev.irq = Some(to_driver.clone());
            let mut driver = iface.driver(dev);
            driver.start(MAC, 1500).unwrap();
            to_server.signal(SERVER_BADGE_DRIVER);
            let mut waits = 0u64;
            while !stop.load(Ordering::Acquire) {
                if driver.pump().unwrap() == Notify::Signal {
                    to_server.signal(SERVER_BADGE_DRIVER);
                }
                if driver.prepare_wait().unwrap() == Wait::Block {
                    if to_driver.wait() & DRIVER_BADGE_IRQ != 0 {
                        driver.interrupt();
                    }
                    waits += 1;
                }
            }
            (driver.stats(), waits)
        })
    };
    // The wire feeds frames in bursts from this thread, raising the "interrupt" each time.
    let mut server = iface.server();
    let mut fed = 0u32;
    let mut got = 0u32;
    let mut sent = 0u32;
    while got < N || sent < N {
        server.service();
        while let Some(f) = server.recv().unwrap() {
            assert_eq!(server.frame(&f), &frame(got)[..]);
            server.recycle(f);
            got += 1;
        }
        while sent < N && server.link() != LinkState::Down {
            let Some(tx) = server.alloc_tx() else { break };
            let f = frame(sent);
            server.tx_buf_mut(&tx)[..f.len()].copy_from_slice(&f);
            match server.send(tx, f.len() as u32) {
                Ok(()) => sent += 1,
                Err(NetifError::Ring(RingError::Full)) => break,
                Err(e) => panic!("{e}"),
            }
        }
        if fed < N && server.link() != LinkState::Down {
            let burst = (N - fed).min(50);
            wire.lock().unwrap().incoming.extend((fed..fed + burst).map(frame));
            fed += burst;
            to_driver.signal(DRIVER_BADGE_IRQ);
        }
        if server.flush().unwrap() == Notify::Signal {
            to_driver.signal(DRIVER_BADGE_SERVER);
        }
        if (got < N || sent < N) && fed == N && server.prepare_wait().unwrap() == Wait::Block {
            to_server.wait();
        }
    }
    // Let the driver hand back the last transmit buffers.
    while server.stats().tx_done < u64::from(N) {
        server.service();
        let _ = server.flush().unwrap();
        if server.stats().tx_done < u64::from(N) && server.prepare_wait().unwrap() == Wait::Block {
            to_server.wait();
        }
    }
    stop.store(true, Ordering::Release);
    to_driver.signal(DRIVER_BADGE_SERVER);
    let (stats, waits) = driver_thread.join().unwrap();
    assert_eq!((stats.rx_frames, stats.tx_frames), (u64::from(N), u64::from(N)));
    assert_eq!(wire.lock().unwrap().sent.len(), N as usize);
    assert!(waits > 0, "the driver blocked when idle");
    assert_eq!(HEADROOM, 32);
}

/// Injected garbage (both variants) makes the server declare the driver faulty without touching
/// anything the driver named, and a driver restarted afterwards is taken up again.
#[test]
fn injected_garbage_marks_the_driver_faulty_until_it_restarts() {
    for variant in 0..2u64 {
        let iface = Iface::new();
        let wire = Arc::new(Mutex::new(Wire::default()));
        let mut driver = iface.driver(FakeDevice::new(16, wire.clone()));
        driver.start(MAC, 1500).unwrap();
        let mut server = iface.server();
        wire.lock().unwrap().incoming.extend((0..5).map(frame));
        let mut got = 0;
        settle(&mut server, &mut driver, |_| got += 1);
        assert_eq!(got, 5);
        driver.inject_garbage(variant).unwrap();
        server.service();
        let faulty = loop {
            match server.recv() {
                Ok(Some(f)) => server.recycle(f),
                Ok(None) => break matches!(server.link(), LinkState::Faulty { .. }),
                Err(e) => break e == NetifError::Faulty,
            }
        };
        assert!(faulty, "variant {variant}: garbage not detected; link {:?}", server.link());
        drop(driver);
        let mut new = iface.driver(FakeDevice::new(16, wire.clone()));
        new.start(MAC, 1500).unwrap();
        wire.lock().unwrap().incoming.extend((5..10).map(frame));
        settle(&mut server, &mut new, |_| got += 1);
        assert_eq!(got, 10, "variant {variant}: traffic resumes with the new driver");
        assert!(matches!(server.link(), LinkState::Up { .. }));
    }
}

/// A driver told to stall its transmit ring keeps receiving but never takes another frame.
#[test]
fn a_stalled_transmit_ring_stops_sending_but_not_receiving() {
    let iface = Iface::new();
    let wire = Arc::new(Mutex::new(Wire::default()));
    let mut driver = iface.driver(FakeDevice::new(16, wire.clone()));
    driver.start(MAC, 1500).unwrap();
    let mut server = iface.server();
    server.service();
    driver.stall_tx();
    for i in 0..4 {
        let tx = server.alloc_tx().unwrap();
        let f = frame(i);
        server.tx_buf_mut(&tx)[..f.len()].copy_from_slice(&f);
        server.send(tx, f.len() as u32).unwrap();
    }
    wire.lock().unwrap().incoming.extend((0..5).map(frame));
    let mut got = 0;
    settle(&mut server, &mut driver, |_| got += 1);
    assert_eq!(got, 5, "receiving goes on");
    assert!(wire.lock().unwrap().sent.is_empty(), "nothing sent");
    assert_eq!(server.stats().tx_done, 0);
}
