//! `cargo xtask fault-campaign`: boots the product system (`system.toml`, `-smp 2`) with the
//! control channel, keeps verified traffic running from the host ([`traffic`]), injects faults
//! of mixed kinds into the virtio-net driver at random times through the control channel
//! ([`crate::control`]), and reports what happened ([`report`]).
//!
//! One fault at a time: after a random pause, the host sends `inject <component> <kind>`, waits
//! for the net server's `RECOVERY` line of the next restart (unrecovered after
//! `--recovery-timeout`), then for every TCP activity to make progress after that line
//! (unrecovered after `--resume-timeout`). The host-observed stall of a fault is the time from
//! the injection to the end of the last pause (≥ 20 ms) of any echo stream that ended before
//! every activity was flowing again.

pub mod console;
#[cfg(test)]
mod fake_guest;
pub mod report;
pub mod traffic;

use crate::control::{self, Answer, Control};
use crate::image::BootImage;
use crate::kernel::{self, Variant};
use crate::{hostnet, image, qemu, step, Ws};
use anyhow::{bail, Context, Result};
use console::{Console, Supervisor};
use report::{FaultRecord, Report};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use traffic::{mix, Traffic};

/// Everything a campaign needs to know.
#[derive(Clone, Debug)]
pub struct Options {
    pub faults: usize,
    pub seed: u64,
    pub kinds: Vec<String>,
    pub component: String,
    pub streams: usize,
    /// Bytes per second per echo stream.
    pub stream_rate: u64,
    /// Bytes per second of the HTTP activity.
    pub http_rate: u64,
    pub http: bool,
    pub udp: bool,
    pub recovery_timeout: Duration,
    pub resume_timeout: Duration,
    /// Random pause before each fault, after the previous one recovered.
    pub min_gap: Duration,
    pub max_gap: Duration,
    pub smp: u32,
    pub no_build: bool,
    /// Stop at the first fault that is not recovered (the test's campaign: it has failed then).
    pub stop_on_failure: bool,
    /// The JSON report; the console log goes next to it (`<stem>-console.log`).
    pub out: PathBuf,
    /// A capture of every frame of the guest's network (QEMU filter-dump).
    pub pcap: Option<PathBuf>,
}

impl Options {
    /// The defaults of `cargo xtask fault-campaign` (the JSON in `target/bench/`).
    pub fn new(ws: &Ws, faults: usize) -> Options {
        Options {
            faults,
            seed: default_seed(),
            kinds: control::KINDS.iter().map(|s| s.to_string()).collect(),
            component: control::DEFAULT_COMPONENT.to_string(),
            streams: 4,
            stream_rate: 256 << 10,
            http_rate: 512 << 10,
            http: true,
            udp: true,
            recovery_timeout: Duration::from_secs(10),
            resume_timeout: Duration::from_secs(30),
            min_gap: Duration::from_millis(200),
            max_gap: Duration::from_millis(1500),
            smp: 2,
            no_build: false,
            stop_on_failure: false,
            out: ws.target.join("bench").join("fault-campaign.json"),
            pcap: None,
        }
    }
}

pub fn default_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    mix(t ^ u64::from(std::process::id()) << 32) >> 16
}

/// The campaign's random numbers (SplitMix64: reproducible from the seed alone).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// The kinds of `n` faults: every kind at least once when `n` ≥ the number of kinds (else `n`
/// different ones), the rest drawn at random, in random order.
pub fn plan(n: usize, kinds: &[String], rng: &mut Rng) -> Vec<String> {
    let mut out: Vec<String> = kinds.to_vec();
    rng.shuffle(&mut out);
    out.truncate(n);
    while out.len() < n {
        out.push(kinds[rng.below(kinds.len() as u64) as usize].clone());
    }
    rng.shuffle(&mut out);
    out
}

