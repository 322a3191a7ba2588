//! Typed interface to the seL4 5.0 microkernel (x86_64).
//!
//! - [`syscall`]: the raw system calls;
//! - [`ipc_buffer`]: the calling thread's IPC buffer (message registers, extra caps, badges);
//! - [`Cap<T>`]: a capability pointer typed by the object it names; kernel invocations are
//!   methods generated at build time from the kernel's interface XML **with the kernel's own
//!   configuration** (an SMP kernel numbers its labels differently) and return [`Result`];
//! - [`bootinfo`]: the BootInfo the kernel hands the root task;
//! - [`Fault`]: decoding of fault messages.
//!
//! `unsafe` in this workspace's components is confined to this crate and the runtime.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

use core::fmt;
use core::marker::PhantomData;

pub mod bootinfo;
pub mod ipc_buffer;
pub mod syscall;

mod generated {
    #![allow(clippy::all, non_camel_case_types, dead_code)]
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
pub use generated::*;

/// Whether this crate was generated for a multiprocessor kernel.
pub const SMP: bool = cfg!(sel4_smp);

/// Errors the kernel returns from invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Error {
    InvalidArgument = 1,
    InvalidCapability = 2,
    IllegalOperation = 3,
    RangeError = 4,
    AlignmentError = 5,
    FailedLookup = 6,
    TruncatedMessage = 7,
    DeleteFirst = 8,
    RevokeFirst = 9,
    NotEnoughMemory = 10,
    /// A code this crate does not know.
    Unknown = u64::MAX,
}

