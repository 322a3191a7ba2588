//! Error codes: one enum, fixed numeric codes, printed as errno names.
//!
//! Every code equals the Linux (asm-generic) errno number of the same name, so a C shim can hand
//! them straight to `errno`. [`Errno::ServerRestarted`] has no errno counterpart; it uses code
//! `0x1000`, far above the Linux range.
//!
//! On the wire an `Errno` is its `u16` code (a postcard varint). Decoding a code this crate does not
//! know is a decode error, never a panic and never a silent substitution.

use core::fmt;

/// A socket error. `Display` prints the errno name (`EADDRINUSE`), as does `Debug`.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
#[non_exhaustive]
pub enum Errno {
    EPERM = 1,
    ENOENT = 2,
    EINTR = 4,
    EIO = 5,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EBUSY = 16,
    EINVAL = 22,
    ENFILE = 23,
    EMFILE = 24,
    EPIPE = 32,
    ENOSYS = 38,
    EPROTO = 71,
    EBADMSG = 74,
    ENOTSOCK = 88,
    EDESTADDRREQ = 89,
    EMSGSIZE = 90,
    EPROTOTYPE = 91,
    ENOPROTOOPT = 92,
    EPROTONOSUPPORT = 93,
    ESOCKTNOSUPPORT = 94,
    EOPNOTSUPP = 95,
    EAFNOSUPPORT = 97,
    EADDRINUSE = 98,
    EADDRNOTAVAIL = 99,
    ENETDOWN = 100,
    ENETUNREACH = 101,
    ECONNABORTED = 103,
    ECONNRESET = 104,
    ENOBUFS = 105,
    EISCONN = 106,
    ENOTCONN = 107,
    ESHUTDOWN = 108,
    ETIMEDOUT = 110,
    ECONNREFUSED = 111,
    EHOSTUNREACH = 113,
    EALREADY = 114,
    EINPROGRESS = 115,
    /// The net server restarted since this client's session began: every handle the client holds
    /// is gone. The client must say `Hello` again and reopen its sockets.
    ServerRestarted = 0x1000,
}

/// `EWOULDBLOCK` is `EAGAIN`, as on Linux.
pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

