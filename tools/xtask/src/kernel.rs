//! The seL4 kernel: where its source comes from, our configuration of it, and the out-of-tree build.
//!
//! * Source: the crates.io package `sel4-sys =0.0.28` ships the seL4 5.0.0 tree in `seL4/`. It is
//!   named by `tools/kernel-source/Cargo.toml` (never compiled); `cargo metadata` downloads it and
//!   tells where it is.
//! * Configuration: [`OPTIONS`] is the whole kernel configuration; [`autoconf`] renders it as the
//!   `autoconf.h` of a [`Variant`] (uniprocessor or two-core SMP). Components are built against the
//!   same file (`SEL4_KERNEL_AUTOCONF`), because invocation labels depend on it.
//! * Build: `make -f <src>/Makefile` in `target/kernel/<variant>/`, then `objcopy` to the 32-bit
//!   ELF QEMU's multiboot loader accepts. A stamp over every input makes it incremental.

use crate::step::{self, Step};
use crate::Ws;
use anyhow::{bail, Context, Result};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A kernel configuration variant.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Uniprocessor kernel (CONFIG_MAX_NUM_NODES 1).
    Up,
    /// SMP kernel for two cores (CONFIG_MAX_NUM_NODES 2).
    Smp,
}

impl Variant {
    pub const ALL: [Variant; 2] = [Variant::Up, Variant::Smp];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Up => "up",
            Variant::Smp => "smp",
        }
    }

    /// Number of cores the kernel supports (CONFIG_MAX_NUM_NODES).
    pub fn max_nodes(self) -> u32 {
        match self {
            Variant::Up => 1,
            Variant::Smp => 2,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Value of one configuration option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// A boolean option that is on (`#define CONFIG_X 1`).
    On,
    Num(u64),
    /// A string option (`#define CONFIG_X "…"`).
    Str(&'static str),
    /// Depends on the variant: CONFIG_MAX_NUM_NODES.
    Nodes,
}

/// The kernel configuration (every name gets the `CONFIG_` prefix). Options not listed are off;
/// IOMMU, VTX, SUPPORT_PCID and HUGE_PAGE must stay off (TCG lacks INVPCID; no VT-x under TCG).
/// CONFIG_USER_STACK_TRACE_LENGTH is defined by the Makefile under DEBUG=1 and must not be here.
pub const OPTIONS: &[(&str, Val)] = &[
    ("KERNEL_MASTER", Val::On),
    ("ARCH_X86", Val::On),
    ("ARCH_X86_64", Val::On),
    ("PLAT_PC99", Val::On),
    ("WORD_SIZE", Val::Num(64)),
    ("HAVE_FPU", Val::On),
    ("FXSAVE", Val::On),
    ("XSAVE_SIZE", Val::Num(512)),
    ("FSGSBASE_MSR", Val::On),
    ("SYSCALL", Val::On),
    ("IRQ_IOAPIC", Val::On),
    ("MAX_NUM_IOAPIC", Val::Num(1)),
    ("XAPIC", Val::On),
    ("MULTIBOOT_GRAPHICS_MODE_NONE", Val::On),
    ("CACHE_LN_SZ", Val::Num(64)),
    ("ROOT_CNODE_SIZE_BITS", Val::Num(16)),
    ("TIMER_TICK_MS", Val::Num(2)),
    ("TIME_SLICE", Val::Num(5)),
    ("RETYPE_FAN_OUT_LIMIT", Val::Num(256)),
    ("MAX_NUM_WORK_UNITS_PER_PREEMPTION", Val::Num(100)),
    ("MAX_NUM_BOOTINFO_UNTYPED_CAPS", Val::Num(230)),
    ("FASTPATH", Val::On),
    ("NUM_DOMAINS", Val::Num(1)),
    ("NUM_PRIORITIES", Val::Num(256)),
    ("MAX_NUM_NODES", Val::Nodes),
    ("KERNEL_STACK_BITS", Val::Num(KERNEL_STACK_BITS)),
    ("FPU_MAX_RESTORES_SINCE_SWITCH", Val::Num(64)),
    ("DEBUG_BUILD", Val::On),
    ("PRINTING", Val::On),
    ("IRQ_REPORTING", Val::On),
    ("COLOUR_PRINTING", Val::On),
    ("OPTIMISATION_O2", Val::On),
    ("NO_BENCHMARKS", Val::On),
    ("KERNEL_CFLAGS", Val::Str("")),
    ("KERNEL_COMPILER", Val::Str("")),
    ("KERNEL_EXTRA_CPPFLAGS", Val::Str("")),
    ("DOMAIN_SCHEDULE", Val::Str("")),
];

const KERNEL_STACK_BITS: u64 = 12;

/// Make arguments (besides `-f` and `SOURCE_ROOT`).
const MAKE_ARGS: &[&str] = &[
    "ARCH=x86",
    "SEL4_ARCH=x86_64",
    "PLAT=pc99",
    "DEBUG=1",
    "CIRCULAR_INCLUDES=true",
];

/// Extra preprocessor flags. The stack-alignment pair works around a seL4 5.0 bug: kernel stacks
/// are aligned to 16 bytes, but the pending-interrupt exit path masks the stack pointer to a
/// 2^KERNEL_STACK_BITS boundary and then overwrites other kernel data. Predefining the header's
/// guard skips `mode/kernel/stack.h` (which defines nothing else) and aligns stacks to 4 KiB.
fn cppflags(build_dir: &Path) -> String {
    format!(
        "-I{} -D__KERNEL_MODE_STACK_H -DKERNEL_STACK_ALIGNMENT={}",
        build_dir.display(),
        1u64 << KERNEL_STACK_BITS
    )
}

/// gcc 12 warnings that are errors under the kernel's -Werror; -mpopcnt avoids an undefined
/// `__popcountdi2` in the SMP kernel (which links no libgcc). QEMU's CPU must then have POPCNT.
const CFLAGS: &str = "-Wno-address-of-packed-member -Wno-array-bounds -mpopcnt";

/// Bump when the way the kernel is built changes in a way the stamp inputs would not show.
const RECIPE_VERSION: &str = "1";

/// The `autoconf.h` of `variant`.
pub fn autoconf(variant: Variant) -> String {
    let mut out = String::from(
        "/* Generated by `cargo xtask` (tools/xtask/src/kernel.rs); do not edit. */\n\
         #ifndef AUTOCONF_INCLUDED\n#define AUTOCONF_INCLUDED\n",
    );
    for &(name, val) in OPTIONS {
        let value = match val {
            Val::On => "1".to_string(),
            Val::Num(n) => n.to_string(),
            Val::Str(s) => format!("\"{s}\""),
            Val::Nodes => variant.max_nodes().to_string(),
        };
        out.push_str(&format!("#define CONFIG_{name} {value}\n"));
    }
    out.push_str("#endif /* AUTOCONF_INCLUDED */\n");
    out
}

/// The kernel build folder of `variant`.
pub fn build_dir(ws: &Ws, variant: Variant) -> PathBuf {
    ws.target.join("kernel").join(variant.name())
}

/// Path of the variant's `autoconf.h`.
pub fn autoconf_path(ws: &Ws, variant: Variant) -> PathBuf {
    build_dir(ws, variant).join("autoconf.h")
}

/// Write the variant's `autoconf.h` (only when its content changed) and return its path.
pub fn write_autoconf(ws: &Ws, variant: Variant) -> Result<PathBuf> {
    let path = autoconf_path(ws, variant);
    step::write_if_changed(&path, autoconf(variant).as_bytes())?;
    Ok(path)
}

/// The kernel source folder (`…/sel4-sys-0.0.28/seL4`), found once per run with `cargo metadata`
/// (which downloads the package when it is not there yet).
pub fn source(ws: &Ws) -> Result<PathBuf> {
    static KSRC: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = KSRC.get() {
        return Ok(p.clone());
    }
    let s = Step::start("locating the seL4 kernel source (sel4-sys =0.0.28)");
    let manifest = ws.root.join("tools/kernel-source/Cargo.toml");
    let text = step::output(
        Command::new(&ws.cargo)
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(&manifest),
    )?;
    let dir = source_from_metadata(&text)?;
    for must in [
        "Makefile",
        "src",
        "include",
        "libsel4/include/interfaces/sel4.xml",
    ] {
        if !dir.join(must).exists() {
            bail!("kernel source {} has no {must}", dir.display());
        }
    }
    println!("    {}", dir.display());
    s.done();
    Ok(KSRC.get_or_init(|| dir).clone())
}

/// Find package `sel4-sys` in `cargo metadata` output; its manifest's folder + `seL4`.
pub fn source_from_metadata(json: &str) -> Result<PathBuf> {
    let meta: serde_json::Value =
        serde_json::from_str(json).context("cargo metadata printed no JSON")?;
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata has no `packages`")?;
    let pkg = packages.iter().find(|p| p["name"] == "sel4-sys").context(
        "cargo metadata lists no package `sel4-sys` (see tools/kernel-source/Cargo.toml)",
    )?;
    let manifest = pkg["manifest_path"]
        .as_str()
        .context("package sel4-sys has no manifest_path")?;
    let dir = Path::new(manifest)
        .parent()
        .context("manifest_path has no folder")?;
    Ok(dir.join("seL4"))
}

/// The built kernel of one variant.
pub struct Kernel {
    pub variant: Variant,
    /// The 32-bit ELF QEMU boots.
    pub elf32: PathBuf,
}

/// A folder holding `python` -> `/usr/bin/python3`, to put first on PATH (the kernel's tools are
/// started as `python` and need Debian's Python, which has ply).
fn python_shim(ws: &Ws) -> Result<PathBuf> {
    let bin = ws.target.join("tools/bin");
    let link = bin.join("python");
    if fs::read_link(&link).ok().as_deref() != Some(Path::new(crate::deps::PYTHON)) {
        fs::create_dir_all(&bin)?;
        let tmp = bin.join(format!("python.tmp.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(crate::deps::PYTHON, &tmp)?;
        fs::rename(&tmp, &link)?;
    }
    Ok(bin)
}

fn ncpu() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Build (or find up to date) the kernel of `variant`.
pub fn build(ws: &Ws, variant: Variant) -> Result<Kernel> {
    let ksrc = source(ws)?;
    let dir = build_dir(ws, variant);
    fs::create_dir_all(&dir)?;
    let _lock = step::lock(
        &ws.target
            .join("kernel")
            .join(format!("{}.lock", variant.name())),
    )?;
    let s = Step::start(format!("kernel ({variant})"));
    write_autoconf(ws, variant)?;
    let conf = autoconf(variant);
    let cpp = cppflags(&dir);
    let stamp_value = format!(
        "{:016x}\n",
        step::fnv1a(&[
            RECIPE_VERSION.as_bytes(),
            conf.as_bytes(),
            ksrc.as_os_str().as_encoded_bytes(),
            MAKE_ARGS.join(" ").as_bytes(),
            cpp.as_bytes(),
            CFLAGS.as_bytes(),
        ])
    );
    let stamp = dir.join("stamp");
    let elf32 = dir.join("kernel32.elf");
    if elf32.is_file() && fs::read_to_string(&stamp).ok().as_deref() == Some(stamp_value.as_str()) {
        s.note("up to date");
        return Ok(Kernel { variant, elf32 });
    }

    crate::deps::ensure(crate::deps::Need::Kernel)?;
    // Something changed: start from a clean folder (the build takes seconds, and stale objects
    // from another configuration must not survive).
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if entry.file_name() != "autoconf.h" {
            let p = entry.path();
            if p.is_dir() {
                fs::remove_dir_all(&p)?;
            } else {
                fs::remove_file(&p)?;
            }
        }
    }
    let shim = python_shim(ws)?;
    let path = std::env::join_paths(std::iter::once(shim).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))?;
    let log = ws
        .target
        .join("kernel")
        .join(format!("{}.log", variant.name()));
    let mut make = Command::new("make");
    make.current_dir(&dir)
        .arg("-f")
        .arg(ksrc.join("Makefile"))
        .arg(format!("SOURCE_ROOT={}", ksrc.display()))
        .args(MAKE_ARGS)
        .arg(format!("-j{}", ncpu()))
        .env("CPPFLAGS", &cpp)
        .env("CFLAGS", CFLAGS)
        .env("PATH", path)
        // Make variables inherited from an outer make would change the build.
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    step::run_logged(&mut make, &log)?;

    let elf = dir.join("kernel.elf");
    check_stack_alignment(&elf)?;
    step::run_logged(
        Command::new("objcopy")
            .arg("-O")
            .arg("elf32-i386")
            .arg(&elf)
            .arg(&elf32),
        &ws.target
            .join("kernel")
            .join(format!("{}-objcopy.log", variant.name())),
    )?;
    fs::write(&stamp, stamp_value)?;
    s.note("built");
    Ok(Kernel { variant, elf32 })
}

/// Fail unless `kernel_stack_alloc` is 4 KiB aligned (the workaround in [`cppflags`] took effect).
fn check_stack_alignment(elf: &Path) -> Result<()> {
    let text = step::output(Command::new("nm").arg(elf))?;
    let addr = stack_alloc_address(&text)
        .with_context(|| format!("`nm {}` shows no kernel_stack_alloc symbol", elf.display()))?;
    if !addr.ends_with("000") {
        bail!(
            "kernel_stack_alloc is at 0x{addr}, not 4 KiB aligned: the kernel-stack alignment \
             workaround (-D__KERNEL_MODE_STACK_H -DKERNEL_STACK_ALIGNMENT=4096) did not take effect; \
             such a kernel corrupts its own data on interrupts"
        );
    }
    Ok(())
}

fn stack_alloc_address(nm: &str) -> Option<String> {
    nm.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (addr, _kind, name) = (f.next()?, f.next()?, f.next()?);
        (name == "kernel_stack_alloc").then(|| addr.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoconf_is_guarded_and_differs_only_in_node_count() {
        let up = autoconf(Variant::Up);
        let smp = autoconf(Variant::Smp);
        assert!(up.contains("#ifndef AUTOCONF_INCLUDED\n#define AUTOCONF_INCLUDED\n"));
        assert!(up.trim_end().ends_with("#endif /* AUTOCONF_INCLUDED */"));
        assert!(up.contains("#define CONFIG_MAX_NUM_NODES 1\n"));
        assert!(smp.contains("#define CONFIG_MAX_NUM_NODES 2\n"));
        assert_eq!(
            up.replace("CONFIG_MAX_NUM_NODES 1", "CONFIG_MAX_NUM_NODES 2"),
            smp
        );
        assert!(up.contains("#define CONFIG_KERNEL_CFLAGS \"\"\n"));
        assert!(up.contains("#define CONFIG_PRINTING 1\n"));
        assert!(up.contains("#define CONFIG_KERNEL_STACK_BITS 12\n"));
    }

    #[test]
    fn forbidden_options_stay_off() {
        let up = autoconf(Variant::Up);
        for off in [
            "IOMMU",
            "VTX",
            "SUPPORT_PCID",
            "HUGE_PAGE",
            "USER_STACK_TRACE_LENGTH",
            "X2APIC",
        ] {
            assert!(
                !up.contains(&format!("CONFIG_{off} ")),
                "CONFIG_{off} must not be defined"
            );
        }
        let names: Vec<_> = OPTIONS.iter().map(|o| o.0).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len(), "an option is listed twice");
    }

    #[test]
    fn stack_alignment_workaround_matches_stack_bits() {
        assert!(cppflags(Path::new("/b")).contains("-DKERNEL_STACK_ALIGNMENT=4096"));
    }

    #[test]
    fn kernel_stack_symbol_is_found_in_nm_output() {
        let nm = "ffffffff80001000 T _start\nffffffff80123000 B kernel_stack_alloc\n";
        assert_eq!(stack_alloc_address(nm).as_deref(), Some("ffffffff80123000"));
        assert_eq!(stack_alloc_address("ffff T other\n"), None);
    }

    #[test]
    fn source_dir_comes_from_the_sel4_sys_manifest() {
        let json = r#"{"packages":[{"name":"kernel-source","manifest_path":"/w/Cargo.toml"},
            {"name":"sel4-sys","manifest_path":"/reg/sel4-sys-0.0.28/Cargo.toml"}]}"#;
        assert_eq!(
            source_from_metadata(json).unwrap(),
            PathBuf::from("/reg/sel4-sys-0.0.28/seL4")
        );
        assert!(source_from_metadata(r#"{"packages":[]}"#).is_err());
    }
}
