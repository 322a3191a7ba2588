//! Entry points: `_start` for the first thread, `thread_entry` for extra threads.

use alloc::string::String;
use core::arch::global_asm;

use sel4::Cap;
use sysdesc::StartInfo;

use crate::sync::Once;

pub(crate) static START_INFO: Once<StartInfo> = Once::new();
pub(crate) static NAME: Once<String> = Once::new();

#[cfg(feature = "root-task")]
const ROOT_STACK_SIZE: usize = 256 * 1024;

#[cfg(feature = "root-task")]
#[repr(C, align(4096))]
struct RootStack([u8; ROOT_STACK_SIZE]);

/// The root task starts without a stack: `_start` points `rsp` at the top of this area.
#[cfg(feature = "root-task")]
#[no_mangle]
static mut __sel4_rt_root_stack: RootStack = RootStack([0; ROOT_STACK_SIZE]);

#[cfg(feature = "root-task")]
global_asm!(
    ".globl _start",
    "_start:",
    "lea rsp, [rip + {stack}]",
    "add rsp, {size}",
    "and rsp, -16",
    "xor rbp, rbp",
    "call {entry}",
    "ud2",
    stack = sym __sel4_rt_root_stack,
    size = const ROOT_STACK_SIZE,
    entry = sym root_start,
);

#[cfg(not(feature = "root-task"))]
global_asm!(
    ".globl _start",
    "_start:",
    "and rsp, -16",
    "xor rbp, rbp",
    "call {entry}",
    "ud2",
    entry = sym component_start,
);

// Extra threads: rdi = closure pointer, rsi = thread index (set by `thread::spawn`).
global_asm!(
    ".globl __sel4_rt_thread_entry",
    "__sel4_rt_thread_entry:",
    "and rsp, -16",
    "xor rbp, rbp",
    "call {entry}",
    "ud2",
    entry = sym crate::thread::thread_start,
);

#[cfg(feature = "root-task")]
extern "C" fn root_start(bootinfo: *const u8) -> ! {
    crate::heap::init_root();
    // SAFETY: the kernel passes the BootInfo page's address in rdi; it stays mapped, read-only
    // to us, for the root task's whole life.
    let bi = unsafe { sel4::bootinfo::BootInfo::from_ptr(bootinfo) };
    let Some(bi) = bi else {
        crate::log::write_str("[root] BootInfo is malformed\n");
        sel4::syscall::debug_halt();
    };
    extern "Rust" {
        fn __sel4_rt_root_main(bootinfo: &sel4::bootinfo::BootInfo<'static>) -> !;
    }
    // SAFETY: the root task defines this function with `root_task_main!`, with this signature.
    unsafe { __sel4_rt_root_main(&bi) }
}

#[cfg(not(feature = "root-task"))]
extern "C" fn component_start(start_info: *const u8) -> ! {
    // SAFETY: the root task maps START_INFO_SIZE readable bytes at the address it passes in
    // rdi, and nothing writes them afterwards.
    let page = unsafe { core::slice::from_raw_parts(start_info, sysdesc::START_INFO_SIZE as usize) };
    // The heap must exist before decoding (strings and vectors); its place is in the header.
    let (heap_base, heap_size) = StartInfo::page_heap(page).unwrap_or((0, 0));
    crate::heap::init(heap_base, heap_size);
    let info = match StartInfo::from_page(page) {
        Ok(info) => info,
        Err(e) => {
            crate::log::write_str("[?] ");
            crate::log::write_str(e);
            crate::log::write_str("\n");
            crate::fault_now();
        }
    };
    crate::sync::register_thread(0, info.wake);
    if let Some(wake) = info.console {
        crate::log::enable_shared_lock(wake, info.console_release.unwrap_or(0));
    }
    let info = START_INFO.call_once(|| info);
    NAME.call_once(|| info.name.clone());
    extern "Rust" {
        fn __sel4_rt_main(info: &'static StartInfo);
    }
    // SAFETY: the component defines this function with `component_main!`, with this signature.
    unsafe { __sel4_rt_main(info) };
    exit()
}

/// Ends the component: tells the root task (which tears it down) and stops this thread.
pub fn exit() -> ! {
    if let Some(info) = START_INFO.get() {
        let ep: Cap<sel4::Endpoint> = Cap::from_cptr(info.exit);
        ep.send(sel4::MessageInfo::new(crate::EXIT_LABEL, 0, 0, 0), [0; 4]);
        let tcb: Cap<sel4::Tcb> = Cap::from_cptr(info.tcb);
        let _ = tcb.suspend();
    }
    crate::fault_now()
}

