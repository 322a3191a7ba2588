//! Touches memory it was never given; the root task must report it by name and keep the
//! rest of the system running. As `conhog` it misbehaves differently: it takes the console lock
//! that every component can write and never lets go; the root task must free it.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

/// An address no component is given (between the IPC buffers and the stacks).
const UNGRANTED: u64 = 0x1800_0000;

fn main(info: &'static StartInfo) {
    if info.name == "conhog" {
        hog_console(info);
        return;
    }
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

/// Takes the console lock word (owner = this component) without printing, then blocks forever.
#[allow(unsafe_code)]
fn hog_console(info: &StartInfo) {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: the root task maps the console page read-write here at CONSOLE_VADDR; the word
    // is aligned and only used atomically (misusing it on purpose is this component's job).
    let word = unsafe { &*(sysdesc::CONSOLE_VADDR as *const AtomicU64) };
    let me = (info.id as u64 + 1) << 1;
    while word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
        sel4::syscall::yield_now();
    }
    let own: sel4::Cap<sel4::Notification> = sel4::Cap::from_cptr(info.wake);
    loop {
        own.wait();
    }
}
