#!/usr/bin/env python3
"""TCP timers under load, judged from the wire (tests/qemu/netserver-timers.toml).

  timers.py HTTP_PORT KA_PORT PCAP INTERVAL_MS [CONNECTIONS [LOAD_SECS]]
  timers.py analyze PCAP INTERVAL_MS CONNECTIONS      (the verdict on a kept capture)

1. Opens CONNECTIONS (8) TCP connections to the guest's `keepalive` app (host port KA_PORT,
   guest port 9100), which turns SO_KEEPALIVE on for each and holds it idle; the net server's
   keep-alive interval is INTERVAL_MS. Host and guest then stay silent on these connections, so
   every segment the guest sends on one of them is a keep-alive probe. Asks /stats (one
   persistent connection) how many TCP connections each worker holds and opens more until every
   worker holds at least one keep-alive connection.
2. Saturates the link: GET /bytes/<16 GiB> from the http app (host port HTTP_PORT), read as fast
   as possible until the capture shows LOAD_SECS (12) seconds of load (at most LIMIT seconds of
   real time), then closed. /stats again: the worker whose frame count grew is the loaded one.
3. Reads PCAP, the capture QEMU's `filter-dump` writes of every frame between the guest's NIC
   and QEMU's user network, timestamped with QEMU's virtual clock (outside the guest), and
   checks, per keep-alive connection, that while the load ran (from the first to the last data
   segment the guest sent on the /bytes connection) no stretch without a probe was longer than
   BOUND (3) intervals, counting from the start of the load to the first probe and from the last
   probe to the end of the load. Probes are recognised by their shape: smoltcp's keep-alive is
   one byte at SND.NXT - 1 (RFC 1122's garbage octet). Time is the load's clock (LoadClock):
   pauses of the load longer than STALL count STALL each.

Why this can fail: a worker that is not busy sleeps until its next smoltcp timer, and only the
net server's PIT timer thread wakes it then. If that thread does not run (starved by network
work), the keep-alives of connections on the idle worker stop while the load goes on.
tests/qemu/controls/timers-starved.toml is the same system with the timer thread starved; this
script reports LATE there (see that file for the run).

Prints `timers: verified ...` (exit 0) or `timers: LATE ...` / `timers: FAILED ...` (exit 1).
Standard library only.
"""
import bisect
import json
import socket
import struct
import sys
import time

GUEST = bytes([10, 0, 2, 15])
KA_GUEST_PORT = 9100
HTTP_GUEST_PORT = 80
BOUND = 3  # intervals
STALL = 0.25  # s: a pause of the load longer than this: the link was not saturated then
LIMIT = 120  # s: most real time spent loading


def fail(msg):
    print(f"timers: FAILED: {msg}", flush=True)
    sys.exit(1)


def connect_retry(port, deadline):
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as e:
            if time.monotonic() > deadline:
                fail(f"cannot connect to 127.0.0.1:{port}: {e}")
            time.sleep(1)


class Stats:
    """The net server's per-worker counters from the http app's /stats, over one persistent
    HTTP/1.1 connection (one TCP connection in the counts, whatever the number of requests)."""

    def __init__(self, port):
        self.port = port
        self.connect()

    def connect(self):
        self.s = connect_retry(self.port, time.monotonic() + 60)
        self.s.settimeout(30)
        self.buf = b""

    def get(self):
        """One /stats; on a connection the http app has closed meanwhile (it drops idle ones),
        a fresh one (then the counts include the old connection's TIME-WAIT)."""
        try:
            return self.request()
        except ConnectionError:
            self.s.close()
            self.connect()
            return self.request()

    def request(self):
        self.s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"\r\n\r\n" not in self.buf:
            self.read()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self.buf) < length:
            self.read()
        body, self.buf = self.buf[:length], self.buf[length:]
        try:
            return json.loads(body)["net"]["workers"]
        except (KeyError, ValueError) as e:
            fail(f"/stats: {e}: {head[:100]!r} {body[:200]!r}")

    def read(self):
        try:
            d = self.s.recv(65536)
        except socket.timeout:
            fail("/stats: no answer for 30 s")
        if not d:
            raise ConnectionResetError("closed by the http app")
        self.buf += d


