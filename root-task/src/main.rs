//! The root task: reads the system description embedded in its image, creates every component
//! with exactly the capabilities the description grants, starts them, and then supervises:
//! every component thread's fault endpoint is the root task's, so a fault is reported here by
//! component and thread name while the rest of the system keeps running; components marked
//! `restart = true` are torn down and started afresh, with back-off.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

mod component;
mod grants;
mod objects;
mod vspace;
mod watch;

use ::alloc::vec::Vec;
use sel4::bootinfo::BootInfo;
use ::alloc::format;
use ::alloc::string::String;
use sel4::{init, Cap, Endpoint, Fault, Notification, ObjectType};
use sel4_rt::println;
use sel4_rt::window::FrameWindow;
use sysdesc::control::Command;
use sysdesc::health::{self, FaultKind};
use sysdesc::restart_log::{self, Record};
use sysdesc::{Image, System};

use crate::component::{decode_fault_badge, BuildError, Component};
use crate::grants::Objects;
use crate::objects::Memory;
use crate::watch::{Clock, Control, Heartbeat, Verdict};

static IMAGE: &[u8] = include_bytes!(env!("SYSTEM_IMAGE"));

sel4_rt::root_task_main!(main);

/// Everything the supervisor needs to rebuild a component.
struct Supervisor<'a> {
    image: Image<'a>,
    mem: Memory,
    window: FrameWindow,
    objects: Objects,
    console: objects::Object,
    fault_ep: u64,
    num_nodes: u64,
    tsc_mhz: u64,
    /// Per component: its pool and its restart history.
    slots: Vec<Slot>,
    components: Vec<Component>,
    /// The RTC's tick (always started; `None` only where it could not be).
    clock: Option<Clock>,
    control: Option<Control>,
    /// Per component with a heartbeat, while an instance runs.
    beats: Vec<Option<Heartbeat>>,
    /// Faults injected so far (the control channel's sequence numbers).
    injections: u64,
    /// Restarts torn down but backing off: built on the first clock tick after they are due.
    backing_off: Vec<PendingRestart>,
    /// TSC of the last death seen: memory is zeroed ahead of time only well after it.
    last_death: u64,
}

/// After a death the root task keeps off the CPU it shares with the restarting component for
/// this long: its console lines wait, and so does zeroing dead memory for the next restart.
const QUIET_MS: u64 = 300;

/// A component holding the console lock this long is taken to be stuck (or hostile): the lock
/// is freed so that the others' `println!` goes on. An honest line takes milliseconds.
const CONSOLE_HOLD_MS: u64 = 1000;

/// A restart between teardown and build.
struct PendingRestart {
    ci: usize,
    record: Record,
    /// When the supervisor noticed the death, when teardown began and ended (TSC).
    detected: u64,
    started: u64,
    ended: u64,
    stats: objects::Teardown,
    /// Build no earlier than this (TSC).
    due: u64,
}

struct Slot {
    pool: usize,
    restarts: u32,
    /// TSC of the last death, to tell a crash loop from an occasional fault.
    last_death: u64,
    /// Consecutive quick deaths: drives the back-off.
    streak: u32,
}

/// Back-off: a component that dies within this long of its last death counts as crash-looping.
const QUICK_DEATH_MS: u64 = 1000;
/// Delay before restarting after `streak` quick deaths: 0 for the first, then doubling, capped.
fn backoff_ms(streak: u32) -> u64 {
    match streak {
        0 => 0,
        n => (1u64 << (n - 1).min(10)).min(1000),
    }
}

