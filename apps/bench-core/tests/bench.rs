//! The bench measurements against the real echo and HTTP applications on the guest's net
//! server: from the host side over the link, and over the guest's loopback (as the bench
//! process does on seL4).

use std::rc::Rc;
use std::time::Duration;

use app_testnet::{guest4, AppThread, Net};
use bench_core::{connection_rate, download, upload, BenchError};
use echo_core::EchoApp;
use http_core::{HttpApp, NoNetStats};
use libsock::{Errno, SockAddr};

fn apps(net: &Net) -> (AppThread<()>, AppThread<()>) {
    let echo = AppThread::spawn(&net.guest.server, |client, ctl| {
        let (mut app, _) = EchoApp::bind(&client, echo_core::PORT).expect("echo");
        ctl.ready();
        while !ctl.stopped() {
            app.run_once(Some(Duration::from_millis(20))).expect("echo turn");
        }
    });
    let http = AppThread::spawn(&net.guest.server, |client, ctl| {
        let (mut app, _) = HttpApp::bind(&client, http_core::PORT, Rc::new(NoNetStats)).expect("http");
        ctl.ready();
        while !ctl.stopped() {
            app.run_once(Some(Duration::from_millis(20))).expect("http turn");
        }
    });
    (echo, http)
}

const T: Duration = Duration::from_secs(20);

#[test]
fn from_the_host_side() {
    let net = Net::start();
    let _apps = apps(&net);
    let c = net.host_client();
    let r = connection_rate(&c, guest4(7), 200, 16, T).expect("rate");
    assert_eq!((r.completed, r.failed), (200, 0), "{r}");
    assert_eq!(r.max_in_flight, 16);
    let d = download(&c, guest4(80), 2 << 20, T).expect("download");
    assert_eq!(d.bytes, 2 << 20);
    let u = upload(&c, guest4(80), (2 << 20) + 1, T).expect("upload");
    assert_eq!(u.bytes, (2 << 20) + 1);
    assert!(d.to_string().ends_with("MiB/s (verified)"), "{d}");
}

#[test]
fn over_the_guests_loopback() {
    let net = Net::start();
    let _apps = apps(&net);
    let c = net.guest_client();
    let lo = |port| SockAddr::v4(127, 0, 0, 1, port);
    let r = connection_rate(&c, lo(7), 100, 8, T).expect("rate");
    assert_eq!((r.completed, r.failed), (100, 0), "{r}");
    download(&c, lo(80), 1 << 20, T).expect("download");
    upload(&c, lo(80), 1 << 20, T).expect("upload");
}

#[test]
fn failures_are_counted_or_reported_not_hung() {
    let net = Net::start();
    let c = net.host_client();
    // Nothing listens: every connection is refused, and counted.
    let r = connection_rate(&c, guest4(7), 10, 4, T).expect("rate");
    assert_eq!((r.completed, r.failed), (0, 10));
    assert_eq!(download(&c, guest4(80), 10, T), Err(BenchError::Net("connect", Errno::ECONNREFUSED)));
    // An HTTP server that answers something else than the pattern is caught.
    let (_echo, _http) = apps(&net);
    let e = download(&c, guest4(7), 10, Duration::from_millis(500)).unwrap_err();
    assert!(matches!(e, BenchError::Net("recv", Errno::ETIMEDOUT) | BenchError::Protocol(_)), "{e}");
}

/// The sizes the task asks for (64 MiB each way, streamed). Slow in a debug build; run with
/// `cargo test --release -p bench-core -- --ignored`.
#[test]
#[ignore]
fn sixty_four_mib_each_way() {
    let net = Net::start();
    let _apps = apps(&net);
    let c = net.host_client();
    let t = Duration::from_secs(300);
    let d = download(&c, guest4(80), 64 << 20, t).expect("download");
    let u = upload(&c, guest4(80), 64 << 20, t).expect("upload");
    println!("download {d}\nupload {u}");
}
