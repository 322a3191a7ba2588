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

use ::alloc::vec::Vec;
use sel4::bootinfo::BootInfo;
use sel4::{init, Cap, Endpoint, Fault, ObjectType};
use sel4_rt::println;
use sel4_rt::window::FrameWindow;
use sysdesc::{Image, System};

use crate::component::{decode_fault_badge, BuildError, Component};
use crate::grants::Objects;
use crate::objects::Memory;

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
            .and_then(|mut c| c.map_console(&mut self.mem, &self.console).map(|()| c));
        self.mem.leave();
        result
    }

    /// Waits on the fault endpoint forever, reporting faults and exits and restarting
    /// components that ask for it.
    fn supervise(&mut self, fault_ep: Cap<Endpoint>) -> ! {
        loop {
            let (badge, info, regs) = fault_ep.recv();
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
            let cause = if info.label() == sel4_rt::EXIT_LABEL {
                println!("component `{}` exited", c.name);
                c.stop();
                self.announce_death(ci);
                continue;
            } else {
                let fault = Fault::decode(info, |i| if i < 4 { regs[i] } else { sel4::ipc_buffer::mr(i) });
                match fault {
                    Fault::UnknownSyscall { syscall, .. } if syscall == sel4_rt::PANIC_SYSCALL => {
                        ::alloc::format!("thread `{thread}` panicked")
                    }
                    _ => ::alloc::format!("thread `{thread}` faulted: {fault}"),
                }
            };
            c.stop();
            self.announce_death(ci);
            if self.system().components[ci].restart {
                self.restart(ci, &cause);
            } else {
                println!("component `{}` {cause}; component stopped", self.components[ci].name);
            }
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

    /// Tears component `ci` down completely and starts a fresh instance.
    fn restart(&mut self, ci: usize, cause: &str) {
        let now = sel4_rt::rdtsc();
        let mhz = self.tsc_mhz.max(1);
        let slot = &mut self.slots[ci];
        let since_ms = now.wrapping_sub(slot.last_death) / mhz / 1000;
        slot.streak = if slot.last_death != 0 && since_ms < QUICK_DEATH_MS { slot.streak + 1 } else { 0 };
        slot.last_death = now;
        slot.restarts += 1;
        let (restarts, delay) = (slot.restarts, backoff_ms(slot.streak));
        let name = self.components[ci].name.clone();
        println!("component `{name}` {cause}; restart #{restarts} in {delay} ms");
        if let Err(e) = self.mem.reset_pool(self.slots[ci].pool) {
            println!("component `{name}`: teardown failed ({e}); left stopped");
            return;
        }
        if delay > 0 {
            wait_ms(delay, mhz);
        }
        let started = self.build(ci).and_then(|mut c| {
            self.mem.enter(self.slots[ci].pool);
            let r = c.start(&mut self.mem, &mut self.window);
            self.mem.leave();
            r.map(|()| c)
        });
        match started {
            Ok(c) => {
                let us = sel4_rt::rdtsc().wrapping_sub(now) / mhz;
                println!("component `{name}` restarted (#{restarts}) in {} us", us);
                self.components[ci] = c;
            }
            Err(e) => println!("component `{name}`: restart failed: {}; left stopped", e.0),
        }
    }
}

/// Waits about `ms` milliseconds without holding the CPU: the root task drops to the lowest
/// priority meanwhile, so it only runs when nothing else wants to.
fn wait_ms(ms: u64, mhz: u64) {
    let start = sel4_rt::rdtsc();
    let _ = init::TCB.set_priority(1);
    while sel4_rt::rdtsc().wrapping_sub(start) < ms * 1000 * mhz {
        sel4::syscall::yield_now();
    }
    let _ = init::TCB.set_priority(255);
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
