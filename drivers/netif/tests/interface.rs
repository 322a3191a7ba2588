//! Both sides of the interface over shared memory in one process (each "process" with its own
//! views): honest traffic in two threads, a hostile driver, a hostile server, restarts.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use common::{head_of, push_raw, slot_of, tail_of, Iface, Notif};
use netif::{
    Desc, DriverSide, Interest, LinkState, NetifError, Notify, RingError, RxBuffer, ServerSide, TxFrame, Wait,
    BUF_SIZE, DEFAULT_RX_TARGET, DRIVER_BADGE_SERVER, FLAG_ERROR, HEADROOM, MAX_FRAME, NUM_BUFFERS, RX_FREE_OFFSET,
    RX_USED_OFFSET, SERVER_BADGE_DRIVER, TX_SUBMIT_OFFSET,
};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

fn up(server: &mut ServerSide<'_>) -> u32 {
    match server.service() {
        LinkState::Up { epoch, .. } => epoch,
        other => panic!("not up: {other:?}"),
    }
}

/// A frame whose bytes say which one it is.
fn frame_bytes(seq: u32, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 7 + i) as u8).collect()
}

fn send_frame(server: &mut ServerSide<'_>, bytes: &[u8]) -> Result<(), NetifError> {
    let tx = server.alloc_tx().ok_or(NetifError::Ring(RingError::Full))?;
    server.tx_buf_mut(&tx)[..bytes.len()].copy_from_slice(bytes);
    server.send(tx, bytes.len() as u32)
}

/// A loopback "NIC": each frame to send is copied into a receive buffer and received.
fn loopback_pass(driver: &mut DriverSide<'_>, spare: &mut VecDeque<RxBuffer>) -> Result<bool, NetifError> {
    let mut progress = false;
    while let Some(b) = driver.take_rx_buffer()? {
        spare.push_back(b);
        progress = true;
    }
    while !spare.is_empty() && driver.rx_used_room()? > 0 && driver.tx_done_room()? > 0 {
        let Some(frame) = driver.take_tx_frame()? else { break };
        let Some(buf) = spare.pop_front() else { break };
        let bytes = driver.region_mut().slice(&frame.frame_area()).unwrap().to_vec();
        driver.region_mut().slice_mut(&buf.frame_area(bytes.len() as u32)).unwrap().copy_from_slice(&bytes);
        driver.complete_rx(buf, bytes.len() as u32)?;
        driver.complete_tx(frame, true)?;
        progress = true;
    }
    Ok(progress)
}