impl Errno {
    /// Every variant, in code order. Used by tests and by anything that wants to print a table.
    pub const ALL: [Errno; 42] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::EINTR,
        Errno::EIO,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EBUSY,
        Errno::EINVAL,
        Errno::ENFILE,
        Errno::EMFILE,
        Errno::EPIPE,
        Errno::ENOSYS,
        Errno::EPROTO,
        Errno::EBADMSG,
        Errno::ENOTSOCK,
        Errno::EDESTADDRREQ,
        Errno::EMSGSIZE,
        Errno::EPROTOTYPE,
        Errno::ENOPROTOOPT,
        Errno::EPROTONOSUPPORT,
        Errno::ESOCKTNOSUPPORT,
        Errno::EOPNOTSUPP,
        Errno::EAFNOSUPPORT,
        Errno::EADDRINUSE,
        Errno::EADDRNOTAVAIL,
        Errno::ENETDOWN,
        Errno::ENETUNREACH,
        Errno::ECONNABORTED,
        Errno::ECONNRESET,
        Errno::ENOBUFS,
        Errno::EISCONN,
        Errno::ENOTCONN,
        Errno::ESHUTDOWN,
        Errno::ETIMEDOUT,
        Errno::ECONNREFUSED,
        Errno::EHOSTUNREACH,
        Errno::EALREADY,
        Errno::EINPROGRESS,
        Errno::ServerRestarted,
    ];

    /// The fixed numeric code.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The errno for `code`, or `None` for a code this crate does not define. Total: never panics.
    pub const fn from_code(code: u16) -> Option<Errno> {
        Some(match code {
            1 => Errno::EPERM,
            2 => Errno::ENOENT,
            4 => Errno::EINTR,
            5 => Errno::EIO,
            9 => Errno::EBADF,
            11 => Errno::EAGAIN,
            12 => Errno::ENOMEM,
            13 => Errno::EACCES,
            14 => Errno::EFAULT,
            16 => Errno::EBUSY,
            22 => Errno::EINVAL,
            23 => Errno::ENFILE,
            24 => Errno::EMFILE,
            32 => Errno::EPIPE,
            38 => Errno::ENOSYS,
            71 => Errno::EPROTO,
            74 => Errno::EBADMSG,
            88 => Errno::ENOTSOCK,
            89 => Errno::EDESTADDRREQ,
            90 => Errno::EMSGSIZE,
            91 => Errno::EPROTOTYPE,
            92 => Errno::ENOPROTOOPT,
            93 => Errno::EPROTONOSUPPORT,
            94 => Errno::ESOCKTNOSUPPORT,
            95 => Errno::EOPNOTSUPP,
            97 => Errno::EAFNOSUPPORT,
            98 => Errno::EADDRINUSE,
            99 => Errno::EADDRNOTAVAIL,
            100 => Errno::ENETDOWN,
            101 => Errno::ENETUNREACH,
            103 => Errno::ECONNABORTED,
            104 => Errno::ECONNRESET,
            105 => Errno::ENOBUFS,
            106 => Errno::EISCONN,
            107 => Errno::ENOTCONN,
            108 => Errno::ESHUTDOWN,
            110 => Errno::ETIMEDOUT,
            111 => Errno::ECONNREFUSED,
            113 => Errno::EHOSTUNREACH,
            114 => Errno::EALREADY,
            115 => Errno::EINPROGRESS,
            0x1000 => Errno::ServerRestarted,
            _ => return None,
        })
    }

    /// The errno name, e.g. `"EADDRINUSE"`; `"ESERVERRESTARTED"` for [`Errno::ServerRestarted`].
    pub const fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EINTR => "EINTR",
            Errno::EIO => "EIO",
            Errno::EBADF => "EBADF",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EACCES => "EACCES",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EINVAL => "EINVAL",
            Errno::ENFILE => "ENFILE",
            Errno::EMFILE => "EMFILE",
            Errno::EPIPE => "EPIPE",
            Errno::ENOSYS => "ENOSYS",
            Errno::EPROTO => "EPROTO",
            Errno::EBADMSG => "EBADMSG",
            Errno::ENOTSOCK => "ENOTSOCK",
            Errno::EDESTADDRREQ => "EDESTADDRREQ",
            Errno::EMSGSIZE => "EMSGSIZE",
            Errno::EPROTOTYPE => "EPROTOTYPE",
            Errno::ENOPROTOOPT => "ENOPROTOOPT",
            Errno::EPROTONOSUPPORT => "EPROTONOSUPPORT",
            Errno::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EAFNOSUPPORT => "EAFNOSUPPORT",
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::ENETDOWN => "ENETDOWN",
            Errno::ENETUNREACH => "ENETUNREACH",
            Errno::ECONNABORTED => "ECONNABORTED",
            Errno::ECONNRESET => "ECONNRESET",
            Errno::ENOBUFS => "ENOBUFS",
            Errno::EISCONN => "EISCONN",
            Errno::ENOTCONN => "ENOTCONN",
            Errno::ESHUTDOWN => "ESHUTDOWN",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::ECONNREFUSED => "ECONNREFUSED",
            Errno::EHOSTUNREACH => "EHOSTUNREACH",
            Errno::EALREADY => "EALREADY",
            Errno::EINPROGRESS => "EINPROGRESS",
            Errno::ServerRestarted => "ESERVERRESTARTED",
        }
    }

    /// A one-line human description (what `strerror` would say).
    pub const fn description(self) -> &'static str {
        match self {
            Errno::EPERM => "operation not permitted",
            Errno::ENOENT => "no such entry",
            Errno::EINTR => "interrupted",
            Errno::EIO => "I/O error",
            Errno::EBADF => "bad socket handle",
            Errno::EAGAIN => "resource temporarily unavailable (would block)",
            Errno::ENOMEM => "out of memory",
            Errno::EACCES => "permission denied",
            Errno::EFAULT => "buffer outside the data area",
            Errno::EBUSY => "busy",
            Errno::EINVAL => "invalid argument",
            Errno::ENFILE => "too many sockets in the server",
            Errno::EMFILE => "too many sockets for this client",
            Errno::EPIPE => "broken pipe",
            Errno::ENOSYS => "not implemented",
            Errno::EPROTO => "protocol error (unexpected reply)",
            Errno::EBADMSG => "malformed message",
            Errno::ENOTSOCK => "not a socket",
            Errno::EDESTADDRREQ => "destination address required",
            Errno::EMSGSIZE => "message too long",
            Errno::EPROTOTYPE => "wrong protocol type for socket",
            Errno::ENOPROTOOPT => "option not supported",
            Errno::EPROTONOSUPPORT => "protocol not supported",
            Errno::ESOCKTNOSUPPORT => "socket type not supported",
            Errno::EOPNOTSUPP => "operation not supported on this socket",
            Errno::EAFNOSUPPORT => "address family not supported",
            Errno::EADDRINUSE => "address in use",
            Errno::EADDRNOTAVAIL => "address not available",
            Errno::ENETDOWN => "network is down",
            Errno::ENETUNREACH => "network unreachable",
            Errno::ECONNABORTED => "connection aborted",
            Errno::ECONNRESET => "connection reset by peer",
            Errno::ENOBUFS => "no buffer space available",
            Errno::EISCONN => "already connected",
            Errno::ENOTCONN => "not connected",
            Errno::ESHUTDOWN => "cannot send after shutdown",
            Errno::ETIMEDOUT => "timed out",
            Errno::ECONNREFUSED => "connection refused",
            Errno::EHOSTUNREACH => "host unreachable",
            Errno::EALREADY => "operation already in progress",
            Errno::EINPROGRESS => "operation in progress",
            Errno::ServerRestarted => "net server restarted; reconnect",
        }
    }

    /// True for the "try again later" errors a blocking caller waits out.
    pub const fn is_would_block(self) -> bool {
        matches!(self, Errno::EAGAIN)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl core::error::Error for Errno {}

impl TryFrom<u16> for Errno {
    type Error = UnknownErrno;
    fn try_from(code: u16) -> Result<Self, UnknownErrno> {
        Errno::from_code(code).ok_or(UnknownErrno(code))
    }
}

impl From<Errno> for u16 {
    fn from(e: Errno) -> u16 {
        e.code()
    }
}

/// A numeric code that is not an [`Errno`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownErrno(pub u16);

impl fmt::Display for UnknownErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown errno code {}", self.0)
    }
}

