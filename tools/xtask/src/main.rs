//! `cargo xtask`: the one build entry point of the project.
//!
//! * `build` — kernel (uniprocessor and SMP), every component of a system, the boot image.
//! * `run`   — build, then boot in QEMU (TCG) with the serial console on the terminal.
//! * `test`  — host tests of every host crate, then the in-QEMU tests of `tests/qemu/*.toml`.
//! * `bench` — the host crates' benchmarks, then the system benchmark in QEMU (`sysbench.rs`).
//! * `check` — validate system descriptions only.
//! * `fault-campaign` — inject faults into the running product system under verified traffic.
//! * `inject` — inject one fault into a running `cargo xtask run` through its control socket.
//!
//! Everything is incremental: an unchanged tree rebuilds nothing. Outputs live under `target/`:
//! `kernel/<variant>/` (kernel build), `sel4/<variant>/` (user programs and packed images),
//! `image/<system>-<variant>/{kernel32.elf,root-task.elf}` (what QEMU boots), `qemu-logs/`.
#![forbid(unsafe_code)]

mod campaign;
mod control;
mod deps;
mod elf;
mod hostnet;
mod image;
mod kernel;
mod qemu;
mod step;
mod sysbench;
mod system;
mod test;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use kernel::Variant;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;
use step::Step;

/// Build tool of the seL4 network server: builds the seL4 kernel and every component, packs the
/// boot image, boots it in QEMU and runs all tests.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Build the seL4 kernel (uniprocessor and SMP), every component of a system and its boot image.
    ///
    /// The kernel comes from the crates.io package sel4-sys =0.0.28 and is built out of tree in
    /// target/kernel/<variant>/ with the configuration in tools/xtask/src/kernel.rs. The boot image
    /// lands in target/image/<system>-<variant>/ (kernel32.elf and root-task.elf). Nothing is
    /// rebuilt when nothing changed.
    Build(BuildArgs),
    /// Build, then boot a system in QEMU (TCG) with its serial console on this terminal.
    ///
    /// Works with stdin closed and as a background job (the console then goes to stdout and QEMU
    /// gets no monitor). On a terminal, Ctrl-A X quits QEMU. Prints the exact QEMU command.
    Run(RunArgs),
    /// Run every test: host tests of all crates that run on the host, then the in-QEMU tests.
    ///
    /// Each in-QEMU test is a tests/qemu/<name>.toml system description with a [test] table; it is
    /// built, booted, and judged by its serial console (all `expect` lines seen = pass; a `fail`
    /// pattern, "TEST FAIL", "panicked", a kernel halt or assertion, QEMU exiting, or the timeout =
    /// fail; the log is shown and kept in target/qemu-logs/<name>.log). Exits 0 only when
    /// everything passed; the last line reads `N passed, N failed` (in-QEMU tests).
    ///
    /// [test] keys: kernel = "up" | "smp" (default "up"); smp = QEMU cores (default 1);
    /// timeout = seconds (default 60); expect = ["fragment", ...] (required, each matched within
    /// one console line, in any order); fail = ["fragment", ...]; description = "...";
    /// qemu_args = ["-device", "...", ...] (appended to the QEMU command).
    Test(TestArgs),
    /// Run `cargo bench` for every host crate that has benchmarks, then boot benches/qemu/sysbench.toml
    /// and measure the running system; results go to target/bench/ (system: system.json).
    ///
    /// The system benchmark (one QEMU TCG boot, -smp 2): boot to first HTTP 200; guest->host and
    /// host->guest TCP throughput (GET /bytes, POST /sink); HTTP requests/s on one keep-alive
    /// connection; in the guest, a no-op socket call against a raw seL4 Call/ReplyRecv round trip
    /// (cycles, same boot) and the IPC round trips of a 1 MiB send. Targets (no-op <= 2x raw IPC;
    /// <= 1 round trip per 64 KiB) are reported as met or missed; timings never fail the command.
    Bench(BenchArgs),
    /// Validate system descriptions without building anything (default: system.toml and every
    /// tests/qemu/*.toml).
    Check(CheckArgs),
    /// Boot the product system, keep verified traffic running from the host, inject faults into
    /// the virtio-net driver at random times and report recovery (table, and JSON in target/bench/).
    ///
    /// Traffic: TCP echo streams (every echoed byte checked in order), HTTP POST /sink (the
    /// guest's SHA-256 compared with the host's) and GET /bytes/N (checked against the pattern)
    /// on one keep-alive connection, UDP echo (losses counted). Faults go through the control
    /// channel (QEMU's COM2 on a Unix socket); one at a time: after each, the campaign waits for
    /// the net server's RECOVERY line and for every TCP activity to move again, then a random
    /// pause. Exits non-zero on any fault not injected or not recovered, any lost or corrupted
    /// byte, or another component dying. Timings are reported, never judged.
    FaultCampaign(CampaignArgs),
    /// Inject one fault into a running `cargo xtask run` through its control socket and print
    /// the root task's answer (`ok <seq>` or `error <reason>`).
    ///
    /// Kinds: crash (bad memory access), illegal (illegal instruction), panic, hang (stops
    /// answering the heartbeat), stall-tx (stops processing its transmit ring), garbage (writes
    /// garbage into a ring). Watch the run's console for the restart and the RECOVERY line.
    Inject(InjectArgs),
}

