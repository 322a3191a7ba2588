//! The control channel: QEMU's second serial port (COM2, I/O port 0x2F8) on a Unix socket that
//! QEMU serves, through which the host asks the root task to inject faults.
//!
//! Protocol (ASCII lines ending in `\n`): the host sends `inject <component> <kind>`; the root task
//! answers `ok <seq>` (its injection counter, from 1) or `error <reason>`.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The fault kinds the root task can inject.
pub const KINDS: [&str; 6] = ["crash", "illegal", "panic", "hang", "stall-tx", "garbage"];

/// The component faults are injected into unless told otherwise.
pub const DEFAULT_COMPONENT: &str = "virtio-net";

/// Longest path a Unix socket address holds (sun_path is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Where `cargo xtask run` puts its control socket unless told otherwise.
pub fn default_run_socket(target: &Path) -> PathBuf {
    target.join("qemu-control").join("run.sock")
}

/// QEMU arguments for the control channel: a second serial port (after the console's
/// `-serial stdio`, so it is COM2) on a Unix socket QEMU listens on without waiting for a client.
pub fn qemu_args(socket: &Path) -> Result<Vec<String>> {
    let path = socket
        .to_str()
        .context("control socket path is not UTF-8")?;
    if path.len() > MAX_SOCKET_PATH {
        bail!(
            "control socket path {path} is longer than a Unix socket address can hold ({MAX_SOCKET_PATH} bytes)"
        );
    }
    if path.contains(',') {
        bail!(
            "control socket path {path} contains a comma, which QEMU's option syntax cannot take"
        );
    }
    Ok(vec![
        "-chardev".into(),
        format!("socket,id=control,path={path},server=on,wait=off"),
        "-serial".into(),
        "chardev:control".into(),
    ])
}

/// Makes the socket's folder and removes a stale socket file; fails if a live QEMU is serving it.
pub fn prepare_socket(socket: &Path) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            bail!(
                "{} is the control socket of a QEMU that is still running; stop it or choose \
                 another path with --control",
                socket.display()
            );
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("removing the stale socket {}", socket.display()))?;
    }
    Ok(())
}

/// The root task's answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `ok <seq>`: injected; its sequence number.
    Ok(u64),
    /// `error <reason>`.
    Error(String),
}

/// Parses one answer line.
pub fn parse_answer(line: &str) -> Result<Answer> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("ok ") {
        let seq = rest
            .trim()
            .parse()
            .with_context(|| format!("bad sequence number in answer `{line}`"))?;
        return Ok(Answer::Ok(seq));
    }
    if line == "error" {
        return Ok(Answer::Error(String::new()));
    }
    if let Some(reason) = line.strip_prefix("error ") {
        return Ok(Answer::Error(reason.trim().to_string()));
    }
    bail!("unexpected answer `{line}`")
}

