//! The memory functions `core` calls. Written with string instructions so the compiler cannot
//! turn them back into calls to themselves.

use core::arch::asm;

#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` and `src` are valid for `n` bytes and do not overlap;
    // `rep movsb` copies exactly `n` bytes forwards.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe: dest is below src or the ranges do not overlap.
        // SAFETY: as for memcpy; a forward copy never reads a byte it already wrote.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _, options(nostack, preserves_flags));
        }
    } else {
        // SAFETY: copy backwards from the last byte (direction flag set and cleared again), so
        // an overlapping source is read before it is overwritten.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; `rep stosb` writes exactly those.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") c as u8, options(nostack, preserves_flags));
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: the caller guarantees both are valid for `n` bytes; i < n.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// `core` is built with unwinding tables; with panic=abort nothing calls this.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

/// The precompiled `alloc` references the unwinder's resume entry in its cleanup paths; with
/// panic=abort no unwinding ever starts, so it is never reached.
#[no_mangle]
extern "C" fn _Unwind_Resume() -> ! {
    crate::fault_now()
}
