//! Touches memory it was never given; the root task must report it by name and keep the
//! rest of the system running.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

/// An address no component is given (between the IPC buffers and the stacks).
const UNGRANTED: u64 = 0x1800_0000;

fn main(_info: &'static StartInfo) {
    println!("about to touch {UNGRANTED:#x}");
    touch(UNGRANTED);
    println!("TEST FAIL: still running after touching {UNGRANTED:#x}");
}

#[allow(unsafe_code)]
fn touch(addr: u64) {
    // SAFETY: not safe on purpose — this component exists to fault; the kernel stops the
    // thread on the access, so the value is never used.
    let v = unsafe { core::ptr::read_volatile(addr as *const u64) };
    println!("read {v:#x}");
}
