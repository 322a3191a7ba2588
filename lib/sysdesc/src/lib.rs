//! The one system description and the start-up configuration derived from it.
//!
//! `system.toml` (parsed and validated on the host by [`parse`], feature `std`) names every
//! component, channel, shared region and device resource. The build tool packs the validated
//! [`System`] together with the component ELFs into an [`Image`] that the root task embeds. The
//! root task creates what the description asks for and hands each component a [`StartInfo`]:
//! where its capabilities, regions and threads are.
//!
//! Everything here is plain data encoded with postcard; nothing is trusted blindly — the root
//! task decodes with [`Image::decode`], which never panics.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

#[cfg(feature = "std")]
mod parse;
#[cfg(feature = "std")]
pub use parse::{parse, DescError};

/// Page size every mapping is rounded to.
pub const PAGE_SIZE: u64 = 4096;
/// Where every component's ELF is linked (see `lib/rt/link.ld`).
pub const IMAGE_BASE: u64 = 0x40_0000;
/// Highest address an ELF segment may reach; mappings chosen by the root task start above it.
pub const IMAGE_LIMIT: u64 = 0x1000_0000;
/// The page holding the component's encoded [`StartInfo`].
pub const START_INFO_VADDR: u64 = 0x1000_0000;
/// Maximum size of the encoded [`StartInfo`].
pub const START_INFO_SIZE: u64 = 4 * PAGE_SIZE;
/// IPC buffers of all threads, one page each (main thread first).
pub const IPC_BUFFER_BASE: u64 = 0x1001_0000;
/// Stacks: each thread gets `STACK_SLOT` of address space, the lowest page left unmapped as a guard.
pub const STACK_BASE: u64 = 0x2000_0000;
pub const STACK_SLOT: u64 = 0x0010_0000;
/// Most threads a component may have, the main thread included (stacks end below [`WINDOW_VADDR`]).
pub const MAX_THREADS: usize = 64;
/// One page the runtime reserves for looking into frames it does not keep mapped.
pub const WINDOW_VADDR: u64 = 0x3FF0_0000;
/// One page shared by every component and the root task: word 0 is the console lock, so that
/// lines printed at the same time on different cores do not interleave.
pub const CONSOLE_VADDR: u64 = 0x3FE0_0000;
/// The health page of a component with a heartbeat (layout: [`health`]).
pub const HEALTH_VADDR: u64 = 0x3FD0_0000;
/// The heap.
pub const HEAP_BASE: u64 = 0x4000_0000;
/// Regions, device memory and anything else the root task maps without a fixed address are
/// placed from here up to [`FIXED_BASE`].
pub const MAP_BASE: u64 = 0x1_0000_0000;
/// Regions given a fixed `vaddr` must lie at or above this (and below [`USER_TOP`]), so that a
/// fixed mapping can never land on one the root task placed.
pub const FIXED_BASE: u64 = 0x100_0000_0000;
/// User address space ends here (lower half of the canonical range).
pub const USER_TOP: u64 = 0x7FFF_FFFF_F000;

/// The supervisor's clock, which the root task always runs: the CMOS RTC's I/O ports and its
/// IOAPIC pin. No component may be granted them.
pub const SUPERVISOR_CLOCK_PORTS: (u16, u16) = (0x70, 0x71);
pub const SUPERVISOR_CLOCK_PIN: u8 = 8;
/// COM1's I/O ports: the kernel's console (every component's `println!`, and what the tests read).
pub const CONSOLE_SERIAL_PORTS: (u16, u16) = (0x3F8, 0x3FF);
/// Most components the supervisor can be told about (`reported_by`): one badge bit each.
pub const MAX_REPORTABLE: usize = 25;
/// COM2's I/O ports, the root task's when `[supervisor] control_serial` is on.
pub const SUPERVISOR_SERIAL_PORTS: (u16, u16) = (0x2F8, 0x2FF);

