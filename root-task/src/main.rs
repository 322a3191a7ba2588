//! The root task: reads the system description embedded in its image, creates every component
//! with exactly the capabilities the description grants, starts them, and then supervises:
//! every component thread's fault endpoint is the root task's, so a fault is reported here by
//! component and thread name while the rest of the system keeps running.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

mod objects;
mod component;
mod grants;
mod vspace;

use ::alloc::vec::Vec;
use sel4::bootinfo::BootInfo;
use sel4::{init, Cap, Endpoint, Fault, ObjectType};
use sel4_rt::println;
use sysdesc::Image;

use crate::objects::Memory;
use crate::component::{decode_fault_badge, Component};

static IMAGE: &[u8] = include_bytes!(env!("SYSTEM_IMAGE"));

sel4_rt::root_task_main!(main);

fn main(bi: &BootInfo<'static>) -> ! {
    println!(
        "seL4 root task: {} core(s), TSC {} MHz, {} untypeds",
        bi.num_nodes(),
        bi.tsc_mhz(),
        bi.untyped().len()
    );
    let image = match Image::decode(IMAGE) {
        Ok(image) => image,
        Err(e) => halt(e),
    };
    let mut mem = Memory::new(bi);
    let mut own = vspace::VSpace::new(init::VSPACE);
    let mut window = match vspace::frame_window(&mut mem, &mut own) {
        Ok(w) => w,
        Err(e) => halt_err("preparing the frame window", e),
    };
    let fault_ep = match mem.alloc_fixed(ObjectType::Endpoint) {
        Ok(o) => o,
        Err(e) => halt_err("creating the fault endpoint", e),
    };

    let mut components: Vec<Component> = Vec::new();
    for (index, desc) in image.system.components.iter().enumerate() {
        let Some(elf) = image.elf(desc) else {
            println!("component `{}`: its ELF `{}` is not in the image", desc.name, desc.bin);
            halt("incomplete image");
        };
        match Component::create(desc, index, elf, &mut mem, &mut window, fault_ep.slot, bi.num_nodes(), bi.tsc_mhz()) {
            Ok(c) => components.push(c),
            Err(e) => {
                println!("component `{}`: {}", desc.name, e.0);
                halt("cannot build the system");
            }
        }
    }
    if let Err(e) = grants::grant_all(&image.system, &mut components, &mut mem) {
        println!("{}", e.0);
        halt("cannot build the system");
    }
    for c in components.iter_mut() {
        if let Err(e) = c.start(&mut mem, &mut window) {
            println!("component `{}`: {}", c.name, e.0);
            halt("cannot start the system");
        }
    }
    println!(
        "started {} components; {} KiB of memory left",
        components.len(),
        mem.free_bytes() / 1024
    );
    supervise(fault_ep.cap(), &mut components)
}

/// Waits on the fault endpoint forever, reporting faults and exits.
fn supervise(fault_ep: Cap<Endpoint>, components: &mut [Component]) -> ! {
    loop {
        let (badge, info, regs) = fault_ep.recv();
        let Some((ci, ti)) = decode_fault_badge(badge) else {
            println!("message with unknown badge {badge:#x} on the fault endpoint ignored");
            continue;
        };
        let Some(c) = components.get_mut(ci) else {
            println!("fault from unknown component {ci} ignored");
            continue;
        };
        let thread = c.thread_names.get(ti).map(|s| s.as_str()).unwrap_or("?");
        if info.label() == sel4_rt::EXIT_LABEL {
            println!("component `{}` exited", c.name);
            c.stop();
            continue;
        }
        let fault = Fault::decode(info, |i| if i < 4 { regs[i] } else { sel4::ipc_buffer::mr(i) });
        match fault {
            Fault::UnknownSyscall { syscall, .. } if syscall == sel4_rt::PANIC_SYSCALL => {
                println!("component `{}` thread `{}` panicked; component stopped", c.name, thread);
            }
            _ => {
                println!("component `{}` thread `{}` faulted: {}; component stopped", c.name, thread, fault);
            }
        }
        c.stop();
    }
}

fn halt_err(what: &str, e: sel4::Error) -> ! {
    println!("{what}: {e}");
    halt("cannot build the system")
}

fn halt(why: &str) -> ! {
    println!("halting: {why}");
    sel4::syscall::debug_halt()
}
