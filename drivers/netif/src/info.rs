//! The device-information block at the start of the rings region.

use core::sync::atomic::{fence, AtomicU32, Ordering};

/// Bytes the info block occupies.
pub(crate) const INFO_BYTES: usize = WORDS * 4;
const WORDS: usize = 16;

const MAGIC: u32 = u32::from_ne_bytes(*b"NETI");
const VERSION: u32 = 1;

const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_EPOCH: usize = 2;
const W_MAC_LO: usize = 3;
const W_MAC_HI: usize = 4;
const W_MTU: usize = 5;

/// What the driver tells the server about the interface: 16 native-endian `u32` words, written
/// only by the driver, only accessed atomically.
///
/// | word | field | notes |
/// |---:|---|---|
/// | 0 | magic `b"NETI"` | |
/// | 1 | version (1) | |
/// | 2 | epoch | 0 while the driver (re)initialises; then the epoch of all four rings |
/// | 3 | MAC bytes 0..4 | |
/// | 4 | MAC bytes 4..6 (low half) | |
/// | 5 | MTU | |
/// | 6..16 | reserved (0) | |
///
/// Like the ring headers it is a seqlock: the driver writes epoch 0, then the fields, then the
/// epoch (release); a reader that sees the same non-zero epoch before and after reading the
/// fields (with an acquire fence between) has a consistent copy. The content is untrusted: any
/// value is a valid MAC, and the epoch is only compared with the rings' own.
#[derive(Clone, Copy)]
pub struct DeviceInfo<'a> {
    words: &'a [AtomicU32; WORDS],
}

impl<'a> DeviceInfo<'a> {
    /// Words needed by [`DeviceInfo::new`].
    pub const WORDS: usize = WORDS;

    /// The info block over `words` (at least [`DeviceInfo::WORDS`] of them; more are ignored).
    pub fn new(words: &'a [AtomicU32]) -> Option<Self> {
        let words: &'a [AtomicU32; WORDS] = words.get(..WORDS)?.try_into().ok()?;
        Some(DeviceInfo { words })
    }

    fn w(&self, i: usize) -> &AtomicU32 {
        // `i` is one of the constants above, all < WORDS.
        &self.words[i]
    }

    /// The published epoch (0: not ready).
    pub fn epoch(&self) -> u32 {
        self.w(W_EPOCH).load(Ordering::Acquire)
    }

    /// Driver: about to re-initialise (the epoch reads 0 until [`publish`](Self::publish)).
    pub(crate) fn begin(&self) {
        self.w(W_EPOCH).store(0, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Driver: publish the fields and the new epoch.
    pub(crate) fn publish(&self, epoch: u32, mac: [u8; 6], mtu: u16) {
        self.w(W_MAGIC).store(MAGIC, Ordering::Relaxed);
        self.w(W_VERSION).store(VERSION, Ordering::Relaxed);
        self.w(W_MAC_LO).store(u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]), Ordering::Relaxed);
        self.w(W_MAC_HI).store(u32::from_ne_bytes([mac[4], mac[5], 0, 0]), Ordering::Relaxed);
        self.w(W_MTU).store(u32::from(mtu), Ordering::Relaxed);
        self.w(W_EPOCH).store(epoch, Ordering::Release);
    }

    /// A consistent copy of (epoch, MAC, MTU) if the block is initialised (right magic and
    /// version) and was not being rewritten while read.
    pub fn read(&self) -> Option<(u32, [u8; 6], u16)> {
        let epoch = self.epoch();
        if epoch == 0 {
            return None;
        }
        let magic = self.w(W_MAGIC).load(Ordering::Relaxed);
        let version = self.w(W_VERSION).load(Ordering::Relaxed);
        let lo = self.w(W_MAC_LO).load(Ordering::Relaxed).to_ne_bytes();
        let hi = self.w(W_MAC_HI).load(Ordering::Relaxed).to_ne_bytes();
        let mtu = self.w(W_MTU).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.w(W_EPOCH).load(Ordering::Relaxed) != epoch || magic != MAGIC || version != VERSION {
            return None;
        }
        let mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        Some((epoch, [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]], mtu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_fields_read_back_and_zero_epoch_is_not_ready() {
        let words: [AtomicU32; 16] = Default::default();
        let info = DeviceInfo::new(&words).unwrap();
        assert_eq!(info.read(), None, "all-zero block: not ready");
        info.begin();
        info.publish(7, [0x52, 0x54, 0, 0x12, 0x34, 0x56], 1500);
        assert_eq!(info.read(), Some((7, [0x52, 0x54, 0, 0x12, 0x34, 0x56], 1500)));
        info.begin();
        assert_eq!(info.read(), None, "being rewritten");
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn byte_layout_is_the_documented_one() {
        let words: [AtomicU32; 16] = Default::default();
        let info = DeviceInfo::new(&words).unwrap();
        info.publish(0x0102_0304, [1, 2, 3, 4, 5, 6], 1500);
        let bytes: [[u8; 4]; 6] = core::array::from_fn(|i| words[i].load(Ordering::Relaxed).to_le_bytes());
        assert_eq!(bytes, [*b"NETI", [1, 0, 0, 0], [4, 3, 2, 1], [1, 2, 3, 4], [5, 6, 0, 0], [0xdc, 5, 0, 0]]);
    }

    #[test]
    fn garbage_is_refused_not_misread() {
        let words: [AtomicU32; 16] = core::array::from_fn(|i| AtomicU32::new(0x9e37_79b9u32.wrapping_mul(i as u32 + 1)));
        let info = DeviceInfo::new(&words).unwrap();
        assert_eq!(info.read(), None, "wrong magic");
        words[0].store(MAGIC, Ordering::Relaxed);
        words[1].store(VERSION, Ordering::Relaxed);
        words[5].store(u32::MAX, Ordering::Relaxed);
        let (_, _, mtu) = info.read().unwrap();
        assert_eq!(mtu, u16::MAX, "an oversized MTU saturates");
        assert!(DeviceInfo::new(&words[..15]).is_none(), "too few words");
    }
}
