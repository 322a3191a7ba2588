//! From a validated system to a bootable image: build the components, pack them with the system
//! description, build the root task around the pack, and put the two boot files side by side.
//!
//! ```text
//! system.toml ──parse──▶ System ─┐
//! components (one cargo build) ──┼─▶ target/sel4/<v>/<system>.img ─▶ root-task (include_bytes!)
//!                                │
//! target/kernel/<v>/kernel32.elf ┴─▶ target/image/<system>-<v>/{kernel32.elf, root-task.elf}
//! ```
//! Every file is written only when its content changed, so an unchanged tree rebuilds nothing.

use crate::elf::{self, Window};
use crate::kernel::{self, Kernel, Variant};
use crate::step::{self, Step};
use crate::system::SystemFile;
use crate::Ws;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The host target: seL4 user programs are static no_std binaries for it.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile (defined in the workspace Cargo.toml) components are built with.
pub const PROFILE: &str = "sel4";
pub const ROOT_TASK: &str = "root-task";

/// The two files QEMU boots.
#[derive(Clone, Debug)]
pub struct BootImage {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub root_task: PathBuf,
}

/// `--target-dir` of a variant's seL4 builds.
pub fn target_dir(ws: &Ws, variant: Variant) -> PathBuf {
    ws.target.join("sel4").join(variant.name())
}

/// The flags every seL4 user program is built with (see lib/rt/link.ld for the layout).
pub fn rustflags(ws: &Ws) -> Result<String> {
    let script = ws.root.join("lib/rt/link.ld");
    let script = script.to_str().context("workspace path is not UTF-8")?;
    if script.chars().any(char::is_whitespace) {
        bail!("the workspace path `{script}` contains whitespace, which RUSTFLAGS cannot carry; move the checkout");
    }
    Ok([
        "-C relocation-model=static",
        "-C no-redzone=yes",
        "-C target-feature=+crt-static",
        "-C link-arg=-nostartfiles",
        "-C link-arg=-nostdlib",
        "-C link-arg=-static",
        &format!("-C link-arg=-Wl,-T,{script}"),
        "-C link-arg=-Wl,--build-id=none",
        "-C link-arg=-Wl,-z,norelro",
        "-C link-arg=-Wl,-z,noexecstack",
        "-C link-arg=-Wl,--gc-sections",
    ]
    .join(" "))
}

