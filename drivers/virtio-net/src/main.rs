//! The virtio-net driver process (see README.md for its grants and the data path).
//!
//! Thin: it takes its capabilities and regions from the start-up configuration, finds the device
//! on PCI through its I/O-port capability, moves the register BAR to the granted MMIO window,
//! initialises the device with virtio-drivers' `VirtIONetRaw` (queues in the private DMA region,
//! buffers straight from the shared buffers region), initialises the netif rings with a new
//! epoch, and then pumps (`virtio_net_core::Driver`), blocking on its notification whenever
//! there is nothing to do. Interrupts: the device's legacy INTx through the IOAPIC, level
//! triggered; on each one it reads the ISR (device deasserts) and then acks the IRQ handler.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use netif::{DriverSide, Notify, Wait, BUF_SIZE, DRIVER_BADGE_IRQ};
use sel4::{Cap, IrqHandler, Notification, X86IoPort};
use sel4_dma::{take_region, CachedCam, ConfigShadow, PortCam, Sel4Hal, VirtioNic};
use sel4_rt::{println, StartInfo};
use sel4_rt::health::FaultKind;
use virtio_drivers::transport::pci::bus::PciRoot;
use virtio_drivers::transport::pci::PciTransport;
use virtio_net_core::pci::{find_virtio_net, place_bar, virtio_bar};
use virtio_net_core::Driver;

/// Entries per virtqueue (QEMU's virtio-net offers 256).
const QUEUE: usize = 256;
/// MTU published to the server (no offloads: plain Ethernet).
const MTU: u16 = 1500;

/// Names in the system description (see README.md).
const CAP_PCI: &str = "pci_config";
const CAP_IRQ: &str = "irq";
const CAP_WAKE: &str = "wake";
const CAP_SERVER: &str = "server";
const REGION_MMIO: &str = "virtio_mmio";
const REGION_DMA: &str = "dma";
const REGION_BUFFERS: &str = "buffers";
const REGION_RINGS: &str = "rings";

sel4_rt::component_main!(main);

macro_rules! need {
    ($e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                println!("cannot start: {}: {:?}", $what, e);
                return;
            }
        }
    };
}