impl Error {
    pub fn from_code(code: u64) -> Self {
        match code {
            1 => Error::InvalidArgument,
            2 => Error::InvalidCapability,
            3 => Error::IllegalOperation,
            4 => Error::RangeError,
            5 => Error::AlignmentError,
            6 => Error::FailedLookup,
            7 => Error::TruncatedMessage,
            8 => Error::DeleteFirst,
            9 => Error::RevokeFirst,
            10 => Error::NotEnoughMemory,
            _ => Error::Unknown,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// The message info word: `label << 12 | caps_unwrapped << 9 | extra_caps << 7 | length`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageInfo(pub u64);

impl MessageInfo {
    pub const fn new(label: u64, caps_unwrapped: u64, extra_caps: u64, length: u64) -> Self {
        MessageInfo(
            (label & 0xF_FFFF) << 12 | (caps_unwrapped & 0x7) << 9 | (extra_caps & 0x3) << 7 | (length & 0x7F),
        )
    }
    pub const fn label(self) -> u64 {
        (self.0 >> 12) & 0xF_FFFF
    }
    pub const fn caps_unwrapped(self) -> u64 {
        (self.0 >> 9) & 0x7
    }
    pub const fn extra_caps(self) -> u64 {
        (self.0 >> 7) & 0x3
    }
    pub const fn length(self) -> u64 {
        self.0 & 0x7F
    }
}

/// Implemented by the marker types of kernel objects.
pub trait CapType: Copy {
    const NAME: &'static str;
}

/// A capability whose object type is not known statically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {}
impl CapType for Unknown {
    const NAME: &'static str = "Unknown";
}

/// Endpoint capabilities (IPC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {}
impl CapType for Endpoint {
    const NAME: &'static str = "Endpoint";
}

/// Notification capabilities (asynchronous signals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notification {}
impl CapType for Notification {
    const NAME: &'static str = "Notification";
}

/// A raw capability pointer (an address in the caller's CSpace).
pub type CPtr = Cap<Unknown>;

/// A capability pointer typed by the object it names.
pub struct Cap<T: CapType> {
    cptr: u64,
    _type: PhantomData<T>,
}

impl<T: CapType> Clone for Cap<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: CapType> Copy for Cap<T> {}
impl<T: CapType> PartialEq for Cap<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cptr == other.cptr
    }
}
impl<T: CapType> Eq for Cap<T> {}

impl<T: CapType> fmt::Debug for Cap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap<{}>({:#x})", T::NAME, self.cptr)
    }
}

impl<T: CapType> Cap<T> {
    /// Names the capability at `cptr`. Typing a slot wrongly cannot break memory safety: the
    /// kernel checks every invocation and answers with an error.
    pub const fn from_cptr(cptr: u64) -> Self {
        Cap { cptr, _type: PhantomData }
    }
    pub const fn cptr(&self) -> u64 {
        self.cptr
    }
    pub const fn null() -> Self {
        Cap::from_cptr(0)
    }
    pub const fn is_null(&self) -> bool {
        self.cptr == 0
    }
    /// The same slot, seen as another type.
    pub const fn cast<U: CapType>(self) -> Cap<U> {
        Cap::from_cptr(self.cptr)
    }
    pub const fn upcast(self) -> CPtr {
        Cap::from_cptr(self.cptr)
    }
}

/// Sends an invocation: extra caps and message words go in, the reply's registers are copied
/// into the IPC buffer so that generated code reads every output the same way.
pub(crate) fn invoke(service: u64, label: u64, caps: &[u64], words: &[u64]) -> Result<MessageInfo> {
    for (i, &c) in caps.iter().enumerate() {
        ipc_buffer::set_cap(i, c);
    }
    for (i, &w) in words.iter().enumerate().skip(4) {
        ipc_buffer::set_mr(i, w);
    }
    let first = |i: usize| words.get(i).copied().unwrap_or(0);
    let info = MessageInfo::new(label, 0, caps.len() as u64, words.len() as u64);
    let (reply, mr) = syscall::call(service, info, [first(0), first(1), first(2), first(3)]);
    for (i, &w) in mr.iter().enumerate() {
        ipc_buffer::set_mr(i, w);
    }
    match reply.label() {
        0 => Ok(reply),
        code => Err(Error::from_code(code)),
    }
}

/// Word-sized parameter types of the interface.
pub trait Word: Sized {
    fn into_word(self) -> u64;
    fn from_word(w: u64) -> Self;
}

/// Access rights of a capability (`seL4_CapRights_t`): write = bit 0, read = bit 1, grant = bit 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapRights(pub u64);

impl CapRights {
    pub const NONE: CapRights = CapRights(0);
    pub const READ: CapRights = CapRights(0b010);
    pub const READ_WRITE: CapRights = CapRights(0b011);
    pub const ALL: CapRights = CapRights(0b111);
    pub const fn new(grant: bool, read: bool, write: bool) -> Self {
        CapRights((grant as u64) << 2 | (read as u64) << 1 | write as u64)
    }
}

impl Word for CapRights {
    fn into_word(self) -> u64 {
        self.0
    }
    fn from_word(w: u64) -> Self {
        CapRights(w)
    }
}

/// Badge or guard data for Mint/Mutate and CSpace roots (`seL4_CapData_t` in seL4 5.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapData(pub u64);

impl CapData {
    /// Largest badge this kernel can store (28 bits).
    pub const MAX_BADGE: u64 = (1 << 28) - 1;
    /// No change (for Mint without a badge, or a CSpace root without a guard).
    pub const NONE: CapData = CapData(0);
    /// A badge; `None` when it does not fit in 28 bits.
    pub const fn badge(badge: u64) -> Option<Self> {
        if badge > Self::MAX_BADGE {
            None
        } else {
            Some(CapData(badge))
        }
    }
    /// Restricts an I/O port capability to `first..=last` when minting it.
    pub const fn io_ports(first: u16, last: u16) -> Self {
        CapData((first as u64) << 16 | last as u64)
    }
    /// A guard of `size` bits whose value is `bits`.
    pub const fn guard(bits: u64, size: u64) -> Self {
        CapData(1 << 31 | (bits & 0x3_FFFF) << 8 | (size & 0x3F) << 2)
    }
}

impl Word for CapData {
    fn into_word(self) -> u64 {
        self.0
    }
    fn from_word(w: u64) -> Self {
        CapData(w)
    }
}

/// Priority and maximum controlled priority (`seL4_PrioProps_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrioProps(pub u64);

impl PrioProps {
    pub const fn new(mcp: u8, prio: u8) -> Self {
        PrioProps((mcp as u64) << 8 | prio as u64)
    }
}

impl Word for PrioProps {
    fn into_word(self) -> u64 {
        self.0
    }
    fn from_word(w: u64) -> Self {
        PrioProps(w)
    }
}

/// Page attributes for mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmAttributes(pub u64);

impl VmAttributes {
    pub const DEFAULT: VmAttributes = VmAttributes(0);
    pub const WRITE_THROUGH: VmAttributes = VmAttributes(1);
    pub const CACHE_DISABLED: VmAttributes = VmAttributes(2);
    pub const UNCACHEABLE: VmAttributes = VmAttributes(3);
    pub const WRITE_COMBINING: VmAttributes = VmAttributes(4);
}

impl Word for VmAttributes {
    fn into_word(self) -> u64 {
        self.0
    }
    fn from_word(w: u64) -> Self {
        VmAttributes(w)
    }
}

/// A thread's registers in the kernel's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserContext {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub tls_base: u64,
}