def hold_connections(port, n, conns=None):
    """n more connections the guest app has accepted (each checked by a short read that times
    out: the app never sends, and a reset or close would show as EOF or an error)."""
    deadline = time.monotonic() + 90
    conns = conns if conns is not None else []
    n += len(conns)
    while len(conns) < n:
        s = connect_retry(port, deadline)
        # slirp accepts on the host side before the guest does; a refused guest connect shows as
        # EOF. Give the guest a moment and check the connection is still there.
        s.settimeout(2.0)
        try:
            data = s.recv(1)
            s.close()
            if time.monotonic() > deadline:
                fail(f"connection {len(conns) + 1} to the keepalive app closed at once ({data!r})")
            time.sleep(1)
            continue
        except socket.timeout:
            pass
        except OSError as e:
            s.close()
            if time.monotonic() > deadline:
                fail(f"connection {len(conns) + 1} to the keepalive app: {e}")
            time.sleep(1)
            continue
        conns.append(s)
    return conns


class Capture:
    """A pcap file QEMU is still writing, read incrementally: each `poll()` returns the TCP
    segments the guest sent since the last call, as (t, dst port, src port, seq, payload length,
    flags), t in seconds from QEMU's clock."""

    def __init__(self, path):
        self.path = path
        self.off = 0
        self.e = None

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read()
        except OSError as err:
            fail(f"{self.path}: {err}")
        pos = 0
        if self.e is None:
            if len(data) < 24:
                return []
            magic = struct.unpack("<I", data[:4])[0]
            if magic not in (0xA1B2C3D4, 0xD4C3B2A1):
                fail(f"{self.path}: not a microsecond pcap (magic {magic:#x})")
            self.e = "<" if magic == 0xA1B2C3D4 else ">"
            if struct.unpack(self.e + "I", data[20:24])[0] != 1:
                fail(f"{self.path}: not an Ethernet capture")
            pos = 24
        out = []
        while pos + 16 <= len(data):
            sec, usec, incl, _orig = struct.unpack(self.e + "IIII", data[pos:pos + 16])
            if pos + 16 + incl > len(data):
                break  # a record still being written
            seg = guest_tcp(sec + usec / 1e6, data[pos + 16:pos + 16 + incl])
            if seg:
                out.append(seg)
            pos += 16 + incl
        self.off += pos
        return out


