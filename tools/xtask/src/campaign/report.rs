//! What a fault campaign found: per fault, per kind and in total; as a table and as JSON.
//!
//! The campaign fails on any fault that was not injected or not recovered, any lost or corrupted
//! byte, any other component dying, or an aborted campaign. Timings and the TCP survival rate are
//! reported against their targets but never fail it (tests check behaviour, not timings; the
//! survival rate follows from the lost bytes, which do fail it).

use super::traffic::Counters;
use super::Options;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

/// Survival target of the issue: ≥ 99 % of established TCP connections.
pub const SURVIVAL_TARGET_PCT: f64 = 99.0;
/// Faults the long campaign must inject.
pub const FAULTS_TARGET: usize = 1000;
/// Fault to traffic flowing again in the guest, at p50 under TCG (issue 5), in ms.
pub const TRAFFIC_P50_TARGET_MS: f64 = 50.0;

#[derive(Clone, Debug, Default)]
pub struct FaultRecord {
    pub index: usize,
    pub kind: String,
    /// Since QEMU started (as in the console log).
    pub at_s: f64,
    /// The root task's injection number (`ok <seq>`); none if it refused or did not answer.
    pub seq: Option<u64>,
    pub restart: Option<u64>,
    /// The cause word of the RECOVERY line.
    pub cause: Option<String>,
    /// Restarts of the component the root task announced while this fault was handled.
    pub restarts: u64,
    pub guest_running_ms: Option<f64>,
    pub guest_traffic_ms: Option<f64>,
    /// From sending the request to the RECOVERY line on the console.
    pub recovery_line_ms: Option<f64>,
    pub host_stall_ms: Option<f64>,
    pub resumed: bool,
    pub recovered: bool,
    pub note: String,
}

impl FaultRecord {
    pub fn new(index: usize, kind: &str, at: Duration) -> FaultRecord {
        FaultRecord {
            index,
            kind: kind.to_string(),
            at_s: at.as_secs_f64(),
            ..FaultRecord::default()
        }
    }

    pub fn summary(&self, of: usize) -> String {
        let ms = |x: Option<f64>| x.map_or("—".to_string(), |v| format!("{v:.1} ms"));
        let mut s = format!(
            "fault {}/{of} {:<8} {}: restart #{}, guest: running {}, traffic {}; host stall {}",
            self.index,
            self.kind,
            if self.recovered {
                "recovered"
            } else {
                "NOT RECOVERED"
            },
            self.restart.map_or("—".into(), |r| r.to_string()),
            ms(self.guest_running_ms),
            ms(self.guest_traffic_ms),
            ms(self.host_stall_ms),
        );
        if let Some(c) = self.cause.as_ref().filter(|c| **c != self.kind) {
            s.push_str(&format!(" (cause reported: {c})"));
        }
        if self.restarts > 1 {
            s.push_str(&format!(" ({} restarts)", self.restarts));
        }
        if !self.note.is_empty() {
            s.push_str(&format!(" — {}", self.note));
        }
        s
    }
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub component: String,
    pub planned: usize,
    pub boot_s: f64,
    pub duration_s: f64,
    pub faults: Vec<FaultRecord>,
    pub restarts: u64,
    pub stats_driver_restarts: Option<u64>,
    /// The newest restart `/stats` details (number, cause), read once traffic has resumed.
    pub stats_newest_restart: Option<(u64, String)>,
    /// The root task's count (`restarts` on the control channel).
    pub supervisor_restarts: Option<u64>,
    /// Other components dying, restarts of them.
    pub unexpected: Vec<String>,
    /// Restarts of the component the root task did not attribute to an injected fault (a
    /// heartbeat missed, a ring stall reported by the net server after a restart), with when.
    pub uninjected_restarts: Vec<String>,
    pub aborted: Option<String>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    pub console_log: String,
    // Traffic totals.
    pub echo_sent: u64,
    pub echo_verified: u64,
    pub echo_lost: u64,
    pub echo_corrupted: u64,
    pub http_requests: u64,
    pub http_up_verified: u64,
    pub http_down_verified: u64,
    pub http_lost: u64,
    pub http_corrupted: u64,
    pub tcp_established: u64,
    pub tcp_survived: u64,
    pub tcp_failed: u64,
    pub udp_sent: u64,
    pub udp_received: u64,
    pub udp_corrupted: u64,
    pub udp_duplicates: u64,
    pub problems: Vec<String>,
    pub failures: Vec<String>,
    options: String,
}

