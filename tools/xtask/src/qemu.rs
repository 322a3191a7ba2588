//! Booting a boot image in QEMU (TCG): interactively for `run`, and watched for `test`.
//!
//! The test watcher reads the serial console through a reader thread and a channel, so that a
//! silent guest cannot block it past its deadline.

use crate::image::BootImage;
use crate::step;
use anyhow::{Context, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";

/// How the serial console is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Console {
    /// A terminal we own: serial multiplexed with the monitor (Ctrl-A X quits, Ctrl-A C monitor).
    Terminal,
    /// Anything else (pipe, file, closed stdin, background job): serial on stdio, no monitor,
    /// QEMU's stdin is /dev/null so it never touches the terminal.
    Plain,
}

/// `Terminal` when stdin is a terminal and we are its foreground job; a background job that
/// touched the terminal settings would be stopped (SIGTTOU).
pub fn console_for_this_process() -> Console {
    if std::io::stdin().is_terminal() && in_foreground() {
        Console::Terminal
    } else {
        Console::Plain
    }
}

/// Whether our process group is the terminal's foreground group (fields 5 and 8 of
/// /proc/self/stat: pgrp and tpgid).
fn in_foreground() -> bool {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return false;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return false;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // after ")": state ppid pgrp session tty_nr tpgid
    matches!((f.get(2), f.get(5)), (Some(pgrp), Some(tpgid)) if pgrp == tpgid)
}

/// The QEMU command line for `boot` with `smp` cores.
pub fn command(boot: &BootImage, smp: u32, console: Console, extra: &[String]) -> Command {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-machine",
        "q35",
        "-cpu",
        "Nehalem,+fsgsbase,+pdpe1gb",
        "-m",
        "512",
        "-display",
        "none",
    ]);
    match console {
        Console::Terminal => {
            cmd.args(["-serial", "mon:stdio"]);
        }
        Console::Plain => {
            cmd.args(["-serial", "stdio", "-monitor", "none"]);
        }
    }
    cmd.arg("-kernel")
        .arg(&boot.kernel)
        .arg("-initrd")
        .arg(&boot.root_task)
        .arg("-no-reboot");
    if smp > 1 {
        cmd.args(["-smp", &smp.to_string()]);
    }
    cmd.args(extra);
    cmd
}

