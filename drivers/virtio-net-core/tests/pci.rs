//! Device discovery and BAR placement against a fake configuration space.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use sel4_dma::{CachedCam, ConfigShadow};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};
use virtio_net_core::pci::{find_virtio_net, place_bar, virtio_bar, PciSetupError};

/// One transitional virtio-net function at 00:02.0; every other function is absent.
#[derive(Clone)]
struct FakeCam {
    regs: Rc<RefCell<[u32; 64]>>,
    /// Reads and writes that reached the fake device.
    accesses: Rc<Cell<u32>>,
    /// Writes to the command register and to BARs (each remaps QEMU's memory: slow).
    remapping_writes: Rc<Cell<u32>>,
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
        FakeCam {
            regs: Rc::new(RefCell::new(r)),
            accesses: Rc::default(),
            remapping_writes: Rc::default(),
        }
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
        self.accesses.set(self.accesses.get() + 1);
        if (df.bus, df.device, df.function) != (0, 2, 0) {
            return u32::MAX;
        }
        self.regs.borrow()[usize::from(register / 4)]
    }
    fn write_word(&mut self, df: DeviceFunction, register: u8, data: u32) {
        self.accesses.set(self.accesses.get() + 1);
        if (df.bus, df.device, df.function) != (0, 2, 0) {
            return;
        }
        let mut r = self.regs.borrow_mut();
        let i = usize::from(register / 4);
        if i == 1 || (4..=9).contains(&i) {
            self.remapping_writes.set(self.remapping_writes.get() + 1);
        }
        r[i] = match i {
            1 => (r[1] & 0xffff_0000) | (data & 0xffff), // status is not written this way
            4 => (data & !0x1f) | 1,                     // 32-byte I/O BAR
            8 => (data & !(BAR4_SIZE - 1)) | 0xc,        // BAR4 low: size mask + type bits
            5..=7 => 0,                                  // unimplemented BARs
            _ => data,
        };
    }
    // SAFETY: nothing unsafe inside; the trait declares the method `unsafe` for real hardware.
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
    assert_eq!(
        (placed.size, placed.firmware, placed.paddr),
        (0x4000, 0xfe00_0000, 0x8_0000_4000)
    );
    assert_eq!(
        cam.bar4(),
        0x8_0000_4000,
        "the 64-bit BAR holds the granted address"
    );
    let command = cam.command();
    assert_eq!(
        command & 0b110,
        0b110,
        "memory decoding and bus mastering on"
    );
    assert_eq!(command & (1 << 10), 0, "INTx not disabled");
}

#[test]
fn a_grant_that_does_not_fit_is_refused_and_the_bar_left_alone() {
    let cam = FakeCam::new(false);
    let mut root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    assert!(matches!(
        place_bar(&mut root, df, 4, 0xfe00_0000, 0x1000),
        Err(PciSetupError::DoesNotFit { .. })
    ));
    assert!(
        matches!(
            place_bar(&mut root, df, 4, 0xfe00_1000, 0x4000),
            Err(PciSetupError::DoesNotFit { .. })
        ),
        "misaligned"
    );
    assert_eq!(cam.bar4(), 0xfe00_0000);
    assert_eq!(cam.command(), 0x0007, "decoding left as it was");
    assert!(matches!(
        place_bar(&mut root, df, 0, 0xfe00_0000, 0x4000),
        Err(PciSetupError::NotMemoryBar(0))
    ));
}

#[test]
fn capabilities_spread_over_two_bars_are_refused() {
    let cam = FakeCam::new(true);
    let root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    assert_eq!(
        virtio_bar(&root, &cam, df),
        Err(PciSetupError::SeveralBars(4, 1))
    );
}

