//! The user runtime every seL4 component (and the root task) links.
//!
//! - entry (`_start`) and stack set-up; components receive their [`StartInfo`] from the root
//!   task (address in `rdi`), the root task its BootInfo;
//! - a heap (talc) behind a blocking lock;
//! - `memcpy` & co. for `core`;
//! - a panic handler that prints the component's name and message, then faults with a
//!   recognisable "unknown syscall" so the supervisor notices and reports it as a panic;
//! - [`println!`]-style logging prefixed with the component's name, one line at a time;
//! - extra threads ([`thread::spawn`]) in the same address space, created by the root task as
//!   the system description says (own stack, IPC buffer, priority, core);
//! - [`sync::RawMutex`], a lock that spins briefly and then blocks on the waiting thread's own
//!   notification: seL4 schedules by strict priority, so a lock shared by threads of different
//!   priorities must never only spin.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod heap;
pub mod log;
mod mem;
mod start;
pub mod sync;
pub mod thread;
pub mod window;
pub mod shared;
pub mod health;

pub use sysdesc::StartInfo;

/// Syscall number the panic handler uses to fault; the root task reports it as a panic.
pub const PANIC_SYSCALL: u64 = 0x7061_6e69; // "pani"
/// Label of the message a component sends on its exit endpoint when `main` returns.
pub const EXIT_LABEL: u64 = 0x4558; // "EX"

/// Declares the component's `main`: `fn main(info: &'static StartInfo)`.
#[macro_export]
macro_rules! component_main {
    ($main:path) => {
        #[no_mangle]
        pub fn __sel4_rt_main(info: &'static $crate::StartInfo) {
            let main: fn(&'static $crate::StartInfo) = $main;
            main(info)
        }
    };
}

/// Declares the root task's `main`: `fn main(bootinfo: &BootInfo<'static>) -> !`.
#[macro_export]
macro_rules! root_task_main {
    ($main:path) => {
        #[no_mangle]
        pub fn __sel4_rt_root_main(bootinfo: &$crate::BootInfoRef) -> ! {
            let main: fn(&$crate::BootInfoRef) -> ! = $main;
            main(bootinfo)
        }
    };
}

pub type BootInfoRef = sel4::bootinfo::BootInfo<'static>;

/// This component's start-up configuration (components only).
pub fn start_info() -> Option<&'static StartInfo> {
    start::START_INFO.get()
}

/// This component's name, for logs.
pub fn name() -> &'static str {
    start::NAME.get().map(|s| s.as_str()).unwrap_or("root")
}

/// TSC ticks per microsecond (from BootInfo), 0 when unknown.
pub fn tsc_mhz() -> u64 {
    start_info().map(|i| i.tsc_mhz).unwrap_or(0)
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter and has no memory effects; it is allowed in user mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether the FPU is enabled for this thread right now (CR0.TS clear).
///
/// seL4 5.0 switches the FPU lazily: after a context switch it stays disabled unless the thread
/// it switched to owns the FPU state, and a thread that touches an FPU or SSE register while it
/// is disabled traps into the kernel, which moves the state over (thousands of cycles under
/// TCG). So, when another thread on this core used the FPU since this one last ran, "enabled"
/// means this thread has used the FPU (and paid the trap) since it was switched back in.
pub fn fpu_enabled() -> bool {
    let msw: u64;
    // SAFETY: smsw only reads the machine status word (the low bits of CR0) into a register; it
    // is allowed in user mode because seL4 does not set CR4.UMIP.
    unsafe { core::arch::asm!("smsw {0}", out(reg) msw, options(nomem, nostack, preserves_flags)) };
    msw & 8 == 0
}

/// Stops this thread with a fault the supervisor recognises as a panic (an unknown syscall
/// whose number is [`PANIC_SYSCALL`]).
pub fn fault_now() -> ! {
    loop {
        sel4::syscall::raw(PANIC_SYSCALL as i64, sel4::syscall::Regs::default());
    }
}

pub use start::exit;

/// Busy-waits for about `us` microseconds (TSC based; no timer needed).
pub fn spin_for_us(us: u64) {
    let mhz = tsc_mhz().max(1);
    let start = rdtsc();
    while rdtsc().wrapping_sub(start) < us * mhz {
        core::hint::spin_loop();
    }
}

/// Typed capability named `name` in the start-up configuration, if granted.
pub fn cap<T: sel4::CapType>(name: &str) -> Option<sel4::Cap<T>> {
    start_info()?.cap(name).map(|c| sel4::Cap::from_cptr(c.slot))
}

/// The setting `key` from the component's `config` table in the system description.
pub fn config(key: &str) -> Option<&'static str> {
    start_info()?.config(key)
}

/// The region named `name` in the start-up configuration (see [`shared::SharedRegion`]).
pub fn region(name: &str) -> Option<&'static sysdesc::RegionEntry> {
    start_info()?.region(name)
}
