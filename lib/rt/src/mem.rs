//! The memory functions `core` calls. Written with string instructions so the compiler cannot
//! turn them back into calls to themselves. Checked in QEMU by `apps/selftest`'s `memtest`
//! (every size to 80 bytes, every alignment, overlaps both ways, against byte-wise references).

use core::arch::asm;

// Under QEMU's TCG every iteration of a `rep` string instruction is emulated on its own, so the
// bulk is moved eight bytes per iteration (`movsq`/`stosq`) and only the tail byte by byte: a
// byte-wise copy cost 4-9 cycles per byte, and every socket call moves several hundred bytes.

#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` and `src` are valid for `n` bytes and do not overlap;
    // `rep movsq` copies the first n / 8 words forwards and leaves rdi/rsi just past them, where
    // `rep movsb` copies the remaining n % 8 bytes: exactly `n` bytes in all.
    unsafe {
        asm!(
            "rep movsq",
            "mov rcx, {tail}",
            "rep movsb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // Forward copy is safe: dest is below src or the ranges do not overlap; each word is
        // read whole before it is written, and a forward copy never reads what it already wrote.
        // SAFETY: as for memcpy.
        unsafe { memcpy(dest, src, n) };
    } else if n > 0 {
        // dest lies above src and they overlap: copy from the top down (direction flag set and
        // cleared again) — first the n % 8 bytes at the top one by one, then the words below
        // them, highest first. Every write lands above everything still to be read.
        let tail = n % 8;
        let words = n / 8;
        // SAFETY: the caller guarantees both ranges are valid for `n` bytes. The byte loop
        // starts at the last byte and covers [8 * words, n); the word loop starts at the last
        // whole word below that and covers [0, 8 * words). With words == 0 the second `rep`
        // runs zero times and its start addresses are never dereferenced.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "mov rcx, {words}",
                "mov rdi, {wdst}",
                "mov rsi, {wsrc}",
                "rep movsq",
                "cld",
                words = in(reg) words,
                wdst = in(reg) dest.wrapping_add(words * 8).wrapping_sub(8),
                wsrc = in(reg) src.wrapping_add(words * 8).wrapping_sub(8),
                inout("rcx") tail => _,
                inout("rdi") dest.wrapping_add(n - 1) => _,
                inout("rsi") src.wrapping_add(n - 1) => _,
                options(nostack)
            );
        }
    }
    dest
}

#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    let pattern = (c as u8 as u64) * 0x0101_0101_0101_0101;
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; `rep stosq` writes the first
    // n / 8 words, `rep stosb` (al is the low byte of the pattern) the remaining n % 8 bytes.
    unsafe {
        asm!(
            "rep stosq",
            "mov rcx, {tail}",
            "rep stosb",
            tail = in(reg) n % 8,
            inout("rcx") n / 8 => _,
            inout("rdi") dest => _,
            in("rax") pattern,
            options(nostack, preserves_flags)
        );
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