#[test]
fn frames_go_round_a_loopback_driver_in_two_threads() {
    const FRAMES: u32 = 3000;
    let iface = Iface::new();
    let to_driver = Arc::new(Notif::new());
    let to_server = Arc::new(Notif::new());
    let stop = Arc::new(AtomicBool::new(false));

    let driver_thread = {
        let (to_driver, to_server, stop) = (to_driver.clone(), to_server.clone(), stop.clone());
        thread::spawn(move || {
            let mut driver = iface.driver();
            driver.init(MAC, 1500).unwrap();
            to_server.signal(SERVER_BADGE_DRIVER);
            let mut spare = VecDeque::new();
            while !stop.load(Ordering::Acquire) {
                loopback_pass(&mut driver, &mut spare).unwrap();
                if driver.flush().unwrap() == Notify::Signal {
                    to_server.signal(SERVER_BADGE_DRIVER);
                }
                let interest = Interest { rx_buffers: true, tx_frames: !spare.is_empty(), rx_used_room: true, tx_done_room: true };
                if driver.prepare_wait(interest).unwrap() == Wait::Block {
                    to_driver.wait();
                }
            }
            spare.len()
        })
    };

    let mut server = iface.server();
    let (mut sent, mut received) = (0u32, 0u32);
    while received < FRAMES {
        server.service();
        while let Some(f) = server.recv().unwrap() {
            let len = 60 + (received as usize * 13) % (MAX_FRAME as usize - 60);
            assert_eq!(server.frame(&f), &frame_bytes(received, len)[..], "frame {received} intact and in order");
            server.recycle(f);
            received += 1;
        }
        while sent < FRAMES && server.link() != LinkState::Down {
            let len = 60 + (sent as usize * 13) % (MAX_FRAME as usize - 60);
            match send_frame(&mut server, &frame_bytes(sent, len)) {
                Ok(()) => sent += 1,
                Err(NetifError::Ring(RingError::Full)) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        if server.flush().unwrap() == Notify::Signal {
            to_driver.signal(DRIVER_BADGE_SERVER);
        }
        if received < FRAMES && server.prepare_wait().unwrap() == Wait::Block {
            to_server.wait();
        }
    }
    stop.store(true, Ordering::Release);
    to_driver.signal(DRIVER_BADGE_SERVER);
    driver_thread.join().unwrap();
    server.service();
    let s = server.stats();
    assert_eq!((s.rx_frames, s.faults, s.restarts), (u64::from(FRAMES), 0, 0));
    assert_eq!(s.tx_done, s.tx_frames, "every sent buffer came back");
    assert_eq!(server.lent(), DEFAULT_RX_TARGET, "only the receive loans are out");
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32, "no buffer leaked");
}

#[test]
fn server_before_driver_is_down_and_drops_frames_without_leaking() {
    let iface = Iface::new();
    let mut server = iface.server();
    assert_eq!(server.service(), LinkState::Down);
    assert_eq!(server.recv(), Ok(None));
    assert_eq!(server.flush(), Ok(Notify::Quiet));
    assert_eq!(server.prepare_wait(), Ok(Wait::Block));
    let idle = server.idle();
    assert_eq!(send_frame(&mut server, &[0; 60]), Err(NetifError::Down));
    assert_eq!(server.idle(), idle, "the dropped frame's buffer is back");
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    assert_eq!(server.prepare_wait(), Ok(Wait::Retry), "attaches on the way to blocking");
    assert!(matches!(server.link(), LinkState::Up { epoch: 1, mac: MAC, mtu: 1500 }));
    assert_eq!(server.mac(), Some(MAC));
}

#[test]
fn frames_are_read_where_the_driver_wrote_them() {
    let iface = Iface::new();
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    let mut server = iface.server();
    up(&mut server);
    let _ = server.flush().unwrap();
    let buf = driver.take_rx_buffer().unwrap().unwrap();
    let at = buf.frame_area(5);
    driver.region_mut().slice_mut(&at).unwrap().copy_from_slice(b"hello");
    driver.complete_rx(buf, 5).unwrap();
    let _ = driver.flush().unwrap();
    let f = server.recv().unwrap().unwrap();
    assert_eq!(server.frame(&f), b"hello");
    // Zero copy: the server's slice is the very bytes at offset + HEADROOM of the buffer.
    let expected = iface.bufs.peek(at.offset as usize & !3);
    assert_eq!(u32::from_ne_bytes(server.frame(&f)[..4].try_into().unwrap()), expected);
    assert_eq!(at.offset % BUF_SIZE, HEADROOM);
    server.recycle(f);
}

#[test]
fn error_flagged_and_empty_receives_are_recycled_not_delivered() {
    let iface = Iface::new();
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    let mut server = iface.server();
    up(&mut server);
    let _ = server.flush().unwrap();
    let a = driver.take_rx_buffer().unwrap().unwrap();
    let b = driver.take_rx_buffer().unwrap().unwrap();
    let c = driver.take_rx_buffer().unwrap().unwrap();
    driver.fail_rx(a).unwrap();
    driver.complete_rx(b, 0).unwrap();
    driver.complete_rx(c, MAX_FRAME + 1).unwrap(); // longer than its room: sent as an error
    let _ = driver.flush().unwrap();
    assert_eq!(server.recv(), Ok(None));
    assert_eq!(server.stats().rx_errors, 3);
    assert_eq!(server.lent(), DEFAULT_RX_TARGET, "all three went straight back on rx_free");
    assert_eq!(server.stats().faults, 0);
}

// ---- a hostile driver ----

/// What the honest driver saw of the server's loans.
struct Loans {
    tx_id: u32,
    rx_id: u32,
    rx_offset: u32,
}

/// A server attached to an honest driver's epoch with its receive buffers lent; a frame sent
/// (so one buffer is lent on tx_submit). Returns the server and one loan of each kind.
fn attached_server(iface: &Iface) -> (ServerSide<'static>, Loans) {
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    let mut server = iface.server();
    up(&mut server);
    send_frame(&mut server, &[0xab; 60]).unwrap();
    let _ = server.flush().unwrap();
    // What the driver side sees: the tx loan's id.
    let tx: TxFrame = driver.take_tx_frame().unwrap().unwrap();
    let rx: RxBuffer = driver.take_rx_buffer().unwrap().unwrap();
    let loans = Loans { tx_id: tx.id(), rx_id: rx.id(), rx_offset: rx.frame_area(0).offset - HEADROOM };
    let _ = driver.flush().unwrap();
    (server, loans)
}

fn assert_faulty(server: &mut ServerSide<'_>, what: &str) -> NetifError {
    let LinkState::Faulty { error, .. } = server.link() else { panic!("{what}: not faulty: {:?}", server.link()) };
    assert!(error.is_peer_fault(), "{what}: {error:?}");
    assert_eq!(server.stats().faults, 1, "{what}");
    assert_eq!(server.recv(), Err(NetifError::Faulty), "{what}: stays faulty");
    assert_eq!(server.flush(), Ok(Notify::Quiet), "{what}");
    assert_eq!(send_frame(server, &[0; 60]), Err(NetifError::Faulty), "{what}: sends are refused");
    error
}

#[test]
fn a_wild_used_index_makes_the_driver_faulty_not_the_server_crash() {
    let iface = Iface::new();
    let (mut server, _) = attached_server(&iface);
    iface.rings.poke(tail_of(RX_USED_OFFSET), 100_000);
    assert_eq!(server.recv(), Err(NetifError::Faulty));
    let e = assert_faulty(&mut server, "wild tail");
    assert!(matches!(e, NetifError::Ring(RingError::Corrupt { .. })), "{e:?}");
}

#[test]
fn a_wild_free_head_makes_the_driver_faulty() {
    let iface = Iface::new();
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    let rings = iface.ring_set();
    let region = iface.bufs.map().into_region(BUF_SIZE).unwrap();
    let mut server = ServerSide::with_rx_target(rings, region, 256).unwrap();
    up(&mut server);
    let _ = server.flush().unwrap();
    assert_eq!(server.lent(), 256, "rx_free is full");
    // The driver returns one buffer as received, then claims to have consumed more of rx_free
    // than was ever published; recycling the buffer needs room on the full rx_free, so the
    // server reads the head.
    let buf = driver.take_rx_buffer().unwrap().unwrap();
    driver.complete_rx(buf, 60).unwrap();
    let _ = driver.flush().unwrap();
    iface.rings.poke(head_of(RX_FREE_OFFSET), 5000);
    let f = server.recv().unwrap().unwrap();
    server.recycle(f);
    assert_faulty(&mut server, "wild head");
}

#[test]
fn returned_descriptors_are_checked_against_the_loans() {
    type Case = (&'static str, Box<dyn Fn(u32, u32) -> Vec<Desc>>);
    let cases: Vec<Case> = vec![
        ("unknown id", Box::new(|_, _| vec![Desc::new(0, 60, 9999, 0)])),
        ("id never lent", Box::new(|_, rx| vec![Desc::new(0, 60, (rx + 300) % NUM_BUFFERS as u32, 0)])),
        ("a transmit loan on rx_used", Box::new(|tx, _| vec![Desc::new(0, 60, tx, 0)])),
        ("longer than the buffer", Box::new(|_, rx| vec![Desc::new(0, BUF_SIZE + 1, rx, 0)])),
        ("longer than the frame room", Box::new(|_, rx| vec![Desc::new(0, MAX_FRAME + 1, rx, 0)])),
        ("returned twice", Box::new(|_, rx| vec![Desc::new(0, 60, rx, 0), Desc::new(0, 60, rx, 0)])),
    ];
    for (what, descs) in cases {
        let iface = Iface::new();
        let (mut server, loans) = attached_server(&iface);
        push_raw(iface.ring_set().rx_used, &descs(loans.tx_id, loans.rx_id));
        // Frames delivered are held (not recycled, so not lent again) while the rest comes in.
        let mut held = Vec::new();
        loop {
            match server.recv() {
                Ok(Some(f)) => held.push(f),
                Ok(None) => panic!("{what}: accepted"),
                Err(_) => break,
            }
        }
        assert!(held.len() <= 1, "{what}");
        assert_faulty(&mut server, what);
        held.into_iter().for_each(|f| server.recycle(f));
    }
}

#[test]
fn the_drivers_offset_is_ignored_the_pools_record_is_used() {
    let iface = Iface::new();
    let (mut server, loans) = attached_server(&iface);
    // The driver claims the buffer is somewhere else.
    let elsewhere = (loans.rx_offset + BUF_SIZE * 100) % netif::BUFFERS_REGION_SIZE as u32 + 7;
    push_raw(iface.ring_set().rx_used, &[Desc::new(elsewhere, 60, loans.rx_id, 0)]);
    iface.bufs.poke((loans.rx_offset + HEADROOM) as usize, u32::from_ne_bytes(*b"mine"));
    let f = server.recv().unwrap().unwrap();
    assert_eq!(&server.frame(&f)[..4], b"mine");
    server.recycle(f);
}

#[test]
fn a_transmit_loan_returned_on_tx_done_twice_is_a_fault() {
    let iface = Iface::new();
    let (mut server, loans) = attached_server(&iface);
    let tx_id = loans.tx_id;
    push_raw(iface.ring_set().tx_done, &[Desc::new(0, 60, tx_id, 0), Desc::new(0, 60, tx_id, 0)]);
    server.service();
    assert_eq!(server.stats().tx_done, 1);
    assert_faulty(&mut server, "tx returned twice");
}

#[test]
fn a_faulty_driver_is_ignored_until_it_restarts() {
    let iface = Iface::new();
    let (mut server, _) = attached_server(&iface);
    iface.rings.poke(tail_of(RX_USED_OFFSET), 7777);
    assert_eq!(server.recv(), Err(NetifError::Faulty));
    assert!(matches!(server.service(), LinkState::Faulty { epoch: 1, .. }), "same epoch: still faulty");
    let mut driver = iface.driver();
    assert_eq!(driver.init(MAC, 1500).unwrap().get(), 2);
    assert!(matches!(server.service(), LinkState::Up { epoch: 2, .. }));
    assert_eq!(server.lent(), DEFAULT_RX_TARGET, "old loans reclaimed, receive buffers re-posted");
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32);
}

// ---- restart ----

#[test]
fn a_restarted_driver_gets_a_new_epoch_and_the_server_resumes() {
    let iface = Iface::new();
    let mut old = iface.driver();
    old.init(MAC, 1500).unwrap();
    let mut server = iface.server();
    assert_eq!(up(&mut server), 1);
    for i in 0..5 {
        send_frame(&mut server, &frame_bytes(i, 100)).unwrap();
    }
    let _ = server.flush().unwrap();
    // The old driver took some buffers, delivered one frame the server still holds, then died.
    let buf = old.take_rx_buffer().unwrap().unwrap();
    old.complete_rx(buf, 10).unwrap();
    let _ = old.flush().unwrap();
    let held = server.recv().unwrap().unwrap();
    let _in_flight = old.take_rx_buffer().unwrap().unwrap();
    assert_eq!(server.lent(), DEFAULT_RX_TARGET - 1 + 5);

    let mut new = iface.driver();
    assert_eq!(new.init([2, 0, 0, 0, 0, 1], 9000).unwrap().get(), 2);
    let _ = new.flush().unwrap();
    // The server notices on its next ring operation (or service) and re-attaches.
    assert_eq!(server.recv(), Ok(None));
    assert!(matches!(server.service(), LinkState::Up { epoch: 2, mac: [2, 0, 0, 0, 0, 1], mtu: 9000 }));
    assert_eq!(server.stats().restarts, 1);
    assert_eq!(server.lent(), DEFAULT_RX_TARGET, "tx loans reclaimed; rx re-posted up to the target");
    // A frame held across the restart is still readable and recycles (to the pool: the
    // receive target is met).
    assert_eq!(server.frame(&held).len(), 10);
    let idle = server.idle();
    server.recycle(held);
    assert_eq!((server.lent(), server.idle()), (DEFAULT_RX_TARGET, idle + 1));
    let _ = server.flush().unwrap();
    // Traffic resumes through the new driver.
    send_frame(&mut server, b"after the restart, a frame").unwrap();
    let _ = server.flush().unwrap();
    let mut spare = VecDeque::new();
    loopback_pass(&mut new, &mut spare).unwrap();
    let _ = new.flush().unwrap();
    let f = server.recv().unwrap().unwrap();
    assert_eq!(server.frame(&f), b"after the restart, a frame");
    server.recycle(f);
    // The dead driver's views see the new epoch and cannot act on the old one.
    assert!(matches!(old.take_rx_buffer(), Err(NetifError::Ring(RingError::EpochChanged { .. }))));
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32, "no buffer leaked");
}

