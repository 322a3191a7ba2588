//! PCI configuration space through an I/O-port capability (configuration mechanism #1).

use core::sync::atomic::{AtomicU32, Ordering::Relaxed};

use sel4::{Cap, X86IoPort};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};

/// The address port.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The data port.
pub const CONFIG_DATA: u16 = 0xCFC;

/// Configuration access over ports 0xCF8 (address) / 0xCFC (data), through a capability that
/// must cover both (the system description grants 0xCF8–0xCFF). Works on q35 and i440fx alike
/// (only the first 256 bytes of each function's space, which is all virtio needs).
///
/// The address/data pair is not atomic: use it from one thread (the driver's).
#[derive(Clone, Copy, Debug)]
pub struct PortCam {
    ports: Cap<X86IoPort>,
}

/// Configuration reads and writes so far (each is two port accesses, hence two system calls).
static ACCESSES: AtomicU32 = AtomicU32::new(0);

impl PortCam {
    /// Configuration reads and writes made through any `PortCam` of this process so far.
    pub fn accesses() -> u32 {
        ACCESSES.load(Relaxed)
    }

    /// Configuration access through `ports`.
    pub fn new(ports: Cap<X86IoPort>) -> Self {
        PortCam { ports }
    }

    /// The mechanism-#1 address word for a register.
    pub fn address(df: DeviceFunction, register: u8) -> u32 {
        0x8000_0000
            | u32::from(df.bus) << 16
            | u32::from(df.device & 0x1f) << 11
            | u32::from(df.function & 0x7) << 8
            | u32::from(register & 0xfc)
    }

    /// Counts the access and latches its address; false when the port access was refused
    /// (capability missing or not covering the ports).
    fn select(&self, df: DeviceFunction, register: u8) -> bool {
        ACCESSES.fetch_add(1, Relaxed);
        self.ports.out32(u64::from(CONFIG_ADDRESS), u64::from(Self::address(df, register))).is_ok()
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        // A refused access reads as "no device" (all ones), which enumeration skips.
        if !self.select(df, register) {
            return u32::MAX;
        }
        self.ports.in32(CONFIG_DATA).unwrap_or(u32::MAX)
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        if self.select(df, register) {
            let _ = self.ports.out32(u64::from(CONFIG_DATA), u64::from(data));
        }
    }

    // SAFETY: a copy of the port capabilities; every access still goes through the kernel.
    unsafe fn unsafe_clone(&self) -> Self {
        *self
    }
}

/// What [`CachedCam`] remembers of one function's configuration space.
///
/// Two things make configuration accesses slow under TCG: each port access (two system calls
/// and two emulated port accesses, ~20 us), and above all every change of the memory-decode or
/// bus-master bits or of a BAR, after which QEMU rebuilds its memory map (~1 ms). virtio-drivers'
/// `PciTransport::new` walks the capability list again and sizes the same BAR once per virtio
/// structure, turning decoding off and on around each: ~70 accesses and 8 remaps, most of a
/// restarted driver's start-up. The function's identity, capability list and BARs only change
/// when we write them, so they can be answered from memory.
#[derive(Debug)]
pub struct ConfigShadow {
    df: DeviceFunction,
    words: [Option<u32>; 64],
    /// What a BAR register reads after all ones were written to it (learned from the device).
    size_masks: [Option<u32>; 64],
    /// BAR registers whose sizing (all ones written) is being answered from `size_masks`.
    sizing: u64,
    /// BAR registers all ones were written to; the next read learns the size mask.
    learning: u64,
    /// The command register as the device has it (last read or written).
    command: Option<u16>,
    /// A decode-disable not yet sent to the device (see [`CachedCam`]).
    command_pending: Option<u16>,
}

impl ConfigShadow {
    /// An empty shadow of `df`'s configuration space.
    pub fn new(df: DeviceFunction) -> Self {
        ConfigShadow {
            df,
            words: [None; 64],
            size_masks: [None; 64],
            sizing: 0,
            learning: 0,
            command: None,
            command_pending: None,
        }
    }

    /// Sends a deferred command write before anything else reaches the device.
    fn flush<C: ConfigurationAccess>(&mut self, inner: &mut C) {
        if let Some(c) = self.command_pending.take() {
            inner.write_word(self.df, STATUS_COMMAND_OFFSET, u32::from(c));
            self.command = Some(c);
        }
    }
}

/// The status/command word: status bits change on their own (interrupt status, errors), so it
/// is always read from the device.
const STATUS_COMMAND: usize = 1;
const STATUS_COMMAND_OFFSET: u8 = 4;
/// Command bits: I/O and memory decoding.
const DECODE: u16 = 0b11;
/// BAR0..BAR5.
const BARS: core::ops::RangeInclusive<usize> = 4..=9;