impl serde::Serialize for Errno {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Errno {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = u16::deserialize(d)?;
        Errno::from_code(code).ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Unsigned(u64::from(code)),
                &"a known errno code",
            )
        })
    }
}

#[cfg(feature = "embedded-io")]
impl embedded_io::Error for Errno {
    fn kind(&self) -> embedded_io::ErrorKind {
        use embedded_io::ErrorKind as K;
        match self {
            Errno::EPERM | Errno::EACCES => K::PermissionDenied,
            Errno::ENOENT => K::NotFound,
            Errno::EINTR => K::Interrupted,
            Errno::ENOMEM | Errno::ENOBUFS => K::OutOfMemory,
            Errno::EINVAL => K::InvalidInput,
            Errno::EBADMSG | Errno::EPROTO => K::InvalidData,
            Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPROTONOSUPPORT | Errno::ESOCKTNOSUPPORT
            | Errno::EAFNOSUPPORT | Errno::ENOPROTOOPT => K::Unsupported,
            Errno::EADDRINUSE => K::AddrInUse,
            Errno::EADDRNOTAVAIL => K::AddrNotAvailable,
            Errno::ECONNABORTED => K::ConnectionAborted,
            Errno::ECONNRESET | Errno::ServerRestarted => K::ConnectionReset,
            Errno::ECONNREFUSED => K::ConnectionRefused,
            Errno::ENOTCONN => K::NotConnected,
            Errno::EPIPE | Errno::ESHUTDOWN => K::BrokenPipe,
            Errno::ETIMEDOUT => K::TimedOut,
            Errno::EISCONN | Errno::EALREADY => K::AlreadyExists,
            _ => K::Other,
        }
    }
}