/// Byte offset of a ring's `epoch` word in the rings region.
fn epoch_of(ring_offset: usize) -> usize {
    ring_offset + 16
}

/// What a driver finds in `rx_free` after the server lent it receive buffers.
fn rx_buffers_offered(driver: &mut DriverSide<'_>) -> u32 {
    let mut n = 0;
    while let Ok(Some(_)) = driver.take_rx_buffer() {
        n += 1;
    }
    n
}

#[test]
fn a_hostile_max_epoch_does_not_make_the_next_driver_reuse_the_attached_one() {
    // The hostile proptest's saved case `[Service, Poke { ring: 0, word: 4, value: u32::MAX }]`:
    // `newest + 1` wrapped to 1, the epoch the server was attached to, and the server kept the
    // old MAC (and its loans on rings that had been wiped).
    let iface = Iface::new();
    let mut server = iface.server();
    let mut old = iface.driver();
    assert_eq!(old.init([2, 0, 0, 0, 0, 1], 1500).unwrap().get(), 1);
    assert_eq!(up(&mut server), 1);
    iface.rings.poke(epoch_of(RX_FREE_OFFSET), u32::MAX);
    let mut fresh = iface.driver();
    let epoch = fresh.init([2, 0, 0, 0, 0, 2], 1500).unwrap().get();
    assert_eq!(epoch, 2, "after u32::MAX: not 0, and not 1 (still the info block's epoch)");
    assert_eq!(server.service(), LinkState::Up { epoch, mac: [2, 0, 0, 0, 0, 2], mtu: 1500 });
    assert_eq!(server.stats().restarts, 1);
    let _ = server.flush().unwrap();
    assert_eq!(rx_buffers_offered(&mut fresh), DEFAULT_RX_TARGET, "receive buffers re-posted to the new epoch");
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32);
}