/// A connection to the control socket.
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    /// Connects, retrying for up to `wait` (QEMU creates the socket a moment after it starts).
    pub fn connect(socket: &Path, wait: Duration) -> Result<Control> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!(
                            "connecting to the control socket {} (is `cargo xtask run` running?)",
                            socket.display()
                        )
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ok(Control {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends `inject <component> <kind>` and waits up to `timeout` for the answer.
    pub fn inject(&mut self, component: &str, kind: &str, timeout: Duration) -> Result<Answer> {
        if component.is_empty()
            || kind.is_empty()
            || format!("{component}{kind}").contains(char::is_whitespace)
        {
            bail!("component and kind must be single words");
        }
        let line = self.request(
            &format!("inject {component} {kind}"),
            |l| l.starts_with("ok") || l.starts_with("error"),
            timeout,
        )?;
        parse_answer(&line)
    }

    /// Sends `restarts`; the root task answers `restarts <component>=<n> …` for every component
    /// it restarts. Returns the counts.
    pub fn restarts(&mut self, timeout: Duration) -> Result<Vec<(String, u64)>> {
        let line = self.request(
            "restarts",
            |l| l.starts_with("restarts") || l.starts_with("error"),
            timeout,
        )?;
        if let Some(why) = line.strip_prefix("error") {
            bail!("the root task answered `restarts` with error{why}");
        }
        line.split_whitespace()
            .skip(1)
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("bad field `{kv}` in `{line}`"))?;
                Ok((
                    k.to_string(),
                    v.parse()
                        .with_context(|| format!("bad count in `{line}`"))?,
                ))
            })
            .collect()
    }

    /// Sends one line and returns the first answer line `accept` takes (others are skipped),
    /// trimmed.
    fn request(
        &mut self,
        text: &str,
        accept: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        self.writer
            .write_all(format!("{text}\n").as_bytes())
            .context("writing to the control socket")?;
        let deadline = Instant::now() + timeout;
        // Bytes of a line that a timed-out read left behind are kept in `line` (read_line keeps
        // what it appended before the error).
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "no answer on the control channel within {} s (does the guest's root task \
                     serve COM2?)",
                    timeout.as_secs_f64()
                );
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            match self.reader.read_line(&mut line) {
                Ok(0) => bail!("the control socket was closed (QEMU exited?)"),
                Ok(_) if line.ends_with('\n') => {
                    let l = std::mem::take(&mut line);
                    let l = l.trim();
                    if accept(l) {
                        return Ok(l.to_string());
                    }
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e).context("reading the control socket"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn answers_are_parsed() {
        assert_eq!(parse_answer("ok 7\r\n").unwrap(), Answer::Ok(7));
        assert_eq!(
            parse_answer("error unknown kind `x`").unwrap(),
            Answer::Error("unknown kind `x`".into())
        );
        assert!(parse_answer("ok x").is_err());
        assert!(parse_answer("hello").is_err());
    }

    #[test]
    fn qemu_args_make_com2_on_a_unix_socket() {
        let a = qemu_args(Path::new("/t/c.sock")).unwrap();
        assert_eq!(
            a,
            [
                "-chardev",
                "socket,id=control,path=/t/c.sock,server=on,wait=off",
                "-serial",
                "chardev:control"
            ]
        );
        assert!(qemu_args(Path::new(&format!("/{}", "x".repeat(120)))).is_err());
        assert!(qemu_args(Path::new("/a,b")).is_err());
    }

    fn socket(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("xtask-ctl-{}-{name}.sock", std::process::id()))
    }

    #[test]
    fn inject_sends_the_request_and_returns_the_answer() {
        let path = socket("answer");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = Vec::new();
            for seq in 1..=3 {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(line.clone());
                if line.contains("bogus") {
                    w.write_all(b"error unknown kind\n").unwrap();
                } else if line == "restarts\n" {
                    w.write_all(b"restarts virtio-net=4 echo=0\n").unwrap();
                } else {
                    // Split across writes, as a UART delivers it.
                    w.write_all(b"o").unwrap();
                    std::thread::sleep(Duration::from_millis(30));
                    w.write_all(format!("k {seq}\n").as_bytes()).unwrap();
                }
            }
            got
        });
        let mut c = Control::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(
            c.inject("virtio-net", "crash", Duration::from_secs(5))
                .unwrap(),
            Answer::Ok(1)
        );
        assert_eq!(
            c.inject("virtio-net", "bogus", Duration::from_secs(5))
                .unwrap(),
            Answer::Error("unknown kind".into())
        );
        assert_eq!(
            c.restarts(Duration::from_secs(5)).unwrap(),
            [("virtio-net".to_string(), 4), ("echo".to_string(), 0)]
        );
        assert_eq!(
            server.join().unwrap(),
            [
                "inject virtio-net crash\n",
                "inject virtio-net bogus\n",
                "restarts\n"
            ]
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_silent_guest_times_out_instead_of_hanging() {
        let path = socket("silent");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let keep = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(s);
        });
        let mut c = Control::connect(&path, Duration::from_secs(5)).unwrap();
        let t = Instant::now();
        let e = c
            .inject("virtio-net", "hang", Duration::from_millis(300))
            .unwrap_err();
        assert!(format!("{e:#}").contains("no answer"), "{e:#}");
        assert!(t.elapsed() < Duration::from_secs(1));
        keep.join().unwrap();
        assert!(prepare_socket(&path).is_ok(), "a stale socket is removed");
        assert!(!path.exists());
    }
}
