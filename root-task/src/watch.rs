//! What the supervisor learns besides faults: a clock to time heartbeats by, reports from
//! components that found another one faulty, and commands from the host.
//!
//! All of it arrives on one notification bound to the root task's thread, so the supervisor
//! still blocks in a single `Recv` on its fault endpoint: a fault message carries a fault badge
//! (`component::fault_badge`, below bit 26); a signal carries [`NOTIFY`] plus the bits that
//! fired — [`TICK`] from the clock, or bit `i` for "component `i` was reported faulty".
//!
//! * **Clock**: the CMOS real-time clock's periodic interrupt (128 Hz, IOAPIC pin 8).
//!   The net server owns the PIT; the RTC is the other timer every PC has, and needs nothing
//!   but two I/O ports and one pin.
//! * **Heartbeats** ([`Heartbeat`]): a ping is a new number in the component's health page
//!   plus a signal on its heartbeat notification; the answer is the number copied back.
//! * **Control channel** ([`Control`]): the second serial port, polled on each tick; commands
//!   and answers are lines (`sysdesc::control`).

use alloc::string::String;
use alloc::vec::Vec;

use sel4::{init, Cap, CapData, CapRights, Error, IrqHandler};
use sysdesc::health;

use crate::objects::Memory;

/// Set in every signal on the supervisor's notification; never in a fault badge.
pub const NOTIFY: u64 = 1 << 27;
/// The clock ticked.
pub const TICK: u64 = 1 << 26;
/// A component freed the console lock that others wait for: wake them.
pub const CONSOLE: u64 = 1 << 25;
/// Components that can be reported faulty: one bit each, below [`CONSOLE`].
const REPORTABLE: usize = sysdesc::MAX_REPORTABLE;

/// The badge of the capability that reports component `target` faulty.
pub fn report_badge(target: usize) -> Option<u64> {
    (target < REPORTABLE).then(|| NOTIFY | 1 << target)
}

/// The components reported faulty in a signal's badge.
pub fn reported(badge: u64) -> impl Iterator<Item = usize> {
    (0..REPORTABLE).filter(move |i| badge & (1 << i) != 0)
}

const RTC_INDEX: u16 = sysdesc::SUPERVISOR_CLOCK_PORTS.0;
const RTC_DATA: u16 = sysdesc::SUPERVISOR_CLOCK_PORTS.1;
/// Register A (rate), B (interrupt enables), C (interrupt flags, read to acknowledge); bit 7 of
/// the index keeps NMIs masked while we talk to the chip.
const RTC_A: u64 = 0x8A;
const RTC_B: u64 = 0x8B;
const RTC_C: u64 = 0x8C;
/// Periodic rate 9: 32768 >> (9 - 1) = 128 Hz ([`TICK_HZ`]).
const RTC_RATE: u64 = 9;
const RTC_PERIODIC: u64 = 1 << 6;
const RTC_PIN: u64 = sysdesc::SUPERVISOR_CLOCK_PIN as u64;

/// The RTC's periodic interrupt (128 Hz), delivered to the supervisor's notification as [`TICK`].
pub struct Clock {
    irq: Cap<IrqHandler>,
}

impl Clock {

