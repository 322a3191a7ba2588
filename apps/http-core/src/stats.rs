//! `/stats`: what the page reports, where the numbers come from, and the JSON.
//!
//! The application's own counters (connections, requests, responses by status, bytes) are
//! always there. The net server's (per worker: packets, sockets, connections; ports in use;
//! ring drops; driver restarts and the latest ones' cause and recovery times; transmit kicks)
//! come from a [`StatsSource`]: [`ClientStats`] asks the net server (`Request::Stats` through
//! libsock, one round trip per page); [`NoNetStats`] reports `"net": null`.
//!
//! A restart's cause is text the supervisor wrote and the net server passed on: it is rendered
//! as a JSON string whatever its bytes (quotes, backslashes, control and non-ASCII characters
//! escaped, bytes that are not UTF-8 as U+FFFD), so the page stays valid JSON.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt::Write;

use libsock::{Client, Transport};

/// One net server worker's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Frames received.
    pub packets_in: u64,
    /// Frames sent.
    pub packets_out: u64,
    /// Sockets open.
    pub sockets: u64,
    /// TCP connections (and other flows) alive.
    pub connections: u64,
}

/// The net server's counters, as far as they are known (`None`: not reported).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Per worker, in worker order (empty when only totals are known).
    pub workers: Vec<WorkerStats>,
    /// Sums over the workers.
    pub total: Option<WorkerStats>,
    /// Ports held (listening, connected, TIME-WAIT).
    pub ports_in_use: Option<u64>,
    /// Frames dropped because a driver ring was full.
    pub ring_drops: Option<u64>,
    /// Times a driver process was restarted.
    pub driver_restarts: Option<u64>,
    /// Times the net server's transmit watchdog signalled the driver again.
    pub tx_kicks: Option<u64>,
    /// The most recent driver restarts, newest first (empty when none is known).
    pub restarts: Vec<RestartStats>,
}

/// One driver restart: its number, cause and how long recovery took.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartStats {
    /// The driver's restart count, this one included.
    pub restart: u32,
    /// What happened (`page fault`, `hang`, ...), as untrusted bytes: not necessarily UTF-8.
    pub cause: Vec<u8>,
    /// Microseconds from the fault to the new driver instance running (0: unknown).
    pub fault_to_running_us: u64,
    /// Microseconds from the fault to the first frame through the new instance.
    pub fault_to_traffic_us: u64,
}

/// Where `/stats` gets the net server's counters.
pub trait StatsSource {
    /// The current counters, or `None` when they cannot be had.
    fn net_stats(&self) -> Option<NetStats>;
}

/// No net server statistics (the protocol cannot ask for them yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNetStats;

impl StatsSource for NoNetStats {
    fn net_stats(&self) -> Option<NetStats> {
        None
    }
}

/// The net server's own counters, asked for through the application's libsock client. A failed
/// request (an older server without `Stats`, a restart) gives `"net": null`.
pub struct ClientStats<T: Transport>(pub Arc<Client<T>>);

impl<T: Transport> StatsSource for ClientStats<T> {
    fn net_stats(&self) -> Option<NetStats> {
        let s = self.0.stats().ok()?;
        let workers: Vec<WorkerStats> = s
            .workers
            .as_slice()
            .iter()
            .map(|w| WorkerStats { packets_in: w.packets_in, packets_out: w.packets_out, sockets: w.sockets, connections: w.connections })
            .collect();
        let total = workers.iter().fold(WorkerStats::default(), |a, w| WorkerStats {
            packets_in: a.packets_in.wrapping_add(w.packets_in),
            packets_out: a.packets_out.wrapping_add(w.packets_out),
            sockets: a.sockets.wrapping_add(w.sockets),
            connections: a.connections.wrapping_add(w.connections),
        });
        Some(NetStats {
            workers,
            total: Some(total),
            ports_in_use: Some(s.ports_in_use),
            ring_drops: Some(s.ring_drops),
            driver_restarts: Some(s.driver_restarts),
            tx_kicks: Some(s.tx_kicks),
            restarts: s
                .recent_restarts
                .iter()
                .map(|r| RestartStats {
                    restart: r.restart,
                    cause: r.cause_bytes().to_vec(),
                    fault_to_running_us: r.fault_to_running_us,
                    fault_to_traffic_us: r.fault_to_traffic_us,
                })
                .collect(),
        })
    }
}

