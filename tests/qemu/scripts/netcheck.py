#!/usr/bin/env python3
"""Real-client checks against the product system (tests/qemu/netserver-full.toml).

Every sub-command prints what it measured and ends with one `<name>-verified` line only when
every check held; otherwise it prints what differed and exits 1.

  get HOST PORT N            GET /bytes/N; SHA-256 and length against the pattern computed here
  sink HOST PORT N           POST N pseudo-random bytes to /sink; the reported length and SHA-256
  echo-many HOST PORT N STATS_PORT
                             N concurrent TCP connections to the echo port, all open at once; while
                             they are open, /stats must show every worker carrying connections;
                             then each gets its own payload echoed back, verified byte by byte
  udp HOST PORT N            N UDP datagrams of distinct content, each echoed back verified
  pattern-sha256 N           prints the SHA-256 of the first N bytes of the http app's pattern
                             (byte i = (i*31 + (i >> 8)) mod 251)
"""
import hashlib
import json
import os
import socket
import sys
import threading
import time
import urllib.request

CHUNK = 1 << 20


def pattern_sha256(n):
    # The pattern is periodic in i with period lcm over (i*31) mod 251 and (i>>8) mod 251:
    # i -> i + 251*256 leaves both terms unchanged mod 251, so one period of 64256 bytes suffices.
    period = 251 * 256
    one = bytes(((i * 31 + (i >> 8)) % 251) for i in range(period))
    h = hashlib.sha256()
    full, rest = divmod(n, period)
    for _ in range(full):
        h.update(one)
    h.update(one[:rest])
    return h.hexdigest()


def url(host, port, path):
    h = f"[{host}]" if ":" in host else host
    return f"http://{h}:{port}{path}"


def fail(msg):
    print("FAILED: " + msg, flush=True)
    sys.exit(1)


def cmd_get(host, port, n):
    want = pattern_sha256(n)
    t0 = time.monotonic()
    req = urllib.request.urlopen(url(host, port, f"/bytes/{n}"), timeout=120)
    h = hashlib.sha256()
    got = 0
    while True:
        b = req.read(CHUNK)
        if not b:
            break
        h.update(b)
        got += len(b)
    dt = time.monotonic() - t0
    print(f"GET /bytes/{n}: {got} bytes in {dt:.1f} s ({got / dt / 1e6:.2f} MB/s), sha256 {h.hexdigest()} want {want}", flush=True)
    if got != n:
        fail(f"length {got} != {n}")
    if h.hexdigest() != want:
        fail("sha256 differs from the pattern computed on the host")
    print("get-verified", flush=True)