#[test]
fn a_driver_restarting_with_the_attached_epoch_is_still_a_restart() {
    // The server attached to epoch 1 and missed a restart (epoch 2); then a hostile u32::MAX
    // made the next driver wrap back to 1. Nothing in the region says the server is on 1, so
    // the driver cannot avoid it: the server must see that the info block changed.
    let iface = Iface::new();
    let mut server = iface.server();
    let mut first = iface.driver();
    first.init([2, 0, 0, 0, 0, 1], 1500).unwrap();
    assert_eq!(up(&mut server), 1);
    let mut second = iface.driver();
    assert_eq!(second.init([2, 0, 0, 0, 0, 1], 1500).unwrap().get(), 2);
    iface.rings.poke(epoch_of(RX_FREE_OFFSET), u32::MAX);
    let mut third = iface.driver();
    assert_eq!(third.init([2, 0, 0, 0, 0, 2], 9000).unwrap().get(), 1, "the epoch the server is attached to");
    assert_eq!(server.service(), LinkState::Up { epoch: 1, mac: [2, 0, 0, 0, 0, 2], mtu: 9000 });
    assert_eq!(server.stats().restarts, 1);
    let _ = server.flush().unwrap();
    assert_eq!(rx_buffers_offered(&mut third), DEFAULT_RX_TARGET, "old loans reclaimed, buffers re-posted");
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32);
}

