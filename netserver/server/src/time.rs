//! Time: the clock (TSC), sleeping with a deadline on a notification, and the timer thread that
//! turns the PIT's periodic interrupt into those deadlines.
//!
//! seL4 5.0 (non-MCS) has no timed wait, so a thread that wants "wake me on a signal or at time
//! T" ([`Sleeper::sleep`]) publishes T in its sleeper slot and blocks on its notification; the
//! timer thread, woken by every PIT tick, signals each sleeper whose deadline has passed. The
//! timer signals with its own badge (2, the `<name>.timer` grant), everyone else with [`BADGE_SIGNAL`], so
//! the sleeper knows whether it was signalled or timed out.
//!
//! No wake-up is lost: the deadline is stored *before* the thread blocks, and notifications are
//! sticky, so a tick that fires in between leaves the notification pending and the wait returns
//! at once. A stale tick (the sleeper already woke for another reason) costs one spurious
//! wake-up, which every caller tolerates.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use netserver_core::platform::Clock;
use netserver_core::wake::{Signal, Wait};
use sel4::{Cap, IrqHandler, Notification, X86IoPort};
use sel4_rt::println;

/// Badge of the capability everyone but the timer signals a sleeper with.
pub const BADGE_SIGNAL: u64 = 1;

/// PIT input clock (Hz).
const PIT_HZ: u32 = 1_193_182;
/// Tick period.
pub const TICK: Duration = Duration::from_millis(10);
const NO_DEADLINE: u64 = u64::MAX;

/// The monotonic clock: the TSC divided by its frequency (BootInfo's `tsc_mhz`).
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    mhz: u64,
}

impl TscClock {
    /// The clock; a TSC frequency of 0 (unknown) is taken as 1000 MHz and reported.
    pub fn new() -> Self {
        let mhz = sel4_rt::tsc_mhz();
        if mhz == 0 {
            println!("TSC frequency unknown; assuming 1000 MHz");
        }
        TscClock { mhz: if mhz == 0 { 1000 } else { mhz } }
    }
}

impl Clock for TscClock {
    fn now_micros(&self) -> u64 {
        sel4_rt::rdtsc() / self.mhz
    }
}

/// A notification some thread of this process blocks on, with a deadline the timer honours.
pub struct Sleeper {
    deadline: AtomicU64,
    /// Unbadged: the owner waits on it.
    wait: Cap<Notification>,
    /// Badge [`BADGE_SIGNAL`]: threads of this process signal with it (optional: the NIC's
    /// sleeper is signalled only by the driver, whose capability carries the same badge).
    signal: Option<Cap<Notification>>,
    /// Badge [`BADGE_TIMER`]: the timer signals with it.
    timer: Cap<Notification>,
    clock: TscClock,
}