/// Largest badge seL4 5.0 stores (28 bits).
pub const MAX_BADGE: u64 = (1 << 28) - 1;

/// The validated system description.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct System {
    pub components: Vec<Component>,
    pub endpoints: Vec<Channel>,
    pub notifications: Vec<Channel>,
    pub regions: Vec<Region>,
    pub io_ports: Vec<IoPortGrant>,
    pub irqs: Vec<IrqGrant>,
    pub mmio: Vec<MmioGrant>,
    /// What the root task's supervisor offers beyond restarting on faults.
    pub supervisor: Supervisor,
}

/// The supervisor's own settings (`[supervisor]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Supervisor {
    /// Listen for commands (fault injection) on the second serial port, COM2; see [`control`].
    pub control_serial: bool,
    /// A region in which the supervisor records every restart ([`restart_log`]), for the
    /// components that map it (the net server shows them in its statistics).
    pub restart_log: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub name: String,
    /// Cargo package and binary that build this component's ELF.
    pub package: String,
    pub bin: String,
    pub priority: u8,
    /// Core of the main thread (SMP kernels only; 0 otherwise).
    pub core: u8,
    pub stack_size: u64,
    pub heap_size: u64,
    /// Extra threads in the same address space, created suspended; the runtime starts them.
    pub threads: Vec<Thread>,
    /// Restart the component when it faults (supervised), instead of leaving it dead.
    pub restart: bool,
    /// Free-form settings for the component (`[component.config]`), handed over unchanged.
    pub config: Vec<(String, String)>,
    /// The supervisor pings the component and declares it hung when a ping goes unanswered.
    pub heartbeat: Option<Heartbeat>,
    /// Components that may tell the supervisor this one is faulty (it is then restarted), and
    /// the name of the notification capability they get for it.
    pub reported_by: Vec<Holder>,
}

/// Liveness checking of one component (see [`health`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The notification (by the component's name for it) that wakes the component's main loop;
    /// the supervisor signals it with [`Heartbeat::badge`] to ping.
    pub notification: String,
    pub badge: u64,
    /// A ping unanswered for this long means the component is hung.
    pub timeout_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thread {
    pub name: String,
    pub priority: u8,
    pub core: u8,
    pub stack_size: u64,
}

/// An endpoint or a notification and who holds a capability to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    pub name: String,
    pub holders: Vec<Holder>,
    /// Endpoints only: a region in which the root task announces the badges of holders that
    /// died (exited, faulted, or are being restarted), so the server can drop their state.
    /// Layout: see [`DEATH_NOTICES`].
    pub death_notices: Option<String>,
}

