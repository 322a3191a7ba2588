//! Finding the virtio-net function on PCI and placing its register BAR where the system
//! description granted MMIO.
//!
//! The granted physical window is the truth: whatever address firmware (SeaBIOS) gave the BAR,
//! the driver programs it to the grant, so the system description alone decides which device
//! memory the driver can reach, and a mismatch cannot make the driver map something else.

use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, PciError, PciRoot, PCI_CAP_ID_VNDR,
};
use virtio_drivers::transport::pci::virtio_device_type;
use virtio_drivers::transport::DeviceType;

/// virtio PCI capability types that name a BAR region the transport maps (common, notify, ISR,
/// device config). Type 5 (PCI config access) is not mapped.
const MAPPED_CAP_TYPES: [u8; 4] = [1, 2, 3, 4];

/// Why the device could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciSetupError {
    /// No virtio network function on bus 0.
    NoDevice,
    /// The function has no virtio capability naming a BAR.
    NoVirtioBar,
    /// The virtio capabilities are spread over several BARs (only one window is granted).
    SeveralBars(u8, u8),
    /// The BAR is an I/O BAR or missing.
    NotMemoryBar(u8),
    /// The BAR is larger than the grant, or the grant is not aligned to the BAR's size.
    DoesNotFit {
        /// BAR size.
        size: u64,
        /// Granted physical address.
        paddr: u64,
        /// Granted length.
        len: u64,
    },
    /// The BAR is 32-bit and the grant lies above 4 GiB.
    Above4G,
    /// Configuration-space access failed.
    Pci(PciError),
}

impl From<PciError> for PciSetupError {
    fn from(e: PciError) -> Self {
        PciSetupError::Pci(e)
    }
}

/// The first virtio network function on bus 0.
pub fn find_virtio_net<C: ConfigurationAccess>(root: &PciRoot<C>) -> Option<DeviceFunction> {
    root.enumerate_bus(0)
        .find(|(_, info)| virtio_device_type(info) == Some(DeviceType::Network))
        .map(|(df, _)| df)
}

/// The one BAR holding all the virtio register structures of `df` (`config` reads the
/// capabilities' BAR fields: the same configuration space as `root`'s).
pub fn virtio_bar<C: ConfigurationAccess>(
    root: &PciRoot<C>,
    config: &impl ConfigurationAccess,
    df: DeviceFunction,
) -> Result<u8, PciSetupError> {
    let mut found: Option<u8> = None;
    for cap in root.capabilities(df) {
        let cfg_type = (cap.private_header >> 8) as u8;
        let cap_len = cap.private_header as u8;
        if cap.id != PCI_CAP_ID_VNDR || cap_len < 16 || !MAPPED_CAP_TYPES.contains(&cfg_type) {
            continue;
        }
        let bar = config.read_word(df, cap.offset.wrapping_add(4)) as u8;
        match found {
            None => found = Some(bar),
            Some(b) if b == bar => {}
            Some(b) => return Err(PciSetupError::SeveralBars(b, bar)),
        }
    }
    found.ok_or(PciSetupError::NoVirtioBar)
}

/// Where a BAR was and where it is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placed {
    /// The BAR index.
    pub bar: u8,
    /// Its size.
    pub size: u64,
    /// The address firmware had given it.
    pub firmware: u64,
    /// The address it has now (the grant's).
    pub paddr: u64,
}

/// Program memory BAR `bar` of `df` to `paddr` (the granted window of `len` bytes), with memory
/// decoding off while it moves; then enable memory decoding and bus mastering (the device DMAs)
/// and clear INTx disable (the driver takes the legacy interrupt through the IOAPIC).
pub fn place_bar<C: ConfigurationAccess>(
    root: &mut PciRoot<C>,
    df: DeviceFunction,
    bar: u8,
    paddr: u64,
    len: u64,
) -> Result<Placed, PciSetupError> {
    let (_, command) = root.get_status_command(df);
    let info = root.bar_info(df, bar)?;
    let Some(BarInfo::Memory { address, size, .. }) = info else {
        return Err(PciSetupError::NotMemoryBar(bar));
    };
    let two = info.as_ref().is_some_and(BarInfo::takes_two_entries);
    if size == 0 || size > len || !paddr.is_multiple_of(size) {
        return Err(PciSetupError::DoesNotFit { size, paddr, len });
    }
    if !two && paddr > u64::from(u32::MAX) {
        return Err(PciSetupError::Above4G);
    }
    // A restarted driver finds the BAR where its predecessor put it: moving it again would
    // only cost QEMU two rebuilds of its memory map.
    if address != paddr {
        root.set_command(df, command & !Command::MEMORY_SPACE);
        if two {
            root.set_bar_64(df, bar, paddr);
        } else {
            root.set_bar_32(df, bar, paddr as u32);
        }
    }
    let enabled =
        (command | Command::MEMORY_SPACE | Command::BUS_MASTER) & !Command::INTERRUPT_DISABLE;
    if address != paddr || enabled != command {
        root.set_command(df, enabled);
    }
    Ok(Placed {
        bar,
        size,
        firmware: address,
        paddr,
    })
}
