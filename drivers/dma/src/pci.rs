//! PCI configuration space through an I/O-port capability (configuration mechanism #1).

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

impl PortCam {
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
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        // A refused port access (capability missing or not covering the ports) reads as "no
        // device" (all ones), which enumeration skips.
        if self.ports.out32(u64::from(CONFIG_ADDRESS), u64::from(Self::address(df, register))).is_err() {
            return u32::MAX;
        }
        self.ports.in32(CONFIG_DATA).unwrap_or(u32::MAX)
    }

    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        if self.ports.out32(u64::from(CONFIG_ADDRESS), u64::from(Self::address(df, register))).is_ok() {
            let _ = self.ports.out32(u64::from(CONFIG_DATA), u64::from(data));
        }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_word_has_the_mechanism_1_layout() {
        let df = DeviceFunction { bus: 0, device: 2, function: 0 };
        assert_eq!(PortCam::address(df, 0x10), 0x8000_1010);
        let df = DeviceFunction { bus: 0x12, device: 31, function: 7 };
        assert_eq!(PortCam::address(df, 0xff), 0x8012_fffc);
    }
}