/// Nearest-rank percentile of `v` (sorted here), `q` in 0..=1.
pub fn percentile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    Some(s[rank - 1])
}

fn dist(v: &[f64]) -> Value {
    json!({
        "n": v.len(),
        "p50": percentile(v, 0.5),
        "p99": percentile(v, 0.99),
        "max": percentile(v, 1.0),
    })
}

impl Report {
    pub fn new(o: &Options) -> Report {
        Report {
            seed: o.seed,
            component: o.component.clone(),
            planned: o.faults,
            options: format!("{o:?}"),
            ..Report::default()
        }
    }

    pub fn set_counters(&mut self, c: &Counters) {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(SeqCst);
        self.echo_sent = g(&c.echo_sent);
        self.echo_verified = g(&c.echo_verified);
        self.echo_lost = g(&c.echo_lost);
        self.echo_corrupted = g(&c.echo_corrupted);
        self.http_requests = g(&c.http_requests);
        self.http_up_verified = g(&c.http_up_verified);
        self.http_down_verified = g(&c.http_down_verified);
        self.http_lost = g(&c.http_lost);
        self.http_corrupted = g(&c.http_corrupted);
        self.tcp_established = g(&c.tcp_established);
        self.tcp_survived = g(&c.tcp_survived);
        self.tcp_failed = g(&c.tcp_failed);
        self.udp_sent = g(&c.udp_sent);
        self.udp_received = g(&c.udp_received);
        self.udp_corrupted = g(&c.udp_corrupted);
        self.udp_duplicates = g(&c.udp_duplicates);
        self.problems = c.problems.lock().map(|p| p.clone()).unwrap_or_default();
    }

    pub fn injected(&self) -> usize {
        self.faults.iter().filter(|f| f.seq.is_some()).count()
    }
    pub fn recovered(&self) -> usize {
        self.faults.iter().filter(|f| f.recovered).count()
    }
    pub fn bytes_lost(&self) -> u64 {
        self.echo_lost + self.http_lost
    }
    pub fn bytes_corrupted(&self) -> u64 {
        self.echo_corrupted + self.http_corrupted
    }
    pub fn survival_pct(&self) -> Option<f64> {
        (self.tcp_established > 0)
            .then(|| 100.0 * self.tcp_survived as f64 / self.tcp_established as f64)
    }

    /// Decides pass/fail: fills `failures`.
    pub fn finish(&mut self) {
        let mut f = Vec::new();
        if let Some(a) = &self.aborted {
            f.push(format!("campaign aborted: {a}"));
        }
        if self.injected() < self.planned {
            f.push(format!(
                "{} of {} faults injected",
                self.injected(),
                self.planned
            ));
        }
        let unrecovered = self
            .faults
            .iter()
            .filter(|x| x.seq.is_some() && !x.recovered)
            .count();
        if unrecovered > 0 {
            f.push(format!("{unrecovered} unrecovered fault(s)"));
        }
        if self.bytes_lost() > 0 {
            f.push(format!("{} bytes lost", self.bytes_lost()));
        }
        if self.bytes_corrupted() > 0 || self.udp_corrupted > 0 {
            f.push(format!(
                "{} bytes corrupted, {} UDP datagrams corrupted",
                self.bytes_corrupted(),
                self.udp_corrupted
            ));
        }
        if !self.unexpected.is_empty() {
            f.push(format!(
                "{} other component death(s)",
                self.unexpected.len()
            ));
        }
        if self.echo_verified == 0 && self.http_requests == 0 {
            f.push("no traffic was verified".into());
        }
        if let Some(p) = self.stats_problem() {
            f.push(p);
        }
        self.failures = f;
    }

