//! Everything that can go wrong at the interface.

use shared_ring::{Desc, RingError};

/// Errors of both role types. [`is_peer_fault`](NetifError::is_peer_fault) says whether the
/// other side broke the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetifError {
    /// A ring operation failed: flow control ([`RingError::Full`]), a restart, local misuse, or
    /// (see [`RingError::is_peer_fault`]) a corrupt index or header written by the peer.
    Ring(RingError),
    /// A descriptor from the peer failed validation against the buffers region or the pool.
    BadDescriptor {
        /// The descriptor as the peer wrote it.
        desc: Desc,
        /// Why it was refused.
        reason: RingError,
    },
    /// A receive buffer with less than [`MIN_RX_ROOM`](crate::MIN_RX_ROOM) bytes after the
    /// headroom, or a transmit frame shorter than [`MIN_TX_FRAME`](crate::MIN_TX_FRAME).
    TooShort {
        /// The descriptor as the peer wrote it.
        desc: Desc,
    },
    /// The driver returned a buffer on the wrong ring (a transmit loan on `rx_used`, or the
    /// other way round).
    WrongRing {
        /// The buffer id.
        id: u32,
    },
    /// A received frame longer than [`MAX_FRAME`](crate::MAX_FRAME), or a frame to send that
    /// is empty or longer.
    FrameLength {
        /// The buffer id.
        id: u32,
        /// The length given.
        len: u32,
    },
    /// The buffers region is not cut into [`BUF_SIZE`](crate::BUF_SIZE) buffers.
    BufferSize {
        /// The region's buffer size.
        found: u32,
    },
    /// No driver is attached (it has not initialised the rings yet, or is restarting).
    Down,
    /// The driver broke the protocol; it is ignored until it restarts with a new epoch.
    Faulty,
    /// The driver side has not initialised the rings.
    NotInitialised,
    /// The driver took no frame from `tx_submit` and returned none on `tx_done` for this long
    /// while frames were waiting (found by the server's watchdog, not by a ring check).
    TxStalled {
        /// Milliseconds without progress.
        ms: u64,
    },
}

impl NetifError {
    /// Whether the other side broke the protocol.
    pub fn is_peer_fault(&self) -> bool {
        match self {
            NetifError::Ring(e) => e.is_peer_fault(),
            NetifError::BadDescriptor { .. }
            | NetifError::TooShort { .. }
            | NetifError::WrongRing { .. }
            | NetifError::FrameLength { .. }
            | NetifError::TxStalled { .. } => true,
            _ => false,
        }
    }
}

impl From<RingError> for NetifError {
    fn from(e: RingError) -> Self {
        NetifError::Ring(e)
    }
}

impl core::fmt::Display for NetifError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetifError::Ring(e) => write!(f, "{e}"),
            NetifError::BadDescriptor { desc, reason } => write!(f, "bad descriptor {desc:?}: {reason}"),
            NetifError::TooShort { desc } => write!(f, "descriptor too short: {desc:?}"),
            NetifError::WrongRing { id } => write!(f, "buffer {id} returned on the wrong ring"),
            NetifError::FrameLength { id, len } => write!(f, "buffer {id}: bad frame length {len}"),
            NetifError::BufferSize { found } => write!(f, "buffers region cut into {found}-byte buffers"),
            NetifError::Down => write!(f, "no driver attached"),
            NetifError::Faulty => write!(f, "driver is faulty"),
            NetifError::NotInitialised => write!(f, "rings not initialised"),
            NetifError::TxStalled { ms } => write!(f, "transmit ring stalled: no progress for {ms} ms with frames waiting"),
        }
    }
}

impl core::error::Error for NetifError {}
