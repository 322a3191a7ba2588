#![no_std]
#![no_main]
sel4_rt::component_main!(main);
fn main(_: &'static sel4_rt::StartInfo) {}