#[derive(Args)]
struct CampaignArgs {
    /// Number of faults to inject (every kind at least once when N >= the number of kinds).
    #[arg(long, value_name = "N", default_value_t = 100)]
    faults: usize,
    /// Seed of the fault plan, the pauses and the traffic (printed; default: from the clock).
    #[arg(long, value_name = "SEED")]
    seed: Option<u64>,
    /// Fault kinds to draw from (comma-separated; default: all).
    #[arg(long, value_name = "KINDS", value_delimiter = ',')]
    kinds: Vec<String>,
    /// Component to inject into.
    #[arg(long, value_name = "NAME", default_value = control::DEFAULT_COMPONENT)]
    component: String,
    /// Concurrent TCP echo streams.
    #[arg(long, value_name = "N", default_value_t = 4)]
    streams: usize,
    /// KiB per second each echo stream sends at most.
    #[arg(long, value_name = "KIB", default_value_t = 256)]
    stream_kib_s: u64,
    /// KiB per second the HTTP activity moves at most (uploads and downloads together).
    #[arg(long, value_name = "KIB", default_value_t = 512)]
    http_kib_s: u64,
    /// Stop at the first fault that is not recovered.
    #[arg(long)]
    stop_on_failure: bool,
    /// No HTTP traffic.
    #[arg(long)]
    no_http: bool,
    /// No UDP traffic.
    #[arg(long)]
    no_udp: bool,
    /// Seconds from the injection to the RECOVERY line before the fault counts as unrecovered.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    recovery_timeout: f64,
    /// Seconds after the RECOVERY line within which every TCP activity must move again.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    resume_timeout: f64,
    /// Shortest random pause before a fault, after the previous one recovered (ms).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    min_gap_ms: u64,
    /// Longest random pause before a fault (ms).
    #[arg(long, value_name = "MS", default_value_t = 1500)]
    max_gap_ms: u64,
    /// Boot the last build of system.toml without building first.
    #[arg(long)]
    no_build: bool,
    /// Where the JSON goes (the console log next to it as <stem>-console.log).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write every frame of the guest's network to this pcap file (QEMU filter-dump), to see
    /// what the TCP streams did around each fault.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
}

#[derive(Args)]
struct InjectArgs {
    /// crash | illegal | panic | hang | stall-tx | garbage
    kind: String,
    /// Component to inject into.
    #[arg(long, value_name = "NAME", default_value = control::DEFAULT_COMPONENT)]
    component: String,
    /// The control socket of the running system (default: the one `cargo xtask run` makes).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
}

#[derive(Args)]
struct BuildArgs {
    /// System description to build (a test system file works too).
    #[arg(long, value_name = "FILE", default_value = "system.toml")]
    system: PathBuf,
    /// Kernel variant(s) to build for (default: both; a test system: its [test] kernel).
    #[arg(long, value_enum)]
    variant: Vec<Variant>,
    /// Also build every in-QEMU test system in tests/qemu/.
    #[arg(long)]
    tests: bool,
    /// Build only the kernels.
    #[arg(long, conflicts_with_all = ["tests", "variant"])]
    kernel_only: bool,
}