#[test]
fn a_driver_restarting_with_the_faulty_epoch_is_not_ignored() {
    // The proptest's saved seed: the server refused to attach to epoch 1 (corrupt header) and
    // marked it faulty; a hostile u32::MAX later made the honest driver wrap back to epoch 1.
    let iface = Iface::new();
    let mut server = iface.server();
    let mut first = iface.driver();
    first.init([2, 0, 0, 0, 0, 1], 1500).unwrap();
    iface.rings.poke(RX_FREE_OFFSET, 0); // magic
    assert!(matches!(server.service(), LinkState::Faulty { epoch: 1, .. }));
    iface.rings.poke(epoch_of(RX_FREE_OFFSET), u32::MAX);
    let mut fresh = iface.driver();
    assert_eq!(fresh.init([2, 0, 0, 0, 0, 2], 1500).unwrap().get(), 2, "1 is still in the region");
    assert_eq!(server.service(), LinkState::Up { epoch: 2, mac: [2, 0, 0, 0, 0, 2], mtu: 1500 });

    // Same, with a restart the server missed: epoch 1 is nowhere in the region any more, so the
    // driver does wrap to it; the different info block is what tells the server.
    let iface = Iface::new();
    let mut server = iface.server();
    iface.driver().init([2, 0, 0, 0, 0, 1], 1500).unwrap();
    iface.rings.poke(RX_FREE_OFFSET, 0);
    assert!(matches!(server.service(), LinkState::Faulty { epoch: 1, .. }));
    assert_eq!(iface.driver().init([2, 0, 0, 0, 0, 1], 1500).unwrap().get(), 2);
    iface.rings.poke(epoch_of(RX_FREE_OFFSET), u32::MAX);
    let mut fresh = iface.driver();
    assert_eq!(fresh.init([2, 0, 0, 0, 0, 2], 1500).unwrap().get(), 1);
    assert_eq!(server.service(), LinkState::Up { epoch: 1, mac: [2, 0, 0, 0, 0, 2], mtu: 1500 });
    let _ = server.flush().unwrap();
    assert_eq!(rx_buffers_offered(&mut fresh), DEFAULT_RX_TARGET);
    assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32);
}

