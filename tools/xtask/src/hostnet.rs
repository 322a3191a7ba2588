//! The host side of the guest's network: QEMU user networking with forwards from host ports to
//! the guest's services (for `run` and for tests), free ports chosen at run time, and host
//! commands (curl, socat) that act as real clients once the guest is ready.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A host command of a test (`[[test.host]]`): run with `sh -c` after the guest is ready.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostCommand {
    /// The shell command (`{port:NAME}` is replaced by the port chosen for NAME).
    pub run: String,
    /// Fragments its standard output must contain.
    #[serde(default)]
    pub expect: Vec<String>,
    /// Seconds it may take.
    #[serde(default = "default_command_timeout")]
    pub timeout: u64,
}

fn default_command_timeout() -> u64 {
    60
}

/// QEMU arguments for the guest's NIC on user networking: `virtio-net-pci` on netdev `n0`, with
/// `forwards` as `(proto, host port, guest port)` bound to 127.0.0.1, and a pcap of every frame
/// if asked.
pub fn user_net_args(forwards: &[(&str, u16, u16)], pcap: Option<&std::path::Path>) -> Vec<String> {
    let mut netdev = String::from("user,id=n0");
    for (proto, host, guest) in forwards {
        netdev.push_str(&format!(",hostfwd={proto}:127.0.0.1:{host}-:{guest}"));
    }
    let mut args = vec![
        "-device".to_string(),
        "virtio-net-pci,netdev=n0".to_string(),
        "-netdev".to_string(),
        netdev,
    ];
    if let Some(p) = pcap {
        args.push("-object".into());
        args.push(format!(
            "filter-dump,id=pcap0,netdev=n0,file={}",
            p.display()
        ));
    }
    args
}

/// A port free on 127.0.0.1 for both TCP and UDP right now (the OS picks it; it may be taken
/// again before QEMU binds it, which then fails loudly).
pub fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free TCP port")?;
        let port = tcp.local_addr()?.port();
        if UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both TCP and UDP on 127.0.0.1")
}

/// Replaces every `{port:NAME}` in `text`, choosing a free port the first time a NAME is seen.
pub fn substitute_ports(text: &str, ports: &mut BTreeMap<String, u16>) -> Result<String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("{port:") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 6..];
        let Some(end) = after.find('}') else {
            bail!("unterminated `{{port:` in {text:?}");
        };
        let name = &after[..end];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            bail!("bad port name {name:?} in {text:?}");
        }
        let port = match ports.get(name) {
            Some(&p) => p,
            None => {
                let p = free_port()?;
                ports.insert(name.to_string(), p);
                p
            }
        };
        out.push_str(&port.to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Runs one host command; `Ok(output)` if it exited 0 within its timeout and printed every
/// expected fragment, else `Err(why, output)`.
pub fn run_command(c: &HostCommand) -> std::result::Result<String, (String, String)> {
    let mut child = match Command::new("sh")
        .args(["-c", &c.run])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(ch) => ch,
        Err(e) => return Err((format!("cannot start `sh`: {e}"), String::new())),
    };
    let out = child.stdout.take();
    let err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut o) = out {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(mut e) = err {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    let output = if stderr.trim().is_empty() {
        stdout.clone()
    } else {
        format!("{stdout}[stderr] {stderr}")
    };
    match status {
        None => Err((format!("did not finish within {} s", c.timeout), output)),
        Some(s) if !s.success() => Err((format!("exited with {s}"), output)),
        Some(_) => match c.expect.iter().find(|e| !stdout.contains(e.as_str())) {
            Some(e) => Err((format!("output lacks `{e}`"), output)),
            None => Ok(output),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_substituted_consistently() {
        let mut ports = BTreeMap::new();
        let a = substitute_ports(
            "hostfwd=tcp:127.0.0.1:{port:http}-:80,x={port:echo}",
            &mut ports,
        )
        .unwrap();
        let b = substitute_ports("curl http://127.0.0.1:{port:http}/", &mut ports).unwrap();
        let http = ports["http"];
        assert_ne!(http, ports["echo"]);
        assert_eq!(
            a,
            format!("hostfwd=tcp:127.0.0.1:{http}-:80,x={}", ports["echo"])
        );
        assert_eq!(b, format!("curl http://127.0.0.1:{http}/"));
        assert!(substitute_ports("{port:", &mut ports).is_err());
        assert!(substitute_ports("{port:a b}", &mut ports).is_err());
        assert_eq!(
            substitute_ports("no ports", &mut ports).unwrap(),
            "no ports"
        );
    }

    #[test]
    fn commands_are_judged_by_status_output_and_time() {
        let c = |run: &str, expect: &[&str], timeout| HostCommand {
            run: run.into(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        assert!(run_command(&c("echo hello world", &["hello"], 5)).is_ok());
        assert!(run_command(&c("echo hello", &["bye"], 5))
            .unwrap_err()
            .0
            .contains("lacks"));
        assert!(run_command(&c("exit 3", &[], 5))
            .unwrap_err()
            .0
            .contains("exited"));
        assert!(run_command(&c("sleep 5", &[], 1))
            .unwrap_err()
            .0
            .contains("within"));
    }

    #[test]
    fn user_net_args_forward_to_localhost() {
        let a = user_net_args(
            &[("tcp", 8080, 80), ("udp", 7007, 7)],
            Some(std::path::Path::new("x.pcap")),
        );
        assert_eq!(
            a[3],
            "user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:7007-:7"
        );
        assert_eq!(a[5], "filter-dump,id=pcap0,netdev=n0,file=x.pcap");
    }
}