impl UserContext {
    /// Number of words (the `count` of Read/WriteRegisters for a full context).
    pub const WORDS: u64 = 19;

    pub fn to_words(&self) -> [u64; 19] {
        [
            self.rip, self.rsp, self.rflags, self.rax, self.rbx, self.rcx, self.rdx, self.rsi, self.rdi, self.rbp,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15, self.tls_base,
        ]
    }

    pub fn from_words(w: &[u64; 19]) -> Self {
        UserContext {
            rip: w[0],
            rsp: w[1],
            rflags: w[2],
            rax: w[3],
            rbx: w[4],
            rcx: w[5],
            rdx: w[6],
            rsi: w[7],
            rdi: w[8],
            rbp: w[9],
            r8: w[10],
            r9: w[11],
            r10: w[12],
            r11: w[13],
            r12: w[14],
            r13: w[15],
            r14: w[16],
            r15: w[17],
            tls_base: w[18],
        }
    }
}

/// Virtual-CPU context (only used by VT-x kernels; present so the generator is total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuContext(pub [u64; 7]);

impl VcpuContext {
    pub fn to_words(&self) -> [u64; 7] {
        self.0
    }
    pub fn from_words(w: &[u64; 7]) -> Self {
        VcpuContext(*w)
    }
}

/// Object sizes (bits) of the fixed-size kernel objects on x86_64.
pub mod size_bits {
    pub const TCB: u64 = 11;
    pub const ENDPOINT: u64 = 4;
    pub const NOTIFICATION: u64 = 5;
    pub const SLOT: u64 = 5;
    pub const PAGE: u64 = 12;
    pub const LARGE_PAGE: u64 = 21;
    pub const PAGE_TABLE: u64 = 12;
    pub const PAGE_DIRECTORY: u64 = 12;
    pub const PDPT: u64 = 12;
    pub const PML4: u64 = 12;
    pub const ASID_POOL: u64 = 12;
    pub const MIN_UNTYPED: u64 = 4;
    pub const MAX_UNTYPED: u64 = 47;
}

/// The initial capabilities of the root task (slot numbers fixed by the kernel).
pub mod init {
    use super::*;
    pub const TCB: Cap<Tcb> = Cap::from_cptr(1);
    pub const CNODE: Cap<CNode> = Cap::from_cptr(2);
    pub const VSPACE: Cap<X64Pml4> = Cap::from_cptr(3);
    pub const IRQ_CONTROL: Cap<IrqControl> = Cap::from_cptr(4);
    pub const ASID_CONTROL: Cap<X86AsidControl> = Cap::from_cptr(5);
    pub const ASID_POOL: Cap<X86AsidPool> = Cap::from_cptr(6);
    pub const IO_PORT: Cap<X86IoPort> = Cap::from_cptr(7);
    pub const IO_SPACE: CPtr = Cap::from_cptr(8);
    pub const BOOT_INFO_FRAME: Cap<X86Page> = Cap::from_cptr(9);
    pub const IPC_BUFFER: Cap<X86Page> = Cap::from_cptr(10);
    pub const DOMAIN: Cap<DomainSet> = Cap::from_cptr(11);
}

