//! Host tools the kernel build and QEMU need, and installing them on a fresh Debian machine.
//!
//! As root, missing packages are installed with `apt-get`; otherwise the exact command to run is
//! printed and the build stops.

use crate::step::{self, Step};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python the kernel's code generators run under (it must have ply, six and tempita).
pub const PYTHON: &str = "/usr/bin/python3";

/// What a step needs from the host.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Building the kernel: make, gcc, binutils, xmllint, Python with ply/six/tempita.
    Kernel,
    /// Building the kernel and booting it in QEMU.
    KernelAndQemu,
    /// All of that, and the host clients in-QEMU tests drive the guest with (curl, socat, nc).
    KernelQemuAndClients,
}

/// (program looked up on PATH, Debian package providing it, the least need that wants it)
const PROGRAMS: &[(&str, &str, Need)] = &[
    ("make", "make", Need::Kernel),
    ("gcc", "gcc", Need::Kernel),
    ("objcopy", "binutils", Need::Kernel),
    ("nm", "binutils", Need::Kernel),
    ("xmllint", "libxml2-utils", Need::Kernel),
    ("qemu-system-x86_64", "qemu-system-x86", Need::KernelAndQemu),
    ("curl", "curl", Need::KernelQemuAndClients),
    ("socat", "socat", Need::KernelQemuAndClients),
    ("nc", "netcat-openbsd", Need::KernelQemuAndClients),
    // The IPv6 test's network namespace and tap device, and its ICMPv6 echo.
    ("ip", "iproute2", Need::KernelQemuAndClients),
    ("ping", "iputils-ping", Need::KernelQemuAndClients),
];

impl Need {
    fn rank(self) -> u8 {
        match self {
            Need::Kernel => 0,
            Need::KernelAndQemu => 1,
            Need::KernelQemuAndClients => 2,
        }
    }
}

/// (Python module, Debian package)
const PY_MODULES: &[(&str, &str)] = &[
    ("ply", "python3-ply"),
    ("six", "python3-six"),
    ("tempita", "python3-tempita"),
];

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Debian packages that are missing for `need`, in a stable order without duplicates.
pub fn missing_packages(need: Need) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let mut add = |pkg: &'static str| {
        if !missing.contains(&pkg) {
            missing.push(pkg);
        }
    };
    for &(prog, pkg, wanted_by) in PROGRAMS {
        if wanted_by.rank() > need.rank() {
            continue;
        }
        if find_program(prog).is_none() {
            add(pkg);
        }
    }
    if !Path::new(PYTHON).is_file() {
        add("python3");
        for &(_, pkg) in PY_MODULES {
            add(pkg);
        }
    } else {
        for &(module, pkg) in PY_MODULES {
            let ok = Command::new(PYTHON)
                .args(["-c", &format!("import {module}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                add(pkg);
            }
        }
    }
    missing
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The command a non-root user has to run to get `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install -y {}",
        packages.join(" ")
    )
}

/// Make sure everything `need` asks for is present, installing it when running as root.
pub fn ensure(need: Need) -> Result<()> {
    let missing = missing_packages(need);
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing host packages: {}\nrun this, then try again:\n    {}",
            missing.join(" "),
            install_command(&missing)
        );
    }
    let s = Step::start(format!("installing host packages: {}", missing.join(" ")));
    let log = std::env::temp_dir().join("xtask-apt-get-update.log");
    step::run_logged(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    let log = std::env::temp_dir().join("xtask-apt-get-install.log");
    step::run_logged(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    let still = missing_packages(need);
    if !still.is_empty() {
        bail!(
            "after installing, still missing: {} (see {})",
            still.join(" "),
            log.display()
        );
    }
    s.done();
    Ok(())
}