fn main(bi: &BootInfo<'static>) -> ! {
    println!(
        "seL4 root task: {} core(s), TSC {} MHz, {} untypeds",
        bi.num_nodes(),
        bi.tsc_mhz(),
        bi.untyped().len()
    );
    let image = Image::decode(IMAGE).unwrap_or_else(|e| halt(e));
    let mut mem = Memory::new(bi);
    let mut own = vspace::VSpace::new(init::VSPACE);
    let window = vspace::frame_window(&mut mem, &mut own).unwrap_or_else(|e| halt_err("preparing the frame window", e));
    let fault_ep = mem.alloc_fixed(ObjectType::Endpoint).unwrap_or_else(|e| halt_err("creating the fault endpoint", e));
    let objects = Objects::create(&image.system, &mut mem).unwrap_or_else(|e| halt_build("shared objects", e));
    // The console page: its lock keeps lines printed at once on different cores whole.
    let console = mem.alloc_fixed(ObjectType::X86Page4K).unwrap_or_else(|e| halt_err("creating the console page", e));
    {
        let copy = mem.slot().unwrap_or_else(|e| halt_err("console page", e));
        let _ = init::CNODE.copy(copy, 64, init::CNODE, console.slot, 64, sel4::CapRights::ALL);
        if let Err(e) = sel4_rt::log::map_console_page(Cap::from_cptr(copy), init::VSPACE) {
            println!("console page not mapped ({e}); lines from different cores may interleave");
        }
    }

    // The supervisor's notification: bound, so signals end the same `Recv` as faults do.
    if let Err(e) = init::TCB.bind_notification(Cap::from_cptr(objects.supervisor)) {
        halt_err("binding the supervisor's notification", e);
    }
    // The clock paces heartbeats, restarts that back off and the control channel, and frees a
    // console lock a component keeps too long (every system has one).
    let clock = match Clock::start(&mut mem, objects.supervisor, image.system.irqs.len() as u64) {
        // The vector after the ones the description's interrupts use.
        Ok(c) => Some(c),
        Err(e) => halt_err("starting the supervisor's clock (RTC)", e),
    };
    let control = if image.system.supervisor.control_serial {
        let c = Control::probe();
        match c {
            Some(_) => println!("supervisor: control channel on COM2 (commands: inject <component> <kind>, restarts)"),
            None => println!("supervisor: no COM2; control channel off"),
        }
        c
    } else {
        None
    };
    let beats = image.system.components.iter().map(|_| None).collect();

    let mut sup = Supervisor {
        image,
        mem,
        window,
        objects,
        console,
        fault_ep: fault_ep.slot,
        num_nodes: bi.num_nodes(),
        tsc_mhz: bi.tsc_mhz(),
        slots: Vec::new(),
        components: Vec::new(),
        clock,
        control,
        beats,
        injections: 0,
        backing_off: Vec::new(),
        last_death: 0,
    };
    for index in 0..sup.image.system.components.len() {
        let desc = &sup.image.system.components[index];
        let elf = sup.image.elf(desc).unwrap_or_else(|| {
            println!("component `{}`: its ELF `{}` is not in the image", desc.name, desc.bin);
            halt("incomplete image")
        });
        let pool = sup
            .mem
            .new_pool(component::pool_bits(desc, elf))
            .unwrap_or_else(|e| halt_err("carving a component's memory", e));
        sup.slots.push(Slot { pool, restarts: 0, last_death: 0, streak: 0 });
        let c = sup.build(index).unwrap_or_else(|e| halt_build(&sup.image.system.components[index].name, e));
        sup.components.push(c);
    }
    for i in 0..sup.components.len() {
        sup.prepare_health(i);
        let (c, mem, window) = (&mut sup.components[i], &mut sup.mem, &mut sup.window);
        mem.enter(sup.slots[i].pool);
        let started = c.start(mem, window);
        mem.leave();
        if let Err(e) = started {
            halt_build(&c.name, e);
        }
    }
    println!("started {} components; {} KiB of memory left", sup.components.len(), sup.mem.free_bytes() / 1024);
    sup.supervise(fault_ep.cap())
}