/// Configuration access for one function answered from a [`ConfigShadow`] where that is exact,
/// passed through to `inner` otherwise (other functions, status, every write that changes
/// something).
///
/// - Reads are remembered until the register is written.
/// - BAR sizing (write all ones, read, write the original back) goes to the device the first
///   time; afterwards it is answered from the learned size mask without touching the BAR,
///   whose value the shadow knows.
/// - A command write that only turns decoding off is held back, and dropped if decoding is
///   turned back on before any other write reaches the device (sizing around which nothing
///   moved); any other write sends it first, so a BAR is never moved with decoding on. Reads
///   of configuration space have no effects, and nothing between the two writes touches the
///   device's registers (only configuration space, through this access), so the device cannot
///   tell.
///
/// Clones (virtio-drivers clones the access to walk capabilities) share the shadow. One thread.
pub struct CachedCam<'a, C> {
    inner: C,
    shadow: &'a core::cell::RefCell<ConfigShadow>,
}

impl<'a, C> CachedCam<'a, C> {
    /// `inner`, with `shadow`'s function remembered in `shadow`.
    pub fn new(inner: C, shadow: &'a core::cell::RefCell<ConfigShadow>) -> Self {
        CachedCam { inner, shadow }
    }
}

impl<C: ConfigurationAccess> ConfigurationAccess for CachedCam<'_, C> {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        let i = usize::from(register / 4);
        let Ok(mut s) = self.shadow.try_borrow_mut() else {
            return self.inner.read_word(df, register);
        };
        if df != s.df {
            return self.inner.read_word(df, register);
        }
        if i == STATUS_COMMAND {
            let v = self.inner.read_word(df, register);
            return match s.command_pending {
                Some(c) => (v & 0xffff_0000) | u32::from(c),
                None => {
                    s.command = Some(v as u16);
                    v
                }
            };
        }
        let bit = 1u64 << i;
        if s.sizing & bit != 0 {
            if let Some(mask) = s.size_masks[i] {
                return mask;
            }
        }
        if s.learning & bit != 0 {
            let mask = self.inner.read_word(df, register);
            s.size_masks[i] = Some(mask);
            s.learning &= !bit;
            return mask;
        }
        if let Some(v) = s.words[i] {
            return v;
        }
        let v = self.inner.read_word(df, register);
        s.words[i] = Some(v);
        v
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        let i = usize::from(register / 4);
        let Ok(mut s) = self.shadow.try_borrow_mut() else {
            return self.inner.write_word(df, register, data);
        };
        if df != s.df {
            return self.inner.write_word(df, register, data);
        }
        if i == STATUS_COMMAND {
            if let Some(hw) = s.command {
                if data == u32::from(hw) {
                    // Back to what the device has: the held write need never be sent.
                    s.command_pending = None;
                    return;
                }
                if data == u32::from(hw & !DECODE) {
                    s.command_pending = Some(hw & !DECODE);
                    return;
                }
            }
            s.command_pending = None;
            s.command = (data >> 16 == 0).then_some(data as u16);
            return self.inner.write_word(df, register, data);
        }
        let bit = 1u64 << i;
        if BARS.contains(&i) {
            let known = s.words[i];
            if data == u32::MAX && known.is_some() && s.size_masks[i].is_some() {
                s.sizing |= bit;
                return;
            }
            if s.sizing & bit != 0 && known == Some(data) {
                s.sizing &= !bit;
                return;
            }
            s.sizing &= !bit;
            if data == u32::MAX {
                s.learning |= bit;
            } else {
                s.learning &= !bit;
            }
        }
        s.flush(&mut self.inner);
        // The device decides what a written register reads back (hardwired bits): ask it.
        s.words[i] = None;
        self.inner.write_word(df, register, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // The shadow is shared through a `RefCell`, which refuses overlapping borrows (then the
        // access goes to `inner`).
        CachedCam {
            // SAFETY: the caller upholds the trait's contract (read-only use) for this clone.
            inner: unsafe { self.inner.unsafe_clone() },
            shadow: self.shadow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_word_has_the_mechanism_1_layout() {
        let df = DeviceFunction {
            bus: 0,
            device: 2,
            function: 0,
        };
        assert_eq!(PortCam::address(df, 0x10), 0x8000_1010);
        let df = DeviceFunction {
            bus: 0x12,
            device: 31,
            function: 7,
        };
        assert_eq!(PortCam::address(df, 0xff), 0x8012_fffc);
    }
}
