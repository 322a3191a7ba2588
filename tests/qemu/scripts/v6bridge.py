#!/usr/bin/env python3
"""Connects a QEMU `-netdev stream` (unix socket, QEMU listening) to a tap device inside a fresh
network namespace, so host clients can reach the guest over IPv6 (QEMU 7.2's hostfwd cannot).

  v6bridge.py start NS SOCK   as root: creates network namespace NS with tap0 (10.0.3.1/24,
                              fd00:5e14::1/64), starts the bridge in the background (it ends, and
                              deletes NS, when QEMU closes the socket) and returns once it runs.
                              Not root: prints `SKIPPED` with the reason and exits 0.
  v6bridge.py stop NS         deletes NS if it is still there
Run clients in the namespace: `ip netns exec NS curl -g http://[fd00:5e14::15]/`.
The frames on the stream socket are each preceded by their length (4 bytes, big endian).
"""
import fcntl
import os
import select
import socket
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def sh(*args):
    subprocess.run(args, check=True)


def serve(ns, sock_path):
    # Runs inside NS (started with `ip netns exec NS`): the tap appears in this namespace.
    tap = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tap, TUNSETIFF, struct.pack("16sH", b"tap0", IFF_TAP | IFF_NO_PI))
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "addr", "add", "10.0.3.1/24", "dev", "tap0")
    sh("ip", "-6", "addr", "add", "fd00:5e14::1/64", "dev", "tap0", "nodad")
    sh("ip", "link", "set", "tap0", "up")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            s.connect(sock_path)
            break
        except OSError:
            time.sleep(0.1)
    else:
        print(f"bridge: cannot connect to {sock_path}", flush=True)
        return 1
    print("bridge: up", flush=True)
    buf = b""
    frames = [0, 0]
    try:
        while True:
            r, _, _ = select.select([tap, s], [], [])
            if tap in r:
                f = os.read(tap, 65536)
                s.sendall(struct.pack(">I", len(f)) + f)
                frames[0] += 1
            if s in r:
                d = s.recv(262144)
                if not d:
                    break
                buf += d
                while len(buf) >= 4:
                    n = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + n:
                        break
                    os.write(tap, buf[4:4 + n])
                    frames[1] += 1
                    buf = buf[4 + n:]
    finally:
        print(f"bridge: QEMU closed the socket; {frames[0]} frames to the guest, {frames[1]} from it", flush=True)
        subprocess.run(["ip", "netns", "del", ns])
    return 0


def start(ns, sock_path):
    if os.geteuid() != 0:
        print("SKIPPED: IPv6 end to end needs root (a tap device in a network namespace; QEMU 7.2's hostfwd rejects IPv6)", flush=True)
        return 0
    subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
    sh("ip", "netns", "add", ns)
    log = f"/tmp/{ns}.bridge.log"
    with open(log, "w") as out:
        subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "serve", ns, sock_path],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(100):
        time.sleep(0.1)
        text = open(log).read()
        if "bridge: up" in text:
            print(f"bridge up: namespace {ns}, tap0 10.0.3.1/24 fd00:5e14::1/64, QEMU socket {sock_path}", flush=True)
            return 0
        if "cannot" in text or "Error" in text or "Traceback" in text:
            break
    print("FAILED: the bridge did not come up:\n" + open(log).read(), flush=True)
    return 1


def main():
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "start":
        return start(a[1], a[2])
    if len(a) == 3 and a[0] == "serve":
        return serve(a[1], a[2])
    if len(a) == 2 and a[0] == "stop":
        subprocess.run(["ip", "netns", "del", a[1]], stderr=subprocess.DEVNULL)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