/// Layout of a death-notice region (first page): word 0 counts notices ever written; notice `n`
/// (from 0) is the badge in word `1 + n % DEATH_NOTICES`. The root task writes the badge, then
/// the count; a reader that falls more than `DEATH_NOTICES` behind has lost notices.
pub const DEATH_NOTICES: u64 = 511;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub component: String,
    /// 0: the owner — receives on the endpoint, waits on (and may signal) the notification.
    /// Any other value: a send-only capability with that badge — calls or sends on the endpoint
    /// (write and grant rights), signals the notification (write) — that can never receive.
    pub badge: u64,
    /// Name under which the component finds the capability; defaults to the channel's name.
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub size: u64,
    /// Physically contiguous, with its physical address told to every holder (for device DMA).
    pub dma: bool,
    pub maps: Vec<Mapping>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    pub component: String,
    pub name: String,
    pub writable: bool,
    /// Fixed virtual address (in [`FIXED_BASE`]..[`USER_TOP`]); `None` lets the root task place
    /// it from [`MAP_BASE`] up.
    pub vaddr: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoPortGrant {
    pub component: String,
    pub name: String,
    pub first: u16,
    pub last: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IrqSource {
    IoApic { ioapic: u8, pin: u8, level: bool, active_low: bool },
    Msi { bus: u8, dev: u8, func: u8, handle: u64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrqGrant {
    pub component: String,
    pub name: String,
    pub source: IrqSource,
    /// The notification (one the component holds) the interrupt is delivered to, and with which badge.
    pub notification: String,
    pub badge: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MmioGrant {
    pub component: String,
    pub name: String,
    pub paddr: u64,
    pub size: u64,
}

/// One component ELF carried in the image.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elf<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
}

/// What the root task embeds: the system and the ELFs of its components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Image<'a> {
    pub magic: u64,
    pub system: System,
    #[serde(borrow)]
    pub elfs: Vec<Elf<'a>>,
}

pub const IMAGE_MAGIC: u64 = 0x5345_4c34_494d_4731; // "SEL4IMG1"

impl<'a> Image<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<Self, &'static str> {
        let image: Image<'a> = postcard::from_bytes(bytes).map_err(|_| "malformed system image")?;
        if image.magic != IMAGE_MAGIC {
            return Err("system image has a wrong magic number");
        }
        Ok(image)
    }

    pub fn encode(&self) -> Result<Vec<u8>, &'static str> {
        postcard::to_allocvec(self).map_err(|_| "cannot encode system image")
    }

    pub fn elf(&self, component: &Component) -> Option<&'a [u8]> {
        self.elfs.iter().find(|e| e.name == component.bin).map(|e| e.bytes)
    }
}

