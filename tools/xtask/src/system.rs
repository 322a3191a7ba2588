//! Loading system description files: `system.toml` (the product) and `tests/qemu/*.toml` (in-QEMU
//! tests: a system description plus a `[test]` table saying how to boot and judge it).
//!
//! The `[test]` table is removed before the rest goes to [`sysdesc::parse`], which reports every
//! problem of the description; all of them are printed before anything is built.

use crate::kernel::Variant;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Cores of the largest kernel we build (the SMP variant).
pub const MAX_CORES: u8 = 2;

/// Console lines that always fail a test (kernel halts and assertion failures, Rust panics).
pub const ALWAYS_FAIL: &[&str] = &[
    "TEST FAIL",
    "panicked",
    "KERNEL PANIC",
    "halting",
    "Halting",
    "seL4 failed assertion",
    "seL4 called fail",
];

/// The `[test]` table of a test system file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Which kernel to boot.
    #[serde(default = "default_kernel")]
    pub kernel: Variant,
    /// Cores QEMU gives the guest.
    #[serde(default = "one")]
    pub smp: u32,
    /// Seconds from QEMU's start until every `expect` line must have appeared.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    /// Fragments that must all appear on the console (each within one line) for the test to pass.
    pub expect: Vec<String>,
    /// Fragments that fail the test when they appear (besides [`ALWAYS_FAIL`]).
    #[serde(default)]
    pub fail: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// Extra QEMU arguments (devices, networks), appended to the standard command line.
    /// `{port:NAME}` stands for a host port chosen free at run time (the same NAME, the same
    /// port, here and in `host` commands).
    #[serde(default)]
    pub qemu_args: Vec<String>,
    /// Host commands (real clients: curl, socat) run one after the other once every fragment
    /// of `host_after` has appeared on the console; each must succeed for the test to pass.
    #[serde(default)]
    pub host: Vec<crate::hostnet::HostCommand>,
    /// Console fragments that say the guest is ready for the `host` commands.
    #[serde(default)]
    pub host_after: Vec<String>,
}

fn default_kernel() -> Variant {
    Variant::Up
}
fn one() -> u32 {
    1
}
fn default_timeout() -> u64 {
    60
}

impl TestSpec {
    /// Every pattern that fails the test.
    pub fn fail_patterns(&self) -> Vec<String> {
        ALWAYS_FAIL
            .iter()
            .map(|s| s.to_string())
            .chain(self.fail.iter().cloned())
            .collect()
    }
}

/// A loaded and validated system description.
#[derive(Debug)]
pub struct SystemFile {
    /// The file's stem: names the packed image and the boot image folder.
    pub name: String,
    pub system: sysdesc::System,
    pub test: Option<TestSpec>,
}

/// What was wrong with a system file: every problem, to print before anything is built.
#[derive(Debug)]
pub struct Invalid {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} problem(s) in the system description:",
            self.path.display(),
            self.problems.len()
        )?;
        write!(f, "  - {}", self.problems.join("\n  - "))
    }
}

impl std::error::Error for Invalid {}

/// Read and validate a system file.
pub fn load(path: &Path) -> Result<SystemFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading system description {}", path.display()))?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .with_context(|| format!("{}: file name is not UTF-8", path.display()))?
        .to_string();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "{}: a system file's name may only have letters, digits, `-` and `_`",
            path.display()
        );
    }
    let (system, test) = parse_text(&text).map_err(|problems| Invalid {
        path: path.to_path_buf(),
        problems,
    })?;
    Ok(SystemFile { name, system, test })
}

/// Split off `[test]`, validate both parts, and return every problem found.
pub fn parse_text(text: &str) -> Result<(sysdesc::System, Option<TestSpec>), Vec<String>> {
    let mut value: toml::Table =
        toml::from_str(text).map_err(|e| vec![format!("not valid TOML: {e}")])?;
    let mut problems = Vec::new();
    let test = match value.remove("test") {
        None => None,
        Some(t) => match t.try_into::<TestSpec>() {
            Ok(spec) => {
                problems.extend(check_spec(&spec));
                Some(spec)
            }
            Err(e) => {
                problems.push(format!("[test]: {e}"));
                None
            }
        },
    };
    let rest = toml::to_string(&value)
        .map_err(|e| vec![format!("cannot re-serialize the description: {e}")])?;
    let system = match sysdesc::parse(&rest, MAX_CORES) {
        Ok(s) => Some(s),
        Err(errs) => {
            problems.extend(errs.into_iter().map(|e| e.to_string()));
            None
        }
    };
    match system {
        Some(s) if problems.is_empty() => Ok((s, test)),
        _ => Err(problems),
    }
}