/// The application's own counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Connections accepted so far.
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Requests answered (or being answered).
    pub requests: u64,
    /// Responses by status: 200, 400, 404, 405, 411, 413, 431, 501, 505 (see [`crate::Status::ALL`]).
    pub responses: [u64; crate::Status::ALL.len()],
    /// Bytes of `/bytes` bodies produced.
    pub bytes_served: u64,
    /// Bytes of `/sink` bodies hashed.
    pub bytes_sunk: u64,
}

fn opt(out: &mut String, v: Option<u64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn worker(out: &mut String, w: &WorkerStats) {
    let _ = write!(
        out,
        "{{\"packets_in\":{},\"packets_out\":{},\"sockets\":{},\"connections\":{}}}",
        w.packets_in, w.packets_out, w.sockets, w.connections
    );
}

/// Microseconds as milliseconds with three decimals (exact); 0 (unknown) as `null`.
fn millis(out: &mut String, us: u64) {
    if us == 0 {
        out.push_str("null");
    } else {
        let _ = write!(out, "{}.{:03}", us / 1000, us % 1000);
    }
}

/// `bytes` as a JSON string, quotes included, in ASCII: `"` and `\` escaped, every control or
/// non-ASCII character as `\uXXXX` (UTF-16, so a surrogate pair above U+FFFF), each invalid
/// UTF-8 sequence as `\ufffd`. Any bytes give a valid string.
fn json_string(out: &mut String, bytes: &[u8]) {
    fn unit(out: &mut String, u: u16) {
        let _ = write!(out, "\\u{u:04x}");
    }
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                _ => {
                    let mut buf = [0u16; 2];
                    for u in c.encode_utf16(&mut buf).iter() {
                        unit(out, *u);
                    }
                }
            }
        }
        if !chunk.invalid().is_empty() {
            unit(out, 0xfffd);
        }
    }
    out.push('"');
}

fn restart(out: &mut String, r: &RestartStats) {
    let _ = write!(out, "{{\"restart\":{},\"cause\":", r.restart);
    json_string(out, &r.cause);
    out.push_str(",\"fault_to_running_ms\":");
    millis(out, r.fault_to_running_us);
    out.push_str(",\"fault_to_traffic_ms\":");
    millis(out, r.fault_to_traffic_us);
    out.push('}');
}