impl Cap<Endpoint> {
    /// `Call` with up to four message registers; returns the reply's info and registers.
    #[inline(always)]
    pub fn call(&self, info: MessageInfo, mr: [u64; 4]) -> (MessageInfo, [u64; 4]) {
        syscall::call(self.cptr, info, mr)
    }
    /// Wait for a message. Returns (badge, info, first four registers).
    #[inline(always)]
    pub fn recv(&self) -> (u64, MessageInfo, [u64; 4]) {
        syscall::recv(self.cptr)
    }
    /// Reply to the current caller and wait for the next message.
    #[inline(always)]
    pub fn reply_recv(&self, info: MessageInfo, mr: [u64; 4]) -> (u64, MessageInfo, [u64; 4]) {
        syscall::reply_recv(self.cptr, info, mr)
    }
    #[inline(always)]
    pub fn send(&self, info: MessageInfo, mr: [u64; 4]) {
        syscall::send(self.cptr, info, mr)
    }
    #[inline(always)]
    pub fn nb_send(&self, info: MessageInfo, mr: [u64; 4]) {
        syscall::nb_send(self.cptr, info, mr)
    }
}

impl Cap<Notification> {
    /// Signal: OR the capability's badge into the notification word and wake a waiter.
    #[inline(always)]
    pub fn signal(&self) {
        syscall::send(self.cptr, MessageInfo::default(), [0; 4])
    }
    /// Block until signalled; returns the accumulated badge bits (cleared by the read).
    #[inline(always)]
    pub fn wait(&self) -> u64 {
        syscall::recv(self.cptr).0
    }
    /// Read and clear the badge bits without blocking (0 when nothing was signalled).
    #[inline(always)]
    pub fn poll(&self) -> u64 {
        syscall::nb_recv(self.cptr).0
    }
}

/// A fault message delivered to a thread's fault endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Null,
    /// A capability lookup failed (e.g. invoking an empty slot).
    Cap { ip: u64, addr: u64, in_recv_phase: bool, lookup_failure: u64 },
    /// A syscall number the kernel does not know.
    UnknownSyscall { ip: u64, sp: u64, syscall: u64 },
    /// A processor exception (e.g. 6 = invalid opcode, 13 = general protection, 0 = divide).
    UserException { ip: u64, sp: u64, number: u64, code: u64 },
    /// A page fault.
    VmFault { ip: u64, addr: u64, prefetch: bool, fsr: u64 },
    /// A label this crate does not know.
    Other { label: u64 },
}

impl Fault {
    /// Decodes a fault from the message's label and registers; `mr` reads register `i`.
    pub fn decode(info: MessageInfo, mr: impl Fn(usize) -> u64) -> Fault {
        match info.label() {
            0 => Fault::Null,
            1 => Fault::Cap { ip: mr(0), addr: mr(1), in_recv_phase: mr(2) != 0, lookup_failure: mr(3) },
            2 => Fault::UnknownSyscall { ip: mr(15), sp: mr(16), syscall: mr(18) },
            3 => Fault::UserException { ip: mr(0), sp: mr(1), number: mr(3), code: mr(4) },
            5 => Fault::VmFault { ip: mr(0), addr: mr(1), prefetch: mr(2) != 0, fsr: mr(3) },
            label => Fault::Other { label },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Null => "null fault",
            Fault::Cap { .. } => "capability fault",
            Fault::UnknownSyscall { .. } => "unknown syscall",
            Fault::UserException { number: 6, .. } => "illegal instruction",
            Fault::UserException { number: 13, .. } => "general protection fault",
            Fault::UserException { number: 0, .. } => "divide error",
            Fault::UserException { .. } => "processor exception",
            Fault::VmFault { .. } => "page fault",
            Fault::Other { .. } => "unknown fault",
        }
    }

    /// Instruction pointer of the faulting instruction, when the message carries one.
    pub fn ip(&self) -> Option<u64> {
        match *self {
            Fault::Cap { ip, .. }
            | Fault::UnknownSyscall { ip, .. }
            | Fault::UserException { ip, .. }
            | Fault::VmFault { ip, .. } => Some(ip),
            _ => None,
        }
    }