#[cfg(feature = "std")]
impl From<Errno> for std::io::Error {
    /// The `io::Error` has the matching kind and prints the errno name.
    fn from(e: Errno) -> std::io::Error {
        use std::io::ErrorKind as K;
        let kind = match e {
            Errno::EPERM | Errno::EACCES => K::PermissionDenied,
            Errno::ENOENT => K::NotFound,
            Errno::EINTR => K::Interrupted,
            Errno::EAGAIN => K::WouldBlock,
            Errno::ENOMEM | Errno::ENOBUFS => K::OutOfMemory,
            Errno::EINVAL => K::InvalidInput,
            Errno::EBADMSG | Errno::EPROTO => K::InvalidData,
            Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EPROTONOSUPPORT | Errno::ESOCKTNOSUPPORT
            | Errno::EAFNOSUPPORT | Errno::ENOPROTOOPT => K::Unsupported,
            Errno::EADDRINUSE => K::AddrInUse,
            Errno::EADDRNOTAVAIL => K::AddrNotAvailable,
            Errno::ECONNABORTED => K::ConnectionAborted,
            Errno::ECONNRESET | Errno::ServerRestarted => K::ConnectionReset,
            Errno::ECONNREFUSED => K::ConnectionRefused,
            Errno::ENOTCONN => K::NotConnected,
            Errno::EPIPE | Errno::ESHUTDOWN => K::BrokenPipe,
            Errno::ETIMEDOUT => K::TimedOut,
            Errno::EISCONN | Errno::EALREADY => K::AlreadyExists,
            Errno::ENETDOWN => K::NetworkDown,
            Errno::ENETUNREACH => K::NetworkUnreachable,
            Errno::EHOSTUNREACH => K::HostUnreachable,
            _ => K::Other,
        };
        std::io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_linux_numbers() {
        assert_eq!(Errno::EAGAIN.code(), 11);
        assert_eq!(Errno::EBADF.code(), 9);
        assert_eq!(Errno::EINVAL.code(), 22);
        assert_eq!(Errno::EMFILE.code(), 24);
        assert_eq!(Errno::EPIPE.code(), 32);
        assert_eq!(Errno::EADDRINUSE.code(), 98);
        assert_eq!(Errno::EADDRNOTAVAIL.code(), 99);
        assert_eq!(Errno::ECONNRESET.code(), 104);
        assert_eq!(Errno::ENOBUFS.code(), 105);
        assert_eq!(Errno::ENOTCONN.code(), 107);
        assert_eq!(Errno::ETIMEDOUT.code(), 110);
        assert_eq!(Errno::ECONNREFUSED.code(), 111);
        assert_eq!(Errno::ServerRestarted.code(), 0x1000);
        assert_eq!(EWOULDBLOCK, Errno::EAGAIN);
    }

    #[test]
    fn from_code_is_total_and_one_to_one() {
        let mut known = 0;
        for code in 0..=u16::MAX {
            if let Some(e) = Errno::from_code(code) {
                assert_eq!(e.code(), code);
                known += 1;
            }
        }
        assert_eq!(known, Errno::ALL.len());
        for e in Errno::ALL {
            assert_eq!(Errno::from_code(e.code()), Some(e));
            assert_eq!(Errno::try_from(e.code()), Ok(e));
        }
        assert_eq!(Errno::try_from(3), Err(UnknownErrno(3)));
        // ALL is sorted by code, hence free of duplicates.
        assert!(Errno::ALL.windows(2).all(|w| w[0].code() < w[1].code()));
    }

    #[test]
    fn prints_as_errno_name() {
        assert_eq!(std::format!("{}", Errno::EADDRINUSE), "EADDRINUSE");
        assert_eq!(std::format!("{:?}", Errno::ECONNREFUSED), "ECONNREFUSED");
        assert_eq!(std::format!("{}", Errno::ServerRestarted), "ESERVERRESTARTED");
        for e in Errno::ALL {
            let n = e.name();
            assert!(n.starts_with('E') && n.bytes().all(|b| b.is_ascii_uppercase()), "{n}");
            assert!(!e.description().is_empty());
        }
    }

    #[test]
    fn io_error_keeps_name_and_kind() {
        let io: std::io::Error = Errno::EAGAIN.into();
        assert_eq!(io.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(std::format!("{io}"), "EAGAIN");
        let io: std::io::Error = Errno::ECONNREFUSED.into();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        use embedded_io::Error as _;
        assert_eq!(Errno::EPIPE.kind(), embedded_io::ErrorKind::BrokenPipe);
    }
}