/// Ask QEMU to quit (SIGTERM lets it restore the terminal), then kill it if it lingers.
pub fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Boot interactively: the console is this terminal (or our stdout). Returns QEMU's exit code, or
/// 0 when `timeout` ended it.
///
/// With `ready = Some((fragment, message))` and a plain console, the console is passed through
/// this process and `message` is printed once a console line contains `fragment` (on a
/// terminal QEMU owns the console, so the message is printed before the boot instead).
pub fn run(
    mut cmd: Command,
    console: Console,
    timeout: Option<Duration>,
    ready: Option<(String, String)>,
) -> Result<i32> {
    if console == Console::Plain {
        cmd.stdin(Stdio::null());
        if ready.is_some() {
            cmd.stdout(Stdio::piped());
        }
    }
    println!("==> {}", step::show(&cmd));
    if console == Console::Terminal {
        println!("    (serial console on this terminal; Ctrl-A X quits QEMU)");
        if let Some((fragment, message)) = &ready {
            println!("    once the console shows `{fragment}`: {message}");
        }
    }
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {QEMU}"))?;
    if let (Some(out), Some((fragment, message))) = (child.stdout.take(), ready) {
        std::thread::spawn(move || pass_through(out, &fragment, &message));
    }
    loop {
        if let Some(status) = child.try_wait()? {
            println!(
                "\n    QEMU exited ({status}) after {}",
                step::secs(start.elapsed().as_secs_f64())
            );
            return Ok(status.code().unwrap_or(1));
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            stop(&mut child);
            println!(
                "\n    stopped QEMU after {} (--timeout)",
                step::secs(start.elapsed().as_secs_f64())
            );
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies the console to our stdout and prints `==> message` after the first line containing
/// `fragment`.
fn pass_through(mut out: impl Read, fragment: &str, message: &str) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::new();
    let mut said = false;
    let stdout = std::io::stdout();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut o = stdout.lock();
        let _ = o.write_all(&buf[..n]);
        for &b in &buf[..n] {
            if b == b'\n' {
                if !said && String::from_utf8_lossy(&line).contains(fragment) {
                    said = true;
                    let _ = writeln!(o, "==> {message}");
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
        let _ = o.flush();
    }
}

/// How a watched boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
}

/// Judges a console stream: pass once every `expect` fragment was seen (each within one line),
/// fail at the first line with a `fail` fragment.
pub struct Watch {
    expect: Vec<String>,
    seen: Vec<bool>,
    fail: Vec<String>,
    line: Vec<u8>,
    verdict: Option<Verdict>,
}

impl Watch {
    pub fn new(expect: Vec<String>, fail: Vec<String>) -> Watch {
        Watch {
            seen: vec![false; expect.len()],
            expect,
            fail,
            line: Vec::new(),
            verdict: None,
        }
    }

    /// Feed console bytes; returns the verdict as soon as there is one (and keeps returning it).
    pub fn feed(&mut self, bytes: &[u8]) -> Option<Verdict> {
        for &b in bytes {
            if self.verdict.is_some() {
                break;
            }
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.judge(&line);
            } else {
                self.line.push(b);
            }
        }
        if self.verdict.is_none() && !self.line.is_empty() {
            // A line still being written (a prompt, or a marker without its newline yet).
            let line = self.line.clone();
            self.judge(&line);
        }
        self.verdict.clone()
    }

    fn judge(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if let Some(f) = self.fail.iter().find(|f| text.contains(f.as_str())) {
            self.verdict = Some(Verdict::Fail(format!(
                "console matched fail pattern `{f}`: {}",
                text.trim()
            )));
            return;
        }
        for (e, seen) in self.expect.iter().zip(self.seen.iter_mut()) {
            if text.contains(e.as_str()) {
                *seen = true;
            }
        }
        if self.seen.iter().all(|&s| s) {
            self.verdict = Some(Verdict::Pass);
        }
    }

    /// Expected fragments not seen yet.
    pub fn missing(&self) -> Vec<&str> {
        self.expect
            .iter()
            .zip(&self.seen)
            .filter(|(_, &s)| !s)
            .map(|(e, _)| e.as_str())
            .collect()
    }
}

enum Msg {
    Out(Vec<u8>),
    Err(Vec<u8>),
    Closed,
    /// The host commands finished: their log, and the first failure.
    Host(String, Option<String>),
}

/// Host commands to run once the console shows every `after` fragment.
pub struct HostRun {
    pub after: Vec<String>,
    pub commands: Vec<crate::hostnet::HostCommand>,
}

fn start_host_commands(commands: Vec<crate::hostnet::HostCommand>, tx: mpsc::Sender<Msg>) {
    std::thread::spawn(move || {
        let mut log = String::new();
        for c in &commands {
            log.push_str(&format!("[host] $ {}\n", c.run));
            match crate::hostnet::run_command(c) {
                Ok(out) => {
                    log.push_str(&out);
                    log.push_str("[host] ok\n");
                }
                Err((why, out)) => {
                    log.push_str(&out);
                    log.push_str(&format!("[host] FAILED: {why}\n"));
                    let _ = tx.send(Msg::Host(
                        log,
                        Some(format!("host command `{}` {why}", c.run)),
                    ));
                    return;
                }
            }
        }
        let _ = tx.send(Msg::Host(log, None));
    });
}

fn reader(mut r: impl Read + Send + 'static, tx: mpsc::Sender<Msg>, out: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    if tx
                        .send(if out {
                            Msg::Out(chunk)
                        } else {
                            Msg::Err(chunk)
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Msg::Closed);
    });
}

/// Boot `cmd` (built with [`Console::Plain`]) and judge its console with `watch` until a verdict,
/// QEMU's exit or `timeout`. Returns the verdict and the whole log (console and QEMU's stderr).
pub fn watch(
    mut cmd: Command,
    mut watch: Watch,
    timeout: Duration,
    log_path: &Path,
    host: Option<HostRun>,
) -> Result<(Verdict, String)> {
    let mut log: Vec<u8> = format!("$ {}\n", step::show(&cmd)).into_bytes();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;
    let (tx, rx) = mpsc::channel();
    if let Some(o) = child.stdout.take() {
        reader(o, tx.clone(), true);
    }
    if let Some(e) = child.stderr.take() {
        reader(e, tx.clone(), false);
    }
    let host_tx = tx;
    // Host commands: not started yet (Some), running or done (None); their result once known.
    let mut host = host.filter(|h| !h.commands.is_empty());
    let mut host_pending = host.is_some();
    let mut console_pass = false;
    let mut open = 2;
    let verdict = loop {
        if console_pass && !host_pending {
            break Verdict::Pass;
        }
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() && console_pass {
            break Verdict::Fail(format!(
                "timeout after {} s: the host commands did not finish",
                timeout.as_secs()
            ));
        }
        if left.is_zero() {
            break Verdict::Fail(format!(
                "timeout after {} s; never saw: {}",
                timeout.as_secs(),
                watch
                    .missing()
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        match rx.recv_timeout(left) {
            Ok(Msg::Out(chunk)) => {
                log.extend_from_slice(&chunk);
                match watch.feed(&chunk) {
                    Some(Verdict::Pass) => console_pass = true,
                    Some(v) => break v,
                    None => {}
                }
                if let Some(h) = &host {
                    let text = String::from_utf8_lossy(&log);
                    if h.after.iter().all(|f| text.contains(f.as_str())) {
                        if let Some(h) = host.take() {
                            start_host_commands(h.commands, host_tx.clone());
                        }
                    }
                }
            }
            Ok(Msg::Host(text, failure)) => {
                log.extend_from_slice(text.as_bytes());
                host_pending = false;
                if let Some(why) = failure {
                    break Verdict::Fail(why);
                }
            }
            Ok(Msg::Err(chunk)) => {
                log.extend_from_slice(b"[qemu stderr] ");
                log.extend_from_slice(&chunk);
            }
            Ok(Msg::Closed) => {
                open -= 1;
                if open == 0 {
                    let status = child.wait()?;
                    break Verdict::Fail(format!(
                        "QEMU exited ({status}) after {} before the test passed; never saw: {}",
                        step::secs(start.elapsed().as_secs_f64()),
                        watch
                            .missing()
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                break Verdict::Fail(format!("QEMU exited ({status}) before the test passed"));
            }
        }
    };
    stop(&mut child);
    // Whatever the readers still had.
    while let Ok(m) = rx.recv_timeout(Duration::from_millis(100)) {
        match m {
            Msg::Out(c) => log.extend_from_slice(&c),
            Msg::Err(c) => {
                log.extend_from_slice(b"[qemu stderr] ");
                log.extend_from_slice(&c);
            }
            Msg::Closed => {}
            Msg::Host(t, _) => log.extend_from_slice(t.as_bytes()),
        }
    }
    let text = String::from_utf8_lossy(&log).into_owned();
    step::write_if_changed(log_path, text.as_bytes())?;
    Ok((verdict, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(expect: &[&str]) -> Watch {
        Watch::new(
            expect.iter().map(|s| s.to_string()).collect(),
            crate::system::ALWAYS_FAIL
                .iter()
                .map(|s| s.to_string())
                .collect(),
        )
    }

    #[test]
    fn passes_only_when_every_fragment_was_seen() {
        let mut watch = w(&["ping ok", "pong ok"]);
        assert_eq!(watch.feed(b"boot\r\nping ok\r\n"), None);
        assert_eq!(watch.missing(), ["pong ok"]);
        assert_eq!(watch.feed(b"pong o"), None);
        assert_eq!(watch.feed(b"k\r\n"), Some(Verdict::Pass));
    }

    #[test]
    fn marker_without_newline_still_counts() {
        let mut watch = w(&["TEST PASS"]);
        assert_eq!(watch.feed(b"TEST PA"), None);
        assert_eq!(watch.feed(b"SS"), Some(Verdict::Pass));
    }

    #[test]
    fn fail_patterns_win_and_stick() {
        let mut watch = w(&["done"]);
        let v = watch.feed(b"app: panicked at src/main.rs:3\ndone\n");
        assert!(
            matches!(v, Some(Verdict::Fail(ref m)) if m.contains("panicked")),
            "{v:?}"
        );
        assert!(matches!(watch.feed(b"done\n"), Some(Verdict::Fail(_))));
        let mut watch = w(&["done"]);
        assert!(matches!(
            watch.feed(b"seL4 failed assertion 'x' at y\n"),
            Some(Verdict::Fail(_))
        ));
        let mut watch = w(&["done"]);
        assert!(matches!(
            watch.feed(b"TEST FAIL: pong\n"),
            Some(Verdict::Fail(_))
        ));
    }

    #[test]
    fn fragments_must_be_within_one_line() {
        let mut watch = w(&["a b"]);
        assert_eq!(watch.feed(b"a\nb\n"), None);
    }

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    fn watched(script: &str, expect: &[&str], timeout_ms: u64) -> (Verdict, String) {
        let log = std::env::temp_dir().join(format!(
            "xtask-watch-{}-{}.log",
            std::process::id(),
            script.len()
        ));
        let r = watch(
            sh(script),
            w(expect),
            Duration::from_millis(timeout_ms),
            &log,
            None,
        )
        .unwrap();
        let _ = std::fs::remove_file(log);
        r
    }

    fn watched_with_host(script: &str, commands: &[(&str, &str)]) -> (Verdict, String) {
        let log = std::env::temp_dir().join(format!(
            "xtask-watch-host-{}-{}.log",
            std::process::id(),
            script.len()
        ));
        let host = HostRun {
            after: vec!["guest ready".into()],
            commands: commands
                .iter()
                .map(|(run, expect)| crate::hostnet::HostCommand {
                    run: run.to_string(),
                    expect: vec![expect.to_string()],
                    timeout: 10,
                })
                .collect(),
        };
        let r = watch(
            sh(script),
            w(&["guest ready"]),
            Duration::from_secs(20),
            &log,
            Some(host),
        )
        .unwrap();
        let _ = std::fs::remove_file(log);
        r
    }

    #[test]
    fn host_commands_run_after_the_ready_line_and_decide_the_verdict() {
        // The "guest" writes a file only after it printed its ready line; the host command can
        // only succeed if it ran after that line.
        let dir = std::env::temp_dir().join(format!("xtask-host-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let flag = dir.join("flag");
        let _ = std::fs::remove_file(&flag);
        let script = format!(
            "sleep 0.3; echo 'guest ready'; touch {}; exec sleep 30",
            flag.display()
        );
        let check = format!("sleep 0.5; test -f {} && echo seen-it", flag.display());
        let (v, log) =
            watched_with_host(&script, &[(&check, "seen-it"), ("echo second", "second")]);
        assert_eq!(v, Verdict::Pass, "{log}");
        assert!(
            log.contains("[host] $ echo second") && log.contains("[host] ok"),
            "{log}"
        );
        // A failing command fails the test, naming the command.
        let (v, _) =
            watched_with_host("echo 'guest ready'; exec sleep 30", &[("echo nope", "yes")]);
        assert!(
            matches!(v, Verdict::Fail(ref m) if m.contains("echo nope") && m.contains("lacks")),
            "{v:?}"
        );
        // Commands never start without the ready line: the console alone cannot pass.
        let (v, _) = watched_with_host(
            "echo 'guest ready'; exit 0",
            &[("sleep 2; echo late", "late")],
        );
        assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn watched_process_passes_and_is_stopped() {
        let t = Instant::now();
        let (v, log) = watched(
            "echo booting; echo 'root: TEST PASS'; exec sleep 30",
            &["TEST PASS"],
            20_000,
        );
        assert_eq!(v, Verdict::Pass);
        assert!(log.contains("booting"), "{log}");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the process was not stopped after passing"
        );
    }

    #[test]
    fn silent_process_times_out_and_names_what_is_missing() {
        let (v, _) = watched("echo half; exec sleep 30", &["half", "other half"], 500);
        assert!(
            matches!(v, Verdict::Fail(ref m) if m.contains("timeout") && m.contains("`other half`")),
            "{v:?}"
        );
    }

    #[test]
    fn early_exit_and_fail_patterns_fail_with_the_log() {
        let (v, log) = watched("echo partial; echo oops >&2; exit 3", &["done"], 20_000);
        assert!(
            matches!(v, Verdict::Fail(ref m) if m.contains("exited")),
            "{v:?}"
        );
        assert!(
            log.contains("partial") && log.contains("[qemu stderr] oops"),
            "{log}"
        );
        let (v, _) = watched(
            "echo 'thread main panicked at x'; exec sleep 30",
            &["done"],
            20_000,
        );
        assert!(
            matches!(v, Verdict::Fail(ref m) if m.contains("panicked")),
            "{v:?}"
        );
    }

    #[test]
    fn plain_console_has_no_monitor_and_smp_only_when_asked() {
        let boot = BootImage {
            dir: "/i".into(),
            kernel: "/i/kernel32.elf".into(),
            root_task: "/i/root-task.elf".into(),
        };
        let plain = step::show(&command(&boot, 1, Console::Plain, &[]));
        assert_eq!(
            plain,
            "qemu-system-x86_64 -machine q35 -cpu Nehalem,+fsgsbase,+pdpe1gb -m 512 -display none \
             -serial stdio -monitor none -kernel /i/kernel32.elf -initrd /i/root-task.elf -no-reboot"
        );
        let tty = step::show(&command(
            &boot,
            2,
            Console::Terminal,
            &["-d".into(), "int".into()],
        ));
        assert!(tty.contains("-serial mon:stdio") && !tty.contains("-monitor"));
        assert!(tty.ends_with("-no-reboot -smp 2 -d int"));
    }
}