/// The kind of a capability handed to a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CapKind {
    Endpoint,
    Notification,
    IrqHandler,
    IoPort,
    Tcb,
    CNode,
    VSpace,
    Frame,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapEntry {
    pub name: String,
    pub kind: CapKind,
    pub slot: u64,
    pub badge: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionEntry {
    pub name: String,
    pub vaddr: u64,
    pub size: u64,
    pub writable: bool,
    /// Physical address of the first byte (contiguous DMA regions and device memory only).
    pub paddr: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadEntry {
    pub name: String,
    /// The thread's TCB in the component's CSpace.
    pub tcb: u64,
    pub ipc_buffer: u64,
    pub stack_top: u64,
    pub priority: u8,
    pub core: u8,
    /// A notification only this thread waits on (blocking locks and wake-ups).
    pub wake: u64,
}

/// The typed start-up configuration every component receives (address in `rdi` at entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartInfo {
    pub name: String,
    pub id: u16,
    pub cnode: u64,
    pub cnode_size_bits: u8,
    pub vspace: u64,
    pub tcb: u64,
    /// The main thread's own notification (see [`ThreadEntry::wake`]).
    pub wake: u64,
    /// Empty slots in the component's own CNode, `[first, end)` (for SaveCaller and the like).
    pub free_slots: (u64, u64),
    pub caps: Vec<CapEntry>,
    pub regions: Vec<RegionEntry>,
    /// Extra threads (the main thread is not listed).
    pub threads: Vec<ThreadEntry>,
    pub ipc_buffer: u64,
    pub heap_base: u64,
    pub heap_size: u64,
    pub tsc_mhz: u64,
    pub num_nodes: u64,
    /// Fault endpoint (badged for this component) that the root task listens on; the runtime uses
    /// it only to report a clean exit.
    pub exit: u64,
    /// The component's settings from the system description.
    pub config: Vec<(String, String)>,
    /// When the system-wide console page is mapped at [`CONSOLE_VADDR`]: this component's own
    /// notification, which its threads block on while another component holds the console lock.
    pub console: Option<u64>,
    /// With `console`: a send-only capability that asks the root task to wake the console's
    /// waiters (signalled on releasing a contended lock).
    pub console_release: Option<u64>,
    /// Whether the component has a heartbeat: its health page is mapped at [`HEALTH_VADDR`].
    pub health: bool,
}

impl StartInfo {
    pub fn cap(&self, name: &str) -> Option<&CapEntry> {
        self.caps.iter().find(|c| c.name == name)
    }
    pub fn region(&self, name: &str) -> Option<&RegionEntry> {
        self.regions.iter().find(|r| r.name == name)
    }
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
    pub fn thread(&self, name: &str) -> Option<&ThreadEntry> {
        self.threads.iter().find(|t| t.name == name)
    }
}

/// Round `x` up to a multiple of [`PAGE_SIZE`].
pub const fn page_round_up(x: u64) -> u64 {
    (x + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The start-up page: a 24-byte header (body length u32, pad, heap base u64, heap size u64) then
/// the postcard body. The header lets the runtime set up its heap before decoding.
pub const START_HEADER: usize = 24;

impl StartInfo {
    /// Encodes the page the root task maps at [`START_INFO_VADDR`].
    pub fn to_page(&self) -> Result<Vec<u8>, &'static str> {
        let body = postcard::to_allocvec(self).map_err(|_| "cannot encode start-up configuration")?;
        if START_HEADER + body.len() > START_INFO_SIZE as usize {
            return Err("start-up configuration does not fit its page");
        }
        let mut page = Vec::with_capacity(START_HEADER + body.len());
        page.extend_from_slice(&(body.len() as u32).to_le_bytes());
        page.extend_from_slice(&[0; 4]);
        page.extend_from_slice(&self.heap_base.to_le_bytes());
        page.extend_from_slice(&self.heap_size.to_le_bytes());
        page.extend_from_slice(&body);
        Ok(page)
    }

    /// Reads the header: (heap base, heap size).
    pub fn page_heap(page: &[u8]) -> Option<(u64, u64)> {
        let word = |o: usize| Some(u64::from_le_bytes(page.get(o..o + 8)?.try_into().ok()?));
        Some((word(8)?, word(16)?))
    }

    /// Decodes the page (needs a heap).
    pub fn from_page(page: &[u8]) -> Result<StartInfo, &'static str> {
        let len = u32::from_le_bytes(page.get(0..4).ok_or("short page")?.try_into().map_err(|_| "short page")?);
        let body = page.get(START_HEADER..START_HEADER + len as usize).ok_or("start-up body out of bounds")?;
        postcard::from_bytes(body).map_err(|_| "malformed start-up configuration")
    }
}

/// The health page shared by the supervisor and a component with a heartbeat: little-endian
/// words. The supervisor writes [`health::PING`] and the injection request; the component
/// answers by copying the ping into [`health::PONG`], and acknowledges an injection by writing
/// its sequence number into [`health::TAKEN`] (and the TSC into [`health::INJECTED_AT`]) just
/// before it acts on it. The page outlives the instances, so the supervisor can still read what
/// a dead instance wrote; it clears the page before starting a new one.
pub mod health {
    /// Word index: ping sequence number (supervisor).
    pub const PING: usize = 0;
    /// Word index: the last ping answered (component).
    pub const PONG: usize = 1;
    /// Word index: injection request sequence number (supervisor; 0 = none).
    pub const INJECT_SEQ: usize = 2;
    /// Word index: the [`FaultKind`] requested.
    pub const INJECT_KIND: usize = 3;
    /// Word index: the injection sequence number the component acted on.
    pub const TAKEN: usize = 4;
    /// Word index: TSC when the component acted on it.
    pub const INJECTED_AT: usize = 5;
    /// Word index: the PCI function whose bus mastering the supervisor turns off when the
    /// component dies, as `1 + (bus << 8 | device << 3 | function)` (0: none).
    pub const PCI_DEVICE: usize = 6;

    /// The faults a component can be asked to commit.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(u64)]
    pub enum FaultKind {
        /// A bad memory access (page fault).
        Crash = 1,
        /// An illegal instruction.
        Illegal = 2,
        /// A Rust panic.
        Panic = 3,
        /// Stops answering pings and serving (spins).
        Hang = 4,
        /// Stops processing its transmit ring (still answers pings).
        StallTx = 5,
        /// Writes garbage indices or descriptors into a ring.
        Garbage = 6,
    }

    impl FaultKind {
        pub const ALL: [FaultKind; 6] =
            [FaultKind::Crash, FaultKind::Illegal, FaultKind::Panic, FaultKind::Hang, FaultKind::StallTx, FaultKind::Garbage];

        /// The word used on the control channel and in reports.
        pub const fn name(self) -> &'static str {
            match self {
                FaultKind::Crash => "crash",
                FaultKind::Illegal => "illegal",
                FaultKind::Panic => "panic",
                FaultKind::Hang => "hang",
                FaultKind::StallTx => "stall-tx",
                FaultKind::Garbage => "garbage",
            }
        }

        pub fn from_name(name: &str) -> Option<FaultKind> {
            FaultKind::ALL.into_iter().find(|k| k.name() == name)
        }

        pub fn from_word(w: u64) -> Option<FaultKind> {
            FaultKind::ALL.into_iter().find(|k| *k as u64 == w)
        }
    }
}