    /// The address the fault is about (page faults and capability faults).
    pub fn addr(&self) -> Option<u64> {
        match *self {
            Fault::Cap { addr, .. } | Fault::VmFault { addr, .. } => Some(addr),
            _ => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some(addr) = self.addr() {
            write!(f, " at address {addr:#x}")?;
        }
        if let Some(ip) = self.ip() {
            write!(f, " (ip {ip:#x})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_the_measured_kernel() {
        // Numbers measured on seL4 5.0.0 (see docs: uniprocessor -> SMP).
        use labels_smp as s;
        use labels_up as u;
        assert_eq!((u::UNTYPED_RETYPE, s::UNTYPED_RETYPE), (1, 1));
        assert_eq!((u::TCB_SUSPEND, s::TCB_SUSPEND), (10, 10));
        assert_eq!((u::TCB_BIND_NOTIFICATION, s::TCB_BIND_NOTIFICATION), (12, 12));
        assert_eq!(s::TCB_SET_AFFINITY, 14);
        assert_eq!((u::CNODE_MINT, s::CNODE_MINT), (18, 19));
        assert_eq!((u::IRQ_ACK_IRQ, s::IRQ_ACK_IRQ), (24, 25));
        assert_eq!((u::IRQ_SET_IRQ_HANDLER, s::IRQ_SET_IRQ_HANDLER), (25, 26));
        assert_eq!((u::X86_PAGE_TABLE_MAP, s::X86_PAGE_TABLE_MAP), (33, 34));
        assert_eq!((u::X86_PAGE_MAP, s::X86_PAGE_MAP), (37, 38));
        assert_eq!((u::X86_PAGE_GET_ADDRESS, s::X86_PAGE_GET_ADDRESS), (41, 42));
        assert_eq!((u::X86_IO_PORT_IN8, s::X86_IO_PORT_IN8), (44, 45));
        assert_eq!((u::X86_IO_PORT_OUT32, s::X86_IO_PORT_OUT32), (49, 50));
        assert_eq!((u::X86_IRQ_ISSUE_IRQ_HANDLER_IOAPIC, s::X86_IRQ_ISSUE_IRQ_HANDLER_IOAPIC), (50, 51));
        assert_eq!((u::X86_IRQ_ISSUE_IRQ_HANDLER_MSI, s::X86_IRQ_ISSUE_IRQ_HANDLER_MSI), (51, 52));
    }

    #[test]
    fn object_types_follow_the_config() {
        assert_eq!(ObjectType::CapTable as u64, 4);
        assert_eq!(ObjectType::X64Pml4 as u64, 6);
        assert_eq!(ObjectType::X86Page4K as u64, 7);
        assert_eq!(ObjectType::X86PageTable as u64, 9);
    }

    #[test]
    fn message_info_packs_fields() {
        let m = MessageInfo::new(0x12345, 5, 2, 99);
        assert_eq!((m.label(), m.caps_unwrapped(), m.extra_caps(), m.length()), (0x12345, 5, 2, 99));
        assert_eq!(MessageInfo::new(1, 0, 0, 7).0, 1 << 12 | 7);
    }

    #[test]
    fn cap_data_and_rights_encode_as_the_kernel_expects() {
        assert_eq!(CapData::badge(5), Some(CapData(5)));
        assert_eq!(CapData::badge(1 << 28), None);
        assert_eq!(CapData::guard(0, 52).0, 1 << 31 | 52 << 2);
        assert_eq!(CapRights::ALL.0, 7);
        assert_eq!(CapRights::new(false, true, false), CapRights::READ);
        assert_eq!(PrioProps::new(255, 100).0, 255 << 8 | 100);
    }

    #[test]
    fn faults_decode_by_label() {
        let regs = [0x401000, 0xdead000, 1, 4, 0];
        let f = Fault::decode(MessageInfo::new(5, 0, 0, 4), |i| regs.get(i).copied().unwrap_or(0));
        assert_eq!(f, Fault::VmFault { ip: 0x401000, addr: 0xdead000, prefetch: true, fsr: 4 });
        assert_eq!(f.kind(), "page fault");
        let regs = [0x401000, 0x7000, 0x202, 6, 0];
        let f = Fault::decode(MessageInfo::new(3, 0, 0, 5), |i| regs.get(i).copied().unwrap_or(0));
        assert_eq!(f.kind(), "illegal instruction");
    }

    #[test]
    fn user_context_round_trips() {
        let mut w = [0u64; 19];
        for (i, v) in w.iter_mut().enumerate() {
            *v = i as u64 * 3;
        }
        assert_eq!(UserContext::from_words(&w).to_words(), w);
        assert_eq!(UserContext::from_words(&w).rsp, 3);
    }

    #[test]
    fn cap_types_are_distinct_and_printable() {
        let tcb: Cap<Tcb> = Cap::from_cptr(0x10);
        assert_eq!(format!("{tcb:?}"), "Cap<Tcb>(0x10)");
        assert_eq!(tcb.upcast().cptr(), 0x10);
        let _page: Cap<X86Page> = init::IPC_BUFFER;
    }

    extern crate std;
    use std::format;
}

impl Cap<Tcb> {
    /// Pins the thread to `core`. On a uniprocessor kernel only core 0 exists.
    pub fn set_core(&self, core: u64) -> Result<()> {
        #[cfg(sel4_smp)]
        {
            self.set_affinity(core)
        }
        #[cfg(not(sel4_smp))]
        {
            if core == 0 {
                Ok(())
            } else {
                Err(Error::InvalidArgument)
            }
        }
    }
}

/// Byte messages over IPC: the convention every byte-oriented protocol of this workspace uses
/// (the socket protocol among them). A message of `n` bytes (at most [`MAX_BYTES`]) travels in
/// the message registers, packed little-endian, and its label is `n`; so a full 960-byte message
/// uses all 120 registers and no length word is needed.
pub mod bytes {
    use crate::{ipc_buffer, Cap, Endpoint, MessageInfo};

    /// Largest byte message: all message registers.
    pub const MAX_BYTES: usize = ipc_buffer::MSG_MAX_LENGTH * 8;

    /// Why a byte message was refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum BytesError {
        /// More than [`MAX_BYTES`] to send.
        TooLong,
        /// The received label claims more bytes than the message carries or the buffer holds.
        Malformed,
    }

    /// Message registers that travel in CPU registers (`seL4_FastMessageRegisters` on x86_64).
    const FAST: usize = 4;

    /// Packs `msg` into message registers: the first [`FAST`] words are returned, for the CPU
    /// registers; only longer messages write the rest into the IPC buffer. A short message so
    /// never touches the buffer's page, which under QEMU TCG (whose TLB is flushed on every
    /// address-space switch) saves a page walk per message.
    fn load(msg: &[u8]) -> Result<(MessageInfo, [u64; FAST]), BytesError> {
        if msg.len() > MAX_BYTES {
            return Err(BytesError::TooLong);
        }
        let mut fast = [0u64; FAST];
        for (i, chunk) in msg.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            match fast.get_mut(i) {
                Some(r) => *r = word,
                None => ipc_buffer::set_mr(i, word),
            }
        }
        let info = MessageInfo::new(msg.len() as u64, 0, 0, msg.len().div_ceil(8) as u64);
        Ok((info, fast))
    }

    /// Copies a received byte message (`info`, first four registers `mr`) into `out`. Words
    /// beyond the first four are read from the IPC buffer (only then is it touched).
    pub fn unload(info: MessageInfo, mr: [u64; FAST], out: &mut [u8]) -> Result<usize, BytesError> {
        let len = info.label() as usize;
        if len > out.len() || len.div_ceil(8) > info.length() as usize {
            return Err(BytesError::Malformed);
        }
        for (i, chunk) in out[..len].chunks_mut(8).enumerate() {
            let word = match mr.get(i) {
                Some(&w) => w,
                None => ipc_buffer::mr(i),
            };
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
        Ok(len)
    }

    impl Cap<Endpoint> {
        /// Sends `request` and waits for the byte reply, copied into `response`.
        pub fn call_bytes(&self, request: &[u8], response: &mut [u8]) -> Result<usize, BytesError> {
            let (info, mr) = load(request)?;
            let (reply, mr) = self.call(info, mr);
            unload(reply, mr, response)
        }

        /// Replies `reply` to the current caller and waits for the next message.
        /// Returns (badge, info, first four registers); decode with [`unload`].
        pub fn reply_recv_bytes(&self, reply: &[u8]) -> Result<(u64, MessageInfo, [u64; 4]), BytesError> {
            let (info, mr) = load(reply)?;
            Ok(self.reply_recv(info, mr))
        }
    }
}
