//! Console output through the kernel's debug port, one whole line at a time, prefixed with the
//! component's name.
//!
//! Lines from different components are kept whole by a lock word on a page every component maps
//! writable ([`sysdesc::CONSOLE_VADDR`]). Every component can write that word, so the lock is
//! treated as advice, never as something a component may be kept waiting on for ever:
//!
//! * A waiter blocks on its **own** console notification (no component holds another's, so none
//!   can steal or redirect another's wake-ups) after marking the word contended.
//! * A releaser that finds the word contended signals the root task through a send-only
//!   capability; the root task wakes every component's console notification. It also does so on
//!   its clock ticks while the word is taken, and every 16th tick regardless.
//! * A waiter that has not had the lock after [`GIVE_UP_MS`] prints without it (its line may
//!   interleave), and the root task frees a word that has stayed taken for a second, whatever
//!   values it went through ([`supervise`]).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::sync::Mutex;

/// Serialises the threads of this component.
static CONSOLE: Mutex<()> = Mutex::new(());

/// This component's console notification, once the console page is mapped here (0: the root
/// task, which never blocks on the lock).
static SHARED: AtomicU64 = AtomicU64::new(NOT_MAPPED);
const NOT_MAPPED: u64 = u64::MAX;
/// The send-only capability that asks the root task to wake the console's waiters (0: none).
static RELEASE: AtomicU64 = AtomicU64::new(0);

/// A waiter that has not had the lock for this long prints without it.
pub const GIVE_UP_MS: u64 = 1000;

/// Starts using the system-wide console page (see [`sysdesc::CONSOLE_VADDR`]) and its lock,
/// blocking on `wake` (this component's own notification) when the lock is taken and signalling
/// `release` (a send-only capability to the root task) when it frees a contended lock.
pub(crate) fn enable_shared_lock(wake: u64, release: u64) {
    RELEASE.store(release, Ordering::SeqCst);
    SHARED.store(wake, Ordering::SeqCst);
}

/// Maps `frame` as the console page at [`sysdesc::CONSOLE_VADDR`] in `vspace` (the caller's
/// own) and starts using its lock. For the root task, which maps the page for everyone else.
pub fn map_console_page(frame: sel4::Cap<sel4::X86Page>, vspace: sel4::Cap<sel4::X64Pml4>) -> Result<(), sel4::Error> {
    frame.map(vspace.upcast(), sysdesc::CONSOLE_VADDR, sel4::CapRights::READ_WRITE, sel4::VmAttributes::DEFAULT)?;
    enable_shared_lock(0, 0);
    Ok(())
}

/// The lock word's owner for the root task (components use their id + 1).
const ROOT_OWNER: u64 = 0xFFFF;
/// Set in the lock word when someone blocked waiting for it: the holder asks for a wake-up on
/// release.
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