/// Build (unless told not to), boot, run the campaign, write the JSON and the console log,
/// print the table. The report says whether it passed.
pub fn run(ws: &Ws, o: &Options) -> Result<Report> {
    if o.kinds.is_empty() {
        bail!("no fault kinds to inject");
    }
    if let Some(k) = o
        .kinds
        .iter()
        .find(|k| !control::KINDS.contains(&k.as_str()))
    {
        bail!(
            "unknown fault kind `{k}` (kinds: {})",
            control::KINDS.join(", ")
        );
    }
    let variant = if o.smp > 1 { Variant::Smp } else { Variant::Up };
    let sys = crate::load_system(ws, Path::new("system.toml"))?;
    crate::deps::ensure(crate::deps::Need::KernelAndQemu)?;
    let boot = if o.no_build {
        let dir = ws
            .target
            .join("image")
            .join(format!("{}-{variant}", sys.name));
        let boot = BootImage {
            kernel: dir.join("kernel32.elf"),
            root_task: dir.join("root-task.elf"),
            dir,
        };
        if !boot.kernel.is_file() || !boot.root_task.is_file() {
            bail!("--no-build: nothing built in {} yet", boot.dir.display());
        }
        boot
    } else {
        let k = kernel::build(ws, variant)?;
        image::build(ws, &sys, &k)?
    };
    run_image(ws, &boot, o)
}

/// The campaign on an already built boot image.
pub fn run_image(ws: &Ws, boot: &BootImage, o: &Options) -> Result<Report> {
    let http = hostnet::free_port()?;
    let echo = hostnet::free_port()?;
    let socket = ws
        .target
        .join("qemu-control")
        .join(format!("campaign-{}.sock", std::process::id()));
    control::prepare_socket(&socket)?;
    let mut extra = hostnet::user_net_args(
        &[("tcp", http, 80), ("tcp", echo, 7), ("udp", echo, 7)],
        o.pcap.as_deref(),
    );
    extra.extend(control::qemu_args(&socket)?);
    let mut cmd = qemu::command(boot, o.smp, qemu::Console::Plain, &extra);
    println!(
        "==> fault campaign: {} fault(s) into `{}`, seed {}",
        o.faults, o.component, o.seed
    );
    println!("    (again with the same faults: --seed {})", o.seed);
    println!("==> {}", step::show(&cmd));
    let _ = std::io::stdout().flush();
    let console = Console::default();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", qemu::QEMU))?;
    if let Some(out) = child.stdout.take() {
        console.read_from(out, "");
    }
    if let Some(err) = child.stderr.take() {
        console.read_from(err, "[qemu stderr] ");
    }
    let addrs = Addrs {
        http: SocketAddr::from((Ipv4Addr::LOCALHOST, http)),
        echo: SocketAddr::from((Ipv4Addr::LOCALHOST, echo)),
    };
    let result = drive(o, &console, &socket, addrs, start);
    qemu::stop(&mut child);
    let _ = std::fs::remove_file(&socket);
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = o.out.with_file_name(format!(
        "{}-console.log",
        o.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "fault-campaign".into())
    ));
    std::fs::write(
        &log,
        format!("$ {}\n{}", step::show(&cmd), console.text(start)),
    )?;
    let mut report = result.with_context(|| format!("console in {}", log.display()))?;
    report.console_log = log.display().to_string();
    std::fs::write(&o.out, serde_json::to_string_pretty(&report.json())? + "\n")?;
    report.print_table();
    println!("==> {} (console: {})", o.out.display(), log.display());
    Ok(report)
}

#[derive(Clone, Copy)]
struct Addrs {
    http: SocketAddr,
    echo: SocketAddr,
}

