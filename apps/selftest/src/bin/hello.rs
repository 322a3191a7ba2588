//! The smallest component: says hello with what it was given.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

fn main(info: &'static StartInfo) {
    println!(
        "hello: component {} with {} capabilities, {} regions, {} KiB heap",
        info.id,
        info.caps.len(),
        info.regions.len(),
        info.heap_size / 1024
    );
}