/// The console lock, held (or, after waiting too long, given up on) while a line is printed.
/// `owner << 1 | CONTENDED` in the word, 0 when free. Threads of different priorities share it,
/// so a waiter that cannot take it soon blocks (spinning would starve a lower-priority holder on
/// the same core). The root task never blocks on it (a holder could be starved by a hung
/// component that only the root task can restart): it defers its line instead
/// ([`flush_deferred`]).
struct SharedLine(Option<(&'static AtomicU64, u64)>);

impl SharedLine {
    /// Takes the lock; `None` when (the root task) it is taken. `Some(SharedLine(None))`: print
    /// without it (no console page, or waited [`GIVE_UP_MS`]).
    fn take() -> Option<SharedLine> {
        let wake = SHARED.load(Ordering::SeqCst);
        if wake == NOT_MAPPED {
            return Some(SharedLine(None));
        }
        let word = lock_word();
        let me = owner_id() << 1;
        for _ in 0..SPINS {
            if word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return Some(SharedLine(Some((word, me))));
            }
            core::hint::spin_loop();
        }
        if wake == 0 {
            return None;
        }
        let since = crate::rdtsc();
        let patience = GIVE_UP_MS * 1000 * crate::tsc_mhz().max(1);
        loop {
            let cur = word.load(Ordering::Acquire);
            if cur == 0 {
                // Whoever else waits stays known: take it marked contended.
                if word.compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return Some(SharedLine(Some((word, me))));
                }
                continue;
            }
            if cur & CONTENDED == 0 && word.compare_exchange(cur, cur | CONTENDED, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            if crate::rdtsc().wrapping_sub(since) > patience {
                return Some(SharedLine(None));
            }
            // Sticky: a wake-up between the marking and this wait makes it return at once.
            sel4::Cap::<sel4::Notification>::from_cptr(wake).wait();
        }
    }
}

impl Drop for SharedLine {
    fn drop(&mut self) {
        if let Some((word, me)) = self.0 {
            release(word, me);
        }
    }
}

/// Frees the lock if it is still `me`'s (the root task may have taken it back meanwhile).
fn release(word: &AtomicU64, me: u64) {
    let mut cur = word.load(Ordering::Acquire);
    while cur & !CONTENDED == me {
        match word.compare_exchange(cur, 0, Ordering::Release, Ordering::Acquire) {
            Ok(_) => {
                if cur & CONTENDED != 0 {
                    signal_waiters();
                }
                return;
            }
            Err(now) => cur = now,
        }
    }
}

fn signal_waiters() {
    #[cfg(feature = "root-task")]
    {
        wake_console_waiters();
    }
    #[cfg(not(feature = "root-task"))]
    {
        let release = RELEASE.load(Ordering::SeqCst);
        if release != 0 {
            sel4::Cap::<sel4::Notification>::from_cptr(release).signal();
        }
    }
}

/// Every live component's console notification, by component id (0: none). The root task's.
#[cfg(feature = "root-task")]
static WAITERS: spin::Mutex<[u64; 64]> = spin::Mutex::new([0; 64]);

/// Records (or, with `None`, forgets) component `id`'s console notification: a slot of the root
/// task's it may signal. Forget it before the object is destroyed.
#[cfg(feature = "root-task")]
pub fn set_console_waiter(id: u16, slot: Option<u64>) {
    if let Some(w) = WAITERS.lock().get_mut(usize::from(id)) {
        *w = slot.unwrap_or(0);
    }
}

/// Wakes every component's console notification (each waiter re-checks the lock).
#[cfg(feature = "root-task")]
pub fn wake_console_waiters() {
    for &slot in WAITERS.lock().iter().filter(|&&s| s != 0) {
        sel4::Cap::<sel4::Notification>::from_cptr(slot).signal();
    }
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
        // Wake the waiters even when none was marked: cheap, and a spurious wake only re-checks.
        wake_console_waiters();
    }
}

/// Since when (TSC) the console lock word has been taken without a break, and clock ticks seen.
#[cfg(feature = "root-task")]
static TAKEN: spin::Mutex<(Option<u64>, u64)> = spin::Mutex::new((None, 0));

/// The root task's console duty on every clock tick: wakes the waiters while the lock is taken
/// (and every 16th tick regardless, so that no waiter sleeps on a lost wake-up), and frees a lock
/// that has been taken without a break for `limit` TSC cycles — whatever values the word went
/// through, so a component rewriting it cannot keep it. Returns the word it freed.
#[cfg(feature = "root-task")]
pub fn supervise(now: u64, limit: u64) -> Option<u64> {
    if SHARED.load(Ordering::SeqCst) == NOT_MAPPED {
        return None;
    }
    let word = lock_word();
    let cur = word.load(Ordering::Acquire);
    let mut taken = TAKEN.lock();
    taken.1 += 1;
    if cur == 0 {
        taken.0 = None;
        if taken.1 % 16 == 0 {
            wake_console_waiters();
        }
        return None;
    }
    let since = *taken.0.get_or_insert(now);
    if now.wrapping_sub(since) < limit {
        wake_console_waiters();
        return None;
    }
    taken.0 = None;
    let freed = word.swap(0, Ordering::AcqRel);
    wake_console_waiters();
    Some(freed)
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