/// The supervisor's control channel on COM2: one command per line, one answer per line.
///
/// | command | answer |
/// |---|---|
/// | `inject <component> <kind>` (kind: [`health::FaultKind::name`]) | `ok <seq>` or `error <why>` |
/// | `restarts` | `restarts <component>=<n> ...` (components marked restart) |
pub mod control {
    use super::health::FaultKind;

    /// Longest command line accepted.
    pub const MAX_LINE: usize = 128;

    /// A parsed command.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Command<'a> {
        Inject { component: &'a str, kind: FaultKind },
        Restarts,
    }

    /// Parses one line (without its end of line); the error is the answer's text.
    pub fn parse(line: &str) -> Result<Command<'_>, &'static str> {
        let mut words = line.split_ascii_whitespace();
        let command = match words.next() {
            Some("inject") => {
                let component = words.next().ok_or("usage: inject <component> <kind>")?;
                let kind = words.next().ok_or("usage: inject <component> <kind>")?;
                let kind = FaultKind::from_name(kind).ok_or("kinds: crash illegal panic hang stall-tx garbage")?;
                Command::Inject { component, kind }
            }
            Some("restarts") => Command::Restarts,
            Some(_) => return Err("commands: inject <component> <kind>, restarts"),
            None => return Err("empty command"),
        };
        match words.next() {
            Some(_) => Err("too many words"),
            None => Ok(command),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn commands_parse_and_nonsense_gets_a_reason() {
            assert_eq!(parse("inject virtio-net stall-tx"), Ok(Command::Inject { component: "virtio-net", kind: FaultKind::StallTx }));
            assert_eq!(parse("  restarts "), Ok(Command::Restarts));
            assert!(parse("inject virtio-net").is_err());
            assert!(parse("inject virtio-net melt").unwrap_err().starts_with("kinds:"));
            assert!(parse("inject a crash extra").is_err());
            assert!(parse("reboot").is_err());
            assert!(parse("").is_err());
            for k in FaultKind::ALL {
                assert_eq!(FaultKind::from_name(k.name()), Some(k));
                assert_eq!(FaultKind::from_word(k as u64), Some(k));
            }
        }
    }
}

/// The restart log region: word 0 counts records ever written; record `n` (from 0) occupies
/// bytes `64 + (n % RECORDS) * 64 ..` of the first page. The supervisor writes the record, then
/// the count; a reader re-reads the count to detect a record overwritten while it read.
pub mod restart_log {
    /// Records kept (the first page holds them, after a 64-byte header).
    pub const RECORDS: u64 = 63;
    pub const RECORD_SIZE: usize = 64;
    /// Longest cause text kept.
    pub const CAUSE_LEN: usize = 16;
    /// Longest component name kept.
    pub const NAME_LEN: usize = 16;

