//! Console output through the kernel's debug port, one whole line at a time, prefixed with the
//! component's name.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::Mutex;

/// Serialises the threads of this component.
static CONSOLE: Mutex<()> = Mutex::new(());

/// The system-wide console lock's wake-up notification, once the console page is mapped here
/// (0: not mapped, or the root task, which never blocks on it).
static SHARED: AtomicU64 = AtomicU64::new(NOT_MAPPED);
const NOT_MAPPED: u64 = u64::MAX;

/// Starts using the system-wide console page (see [`sysdesc::CONSOLE_VADDR`]) and its lock,
/// blocking on `wake` when the lock is taken.
pub(crate) fn enable_shared_lock(wake: u64) {
    SHARED.store(wake, Ordering::SeqCst);
}

/// Maps `frame` as the console page at [`sysdesc::CONSOLE_VADDR`] in `vspace` (the caller's
/// own) and starts using its lock. For the root task, which maps the page for everyone else.
pub fn map_console_page(frame: sel4::Cap<sel4::X86Page>, vspace: sel4::Cap<sel4::X64Pml4>) -> Result<(), sel4::Error> {
    frame.map(vspace.upcast(), sysdesc::CONSOLE_VADDR, sel4::CapRights::READ_WRITE, sel4::VmAttributes::DEFAULT)?;
    enable_shared_lock(0);
    Ok(())
}

/// The lock word's owner for the root task (components use their id + 1).
const ROOT_OWNER: u64 = 0xFFFF;
/// Set in the lock word when someone blocked waiting for it: the holder signals on release.
const CONTENDED: u64 = 1;
const SPINS: u32 = 2_000;

fn lock_word() -> &'static AtomicU64 {
    // SAFETY: the root task maps the console page read-write at CONSOLE_VADDR in every
    // component (and itself) before the shared lock is enabled; the word is 8-aligned and
    // only ever accessed atomically.
    unsafe { &*(sysdesc::CONSOLE_VADDR as *const AtomicU64) }
}

fn owner_id() -> u64 {
    if cfg!(feature = "root-task") {
        ROOT_OWNER
    } else {
        crate::start_info().map_or(ROOT_OWNER - 1, |i| i.id as u64 + 1)
    }
}

/// Serialises whole lines across components and cores through word 0 of the console page:
/// `owner << 1 | CONTENDED`, 0 when free. Threads of different priorities share it, so a
/// component that cannot take it soon blocks on the shared console notification (spinning
/// would starve a lower-priority holder on the same core); the holder signals it on release
/// when the word says someone waits. The root task never blocks on it (a holder could be
/// starved by a hung component that only the root task can restart): it defers its line
/// instead ([`flush_deferred`]). A component that dies holding the lock is released by the
/// root task ([`release_if_held_by`]).
struct SharedLine(Option<&'static AtomicU64>);

impl SharedLine {
    /// Takes the lock; `None` when there is no console page or (the root task) it is taken.
    fn take() -> Option<SharedLine> {
        let wake = SHARED.load(Ordering::SeqCst);
        if wake == NOT_MAPPED {
            return Some(SharedLine(None));
        }
        let word = lock_word();
        let me = owner_id() << 1;
        for _ in 0..SPINS {
            if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Some(SharedLine(Some(word)));
            }
            core::hint::spin_loop();
        }
        if wake == 0 {
            return None;
        }
        loop {
            let cur = word.load(Ordering::Acquire);
            if cur == 0 {
                // Whoever else waits stays known: take it marked contended.
                if word.compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Some(SharedLine(Some(word)));
                }
                continue;
            }
            if cur & CONTENDED == 0 && word.compare_exchange(cur, cur | CONTENDED, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            // Sticky: a release between the marking and this wait makes it return at once.
            sel4::Cap::<sel4::Notification>::from_cptr(wake).wait();
        }
    }
}

impl Drop for SharedLine {
    fn drop(&mut self) {
        if let Some(word) = self.0 {
            release(word);
        }
    }
}

fn release(word: &AtomicU64) {
    if word.swap(0, Ordering::Release) & CONTENDED != 0 {
        signal_waiters();
    }
}

fn signal_waiters() {
    #[cfg(feature = "root-task")]
    if let Some(wake) = ROOT_CONSOLE_WAKE.get() {
        sel4::Cap::<sel4::Notification>::from_cptr(*wake).signal();
        return;
    }
    let wake = SHARED.load(Ordering::SeqCst);
    if wake != 0 && wake != NOT_MAPPED {
        sel4::Cap::<sel4::Notification>::from_cptr(wake).signal();
    }
}

/// The root task's copy of the console notification, which it only signals.
#[cfg(feature = "root-task")]
static ROOT_CONSOLE_WAKE: spin::Once<u64> = spin::Once::new();

/// Tells the root task's runtime the console notification it signals when it releases the
/// lock to a waiter (or frees a dead holder's).
#[cfg(feature = "root-task")]
pub fn set_console_wake(wake: u64) {
    ROOT_CONSOLE_WAKE.call_once(|| wake);
}

/// Frees the console lock if component `id` (as in its start-up configuration) holds it:
/// for the root task, when that component faults or is torn down mid-line.
#[cfg(feature = "root-task")]
pub fn release_if_held_by(id: u16) {
    if SHARED.load(Ordering::SeqCst) == NOT_MAPPED {
        return;
    }
    let word = lock_word();
    let cur = word.load(Ordering::Acquire);
    if cur >> 1 == id as u64 + 1 && word.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
        // Wake a waiter even when none was marked: cheap, and a spurious wake only re-checks.
        signal_waiters();
    }
}