    /// Programs the RTC and routes its interrupt (IOAPIC `RTC_PIN`, edge, active high, on
    /// `vector`) to `notification` with badge `NOTIFY | TICK`.
    pub fn start(mem: &mut Memory, notification: u64, vector: u64) -> Result<Clock, Error> {
        let handler = mem.slot()?;
        init::IRQ_CONTROL.get_ioapic(init::CNODE, handler, 64, 0, RTC_PIN, 0, 0, vector)?;
        let badged = mem.slot()?;
        let badge = CapData::badge(NOTIFY | TICK).ok_or(Error::InvalidArgument)?;
        init::CNODE.mint(badged, 64, init::CNODE, notification, 64, CapRights::ALL, badge)?;
        let irq: Cap<IrqHandler> = Cap::from_cptr(handler);
        irq.set_notification(Cap::from_cptr(badged))?;
        let io = init::IO_PORT;
        io.out8(RTC_INDEX as u64, RTC_A)?;
        let a = io.in8(RTC_DATA)?;
        io.out8(RTC_INDEX as u64, RTC_A)?;
        io.out8(RTC_DATA as u64, (a as u64 & 0xF0) | RTC_RATE)?;
        io.out8(RTC_INDEX as u64, RTC_B)?;
        let b = io.in8(RTC_DATA)?;
        io.out8(RTC_INDEX as u64, RTC_B)?;
        io.out8(RTC_DATA as u64, b as u64 | RTC_PERIODIC)?;
        let clock = Clock { irq };
        clock.ack();
        Ok(clock)
    }

    /// Acknowledges a tick: the chip (reading register C re-arms it) and the kernel.
    pub fn ack(&self) {
        let _ = init::IO_PORT.out8(RTC_INDEX as u64, RTC_C);
        let _ = init::IO_PORT.in8(RTC_DATA);
        let _ = self.irq.ack();
    }
}

