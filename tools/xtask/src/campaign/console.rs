//! The guest's console (COM1) as the campaign reads it: every line with the moment it arrived,
//! and parsers for the lines that tell about faults and restarts.
//!
//! * root task, on a death: ``component `virtio-net` <cause>; restart #<k> in <d> ms``
//! * root task, when the new instance runs: ``component `virtio-net` restarted (#<k>) in <us> us``
//! * net server, once the first frame went through the new driver:
//!   `RECOVERY component=virtio-net restart=<k> cause=<word> fault_to_running_us=<a> fault_to_traffic_us=<b>`

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Lines {
    pub lines: Vec<(Instant, String)>,
    pub closed: usize,
}

/// The console, shared with its reader threads.
#[derive(Clone, Default)]
pub struct Console(Arc<Mutex<Lines>>);

impl Console {
    /// Reads `r` line by line into the console (with `prefix` before each line) until it ends.
    pub fn read_from(&self, r: impl Read + Send + 'static, prefix: &'static str) {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let line = format!("{prefix}{}", text.trim_end_matches(['\r', '\n']));
                        me.lock().lines.push((Instant::now(), line));
                    }
                }
            }
            me.lock().closed += 1;
        });
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Lines from index `from` on.
    pub fn since(&self, from: usize) -> Vec<(Instant, String)> {
        self.lock()
            .lines
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn contains(&self, fragment: &str) -> bool {
        self.lock().lines.iter().any(|(_, l)| l.contains(fragment))
    }

    /// The whole log, each line with its time since `start`.
    pub fn text(&self, start: Instant) -> String {
        self.lock()
            .lines
            .iter()
            .map(|(t, l)| {
                format!(
                    "{:9.3} {l}\n",
                    t.saturating_duration_since(start).as_secs_f64()
                )
            })
            .collect()
    }
}

/// A net server `RECOVERY` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub component: String,
    pub restart: u64,
    pub cause: String,
    pub fault_to_running_us: u64,
    pub fault_to_traffic_us: u64,
}

pub fn parse_recovery(line: &str) -> Option<Recovery> {
    let at = line.find("RECOVERY ")?;
    let mut r = Recovery {
        component: String::new(),
        restart: 0,
        cause: String::new(),
        fault_to_running_us: 0,
        fault_to_traffic_us: 0,
    };
    let mut have = 0;
    for field in line[at + 9..].split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        match k {
            "component" => {
                r.component = v.to_string();
                have |= 1;
            }
            "restart" => {
                r.restart = v.parse().ok()?;
                have |= 2;
            }
            "cause" => {
                r.cause = v.to_string();
                have |= 4;
            }
            "fault_to_running_us" => {
                r.fault_to_running_us = v.parse().ok()?;
                have |= 8;
            }
            "fault_to_traffic_us" => {
                r.fault_to_traffic_us = v.parse().ok()?;
                have |= 16;
            }
            _ => {}
        }
    }
    (have == 31).then_some(r)
}

/// A root-task line about a component: its name and what the line says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Supervisor {
    /// ``component `c` <cause>; restart #k in d ms``
    Restarting {
        component: String,
        restart: u64,
        cause: String,
    },
    /// ``component `c` restarted (#k) in us us``
    Restarted {
        component: String,
        restart: u64,
        us: u64,
    },
    /// ``component `c` <cause>; component stopped`` and restart failures: the component is gone.
    Stopped { component: String, what: String },
}

pub fn parse_supervisor(line: &str) -> Option<Supervisor> {
    let at = line.find("component `")?;
    let rest = &line[at + 11..];
    let end = rest.find('`')?;
    let component = rest[..end].to_string();
    let tail = rest[end + 1..].trim();
    if let Some(r) = tail.strip_prefix("restarted (#") {
        let (k, after) = r.split_once(')')?;
        // "in <us> us", possibly followed by more ("(cause …; … us after the fault)").
        let mut w = after.split_whitespace();
        let us = match (w.next(), w.next(), w.next()) {
            (Some("in"), Some(n), Some("us")) => n.parse().ok()?,
            _ => return None,
        };
        return Some(Supervisor::Restarted {
            component,
            restart: k.parse().ok()?,
            us,
        });
    }
    if let Some(i) = tail.rfind("; restart #") {
        let k = tail[i + 11..].split_whitespace().next()?.parse().ok()?;
        return Some(Supervisor::Restarting {
            component,
            restart: k,
            cause: tail[..i].to_string(),
        });
    }
    if tail.ends_with("component stopped") || tail.contains("left stopped") {
        return Some(Supervisor::Stopped {
            component,
            what: tail.to_string(),
        });
    }
    None
}

/// Console lines that mean the whole system is broken (kernel halts and assertions).
pub const FATAL: &[&str] = &[
    "KERNEL PANIC",
    "halting",
    "Halting",
    "seL4 failed assertion",
    "seL4 called fail",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_lines_are_parsed() {
        let l = "[netserver] RECOVERY component=virtio-net restart=3 cause=stall-tx fault_to_running_us=12345 fault_to_traffic_us=67890";
        assert_eq!(
            parse_recovery(l),
            Some(Recovery {
                component: "virtio-net".into(),
                restart: 3,
                cause: "stall-tx".into(),
                fault_to_running_us: 12345,
                fault_to_traffic_us: 67890
            })
        );
        assert_eq!(
            parse_recovery("RECOVERY component=virtio-net restart=3 cause=x"),
            None
        );
        assert_eq!(parse_recovery("RECOVERY component=a restart=x cause=c fault_to_running_us=1 fault_to_traffic_us=2"), None);
        assert_eq!(parse_recovery("no recovery here"), None);
    }

    #[test]
    fn supervisor_lines_are_parsed() {
        assert_eq!(
            parse_supervisor("[root] component `virtio-net` thread `main` faulted: page fault at address 0x0 (ip 0x4001); restart #2 in 1 ms"),
            Some(Supervisor::Restarting {
                component: "virtio-net".into(),
                restart: 2,
                cause: "thread `main` faulted: page fault at address 0x0 (ip 0x4001)".into()
            })
        );
        assert_eq!(
            parse_supervisor("[root] component `virtio-net` restarted (#2) in 6824 us"),
            Some(Supervisor::Restarted {
                component: "virtio-net".into(),
                restart: 2,
                us: 6824
            })
        );
        assert_eq!(
            parse_supervisor(
                "[root] component `netserver` thread `ipc0` panicked; component stopped"
            ),
            Some(Supervisor::Stopped {
                component: "netserver".into(),
                what: "thread `ipc0` panicked; component stopped".into()
            })
        );
        assert_eq!(
            parse_supervisor("[root] component `virtio-net` restarted (#1) in 654004 us (cause panic; 655164 us after the fault)"),
            Some(Supervisor::Restarted { component: "virtio-net".into(), restart: 1, us: 654004 })
        );
        assert_eq!(parse_supervisor("[root] component `client` exited"), None);
        assert_eq!(
            parse_supervisor("[root] told the server of `x` that badge 1 (`echo`) is gone"),
            None
        );
    }
}
