//! Dies again and again so the supervisor rebuilds it many times (`lives`, default 50): each
//! life checks that it starts from fresh state, lives `life_ms` (default 1050 ms: longer than
//! the supervisor's crash-loop window, so restarts are not delayed by back-off), then faults.
//! A counter in a shared region (which outlives every instance) says which life this is.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

extern crate alloc;

use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::SeqCst;

use sel4_rt::println;
use sel4_rt::shared::SharedRegion;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

/// Zero in every fresh instance (the ELF's data is loaded afresh); set during each life.
static TOUCHED: AtomicU64 = AtomicU64::new(0);

fn main(info: &'static StartInfo) {
    let setting = |key: &str, default: u64| sel4_rt::config(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    let (lives, life_ms) = (setting("lives", 50), setting("life_ms", 1050));
    let memo = SharedRegion::named("memo").expect("region `memo` mapped");
    let counter = memo.atomic_u64_mut(0).expect("writable memo");
    let life = counter.fetch_add(1, SeqCst) + 1;
    if TOUCHED.swap(life, SeqCst) != 0 {
        println!("TEST FAIL: life {life} found the previous instance's data");
        return;
    }
    // The heap is mapped and usable (half of it is touched).
    let heap = alloc::vec![0u8; (info.heap_size / 2) as usize];
    let sum: u64 = heap.iter().map(|&b| b as u64).sum();
    if sum != 0 {
        println!("TEST FAIL: life {life}: heap not zero");
        return;
    }
    if life > lives {
        println!("TEST PASS: {} restarted {} times with fresh state", info.name, life - 1);
        return;
    }
    sel4_rt::spin_for_us(life_ms * 1000);
    touch_unmapped();
}

#[allow(unsafe_code)]
fn touch_unmapped() {
    // SAFETY: not safe on purpose; the access faults and the thread never continues.
    let v = unsafe { core::ptr::read_volatile(0x1800_0000 as *const u64) };
    println!("TEST FAIL: read {v:#x} from an unmapped page");
}
