//! Dies on purpose, in a different way each time, until the supervisor has restarted it three
//! times. A counter in a shared region (which outlives every instance) says which life this is.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::Ordering::SeqCst;

use sel4_rt::println;
use sel4_rt::shared::SharedRegion;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

fn main(_info: &'static StartInfo) {
    let memo = SharedRegion::named("memo").expect("region `memo` mapped");
    let lives = memo.atomic_u64_mut(0).expect("writable memo");
    let life = lives.fetch_add(1, SeqCst) + 1;
    println!("life {life}");
    match life {
        1 => touch_unmapped(),
        2 => illegal_instruction(),
        3 => privileged_instruction(),
        _ => println!("TEST PASS: crasher restarted {} times with fresh state", life - 1),
    }
}

#[allow(unsafe_code)]
fn touch_unmapped() {
    // SAFETY: not safe on purpose; the access faults and the thread never continues.
    let v = unsafe { core::ptr::read_volatile(0x1800_0000 as *const u64) };
    println!("TEST FAIL: read {v:#x} from an unmapped page");
}

#[allow(unsafe_code)]
fn illegal_instruction() {
    // SAFETY: ud2 raises #UD; the thread never continues.
    unsafe { core::arch::asm!("ud2") };
    println!("TEST FAIL: survived ud2");
}

#[allow(unsafe_code)]
fn privileged_instruction() {
    // SAFETY: hlt in user mode raises #GP; the thread never continues.
    unsafe { core::arch::asm!("hlt") };
    println!("TEST FAIL: survived hlt");
}
