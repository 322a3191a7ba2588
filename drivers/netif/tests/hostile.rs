//! Property test: a driver (or anything else) writing any value to any word of the rings
//! region, at any point between the server's operations, never makes the server panic, hand
//! out bytes outside a buffer, or lose track of its buffers. An honest loopback driver runs in
//! between, so the server is exercised in every state (down, up, faulty, restarted).

mod common;

use std::collections::VecDeque;
use std::sync::OnceLock;

use common::Iface;
use netif::{
    DriverSide, Interest, LinkState, RxBuffer, ServerSide, MAX_FRAME, NUM_BUFFERS, RINGS_REGION_SIZE, RX_FREE_OFFSET,
    RX_USED_OFFSET, TX_DONE_OFFSET, TX_SUBMIT_OFFSET,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// Write `value` to word `word` of ring `ring` (0..4; 4 = the info block).
    Poke { ring: usize, word: usize, value: u32 },
    Service,
    Recv { recycle: bool },
    Send { len: u32 },
    Flush,
    PrepareWait,
    /// One pass of the honest loopback driver.
    Driver,
    /// The driver restarts (new epoch).
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    let interesting = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), 0u32..600, any::<u32>()];
    prop_oneof![
        3 => (0usize..5, 0usize..(48 + 4 * 12), interesting).prop_map(|(ring, word, value)| Op::Poke { ring, word, value }),
        2 => Just(Op::Service),
        2 => any::<bool>().prop_map(|recycle| Op::Recv { recycle }),
        2 => (0u32..2100).prop_map(|len| Op::Send { len }),
        1 => Just(Op::Flush),
        1 => Just(Op::PrepareWait),
        3 => Just(Op::Driver),
        1 => Just(Op::Restart),
    ]
}

/// One interface for all cases (the memory is leaked by design); each case zeroes the rings.
fn iface() -> Iface {
    static IFACE: OnceLock<Iface> = OnceLock::new();
    *IFACE.get_or_init(Iface::new)
}

fn driver_pass(driver: &mut DriverSide<'_>, spare: &mut VecDeque<RxBuffer>) {
    let _ = (|| -> Result<(), netif::NetifError> {
        while let Some(b) = driver.take_rx_buffer()? {
            spare.push_back(b);
        }
        while let (Some(f), Some(b)) = (driver.take_tx_frame()?, spare.pop_front()) {
            let len = f.len();
            driver.complete_rx(b, len)?;
            driver.complete_tx(f, true)?;
        }
        let _ = driver.flush()?;
        let _ = driver.prepare_wait(Interest { rx_buffers: true, ..Interest::default() })?;
        Ok(())
    })();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn hostile_writes_never_break_the_server(ops in proptest::collection::vec(op(), 1..120)) {
        let iface = iface();
        for off in (0..RINGS_REGION_SIZE).step_by(4) {
            iface.rings.poke(off, 0);
        }
        let mut server: ServerSide<'static> = iface.server();
        let mut driver = iface.driver();
        let _ = driver.init([2, 0, 0, 0, 0, 1], 1500);
        let mut spare = VecDeque::new();
        let mut held = Vec::new();
        let bases = [RX_FREE_OFFSET, RX_USED_OFFSET, TX_SUBMIT_OFFSET, TX_DONE_OFFSET, 0];
        for op in ops {
            match op {
                Op::Poke { ring, word, value } => iface.rings.poke(bases[ring] + 4 * word, value),
                Op::Service => { server.service(); }
                Op::Recv { recycle } => {
                    if let Ok(Some(f)) = server.recv() {
                        let bytes = server.frame(&f);
                        prop_assert_eq!(bytes.len() as u32, f.len());
                        prop_assert!(f.len() <= MAX_FRAME && !f.is_empty());
                        if recycle { server.recycle(f) } else { held.push(f) }
                    }
                }
                Op::Send { len } => {
                    if let Some(tx) = server.alloc_tx() {
                        let buf = server.tx_buf_mut(&tx);
                        prop_assert_eq!(buf.len() as u32, MAX_FRAME);
                        let n = (len as usize).min(buf.len());
                        buf[..n].fill(0x5a);
                        let _ = server.send(tx, len);
                    }
                }
                Op::Flush => { let _ = server.flush(); }
                Op::PrepareWait => { let _ = server.prepare_wait(); }
                Op::Driver => driver_pass(&mut driver, &mut spare),
                Op::Restart => {
                    spare.clear();
                    driver = iface.driver();
                    let _ = driver.init([2, 0, 0, 0, 0, 1], 1500);
                }
            }
            // The server never believes it has more buffers than exist.
            prop_assert!(server.lent() + server.idle() + held.len() as u32 <= NUM_BUFFERS as u32);
        }
        // After the driver restarts honestly, the server recovers whatever happened.
        held.into_iter().for_each(|f| server.recycle(f));
        let mut fresh = iface.driver();
        let epoch = fresh.init([2, 0, 0, 0, 0, 2], 1500).unwrap().get();
        match server.service() {
            LinkState::Up { epoch: e, mac, .. } => {
                prop_assert_eq!(e, epoch);
                prop_assert_eq!(mac, [2, 0, 0, 0, 0, 2]);
            }
            other => prop_assert!(false, "not up after a clean restart: {:?}", other),
        }
        prop_assert_eq!(server.lent() + server.idle(), NUM_BUFFERS as u32, "every buffer accounted for");
    }
}
