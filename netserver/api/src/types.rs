//! The small value types requests and responses are made of.

use core::fmt;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Errno;

/// A socket, as named by one client. Handles are per client: the server keeps one table per client
/// and checks both fields on every request (a stale `generation` gets `EBADF`), so a client can
/// only ever name its own sockets and a reused slot never aliases a closed socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SocketHandle {
    /// Slot in the client's socket table.
    pub index: u32,
    /// Bumped by the server each time the slot is reused.
    pub generation: u32,
}

impl fmt::Display for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sock#{}.{}", self.index, self.generation)
    }
}

/// Address family (`AF_INET`, `AF_INET6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Domain {
    Inet,
    Inet6,
}

/// Socket type: `SOCK_STREAM` (TCP) or `SOCK_DGRAM` (UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SockType {
    Stream,
    Datagram,
}

/// `shutdown(2)`'s `how`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Option names for `getsockopt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SockOpt {
    /// `SO_REUSEADDR`.
    ReuseAddr,
    /// `SO_RCVBUF`, bytes.
    RcvBuf,
    /// `SO_SNDBUF`, bytes.
    SndBuf,
    /// `TCP_NODELAY`.
    TcpNoDelay,
    /// `SO_KEEPALIVE`.
    KeepAlive,
    /// `O_NONBLOCK`. The server never blocks either way; it records the mode so that `getsockopt`
    /// reports it, and libsock decides whether to wait on `EAGAIN`.
    NonBlocking,
    /// `SO_ERROR` (read-only, and reading clears it): the pending asynchronous error, e.g. the
    /// outcome of a non-blocking connect.
    Error,
}

/// An option with its value, for `setsockopt` and as `getsockopt`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SockOptValue {
    ReuseAddr(bool),
    RcvBuf(u32),
    SndBuf(u32),
    TcpNoDelay(bool),
    KeepAlive(bool),
    NonBlocking(bool),
    /// Only valid as a `getsockopt` answer; `setsockopt` with it is `ENOPROTOOPT`.
    Error(Option<Errno>),
}

impl SockOptValue {
    /// The option this value is for.
    pub const fn opt(&self) -> SockOpt {
        match self {
            SockOptValue::ReuseAddr(_) => SockOpt::ReuseAddr,
            SockOptValue::RcvBuf(_) => SockOpt::RcvBuf,
            SockOptValue::SndBuf(_) => SockOpt::SndBuf,
            SockOptValue::TcpNoDelay(_) => SockOpt::TcpNoDelay,
            SockOptValue::KeepAlive(_) => SockOpt::KeepAlive,
            SockOptValue::NonBlocking(_) => SockOpt::NonBlocking,
            SockOptValue::Error(_) => SockOpt::Error,
        }
    }
}

/// `send`/`recv` flags, with the Linux bit values. Unknown bits travel unchanged; the server
/// answers `EINVAL` for bits it does not implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MsgFlags(pub u32);

impl MsgFlags {
    pub const NONE: MsgFlags = MsgFlags(0);
    /// `MSG_PEEK`: receive without removing the data from the socket.
    pub const PEEK: MsgFlags = MsgFlags(0x2);
    /// `MSG_DONTWAIT`: this call is non-blocking whatever the socket's mode.
    pub const DONTWAIT: MsgFlags = MsgFlags(0x40);
    /// Set by libsock on a blocking stream `send`: the caller waits anyway, so a server that
    /// can defer its reply may hold the call until every byte of the buffer is in the socket
    /// (or an error), instead of answering `EAGAIN` or a short count. A server that cannot
    /// ignores it. Not a BSD flag.
    pub const HOLD: MsgFlags = MsgFlags(0x1_0000);
    /// All bits defined by this protocol.
    pub const KNOWN: MsgFlags = MsgFlags(0x1_0042);

    pub const fn contains(self, other: MsgFlags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: MsgFlags) -> MsgFlags {
        MsgFlags(self.0 | other.0)
    }
    /// True when no bit outside [`MsgFlags::KNOWN`] is set.
    pub const fn is_known(self) -> bool {
        self.0 & !Self::KNOWN.0 == 0
    }
}

impl core::ops::BitOr for MsgFlags {
    type Output = MsgFlags;
    fn bitor(self, rhs: MsgFlags) -> MsgFlags {
        self.union(rhs)
    }
}

/// `poll` event bits, with the Linux values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PollEvents(pub u16);

impl PollEvents {
    pub const NONE: PollEvents = PollEvents(0);
    /// Readable: data, EOF, or (listener) a pending connection.
    pub const IN: PollEvents = PollEvents(0x1);
    /// Writable: send buffer space, or a non-blocking connect finished.
    pub const OUT: PollEvents = PollEvents(0x4);
    /// Error pending (read it with `SockOpt::Error`). Always reported, whether asked or not.
    pub const ERR: PollEvents = PollEvents(0x8);
    /// Hang-up: the peer closed or the connection is gone. Always reported.
    pub const HUP: PollEvents = PollEvents(0x10);
    /// Invalid handle. Always reported.
    pub const NVAL: PollEvents = PollEvents(0x20);

