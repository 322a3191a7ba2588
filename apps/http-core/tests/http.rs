//! The HTTP application against the real net server core: the app is a libsock client of the
//! guest's server; the test's HTTP clients connect from the host's server over the link.

use std::rc::Rc;
use std::time::Duration;

use app_testnet::{guest4, guest6, AppThread, Net};
use http_core::{AppStats, ClientStats, HttpApp, PORT};
use libsock::host::HostTransport;
use libsock::{Errno, PollEvents, PollFd, TcpStream};
use sha2::{Digest, Sha256};

fn start(net: &Net) -> AppThread<AppStats> {
    AppThread::spawn(&net.guest.server, move |client, ctl| {
        // /stats asks the net server through the app's own client (Request::Stats).
        let (mut app, bound) = HttpApp::bind(&client, PORT, Rc::new(ClientStats(client.clone()))).expect("bind");
        assert_eq!((bound.addrs.len(), bound.v6_error), (2, None));
        ctl.ready();
        while !ctl.stopped() {
            app.run_once(Some(Duration::from_millis(20))).expect("turn");
        }
        app.stats()
    })
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client over one connection, with a 20 s limit on every wait.
struct Conn {
    s: TcpStream<HostTransport>,
    buf: Vec<u8>,
}

impl Conn {
    fn open(net: &Net) -> Conn {
        let c = net.host_client();
        let s = TcpStream::connect(&c, guest4(PORT)).expect("connect");
        s.set_nonblocking(true).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&self, data: &[u8]) {
        self.s.write_all(data).expect("send");
    }

    /// Reads more into `buf`; false at EOF.
    fn fill(&mut self) -> bool {
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            match self.s.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(self.s.handle(), PollEvents::IN)];
                    let n = self.s.client().poll(&mut fds, Some(Duration::from_secs(20))).expect("poll");
                    assert_eq!(n, 1, "no answer within 20 s");
                }
                Err(Errno::ECONNRESET) => return false,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads one response head; the body follows in `buf`.
    fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            assert!(self.fill(), "EOF before a response head");
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).expect("ascii head");
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(':').expect("field");
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        (status, headers)
    }

    /// Reads `len` body bytes, handing them to `f` as they come.
    fn body(&mut self, mut len: u64, mut f: impl FnMut(&[u8])) {
        while len > 0 {
            if self.buf.is_empty() {
                assert!(self.fill(), "EOF with {len} body bytes missing");
            }
            let n = (len as usize).min(self.buf.len());
            f(&self.buf[..n]);
            self.buf.drain(..n);
            len -= n as u64;
        }
    }

    fn response(&mut self) -> Resp {
        self.response_to(false)
    }

    fn response_to(&mut self, head_request: bool) -> Resp {
        let (status, headers) = self.head();
        let len: u64 = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .expect("Content-Length");
        let mut body = Vec::new();
        if !head_request {
            self.body(len, |b| body.extend_from_slice(b));
        }
        Resp { status, headers, body }
    }

    fn get(&mut self, path: &str) -> Resp {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response()
    }

    /// True once the server closed the connection (EOF or reset) with nothing more to read.
    fn closed(&mut self) -> bool {
        !self.fill() && self.buf.is_empty()
    }
}