impl Sleeper {
    /// The sleeper over the notification granted as `<prefix>` (wait), `<prefix>.signal`
    /// (badge 1, optional) and `<prefix>.timer` (badge 2).
    pub fn from_grants(name: &'static str, clock: TscClock) -> Result<Self, &'static str> {
        let get = |suffix: &str| -> Option<Cap<Notification>> {
            let mut full = alloc::string::String::from(name);
            full.push_str(suffix);
            sel4_rt::cap(&full)
        };
        Ok(Sleeper {
            deadline: AtomicU64::new(NO_DEADLINE),
            wait: get("").ok_or("notification missing")?,
            signal: get(".signal"),
            timer: get(".timer").ok_or("`.timer` capability missing")?,
            clock,
        })
    }

    /// Blocks until signalled or, with a timeout, until the first tick after it passed.
    /// Returns the badge bits that woke it ([`BADGE_SIGNAL`], the timer's 2, or both).
    pub fn sleep(&self, timeout: Option<Duration>) -> u64 {
        if let Some(t) = timeout {
            let t = u64::try_from(t.as_micros()).unwrap_or(NO_DEADLINE / 2);
            self.deadline.store(self.clock.now_micros().saturating_add(t), Ordering::SeqCst);
        }
        let badges = self.wait.wait();
        self.deadline.store(NO_DEADLINE, Ordering::SeqCst);
        badges
    }

    /// The capability threads of this process signal the owner with, as a [`Signal`].
    pub fn signaller(&self) -> Option<NotificationSignal> {
        self.signal.map(NotificationSignal)
    }

    /// Timer side: signal the owner if its deadline passed (once per deadline).
    fn expire(&self, now: u64) -> bool {
        let d = self.deadline.load(Ordering::SeqCst);
        if d <= now && self.deadline.compare_exchange(d, NO_DEADLINE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.timer.signal();
            return true;
        }
        false
    }

}

impl Signal for Sleeper {
    fn signal(&self) {
        if let Some(s) = self.signal {
            s.signal();
        }
    }
}

impl Wait for Sleeper {
    fn wait(&self, timeout: Option<Duration>) -> bool {
        self.sleep(timeout) & BADGE_SIGNAL != 0
    }
}

/// A notification capability as a [`Signal`]: the workers' signals inside the server core, and
/// the clients' wake-ups (a badged sending copy of the client's `net-wake`).
#[derive(Clone, Copy, Debug)]
pub struct NotificationSignal(pub Cap<Notification>);

impl Signal for NotificationSignal {
    fn signal(&self) {
        self.0.signal();
    }
}

/// Work run on every timer tick (set once, after the server exists): cheap checks only.
static TICK_HOOK: spin::Once<alloc::boxed::Box<dyn Fn() + Send + Sync>> = spin::Once::new();

/// Runs `hook` on every tick from now on (the first call wins).
pub fn on_tick(hook: impl Fn() + Send + Sync + 'static) {
    TICK_HOOK.call_once(|| alloc::boxed::Box::new(hook));
}

/// The timer: the PIT as a periodic interrupt, and the sleepers it serves.
pub struct Timer {
    ports: Cap<X86IoPort>,
    irq: Cap<IrqHandler>,
    ntfn: Cap<Notification>,
    sleepers: &'static [&'static Sleeper],
    clock: TscClock,
}

impl Timer {
    /// The timer over the grants `pit` (I/O ports 0x40..=0x43), `pit_irq` (IOAPIC pin 2, edge,
    /// active high) delivered to notification `timer`.
    pub fn from_grants(sleepers: &'static [&'static Sleeper], clock: TscClock) -> Result<Self, &'static str> {
        Ok(Timer {
            ports: sel4_rt::cap("pit").ok_or("io_port `pit` missing")?,
            irq: sel4_rt::cap("pit_irq").ok_or("irq `pit_irq` missing")?,
            ntfn: sel4_rt::cap("timer").ok_or("notification `timer` missing")?,
            sleepers,
            clock,
        })
    }

    /// Programs PIT channel 0 as a rate generator (mode 2) with period [`TICK`].
    fn program(&self) -> Result<(), sel4::Error> {
        let divisor = (u64::from(PIT_HZ) * TICK.as_micros() as u64 / 1_000_000).clamp(1, 0xffff);
        // Channel 0, access lobyte/hibyte, mode 2, binary.
        self.ports.out8(0x43, 0x34)?;
        self.ports.out8(0x40, divisor & 0xff)?;
        self.ports.out8(0x40, divisor >> 8)?;
        Ok(())
    }

    /// The timer thread's loop: on every tick, signal each sleeper whose deadline passed.
    pub fn run(self) -> ! {
        if let Err(e) = self.program() {
            println!("timer: cannot program the PIT: {e:?}; TCP timers only run while workers are busy");
        }
        let _ = self.irq.ack();
        let start = self.clock.now_micros();
        let mut ticks: u64 = 0;
        loop {
            self.ntfn.wait();
            let _ = self.irq.ack();
            ticks += 1;
            let now = self.clock.now_micros();
            for s in self.sleepers {
                s.expire(now);
            }
            if let Some(hook) = TICK_HOOK.get() {
                hook();
            }
            if ticks == 100 {
                let ms = now.saturating_sub(start) / 1000;
                println!("timer: 100 PIT ticks in {ms} ms (period {} ms)", TICK.as_millis());
            }
        }
    }
}
