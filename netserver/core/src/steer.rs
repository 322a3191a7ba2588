//! Flow steering: which worker a frame belongs to.
//!
//! The same function decides where a connection is created (the worker that owns its smoltcp
//! socket) and where its frames are delivered, so every frame of a flow reaches the one worker
//! that has its state:
//!
//! * TCP: a hash of the 4-tuple, seen from this host (local address/port = the frame's
//!   destination). Listeners exist in every worker, so a SYN can land anywhere.
//! * UDP: a hash of the local port only, so a bound UDP socket lives in exactly one worker and
//!   datagrams from any peer reach it (UDP parallelism is per port).
//! * ARP and IPv6 neighbour discovery: every worker (each keeps its own neighbour cache; a
//!   duplicate reply is harmless).
//! * Everything else (ICMP echo, fragments, unknown protocols, malformed frames): worker 0.
//!   smoltcp answers echo requests itself and drops what it cannot parse.
//!
//! Parsing goes through smoltcp's checked constructors only; a malformed frame never panics.
//! The hash is FNV-1a with a seed; on seL4 the driver side calls [`Steering::steer`] with the
//! server's seed (a NIC with RSS would need the same function).

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv6Message, Icmpv6Packet, IpAddress, IpEndpoint, IpProtocol, Ipv4Packet,
    Ipv6Packet, TcpPacket, UdpPacket,
};

use crate::port::Family;

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One worker.
    Worker(usize),
    /// Every worker (ARP, neighbour discovery).
    All,
}

/// What a worker's ingress filter needs to know about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameInfo {
    /// A TCP segment.
    Tcp {
        /// Our end (the frame's destination).
        local: IpEndpoint,
        /// Their end.
        remote: IpEndpoint,
        /// SYN set.
        syn: bool,
        /// ACK set.
        ack: bool,
        /// RST set.
        rst: bool,
    },
    /// A UDP datagram to `port`.
    Udp {
        /// Family.
        family: Family,
        /// Destination port.
        port: u16,
    },
    /// ARP or neighbour discovery.
    Neighbour,
    /// Anything else.
    Other,
}

/// Classifies an Ethernet frame. Never panics; malformed frames are `Other`.
pub fn classify(frame: &[u8]) -> FrameInfo {
    let Ok(eth) = EthernetFrame::new_checked(frame) else { return FrameInfo::Other };
    match eth.ethertype() {
        EthernetProtocol::Arp => FrameInfo::Neighbour,
        EthernetProtocol::Ipv4 => {
            let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return FrameInfo::Other };
            if ip.more_frags() || ip.frag_offset() != 0 {
                return FrameInfo::Other;
            }
            let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
            transport(ip.next_header(), ip.payload(), src, dst, Family::V4)
        }
        EthernetProtocol::Ipv6 => {
            let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else { return FrameInfo::Other };
            let (src, dst) = (IpAddress::Ipv6(ip.src_addr()), IpAddress::Ipv6(ip.dst_addr()));
            match ip.next_header() {
                IpProtocol::Icmpv6 => match Icmpv6Packet::new_checked(ip.payload()) {
                    Ok(p) => match p.msg_type() {
                        Icmpv6Message::RouterSolicit
                        | Icmpv6Message::RouterAdvert
                        | Icmpv6Message::NeighborSolicit
                        | Icmpv6Message::NeighborAdvert
                        | Icmpv6Message::Redirect => FrameInfo::Neighbour,
                        _ => FrameInfo::Other,
                    },
                    Err(_) => FrameInfo::Other,
                },
                p => transport(p, ip.payload(), src, dst, Family::V6),
            }
        }
        _ => FrameInfo::Other,
    }
}

fn transport(proto: IpProtocol, payload: &[u8], src: IpAddress, dst: IpAddress, family: Family) -> FrameInfo {
    match proto {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(t) => FrameInfo::Tcp {
                local: IpEndpoint::new(dst, t.dst_port()),
                remote: IpEndpoint::new(src, t.src_port()),
                syn: t.syn(),
                ack: t.ack(),
                rst: t.rst(),
            },
            Err(_) => FrameInfo::Other,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(u) => FrameInfo::Udp { family, port: u.dst_port() },
            Err(_) => FrameInfo::Other,
        },
        _ => FrameInfo::Other,
    }
}

/// The steering function of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steering {
    /// Number of workers (at least 1).
    pub workers: usize,
    /// Hash seed.
    pub seed: u32,
}

impl Steering {
    fn fnv(&self, bytes: impl IntoIterator<Item = u8>) -> u32 {
        let mut h: u32 = 0x811c_9dc5 ^ self.seed;
        for b in bytes {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        h
    }

    /// A worker from a hash. FNV-1a's low bits depend only on the inputs' low bits (the prime is
    /// odd), so `h % 2` was the parity of the bytes' low bits: mix every bit into every other
    /// first (MurmurHash3's finaliser), then take the top bits by multiply-shift.
    fn pick(&self, h: u32) -> usize {
        let mut h = h;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^= h >> 16;
        ((u64::from(h) * self.workers.max(1) as u64) >> 32) as usize
    }

    /// The worker owning TCP flow `local`–`remote`.
    pub fn tcp(&self, local: IpEndpoint, remote: IpEndpoint) -> usize {
        let mut buf = [0u8; 36];
        let mut n = 0;
        for ep in [local, remote] {
            let a: &[u8] = match &ep.addr {
                IpAddress::Ipv4(a) => &a.octets()[..],
                IpAddress::Ipv6(a) => &a.octets()[..],
            };
            // Up to 16 address bytes and 2 port bytes per endpoint.
            for &b in a.iter().chain(ep.port.to_be_bytes().iter()) {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = b;
                    n += 1;
                }
            }
        }
        self.pick(self.fnv(buf.iter().take(n).copied()))
    }