/// Boot wait, traffic, faults, report. Errors only when no campaign could run at all (the
/// system never came up); everything later ends up in the report.
fn drive(
    o: &Options,
    console: &Console,
    socket: &Path,
    a: Addrs,
    start: Instant,
) -> Result<Report> {
    let s = step::Step::start("boot: waiting for the net server, echo and http to answer");
    let boot_deadline = start + Duration::from_secs(240);
    loop {
        if Instant::now() > boot_deadline {
            bail!("the system did not come up within 240 s");
        }
        if console.lock().closed >= 2 {
            bail!("QEMU exited during boot");
        }
        if let Some(l) = fatal_line(console, 0) {
            bail!("the guest failed during boot: {l}");
        }
        if console.contains("[netserver] ready:") && echo_answers(a.echo) && http_answers(a.http) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let boot_s = start.elapsed().as_secs_f64();
    s.done();
    let mut ctl = Control::connect(socket, Duration::from_secs(10))?;

    let mut report = Report::new(o);
    report.boot_s = boot_s;
    let tcfg = traffic::Config {
        echo: a.echo,
        http: o.http.then_some(a.http),
        streams: o.streams,
        stream_rate: o.stream_rate,
        http_rate: o.http_rate,
        udp: o.udp,
        udp_interval: Duration::from_millis(20),
        seed: o.seed,
    };
    let campaign_start = Instant::now();
    let traffic = Traffic::start(&tcfg, start).context("starting the host traffic")?;
    // Everything must flow before the first fault.
    let s = step::Step::start(format!(
        "traffic: {} echo stream(s){}{}",
        o.streams,
        if o.http { ", HTTP /sink + /bytes" } else { "" },
        if o.udp { ", UDP echo" } else { "" }
    ));
    let t0 = Instant::now();
    let warm = wait_all_progress(&traffic, t0, Duration::from_secs(30), console);
    // Set when the system is gone or did not recover: the traffic is then not drained.
    let mut aborted: Option<String> = None;
    // Set by --stop-on-failure: the campaign ends, the traffic is drained.
    let mut stopped: Option<String> = None;
    match warm {
        Ok(()) => s.done(),
        Err(why) => {
            drop(s);
            aborted = Some(format!(
                "traffic never flowed before the first fault: {why}"
            ));
        }
    }
    let mut rng = Rng::new(o.seed);
    let kinds = plan(o.faults, &o.kinds, &mut rng);
    let mut last_restart = restarts_so_far(console, &o.component);
    let mut seen_lines = 0usize;
    for (i, kind) in kinds.iter().enumerate() {
        if aborted.is_some() {
            break;
        }
        let gap = o.min_gap
            + Duration::from_millis(
                rng.below((o.max_gap.saturating_sub(o.min_gap)).as_millis() as u64 + 1),
            );
        std::thread::sleep(gap);
        // One fault at a time: a restart the root task announced (injected or not) must have
        // started its new instance first.
        let pending_until = Instant::now() + o.recovery_timeout;
        while let Some(k) = restart_in_progress(console, &o.component) {
            if Instant::now() > pending_until {
                report.notes.push(format!(
                    "before fault {}: restart #{k} had not started its new instance after {} s; injected anyway",
                    i + 1,
                    o.recovery_timeout.as_secs_f64()
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let cursor = console.len();
        let t = Instant::now();
        let mut rec = FaultRecord::new(i + 1, kind, t.duration_since(start));
        match ctl.inject(&o.component, kind, Duration::from_secs(5)) {
            Ok(Answer::Ok(seq)) => rec.seq = Some(seq),
            Ok(Answer::Error(why)) => {
                rec.note = format!("the root task refused: error {why}");
                println!(
                    "    fault {}/{} {kind}: refused: error {why}",
                    i + 1,
                    o.faults
                );
                report.faults.push(rec);
                continue;
            }
            Err(e) => {
                rec.note = format!("{e:#}");
                report.faults.push(rec);
                aborted = Some(format!(
                    "fault {}: the control channel failed: {e:#}",
                    i + 1
                ));
                break;
            }
        }
        // The RECOVERY line of the next restart.
        let deadline = t + o.recovery_timeout;
        let mut recovery = None;
        while Instant::now() < deadline {
            // Lenient only in the last second: a RECOVERY with the injected kind as its cause
            // is the one to wait for.
            let lenient =
                deadline.saturating_duration_since(Instant::now()) < Duration::from_secs(1);
            if let Some((when, r)) =
                find_recovery(console, cursor, &o.component, kind, last_restart, lenient)
            {
                recovery = Some((when, r));
                break;
            }
            if console.lock().closed >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let resumed_after = match &recovery {
            Some((when, r)) => {
                last_restart = r.restart;
                rec.restart = Some(r.restart);
                rec.cause = Some(r.cause.clone());
                rec.guest_running_ms = Some(r.fault_to_running_us as f64 / 1000.0);
                rec.guest_traffic_ms = Some(r.fault_to_traffic_us as f64 / 1000.0);
                rec.recovery_line_ms =
                    Some(when.saturating_duration_since(t).as_secs_f64() * 1000.0);
                *when
            }
            None => {
                rec.note = format!(
                    "no RECOVERY line within {} s",
                    o.recovery_timeout.as_secs_f64()
                );
                // Give it more time before the next fault, so faults do not pile up.
                let late = Instant::now() + o.resume_timeout;
                while Instant::now() < late && console.lock().closed < 2 {
                    if let Some((when, r)) =
                        find_recovery(console, cursor, &o.component, kind, last_restart, true)
                    {
                        last_restart = r.restart;
                        rec.restart = Some(r.restart);
                        rec.cause = Some(r.cause.clone());
                        rec.note.push_str(&format!(
                            "; it came after {:.1} s",
                            when.saturating_duration_since(t).as_secs_f64()
                        ));
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Instant::now()
            }
        };
        // Every TCP activity moving again after the recovery.
        match wait_all_progress(&traffic, resumed_after, o.resume_timeout, console) {
            Ok(()) => {
                let flowing = Instant::now();
                rec.resumed = true;
                rec.host_stall_ms = Some(host_stall(&traffic, t, flowing).as_secs_f64() * 1000.0);
            }
            Err(why) => {
                rec.note = if rec.note.is_empty() {
                    why.clone()
                } else {
                    format!("{}; {why}", rec.note)
                };
                aborted = Some(format!(
                    "fault {} ({kind}): the traffic did not resume: {why}",
                    i + 1
                ));
            }
        }
        // What else the console said meanwhile.
        let lines = console.since(cursor);
        for (_, l) in &lines {
            match console::parse_supervisor(l) {
                Some(Supervisor::Restarting { component, .. }) if component == o.component => {
                    rec.restarts += 1
                }
                Some(Supervisor::Restarting {
                    component, cause, ..
                }) => report
                    .unexpected
                    .push(format!("fault {}: `{component}` {cause}", i + 1)),
                Some(Supervisor::Stopped { component, what }) => report
                    .unexpected
                    .push(format!("fault {}: `{component}` {what}", i + 1)),
                _ => {}
            }
        }
        if let Some(l) = fatal_line(console, cursor) {
            aborted = Some(format!("fault {} ({kind}): {l}", i + 1));
        }
        seen_lines = seen_lines.max(cursor + lines.len());
        rec.recovered = recovery.is_some() && rec.resumed;
        println!("    {}", rec.summary(o.faults));
        let _ = std::io::stdout().flush();
        let stop = !rec.recovered && o.stop_on_failure && aborted.is_none();
        report.faults.push(rec);
        if stop {
            // The traffic flows again (else `aborted`): it is drained and verified as usual.
            stopped = Some(format!(
                "stopped after fault {} ({kind}), the first not recovered",
                i + 1
            ));
            break;
        }
    }
    // Restarts nobody asked for between and after the faults are in the lines not yet looked at.
    std::thread::sleep(Duration::from_millis(500));
    for (_, l) in console.since(seen_lines) {
        if let Some(
            Supervisor::Restarting {
                component, cause, ..
            }
            | Supervisor::Stopped {
                component,
                what: cause,
            },
        ) = console::parse_supervisor(&l)
        {
            if component != o.component {
                report
                    .unexpected
                    .push(format!("after the faults: `{component}` {cause}"));
            }
        }
    }
    // The root task's own count, through the control channel.
    if aborted.is_none() {
        match ctl.restarts(Duration::from_secs(5)) {
            Ok(counts) => {
                report.supervisor_restarts = counts
                    .into_iter()
                    .find(|(c, _)| *c == o.component)
                    .map(|(_, n)| n)
            }
            Err(e) => report
                .notes
                .push(format!("`restarts` on the control channel: {e:#}")),
        }
    }
    let s = step::Step::start("stopping the traffic: every stream drained, verified and closed");
    let counters = traffic.finish(aborted.is_some());
    s.done();
    report.duration_s = campaign_start.elapsed().as_secs_f64();
    report.restarts = restarts_so_far(console, &o.component);
    report.uninjected_restarts = console
        .lock()
        .lines
        .iter()
        .filter_map(|(t, l)| match console::parse_supervisor(l) {
            Some(Supervisor::Restarting {
                component,
                restart,
                cause,
            }) if component == o.component && !cause.contains("(injected:") => Some(format!(
                "{:.3} s: restart #{restart}: {cause}",
                t.saturating_duration_since(start).as_secs_f64()
            )),
            _ => None,
        })
        .collect();
    if aborted.is_none() {
        if let Some(st) = restarts_from_stats(a.http) {
            report.stats_driver_restarts = st.driver_restarts;
            report.stats_newest_restart = st.newest;
        }
    }
    report.set_counters(&counters);
    report.aborted = aborted.or(stopped);
    report.finish();
    Ok(report)
}

/// Restarts of `component` the root task has announced so far (the highest `restart #k`).
fn restarts_so_far(console: &Console, component: &str) -> u64 {
    console
        .lock()
        .lines
        .iter()
        .filter_map(|(_, l)| match console::parse_supervisor(l) {
            Some(Supervisor::Restarting {
                component: c,
                restart,
                ..
            }) if c == component => Some(restart),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The RECOVERY line of the fault injected when the console had `from` lines: the first one
/// after that for a restart above `after` whose cause is `kind`; after `lenient`, also one with
/// another cause, as long as its restart was announced after the injection (a fault the guest
/// did not attribute to the injection).
/// The restart of `component` announced last, if its new instance has not started yet.
fn restart_in_progress(console: &Console, component: &str) -> Option<u64> {
    let c = console.lock();
    let mut pending = None;
    for (_, l) in &c.lines {
        match console::parse_supervisor(l) {
            Some(Supervisor::Restarting {
                component: ref x,
                restart,
                ..
            }) if x == component => pending = Some(restart),
            Some(Supervisor::Restarted {
                component: ref x,
                restart,
                ..
            }) if x == component && pending == Some(restart) => pending = None,
            Some(Supervisor::Stopped {
                component: ref x, ..
            }) if x == component => pending = None,
            _ => {}
        }
    }
    pending
}

fn find_recovery(
    console: &Console,
    from: usize,
    component: &str,
    kind: &str,
    after: u64,
    lenient: bool,
) -> Option<(Instant, console::Recovery)> {
    let c = console.lock();
    let lines = c.lines.get(from..)?;
    let candidates = lines.iter().filter_map(|(t, l)| {
        console::parse_recovery(l)
            .filter(|r| r.component == component && r.restart > after)
            .map(|r| (*t, r))
    });
    let mut other = None;
    for (t, r) in candidates {
        if r.cause == kind {
            return Some((t, r));
        }
        let announced_here = lines.iter().any(|(_, l)| {
            matches!(console::parse_supervisor(l),
                Some(Supervisor::Restarting { component: ref c, restart, .. }) if c == component && restart == r.restart)
        });
        if lenient && announced_here && other.is_none() {
            other = Some((t, r));
        }
    }
    other
}

fn fatal_line(console: &Console, from: usize) -> Option<String> {
    let c = console.lock();
    c.lines
        .get(from..)?
        .iter()
        .find(|(_, l)| {
            !l.starts_with("[qemu stderr]") && console::FATAL.iter().any(|f| l.contains(f))
        })
        .map(|(_, l)| l.clone())
}

/// Waits until every TCP activity made progress after `after`.
fn wait_all_progress(
    t: &Traffic,
    after: Instant,
    timeout: Duration,
    console: &Console,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let waiting: Vec<&str> = t
            .flows
            .iter()
            .filter(|(_, f)| f.last().is_none_or(|l| l <= after))
            .map(|(n, _)| n.as_str())
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no progress within {} s: {}",
                timeout.as_secs_f64(),
                waiting.join(", ")
            ));
        }
        if console.lock().closed >= 2 {
            return Err("QEMU exited".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// From the injection at `t` to the end of the last pause of an echo stream (or of any
/// activity, without echo streams) that ended by `flowing`; zero when nothing paused. Drains the
/// recorded pauses.
fn host_stall(traffic: &Traffic, t: Instant, flowing: Instant) -> Duration {
    let echo_only = traffic.flows.iter().any(|(n, _)| n.starts_with("echo"));
    let mut stall = Duration::ZERO;
    for (name, f) in &traffic.flows {
        let gaps = f.take_gaps();
        if echo_only && !name.starts_with("echo") {
            continue;
        }
        for (_, end) in gaps {
            if end > t && end <= flowing {
                stall = stall.max(end - t);
            }
        }
    }
    stall
}

fn echo_answers(addr: SocketAddr) -> bool {
    let go = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"ping\n")?;
        let mut b = [0u8; 5];
        s.read_exact(&mut b)?;
        Ok(&b == b"ping\n")
    };
    go().unwrap_or(false)
}

/// One `GET /` answered 200 (QEMU accepts forwarded connections before the guest listens).
fn http_answers(addr: SocketAddr) -> bool {
    http_get(addr, "/").is_some_and(|(status, _)| status == 200)
}

fn http_get(addr: SocketAddr, path: &str) -> Option<(u32, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: campaign\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut text = Vec::new();
    s.read_to_end(&mut text).ok()?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// What `/stats` says about driver restarts.
struct StatsRestarts {
    /// `net.driver_restarts` (null until the net server counts them).
    driver_restarts: Option<u64>,
    /// The newest entry of `net.restarts`: its number and cause.
    newest: Option<(u64, String)>,
}

fn restarts_from_stats(http: SocketAddr) -> Option<StatsRestarts> {
    let (status, body) = http_get(http, "/stats")?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let newest = v.pointer("/net/restarts/0").and_then(|r| {
        Some((
            r.get("restart")?.as_u64()?,
            r.get("cause")?.as_str()?.to_string(),
        ))
    });
    Some(StatsRestarts {
        driver_restarts: v.pointer("/net/driver_restarts").and_then(|n| n.as_u64()),
        newest,
    })
}

/// The campaign's name among the tests of `cargo xtask test` (and its filter).
pub const TEST_NAME: &str = "fault-campaign";
pub const TEST_DESCRIPTION: &str = "system.toml under verified TCP/HTTP/UDP traffic from the host: \
    20 faults of every kind injected into virtio-net through COM2; every one must recover, no byte lost or corrupted";

/// The short campaign of `cargo xtask test`: at least 20 faults, every kind, fails on any
/// unrecovered fault or lost or corrupted byte. Returns (passed, one-line reason).
pub fn test_entry(ws: &Ws, boot: &BootImage) -> Result<(bool, String)> {
    let mut o = Options::new(ws, 20);
    o.streams = 3;
    o.stop_on_failure = true;
    // Generous: the test checks that every fault recovers, not how fast (the long campaign
    // keeps the 10 s); a loaded 2-core host slows the whole TCG guest down.
    o.recovery_timeout = Duration::from_secs(30);
    o.resume_timeout = Duration::from_secs(30);
    o.min_gap = Duration::from_millis(100);
    o.max_gap = Duration::from_millis(400);
    o.out = ws.target.join("bench").join("fault-campaign-test.json");
    let r = run_image(ws, boot, &o)?;
    Ok((r.passed(), r.verdict()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_have_every_kind_and_are_reproducible() {
        let kinds: Vec<String> = control::KINDS.iter().map(|s| s.to_string()).collect();
        for seed in 0..50 {
            let p = plan(20, &kinds, &mut Rng::new(seed));
            assert_eq!(p.len(), 20);
            for k in &kinds {
                assert!(p.contains(k), "seed {seed}: {k} missing from {p:?}");
            }
            assert_eq!(p, plan(20, &kinds, &mut Rng::new(seed)));
        }
        let a = plan(20, &kinds, &mut Rng::new(1));
        assert_ne!(a, plan(20, &kinds, &mut Rng::new(2)));
        let few = plan(3, &kinds, &mut Rng::new(9));
        assert_eq!(few.len(), 3);
        assert!(few[0] != few[1] && few[1] != few[2] && few[0] != few[2]);
    }

    fn console(lines: &[&str]) -> Console {
        let c = Console::default();
        for l in lines {
            c.lock().lines.push((Instant::now(), l.to_string()));
        }
        c
    }

    const SPURIOUS: &str =
        "[root] component `virtio-net` is hung: missed its heartbeat (100 ms); restart #2 in 0 ms";
    const SPURIOUS_RECOVERY: &str =
        "[netserver] RECOVERY component=virtio-net restart=2 cause=hung fault_to_running_us=5 fault_to_traffic_us=9";
    const OURS: &str = "[root] component `virtio-net` thread `main` faulted: illegal instruction (ip 0x4) (injected: illegal); restart #3 in 0 ms";
    const OUR_RECOVERY: &str =
        "[netserver] RECOVERY component=virtio-net restart=3 cause=illegal fault_to_running_us=7 fault_to_traffic_us=11";

    #[test]
    fn the_recovery_of_the_injected_fault_is_found_not_another_restarts() {
        // A restart nobody asked for recovers after the injection, then ours.
        let c = console(&["boot", SPURIOUS, SPURIOUS_RECOVERY, OURS, OUR_RECOVERY]);
        let (_, r) = find_recovery(&c, 1, "virtio-net", "illegal", 1, false).unwrap();
        assert_eq!((r.restart, r.fault_to_traffic_us), (3, 11));
        // Before ours arrived: nothing yet, unless lenient (then the other one, announced after
        // the injection, counts).
        let c = console(&["boot", SPURIOUS, SPURIOUS_RECOVERY, OURS]);
        assert!(find_recovery(&c, 1, "virtio-net", "illegal", 1, false).is_none());
        assert_eq!(
            find_recovery(&c, 1, "virtio-net", "illegal", 1, true)
                .unwrap()
                .1
                .restart,
            2
        );
        // A RECOVERY of a restart announced before the injection never counts, nor an old one.
        let c = console(&[SPURIOUS, "boot", SPURIOUS_RECOVERY]);
        assert!(find_recovery(&c, 1, "virtio-net", "illegal", 1, true).is_none());
        let c = console(&["boot", OURS, OUR_RECOVERY]);
        assert!(find_recovery(&c, 0, "virtio-net", "illegal", 3, true).is_none());
        assert!(find_recovery(&c, 0, "other", "illegal", 0, true).is_none());
        assert_eq!(restarts_so_far(&c, "virtio-net"), 3);
        assert_eq!(restart_in_progress(&c, "virtio-net"), Some(3));
        let c = console(&[OURS, "[root] component `virtio-net` restarted (#3) in 70 us (cause illegal; 71 us after the fault)"]);
        assert_eq!(restart_in_progress(&c, "virtio-net"), None);
    }

    #[test]
    fn rng_below_stays_in_range_and_spreads() {
        let mut r = Rng::new(5);
        let mut hit = [0u32; 6];
        for _ in 0..6000 {
            hit[r.below(6) as usize] += 1;
        }
        assert!(hit.iter().all(|&h| h > 800), "{hit:?}");
    }
}