fn check_spec(spec: &TestSpec) -> Vec<String> {
    let mut p = Vec::new();
    if spec.expect.iter().all(|e| e.trim().is_empty()) {
        p.push("[test]: `expect` must name at least one non-empty line fragment (a test that cannot fail is a defect)".into());
    }
    if spec.fail.iter().any(|f| f.is_empty()) {
        p.push("[test]: an empty `fail` pattern would fail on every line".into());
    }
    if spec.smp == 0 {
        p.push("[test]: `smp` must be at least 1".into());
    }
    if spec.smp > spec.kernel.max_nodes() {
        p.push(format!(
            "[test]: smp = {} needs a kernel with that many cores, but kernel = \"{}\" has {}",
            spec.smp,
            spec.kernel,
            spec.kernel.max_nodes()
        ));
    }
    if spec.timeout == 0 {
        p.push("[test]: `timeout` must be at least 1 second".into());
    }
    if !spec.host.is_empty() && spec.host_after.iter().all(|f| f.trim().is_empty()) {
        p.push("[test]: `host` commands need `host_after` (console fragments saying the guest is ready)".into());
    }
    if spec
        .host
        .iter()
        .any(|c| c.run.trim().is_empty() || c.timeout == 0)
    {
        p.push(
            "[test]: every `host` command needs a non-empty `run` and a timeout of at least 1 s"
                .into(),
        );
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [test]
        kernel = "smp"
        smp = 2
        timeout = 30
        expect = ["ping: done", "pong: done"]
        description = "two components talk"

        [[component]]
        name = "ping"
        priority = 100
        [[component]]
        name = "pong"
        priority = 101
        core = 1
        [[endpoint]]
        name = "pp"
        holders = [{ component = "pong" }, { component = "ping", badge = 7 }]
        [[region]]
        name = "shared"
        size = 8192
        maps = [{ component = "ping" }, { component = "pong", writable = false, min_size = 4096 }]
    "#;

    fn problems(text: &str) -> Vec<String> {
        parse_text(text).unwrap_err()
    }

    #[test]
    fn test_table_is_split_off_and_read() {
        let (sys, test) = parse_text(GOOD).unwrap();
        assert_eq!(sys.components.len(), 2);
        let test = test.unwrap();
        assert_eq!(test.kernel, Variant::Smp);
        assert_eq!(test.smp, 2);
        assert_eq!(test.expect, ["ping: done", "pong: done"]);
        assert!(test.fail_patterns().iter().any(|p| p == "TEST FAIL"));
    }

    #[test]
    fn product_system_has_no_test() {
        let text = GOOD
            .split("[[component]]")
            .skip(1)
            .collect::<Vec<_>>()
            .join("[[component]]");
        let (_, test) = parse_text(&format!("[[component]]{text}")).unwrap();
        assert!(test.is_none());
    }

    #[test]
    fn unknown_component_is_reported() {
        let p = problems(&GOOD.replace(
            "{ component = \"ping\", badge = 7 }",
            "{ component = \"pnig\", badge = 7 }",
        ));
        assert!(
            p.iter().any(|e| e.contains("unknown component `pnig`")),
            "{p:?}"
        );
    }

    #[test]
    fn overlapping_mappings_are_reported() {
        let text = format!(
            "{GOOD}
            [[region]]
            name = \"a\"
            size = 8192
            maps = [{{ component = \"ping\", vaddr = 0x10000000000 }}]
            [[region]]
            name = \"b\"
            size = 4096
            maps = [{{ component = \"ping\", vaddr = 0x10000001000 }}]"
        );
        let p = problems(&text);
        assert!(p.iter().any(|e| e.contains("overlap")), "{p:?}");
    }

    #[test]
    fn region_too_small_is_reported() {
        let p = problems(&GOOD.replace("min_size = 4096", "min_size = 65536"));
        assert!(p.iter().any(|e| e.contains("too small")), "{p:?}");
    }

    #[test]
    fn test_table_and_description_problems_are_reported_together() {
        let text = GOOD
            .replace("kernel = \"smp\"", "kernel = \"up\"")
            .replace("min_size = 4096", "min_size = 65536");
        let p = problems(&text);
        assert!(p.iter().any(|e| e.contains("smp = 2")), "{p:?}");
        assert!(p.iter().any(|e| e.contains("too small")), "{p:?}");
    }

    #[test]
    fn test_table_typos_and_empty_expectations_are_rejected() {
        assert!(problems(&GOOD.replace("timeout = 30", "timout = 30"))
            .iter()
            .any(|e| e.contains("[test]")));
        assert!(problems(
            &GOOD.replace("expect = [\"ping: done\", \"pong: done\"]", "expect = []")
        )
        .iter()
        .any(|e| e.contains("expect")));
        assert!(
            problems(&GOOD.replace("kernel = \"smp\"", "kernel = \"quad\""))
                .iter()
                .any(|e| e.contains("[test]"))
        );
    }

    #[test]
    fn host_commands_need_a_ready_fragment() {
        let with_host = GOOD.replace(
            "description = \"two components talk\"",
            "description = \"x\"\nhost = [{ run = \"curl -s http://127.0.0.1:{port:http}/\", expect = [\"<html\"] }]",
        );
        assert!(problems(&with_host)
            .iter()
            .any(|e| e.contains("host_after")));
        let ok = with_host.replace(
            "description = \"x\"",
            "description = \"x\"\nhost_after = [\"ready\"]",
        );
        let (_, test) = parse_text(&ok).unwrap();
        let test = test.unwrap();
        assert_eq!(test.host.len(), 1);
        assert_eq!(test.host[0].timeout, 60);
        assert_eq!(test.host_after, ["ready"]);
    }

    #[test]
    fn broken_toml_is_one_clear_problem() {
        let p = problems("[[component]\nname = 1");
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("TOML"), "{p:?}");
    }
}