#[derive(Args)]
struct RunArgs {
    /// System description to boot (a test system file works too; its [test] kernel and smp are
    /// then the defaults).
    #[arg(long, value_name = "FILE", default_value = "system.toml")]
    system: PathBuf,
    /// Number of cores QEMU gives the guest; more than 1 boots the SMP kernel (default: 2, one
    /// net server worker per core; a test system: its [test] smp).
    #[arg(long, value_name = "N")]
    smp: Option<u32>,
    /// Host port (on 127.0.0.1) forwarded to the guest's HTTP server, TCP port 80.
    #[arg(long, value_name = "PORT", default_value_t = 8080)]
    http_port: u16,
    /// Host port (on 127.0.0.1) forwarded to the guest's echo server, TCP and UDP port 7.
    #[arg(long, value_name = "PORT", default_value_t = 7007)]
    echo_port: u16,
    /// Write every frame of the guest's network to this pcap file (QEMU filter-dump).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// No network device, even if the system has a virtio-net driver.
    #[arg(long, conflicts_with = "pcap")]
    no_net: bool,
    /// Stop QEMU after this many seconds (exit code 0); default: run until QEMU exits.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Boot the last build without building first.
    #[arg(long)]
    no_build: bool,
    /// The control channel's Unix socket (QEMU's COM2; `cargo xtask inject` talks to it).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Extra arguments passed to QEMU as they are (after `--`).
    #[arg(last = true, value_name = "QEMU_ARGS")]
    qemu_args: Vec<String>,
}

#[derive(Args)]
struct TestArgs {
    /// Run only the host tests.
    #[arg(long, conflicts_with = "qemu_only")]
    host_only: bool,
    /// Run only the in-QEMU tests.
    #[arg(long)]
    qemu_only: bool,
    /// Run only the in-QEMU tests whose name contains this text (host tests still run unless
    /// --qemu-only).
    filter: Option<String>,
    /// List the in-QEMU tests and exit.
    #[arg(long)]
    list: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Only packages whose name contains this text.
    #[arg(long, value_name = "TEXT")]
    package: Option<String>,
    /// Skip the system benchmark in QEMU (host benchmarks only).
    #[arg(long, conflicts_with = "system_only")]
    no_system: bool,
    /// Only the system benchmark in QEMU (no host benchmarks).
    #[arg(long)]
    system_only: bool,
    /// Extra arguments for the bench binaries (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct CheckArgs {
    /// System description files (default: system.toml and tests/qemu/*.toml).
    files: Vec<PathBuf>,
}

/// The workspace: where everything lives, and which cargo to call.
pub struct Ws {
    pub root: PathBuf,
    pub target: PathBuf,
    pub cargo: PathBuf,
}

impl Ws {
    fn locate() -> Result<Ws> {
        // tools/xtask -> the workspace root.
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .and_then(Path::parent)
            .context("xtask is not inside the workspace")?
            .canonicalize()?;
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .unwrap_or_else(|| "cargo".into());
        Ok(Ws {
            target: root.join("target"),
            root,
            cargo,
        })
    }

