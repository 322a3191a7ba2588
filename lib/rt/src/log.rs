//! Console output through the kernel's debug port, one whole line at a time, prefixed with the
//! component's name.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::sync::Mutex;

/// Serialises the threads of this component.
static CONSOLE: Mutex<()> = Mutex::new(());

/// Whether the system-wide console page (see [`sysdesc::CONSOLE_VADDR`]) is mapped here.
static SHARED_LOCK: AtomicBool = AtomicBool::new(false);

/// Marks the system-wide console page as mapped (the root task maps it into every component
/// and says so in the start-up configuration).
pub(crate) fn enable_shared_lock() {
    SHARED_LOCK.store(true, Ordering::SeqCst);
}

/// Maps `frame` as the console page at [`sysdesc::CONSOLE_VADDR`] in `vspace` (the caller's
/// own) and starts using its lock. For the root task, which maps the page for everyone else.
pub fn map_console_page(frame: sel4::Cap<sel4::X86Page>, vspace: sel4::Cap<sel4::X64Pml4>) -> Result<(), sel4::Error> {
    frame.map(vspace.upcast(), sysdesc::CONSOLE_VADDR, sel4::CapRights::READ_WRITE, sel4::VmAttributes::DEFAULT)?;
    enable_shared_lock();
    Ok(())
}

/// Serialises whole lines across components and cores through word 0 of the console page.
/// Only ever held for the few microseconds a line takes to print, and given up after a bounded
/// spin (a holder preempted by a higher-priority thread on its core must not stall the
/// printer forever): a rare interleaved line is better than a stuck system.
struct SharedLine(Option<&'static AtomicU64>);

impl SharedLine {
    fn take() -> SharedLine {
        if !SHARED_LOCK.load(Ordering::SeqCst) {
            return SharedLine(None);
        }
        // SAFETY: the root task maps the console page read-write at CONSOLE_VADDR in every
        // component (and itself) before `enable_shared_lock` is called; the word is 8-aligned
        // and only ever accessed atomically.
        let word = unsafe { &*(sysdesc::CONSOLE_VADDR as *const AtomicU64) };
        for _ in 0..200_000 {
            if word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return SharedLine(Some(word));
            }
            core::hint::spin_loop();
        }
        SharedLine(None)
    }
}

impl Drop for SharedLine {
    fn drop(&mut self) {
        if let Some(word) = self.0 {
            word.store(0, Ordering::Release);
        }
    }
}

/// Writes raw text (no prefix, no lock): for early start-up and fault paths.
pub fn write_str(s: &str) {
    for b in s.bytes() {
        sel4::syscall::debug_put_char(b);
    }
}

struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        for &b in &self.buf[..self.len] {
            sel4::syscall::debug_put_char(b);
        }
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
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
    let _shared = SharedLine::take();
    let mut line = Line { buf: [0; 256], len: 0 };
    let _ = writeln!(line, "[{}] {}", crate::name(), args);
    line.flush();
}

/// Prints a line prefixed with the component's name.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => { $crate::log::print_line(format_args!($($arg)*)) };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    // No lock: the panicking thread may hold the console lock.
    let mut line = Line { buf: [0; 256], len: 0 };
    let _ = writeln!(line, "[{}] panicked: {}", crate::name(), info);
    line.flush();
    crate::fault_now()
}
