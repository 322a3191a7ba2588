//! `cargo xtask test`: host tests, then the in-QEMU tests.
//!
//! Host tests are `cargo test --workspace` minus the packages that only build for seL4 (those
//! with `[package.metadata.sel4] target-only = true`). In-QEMU tests are the system files in
//! `tests/qemu/`; every one is validated before any is built, then each is built, booted and
//! judged by its console (see [`crate::qemu::Watch`]).

use crate::image;
use crate::kernel::{self, Variant};
use crate::qemu::{self, Console, Verdict, Watch};
use crate::step::{self, Step};
use crate::system::{self, SystemFile};
use crate::Ws;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A workspace package as far as testing cares.
pub struct HostPackage {
    pub name: String,
    pub target_only: bool,
    /// Names of its bench targets.
    pub benches: Vec<String>,
    /// Names of its binary targets.
    pub bins: Vec<String>,
}

/// The workspace members (from `cargo metadata --no-deps`).
pub fn host_packages(ws: &Ws) -> Result<Vec<HostPackage>> {
    let text = step::output(
        Command::new(&ws.cargo)
            .current_dir(&ws.root)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--manifest-path",
            ])
            .arg(ws.root.join("Cargo.toml")),
    )?;
    packages_from_metadata(&text)
}

fn packages_from_metadata(json: &str) -> Result<Vec<HostPackage>> {
    let meta: serde_json::Value =
        serde_json::from_str(json).context("cargo metadata printed no JSON")?;
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    let mut out = Vec::new();
    for p in meta["packages"]
        .as_array()
        .context("cargo metadata has no `packages`")?
    {
        if !p["id"].as_str().is_some_and(|id| members.contains(&id)) {
            continue;
        }
        let name = p["name"]
            .as_str()
            .context("package without a name")?
            .to_string();
        let target_only = p["metadata"]["sel4"]["target-only"]
            .as_bool()
            .unwrap_or(false);
        let targets = || p["targets"].as_array().into_iter().flatten();
        let of_kind = |t: &serde_json::Value, kind: &str| {
            t["kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k == kind)
        };
        let names = |kind: &str| -> Vec<String> {
            targets()
                .filter(|t| of_kind(t, kind))
                .filter_map(|t| t["name"].as_str())
                .map(String::from)
                .collect()
        };
        let benches = names("bench");
        let bins = names("bin");
        out.push(HostPackage {
            name,
            target_only,
            benches,
            bins,
        });
    }
    Ok(out)
}

/// `tests/qemu/*.toml`, sorted.
pub fn test_files(ws: &Ws) -> Result<Vec<PathBuf>> {
    let dir = ws.root.join("tests/qemu");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn test_name(p: &std::path::Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn host_tests(ws: &Ws) -> Result<bool> {
    let packages = host_packages(ws)?;
    let excluded: Vec<&str> = packages
        .iter()
        .filter(|p| p.target_only)
        .map(|p| p.name.as_str())
        .collect();
    let s = Step::start(format!(
        "host tests (cargo test --workspace{})",
        if excluded.is_empty() {
            String::new()
        } else {
            format!(", excluding seL4-only {}", excluded.join(", "))
        }
    ));
    let mut cmd = Command::new(&ws.cargo);
    cmd.current_dir(&ws.root).args(["test", "--workspace"]);
    for e in &excluded {
        cmd.args(["--exclude", e]);
    }
    // No SEL4_KERNEL_* variables: lib/sel4's build script then finds the source itself and
    // assumes the uniprocessor configuration, exactly as a plain `cargo test` does, so the two
    // share one build instead of invalidating each other.
    match step::run_streaming(&mut cmd) {
        Ok(()) => {
            s.done();
            Ok(true)
        }
        Err(e) => {
            drop(s);
            eprintln!("error: {e:#}");
            Ok(false)
        }
    }
}

/// The first console line that says part of a test was `SKIPPED`, trimmed (empty if none).
fn skipped_part(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("SKIPPED"))
        .map(|l| l.trim().chars().take(160).collect())
        .unwrap_or_default()
}

struct Outcome {
    name: String,
    pass: bool,
    detail: String,
}

/// Build, boot and judge one test system.
fn qemu_test(
    ws: &Ws,
    sys: &SystemFile,
    kernels: &mut BTreeMap<Variant, kernel::Kernel>,
) -> Result<(Verdict, String)> {
    let spec = sys
        .test
        .as_ref()
        .context("not a test system (no [test] table)")?;
    if let std::collections::btree_map::Entry::Vacant(e) = kernels.entry(spec.kernel) {
        e.insert(kernel::build(ws, spec.kernel)?);
    }
    let boot = image::build(ws, sys, &kernels[&spec.kernel])?;
    // Host ports chosen now, the same in QEMU's forwards and in the host commands.
    let mut ports = BTreeMap::new();
    let qemu_args = spec
        .qemu_args
        .iter()
        .map(|a| crate::hostnet::substitute_ports(a, &mut ports))
        .collect::<Result<Vec<_>>>()?;
    let mut commands = Vec::new();
    for c in &spec.host {
        let mut c = c.clone();
        c.run = crate::hostnet::substitute_ports(&c.run, &mut ports)?;
        commands.push(c);
    }
    let host = (!commands.is_empty()).then(|| qemu::HostRun {
        after: spec.host_after.clone(),
        commands,
    });
    let cmd = qemu::command(&boot, spec.smp, Console::Plain, &qemu_args);
    println!(
        "==> boot {} ({}, -smp {}, timeout {} s)",
        sys.name, spec.kernel, spec.smp, spec.timeout
    );
    println!("    {}", step::show(&cmd));
    let log = ws
        .target
        .join("qemu-logs")
        .join(format!("{}.log", sys.name));
    let watch = Watch::new(spec.expect.clone(), spec.fail_patterns());
    let (verdict, text) = qemu::watch(cmd, watch, Duration::from_secs(spec.timeout), &log, host)?;
    if let Verdict::Fail(why) = &verdict {
        eprintln!("---- console of {} ({why}) ----", sys.name);
        eprint!("{text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
        eprintln!(
            "---- end of console of {} (saved in {}) ----",
            sys.name,
            log.display()
        );
    }
    Ok((verdict, text))
}

pub fn test(
    ws: &Ws,
    host_only: bool,
    qemu_only: bool,
    filter: Option<&str>,
    list: bool,
) -> Result<i32> {
    let files: Vec<PathBuf> = test_files(ws)?
        .into_iter()
        .filter(|p| filter.is_none_or(|f| test_name(p).contains(f)))
        .collect();
    if list {
        for f in &files {
            let about = system::load(f)
                .map(|s| {
                    s.test
                        .map(|t| format!("{} -smp {}: {}", t.kernel, t.smp, t.description))
                        .unwrap_or_default()
                })
                .unwrap_or_else(|e| format!("INVALID: {e:#}"));
            println!("{:24} {about}", test_name(f));
        }
        if campaign_selected(filter) {
            println!(
                "{:24} smp -smp 2: {}",
                crate::campaign::TEST_NAME,
                crate::campaign::TEST_DESCRIPTION
            );
        }
        return Ok(0);
    }
    let started = Instant::now();
    let host_ok = if qemu_only { true } else { host_tests(ws)? };
    if host_only {
        println!(
            "==> host tests {} ({})",
            if host_ok { "passed" } else { "FAILED" },
            step::secs(started.elapsed().as_secs_f64())
        );
        return Ok(if host_ok { 0 } else { 1 });
    }

    // Validate every test system before building any.
    let mut outcomes = Vec::new();
    let mut systems = Vec::new();
    for f in &files {
        match crate::load_checked(ws, f) {
            Ok(s) if s.test.is_none() => outcomes.push(Outcome {
                name: s.name,
                pass: false,
                detail: format!("{} has no [test] table", f.display()),
            }),
            Ok(s) => systems.push(s),
            Err(e) => {
                eprintln!("error: {e:#}");
                outcomes.push(Outcome {
                    name: test_name(f),
                    pass: false,
                    detail: "invalid system description".into(),
                });
            }
        }
    }
    let campaign = campaign_selected(filter);
    if files.is_empty() && !campaign {
        println!(
            "==> no in-QEMU tests{} in {}",
            filter
                .map(|f| format!(" matching `{f}`"))
                .unwrap_or_default(),
            ws.root.join("tests/qemu").display()
        );
    } else if files.is_empty() {
        crate::deps::ensure(crate::deps::Need::KernelAndQemu)?;
    } else {
        let clients = systems
            .iter()
            .any(|s| s.test.as_ref().is_some_and(|t| !t.host.is_empty()));
        crate::deps::ensure(if clients {
            crate::deps::Need::KernelQemuAndClients
        } else {
            crate::deps::Need::KernelAndQemu
        })?;
    }
    let mut kernels = BTreeMap::new();
    for sys in &systems {
        let t = Instant::now();
        let (pass, detail) = match qemu_test(ws, sys, &mut kernels) {
            // A passing test whose host checks could not run here (e.g. not root) says so in
            // a `SKIPPED` line: shown with the result, never hidden in the log.
            Ok((Verdict::Pass, text)) => (true, skipped_part(&text)),
            Ok((Verdict::Fail(why), _)) => (false, why),
            Err(e) => {
                eprintln!("error: {e:#}");
                (
                    false,
                    format!("could not build or boot: {e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                )
            }
        };
        println!(
            "{} {} ({}){}",
            if pass { "PASS" } else { "FAIL" },
            sys.name,
            step::secs(t.elapsed().as_secs_f64()),
            if pass && !detail.is_empty() { format!(" — {detail}") } else { String::new() }
        );
        outcomes.push(Outcome {
            name: sys.name.clone(),
            pass,
            detail,
        });
    }

    let mut skipped = None;
    if campaign {
        let t = Instant::now();
        let result = match campaign_test(ws, &mut kernels) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e:#}");
                Some((
                    false,
                    format!("{e:#}")
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                ))
            }
        };
        match result {
            None => {
                let why =
                    "system.toml has no `[supervisor] control_serial = true`, so its root task \
                           takes no faults to inject";
                println!("SKIP {}: {why}", crate::campaign::TEST_NAME);
                skipped = Some(why);
            }
            Some((pass, detail)) => {
                println!(
                    "{} {} ({})",
                    if pass { "PASS" } else { "FAIL" },
                    crate::campaign::TEST_NAME,
                    step::secs(t.elapsed().as_secs_f64())
                );
                outcomes.push(Outcome {
                    name: crate::campaign::TEST_NAME.to_string(),
                    pass,
                    detail,
                });
            }
        }
    }

    println!(
        "\n==> summary ({})",
        step::secs(started.elapsed().as_secs_f64())
    );
    if !qemu_only {
        println!("host tests: {}", if host_ok { "passed" } else { "FAILED" });
    }
    for o in &outcomes {
        if o.pass && o.detail.contains("SKIPPED") {
            println!("PASS {} (partly: {})", o.name, o.detail);
        } else if o.pass {
            println!("PASS {}", o.name);
        } else {
            println!("FAIL {}: {}", o.name, o.detail);
        }
    }
    if let Some(why) = skipped {
        println!("SKIP {}: {why}", crate::campaign::TEST_NAME);
    }
    let passed = outcomes.iter().filter(|o| o.pass).count();
    let failed = outcomes.len() - passed;
    println!("{passed} passed, {failed} failed");
    Ok(if host_ok && failed == 0 { 0 } else { 1 })
}

/// Whether the fault campaign runs: with no filter, or one its name contains.
fn campaign_selected(filter: Option<&str>) -> bool {
    filter.is_none_or(|f| crate::campaign::TEST_NAME.contains(f))
}

/// The short fault campaign on the product system (SMP kernel, `-smp 2`); `None` (skipped) when
/// the system has no control channel to inject faults through.
fn campaign_test(
    ws: &Ws,
    kernels: &mut BTreeMap<Variant, kernel::Kernel>,
) -> Result<Option<(bool, String)>> {
    let sys = crate::load_checked(ws, &ws.root.join("system.toml"))?;
    if !sys.system.supervisor.control_serial {
        return Ok(None);
    }
    if let std::collections::btree_map::Entry::Vacant(e) = kernels.entry(Variant::Smp) {
        e.insert(kernel::build(ws, Variant::Smp)?);
    }
    let boot = image::build(ws, &sys, &kernels[&Variant::Smp])?;
    crate::campaign::test_entry(ws, &boot).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_only_packages_and_benches_are_found_among_members() {
        let json = r#"{
          "workspace_members": ["a 0.1.0 (path+file:///w/a)", "rt 0.1.0 (path+file:///w/rt)"],
          "packages": [
            {"id": "a 0.1.0 (path+file:///w/a)", "name": "a", "metadata": null,
             "targets": [{"kind": ["lib"]}, {"kind": ["bench"], "name": "speed"}]},
            {"id": "rt 0.1.0 (path+file:///w/rt)", "name": "rt", "metadata": {"sel4": {"target-only": true}},
             "targets": [{"kind": ["lib"], "name": "rt"}, {"kind": ["bin"], "name": "rtb"}]},
            {"id": "dep 1.0.0 (registry+...)", "name": "dep", "metadata": null, "targets": []}
          ]}"#;
        let p = packages_from_metadata(json).unwrap();
        assert_eq!(p.len(), 2);
        assert!(!p[0].target_only && p[0].benches == ["speed"]);
        assert!(p[1].target_only && p[1].benches.is_empty());
        assert!(p[0].bins.is_empty());
        assert_eq!(p[1].bins, ["rtb"]);
    }
}