    /// A path given on the command line: relative to the current folder when it exists there,
    /// else to the workspace root.
    fn user_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p.exists() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = Ws::locate().and_then(|ws| match cli.verb {
        Verb::Build(a) => build(&ws, a).map(|()| 0),
        Verb::Run(a) => run(&ws, a),
        Verb::Test(a) => test::test(&ws, a.host_only, a.qemu_only, a.filter.as_deref(), a.list),
        Verb::Bench(a) => bench(&ws, a),
        Verb::Check(a) => check(&ws, a),
        Verb::FaultCampaign(a) => fault_campaign(&ws, a),
        Verb::Inject(a) => inject(&ws, a),
    });
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Load and validate a system file, printing every problem.
fn load_system(ws: &Ws, path: &Path) -> Result<system::SystemFile> {
    let path = ws.user_path(path);
    if !path.is_file() {
        bail!(
            "no system description at {} (the product system is system.toml at the workspace root; \
             pass --system FILE for another)",
            path.display()
        );
    }
    let s = Step::start(format!("validate {}", path.display()));
    let sys = load_checked(ws, &path)?;
    println!("    {} component(s)", sys.system.components.len());
    s.done();
    Ok(sys)
}

/// Load and validate a system file, including that every component's package is a workspace
/// member with the named binary.
pub fn load_checked(ws: &Ws, path: &Path) -> Result<system::SystemFile> {
    let sys = system::load(path)?;
    static MEMBERS: OnceLock<Vec<test::HostPackage>> = OnceLock::new();
    let members = match MEMBERS.get() {
        Some(m) => m,
        None => {
            let m = test::host_packages(ws)?;
            MEMBERS.get_or_init(|| m)
        }
    };
    let mut problems = Vec::new();
    for c in &sys.system.components {
        match members.iter().find(|p| p.name == c.package) {
            None => problems.push(format!(
                "component `{}`: package `{}` is not a member of the workspace",
                c.name, c.package
            )),
            Some(p) if !p.bins.contains(&c.bin) => problems.push(format!(
                "component `{}`: package `{}` has no binary `{}` (it has: {})",
                c.name,
                c.package,
                c.bin,
                if p.bins.is_empty() {
                    "none".to_string()
                } else {
                    p.bins.join(", ")
                }
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Err(system::Invalid {
            path: path.to_path_buf(),
            problems,
        }
        .into());
    }
    Ok(sys)
}

fn build(ws: &Ws, a: BuildArgs) -> Result<()> {
    let started = std::time::Instant::now();
    if a.kernel_only {
        for v in Variant::ALL {
            kernel::build(ws, v)?;
        }
        return Ok(());
    }
    // Validate everything before building anything.
    let mut paths = vec![a.system.clone()];
    if a.tests {
        paths.extend(test::test_files(ws)?);
    }
    let mut systems = Vec::new();
    let mut invalid = 0;
    for path in &paths {
        match load_system(ws, path) {
            Ok(s) => systems.push(s),
            Err(e) => {
                eprintln!("error: {e:#}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        bail!("{invalid} system description(s) are invalid; nothing was built");
    }
    let mut kernels = std::collections::BTreeMap::new();
    for sys in &systems {
        let variants = match (&sys.test, a.variant.is_empty()) {
            (_, false) => a.variant.clone(),
            (Some(t), true) => vec![t.kernel],
            (None, true) => Variant::ALL.to_vec(),
        };
        for v in variants {
            if let std::collections::btree_map::Entry::Vacant(e) = kernels.entry(v) {
                e.insert(kernel::build(ws, v)?);
            }
            image::build(ws, sys, &kernels[&v])?;
        }
    }
    println!(
        "==> build finished in {}",
        step::secs(started.elapsed().as_secs_f64())
    );
    Ok(())
}

fn run(ws: &Ws, a: RunArgs) -> Result<i32> {
    let sys = load_system(ws, &a.system)?;
    let smp = a.smp.or(sys.test.as_ref().map(|t| t.smp)).unwrap_or(2);
    let variant = if smp > 1 {
        Variant::Smp
    } else {
        sys.test.as_ref().map_or(Variant::Up, |t| t.kernel)
    };
    if smp == 0 || smp > variant.max_nodes() {
        bail!(
            "--smp {smp}: the kernels support 1 ({}) or {} ({}) cores",
            Variant::Up,
            Variant::Smp.max_nodes(),
            Variant::Smp
        );
    }
    deps::ensure(deps::Need::KernelAndQemu)?;
    let boot = if a.no_build {
        let dir = ws
            .target
            .join("image")
            .join(format!("{}-{variant}", sys.name));
        let boot = image::BootImage {
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
    let console = qemu::console_for_this_process();
    // A test system's own QEMU arguments first, then the command line's.
    let mut extra = sys
        .test
        .as_ref()
        .map(|t| t.qemu_args.clone())
        .unwrap_or_default();
    // The network: a system with the virtio-net driver gets the NIC on QEMU user networking,
    // with the host forwards to http and echo, unless the arguments already bring a netdev.
    let has_driver = sys
        .system
        .components
        .iter()
        .any(|c| c.package == "virtio-net");
    let has_netdev = extra
        .iter()
        .chain(&a.qemu_args)
        .any(|x| x == "-netdev" || x == "-nic");
    // The control channel (the root task's fault injection): COM2 on a Unix socket, after the
    // console's serial port; for the product system and any system that asks for it.
    let mut control_note = None;
    if has_driver || sys.system.supervisor.control_serial {
        let socket = a
            .control
            .as_ref()
            .map(|p| {
                std::env::current_dir()
                    .map(|d| d.join(p))
                    .unwrap_or_else(|_| p.clone())
            })
            .unwrap_or_else(|| control::default_run_socket(&ws.target));
        control::prepare_socket(&socket)?;
        extra.extend(control::qemu_args(&socket)?);
        let note = format!(
            "control: {} (cargo xtask inject <kind>{})",
            socket.display(),
            if a.control.is_some() {
                format!(" --control {}", socket.display())
            } else {
                String::new()
            }
        );
        control_note = Some(note);
    } else if a.control.is_some() {
        bail!("--control: this system has no control channel (no virtio-net driver, no [supervisor] control_serial)");
    }
    let mut ready = None;
    if has_driver && !has_netdev && !a.no_net {
        let pcap = a.pcap.as_ref().map(|p| {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.clone())
        });
        extra.extend(hostnet::user_net_args(
            &[
                ("tcp", a.http_port, 80),
                ("tcp", a.echo_port, 7),
                ("udp", a.echo_port, 7),
            ],
            pcap.as_deref(),
        ));
        let mut message = format!(
            "system ready: http://127.0.0.1:{}/ (also /stats), echo on 127.0.0.1:{} (TCP and UDP)",
            a.http_port, a.echo_port
        );
        if let Some(p) = &pcap {
            message.push_str(&format!("; frames to {}", p.display()));
        }
        if let Some(c) = &control_note {
            message.push_str(&format!("; {c}"));
        }
        ready = Some(("[netserver] ready:".to_string(), message));
    } else if a.pcap.is_some() {
        bail!("--pcap needs the default network (a system with a virtio-net driver, no -netdev of your own)");
    }
    if let (None, Some(c)) = (&ready, &control_note) {
        // No ready line to carry it.
        println!("==> {c}");
    }
    extra.extend(a.qemu_args);
    let cmd = qemu::command(&boot, smp, console, &extra);
    qemu::run(cmd, console, a.timeout.map(Duration::from_secs), ready)
}

fn check(ws: &Ws, a: CheckArgs) -> Result<i32> {
    let files = if a.files.is_empty() {
        let mut f = Vec::new();
        if ws.root.join("system.toml").is_file() {
            f.push(ws.root.join("system.toml"));
        }
        f.extend(test::test_files(ws)?);
        f
    } else {
        a.files.iter().map(|p| ws.user_path(p)).collect()
    };
    let mut bad = 0;
    for f in &files {
        match load_checked(ws, f) {
            Ok(s) => println!(
                "ok    {} ({} component(s){})",
                f.display(),
                s.system.components.len(),
                if s.test.is_some() { ", test" } else { "" }
            ),
            Err(e) => {
                bad += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    println!("{} valid, {bad} invalid", files.len() - bad);
    Ok(if bad == 0 { 0 } else { 1 })
}

fn bench(ws: &Ws, a: BenchArgs) -> Result<i32> {
    let dir = ws.target.join("bench");
    std::fs::create_dir_all(&dir)?;
    let packages: Vec<test::HostPackage> = test::host_packages(ws)?
        .into_iter()
        .filter(|_| !a.system_only)
        .filter(|p| !p.target_only && !p.benches.is_empty())
        .filter(|p| a.package.as_deref().is_none_or(|f| p.name.contains(f)))
        .collect();
    if packages.is_empty() {
        let which = a
            .package
            .map(|f| format!(" matching `{f}`"))
            .unwrap_or_default();
        if !a.system_only {
            println!("no host crate{which} has benchmarks");
        }
    }
    let mut failed = Vec::new();
    for p in &packages {
        let s = Step::start(format!(
            "cargo bench -p {} ({})",
            p.name,
            p.benches.join(", ")
        ));
        let mut cmd = std::process::Command::new(&ws.cargo);
        // Only the bench targets: libtest harnesses of lib/bin targets reject bench arguments.
        cmd.current_dir(&ws.root).args(["bench", "-p", &p.name]);
        for b in &p.benches {
            cmd.args(["--bench", b]);
        }
        if !a.args.is_empty() {
            cmd.arg("--").args(&a.args);
        }
        // Where results belong (benches may also find it themselves: <workspace>/target/bench).
        cmd.env("BENCH_OUT_DIR", &dir);
        match step::run_streaming(&mut cmd) {
            Ok(()) => s.done(),
            Err(e) => {
                drop(s);
                eprintln!("error: {e:#}");
                failed.push(p.name.clone());
            }
        }
    }
    if !a.no_system {
        deps::ensure(deps::Need::KernelAndQemu)?;
        if let Err(e) = sysbench::run(ws, &dir) {
            eprintln!("error: system benchmark: {e:#}");
            failed.push("system (QEMU)".to_string());
        }
    }
    println!("==> benchmark results in {}:", dir.display());
    let mut entries: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for e in entries {
        println!("    {}", e.display());
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        eprintln!("benchmarks failed in: {}", failed.join(", "));
        Ok(1)
    }
}

fn fault_campaign(ws: &Ws, a: CampaignArgs) -> Result<i32> {
    if a.min_gap_ms > a.max_gap_ms {
        bail!(
            "--min-gap-ms {} is above --max-gap-ms {}",
            a.min_gap_ms,
            a.max_gap_ms
        );
    }
    let mut o = campaign::Options::new(ws, a.faults);
    if let Some(s) = a.seed {
        o.seed = s;
    }
    if !a.kinds.is_empty() {
        o.kinds = a.kinds;
    }
    o.component = a.component;
    o.streams = a.streams;
    o.stream_rate = a.stream_kib_s.max(1) << 10;
    o.http_rate = a.http_kib_s.max(1) << 10;
    o.stop_on_failure = a.stop_on_failure;
    o.http = !a.no_http;
    o.udp = !a.no_udp;
    o.recovery_timeout = Duration::from_secs_f64(a.recovery_timeout.max(0.1));
    o.resume_timeout = Duration::from_secs_f64(a.resume_timeout.max(0.1));
    o.min_gap = Duration::from_millis(a.min_gap_ms);
    o.max_gap = Duration::from_millis(a.max_gap_ms);
    o.no_build = a.no_build;
    if let Some(out) = a.out {
        o.out = std::env::current_dir().map(|d| d.join(&out)).unwrap_or(out);
    }
    o.pcap = a
        .pcap
        .map(|p| std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p));
    let report = campaign::run(ws, &o)?;
    Ok(if report.passed() { 0 } else { 1 })
}

fn inject(ws: &Ws, a: InjectArgs) -> Result<i32> {
    if !control::KINDS.contains(&a.kind.as_str()) {
        eprintln!(
            "note: `{}` is not one of the known kinds ({}); sending it anyway",
            a.kind,
            control::KINDS.join(", ")
        );
    }
    let socket = a
        .control
        .map(|p| ws.user_path(&p))
        .unwrap_or_else(|| control::default_run_socket(&ws.target));
    let mut c = control::Control::connect(&socket, Duration::from_secs(2))?;
    match c.inject(
        &a.component,
        &a.kind,
        Duration::from_secs_f64(a.timeout.max(0.1)),
    )? {
        control::Answer::Ok(seq) => {
            println!("ok {seq}: injected `{}` into `{}`", a.kind, a.component);
            Ok(0)
        }
        control::Answer::Error(why) => {
            println!("error {why}");
            Ok(1)
        }
    }
}