impl Supervisor<'_> {
    fn system(&self) -> &System {
        &self.image.system
    }

    /// Creates a fresh instance of component `index` from its pool, with all its grants.
    fn build(&mut self, index: usize) -> Result<Component, BuildError> {
        let desc = &self.image.system.components[index];
        let elf = self.image.elf(desc).ok_or_else(|| BuildError("ELF missing from the image".into()))?;
        self.mem.enter(self.slots[index].pool);
        let result = Component::create(desc, index, elf, &mut self.mem, &mut self.window, self.fault_ep, self.num_nodes, self.tsc_mhz)
            .and_then(|mut c| grants::grant_to(&mut c, &self.image.system, &self.objects, &mut self.mem).map(|()| c))
            .and_then(|mut c| {
                let wake = c.map_console(&mut self.mem, &self.console, self.objects.supervisor)?;
                sel4_rt::log::set_console_waiter(c.info.id, Some(wake));
                Ok(c)
            });
        self.mem.leave();
        result
    }

    /// Waits on the fault endpoint forever, reporting faults and exits and restarting
    /// components that ask for it; between faults, keeps the clock, the heartbeats and the
    /// control channel.
    fn supervise(&mut self, fault_ep: Cap<Endpoint>) -> ! {
        loop {
            sel4_rt::log::flush_deferred();
            let (badge, info, regs) = fault_ep.recv();
            if badge & watch::NOTIFY != 0 {
                self.on_signal(badge);
                continue;
            }
            let Some((ci, ti)) = decode_fault_badge(badge) else {
                println!("message with unknown badge {badge:#x} on the fault endpoint ignored");
                continue;
            };
            let Some(c) = self.components.get_mut(ci) else {
                println!("fault from unknown component {ci} ignored");
                continue;
            };
            if !c.alive {
                // A second thread of a component already stopped: nothing more to do.
                continue;
            }
            let thread = c.thread_names.get(ti).cloned().unwrap_or_else(|| "?".into());
            if info.label() == sel4_rt::EXIT_LABEL {
                println!("component `{}` exited", c.name);
                c.stop();
                sel4_rt::log::release_if_held_by(ci as u16);
                self.beats[ci] = None;
                self.announce_death(ci);
                continue;
            }
            let fault = Fault::decode(info, |i| if i < 4 { regs[i] } else { sel4::ipc_buffer::mr(i) });
            let (what, short) = match fault {
                Fault::UnknownSyscall { syscall, .. } if syscall == sel4_rt::PANIC_SYSCALL => (format!("thread `{thread}` panicked"), "panic"),
                _ => (format!("thread `{thread}` faulted: {fault}"), fault.kind()),
            };
            self.died(ci, &what, short);
        }
    }

    /// A signal on the supervisor's notification: the clock, reports, or both.
    fn on_signal(&mut self, badge: u64) {
        for ci in watch::reported(badge) {
            if self.components.get(ci).is_some_and(|c| c.alive) {
                self.died(ci, "reported faulty by a component that depends on it", "reported faulty");
            }
        }
        if badge & watch::CONSOLE != 0 {
            sel4_rt::log::wake_console_waiters();
        }
        if badge & watch::TICK == 0 {
            return;
        }
        if let Some(clock) = &self.clock {
            clock.ack();
        }
        let now = sel4_rt::rdtsc();
        if let Some(word) = sel4_rt::log::supervise(now, CONSOLE_HOLD_MS * 1000 * self.tsc_mhz.max(1)) {
            let holder = (word >> 1).checked_sub(1).and_then(|id| self.components.get(id as usize)).map_or("?", |c| c.name.as_str());
            println!("the console lock was taken without a break for over {CONSOLE_HOLD_MS} ms (last by `{holder}`, says the lock word {word:#x}); freed");
        }
        let (due, waiting): (Vec<PendingRestart>, Vec<PendingRestart>) = self.backing_off.drain(..).partition(|t| now.wrapping_sub(t.due) as i64 >= 0);
        self.backing_off = waiting;
        for t in due {
            self.rebuild(t);
        }
        // Idle time well after the last death: zero the dead instances' memory now, so the
        // next restart's retypes need not (about 10 ms for the driver under TCG).
        let quiet = now.wrapping_sub(self.last_death) > QUIET_MS * 1000 * self.tsc_mhz.max(1);
        if quiet && self.backing_off.is_empty() && self.mem.needs_scrub() {
            if let Err(e) = self.mem.scrub() {
                println!("zeroing dead instances' memory ahead of time failed ({e}); the next restart zeroes it");
            }
        }
        if let Some(mut control) = self.control.take() {
            control.poll(|line| self.command(line));
            self.control = Some(control);
        }
        let now = sel4_rt::rdtsc();
        for ci in 0..self.components.len() {
            let (Some(beat), Some((frame, ping))) = (self.beats[ci].as_mut(), self.objects.health.get(&ci)) else { continue };
            let mhz = self.tsc_mhz.max(1);
            let verdict = self.window.with_frame(frame.cap(), |page| beat.check(page, now, mhz)).unwrap_or(Verdict::Fine);
            match verdict {
                Verdict::Fine => {}
                Verdict::Ping => Cap::<Notification>::from_cptr(*ping).signal(),
                Verdict::Hung(why) => {
                    let what = format!("is hung: {why} ({} ms)", self.system().components[ci].heartbeat.as_ref().map_or(0, |h| h.timeout_ms));
                    self.died(ci, &what, "hung");
                }
            }
        }
    }

    /// One control-channel command; returns the answer line.
    fn command(&mut self, line: &str) -> String {
        match sysdesc::control::parse(line) {
            Err(why) => format!("error {why}"),
            Ok(Command::Restarts) => {
                let mut answer = String::from("restarts");
                for (ci, d) in self.system().components.iter().enumerate().filter(|(_, d)| d.restart) {
                    answer.push_str(&format!(" {}={}", d.name, self.slots[ci].restarts));
                }
                answer
            }
            Ok(Command::Inject { component, kind }) => {
                let Some(ci) = self.components.iter().position(|c| c.name == component) else {
                    return format!("error no component `{component}`");
                };
                if !self.components[ci].alive {
                    return format!("error `{component}` is not running");
                }
                let Some(&(frame, ping)) = self.objects.health.get(&ci) else {
                    return format!("error `{component}` has no heartbeat, so no health page to ask through");
                };
                self.injections += 1;
                let seq = self.injections;
                let asked = self.window.with_frame(frame.cap(), |p| {
                    watch::set_word(p, health::INJECT_KIND, kind as u64);
                    watch::set_word(p, health::INJECT_SEQ, seq);
                });
                if let Err(e) = asked {
                    return format!("error cannot reach the health page: {e}");
                }
                Cap::<Notification>::from_cptr(ping).signal();
                println!("supervisor: asked `{component}` to commit fault #{seq}: {}", kind.name());
                format!("ok {seq}")
            }
        }
    }

    /// Clears component `ci`'s health page and arms its heartbeat, before an instance starts.
    fn prepare_health(&mut self, ci: usize) {
        let (Some(h), Some((frame, _))) = (self.image.system.components[ci].heartbeat.as_ref(), self.objects.health.get(&ci)) else {
            return;
        };
        let (timeout, now, mhz) = (h.timeout_ms, sel4_rt::rdtsc(), self.tsc_mhz.max(1));
        let beat = self.window.with_frame(frame.cap(), |page| {
            page.fill(0);
            Heartbeat::new(page, timeout, now, mhz)
        });
        match beat {
            Ok(b) => self.beats[ci] = Some(b),
            Err(e) => println!("component `{}`: health page not prepared ({e}); no heartbeat", self.components[ci].name),
        }
    }

    /// Component `ci` is dead (a fault, a hang, a report): stop it, stop its device's DMA, tell
    /// its servers, and restart it if it is marked so.
    fn died(&mut self, ci: usize, what: &str, short: &'static str) {
        let detected = sel4_rt::rdtsc();
        self.last_death = detected;
        // Held lines are printed on a later clock tick: only with a clock, and only for a
        // restart (a component left stopped is nothing to make way for).
        if self.system().components[ci].restart && self.clock.is_some() {
            sel4_rt::log::hold_output_until(detected + QUIET_MS * 1000 * self.tsc_mhz.max(1));
        }
        self.components[ci].stop();
        // Mid-line, it may hold the console lock everyone else waits for.
        sel4_rt::log::release_if_held_by(ci as u16);
        self.beats[ci] = None;
        // What the dead instance left in its health page: an injected fault it committed, and
        // the PCI function it drove.
        let left = self
            .objects
            .health_frame(ci)
            .and_then(|f| {
                self.window
                    .with_frame(f, |p| {
                        let taken = watch::word(p, health::TAKEN);
                        let injected = (taken != 0 && taken == watch::word(p, health::INJECT_SEQ))
                            .then(|| FaultKind::from_word(watch::word(p, health::INJECT_KIND)).map(|k| (k, watch::word(p, health::INJECTED_AT))))
                            .flatten();
                        (injected, watch::word(p, health::PCI_DEVICE))
                    })
                    .ok()
            })
            .unwrap_or((None, 0));
        let (injected, pci) = left;
        // The page is the component's to write: act on the function it names only if it could
        // reach every PCI function's configuration itself (holds the 0xCF8-0xCFF ports), so
        // that a component cannot make the root task stop another's device.
        let name = &self.system().components[ci].name;
        let owns_pci_config = self.system().io_ports.iter().any(|p| &p.component == name && p.first <= 0xCF8 && p.last >= 0xCFF);
        if pci != 0 && !owns_pci_config {
            println!("component `{name}` named a PCI function in its health page without holding the PCI configuration ports; ignored");
        }
        if pci != 0 && owns_pci_config {
            if let Err(e) = watch::quiesce_pci(pci - 1) {
                println!("component `{}`: could not stop its device's DMA: {e}", self.components[ci].name);
            }
        }
        self.announce_death(ci);
        let (cause, fault_tsc) = match injected {
            Some((kind, at)) if at != 0 && at <= detected => (kind.name(), at),
            Some((kind, _)) => (kind.name(), detected),
            None => (short, detected),
        };
        let what = match injected {
            Some((kind, _)) => format!("{what} (injected: {})", kind.name()),
            None => String::from(what),
        };
        if self.system().components[ci].restart {
            self.restart(ci, &what, cause, fault_tsc, detected);
        } else {
            println!("component `{}` {what}; component stopped", self.components[ci].name);
        }
    }

    /// Tells the servers of every endpoint the dead component held a badged copy of (those
    /// with `death_notices`) that this badge is gone, so they drop its state (sockets, ports).
    fn announce_death(&mut self, ci: usize) {
        let name = self.components[ci].name.clone();
        let mut notices: Vec<(::alloc::string::String, u64)> = Vec::new();
        for ep in &self.image.system.endpoints {
            let Some(region) = &ep.death_notices else { continue };
            for h in ep.holders.iter().filter(|h| h.component == name && h.badge != 0) {
                notices.push((region.clone(), h.badge));
            }
        }
        for (region, badge) in notices {
            let Some(frame) = self.objects.region_frame(&region) else { continue };
            let written = self.window.with_frame(frame, |page| {
                let word = |page: &[u8; 4096], i: usize| u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
                let count = word(page, 0);
                let at = 1 + (count % sysdesc::DEATH_NOTICES) as usize;
                page[at * 8..at * 8 + 8].copy_from_slice(&badge.to_le_bytes());
                // The count last: a reader that sees it sees the badge.
                core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
                page[..8].copy_from_slice(&(count + 1).to_le_bytes());
            });
            match written {
                Ok(()) => println!("told the server of `{region}` that badge {badge} (`{name}`) is gone"),
                Err(e) => println!("cannot write death notice to `{region}`: {e}"),
            }
        }
    }

    /// Tears component `ci` down completely and starts a fresh instance; records the restart.
    fn restart(&mut self, ci: usize, what: &str, cause: &str, fault_tsc: u64, detected: u64) {
        let now = detected;
        let mhz = self.tsc_mhz.max(1);
        let slot = &mut self.slots[ci];
        let since_ms = now.wrapping_sub(slot.last_death) / mhz / 1000;
        slot.streak = if slot.last_death != 0 && since_ms < QUICK_DEATH_MS { slot.streak + 1 } else { 0 };
        slot.last_death = now;
        slot.restarts += 1;
        let (restarts, delay) = (slot.restarts, backoff_ms(slot.streak));
        let name = self.components[ci].name.clone();
        println!("component `{name}` {what}; restart #{restarts} in {delay} ms");
        let mut record = Record { component: ci as u32, restart: restarts, fault_tsc, detected_tsc: detected, ..Record::default() };
        record.set_cause(cause);
        record.set_name(&self.components[ci].name);
        let t_down0 = sel4_rt::rdtsc();
        let down = match self.mem.reset_pool(self.slots[ci].pool) {
            Ok(t) => t,
            Err(e) => {
                println!("component `{name}`: teardown failed ({e}); left stopped");
                self.log_restart(&record);
                return;
            }
        };
        let t_down = sel4_rt::rdtsc();
        let torn = PendingRestart { ci, record, detected: now, started: t_down0, ended: t_down, stats: down, due: t_down + delay * 1000 * mhz };
        if delay > 0 && self.clock.is_some() {
            // Blocked meanwhile, so everyone else runs; the clock's ticks bring it back.
            self.backing_off.push(torn);
        } else {
            self.rebuild(torn);
        }
    }

    /// Builds and starts a fresh instance after a teardown; reports and logs the restart.
    fn rebuild(&mut self, torn: PendingRestart) {
        let PendingRestart { ci, mut record, detected: now, started: t_down0, ended: t_down, stats: down, .. } = torn;
        let mhz = self.tsc_mhz.max(1);
        let (name, restarts, fault_tsc) = (self.components[ci].name.clone(), record.restart, record.fault_tsc);
        let cause = String::from(record.cause_str());
        self.prepare_health(ci);
        let t_build = sel4_rt::rdtsc();
        self.mem.prof.retype_max_cycles = 0;
        let prof0 = self.mem.prof;
        let mut t_built = 0;
        let started = self.build(ci).and_then(|mut c| {
            t_built = sel4_rt::rdtsc();
            self.mem.enter(self.slots[ci].pool);
            let r = c.start(&mut self.mem, &mut self.window);
            self.mem.leave();
            r.map(|()| c)
        });
        match started {
            Ok(c) => {
                let running = c.running_since;
                record.running_tsc = running;
                println!(
                    "component `{name}` restarted (#{restarts}) in {} us (cause {cause}; {} us after the fault)",
                    running.wrapping_sub(now) / mhz,
                    running.wrapping_sub(fault_tsc) / mhz
                );
                let p = self.mem.prof;
                let us = |c: u64| c / mhz;
                println!(
                    "restart phases of `{name}`: detection to teardown {} us, teardown {} us (address space {} us, {} copies {} us, revoke of {} objects {} us; next memory {}), build {} us ({} retypes {} us, slowest {} us, {} maps {} us, {} window writes {} us), start {} us; {} root slots in use",
                    us(t_down0.wrapping_sub(now)),
                    us(t_down.wrapping_sub(t_down0)),
                    us(down.vspaces_cycles),
                    down.copies,
                    us(down.copies_cycles),
                    down.objects,
                    us(down.revoke_cycles),
                    if down.clean { "clean" } else { "dirty: zeroed by the first retype" },
                    us(t_built.wrapping_sub(t_build)),
                    p.retypes - prof0.retypes,
                    us(p.retype_cycles - prof0.retype_cycles),
                    us(p.retype_max_cycles),
                    p.maps - prof0.maps,
                    us(p.map_cycles - prof0.map_cycles),
                    p.window - prof0.window,
                    us(p.window_cycles - prof0.window_cycles),
                    us(running.wrapping_sub(t_built)),
                    down.slots_in_use,
                );
                self.components[ci] = c;
            }
            Err(e) => {
                self.beats[ci] = None;
                // The failed instance may have registered its console notification already.
                sel4_rt::log::set_console_waiter(ci as u16, None);
                println!("component `{name}`: restart failed: {}; left stopped", e.0);
            }
        }
        self.log_restart(&record);
    }

    /// Appends a record to the restart log region, if the description has one.
    fn log_restart(&mut self, record: &Record) {
        let Some(region) = self.image.system.supervisor.restart_log.as_ref() else { return };
        let Some(frame) = self.objects.region_frame(region) else { return };
        let bytes = record.encode();
        let _ = self.window.with_frame(frame, |page| {
            let n = watch::word(page, 0);
            let at = restart_log::offset(n);
            page[at..at + restart_log::RECORD_SIZE].copy_from_slice(&bytes);
            // The count last: a reader that sees it sees the record.
            core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
            watch::set_word(page, 0, n + 1);
        });
    }
}

fn halt_build(what: &str, e: BuildError) -> ! {
    println!("{what}: {}", e.0);
    halt("cannot build the system")
}

fn halt_err(what: &str, e: sel4::Error) -> ! {
    println!("{what}: {e}");
    halt("cannot build the system")
}

fn halt(why: &str) -> ! {
    println!("halting: {why}");
    sel4::syscall::debug_halt()
}
