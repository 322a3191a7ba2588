//! UDP echo over IPv4 and IPv6, ICMP echo, ARP and neighbour discovery.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use libsock::UdpSocket;
use netserver_core::host::{tap, Impairments};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol,
    Ipv4Packet, Ipv4Repr,
};

#[test]
fn udp_echo_v4_and_v6() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    for (srv, dst) in [(addr4(1, 5353), addr4(1, 5353)), (addr6(1, 5354), addr6(1, 5354))] {
        let echo = UdpSocket::bind(&cb, srv).expect("bind echo");
        let t = std::thread::spawn(move || {
            for _ in 0..10 {
                let mut buf = [0u8; 2048];
                let (len, from) = echo.recv_from(&mut buf).expect("echo recv");
                echo.send_to(&buf[..len], from).expect("echo send");
            }
        });
        let any = match dst {
            libsock::SockAddr::V4(_) => addr4(0, 0),
            libsock::SockAddr::V6(_) => addr6(0, 0),
        };
        let s = UdpSocket::bind(&ca, any).expect("bind");
        for i in 0..10u8 {
            let msg = vec![i; 100 + usize::from(i) * 100];
            assert_eq!(s.send_to(&msg, dst).expect("send"), msg.len());
            let mut buf = [0u8; 2048];
            let (len, from) = s.recv_from(&mut buf).expect("recv");
            assert_eq!(from, dst);
            assert_eq!(&buf[..len], &msg[..]);
        }
        t.join().unwrap();
    }
    let st = n.b.server.stats();
    assert!(st.udp_in >= 20 && st.udp_out >= 20, "{st:?}");
}

#[test]
fn udp_connected_send_and_truncation() {
    let n = net(Impairments::default());
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let rx = UdpSocket::bind(&cb, addr4(1, 6000)).unwrap();
    let tx = UdpSocket::bind(&ca, addr4(0, 0)).unwrap();
    tx.connect(addr4(1, 6000)).unwrap();
    tx.send(&[7u8; 300]).unwrap();
    let mut small = [0u8; 100];
    let (len, _) = rx.recv_from(&mut small).unwrap();
    assert_eq!(len, 100, "a datagram longer than the buffer is truncated");
    assert!(small.iter().all(|&b| b == 7));
}

fn echo_request(dst_mac: EthernetAddress) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest { ident: 0x77, seq_no: 1, data: b"ping!" };
    let ip = Ipv4Repr {
        src_addr: V4[0],
        dst_addr: V4[1],
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([0x02, 0, 0, 0, 0, 1]),
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
    ip.emit(&mut p, &ChecksumCapabilities::default());
    let mut i = Icmpv4Packet::new_unchecked(p.payload_mut());
    icmp.emit(&mut i, &ChecksumCapabilities::default());
    buf
}

#[test]
fn icmp_echo_arp_and_ndp() {
    let n = net(Impairments::default());
    let replies = Arc::new(AtomicUsize::new(0));
    let arp = Arc::new(AtomicUsize::new(0));
    {
        let (replies, arp) = (replies.clone(), arp.clone());
        n.link.set_tap(Some(tap(move |from, frame| {
            let Ok(f) = EthernetFrame::new_checked(frame) else { return };
            match f.ethertype() {
                EthernetProtocol::Arp => {
                    arp.fetch_add(1, Ordering::Relaxed);
                }
                EthernetProtocol::Ipv4 if from == 1 => {
                    if let Ok(p) = Ipv4Packet::new_checked(f.payload()) {
                        if p.next_header() == IpProtocol::Icmp {
                            if let Ok(i) = Icmpv4Packet::new_checked(p.payload()) {
                                if let Ok(Icmpv4Repr::EchoReply { ident: 0x77, data, .. }) =
                                    Icmpv4Repr::parse(&i, &ChecksumCapabilities::default())
                                {
                                    if data == b"ping!" {
                                        replies.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        })));
    }
    // Side 1 answers a ping from side 0's address; to send the reply it must resolve side 0's
    // MAC with ARP, which side 0's workers answer.
    // Like ping, repeat the request: smoltcp drops the first reply while it resolves the MAC.
    let ok = eventually(Duration::from_secs(5), || {
        if replies.load(Ordering::Relaxed) > 0 {
            return true;
        }
        n.link.inject(1, echo_request(EthernetAddress([0x02, 0, 0, 0, 0, 2])));
        std::thread::sleep(Duration::from_millis(50));
        false
    });
    assert!(ok, "no echo reply");
    assert!(arp.load(Ordering::Relaxed) >= 2, "ARP request and reply expected");

    // IPv6 traffic needs neighbour discovery both ways before any segment flows.
    let ca = client(&n.a.server);
    let cb = client(&n.b.server);
    let r = UdpSocket::bind(&cb, addr6(1, 7777)).unwrap();
    let s = UdpSocket::bind(&ca, addr6(0, 0)).unwrap();
    s.send_to(b"nd", addr6(1, 7777)).unwrap();
    let mut buf = [0u8; 8];
    let (len, from) = r.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..len], from), (&b"nd"[..], addr6(0, s.local_addr().unwrap().port())));
}
