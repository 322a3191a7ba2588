//! The campaign's loop against a fake guest on the host: echo (TCP and UDP) and HTTP servers, a
//! control socket, and a console that prints what the real root task and net server print. An
//! injected fault stops the echo server for a moment (the outage), then the fake announces the
//! restart and the RECOVERY line, unless told that a kind never recovers.

use super::*;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

struct Fake {
    console: Console,
    addrs: Addrs,
    socket: PathBuf,
}

/// How the fake guest misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Injections of this kind kill the "driver" for 1.5 s and print no RECOVERY line.
    never_recovers: Option<&'static str>,
    /// The echo server flips a byte at this offset of each connection.
    corrupt_at: Option<u64>,
}

fn push(c: &Console, line: String) {
    c.lock().lines.push((Instant::now(), line));
}

fn start(name: &str, f: Faults) -> Fake {
    let console = Console::default();
    let paused = Arc::new(AtomicBool::new(false));
    // Echo, TCP and UDP on one port.
    let echo_l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let echo = echo_l.local_addr().unwrap();
    let udp = UdpSocket::bind(echo).unwrap();
    let p = paused.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            if !p.load(SeqCst) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    let p = paused.clone();
    std::thread::spawn(move || {
        for s in echo_l.incoming().flatten() {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 4096];
                let mut at = 0u64;
                loop {
                    while p.load(SeqCst) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if let Some(c) = f.corrupt_at.filter(|c| (at..at + n as u64).contains(c)) {
                        buf[(c - at) as usize] ^= 0x10;
                    }
                    at += n as u64;
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    // HTTP: /, /stats, /sink, /bytes/N, keep-alive unless `Connection: close`.
    let http_l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let http = http_l.local_addr().unwrap();
    let restarts = Arc::new(AtomicU64::new(0));
    let (p, r) = (paused.clone(), restarts.clone());
    std::thread::spawn(move || {
        for s in http_l.incoming().flatten() {
            let (p, r) = (p.clone(), r.clone());
            std::thread::spawn(move || serve_http(s, &p, &r));
        }
    });
    // The control channel.
    let socket =
        std::env::temp_dir().join(format!("xtask-fake-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let ctl = UnixListener::bind(&socket).unwrap();
    let c = console.clone();
    std::thread::spawn(move || {
        for s in ctl.incoming().flatten() {
            let mut w = s.try_clone().unwrap();
            let mut seq = 0;
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { break };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["restarts"] => {
                        let _ = writeln!(w, "restarts virtio-net={}", restarts.load(SeqCst));
                    }
                    ["inject", "virtio-net", kind] => {
                        seq += 1;
                        let _ = writeln!(w, "ok {seq}");
                        let kind = kind.to_string();
                        let (c, p, r) = (c.clone(), paused.clone(), restarts.clone());
                        std::thread::spawn(move || {
                            p.store(true, SeqCst);
                            let k = r.fetch_add(1, SeqCst) + 1;
                            push(&c, format!("[root] component `virtio-net` thread `main` faulted: x (injected: {kind}); restart #{k} in 0 ms"));
                            let never = f.never_recovers == Some(kind.as_str());
                            std::thread::sleep(Duration::from_millis(if never {
                                1500
                            } else {
                                60
                            }));
                            push(&c, format!("[root] component `virtio-net` restarted (#{k}) in 900 us (cause {kind}; 1000 us after the fault)"));
                            p.store(false, SeqCst);
                            if !never {
                                push(&c, format!("[netserver] RECOVERY component=virtio-net restart={k} cause={kind} fault_to_running_us=1000 fault_to_traffic_us=61000 fault_to_link_us=60000"));
                            }
                        });
                    }
                    _ => {
                        let _ = writeln!(w, "error what?");
                    }
                }
            }
        }
    });
    push(
        &console,
        "[netserver] ready: 2 worker(s) on cores [0, 1]".into(),
    );
    Fake {
        console,
        addrs: Addrs { http, echo },
        socket,
    }
}

fn serve_http(s: TcpStream, paused: &AtomicBool, restarts: &AtomicU64) {
    let Ok(mut w) = s.try_clone() else { return };
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut len, mut close) = (0u64, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            close |= h == "connection: close";
        }
        while paused.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (head, body): (String, Vec<u8>) = if path == "/sink" {
            let mut b = vec![0u8; len as usize];
            if r.read_exact(&mut b).is_err() {
                return;
            }
            let hex: String = sha2::Sha256::digest(&b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect();
            (
                "200 OK".into(),
                format!("{{\"length\":{len},\"sha256\":\"{hex}\"}}").into_bytes(),
            )
        } else if let Some(n) = path.strip_prefix("/bytes/") {
            let n: u64 = n.parse().unwrap_or(0);
            (
                "200 OK".into(),
                (0..n).map(traffic::bytes_pattern).collect(),
            )
        } else if path == "/stats" {
            let n = restarts.load(SeqCst);
            let j = format!(
                "{{\"net\":{{\"driver_restarts\":{n},\"restarts\":[{{\"restart\":{n},\"cause\":\"fake\"}}]}}}}"
            );
            ("200 OK".into(), j.into_bytes())
        } else {
            ("200 OK".into(), b"<h1>fake</h1>".to_vec())
        };
        let _ = write!(
            w,
            "HTTP/1.1 {head}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = w.write_all(&body);
        if close {
            return;
        }
    }
}

use sha2::Digest;

fn options(faults: usize) -> Options {
    let ws = Ws {
        root: std::env::temp_dir(),
        target: std::env::temp_dir(),
        cargo: "cargo".into(),
    };
    let mut o = Options::new(&ws, faults);
    o.seed = 7;
    o.streams = 2;
    o.stream_rate = 1 << 20;
    o.http_rate = 1 << 20;
    o.recovery_timeout = Duration::from_millis(1000);
    o.resume_timeout = Duration::from_secs(5);
    o.min_gap = Duration::from_millis(10);
    o.max_gap = Duration::from_millis(60);
    o
}

fn campaign(name: &str, f: Faults, o: &Options) -> Report {
    let g = start(name, f);
    let r = drive(o, &g.console, &g.socket, g.addrs, Instant::now()).unwrap();
    let _ = std::fs::remove_file(&g.socket);
    r
}

#[test]
fn a_guest_that_always_recovers_passes_with_every_kind_measured() {
    let o = options(8);
    let r = campaign("good", Faults::default(), &o);
    assert!(r.passed(), "{:?}\n{:?}", r.failures, r.problems);
    assert_eq!((r.injected(), r.recovered()), (8, 8));
    assert_eq!(r.restarts, 8);
    assert_eq!(r.supervisor_restarts, Some(8));
    assert_eq!(r.stats_driver_restarts, Some(8));
    assert_eq!(r.stats_newest_restart, Some((8, "fake".to_string())));
    assert!(r.uninjected_restarts.is_empty());
    for k in control::KINDS {
        assert!(r.faults.iter().any(|f| f.kind == k && f.recovered), "{k}");
    }
    for f in &r.faults {
        assert_eq!(f.guest_traffic_ms, Some(61.0));
        // The echo server stood still for 60 ms after the injection: the host saw that.
        let stall = f.host_stall_ms.unwrap();
        assert!(stall >= 40.0, "fault {}: host stall {stall} ms", f.index);
    }
    assert!(r.echo_verified > 0 && r.echo_verified == r.echo_sent);
    assert!(r.http_up_verified > 0 && r.http_down_verified > 0);
    assert_eq!(r.tcp_established, 3);
    assert_eq!(r.tcp_survived, 3);
    assert!(r.udp_received > 0);
    let j = r.json();
    assert_eq!(j["passed"], true);
    assert_eq!(j["per_kind"].as_array().unwrap().len(), 6);
}

#[test]
fn a_fault_without_recovery_fails_the_campaign_and_the_rest_goes_on() {
    let o = options(6);
    let r = campaign(
        "hang",
        Faults {
            never_recovers: Some("hang"),
            ..Faults::default()
        },
        &o,
    );
    assert!(!r.passed());
    assert_eq!(r.injected(), 6);
    assert_eq!(r.recovered(), 5);
    let hang = r.faults.iter().find(|f| f.kind == "hang").unwrap();
    assert!(
        !hang.recovered && hang.note.contains("no RECOVERY"),
        "{hang:?}"
    );
    assert!(r.verdict().contains("1 unrecovered"), "{}", r.verdict());
    // The traffic came back after the 1.5 s outage: nothing lost.
    assert_eq!(r.bytes_lost(), 0, "{:?}", r.problems);

    let mut o = options(6);
    o.stop_on_failure = true;
    let r = campaign(
        "hang-stop",
        Faults {
            never_recovers: Some("hang"),
            ..Faults::default()
        },
        &o,
    );
    assert!(!r.passed());
    assert!(r
        .faults
        .last()
        .is_some_and(|f| f.kind == "hang" && !f.recovered));
    assert_eq!(
        r.bytes_lost(),
        0,
        "stopping drains the traffic: {:?}",
        r.problems
    );
}

#[test]
fn a_corrupted_echo_fails_the_campaign() {
    let r = campaign(
        "corrupt",
        Faults {
            corrupt_at: Some(5000),
            ..Faults::default()
        },
        &options(1),
    );
    assert!(!r.passed());
    assert!(r.echo_corrupted > 0);
    assert!(r.verdict().contains("corrupted"), "{}", r.verdict());
}