#[test]
fn the_cached_access_answers_like_the_device_with_far_fewer_accesses() {
    let df = DeviceFunction {
        bus: 0,
        device: 2,
        function: 0,
    };
    // The same sequence as the driver's, and then what `PciTransport::new` does: walk the
    // capabilities and size the BAR once per virtio structure.
    let plain = FakeCam::new(false);
    let cached = FakeCam::new(false);
    let shadow = RefCell::new(ConfigShadow::new(df));
    let mut plain_root = PciRoot::new(plain.clone());
    let mut cached_root = PciRoot::new(CachedCam::new(cached.clone(), &shadow));
    assert_eq!(
        virtio_bar(&plain_root, &plain, df),
        virtio_bar(&cached_root, &CachedCam::new(cached.clone(), &shadow), df)
    );
    assert_eq!(
        place_bar(&mut plain_root, df, 4, 0x8_0000_4000, 0x4000).unwrap(),
        place_bar(&mut cached_root, df, 4, 0x8_0000_4000, 0x4000).unwrap()
    );
    let (p0, c0) = (plain.accesses.get(), cached.accesses.get());
    let (pr, cr) = (plain.remapping_writes.get(), cached.remapping_writes.get());
    for _ in 0..4 {
        let caps: Vec<_> = plain_root
            .capabilities(df)
            .map(|c| (c.offset, c.id, c.private_header))
            .collect();
        let cached_caps: Vec<_> = cached_root
            .capabilities(df)
            .map(|c| (c.offset, c.id, c.private_header))
            .collect();
        assert_eq!(caps, cached_caps);
        assert_eq!(
            plain_root.bar_info(df, 4).unwrap(),
            cached_root.bar_info(df, 4).unwrap()
        );
        assert_eq!(
            plain_root.bar_info(df, 0).unwrap(),
            cached_root.bar_info(df, 0).unwrap()
        );
    }
    let (plain_n, cached_n) = (plain.accesses.get() - p0, cached.accesses.get() - c0);
    // What is left: the status/command word (never remembered) read and written around each
    // sizing, and the first sizing of BAR0.
    assert!(
        cached_n * 2 < plain_n,
        "{cached_n} accesses with the shadow, {plain_n} without"
    );
    // BAR0 was sized once for real (decoding off and on, the BAR written twice); nothing else.
    assert_eq!(cached.remapping_writes.get() - cr, 4);
    assert!(plain.remapping_writes.get() - pr >= 4 * 8);
    // The device ends up exactly as without the shadow.
    assert_eq!(*plain.regs.borrow(), *cached.regs.borrow());
    assert_eq!(cached.bar4(), 0x8_0000_4000);
}

#[test]
fn written_registers_are_read_back_from_the_device() {
    let df = DeviceFunction {
        bus: 0,
        device: 2,
        function: 0,
    };
    let fake = FakeCam::new(false);
    let shadow = RefCell::new(ConfigShadow::new(df));
    let mut cam = CachedCam::new(fake.clone(), &shadow);
    assert_eq!(cam.read_word(df, 0x20), 0xfe00_000c);
    // The device keeps its hardwired low bits: what was written is not what reads back.
    cam.write_word(df, 0x20, 0x1234_5678);
    assert_eq!(cam.read_word(df, 0x20), 0x1234_400c);
    // Sizing learned from the device, then answered without changing the BAR.
    cam.write_word(df, 0x20, u32::MAX);
    assert_eq!(cam.read_word(df, 0x20), !(BAR4_SIZE - 1) | 0xc);
    cam.write_word(df, 0x20, 0x1234_400c);
    assert_eq!(
        cam.read_word(df, 0x20),
        0x1234_400c,
        "a written register is read from the device"
    );
    let before = fake.accesses.get();
    cam.write_word(df, 0x20, u32::MAX);
    assert_eq!(cam.read_word(df, 0x20), !(BAR4_SIZE - 1) | 0xc);
    assert_eq!(
        fake.regs.borrow()[8],
        0x1234_400c,
        "the BAR was not touched"
    );
    cam.write_word(df, 0x20, 0x1234_400c);
    assert_eq!(fake.accesses.get(), before, "answered from the shadow");
    assert_eq!(cam.read_word(df, 0x20), 0x1234_400c);
    // Status/command always goes to the device; so does every other function.
    fake.regs.borrow_mut()[1] |= 1 << 19; // interrupt status raised by the device
    assert_eq!(cam.read_word(df, 4) >> 16 & 0x8, 0x8);
    let other = DeviceFunction {
        bus: 0,
        device: 3,
        function: 0,
    };
    let before = fake.accesses.get();
    assert_eq!(cam.read_word(other, 0), u32::MAX);
    assert_eq!(cam.read_word(other, 0), u32::MAX);
    assert_eq!(fake.accesses.get(), before + 2);
}

#[test]
fn a_bar_already_at_the_grant_is_not_moved_again() {
    let cam = FakeCam::new(false);
    let mut root = PciRoot::new(cam.clone());
    let df = find_virtio_net(&root).unwrap();
    place_bar(&mut root, df, 4, 0x8_0000_4000, 0x4000).unwrap();
    // A restarted driver finds it where the last one put it, with bus mastering turned off by
    // the supervisor.
    cam.regs.borrow_mut()[1] &= !0b100;
    let shadow = RefCell::new(ConfigShadow::new(df));
    let mut root = PciRoot::new(CachedCam::new(cam.clone(), &shadow));
    let before = cam.remapping_writes.get();
    let placed = place_bar(&mut root, df, 4, 0x8_0000_4000, 0x4000).unwrap();
    assert_eq!(
        (placed.firmware, placed.paddr),
        (0x8_0000_4000, 0x8_0000_4000)
    );
    // Sizing the BAR (decoding off and on, all ones and back, both halves), then bus mastering on.
    assert_eq!(cam.remapping_writes.get() - before, 2 + 4 + 1);
    assert_eq!(cam.command() & 0b110, 0b110);
    let before = cam.remapping_writes.get();
    place_bar(&mut root, df, 4, 0x8_0000_4000, 0x4000).unwrap();
    assert_eq!(cam.remapping_writes.get(), before, "nothing left to change");
}
