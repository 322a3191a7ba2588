//! Touches memory it was never given; the root task must report it by name and keep the
//! rest of the system running. As `conhog` it misbehaves differently: it takes the console lock
//! that every component can write, never lets go, and keeps rewriting the word (so it never
//! looks the same twice); the others' lines must still get out.
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

/// Takes the console lock word without printing and keeps it: each time its console
/// notification wakes it (the root task wakes all waiters while the lock is taken), it writes a
/// new value, claiming to be another component every other time, and retakes a freed word.
#[allow(unsafe_code)]
fn hog_console(info: &StartInfo) {
    use core::sync::atomic::{AtomicU64, Ordering};
    // SAFETY: the root task maps the console page read-write here at CONSOLE_VADDR; the word
    // is aligned and only used atomically (misusing it on purpose is this component's job).
    let word = unsafe { &*(sysdesc::CONSOLE_VADDR as *const AtomicU64) };
    let me = (info.id as u64 + 1) << 1;
    let Some(console) = info.console else { return };
    let own: sel4::Cap<sel4::Notification> = sel4::Cap::from_cptr(console);
    for turn in 0u64.. {
        let claim = if turn % 2 == 0 { me } else { 0x3fe };
        word.store(claim | (turn & 1), Ordering::Release);
        own.wait();
    }
}
