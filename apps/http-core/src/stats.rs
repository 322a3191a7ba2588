//! `/stats`: what the page reports, where the numbers come from, and the JSON.
//!
//! The application's own counters (connections, requests, responses by status, bytes) are
//! always there. The net server's (per worker: packets, sockets, connections; ports in use;
//! ring drops; driver restarts) come from a [`StatsSource`]: [`ClientStats`] asks the net
//! server (`Request::Stats` through libsock, one round trip per page); [`NoNetStats`] reports
//! `"net": null`.

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
            out.push('}');
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
        };
        render(&mut s, &AppStats::default(), Some(&net));
        assert!(
            s.ends_with(",\"net\":{\"workers\":[{\"packets_in\":1,\"packets_out\":2,\"sockets\":3,\"connections\":4}],\"total\":null,\"ports_in_use\":5,\"ring_drops\":null,\"driver_restarts\":0}}\n"),
            "{s}"
        );
    }
}
