//! A stand-in for the net server in the in-QEMU test: it uses `netif::ServerSide` the way the
//! net server will, and proves both directions of the zero-copy path through the virtio-net
//! driver process with QEMU user networking (gateway 10.0.2.2, guest 10.0.2.15):
//!
//! 1. waits for the driver to initialise the rings (link up, MAC published);
//! 2. sends an ARP request for 10.0.2.2 and waits for the reply (learns the gateway's MAC);
//! 3. sends an ICMP echo request to 10.0.2.2 and waits for the matching reply.
//!
//! Frames are written once, in place, into lent buffers, and read in place from the buffers the
//! device wrote. Between frames it blocks on its notification exactly as the net server will
//! (flush, `prepare_wait`, wait), so the replies can only arrive through the driver's
//! interrupt-driven receive path and its wake-up signal; a lost frame shows as the test's
//! timeout.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use netif::{LinkState, Notify, ServerSide, Wait, BUF_SIZE};
use sel4::{Cap, Notification};
use sel4_dma::take_region;
use sel4_rt::{println, StartInfo};

sel4_rt::component_main!(main);

const MY_IP: [u8; 4] = [10, 0, 2, 15];
const GW_IP: [u8; 4] = [10, 0, 2, 2];
const PING_ID: u16 = 0x5e14;
const PING_SEQ: u16 = 1;
const PAYLOAD: &[u8; 32] = b"netif zero-copy echo 0123456789.";


fn main(_info: &'static StartInfo) {
    let (Some(wake), Some(driver)) = (sel4_rt::cap::<Notification>("wake"), sel4_rt::cap::<Notification>("driver")) else {
        println!("TEST FAIL: notifications `wake`/`driver` not granted");
        return;
    };
    let rings = take_region("rings").and_then(|m| m.into_netif_rings());
    let region = take_region("buffers").and_then(|m| m.into_region(BUF_SIZE));
    let (Ok(rings), Ok(region)) = (rings, region) else {
        println!("TEST FAIL: regions `rings`/`buffers` not usable");
        return;
    };
    let mut server = match ServerSide::new(rings, region) {
        Ok(s) => s,
        Err(e) => {
            println!("TEST FAIL: server side: {e}");
            return;
        }
    };
    let mut io = Io { server: &mut server, wake, driver };

    // 1. Link up: the driver initialises the rings and signals.
    let mac = loop {
        if let LinkState::Up { mac, epoch, mtu } = io.server.service() {
            println!("TEST PASS: link up (epoch {epoch}, mtu {mtu}, {} rx buffers lent)", io.server.lent());
            break mac;
        }
        io.flush();
        io.wake.wait();
    };

    // 2. ARP.
    let gw_mac = io.exchange("arp", |buf| arp_request(buf, mac), |frame| arp_reply_from_gateway(frame));
    let Some(gw_mac) = gw_mac else { return };
    println!("TEST PASS: arp reply: 10.0.2.2 is-at {}", Mac(gw_mac));

    // 3. ICMP echo.
    let got = io.exchange("icmp", |buf| echo_request(buf, mac, gw_mac), |frame| echo_reply_matches(frame).then_some(()));
    if got.is_none() {
        return;
    }
    println!("TEST PASS: icmp echo reply from 10.0.2.2 ({} payload bytes match)", PAYLOAD.len());
    let s = io.server.stats();
    println!(
        "TEST PASS: netif-probe done (rx {} tx {} tx_done {} faults {})",
        s.rx_frames, s.tx_frames, s.tx_done, s.faults
    );
}

struct Io<'s, 'a> {
    server: &'s mut ServerSide<'a>,
    wake: Cap<Notification>,
    driver: Cap<Notification>,
}

impl Io<'_, '_> {
    fn flush(&mut self) {
        match self.server.flush() {
            Ok(Notify::Signal) => self.driver.signal(),
            Ok(Notify::Quiet) => {}
            Err(e) => println!("TEST FAIL: flush: {e}"),
        }
    }

