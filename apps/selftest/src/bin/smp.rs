//! Two threads of one component on two cores: each reports the APIC id of the core it runs on
//! (CPUID leaf 1) and they hand a token back and forth through shared memory with no system
//! call, which only completes quickly when both truly run at the same time.
#![no_std]
#![no_main]
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

use sel4_rt::println;
use sel4_rt::StartInfo;

sel4_rt::component_main!(main);

static TOKEN: AtomicU64 = AtomicU64::new(0);
static WORKER_APIC: AtomicU64 = AtomicU64::new(u64::MAX);
const ROUNDS: u64 = 2_000;

fn apic_id() -> u64 {
    let r = core::arch::x86_64::__cpuid(1);
    (r.ebx >> 24) as u64
}

fn main(info: &'static StartInfo) {
    println!("main thread on APIC {} ({} cores)", apic_id(), info.num_nodes);
    sel4_rt::thread::spawn("worker", || {
        WORKER_APIC.store(apic_id(), SeqCst);
        println!("worker thread on APIC {}", apic_id());
        for i in 0..ROUNDS {
            while TOKEN.load(SeqCst) != 2 * i + 1 {
                core::hint::spin_loop();
            }
            TOKEN.store(2 * i + 2, SeqCst);
        }
    })
    .expect("thread `worker` is declared");
    let start = sel4_rt::rdtsc();
    for i in 0..ROUNDS {
        TOKEN.store(2 * i + 1, SeqCst);
        while TOKEN.load(SeqCst) != 2 * i + 2 {
            core::hint::spin_loop();
        }
    }
    let cycles = sel4_rt::rdtsc() - start;
    let (mine, worker) = (apic_id(), WORKER_APIC.load(SeqCst));
    println!("{ROUNDS} hand-offs in {} cycles; main on APIC {mine}, worker on APIC {worker}", cycles);
    if mine != worker && worker != u64::MAX {
        println!("TEST PASS: smp-two-cores");
    } else {
        println!("TEST FAIL: both threads ran on APIC {mine}");
    }
}