def cmd_sink(host, port, n):
    seed = os.urandom(32)
    # Deterministic pseudo-random body streamed in 1 MiB chunks (SHA-256 counter mode).
    def chunks():
        sent = 0
        ctr = 0
        while sent < n:
            block = b"".join(hashlib.sha256(seed + (ctr * 32 + k).to_bytes(8, "little")).digest() for k in range(CHUNK // 32))
            ctr += 1
            take = min(CHUNK, n - sent)
            yield block[:take]
            sent += take
    h = hashlib.sha256()
    for c in chunks():
        h.update(c)
    want = h.hexdigest()
    t0 = time.monotonic()
    s = socket.create_connection((host, port), timeout=120)
    s.sendall(f"POST /sink HTTP/1.1\r\nHost: guest\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n".encode())
    for c in chunks():
        s.sendall(c)
    s.shutdown(socket.SHUT_WR)
    resp = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        resp += b
    s.close()
    dt = time.monotonic() - t0
    text = resp.decode(errors="replace")
    body = text.split("\r\n\r\n", 1)[-1]
    print(f"POST /sink {n} bytes in {dt:.1f} s ({n / dt / 1e6:.2f} MB/s); answer {body.strip()} want sha256 {want}", flush=True)
    if not text.startswith("HTTP/1.1 200"):
        fail("status line: " + text.split("\r\n", 1)[0])
    try:
        j = json.loads(body)
    except ValueError:
        fail("answer is not JSON")
    if j.get("length") != n:
        fail(f"reported length {j.get('length')} != {n}")
    if j.get("sha256") != want:
        fail("reported sha256 differs from the one computed on the host")
    print("sink-verified", flush=True)


def stats(host, port):
    with urllib.request.urlopen(url(host, port, "/stats"), timeout=60) as r:
        return json.loads(r.read())


def cmd_echo_many(host, port, n, stats_port):
    conns = []
    t0 = time.monotonic()
    for i in range(n):
        s = socket.create_connection((host, port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(s)
    # Each connection must be established in the guest (not only in slirp): one round trip each.
    for i, s in enumerate(conns):
        s.sendall(f"hello {i}\n".encode())
    for i, s in enumerate(conns):
        want = f"hello {i}\n".encode()
        got = b""
        while len(got) < len(want):
            b = s.recv(len(want) - len(got))
            if not b:
                fail(f"connection {i}: closed after {got!r}")
            got += b
        if got != want:
            fail(f"connection {i}: got {got!r} want {want!r}")
    print(f"{n} connections open and answering after {time.monotonic() - t0:.1f} s", flush=True)
    st = stats(host, stats_port)
    workers = st["net"]["workers"]
    per = [w["connections"] for w in workers]
    print(f"/stats while they are open: connections per worker {per}; {json.dumps(st['net'])}", flush=True)
    if len(workers) < 2:
        fail(f"{len(workers)} worker(s) in /stats")
    if any(c == 0 for c in per):
        fail(f"a worker carries no connection: {per}")
    if sum(per) < n:
        fail(f"workers carry {sum(per)} connections, fewer than the {n} open")
    # Now every connection, concurrently: a distinct 16 KiB payload each, echoed and verified.
    errors = []

    def run(i, s):
        try:
            payload = hashlib.sha256(str(i).encode()).digest() * 512
            got = bytearray()
            def reader():
                while len(got) < len(payload):
                    b = s.recv(65536)
                    if not b:
                        break
                    got.extend(b)
            r = threading.Thread(target=reader)
            r.start()
            s.sendall(payload)
            r.join(120)
            if bytes(got) != payload:
                errors.append(f"connection {i}: {len(got)} of {len(payload)} bytes, equal={bytes(got) == payload[:len(got)]}")
            s.close()
        except OSError as e:
            errors.append(f"connection {i}: {e}")

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{n - len(errors)} of {n} connections echoed 16 KiB each, verified, in {time.monotonic() - t0:.1f} s total", flush=True)
    if errors:
        fail("; ".join(errors[:10]))
    print("echo-many-verified", flush=True)


def cmd_udp(host, port, n):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(5)
    ok = 0
    for i in range(n):
        msg = f"datagram {i} ".encode() * (1 + i % 50)
        for attempt in range(3):
            s.sendto(msg, (host, port))
            try:
                got, _ = s.recvfrom(65536)
            except socket.timeout:
                continue
            # A late answer to an earlier try of the same datagram is fine; anything else is not.
            if got == msg:
                ok += 1
                break
            fail(f"datagram {i}: got {got[:60]!r}")
    print(f"{ok} of {n} UDP datagrams echoed and verified", flush=True)
    if ok != n:
        fail("datagrams lost even after retries")
    print("udp-verified", flush=True)


def main():
    a = sys.argv[1:]
    if not a:
        print(__doc__)
        sys.exit(2)
    if a[0] == "get":
        cmd_get(a[1], int(a[2]), int(a[3]))
    elif a[0] == "sink":
        cmd_sink(a[1], int(a[2]), int(a[3]))
    elif a[0] == "echo-many":
        cmd_echo_many(a[1], int(a[2]), int(a[3]), int(a[4]))
    elif a[0] == "pattern-sha256":
        print(pattern_sha256(int(a[1])))
    elif a[0] == "udp":
        cmd_udp(a[1], int(a[2]), int(a[3]))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