/// Renders `/stats` (one JSON object, newline-terminated) into `out`.
pub fn render(out: &mut String, app: &AppStats, net: Option<&NetStats>) {
    let _ = write!(
        out,
        "{{\"http\":{{\"connections_accepted\":{},\"connections_open\":{},\"requests\":{},\"bytes_served\":{},\"bytes_sunk\":{},\"responses\":{{",
        app.connections_accepted, app.connections_open, app.requests, app.bytes_served, app.bytes_sunk
    );
    for (i, (s, n)) in crate::Status::ALL.iter().zip(app.responses.iter()).enumerate() {
        let _ = write!(out, "{}\"{}\":{}", if i > 0 { "," } else { "" }, s.code(), n);
    }
    out.push_str("}},\"net\":");
    match net {
        None => out.push_str("null"),
        Some(n) => {
            out.push_str("{\"workers\":[");
            for (i, w) in n.workers.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                worker(out, w);
            }
            out.push_str("],\"total\":");
            match &n.total {
                Some(t) => worker(out, t),
                None => out.push_str("null"),
            }
            out.push_str(",\"ports_in_use\":");
            opt(out, n.ports_in_use);
            out.push_str(",\"ring_drops\":");
            opt(out, n.ring_drops);
            out.push_str(",\"driver_restarts\":");
            opt(out, n.driver_restarts);
            out.push_str(",\"tx_kicks\":");
            opt(out, n.tx_kicks);
            out.push_str(",\"restarts\":[");
            for (i, r) in n.restarts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                restart(out, r);
            }
            out.push_str("]}");
        }
    }
    out.push_str("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_nulls_and_numbers() {
        let mut s = String::new();
        render(&mut s, &AppStats { requests: 3, ..AppStats::default() }, None);
        assert!(s.starts_with("{\"http\":{\"connections_accepted\":0,\"connections_open\":0,\"requests\":3,"), "{s}");
        assert!(s.ends_with(",\"net\":null}\n"), "{s}");
        let mut s = String::new();
        let net = NetStats {
            workers: alloc::vec![WorkerStats { packets_in: 1, packets_out: 2, sockets: 3, connections: 4 }],
            total: None,
            ports_in_use: Some(5),
            ring_drops: None,
            driver_restarts: Some(0),
            tx_kicks: None,
            restarts: Vec::new(),
        };
        render(&mut s, &AppStats::default(), Some(&net));
        assert!(
            s.ends_with(",\"net\":{\"workers\":[{\"packets_in\":1,\"packets_out\":2,\"sockets\":3,\"connections\":4}],\"total\":null,\"ports_in_use\":5,\"ring_drops\":null,\"driver_restarts\":0,\"tx_kicks\":null,\"restarts\":[]}}\n"),
            "{s}"
        );
    }

    /// Restarts in the order given (newest first), times in milliseconds (0: `null`), and causes
    /// that are not polite text (quotes, backslashes, control bytes, invalid UTF-8, non-ASCII)
    /// still make one valid JSON string each.
    #[test]
    fn renders_restarts_with_hostile_causes_as_valid_json() {
        let hostile = b"a\"b\\c\n\x00\x7f\xff\xc3\xa9\xf0\x9f\x98\x80\xc3".to_vec();
        let net = NetStats {
            driver_restarts: Some(3),
            tx_kicks: Some(7),
            restarts: alloc::vec![
                RestartStats { restart: 3, cause: b"stall-tx".to_vec(), fault_to_running_us: 11_000, fault_to_traffic_us: 455_123 },
                RestartStats { restart: 2, cause: hostile, fault_to_running_us: 9_007, fault_to_traffic_us: 41 },
                RestartStats { restart: 1, cause: b"page fault".to_vec(), fault_to_running_us: 0, fault_to_traffic_us: 1_000_000 },
            ],
            ..NetStats::default()
        };
        let mut s = String::new();
        render(&mut s, &AppStats::default(), Some(&net));
        assert!(
            s.ends_with(concat!(
                ",\"driver_restarts\":3,\"tx_kicks\":7,\"restarts\":[",
                "{\"restart\":3,\"cause\":\"stall-tx\",\"fault_to_running_ms\":11.000,\"fault_to_traffic_ms\":455.123},",
                "{\"restart\":2,\"cause\":\"a\\\"b\\\\c\\u000a\\u0000\\u007f\\ufffd\\u00e9\\ud83d\\ude00\\ufffd\",\"fault_to_running_ms\":9.007,\"fault_to_traffic_ms\":0.041},",
                "{\"restart\":1,\"cause\":\"page fault\",\"fault_to_running_ms\":null,\"fault_to_traffic_ms\":1000.000}",
                "]}}\n"
            )),
            "{s}"
        );
        assert!(s.is_ascii());
        let v: serde_json::Value = serde_json::from_str(&s).expect("valid JSON");
        let r = &v["net"]["restarts"];
        assert_eq!(r.as_array().map(|a| a.len()), Some(3));
        assert_eq!(r[1]["cause"], "a\"b\\c\n\u{0}\u{7f}\u{fffd}\u{e9}\u{1f600}\u{fffd}");
        assert_eq!(r[0]["fault_to_traffic_ms"].as_f64(), Some(455.123));
        // Every byte value alone, and every two-byte pair starting with a non-ASCII byte.
        for a in 0..=255u8 {
            for b in [None, Some(0u8), Some(0x80), Some(0xbf), Some(b'"'), Some(0xff)] {
                let mut cause = alloc::vec![a];
                cause.extend(b);
                let mut s = String::new();
                json_string(&mut s, &cause);
                let back: String = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{cause:?} -> {s}: {e}"));
                assert_eq!(back, String::from_utf8_lossy(&cause), "{cause:?} -> {s}");
            }
        }
    }
}