    /// Send the frame `build` writes (once, in place), then block until a received frame
    /// `accept` likes arrives. Every received frame is read in place and recycled.
    fn exchange<T>(
        &mut self,
        what: &str,
        build: impl Fn(&mut [u8]) -> usize,
        accept: impl Fn(&[u8]) -> Option<T>,
    ) -> Option<T> {
        let Some(tx) = self.server.alloc_tx() else {
            println!("TEST FAIL: {what}: no transmit buffer");
            return None;
        };
        let len = build(self.server.tx_buf_mut(&tx));
        if let Err(e) = self.server.send(tx, len as u32) {
            println!("TEST FAIL: {what}: send: {e}");
            return None;
        }
        let mut wakeups = 0u32;
        loop {
            self.server.service();
            loop {
                match self.server.recv() {
                    Ok(Some(frame)) => {
                        let found = accept(self.server.frame(&frame));
                        self.server.recycle(frame);
                        if found.is_some() {
                            self.flush();
                            println!("{what}: answered after {wakeups} wake-up(s)");
                            return found;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        println!("TEST FAIL: {what}: recv: {e} ({:?})", self.server.link());
                        return None;
                    }
                }
            }
            self.flush();
            match self.server.prepare_wait() {
                Ok(Wait::Retry) => continue,
                Ok(Wait::Block) => {
                    self.wake.wait();
                    wakeups += 1;
                }
                Err(e) => {
                    println!("TEST FAIL: {what}: prepare_wait: {e}");
                    return None;
                }
            }
        }
    }
}

struct Mac([u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

fn get<const N: usize>(frame: &[u8], at: usize) -> Option<[u8; N]> {
    frame.get(at..at + N)?.try_into().ok()
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    get::<2>(frame, at).map(u16::from_be_bytes)
}

/// The Internet checksum of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn arp_request(buf: &mut [u8], mac: [u8; 6]) -> usize {
    put(buf, 0, &[0xff; 6]);
    put(buf, 6, &mac);
    put(buf, 12, &[0x08, 0x06]);
    put(buf, 14, &[0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    put(buf, 22, &mac);
    put(buf, 28, &MY_IP);
    put(buf, 32, &[0; 6]);
    put(buf, 38, &GW_IP);
    put(buf, 42, &[0; 18]); // pad to the 60-byte minimum
    60
}

fn arp_reply_from_gateway(frame: &[u8]) -> Option<[u8; 6]> {
    let is_reply = be16(frame, 12)? == 0x0806 && be16(frame, 20)? == 2;
    let sender: [u8; 4] = get(frame, 28)?;
    let target: [u8; 4] = get(frame, 38)?;
    (is_reply && sender == GW_IP && target == MY_IP).then_some(get(frame, 22)?)
}

fn echo_request(buf: &mut [u8], mac: [u8; 6], gw: [u8; 6]) -> usize {
    let ip_len = 20 + 8 + PAYLOAD.len();
    put(buf, 0, &gw);
    put(buf, 6, &mac);
    put(buf, 12, &[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&1u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1; // ICMP
    ip[12..16].copy_from_slice(&MY_IP);
    ip[16..20].copy_from_slice(&GW_IP);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    put(buf, 14, &ip);
    let mut icmp = [0u8; 8 + 32];
    icmp[0] = 8; // echo request
    icmp[4..6].copy_from_slice(&PING_ID.to_be_bytes());
    icmp[6..8].copy_from_slice(&PING_SEQ.to_be_bytes());
    icmp[8..].copy_from_slice(PAYLOAD);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    put(buf, 34, &icmp);
    14 + ip_len
}

fn echo_reply_matches(frame: &[u8]) -> bool {
    let check = || -> Option<bool> {
        let ihl = usize::from(*frame.get(14)? & 0x0f) * 4;
        let src: [u8; 4] = get(frame, 26)?;
        let icmp = frame.get(14 + ihl..)?;
        let ok = be16(frame, 12)? == 0x0800
            && *frame.get(23)? == 1
            && src == GW_IP
            && *icmp.first()? == 0
            && be16(icmp, 4)? == PING_ID
            && be16(icmp, 6)? == PING_SEQ
            && icmp.get(8..8 + PAYLOAD.len())? == PAYLOAD;
        Some(ok)
    };
    check().unwrap_or(false)
}