/// The pattern, written independently of http-core: byte i = (31 i + floor(i / 256)) mod 251.
fn expected_pattern_sha(len: u64) -> String {
    let mut h = Sha256::new();
    let mut chunk = Vec::with_capacity(65536);
    for i in 0..len as u128 {
        chunk.push(((31 * i + i / 256) % 251) as u8);
        if chunk.len() == 65536 {
            h.update(&chunk);
            chunk.clear();
        }
    }
    h.update(&chunk);
    hex(&h.finalize())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn index_stats_404_405_head_on_one_keep_alive_connection() {
    let net = Net::start();
    let app = start(&net);
    let mut c = Conn::open(&net);

    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let page = String::from_utf8(r.body.clone()).unwrap();
    for word in ["seL4", "virtio-net", "zero-copy", "sharded", "libsock", "(i * 31 + (i &gt;&gt; 8)) mod 251"] {
        assert!(page.contains(word), "page lacks {word:?}");
    }
    assert_eq!(r.header("connection"), None, "keep-alive is the HTTP/1.1 default");

    assert_eq!(c.get("/nowhere").status, 404);
    assert_eq!(c.get("/bytes/").status, 400);
    assert_eq!(c.get("/bytes/12x").status, 400);
    c.send(b"DELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    c.send(b"GET /sink HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 405);
    // A 404 with a small body: the body is discarded and the connection kept.
    c.send(b"PUT /nowhere HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.response().status, 404);
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response_to(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").unwrap(), http_core::INDEX_HTML.len().to_string());

    // A driver restart as the net server's NIC shell records it (cause bytes that are not polite
    // text), and two transmit kicks: they reach the page through Request::Stats.
    let dev = net.guest.server.device_counters();
    dev.tx_kicks.fetch_add(2, std::sync::atomic::Ordering::Relaxed);
    dev.restarts.record(&libsock::net_api::RestartStat {
        restart: 1,
        cause: *b"page \"fault\"\n\xff\0\0",
        fault_to_running_us: 11_000,
        fault_to_traffic_us: 41_500,
    });

    let r = c.get("/stats");
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("valid JSON");
    assert_eq!(v["http"]["connections_accepted"], 1, "all on one connection: {v}");
    assert_eq!(v["http"]["connections_open"], 1);
    assert_eq!(v["http"]["requests"], 9, "this one included");
    assert_eq!(v["http"]["responses"]["200"], 2, "{v}");
    assert_eq!(v["http"]["responses"]["404"], 2);
    assert_eq!(v["http"]["responses"]["405"], 2);
    assert_eq!(v["http"]["responses"]["400"], 2);
    assert_eq!(v["net"]["ports_in_use"], 2, "port 80 for v4 and v6 (accepted connections share it): {v}");
    assert!(v["net"]["total"]["packets_in"].as_u64().unwrap() > 0);
    let workers = v["net"]["workers"].as_array().expect("per-worker list");
    assert_eq!(workers.len(), 2, "the guest server runs two workers: {v}");
    let sum: u64 = workers.iter().map(|w| w["packets_in"].as_u64().unwrap()).sum();
    assert_eq!(sum, v["net"]["total"]["packets_in"].as_u64().unwrap());
    let conns: u64 = workers.iter().map(|w| w["connections"].as_u64().unwrap()).sum();
    assert_eq!(conns, 1, "this connection: {v}");
    assert_eq!((v["net"]["ring_drops"].as_u64(), v["net"]["driver_restarts"].as_u64()), (Some(0), Some(0)));
    assert_eq!(v["net"]["tx_kicks"], 2, "{v}");
    let restarts = v["net"]["restarts"].as_array().expect("restarts list");
    assert_eq!(restarts.len(), 1, "{v}");
    assert_eq!(restarts[0]["restart"], 1);
    assert_eq!(restarts[0]["cause"], "page \"fault\"\n\u{fffd}");
    assert_eq!((restarts[0]["fault_to_running_ms"].as_f64(), restarts[0]["fault_to_traffic_ms"].as_f64()), (Some(11.0), Some(41.5)));

    // Connection: close is honoured: the answer says so and the connection ends.
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed());
    let s = app.stop();
    assert_eq!(s.requests, 10);
}

#[test]
fn bytes_are_the_documented_pattern_and_stream() {
    let net = Net::start();
    let app = start(&net);
    let mut c = Conn::open(&net);
    for n in [0u64, 1, 255, 256, 70_001, 3 * 1024 * 1024 + 7] {
        c.send(format!("GET /bytes/{n} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let (status, _) = c.head();
        assert_eq!(status, 200);
        let mut h = Sha256::new();
        let mut got = 0u64;
        c.body(n, |b| {
            h.update(b);
            got += b.len() as u64;
        });
        assert_eq!(hex(&h.finalize()), expected_pattern_sha(n), "/bytes/{n}");
    }
    // The pattern over IPv6 too, and HTTP/1.0 closes after the response.
    let client = net.host_client();
    let s = TcpStream::connect(&client, guest6(PORT)).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut c6 = Conn { s, buf: Vec::new() };
    c6.send(b"GET /bytes/1000 HTTP/1.0\r\n\r\n");
    let r = c6.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert_eq!(hex(&Sha256::digest(&r.body)), expected_pattern_sha(1000));
    assert!(c6.closed());
    let s = app.stop();
    assert_eq!(s.bytes_served, 3 * 1024 * 1024 + 7 + 70_001 + 256 + 255 + 1 + 1000);
}

#[test]
fn sink_hashes_large_bodies_and_pipelined_requests() {
    let net = Net::start();
    let app = start(&net);
    let mut c = Conn::open(&net);
    let body: Vec<u8> = (0..4 * 1024 * 1024 + 3).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    // One thread: the app reads the body as it comes and answers only at its end.
    c.send(format!("POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    c.send(&body);
    let r = c.response();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["length"], body.len());
    assert_eq!(v["sha256"], hex(&Sha256::digest(&body)));

    // Three pipelined requests in one write, answered in order.
    c.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nPOST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /bytes/5 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(String::from_utf8(r.body).unwrap(), "{\"length\":0,\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}\n");
    let r = c.response();
    assert_eq!(String::from_utf8(r.body).unwrap(), "{\"length\":3,\"sha256\":\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"}\n");
    let r = c.response();
    assert_eq!(r.body, [0, 31, 62, 93, 124]);
    // Expect: 100-continue gets the interim answer before the body is sent.
    c.send(b"POST /sink HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    let (status, _) = c.head();
    assert_eq!(status, 100);
    c.send(b"ok");
    let r = c.response();
    assert_eq!((r.status, &r.body[..12]), (200, &b"{\"length\":2,"[..]));
    let s = app.stop();
    assert_eq!(s.bytes_sunk, body.len() as u64 + 5);
}

#[test]
fn bad_requests_get_their_status_and_close_and_the_server_goes_on() {
    let net = Net::start();
    let app = start(&net);
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GARBAGE\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n".to_vec(), 400),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03 binary junk that is not HTTP".to_vec(), 400),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        (b"POST /sink HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 411),
        (b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n".to_vec(), 413),
        (b"POST /sink HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), 501),
        ([b"GET / HTTP/1.1\r\nHost: t\r\nX-Long: ".to_vec(), vec![b'a'; 20_000]].concat(), 431),
    ];
    for (req, want) in cases {
        let mut c = Conn::open(&net);
        c.send(&req);
        let r = c.response();
        assert_eq!(r.status, want, "{:?}", String::from_utf8_lossy(&req[..req.len().min(40)]));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed(), "connection not closed after {want}");
    }
    // Peers that vanish mid-request or mid-body, or mid-response.
    for req in [&b"GET / HT"[..], b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\npartial"] {
        let c = Conn::open(&net);
        c.send(req);
        drop(c);
    }
    let mut c = Conn::open(&net);
    c.send(b"GET /bytes/10000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head().0, 200);
    drop(c);
    // Still serving.
    let mut c = Conn::open(&net);
    assert_eq!(c.get("/").status, 200);
    assert!(!app.finished());
    let s = app.stop();
    // Four bad requests, and the one cut off in its head.
    assert_eq!(s.responses[1], 5, "400s");
}

#[test]
fn twenty_concurrent_keep_alive_clients() {
    let net = Net::start();
    let app = start(&net);
    let mut conns: Vec<Conn> = (0..20).map(|_| Conn::open(&net)).collect();
    for round in 0..3 {
        for (i, c) in conns.iter().enumerate() {
            c.send(format!("GET /bytes/{} HTTP/1.1\r\nHost: t\r\n\r\n", 1000 * i + round).as_bytes());
        }
        for (i, c) in conns.iter_mut().enumerate() {
            let r = c.response();
            assert_eq!(hex(&Sha256::digest(&r.body)), expected_pattern_sha((1000 * i + round) as u64));
        }
    }
    drop(conns);
    let s = app.stop();
    assert_eq!((s.connections_accepted, s.requests), (20, 60));
}
