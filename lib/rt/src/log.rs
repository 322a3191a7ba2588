//! Console output through the kernel's debug port, one whole line at a time, prefixed with the
//! component's name.

use core::fmt::{self, Write};

use crate::sync::Mutex;

static CONSOLE: Mutex<()> = Mutex::new(());

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
