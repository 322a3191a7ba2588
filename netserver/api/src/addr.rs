//! Socket addresses without a std dependency.
//!
//! [`SockAddr`] is the wire type. It converts losslessly to and from `core::net::SocketAddr`, which
//! is what applications and smoltcp glue usually want.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use serde::{Deserialize, Serialize};

/// An IPv4 socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SockAddrV4 {
    pub ip: [u8; 4],
    pub port: u16,
}

/// An IPv6 socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SockAddrV6 {
    pub ip: [u8; 16],
    pub port: u16,
    pub flowinfo: u32,
    pub scope_id: u32,
}

/// A socket address: IPv4 or IPv6, plus port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SockAddr {
    V4(SockAddrV4),
    V6(SockAddrV6),
}

impl SockAddr {
    /// `a.b.c.d:port`.
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SockAddr {
        SockAddr::V4(SockAddrV4 { ip: [a, b, c, d], port })
    }

    /// `[ip]:port` with zero flow info and scope.
    pub const fn v6(ip: [u8; 16], port: u16) -> SockAddr {
        SockAddr::V6(SockAddrV6 { ip, port, flowinfo: 0, scope_id: 0 })
    }

    /// `0.0.0.0:port` (port 0: any port).
    pub const fn any_v4(port: u16) -> SockAddr {
        SockAddr::v4(0, 0, 0, 0, port)
    }

    /// `[::]:port`.
    pub const fn any_v6(port: u16) -> SockAddr {
        SockAddr::v6([0; 16], port)
    }

    pub const fn port(&self) -> u16 {
        match self {
            SockAddr::V4(a) => a.port,
            SockAddr::V6(a) => a.port,
        }
    }

    pub fn set_port(&mut self, port: u16) {
        match self {
            SockAddr::V4(a) => a.port = port,
            SockAddr::V6(a) => a.port = port,
        }
    }

    /// The address family this address belongs to.
    pub const fn domain(&self) -> crate::Domain {
        match self {
            SockAddr::V4(_) => crate::Domain::Inet,
            SockAddr::V6(_) => crate::Domain::Inet6,
        }
    }

    /// True for `0.0.0.0` / `::`.
    pub fn is_unspecified(&self) -> bool {
        match self {
            SockAddr::V4(a) => a.ip == [0; 4],
            SockAddr::V6(a) => a.ip == [0; 16],
        }
    }
}

impl From<SocketAddr> for SockAddr {
    fn from(a: SocketAddr) -> SockAddr {
        match a {
            SocketAddr::V4(a) => SockAddr::V4(SockAddrV4 { ip: a.ip().octets(), port: a.port() }),
            SocketAddr::V6(a) => SockAddr::V6(SockAddrV6 {
                ip: a.ip().octets(),
                port: a.port(),
                flowinfo: a.flowinfo(),
                scope_id: a.scope_id(),
            }),
        }
    }
}

impl From<SockAddr> for SocketAddr {
    fn from(a: SockAddr) -> SocketAddr {
        match a {
            SockAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a.ip), a.port)),
            SockAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.ip),
                a.port,
                a.flowinfo,
                a.scope_id,
            )),
        }
    }
}

impl fmt::Display for SockAddr {
    /// `1.2.3.4:80`, `[::1]:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&SocketAddr::from(*self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_and_prints() {
        let a = SockAddr::v4(10, 0, 2, 15, 8080);
        let s: SocketAddr = a.into();
        assert_eq!(SockAddr::from(s), a);
        assert_eq!(std::format!("{a}"), "10.0.2.15:8080");
        let mut ip6 = [0u8; 16];
        ip6[15] = 1;
        let b = SockAddr::v6(ip6, 7);
        assert_eq!(std::format!("{b}"), "[::1]:7");
        assert_eq!(SockAddr::from(SocketAddr::from(b)), b);
        assert_eq!(b.domain(), crate::Domain::Inet6);
        assert!(SockAddr::any_v4(0).is_unspecified());
        assert!(!a.is_unspecified());
    }
}
