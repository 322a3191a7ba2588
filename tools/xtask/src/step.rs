//! Progress reporting and the small process/file helpers every step uses.
//!
//! Each step prints `==> <what>` when it starts and one indented line with its duration when it
//! ends (or `FAILED after …` when it returns an error). Child processes run quietly into a log file
//! whose tail is shown only when they fail.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// One visible step of the pipeline. Finish it with [`Step::done`] or [`Step::note`]; dropping it
/// unfinished (an error is propagating) prints that it failed.
pub struct Step {
    name: String,
    start: Instant,
    finished: bool,
}

impl Step {
    pub fn start(name: impl Into<String>) -> Step {
        let name = name.into();
        println!("==> {name}");
        let _ = std::io::stdout().flush();
        Step {
            name,
            start: Instant::now(),
            finished: false,
        }
    }

    /// Finish with "done in …".
    pub fn done(self) {
        self.note("done")
    }

    /// Finish with a word of what happened ("up to date", "built", …) and the duration.
    pub fn note(mut self, what: &str) {
        self.finished = true;
        println!("    {what} in {}", secs(self.start.elapsed().as_secs_f64()));
        let _ = std::io::stdout().flush();
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            println!(
                "    {} FAILED after {}",
                self.name,
                secs(self.start.elapsed().as_secs_f64())
            );
            let _ = std::io::stdout().flush();
        }
    }
}

pub fn secs(s: f64) -> String {
    format!("{s:.1} s")
}

/// Quote one argument the way a POSIX shell would need it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./,:=+@%^".contains(&b));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line of `cmd` as a shell would accept it (program and arguments, no environment).
pub fn show(cmd: &Command) -> String {
    let mut parts = vec![shell_quote(&cmd.get_program().to_string_lossy())];
    parts.extend(cmd.get_args().map(|a| shell_quote(&a.to_string_lossy())));
    parts.join(" ")
}

/// Run `cmd` with stdout and stderr going to `log`; on failure show the end of the log and fail.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        print_log_tail(log, 150);
        bail!(
            "`{}` failed ({status}); full log: {}",
            show(cmd),
            log.display()
        );
    }
    Ok(())
}

/// Run `cmd` with its output going straight to the terminal.
pub fn run_streaming(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", show(cmd));
    }
    Ok(())
}

/// Run `cmd` and return its stdout; stderr is shown only when it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("`{}` failed ({})", show(cmd), out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("output of `{}` is not UTF-8", show(cmd)))
}

pub fn print_log_tail(log: &Path, lines: usize) {
    let text = fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    eprintln!(
        "---- {} (last {} of {} lines) ----",
        log.display(),
        all.len() - from,
        all.len()
    );
    for l in &all[from..] {
        eprintln!("{l}");
    }
    eprintln!("---- end of {} ----", log.display());
}

/// Write `bytes` to `path` unless it already holds exactly them (so timestamps, and with them
/// everything downstream, stay put). Writes through a temporary file and a rename, so a reader
/// never sees half a file. Returns whether the file was written.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(true)
}

/// Copy `from` to `to` unless `to` already has the same content.
pub fn copy_if_changed(from: &Path, to: &Path) -> Result<bool> {
    let bytes = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_if_changed(to, &bytes)
}

/// 64-bit FNV-1a: a stable hash for build stamps (std's hasher may change between releases).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // Separate the parts so that ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Holds an exclusive lock on a file for as long as it lives (other `cargo xtask` processes in the
/// same tree wait instead of building into the same folder at the same time).
pub struct DirLock {
    _file: fs::File,
}

pub fn lock(path: &Path) -> Result<DirLock> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    if file.try_lock().is_err() {
        println!(
            "    waiting for another build to release {}",
            path.display()
        );
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_leaves_plain_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("-machine"), "-machine");
        assert_eq!(shell_quote("Nehalem,+fsgsbase"), "Nehalem,+fsgsbase");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn stamp_hash_separates_parts() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_eq!(fnv1a(&[b"x"]), fnv1a(&[b"x"]));
    }

    #[test]
    fn write_if_changed_only_writes_new_content() {
        let dir = std::env::temp_dir().join(format!("xtask-wic-{}", std::process::id()));
        let f = dir.join("sub/file.bin");
        assert!(write_if_changed(&f, b"one").unwrap());
        assert!(!write_if_changed(&f, b"one").unwrap());
        assert!(write_if_changed(&f, b"two").unwrap());
        assert_eq!(fs::read(&f).unwrap(), b"two");
        let _ = fs::remove_dir_all(&dir);
    }
}
