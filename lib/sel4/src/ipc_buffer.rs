//! Access to the calling thread's IPC buffer.
//!
//! The kernel points the GS base at the thread's IPC buffer on every return to user mode, so
//! every access here is relative to `gs` and always reaches the current thread's own buffer.
//!
//! Layout (words): tag @0, msg[120] @1..=120, userData @121, caps_or_badges[3] @122..=124,
//! receiveCNode @125, receiveIndex @126, receiveDepth @127.

use core::arch::asm;

/// Number of message registers.
pub const MSG_MAX_LENGTH: usize = 120;
/// Number of extra capabilities a message can carry.
pub const MSG_MAX_EXTRA_CAPS: usize = 3;
/// Size of the IPC buffer in bytes.
pub const IPC_BUFFER_SIZE: usize = 1024;

const MSG_WORD: usize = 1;
const USER_DATA_WORD: usize = 121;
const CAPS_WORD: usize = 122;
const RECEIVE_CNODE_WORD: usize = 125;

#[inline(always)]
fn read_word(index: usize) -> u64 {
    debug_assert!(index < IPC_BUFFER_SIZE / 8);
    let value: u64;
    // SAFETY: GS points at this thread's mapped 1 KiB IPC buffer; `index` is below 128 for
    // every caller (checked by the public wrappers), so the access stays inside it.
    unsafe {
        asm!("mov {v}, qword ptr gs:[{i} * 8]", v = out(reg) value, i = in(reg) index, options(nostack, readonly, preserves_flags));
    }
    value
}

#[inline(always)]
fn write_word(index: usize, value: u64) {
    debug_assert!(index < IPC_BUFFER_SIZE / 8);
    // SAFETY: as in `read_word`; the IPC buffer is writable by its thread.
    unsafe {
        asm!("mov qword ptr gs:[{i} * 8], {v}", v = in(reg) value, i = in(reg) index, options(nostack, preserves_flags));
    }
}

/// Message register `i` as stored in the buffer (registers 0–3 travel in CPU registers and
/// are copied here by [`crate::invoke`] and the endpoint helpers that say so).
#[inline(always)]
pub fn mr(i: usize) -> u64 {
    if i < MSG_MAX_LENGTH {
        read_word(MSG_WORD + i)
    } else {
        0
    }
}

/// Set message register `i` in the buffer. Out-of-range indices are ignored.
#[inline(always)]
pub fn set_mr(i: usize, value: u64) {
    if i < MSG_MAX_LENGTH {
        write_word(MSG_WORD + i, value);
    }
}

/// Extra capability `i` of the next message sent.
#[inline(always)]
pub fn set_cap(i: usize, cptr: u64) {
    if i < MSG_MAX_EXTRA_CAPS {
        write_word(CAPS_WORD + i, cptr);
    }
}

/// Badge (or cap pointer) `i` of the last message received.
#[inline(always)]
pub fn badge(i: usize) -> u64 {
    if i < MSG_MAX_EXTRA_CAPS {
        read_word(CAPS_WORD + i)
    } else {
        0
    }
}

pub fn user_data() -> u64 {
    read_word(USER_DATA_WORD)
}

pub fn set_user_data(value: u64) {
    write_word(USER_DATA_WORD, value)
}

/// Where a capability received in a message is stored: (CNode, index, depth).
pub fn set_receive_path(cnode: u64, index: u64, depth: u64) {
    write_word(RECEIVE_CNODE_WORD, cnode);
    write_word(RECEIVE_CNODE_WORD + 1, index);
    write_word(RECEIVE_CNODE_WORD + 2, depth);
}

/// Copy `bytes` into the message registers starting at register `first`, NUL-terminated when
/// `nul` is set. Returns the number of registers used. Bytes that do not fit are dropped.
pub fn write_bytes(first: usize, bytes: &[u8], nul: bool) -> usize {
    let capacity = (MSG_MAX_LENGTH.saturating_sub(first)) * 8;
    let len = bytes.len().min(capacity.saturating_sub(nul as usize));
    let words = (len + nul as usize).div_ceil(8);
    for w in 0..words {
        let mut chunk = [0u8; 8];
        for (k, b) in chunk.iter_mut().enumerate() {
            if let Some(&v) = bytes[..len].get(w * 8 + k) {
                *b = v;
            }
        }
        set_mr(first + w, u64::from_le_bytes(chunk));
    }
    words
}