    /// Whether `/stats` shows the restarts (issue 5, "visibility"): the newest one by the
    /// number the supervisor gave it, with a cause. Only judged when `/stats` answered after a
    /// complete campaign. `driver_restarts` counts the incarnations the net server attached to,
    /// so it may be lower than the supervisor's count (a driver restarted twice before the net
    /// server saw the first new epoch) but never higher.
    fn stats_problem(&self) -> Option<String> {
        if self.aborted.is_some() || self.restarts == 0 {
            return None;
        }
        let n = self.stats_driver_restarts?;
        if n == 0 || n > self.restarts {
            return Some(format!(
                "/stats shows {n} driver restarts, the root task announced {}",
                self.restarts
            ));
        }
        match &self.stats_newest_restart {
            Some((k, cause)) if *k == self.restarts && !cause.is_empty() => None,
            Some((k, cause)) => Some(format!(
                "/stats: newest restart #{k} ({cause:?}), the root task announced #{}",
                self.restarts
            )),
            None => Some("/stats lists no restart".into()),
        }
    }

    /// The long campaign's targets, met or not.
    pub fn targets(&self) -> Value {
        let unrecovered = self.faults.iter().any(|x| !x.recovered);
        json!({
            "faults_ge_1000": self.injected() >= FAULTS_TARGET,
            "all_recovered": !unrecovered && self.injected() == self.planned && self.aborted.is_none(),
            "zero_bytes_lost": self.bytes_lost() == 0 && self.bytes_corrupted() == 0,
            "survival_ge_99_pct": self.survival_pct().is_some_and(|p| p >= SURVIVAL_TARGET_PCT),
            "fault_to_traffic_p50_le_50_ms": percentile(&Self::column(&self.faults.iter().collect::<Vec<_>>(), |f| f.guest_traffic_ms), 0.5)
                .is_some_and(|p| p <= TRAFFIC_P50_TARGET_MS),
        })
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn verdict(&self) -> String {
        if self.passed() {
            format!(
                "{} faults, all recovered, {} bytes verified, 0 lost",
                self.injected(),
                self.echo_verified + self.http_up_verified + self.http_down_verified
            )
        } else {
            self.failures.join("; ")
        }
    }

    fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = Vec::new();
        for f in &self.faults {
            if !k.contains(&f.kind) {
                k.push(f.kind.clone());
            }
        }
        k.sort_by_key(|x| {
            crate::control::KINDS
                .iter()
                .position(|y| y == x)
                .unwrap_or(99)
        });
        k
    }

    fn column(faults: &[&FaultRecord], f: impl Fn(&FaultRecord) -> Option<f64>) -> Vec<f64> {
        faults.iter().filter_map(|x| f(x)).collect()
    }