/// A `cargo build` of seL4 programs for `variant`: our profile and flags, the kernel source and
/// configuration in the environment (for lib/sel4's generated code). `--target` is explicit so
/// that RUSTFLAGS do not reach build scripts.
fn sel4_cargo(ws: &Ws, variant: Variant) -> Result<Command> {
    let ksrc = kernel::source(ws)?;
    let autoconf = kernel::write_autoconf(ws, variant)?;
    let mut cmd = Command::new(&ws.cargo);
    cmd.current_dir(&ws.root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(target_dir(ws, variant))
        .env("RUSTFLAGS", rustflags(ws)?)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("SEL4_KERNEL_SOURCE", ksrc)
        .env("SEL4_KERNEL_AUTOCONF", autoconf);
    Ok(cmd)
}

/// Run a cargo build (its diagnostics and progress go to the terminal) and return the
/// executables it produced, by target name.
fn cargo_executables(cmd: &mut Command) -> Result<BTreeMap<String, PathBuf>> {
    let shown = step::show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let mut exes = BTreeMap::new();
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            if let (Some(exe), Some(name)) =
                (msg["executable"].as_str(), msg["target"]["name"].as_str())
            {
                exes.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(exes)
}

/// Build every component of `sys` for `variant` (one cargo invocation) and check their ELFs.
/// Returns (binary name, ELF bytes) for each distinct binary, in the order components name them.
pub fn build_components(
    ws: &Ws,
    sys: &SystemFile,
    variant: Variant,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut packages: Vec<&str> = Vec::new();
    let mut bins: Vec<(&str, &str)> = Vec::new();
    for c in &sys.system.components {
        if !packages.contains(&c.package.as_str()) {
            packages.push(&c.package);
        }
        if !bins.iter().any(|b| b.0 == c.bin) {
            bins.push((&c.bin, &c.package));
        }
    }
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let s = Step::start(format!(
        "components of {} ({variant}): {}",
        sys.name,
        packages.join(", ")
    ));
    let mut cmd = sel4_cargo(ws, variant)?;
    for p in &packages {
        cmd.arg("-p").arg(p);
    }
    let exes = cargo_executables(&mut cmd)?;
    let mut out = Vec::new();
    for (bin, package) in bins {
        let path = exes
            .get(bin)
            .cloned()
            .unwrap_or_else(|| target_dir(ws, variant).join(TARGET).join(PROFILE).join(bin));
        if !path.is_file() {
            bail!("package `{package}` built no binary named `{bin}` (set `bin` in the component to one of its binaries)");
        }
        // Pack without DWARF (the root task needs only the segments; symbols stay for fault
        // reports). The unstripped binary stays where cargo put it, for addr2line and gdb.
        let packed = target_dir(ws, variant).join("packed").join(bin);
        std::fs::create_dir_all(packed.parent().context("packed path has no folder")?)?;
        step::run_logged(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&path)
                .arg(&packed),
            &target_dir(ws, variant)
                .join("packed")
                .join(format!("{bin}.objcopy.log")),
        )?;
        let bytes =
            std::fs::read(&packed).with_context(|| format!("reading {}", packed.display()))?;
        elf::check(
            &format!("component binary `{bin}` ({})", path.display()),
            &bytes,
            Window::Within(sysdesc::IMAGE_BASE, sysdesc::IMAGE_LIMIT),
        )?;
        out.push((bin.to_string(), bytes));
    }
    s.done();
    Ok(out)
}

/// Pack the system and its ELFs; returns the image path (rewritten only when it changed).
pub fn pack(
    ws: &Ws,
    sys: &SystemFile,
    variant: Variant,
    elfs: &[(String, Vec<u8>)],
) -> Result<PathBuf> {
    let s = Step::start(format!("pack {}.img ({variant})", sys.name));
    let image = sysdesc::Image {
        magic: sysdesc::IMAGE_MAGIC,
        system: sys.system.clone(),
        elfs: elfs
            .iter()
            .map(|(name, bytes)| sysdesc::Elf { name, bytes })
            .collect(),
    };
    let bytes = image.encode().map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = target_dir(ws, variant).join(format!("{}.img", sys.name));
    let written = step::write_if_changed(&path, &bytes)?;
    s.note(&format!(
        "{} ({} bytes, {} ELF(s))",
        if written { "written" } else { "unchanged" },
        bytes.len(),
        elfs.len()
    ));
    Ok(path)
}

/// Build the root task around `image` and assemble the boot folder.
pub fn root_task(ws: &Ws, sys: &SystemFile, kernel: &Kernel, image: &Path) -> Result<BootImage> {
    let variant = kernel.variant;
    // Systems share the root-task build of a variant: build and copy under one lock, so that
    // another system's build cannot replace the binary between the two.
    let _lock = step::lock(&target_dir(ws, variant).join("root-task.xtask-lock"))?;
    let s = Step::start(format!("root task of {} ({variant})", sys.name));
    let mut cmd = sel4_cargo(ws, variant)?;
    cmd.args(["-p", ROOT_TASK]).env("SYSTEM_IMAGE", image);
    let exes = cargo_executables(&mut cmd)?;
    let built = exes
        .get(ROOT_TASK)
        .cloned()
        .context("cargo built no `root-task` binary")?;
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    elf::check(
        &format!("root task ({})", built.display()),
        &bytes,
        Window::Any,
    )?;
    let dir = ws
        .target
        .join("image")
        .join(format!("{}-{variant}", sys.name));
    let boot = BootImage {
        kernel: dir.join("kernel32.elf"),
        root_task: dir.join("root-task.elf"),
        dir,
    };
    step::write_if_changed(&boot.root_task, &bytes)?;
    step::copy_if_changed(&kernel.elf32, &boot.kernel)?;
    s.done();
    Ok(boot)
}

/// The whole pipeline for one system and variant (the kernel must be built).
pub fn build(ws: &Ws, sys: &SystemFile, kernel: &Kernel) -> Result<BootImage> {
    let elfs = build_components(ws, sys, kernel.variant)?;
    let image = pack(ws, sys, kernel.variant, &elfs)?;
    let boot = root_task(ws, sys, kernel, &image)?;
    println!("    boot image: {}", boot.dir.display());
    Ok(boot)
}