// ---- a hostile server ----

#[test]
fn the_driver_refuses_descriptors_outside_one_buffer() {
    let iface = Iface::new();
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    let region_len = netif::BUFFERS_REGION_SIZE as u32;
    push_raw(
        iface.ring_set().rx_free,
        &[
            Desc::new(region_len, BUF_SIZE, 1, 0),       // past the end
            Desc::new(u32::MAX, u32::MAX, 2, 0),         // overflow
            Desc::new(100, BUF_SIZE, 3, 0),              // spans two buffers
            Desc::new(0, HEADROOM + 100, 4, 0),          // too short to receive a frame
            Desc::new(BUF_SIZE, BUF_SIZE, 5, 0),         // fine
        ],
    );
    let mut bad = 0;
    let good = loop {
        match driver.take_rx_buffer() {
            Ok(Some(b)) => break b,
            Ok(None) => panic!("the good one is lost"),
            Err(e) => {
                assert!(e.is_peer_fault(), "{e:?}");
                bad += 1;
            }
        }
    };
    assert_eq!((bad, good.id()), (4, 5));
    assert_eq!(good.device_area(12), Some(Desc::new(BUF_SIZE + HEADROOM - 12, BUF_SIZE - HEADROOM + 12, 0, 0)));
    push_raw(
        iface.ring_set().tx_submit,
        &[
            Desc::new(0, MAX_FRAME + 1, 1, 0),  // frame runs into the next buffer
            Desc::new(0, u32::MAX - 8, 2, 0),   // headroom + len overflows
            Desc::new(0, 13, 3, 0),             // shorter than an Ethernet header
            Desc::new(region_len - 64, 60, 4, 0), // past the end
            Desc::new(0, 60, 5, 0),             // fine
        ],
    );
    let mut bad = 0;
    let good = loop {
        match driver.take_tx_frame() {
            Ok(Some(f)) => break f,
            Ok(None) => panic!("the good one is lost"),
            Err(_) => bad += 1,
        }
    };
    assert_eq!((bad, good.id(), good.len()), (4, 5, 60));
    assert_eq!(good.header_area(12), Some(Desc::new(HEADROOM - 12, 12, 0, 0)));
    assert_eq!(good.device_area(40), None, "a header longer than the headroom is refused");
}

#[test]
fn the_driver_sees_a_corrupt_server_index_as_an_error() {
    let iface = Iface::new();
    let mut driver = iface.driver();
    driver.init(MAC, 1500).unwrap();
    iface.rings.poke(tail_of(TX_SUBMIT_OFFSET), 1 << 20);
    let e = driver.take_tx_frame().unwrap_err();
    assert!(matches!(e, NetifError::Ring(RingError::Corrupt { .. })), "{e:?}");
    assert!(e.is_peer_fault());
}

#[test]
fn garbage_in_the_info_block_is_not_an_epoch() {
    let iface = Iface::new();
    let mut server = iface.server();
    for w in 0..16 {
        iface.rings.poke(w * 4, 0xdead_0000 + w as u32);
    }
    assert_eq!(server.service(), LinkState::Down);
    let _ = slot_of(0, 0);
    assert_eq!(FLAG_ERROR, 1);
}
