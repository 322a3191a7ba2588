#!/usr/bin/env python3
"""Keep-alive probes of idle connections on an idle system, judged from the wire
(tests/qemu/controls/timers-idle.toml).

  idle_probes.py HTTP_PORT KA_PORT PCAP INTERVAL_MS CONNECTIONS SECONDS

Holds CONNECTIONS idle connections to the guest's `keepalive` app (at least one on each worker,
as timers.py does), then leaves the system alone for SECONDS, and reads QEMU's capture of the
guest's frames: per connection, the longest stretch without a keep-alive probe. Without
`-icount` the capture's clock is the host's, so this watches for the guest going quiet while
idle — a thread on core 1 not woken, or the whole guest not run — as once seen (a 4.8 s stop,
netserver/server/README.md, "Cross-core wake-ups stall"). Prints `idle: verified ...` (exit 0)
when no connection went more than 3 intervals without a probe, else `idle: LATE ...` (exit 1).
"""
import sys
import time

from timers import BOUND, KA_GUEST_PORT, Capture, Stats, fail, hold_connections


def main():
    if len(sys.argv) != 7:
        fail(__doc__)
    http_port, ka_port, pcap = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    interval = int(sys.argv[4]) / 1000.0
    n, seconds = int(sys.argv[5]), float(sys.argv[6])
    conns = hold_connections(ka_port, n)
    st = Stats(http_port)
    while True:
        workers = st.get()
        if min(max(w["connections"] - 1, 0) for w in workers) >= 1 or len(conns) >= 4 * n:
            break
        conns = hold_connections(ka_port, 4, conns)
    st.s.close()
    print(f"holding {len(conns)} idle connections; TCP connections per worker "
          f"{[w['connections'] for w in workers]}; idle for {seconds:.0f} s", flush=True)
    cap = Capture(pcap)
    segs = cap.poll()
    t_start = time.time()
    while time.time() - t_start < seconds:
        time.sleep(5)
        segs.extend(cap.poll())
    segs.extend(cap.poll())
    for c in conns:
        c.close()
    # Probes per connection (one byte at SND.NXT - 1 after the SYN-ACK), as in timers.py.
    conns_seen = {}
    for t, dport, sport, seq, plen, flags in segs:
        if sport == KA_GUEST_PORT:
            if flags & 0x12 == 0x12:
                conns_seen[dport] = []
            conns_seen.setdefault(dport, []).append((t, seq, plen, flags))
    ka = {p: c for p, c in conns_seen.items() if c[0][3] & 0x12 == 0x12}
    if len(ka) < len(conns):
        fail(f"{len(ka)} keep-alive connections in the capture, expected {len(conns)}")
    t1 = max(t for c in ka.values() for t, _, _, _ in c)
    late, worst = [], 0.0
    for port, conn in sorted(ka.items()):
        nxt, probes = None, []
        for t, seq, plen, flags in conn:
            if flags & 0x02:
                nxt = (seq + 1) & 0xFFFFFFFF
            elif nxt is not None and plen == 1 and seq == (nxt - 1) & 0xFFFFFFFF:
                probes.append(t)
        # From the handshake (the first probe is due one interval later) to the end.
        marks = [conn[0][0]] + probes + [t1]
        gap = max(b - a for a, b in zip(marks, marks[1:]))
        worst = max(worst, gap)
        print(f"  connection from port {port}: {len(probes)} probes, longest gap {gap:.2f} s", flush=True)
        if gap > BOUND * interval:
            late.append((port, gap))
    if late:
        print(f"idle: LATE: {len(late)} of {len(ka)} connections went more than {BOUND * interval:.1f} s "
              f"without a keep-alive: " + ", ".join(f"port {p} {g:.1f} s" for p, g in late), flush=True)
        sys.exit(1)
    print(f"idle: verified: {len(ka)} idle connections each sent a keep-alive at least every "
          f"{BOUND * interval:.1f} s for {seconds:.0f} s of idling (longest gap {worst:.2f} s)", flush=True)


if __name__ == "__main__":
    main()