/// COM2's registers.
const COM2: u16 = sysdesc::SUPERVISOR_SERIAL_PORTS.0;
const DATA: u16 = COM2;
const IER: u16 = COM2 + 1;
const FCR: u16 = COM2 + 2;
const LCR: u16 = COM2 + 3;
const MCR: u16 = COM2 + 4;
const LSR: u16 = COM2 + 5;
const SCRATCH: u16 = COM2 + 7;
const LSR_DATA_READY: u8 = 1;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Most bytes taken per tick (the chip's FIFO holds 16; a flood cannot hold the supervisor).
const READ_PER_TICK: usize = 64;

/// The control channel: line-based, polled, no interrupts.
pub struct Control {
    line: Vec<u8>,
    /// The current line grew past `MAX_LINE`: ignore it up to its end, then say so.
    overlong: bool,
}

impl Control {
    /// Finds COM2 (its scratch register keeps what is written) and sets it to 8N1, FIFOs on.
    pub fn probe() -> Option<Control> {
        let io = init::IO_PORT;
        io.out8(SCRATCH as u64, 0xA5).ok()?;
        if io.in8(SCRATCH).ok()? != 0xA5 {
            return None;
        }
        for (port, value) in [(IER, 0), (LCR, 0x03), (FCR, 0x07), (MCR, 0x03)] {
            io.out8(port as u64, value).ok()?;
        }
        Some(Control { line: Vec::new(), overlong: false })
    }

    /// Reads what has arrived; answers each complete line with `handle(line)`.
    pub fn poll(&mut self, mut handle: impl FnMut(&str) -> String) {
        let io = init::IO_PORT;
        for _ in 0..READ_PER_TICK {
            match io.in8(LSR) {
                Ok(lsr) if lsr & LSR_DATA_READY != 0 && lsr != 0xFF => {}
                _ => return,
            }
            let Ok(byte) = io.in8(DATA) else { return };
            match byte {
                b'\n' | b'\r' => {
                    let line = core::mem::take(&mut self.line);
                    let answer = if core::mem::take(&mut self.overlong) {
                        String::from("error line too long")
                    } else if line.is_empty() {
                        continue;
                    } else {
                        match core::str::from_utf8(&line) {
                            Ok(text) => handle(text),
                            Err(_) => String::from("error not text"),
                        }
                    };
                    self.write_line(&answer);
                }
                _ if self.line.len() >= sysdesc::control::MAX_LINE => self.overlong = true,
                _ => self.line.push(byte),
            }
        }
    }

    fn write_line(&self, text: &str) {
        for &b in text.as_bytes().iter().chain(b"\n") {
            // Bounded: a wedged port loses the answer rather than the supervisor.
            for _ in 0..10_000 {
                if init::IO_PORT.in8(LSR).is_ok_and(|l| l & LSR_THR_EMPTY != 0) {
                    break;
                }
            }
            let _ = init::IO_PORT.out8(DATA as u64, b as u64);
        }
    }
}

/// A component's heartbeat as the supervisor keeps it.
///
/// Time is counted twice, and a component is hung only when both say so: in TSC time, and in
/// clock ticks the supervisor handled. Under TCG on a loaded host the whole guest can stand
/// still for a while; TSC time runs on meanwhile, ticks handled do not (missed RTC ticks are
/// dropped), and each handled tick means the supervisor ran on its core and blocked again —
/// giving the component, if it was runnable, its turn.
pub struct Heartbeat {
    ping: u64,
    sent_at: u64,
    /// Ticks handled since the ping was sent (or since the start).
    ticks: u64,
    /// The component has answered once: from then on a late answer means hung.
    armed: bool,
    timeout: u64,
    timeout_ticks: u64,
}

/// What a check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// Signal the heartbeat notification: a new ping is in the page.
    Ping,
    Hung(&'static str),
}

/// How long a new instance may take to answer its first ping.
const START_GRACE_MS: u64 = 10_000;
/// The clock's rate (RTC rate 9).
pub const TICK_HZ: u64 = 128;

pub fn word(page: &[u8; 4096], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&page[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

pub fn set_word(page: &mut [u8; 4096], i: usize, v: u64) {
    page[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
}

impl Heartbeat {
    /// For a new instance whose page was just cleared: writes the first ping (the component
    /// answers it when its main loop first runs).
    pub fn new(page: &mut [u8; 4096], timeout_ms: u32, now: u64, tsc_mhz: u64) -> Heartbeat {
        set_word(page, health::PING, 1);
        let timeout_ms = timeout_ms as u64;
        Heartbeat {
            ping: 1,
            sent_at: now,
            ticks: 0,
            armed: false,
            timeout: timeout_ms * 1000 * tsc_mhz,
            timeout_ticks: (timeout_ms * TICK_HZ).div_ceil(1000).max(2),
        }
    }

    /// Called on every tick handled.
    pub fn check(&mut self, page: &mut [u8; 4096], now: u64, tsc_mhz: u64) -> Verdict {
        self.ticks += 1;
        let answered = word(page, health::PONG) == self.ping;
        let waited = now.wrapping_sub(self.sent_at);
        if !self.armed {
            let grace = START_GRACE_MS * 1000 * tsc_mhz;
            if answered {
                self.armed = true;
            } else if waited > grace && self.ticks > START_GRACE_MS * TICK_HZ / 1000 {
                return Verdict::Hung("never answered its first ping");
            } else {
                return Verdict::Fine;
            }
        }
        if !answered {
            let late = waited > self.timeout && self.ticks >= self.timeout_ticks;
            return if late { Verdict::Hung("missed its heartbeat") } else { Verdict::Fine };
        }
        if waited < self.timeout / 2 {
            return Verdict::Fine;
        }
        self.ping += 1;
        self.sent_at = now;
        self.ticks = 0;
        set_word(page, health::PING, self.ping);
        Verdict::Ping
    }
}

/// Turns bus mastering off for PCI function `bdf` (bus << 8 | device << 3 | function), so a
/// device whose driver died stops writing into memory until the next driver resets it.
pub fn quiesce_pci(bdf: u64) -> Result<(), Error> {
    let address = 0x8000_0000 | (bdf & 0xFFFF) << 8 | 0x04;
    let io = init::IO_PORT;
    io.out32(0xCF8, address)?;
    let command_status = io.in32(0xCFC)?;
    io.out32(0xCF8, address)?;
    // The status half is write-1-to-clear: write zeros there to leave it alone.
    io.out32(0xCFC, (command_status & 0xFFFF & !0x4) as u64)?;
    Ok(())
}