    /// One restart.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Record {
        /// Index of the component in the system description.
        pub component: u32,
        /// That component's restart count, this one included.
        pub restart: u32,
        /// TSC of the fault: when an injected fault was committed, else when it was detected.
        pub fault_tsc: u64,
        /// TSC when the supervisor learnt of it.
        pub detected_tsc: u64,
        /// TSC when the new instance started running (0: the restart failed).
        pub running_tsc: u64,
        /// What happened, e.g. `crash`, `hang`, `page fault`, `reported faulty` (truncated).
        pub cause: [u8; CAUSE_LEN],
        /// The component's name (truncated).
        pub name: [u8; NAME_LEN],
    }

    fn text(bytes: &[u8]) -> &str {
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let mut n = len;
        // A torn or hostile record may end mid-character: keep the valid prefix.
        loop {
            if let Ok(s) = core::str::from_utf8(&bytes[..n]) {
                return s;
            }
            n -= 1;
        }
    }

    fn set_text(field: &mut [u8], text: &str) {
        field.fill(0);
        let mut n = text.len().min(field.len());
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        field[..n].copy_from_slice(&text.as_bytes()[..n]);
    }

    impl Record {
        pub fn cause_str(&self) -> &str {
            text(&self.cause)
        }

        pub fn set_cause(&mut self, cause: &str) {
            set_text(&mut self.cause, cause);
        }

        pub fn name_str(&self) -> &str {
            text(&self.name)
        }

        pub fn set_name(&mut self, name: &str) {
            set_text(&mut self.name, name);
        }

        pub fn encode(&self) -> [u8; RECORD_SIZE] {
            let mut b = [0u8; RECORD_SIZE];
            b[0..4].copy_from_slice(&self.component.to_le_bytes());
            b[4..8].copy_from_slice(&self.restart.to_le_bytes());
            b[8..16].copy_from_slice(&self.fault_tsc.to_le_bytes());
            b[16..24].copy_from_slice(&self.detected_tsc.to_le_bytes());
            b[24..32].copy_from_slice(&self.running_tsc.to_le_bytes());
            b[32..32 + CAUSE_LEN].copy_from_slice(&self.cause);
            b[48..48 + NAME_LEN].copy_from_slice(&self.name);
            b
        }

        pub fn decode(b: &[u8; RECORD_SIZE]) -> Record {
            let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            let u64_at = |o: usize| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b[o..o + 8]);
                u64::from_le_bytes(w)
            };
            let mut cause = [0u8; CAUSE_LEN];
            cause.copy_from_slice(&b[32..32 + CAUSE_LEN]);
            let mut name = [0u8; NAME_LEN];
            name.copy_from_slice(&b[48..48 + NAME_LEN]);
            Record { component: u32_at(0), restart: u32_at(4), fault_tsc: u64_at(8), detected_tsc: u64_at(16), running_tsc: u64_at(24), cause, name }
        }
    }

    /// Byte offset of record `n`.
    pub const fn offset(n: u64) -> usize {
        64 + (n % RECORDS) as usize * RECORD_SIZE
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_round_trip_and_causes_truncate_on_char_boundaries() {
            let mut r = Record { component: 3, restart: 7, fault_tsc: 1, detected_tsc: 2, running_tsc: 3, ..Record::default() };
            r.set_cause("reported faulty by `netserver`");
            r.set_name("virtio-net");
            assert_eq!(r.cause_str(), "reported faulty ");
            assert_eq!(r.name_str(), "virtio-net");
            assert_eq!(Record::decode(&r.encode()), r);
            r.set_cause("ééééééééé");
            assert_eq!(r.cause_str(), "éééééééé");
            // A record cut mid-character (torn, or written by someone hostile) still reads.
            let mut bytes = r.encode();
            bytes[32 + 15] = 0xC3;
            assert_eq!(Record::decode(&bytes).cause_str(), "ééééééé");
            assert!(offset(RECORDS - 1) + RECORD_SIZE <= 4096);
        }
    }
}
