//! The component's side of supervision: answering the supervisor's heartbeat, and committing
//! the faults the supervisor asks for (fault injection, for testing recovery).
//!
//! Only components whose description has a `heartbeat` get a health page (layout:
//! [`sysdesc::health`]); for the others every function here does nothing. A component calls
//! [`beat`] each time round its main loop (the supervisor's ping wakes it through the
//! heartbeat notification) and acts on what it returns.

use core::sync::atomic::{AtomicU64, Ordering};

use sysdesc::health;
pub use sysdesc::health::FaultKind;

fn page() -> Option<&'static [AtomicU64; 512]> {
    if !crate::start_info().is_some_and(|i| i.health) {
        return None;
    }
    // SAFETY: the root task maps the health page (4 KiB, read-write, page aligned) at
    // HEALTH_VADDR for the whole life of every component whose StartInfo says `health`; it is
    // only ever accessed as atomic words, by us and by the supervisor.
    Some(unsafe { &*(sysdesc::HEALTH_VADDR as *const [AtomicU64; 512]) })
}

/// Answers a pending ping, and returns a fault the supervisor asked for and not yet taken (it
/// is marked taken, with the time, before it is returned: the caller must commit it now).
pub fn beat() -> Option<FaultKind> {
    let p = page()?;
    p[health::PONG].store(p[health::PING].load(Ordering::Acquire), Ordering::Release);
    let seq = p[health::INJECT_SEQ].load(Ordering::Acquire);
    if seq == 0 || p[health::TAKEN].load(Ordering::Relaxed) == seq {
        return None;
    }
    let kind = FaultKind::from_word(p[health::INJECT_KIND].load(Ordering::Relaxed));
    p[health::INJECTED_AT].store(crate::rdtsc(), Ordering::Relaxed);
    p[health::TAKEN].store(seq, Ordering::Release);
    kind
}

/// Records the PCI function this component drives, so the supervisor can stop its DMA when the
/// component dies (bus mastering off) before a new instance resets it.
pub fn set_pci_device(bus: u8, device: u8, function: u8) {
    if let Some(p) = page() {
        let bdf = (bus as u64) << 8 | ((device as u64) & 0x1f) << 3 | (function as u64 & 7);
        p[health::PCI_DEVICE].store(bdf + 1, Ordering::Release);
    }
}

/// Commits one of the faults that need no cooperation from the component's logic: a bad memory
/// access, an illegal instruction, a panic, or a hang (spinning forever, never answering a ping
/// again). Returns the kinds it cannot commit itself (`StallTx`, `Garbage`).
pub fn commit(kind: FaultKind) -> FaultKind {
    match kind {
        FaultKind::Crash => {
            // An address below the image, never mapped (page zero).
            let bad = 0x10 as *mut u64;
            // SAFETY: deliberately faulting: the write traps (nothing is mapped at page zero in
            // any component) and the supervisor stops this thread; it never completes.
            unsafe { core::ptr::write_volatile(bad, 0xdead) };
            crate::fault_now()
        }
        FaultKind::Illegal => {
            // SAFETY: `ud2` raises #UD; the kernel reports it to the supervisor as a user
            // exception and this thread never runs on.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack, noreturn)) }
        }
        FaultKind::Panic => panic!("fault injected on the supervisor's request"),
        FaultKind::Hang => loop {
            core::hint::spin_loop();
        },
        other => other,
    }
}