    pub fn json(&self) -> Value {
        let all: Vec<&FaultRecord> = self.faults.iter().collect();
        let per_kind: Vec<Value> = self
            .kinds()
            .iter()
            .map(|k| {
                let fs: Vec<&FaultRecord> = self.faults.iter().filter(|f| &f.kind == k).collect();
                json!({
                    "kind": k,
                    "injected": fs.iter().filter(|f| f.seq.is_some()).count(),
                    "recovered": fs.iter().filter(|f| f.recovered).count(),
                    "fault_to_running_ms": dist(&Self::column(&fs, |f| f.guest_running_ms)),
                    "fault_to_traffic_ms": dist(&Self::column(&fs, |f| f.guest_traffic_ms)),
                    "host_stall_ms": dist(&Self::column(&fs, |f| f.host_stall_ms)),
                })
            })
            .collect();
        let faults: Vec<Value> = self
            .faults
            .iter()
            .map(|f| {
                json!({
                    "index": f.index,
                    "kind": f.kind,
                    "at_s": f.at_s,
                    "seq": f.seq,
                    "restart": f.restart,
                    "cause": f.cause,
                    "restarts": f.restarts,
                    "fault_to_running_ms": f.guest_running_ms,
                    "fault_to_traffic_ms": f.guest_traffic_ms,
                    "recovery_line_ms": f.recovery_line_ms,
                    "host_stall_ms": f.host_stall_ms,
                    "resumed": f.resumed,
                    "recovered": f.recovered,
                    "note": f.note,
                })
            })
            .collect::<Vec<_>>();
        json!({
            "seed": self.seed,
            "component": self.component,
            "passed": self.passed(),
            "failures": self.failures,
            "faults_planned": self.planned,
            "faults_injected": self.injected(),
            "restarts": self.restarts,
            "restarts_not_injected": self.uninjected_restarts,
            "recovered": self.recovered(),
            "unrecovered": self.faults.iter().filter(|x| x.seq.is_some() && !x.recovered).count(),
            "fault_to_running_ms": dist(&Self::column(&all, |f| f.guest_running_ms)),
            "fault_to_traffic_ms": dist(&Self::column(&all, |f| f.guest_traffic_ms)),
            "host_stall_ms": dist(&Self::column(&all, |f| f.host_stall_ms)),
            "tcp": {
                "connections_established": self.tcp_established,
                "connections_survived": self.tcp_survived,
                "connections_failed": self.tcp_failed,
                "survival_pct": self.survival_pct(),
                "survival_target_pct": SURVIVAL_TARGET_PCT,
            },
            "bytes": {
                "sent": self.echo_sent + self.http_up_verified + self.http_down_verified + self.http_lost + self.http_corrupted,
                "verified": self.echo_verified + self.http_up_verified + self.http_down_verified,
                "lost": self.bytes_lost(),
                "corrupted": self.bytes_corrupted(),
                "echo": { "sent": self.echo_sent, "verified": self.echo_verified, "lost": self.echo_lost, "corrupted": self.echo_corrupted },
                "http": { "requests": self.http_requests, "upload_verified": self.http_up_verified, "download_verified": self.http_down_verified, "lost": self.http_lost, "corrupted": self.http_corrupted },
            },
            "udp": {
                "sent": self.udp_sent,
                "received": self.udp_received,
                "lost": self.udp_sent.saturating_sub(self.udp_received),
                "corrupted": self.udp_corrupted,
                "duplicates": self.udp_duplicates,
            },
            "per_kind": per_kind,
            "targets": self.targets(),
            "stats_driver_restarts": self.stats_driver_restarts,
            "stats_newest_restart": self.stats_newest_restart.as_ref().map(|(k, c)| json!({"restart": k, "cause": c})),
            "supervisor_restarts": self.supervisor_restarts,
            "boot_s": self.boot_s,
            "duration_s": self.duration_s,
            "unexpected": self.unexpected,
            "aborted": self.aborted,
            "notes": self.notes,
            "problems": self.problems,
            "console_log": self.console_log,
            "options": self.options,
            "faults": faults,
        })
    }

