//! The raw seL4 5.0 x86_64 system calls (`CONFIG_SYSCALL`).
//!
//! Register use: syscall number in `rdx`; capability (in) / badge (out) in `rdi`; message info
//! in `rsi`; message registers 0–3 in `r10`, `r8`, `r9`, `r15`. The kernel's fast return
//! (`sysret`) does not restore `rsp`, but it does restore `rbx`: so `rsp` is parked in `rbx`
//! across the instruction and moved back afterwards (as libsel4 does). Rust cannot name `rbx` as
//! an operand: its own value is stashed in another register around the call.

use core::arch::asm;

use crate::MessageInfo;

/// The system calls this crate makes, numbered from the kernel's `syscall.xml` by the build
/// script (identical in every configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Sys {
    Call = n::CALL,
    ReplyRecv = n::REPLY_RECV,
    Send = n::SEND,
    NBSend = n::NB_SEND,
    Recv = n::RECV,
    Reply = n::REPLY,
    Yield = n::YIELD,
    NBRecv = n::NB_RECV,
    DebugPutChar = n::DEBUG_PUT_CHAR,
    DebugHalt = n::DEBUG_HALT,
    DebugCapIdentify = n::DEBUG_CAP_IDENTIFY,
    DebugSnapshot = n::DEBUG_SNAPSHOT,
    DebugNameThread = n::DEBUG_NAME_THREAD,
}

use crate::syscall_number as n;

#[cfg(test)]
mod tests {
    use super::Sys;

    #[test]
    fn numbers_match_the_sel4_5_0_abi() {
        // What libsel4 5.0's generated syscall.h says; the build script derives them from the
        // XML, this pins the derivation.
        let expected = [
            (Sys::Call, -1),
            (Sys::ReplyRecv, -2),
            (Sys::Send, -3),
            (Sys::NBSend, -4),
            (Sys::Recv, -5),
            (Sys::Reply, -6),
            (Sys::Yield, -7),
            (Sys::NBRecv, -8),
            (Sys::DebugPutChar, -9),
            (Sys::DebugHalt, -10),
            (Sys::DebugCapIdentify, -11),
            (Sys::DebugSnapshot, -12),
            (Sys::DebugNameThread, -13),
        ];
        for (sys, n) in expected {
            assert_eq!(sys as i64, n, "{sys:?}");
        }
    }
}

/// Registers exchanged with the kernel by one system call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// Capability pointer going in, badge coming out.
    pub dest: u64,
    pub info: u64,
    pub mr: [u64; 4],
}

/// Performs one system call, exchanging all message-carrying registers.
#[inline(always)]
pub fn syscall(sys: Sys, regs: Regs) -> Regs {
    raw(sys as i64, regs)
}

/// A system call by number. Numbers the kernel does not know make it send an "unknown
/// syscall" fault to the thread's fault handler (the runtime uses this to report panics).
#[inline(always)]
pub fn raw(number: i64, regs: Regs) -> Regs {
    let mut dest = regs.dest;
    let mut info = regs.info;
    let [mut m0, mut m1, mut m2, mut m3] = regs.mr;
    // SAFETY: the `syscall` instruction enters the seL4 kernel, which only reads and writes the
    // registers declared here (plus rcx/r11, declared clobbered) and user memory the thread's
    // capabilities grant (the IPC buffer); rsp travels in rbx (which the kernel restores) and
    // is put back, and rbx itself is saved in `stash`, so both are unchanged on return.
    unsafe {
        asm!(
            "mov {stash}, rbx",
            "mov rbx, rsp",
            "syscall",
            "mov rsp, rbx",
            "mov rbx, {stash}",
            stash = out(reg) _,
            inout("rdx") number => _,
            inout("rdi") dest,
            inout("rsi") info,
            inout("r10") m0,
            inout("r8") m1,
            inout("r9") m2,
            inout("r15") m3,
            out("rcx") _,
            out("r11") _,
        );
    }
    Regs { dest, info, mr: [m0, m1, m2, m3] }
}

/// `Call`: send on `cap` and wait for the reply; returns the reply's info and registers.
#[inline(always)]
pub fn call(cap: u64, info: MessageInfo, mr: [u64; 4]) -> (MessageInfo, [u64; 4]) {
    let r = syscall(Sys::Call, Regs { dest: cap, info: info.0, mr });
    (MessageInfo(r.info), r.mr)
}

/// `ReplyRecv`: reply to the saved caller, then wait on `cap`. Returns (badge, info, registers).
#[inline(always)]
pub fn reply_recv(cap: u64, info: MessageInfo, mr: [u64; 4]) -> (u64, MessageInfo, [u64; 4]) {
    let r = syscall(Sys::ReplyRecv, Regs { dest: cap, info: info.0, mr });
    (r.dest, MessageInfo(r.info), r.mr)
}

/// `Recv`: wait on an endpoint or notification. Returns (badge, info, registers).
#[inline(always)]
pub fn recv(cap: u64) -> (u64, MessageInfo, [u64; 4]) {
    let r = syscall(Sys::Recv, Regs { dest: cap, ..Regs::default() });
    (r.dest, MessageInfo(r.info), r.mr)
}

/// `NBRecv`: poll an endpoint or notification. Returns (badge, info, registers).
#[inline(always)]
pub fn nb_recv(cap: u64) -> (u64, MessageInfo, [u64; 4]) {
    let r = syscall(Sys::NBRecv, Regs { dest: cap, ..Regs::default() });
    (r.dest, MessageInfo(r.info), r.mr)
}

/// `Send` (blocking) on an endpoint, or signal a notification.
#[inline(always)]
pub fn send(cap: u64, info: MessageInfo, mr: [u64; 4]) {
    syscall(Sys::Send, Regs { dest: cap, info: info.0, mr });
}

/// `NBSend`: send if a receiver waits, else drop the message.
#[inline(always)]
pub fn nb_send(cap: u64, info: MessageInfo, mr: [u64; 4]) {
    syscall(Sys::NBSend, Regs { dest: cap, info: info.0, mr });
}

/// `Reply` to the saved caller.
#[inline(always)]
pub fn reply(info: MessageInfo, mr: [u64; 4]) {
    syscall(Sys::Reply, Regs { dest: 0, info: info.0, mr });
}

/// Give the rest of the time slice to threads of equal priority.
#[inline(always)]
pub fn yield_now() {
    syscall(Sys::Yield, Regs::default());
}

/// Write one byte to the kernel's debug console (the serial port).
#[inline(always)]
pub fn debug_put_char(c: u8) {
    syscall(Sys::DebugPutChar, Regs { dest: c as u64, ..Regs::default() });
}

/// Stop the whole machine (debug kernels only).
pub fn debug_halt() -> ! {
    syscall(Sys::DebugHalt, Regs::default());
    loop {
        core::hint::spin_loop();
    }
}

/// Name a thread in kernel debug output. The name is read from the IPC buffer.
pub fn debug_name_thread(tcb: u64, name: &str) {
    crate::ipc_buffer::write_bytes(0, name.as_bytes(), true);
    syscall(Sys::DebugNameThread, Regs { dest: tcb, ..Regs::default() });
}
