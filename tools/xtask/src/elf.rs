//! Checks on the ELF files we boot, before they are packed.
//!
//! seL4 5.0's root-task loader loads every program header with `p_memsz > 0` whatever its type,
//! so any such header that is not `PT_LOAD` (TLS, GNU_STACK with a size, RELRO, …) would be loaded
//! over something else. Components must also lie inside the image window the root task reserves.

use anyhow::{bail, Result};
use object::elf::{FileHeader64, ELFCLASS64, EM_X86_64, ET_EXEC, PF_X, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// Where an ELF must lie.
#[derive(Clone, Copy)]
pub enum Window {
    /// Anywhere (the root task, loaded by the kernel).
    Any,
    /// `[base, limit)` (components, loaded by the root task).
    Within(u64, u64),
}

/// Check `bytes` is a static x86_64 executable whose only memory-occupying program headers are
/// `PT_LOAD`, with the entry point in an executable segment. `what` names it in errors.
pub fn check(what: &str, bytes: &[u8], window: Window) -> Result<()> {
    let problems = problems(bytes, window);
    if !problems.is_empty() {
        bail!("{what}: not bootable:\n  - {}", problems.join("\n  - "));
    }
    Ok(())
}

fn problems(bytes: &[u8], window: Window) -> Vec<String> {
    let mut p = Vec::new();
    let header = match FileHeader64::<Endianness>::parse(bytes) {
        Ok(h) => h,
        Err(e) => return vec![format!("not a 64-bit ELF file ({e})")],
    };
    let endian = match header.endian() {
        Ok(e) => e,
        Err(e) => return vec![format!("bad ELF header ({e})")],
    };
    if header.e_ident().class != ELFCLASS64 || header.e_machine(endian) != EM_X86_64 {
        p.push("not an x86_64 ELF".to_string());
    }
    if header.e_type(endian) != ET_EXEC {
        p.push(format!(
            "ELF type {} is not a static executable (ET_EXEC)",
            header.e_type(endian)
        ));
    }
    let phdrs = match header.program_headers(endian, bytes) {
        Ok(ph) => ph,
        Err(e) => return vec![format!("unreadable program headers ({e})")],
    };
    let entry = header.e_entry(endian);
    let mut loads = 0;
    let mut entry_ok = false;
    for (i, ph) in phdrs.iter().enumerate() {
        let (ty, vaddr, memsz, filesz) = (
            ph.p_type(endian),
            ph.p_vaddr(endian),
            ph.p_memsz(endian),
            ph.p_filesz(endian),
        );
        if memsz == 0 {
            continue;
        }
        if ty != PT_LOAD {
            p.push(format!(
                "program header {i} has type {ty:#x} ({}) and occupies {memsz} bytes: the seL4 loader would \
                 load it; the linker script must emit only PT_LOAD segments (discard .tdata/.tbss, notes, \
                 .eh_frame, use explicit PHDRS)",
                type_name(ty)
            ));
            continue;
        }
        loads += 1;
        if filesz > memsz {
            p.push(format!(
                "PT_LOAD {i}: file size {filesz} exceeds memory size {memsz}"
            ));
        }
        let end = vaddr.checked_add(memsz);
        if let Window::Within(base, limit) = window {
            if vaddr < base || end.is_none_or(|e| e > limit) {
                p.push(format!(
                    "PT_LOAD {i} at {vaddr:#x}..{:#x} is outside {base:#x}..{limit:#x}",
                    vaddr.saturating_add(memsz)
                ));
            }
        }
        if ph.p_flags(endian) & PF_X != 0 && entry >= vaddr && end.is_some_and(|e| entry < e) {
            entry_ok = true;
        }
    }
    if loads == 0 {
        p.push("no PT_LOAD segment".to_string());
    } else if !entry_ok {
        p.push(format!(
            "entry point {entry:#x} is not inside an executable PT_LOAD segment"
        ));
    }
    p
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        object::elf::PT_TLS => "PT_TLS",
        object::elf::PT_GNU_STACK => "PT_GNU_STACK",
        object::elf::PT_GNU_RELRO => "PT_GNU_RELRO",
        object::elf::PT_GNU_EH_FRAME => "PT_GNU_EH_FRAME",
        object::elf::PT_NOTE => "PT_NOTE",
        object::elf::PT_PHDR => "PT_PHDR",
        object::elf::PT_DYNAMIC => "PT_DYNAMIC",
        object::elf::PT_INTERP => "PT_INTERP",
        _ => "other",
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A minimal ELF64 executable with the given program headers (type, flags, vaddr, filesz, memsz).
    pub fn tiny_elf(entry: u64, phdrs: &[(u32, u32, u64, u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        b.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&entry.to_le_bytes());
        b.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        b.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b.extend_from_slice(&(phdrs.len() as u16).to_le_bytes());
        b.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for &(ty, flags, vaddr, filesz, memsz) in phdrs {
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&flags.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes()); // offset
            b.extend_from_slice(&vaddr.to_le_bytes());
            b.extend_from_slice(&vaddr.to_le_bytes());
            b.extend_from_slice(&filesz.to_le_bytes());
            b.extend_from_slice(&memsz.to_le_bytes());
            b.extend_from_slice(&0x1000u64.to_le_bytes());
        }
        b.resize(0x2000, 0);
        b
    }

    const RX: u32 = 5;
    const RW: u32 = 6;
    const W: Window = Window::Within(0x40_0000, 0x1000_0000);

    #[test]
    fn two_load_segments_pass() {
        let elf = tiny_elf(
            0x40_0100,
            &[
                (PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000),
                (PT_LOAD, RW, 0x40_1000, 0x100, 0x3000),
            ],
        );
        check("ok", &elf, W).unwrap();
        // An empty GNU_STACK header occupies nothing, so the loader ignores it.
        let elf = tiny_elf(
            0x40_0100,
            &[
                (PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000),
                (object::elf::PT_GNU_STACK, RW, 0, 0, 0),
            ],
        );
        check("ok", &elf, W).unwrap();
    }

    #[test]
    fn tls_header_is_rejected() {
        let elf = tiny_elf(
            0x40_0100,
            &[
                (PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000),
                (object::elf::PT_TLS, 4, 0x40_1000, 8, 16),
            ],
        );
        let e = check("app", &elf, W).unwrap_err().to_string();
        assert!(e.contains("PT_TLS"), "{e}");
    }

    #[test]
    fn segments_outside_the_window_and_bad_entries_are_rejected() {
        let elf = tiny_elf(
            0x40_0100,
            &[
                (PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000),
                (PT_LOAD, RW, 0x1000_0000, 0, 0x1000),
            ],
        );
        assert!(check("app", &elf, W)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        check("root", &elf, Window::Any).unwrap();
        let elf = tiny_elf(0x50_0000, &[(PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000)]);
        assert!(check("app", &elf, W)
            .unwrap_err()
            .to_string()
            .contains("entry point"));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        assert!(check("x", b"not an elf", W).is_err());
        let elf = tiny_elf(0x40_0100, &[(PT_LOAD, RX, 0x40_0000, 0x1000, 0x1000)]);
        for cut in [0, 10, 63, 64, 100] {
            assert!(check("x", &elf[..cut], W).is_err());
        }
    }
}
