//! Device discovery and BAR placement against a fake configuration space.

use std::cell::RefCell;
use std::rc::Rc;

use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_net_core::pci::{find_virtio_net, place_bar, virtio_bar, PciSetupError};

/// One transitional virtio-net function at 00:02.0; every other function is absent.
#[derive(Clone)]
struct FakeCam {
    regs: Rc<RefCell<[u32; 64]>>,
}

const BAR4_SIZE: u32 = 0x4000;

impl FakeCam {
    fn new(second_bar_for_isr: bool) -> Self {
        let mut r = [0u32; 64];
        r[0] = 0x1000_1af4; // device 0x1000, vendor 0x1af4
        r[1] = 0x0010_0007; // status: capability list; command: io, memory, bus master
        r[2] = 0x0200_0000; // network controller
        r[4] = 0xc041; // BAR0: I/O
        r[8] = 0xfe00_000c; // BAR4: 64-bit prefetchable memory at 0xfe000000
        r[9] = 0;
        r[13] = 0x40; // capabilities pointer
        // Vendor capabilities: common config (type 1) and ISR (type 3), both in BAR4 unless asked.
        r[0x40 / 4] = 0x0110_5009; // id 9, next 0x50, len 16, type 1
        r[0x44 / 4] = 4;
        r[0x50 / 4] = 0x0310_0009; // id 9, next 0, len 16, type 3
        r[0x54 / 4] = if second_bar_for_isr { 1 } else { 4 };
        FakeCam { regs: Rc::new(RefCell::new(r)) }
    }
    fn bar4(&self) -> u64 {
        let r = self.regs.borrow();
        u64::from(r[8] & !0xf) | u64::from(r[9]) << 32
    }
    fn command(&self) -> u16 {
        self.regs.borrow()[1] as u16
    }
}

impl ConfigurationAccess for FakeCam {
    fn read_word(&self, df: DeviceFunction, register: u8) -> u32 {
        if (df.bus, df.device, df.function) != (0, 2, 0) {
            return u32::MAX;
        }
        self.regs.borrow()[usize::from(register / 4)]
    }
    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        if (df.bus, df.device, df.function) != (0, 2, 0) {
            return;
        }
        let mut r = self.regs.borrow_mut();
        let i = usize::from(register / 4);
        r[i] = match i {
            1 => (r[1] & 0xffff_0000) | (data & 0xffff), // status is not written this way
            4 => (data & !0x1f) | 1,                        // 32-byte I/O BAR
            8 => (data & !(BAR4_SIZE - 1)) | 0xc,           // BAR4 low: size mask + type bits
            5..=7 => 0,                                     // unimplemented BARs
            _ => data,
        };
    }
    unsafe fn unsafe_clone(&self) -> Self {
        self.clone()
    }
}

#[test]
fn finds_the_function_and_moves_its_bar_to_the_grant() {
    let cam = FakeCam::new(false);
    let mut root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    assert_eq!((df.bus, df.device, df.function), (0, 2, 0));
    let bar = virtio_bar(&root, &cam, df).unwrap();
    assert_eq!(bar, 4);
    let placed = place_bar(&mut root, df, bar, 0x8_0000_4000, 0x4000).unwrap();
    assert_eq!((placed.size, placed.firmware, placed.paddr), (0x4000, 0xfe00_0000, 0x8_0000_4000));
    assert_eq!(cam.bar4(), 0x8_0000_4000, "the 64-bit BAR holds the granted address");
    let command = cam.command();
    assert_eq!(command & 0b110, 0b110, "memory decoding and bus mastering on");
    assert_eq!(command & (1 << 10), 0, "INTx not disabled");
}

#[test]
fn a_grant_that_does_not_fit_is_refused_and_the_bar_left_alone() {
    let cam = FakeCam::new(false);
    let mut root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    assert!(matches!(place_bar(&mut root, df, 4, 0xfe00_0000, 0x1000), Err(PciSetupError::DoesNotFit { .. })));
    assert!(matches!(place_bar(&mut root, df, 4, 0xfe00_1000, 0x4000), Err(PciSetupError::DoesNotFit { .. })), "misaligned");
    assert_eq!(cam.bar4(), 0xfe00_0000);
    assert_eq!(cam.command(), 0x0007, "decoding left as it was");
    assert!(matches!(place_bar(&mut root, df, 0, 0xfe00_0000, 0x4000), Err(PciSetupError::NotMemoryBar(0))));
}

#[test]
fn capabilities_spread_over_two_bars_are_refused() {
    let cam = FakeCam::new(true);
    let root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    assert_eq!(virtio_bar(&root, &cam, df), Err(PciSetupError::SeveralBars(4, 1)));
}