    pub const fn contains(self, other: PollEvents) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn intersects(self, other: PollEvents) -> bool {
        self.0 & other.0 != 0
    }
    pub const fn union(self, other: PollEvents) -> PollEvents {
        PollEvents(self.0 | other.0)
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl core::ops::BitOr for PollEvents {
    type Output = PollEvents;
    fn bitor(self, rhs: PollEvents) -> PollEvents {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for PollEvents {
    fn bitor_assign(&mut self, rhs: PollEvents) {
        self.0 |= rhs.0;
    }
}

/// One socket in a poll request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PollEntry {
    pub handle: SocketHandle,
    /// What the caller waits for (`IN`, `OUT`); `ERR`/`HUP`/`NVAL` are reported regardless.
    pub events: PollEvents,
}

impl Default for PollEntry {
    fn default() -> Self {
        PollEntry { handle: SocketHandle { index: 0, generation: 0 }, events: PollEvents::NONE }
    }
}

/// A buffer descriptor: `len` bytes at `offset` from the start of the client's data area.
/// It travels inside a control message; the receiver checks it against its own copy of the
/// layout ([`crate::DataAreaLayout::check_tx`]/[`check_rx`](crate::DataAreaLayout::check_rx))
/// before touching memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BufDesc {
    pub offset: u32,
    pub len: u32,
}

/// A list with at most `N` elements, stored inline (no allocation), that refuses to decode more.
///
/// Used for poll lists so that the largest message is bounded statically and a hostile length
/// prefix costs nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BoundedList<T, const N: usize> {
    len: usize,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> BoundedList<T, N> {
    pub const CAPACITY: usize = N;

    pub fn new() -> Self {
        BoundedList { len: 0, items: [T::default(); N] }
    }

    /// Appends; gives the item back when full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
                Ok(())
            }
            None => Err(item),
        }
    }

    /// A list of the first `N` items of `items`, or `None` when `items` is longer than `N`.
    pub fn from_slice(items: &[T]) -> Option<Self> {
        let mut l = Self::new();
        for &i in items {
            l.push(i).ok()?;
        }
        Some(l)
    }
}

impl<T, const N: usize> BoundedList<T, N> {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        self.items.get_mut(..self.len).unwrap_or(&mut [])
    }
    pub fn iter(&self) -> core::slice::Iter<'_, T> {
        self.as_slice().iter()
    }
}

impl<T: Copy + Default, const N: usize> Default for BoundedList<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug, const N: usize> fmt::Debug for BoundedList<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedList<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len))?;
        for item in self.as_slice() {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Copy + Default, const N: usize> Deserialize<'de>
    for BoundedList<T, N>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(core::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Copy + Default, const N: usize> Visitor<'de> for V<T, N> {
            type Value = BoundedList<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a sequence of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Check the announced length first: a hostile prefix fails before any element.
                if let Some(n) = seq.size_hint() {
                    if n > N {
                        return Err(serde::de::Error::invalid_length(n, &self));
                    }
                }
                let mut list = BoundedList::<T, N>::new();
                while let Some(item) = seq.next_element::<T>()? {
                    if list.push(item).is_err() {
                        return Err(serde::de::Error::invalid_length(N + 1, &self));
                    }
                }
                Ok(list)
            }
        }
        d.deserialize_seq(V::<T, N>(core::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_list_push_and_overflow() {
        let mut l = BoundedList::<u8, 2>::new();
        assert!(l.push(1).is_ok());
        assert!(l.push(2).is_ok());
        assert_eq!(l.push(3), Err(3));
        assert_eq!(l.as_slice(), &[1, 2]);
        assert!(BoundedList::<u8, 2>::from_slice(&[1, 2, 3]).is_none());
    }

    #[test]
    fn bounded_list_refuses_to_decode_too_many() {
        let three = [1u8, 2, 3];
        let mut buf = [0u8; 16];
        let bytes = postcard::to_slice(&three[..], &mut buf).unwrap();
        assert!(postcard::from_bytes::<BoundedList<u8, 2>>(bytes).is_err());
        let ok = postcard::from_bytes::<BoundedList<u8, 3>>(bytes).unwrap();
        assert_eq!(ok.as_slice(), &three);
    }

    #[test]
    fn flags_have_linux_values() {
        assert_eq!(MsgFlags::PEEK.0, 2);
        assert_eq!(MsgFlags::DONTWAIT.0, 0x40);
        assert!((MsgFlags::PEEK | MsgFlags::DONTWAIT).contains(MsgFlags::DONTWAIT));
        assert!(!MsgFlags(0x100).is_known());
        assert_eq!(PollEvents::IN.0, 1);
        assert_eq!(PollEvents::OUT.0, 4);
        assert_eq!(PollEvents::ERR.0, 8);
        assert_eq!(PollEvents::HUP.0, 0x10);
    }
}