/// The console lock word last seen by [`reclaim_stuck_lock`] and the TSC when it was first seen.
#[cfg(feature = "root-task")]
static SEEN: spin::Mutex<(u64, u64)> = spin::Mutex::new((0, 0));

/// Frees the console lock if the same holder has kept it for `limit` TSC cycles, and wakes its
/// waiters; returns the word it found (owner id + 1, shifted left by one). The root task calls
/// it on every clock tick: every component can write the console page, so a buggy or hostile
/// one could otherwise keep the lock and leave every other component blocked in `println!`.
/// An honest line takes milliseconds; a freed holder only risks its line interleaving.
#[cfg(feature = "root-task")]
pub fn reclaim_stuck_lock(now: u64, limit: u64) -> Option<u64> {
    if SHARED.load(Ordering::SeqCst) == NOT_MAPPED {
        return None;
    }
    let word = lock_word();
    let cur = word.load(Ordering::Acquire);
    let mut seen = SEEN.lock();
    if cur == 0 || cur != seen.0 {
        *seen = (cur, now);
        return None;
    }
    if now.wrapping_sub(seen.1) < limit || word.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return None;
    }
    *seen = (0, now);
    signal_waiters();
    Some(cur)
}

/// Lines the root task could not print at once (the lock was held), printed by
/// [`flush_deferred`] in their order.
#[cfg(feature = "root-task")]
static DEFERRED: spin::Mutex<Deferred> = spin::Mutex::new(Deferred { buf: [0; 16384], len: 0, lost: 0 });

#[cfg(feature = "root-task")]
struct Deferred {
    buf: [u8; 16384],
    len: usize,
    lost: u64,
}

/// Until this TSC the root task only defers its lines (see [`hold_output_until`]).
#[cfg(feature = "root-task")]
static HOLD_UNTIL: AtomicU64 = AtomicU64::new(0);

/// Makes the root task defer its console lines until TSC `until`. Printing is slow (one kernel
/// call and one emulated UART write per byte, tens of µs each under TCG) and the root task
/// prints at the highest priority, so lines printed while a restarted component starts up
/// would delay it by milliseconds each.
#[cfg(feature = "root-task")]
pub fn hold_output_until(until: u64) {
    HOLD_UNTIL.fetch_max(until, Ordering::SeqCst);
}

#[cfg(feature = "root-task")]
fn holding() -> bool {
    (crate::rdtsc().wrapping_sub(HOLD_UNTIL.load(Ordering::SeqCst)) as i64) < 0
}

/// Prints the root task's deferred lines if the console lock can be had now (and output is not
/// held back). The root task calls it each time it wakes.
#[cfg(feature = "root-task")]
pub fn flush_deferred() {
    let mut d = DEFERRED.lock();
    if (d.len == 0 && d.lost == 0) || holding() {
        return;
    }
    let Some(_shared) = SharedLine::take() else { return };
    for &b in &d.buf[..d.len] {
        sel4::syscall::debug_put_char(b);
    }
    d.len = 0;
    if d.lost > 0 {
        let mut line = Line::<256>::new(false);
        let _ = writeln!(line, "[{}] ({} console lines lost while the console was busy)", crate::name(), d.lost);
        line.flush();
        d.lost = 0;
    }
}

/// Writes raw text (no prefix, no lock): for early start-up and fault paths.
pub fn write_str(s: &str) {
    for b in s.bytes() {
        sel4::syscall::debug_put_char(b);
    }
}

/// A line being formatted. Components print it in pieces when it outgrows the buffer (they hold
/// the console lock meanwhile); the root task formats before it knows whether it may print, so
/// it cuts the line instead.
struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
    cut: bool,
}

impl<const N: usize> Line<N> {
    const fn new(cut: bool) -> Self {
        Line { buf: [0; N], len: 0, cut }
    }
}

impl<const N: usize> Line<N> {
    fn flush(&mut self) {
        for &b in &self.buf[..self.len] {
            sel4::syscall::debug_put_char(b);
        }
        self.len = 0;
    }
}

impl<const N: usize> Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == N {
                if self.cut {
                    self.buf[N - 1] = b'\n';
                    return Err(fmt::Error);
                }
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Prints `[name] <args>\n` as one unit.
pub fn print_line(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE.lock();
    #[cfg(feature = "root-task")]
    {
        let mut line = Line::<1024>::new(true);
        let _ = writeln!(line, "[{}] {}", crate::name(), args);
        let mut d = DEFERRED.lock();
        let shared = if d.len == 0 && !holding() { SharedLine::take() } else { None };
        if shared.is_none() {
            // Taken (or earlier lines still wait): keep the order, print later.
            if d.len + line.len <= d.buf.len() {
                let at = d.len;
                d.buf[at..at + line.len].copy_from_slice(&line.buf[..line.len]);
                d.len += line.len;
            } else {
                d.lost += 1;
            }
            drop(d);
            flush_deferred();
            return;
        }
        line.flush();
        return;
    }
    #[allow(unreachable_code)]
    {
        let _shared = SharedLine::take();
        let mut line = Line::<256>::new(false);
        let _ = writeln!(line, "[{}] {}", crate::name(), args);
        line.flush();
    }
}

/// Prints a line prefixed with the component's name.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::log::print_line(format_args!($($arg)*)) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // No lock: the panicking thread may hold the console lock.
    let mut line = Line::<256>::new(false);
    let _ = writeln!(line, "[{}] panicked: {}", crate::name(), info);
    line.flush();
    crate::fault_now()
}