    /// The worker owning UDP port `port` of `family`.
    pub fn udp(&self, family: Family, port: u16) -> usize {
        let f = match family {
            Family::V4 => 4u8,
            Family::V6 => 6u8,
        };
        let [a, b] = port.to_be_bytes();
        self.pick(self.fnv([f, a, b]))
    }

    /// Where a received frame goes.
    pub fn steer(&self, frame: &[u8]) -> Target {
        match classify(frame) {
            FrameInfo::Tcp { local, remote, .. } => Target::Worker(self.tcp(local, remote)),
            FrameInfo::Udp { family, port } => Target::Worker(self.udp(family, port)),
            FrameInfo::Neighbour => Target::All,
            FrameInfo::Other => Target::Worker(0),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use smoltcp::wire::{Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber};

    /// Flows as QEMU's slirp makes them (one host address, one guest port, source ports in some
    /// stride) must spread over the workers: with FNV-1a modulo 2 the worker was the parity of
    /// the bytes' low bits, so every flow whose source ports share a parity (a stride of 2, say)
    /// went to the same worker.
    #[test]
    fn flows_from_one_host_spread_over_the_workers() {
        let guest = IpEndpoint::new(Ipv4Address::new(10, 0, 2, 15).into(), 80);
        for workers in [2usize, 3, 4] {
            for seed in [0u32, 0x5eed, 0xdead_beef] {
                let s = Steering { workers, seed };
                for stride in [1u16, 2, 4, 8, 256] {
                    let mut per = alloc::vec![0usize; workers];
                    let flows = 64 * workers;
                    for i in 0..flows as u16 {
                        let host = IpEndpoint::new(Ipv4Address::new(10, 0, 2, 2).into(), 40000u16.wrapping_add(i.wrapping_mul(stride)));
                        per[s.tcp(guest, host)] += 1;
                    }
                    // Each worker's share is binomial around 64 (sd < 7): 36 is four sd below.
                    assert!(per.iter().all(|&n| n >= 36), "{workers} workers, seed {seed:#x}, stride {stride}: {per:?}");
                }
                let mut per = alloc::vec![0usize; workers];
                for port in (5000..5000 + 64 * workers as u16).map(|p| p * 2) {
                    per[s.udp(Family::V4, port)] += 1;
                }
                assert!(per.iter().all(|&n| n >= 36), "UDP, {workers} workers, seed {seed:#x}: {per:?}");
            }
        }
    }

    #[test]
    fn malformed_frames_never_panic() {
        let s = Steering { workers: 3, seed: 7 };
        let mut x: u32 = 12345;
        for len in 0..200usize {
            let mut f = alloc::vec![0u8; len];
            for b in f.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            // Make some of them look like IPv4/IPv6 so the deeper parsers run.
            if len > 14 {
                f[12] = 0x08;
                f[13] = if len % 2 == 0 { 0x00 } else { 0xdd };
                if len % 2 == 1 {
                    f[12] = 0x86;
                }
            }
            let _ = s.steer(&f);
        }
    }

    #[test]
    fn tcp_frames_steer_to_the_flow_owner() {
        let s = Steering { workers: 4, seed: 99 };
        let local = IpEndpoint::new(Ipv4Address::new(10, 0, 0, 1).into(), 80);
        let remote = IpEndpoint::new(Ipv4Address::new(10, 0, 0, 2).into(), 50000);
        let tcp = TcpRepr {
            src_port: remote.port,
            dst_port: local.port,
            control: TcpControl::Syn,
            seq_number: TcpSeqNumber(1),
            ack_number: None,
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload: &[],
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Address::new(10, 0, 0, 2),
            dst_addr: Ipv4Address::new(10, 0, 0, 1),
            next_header: IpProtocol::Tcp,
            payload_len: tcp.header_len(),
            hop_limit: 64,
        };
        let mut buf = alloc::vec![0u8; 14 + ip.buffer_len() + tcp.header_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.set_ethertype(EthernetProtocol::Ipv4);
        let mut ipp = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip.emit(&mut ipp, &smoltcp::phy::ChecksumCapabilities::default());
        let mut t = TcpPacket::new_unchecked(ipp.payload_mut());
        tcp.emit(
            &mut t,
            &IpAddress::Ipv4(ip.src_addr),
            &IpAddress::Ipv4(ip.dst_addr),
            &smoltcp::phy::ChecksumCapabilities::default(),
        );
        match classify(&buf) {
            FrameInfo::Tcp { local: l, remote: r, syn: true, ack: false, rst: false } => {
                assert_eq!((l, r), (local, remote));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.steer(&buf), Target::Worker(s.tcp(local, remote)));
    }
}