fn main(_info: &'static StartInfo) {
    let t_start = sel4_rt::rdtsc();
    let ports: Cap<X86IoPort> = need!(sel4_rt::cap(CAP_PCI).ok_or("missing"), "io_port `pci_config`");
    let irq: Cap<IrqHandler> = need!(sel4_rt::cap(CAP_IRQ).ok_or("missing"), "irq `irq`");
    let wake: Cap<Notification> = need!(sel4_rt::cap(CAP_WAKE).ok_or("missing"), "notification `wake`");
    let server: Cap<Notification> = need!(sel4_rt::cap(CAP_SERVER).ok_or("missing"), "notification `server`");

    // Memory: the private DMA region for the virtqueues, the granted register window, the
    // shared buffers (the only memory the device may be pointed at besides the queues).
    let dma = need!(take_region(REGION_DMA).and_then(|m| m.into_dma_pool()), "region `dma`");
    need!(Sel4Hal::set_dma_pool(dma), "DMA pool");
    let mmio = need!(take_region(REGION_MMIO), "mmio `virtio_mmio`");
    let Some(grant) = mmio.window() else {
        println!("cannot start: mmio `virtio_mmio` has no physical address");
        return;
    };
    need!(Sel4Hal::add_mmio(need!(mmio.into_mmio(), "mmio window")), "MMIO window");
    let (region, window) = need!(take_region(REGION_BUFFERS).and_then(|m| m.into_device_region(BUF_SIZE)), "region `buffers`");
    need!(Sel4Hal::add_shared(window), "buffers window");
    let rings = need!(take_region(REGION_RINGS).and_then(|m| m.into_netif_rings()), "region `rings`");

    // The device: find it, put its register BAR at the grant, initialise it (this resets it, so
    // no DMA of an earlier incarnation of this driver is in flight from here on).
    let t_pci = sel4_rt::rdtsc();
    let df = need!(find_virtio_net(&PciRoot::new(PortCam::new(ports))).ok_or("no virtio-net function on bus 0"), "PCI");
    // From here on only this function is accessed, mostly re-reading what is already known.
    let shadow = RefCell::new(ConfigShadow::new(df));
    let cam = CachedCam::new(PortCam::new(ports), &shadow);
    let mut root = PciRoot::new(CachedCam::new(PortCam::new(ports), &shadow));
    // Should this instance die, the supervisor turns the function's bus mastering off.
    sel4_rt::health::set_pci_device(df.bus, df.device, df.function);
    let bar = need!(virtio_bar(&root, &cam, df), "virtio capabilities");
    let placed = need!(place_bar(&mut root, df, bar, grant.paddr, grant.len as u64), "BAR placement");
    let mut report: Vec<String> = Vec::new();
    report.push(format!(
        "virtio-net at {:02x}:{:02x}.{}: BAR{} ({:#x} bytes) firmware {:#x} -> granted {:#x}",
        df.bus, df.device, df.function, placed.bar, placed.size, placed.firmware, placed.paddr
    ));
    let t_device = sel4_rt::rdtsc();
    let pci_accesses = PortCam::accesses();
    let transport = need!(PciTransport::new::<Sel4Hal, _>(&mut root, df), "virtio PCI transport");
    let t_transport = sel4_rt::rdtsc();
    let transport_accesses = PortCam::accesses() - pci_accesses;
    let nic = need!(VirtioNic::<PciTransport, QUEUE>::new(transport), "virtio-net init");
    let mac = nic.mac();
    report.push(format!(
        "MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (virtio-net header {} bytes)",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], nic.hdr_len()
    ));

    let t_rings = sel4_rt::rdtsc();
    let side = need!(DriverSide::new(rings, region), "netif driver side");
    let mut driver = Driver::new(nic, side);
    let epoch = need!(driver.start(mac, MTU), "ring initialisation");
    let (now, mhz) = (sel4_rt::rdtsc(), sel4_rt::tsc_mhz().max(1));
    let ms = |a: u64, b: u64| b.wrapping_sub(a) as f64 / mhz as f64 / 1000.0;
    report.push(format!(
        "rings initialised, epoch {epoch}; start-up {:.1} ms (memory {:.1}, PCI {:.1} with {pci_accesses} config accesses, transport {:.1} with {transport_accesses}, device {:.1}, rings {:.1})",
        ms(t_start, now),
        ms(t_start, t_pci),
        ms(t_pci, t_device),
        ms(t_device, t_transport),
        ms(t_transport, t_rings),
        ms(t_rings, now)
    ));
    server.signal();
    // Printing costs milliseconds under TCG (a kernel call and an emulated UART write per
    // byte), at this thread's priority, above the net server's: a restarted instance says
    // what it did once traffic has had time to flow again.
    let first_boot = epoch.get() == 1;
    let mut report = Some(report).filter(|r| !r.is_empty());
    let report_at = now + REPORT_DELAY_MS * 1000 * mhz;
    if first_boot {
        report.take().into_iter().flatten().for_each(|l| println!("{l}"));
    }

    // Interrupts delivered before this point were for the reset device; ack whatever is pending.
    let _ = driver.interrupt();
    let _ = irq.ack();
    let mut reported = 0;

    loop {
        if report.is_some() && sel4_rt::rdtsc() > report_at {
            report.take().into_iter().flatten().for_each(|l| println!("{l}"));
        }
        // The supervisor's heartbeat (its ping wakes us through `wake`), and the faults it may
        // ask us to commit for testing.
        if let Some(kind) = sel4_rt::health::beat() {
            println!("fault injection: committing `{}`", kind.name());
            match sel4_rt::health::commit(kind) {
                FaultKind::StallTx => driver.stall_tx(),
                FaultKind::Garbage => {
                    let _ = driver.inject_garbage(sel4_rt::rdtsc() >> 4);
                    server.signal();
                    return zombie(wake, irq, &mut driver);
                }
                _ => {}
            }
        }
        match driver.pump() {
            Ok(Notify::Signal) => server.signal(),
            Ok(Notify::Quiet) => {}
            Err(e) => return serve_nothing(e, &mut driver, wake, irq),
        }
        match driver.prepare_wait() {
            Ok(Wait::Retry) => continue,
            Ok(Wait::Block) => {}
            Err(e) => return serve_nothing(e, &mut driver, wake, irq),
        }
        let badges = wake.wait();
        if badges & DRIVER_BADGE_IRQ != 0 {
            let raised = driver.interrupt();
            let _ = irq.ack();
            let s = driver.stats();
            if raised && s.interrupts == 1 && first_boot {
                println!("first device interrupt handled (INTx, ISR acked, IRQ handler acked)");
            }
            // A pin with the wrong trigger or polarity fires without pause: say so, rarely.
            if s.spurious_interrupts >= SPURIOUS_REPORT << reported {
                println!("interrupt storm? {} interrupts with nothing raised ({} real)", s.spurious_interrupts, s.interrupts);
                reported += 1;
            }
        }
    }
}

/// After writing garbage into a ring: stop producing (a healthy producer would overwrite the
/// garbage), keep answering heartbeats and keep the interrupt quiet. The server is the one who
/// must notice.
fn zombie<D: virtio_net_core::NetDevice>(wake: Cap<Notification>, irq: Cap<IrqHandler>, driver: &mut Driver<'_, D>) {
    loop {
        let _ = sel4_rt::health::beat();
        if wake.wait() & DRIVER_BADGE_IRQ != 0 {
            let _ = driver.interrupt();
            let _ = irq.ack();
        }
    }
}

/// How long a restarted instance waits before printing its start-up report.
const REPORT_DELAY_MS: u64 = 300;

/// First spurious-interrupt count reported (then at doublings).
const SPURIOUS_REPORT: u64 = 1000;

/// The server's rings are corrupt: stop serving them (the server cannot be repaired from here),
/// keep the device's interrupt quiet, and wait to be restarted.
fn serve_nothing<D: virtio_net_core::NetDevice>(
    e: netif::NetifError,
    driver: &mut Driver<'_, D>,
    wake: Cap<Notification>,
    irq: Cap<IrqHandler>,
) {
    println!("server broke the ring protocol ({e}); no longer serving it; stats {:?}", driver.stats());
    loop {
        let _ = sel4_rt::health::beat();
        if wake.wait() & DRIVER_BADGE_IRQ != 0 {
            let _ = driver.interrupt();
            let _ = irq.ack();
        }
    }
}