    pub fn print_table(&self) {
        let ms = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{x:.1}"));
        let d = |v: &[f64]| {
            format!(
                "{} / {} / {}",
                ms(percentile(v, 0.5)),
                ms(percentile(v, 0.99)),
                ms(percentile(v, 1.0))
            )
        };
        let all: Vec<&FaultRecord> = self.faults.iter().collect();
        let mib = |b: u64| format!("{b} ({:.1} MiB)", b as f64 / (1u64 << 20) as f64);
        println!(
            "==> fault campaign: {} (seed {}, {:.0} s)",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.seed,
            self.duration_s
        );
        let survival = self.survival_pct().map_or("—".into(), |p| {
            format!(
                "{} of {} ({p:.1} %, target ≥ {SURVIVAL_TARGET_PCT} %: {})",
                self.tcp_survived,
                self.tcp_established,
                if p >= SURVIVAL_TARGET_PCT {
                    "met"
                } else {
                    "MISSED"
                }
            )
        });
        let rows: Vec<(&str, String)> = vec![
            (
                "faults injected (planned)",
                format!("{} ({})", self.injected(), self.planned),
            ),
            (
                "restarts of the component",
                format!(
                    "{}{}{}",
                    self.restarts,
                    self.stats_driver_restarts
                        .map_or(String::new(), |s| format!(" (/stats: {s})")),
                    self.supervisor_restarts
                        .map_or(String::new(), |s| format!(" (root task: {s})"))
                ),
            ),
            (
                "  of them not from an injected fault",
                self.uninjected_restarts.len().to_string(),
            ),
            (
                "recovered",
                format!("{} of {}", self.recovered(), self.injected()),
            ),
            (
                "fault → running, guest, p50/p99/max ms",
                d(&Self::column(&all, |f| f.guest_running_ms)),
            ),
            (
                "fault → traffic, guest, p50/p99/max ms",
                d(&Self::column(&all, |f| f.guest_traffic_ms)),
            ),
            (
                "host-observed stall, p50/p99/max ms",
                d(&Self::column(&all, |f| f.host_stall_ms)),
            ),
            ("TCP connections survived", survival),
            (
                "bytes sent (echo + HTTP)",
                mib(self.echo_sent
                    + self.http_up_verified
                    + self.http_down_verified
                    + self.http_lost
                    + self.http_corrupted),
            ),
            (
                "bytes verified",
                mib(self.echo_verified + self.http_up_verified + self.http_down_verified),
            ),
            ("bytes lost", self.bytes_lost().to_string()),
            ("bytes corrupted", self.bytes_corrupted().to_string()),
            (
                "HTTP requests verified (/sink SHA-256, /bytes)",
                self.http_requests.to_string(),
            ),
            (
                "UDP datagrams sent / echoed / lost / corrupted",
                format!(
                    "{} / {} / {} / {}",
                    self.udp_sent,
                    self.udp_received,
                    self.udp_sent.saturating_sub(self.udp_received),
                    self.udp_corrupted
                ),
            ),
        ];
        for (what, v) in rows {
            println!("    {what:<48} {v}");
        }
        println!(
            "    {:<10} {:>8} {:>9} {:>22} {:>22} {:>22}",
            "kind",
            "injected",
            "recovered",
            "running p50/max ms",
            "traffic p50/max ms",
            "host stall p50/max ms"
        );
        for k in self.kinds() {
            let fs: Vec<&FaultRecord> = self.faults.iter().filter(|f| f.kind == k).collect();
            let pm =
                |v: Vec<f64>| format!("{} / {}", ms(percentile(&v, 0.5)), ms(percentile(&v, 1.0)));
            println!(
                "    {:<10} {:>8} {:>9} {:>22} {:>22} {:>22}",
                k,
                fs.iter().filter(|f| f.seq.is_some()).count(),
                fs.iter().filter(|f| f.recovered).count(),
                pm(Self::column(&fs, |f| f.guest_running_ms)),
                pm(Self::column(&fs, |f| f.guest_traffic_ms)),
                pm(Self::column(&fs, |f| f.host_stall_ms)),
            );
        }
        for u in &self.unexpected {
            println!("    unexpected: {u}");
        }
        for u in &self.uninjected_restarts {
            println!("    restart without an injected fault: {u}");
        }
        for n in &self.notes {
            println!("    note: {n}");
        }
        for p in self.problems.iter().take(10) {
            println!("    traffic: {p}");
        }
        if self.problems.len() > 10 {
            println!(
                "    traffic: … {} more in the JSON",
                self.problems.len() - 10
            );
        }
        let t = self.targets();
        let met = |k: &str| if t[k] == true { "met" } else { "MISSED" };
        println!(
            "    long-campaign targets: ≥ {FAULTS_TARGET} faults {}, all recovered {}, 0 bytes lost {}, ≥ {SURVIVAL_TARGET_PCT} % connections survive {}, fault → traffic p50 ≤ {TRAFFIC_P50_TARGET_MS} ms {}",
            met("faults_ge_1000"),
            met("all_recovered"),
            met("zero_bytes_lost"),
            met("survival_ge_99_pct"),
            met("fault_to_traffic_p50_le_50_ms")
        );
        for f in &self.failures {
            println!("    FAILED: {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn recovered(i: usize, kind: &str) -> FaultRecord {
        FaultRecord {
            seq: Some(i as u64),
            recovered: true,
            resumed: true,
            guest_traffic_ms: Some(10.0 * i as f64),
            ..FaultRecord::new(i, kind, Duration::ZERO)
        }
    }

    fn base() -> Report {
        Report {
            planned: 2,
            faults: vec![recovered(1, "crash"), recovered(2, "hang")],
            echo_sent: 1000,
            echo_verified: 1000,
            tcp_established: 4,
            tcp_survived: 4,
            restarts: 2,
            stats_driver_restarts: Some(2),
            stats_newest_restart: Some((2, "crash".into())),
            ..Report::default()
        }
    }

    #[test]
    fn a_clean_campaign_passes_and_every_defect_fails_it() {
        let mut r = base();
        r.finish();
        assert!(r.passed(), "{:?}", r.failures);
        let j = r.json();
        assert_eq!(j["faults_injected"], 2);
        assert_eq!(j["fault_to_traffic_ms"]["max"], 20.0);
        assert_eq!(j["per_kind"][0]["kind"], "crash");
        assert_eq!(j["per_kind"][1]["kind"], "hang");
        assert_eq!(j["targets"]["all_recovered"], true);
        assert_eq!(j["targets"]["faults_ge_1000"], false);
        assert_eq!(j["targets"]["survival_ge_99_pct"], true);
        assert_eq!(j["targets"]["fault_to_traffic_p50_le_50_ms"], true);

        type Defect = Box<dyn Fn(&mut Report)>;
        let defects: Vec<(&str, Defect)> = vec![
            ("unrecovered", Box::new(|r| r.faults[1].recovered = false)),
            ("injected", Box::new(|r| r.faults[0].seq = None)),
            ("lost", Box::new(|r| r.echo_lost = 1)),
            ("lost", Box::new(|r| r.http_lost = 5)),
            ("corrupted", Box::new(|r| r.echo_corrupted = 1)),
            ("corrupted", Box::new(|r| r.udp_corrupted = 1)),
            ("aborted", Box::new(|r| r.aborted = Some("x".into()))),
            (
                "component death",
                Box::new(|r| r.unexpected.push("netserver".into())),
            ),
            ("no traffic", Box::new(|r| r.echo_verified = 0)),
            (
                "/stats shows 3",
                Box::new(|r| r.stats_driver_restarts = Some(3)),
            ),
            (
                "/stats shows 0",
                Box::new(|r| r.stats_driver_restarts = Some(0)),
            ),
            (
                "newest restart #1",
                Box::new(|r| r.stats_newest_restart = Some((1, "x".into()))),
            ),
            (
                "newest restart #2 (\"\")",
                Box::new(|r| r.stats_newest_restart = Some((2, String::new()))),
            ),
            (
                "lists no restart",
                Box::new(|r| r.stats_newest_restart = None),
            ),
        ];
        for (what, f) in defects {
            let mut r = base();
            f(&mut r);
            r.finish();
            assert!(!r.passed(), "{what}");
            assert!(r.verdict().contains(what), "{what}: {}", r.verdict());
            assert_eq!(r.json()["passed"], false);
        }
        // UDP losses are counted, not failures.
        let mut r = base();
        r.udp_sent = 10;
        r.udp_received = 7;
        r.finish();
        assert!(r.passed());
        assert_eq!(r.json()["udp"]["lost"], 3);
        // The net server may have attached to fewer incarnations than were started; a /stats
        // that did not answer is not judged.
        for f in [
            |r: &mut Report| r.stats_driver_restarts = Some(1),
            |r: &mut Report| r.stats_driver_restarts = None,
        ] {
            let mut r = base();
            f(&mut r);
            r.finish();
            assert!(r.passed(), "{:?}", r.failures);
        }
    }
}