def guest_tcp(t, f):
    """(t, dst port, src port, seq, payload length, flags) if `f` is a TCP/IPv4 segment the
    guest sent, else None (the capture keeps the first 96 bytes of each frame: every header)."""
    if len(f) < 54 or f[12:14] != b"\x08\x00":
        return None
    ip = f[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 6 or ip[12:16] != GUEST or len(ip) < ihl + 20:
        return None
    total = struct.unpack(">H", ip[2:4])[0]
    tcp = ip[ihl:]
    sport, dport, seq = struct.unpack(">HHI", tcp[:8])
    return t, dport, sport, seq, total - ihl - (tcp[12] >> 4) * 4, tcp[13]


class LoadClock:
    """The load's clock: capture time during which the guest was sending the load (its data
    segments from port 80). A pause of the load longer than STALL is time during which the link
    was not saturated (the guest sent no load: on this system, a load steered to worker 1 stalls
    again and again; without -icount, also QEMU descheduled on a busy host), which the claim
    "timers fire while another connection saturates the link" does not cover: only STALL of each
    such pause counts, and the pauses are printed. A starved timer does not pause the load: its
    late probes are measured in full."""

    def __init__(self):
        self.t = []
        self.active = [0.0]
        self.bytes = 0
        self.stalls = []

    def add(self, t, plen):
        if self.t:
            dt = t - self.t[-1]
            self.active.append(self.active[-1] + min(dt, STALL))
            if dt > STALL:
                self.stalls.append(dt)
        self.t.append(t)
        self.bytes += plen

    def at(self, x):
        """Load time at wire time x (x within the load)."""
        i = bisect.bisect_right(self.t, x) - 1
        return self.active[i] + min(x - self.t[i], STALL)

    def total(self):
        return self.active[-1]


def load(port, cap, clock, segs, need, limit):
    """Pulls /bytes as fast as possible until the capture shows `need` seconds of load (at most
    `limit` seconds of capture time); every guest segment read from the capture meanwhile is
    appended to `segs`. Returns the bytes the host received and the wall time taken."""
    s = connect_retry(port, time.monotonic() + 60)
    s.settimeout(30)
    s.sendall(b"GET /bytes/17179869184 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    got = 0
    head = b""
    start = time.monotonic()
    check = start + 1
    while True:
        try:
            d = s.recv(1 << 20)
        except socket.timeout:
            fail(f"the /bytes transfer stopped: nothing for 30 s after {got} bytes")
        if not d:
            fail(f"the /bytes connection ended after {got} bytes")
        if len(head) < 12:
            head += d[:12]
            if len(head) >= 12 and not head.startswith(b"HTTP/1.1 200"):
                fail(f"GET /bytes answered {head!r}")
        got += len(d)
        now = time.monotonic()
        if now >= check:
            check = now + 1
            for seg in cap.poll():
                segs.append(seg)
                if seg[2] == HTTP_GUEST_PORT and seg[4] > 0:
                    clock.add(seg[0], seg[4])
            if clock.total() >= need or now - start >= limit:
                break
    s.close()
    return got, time.monotonic() - start


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "analyze":
        cap, segs, clock = Capture(sys.argv[2]), [], LoadClock()
        for seg in cap.poll():
            segs.append(seg)
            if seg[2] == HTTP_GUEST_PORT and seg[4] > 0:
                clock.add(seg[0], seg[4])
        judge(segs, clock, int(sys.argv[3]), int(sys.argv[4]))
        return
    if len(sys.argv) < 5:
        fail(__doc__)
    http_port, ka_port, pcap, interval_ms = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 8
    need = float(sys.argv[6]) if len(sys.argv) > 6 else 12.0
    interval = interval_ms / 1000.0
    # Keep-alive connections on every worker, so that whichever worker the load lands on, the
    # other holds some: their timers fire only if the PIT timer thread wakes that worker. A
    # worker's TCP connections are keep-alive ones, except the /stats connection on one of them.
    conns = hold_connections(ka_port, n)
    st = Stats(http_port)
    while True:
        workers = st.get()
        ka_at_least = [max(w["connections"] - 1, 0) for w in workers]
        if min(ka_at_least) >= 1 or len(conns) >= 4 * n:
            break
        conns = hold_connections(ka_port, 4, conns)
    print(f"holding {len(conns)} idle connections to the keepalive app (keep-alive interval {interval_ms} ms); "
          f"TCP connections per worker {[w['connections'] for w in workers]}, so at least {ka_at_least} of them", flush=True)
    before = [w["packets_in"] for w in workers]
    time.sleep(2 * interval)
    cap, segs, clock = Capture(pcap), [], LoadClock()
    segs.extend(cap.poll())
    got, wall = load(http_port, cap, clock, segs, need, LIMIT)
    print(f"load: the host read {got} bytes of GET /bytes in {wall:.1f} s", flush=True)
    time.sleep(2 * interval)
    for seg in cap.poll():
        segs.append(seg)
        if seg[2] == HTTP_GUEST_PORT and seg[4] > 0:
            clock.add(seg[0], seg[4])
    after = [w["packets_in"] for w in st.get()]
    frames_in = [b - a for a, b in zip(before, after)]
    busy = max(range(len(frames_in)), key=lambda i: frames_in[i])
    print(f"frames taken in per worker during the load {frames_in}: the load was on worker {busy}; "
          f"the others held at least {sum(k for i, k in enumerate(ka_at_least) if i != busy)} keep-alive connections", flush=True)
    for c in conns:
        c.close()
    judge(segs, clock, interval_ms, len(conns))


def judge(segs, clock, interval_ms, n):
    """The verdict from the guest's segments and the load's clock."""
    interval = interval_ms / 1000.0
    if len(clock.t) < 2:
        fail("no /bytes data from the guest in the capture")
    t0, t1 = clock.t[0], clock.t[-1]
    span = t1 - t0
    print(f"load on the wire: {clock.bytes} bytes in {span:.1f} s ({clock.bytes / max(span, 1e-6) / 1048576:.1f} MiB/s), "
          f"{len(clock.t)} data segments; {clock.total():.1f} s of load, {len(clock.stalls)} pauses over {STALL} s"
          + (f" (longest {max(clock.stalls):.2f} s; {STALL} s of each counted)" if clock.stalls else ""),
          flush=True)
    if clock.total() < 3 * BOUND * interval:
        fail(f"only {clock.total():.1f} s of load on the wire, too little to judge a {interval_ms} ms timer")
    # The keep-alive connections: from the guest's last SYN-ACK on a peer port on, never reset
    # or closed by the guest (a connect that arrived before the app listened was refused with a
    # RST; slirp may later reuse that port for a connection that is one of them).
    ka = {}  # peer port -> [(t, seq, len, flags)]
    for t, dport, sport, seq, plen, flags in segs:
        if sport == KA_GUEST_PORT:
            if flags & 0x12 == 0x12:
                ka[dport] = []
            ka.setdefault(dport, []).append((t, seq, plen, flags))
    ka = {p: c for p, c in ka.items() if c[0][3] & 0x12 == 0x12 and not any(f & 0x05 for _, _, _, f in c)}
    if len(ka) < n:
        fail(f"{len(ka)} keep-alive connections in the capture, expected {n}")

    late = []
    for port, conn in sorted(ka.items()):
        # Probes: one byte at SND.NXT - 1, after the handshake (SYN-ACK: SND.NXT = ISS + 1).
        nxt = None
        probes = []
        for t, seq, plen, flags in conn:
            if flags & 0x02:
                nxt = (seq + 1) & 0xFFFFFFFF
            elif nxt is not None and plen == 1 and seq == (nxt - 1) & 0xFFFFFFFF:
                probes.append(t)
            elif nxt is not None and plen > 0:
                nxt = (seq + plen) & 0xFFFFFFFF
        during = [t for t in probes if t0 <= t <= t1]
        marks = [t0] + during + [t1]
        pairs = list(zip(marks, marks[1:]))
        gap = max(clock.at(b) - clock.at(a) for a, b in pairs)
        wall = max(b - a for a, b in pairs)
        ok = gap <= BOUND * interval
        print(f"  connection from port {port}: {len(probes)} probes, {len(during)} during the load, "
              f"longest gap {gap:.2f} s of load ({wall:.2f} s of capture time){'' if ok else ' LATE'}", flush=True)
        if not ok:
            late.append((port, gap))
    if late:
        print(f"timers: LATE: {len(late)} of {len(ka)} connections went more than {BOUND} intervals "
              f"({BOUND * interval:.1f} s) of load without a keep-alive: "
              + ", ".join(f"port {p} {g:.1f} s" for p, g in late), flush=True)
        sys.exit(1)
    print(f"timers: verified: {len(ka)} idle connections each sent a keep-alive at least every "
          f"{BOUND} intervals ({BOUND * interval:.1f} s) during {clock.total():.1f} s of load", flush=True)


if __name__ == "__main__":
    main()
