//! Keeps working after another component faulted: it runs below the faulter's priority, so it
//! only gets the CPU once the faulter has faulted and been stopped.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

fn main(_info: &'static StartInfo) {
    let mut v = alloc_check();
    for round in 1..=3 {
        sel4_rt::spin_for_us(20_000);
        v = v.wrapping_mul(31).wrapping_add(round);
        println!("alive, round {round}");
    }
    println!("TEST PASS: survivor-after-fault ({v})");
}

fn alloc_check() -> u64 {
    extern crate alloc;
    let v: alloc::vec::Vec<u64> = (0..1000).collect();
    v.iter().sum()
}
