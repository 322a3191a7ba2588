#!/bin/sh
# IPv6 end to end from host clients (tests/qemu/netserver-ipv6.toml): QEMU's NIC is a stream
# socket ($2); v6bridge.py joins it to tap0 in network namespace $1 (fd00:5e14::1/64), the guest
# is fd00:5e14::15. Needs root; otherwise prints a SKIPPED line and succeeds.
# Usage: ipv6-e2e.sh NAMESPACE SOCKET
set -u
ns=$1
sock=$2
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
g=fd00:5e14::15
if [ "$(id -u)" -ne 0 ]; then
    echo "ipv6-e2e: SKIPPED (not root): IPv6 from the host needs a tap device in a network namespace (QEMU 7.2's hostfwd rejects IPv6)"
    exit 0
fi
fail() { echo "ipv6-e2e: FAILED: $*"; $py "$here/v6bridge.py" stop "$ns"; exit 1; }
$py "$here/v6bridge.py" start "$ns" "$sock" || fail "bridge"
run() { ip netns exec "$ns" "$@"; }
# Neighbour discovery to the guest, then an ICMPv6 echo answered by the net server.
run ping -6 -c 3 -W 5 $g || fail "ping6 $g"
# The apps may still be starting (the test waits only for the net server's line): retry.
i=0
until out=$(run curl -g -sS --max-time 10 "http://[$g]:80/") && run socat -t 2 /dev/null "TCP6:[$g]:7"; do
    i=$((i + 1)); [ $i -ge 30 ] && fail "curl / or echo not answering: $out"; sleep 2
done
echo "$out" | grep -q "<h1>A network server on seL4</h1>" || fail "curl / over IPv6: $out"
echo "curl / over IPv6: ok"
out=$(printf 'hello over tcp6\n' | run socat -t 5 - "TCP6:[$g]:7") || fail "socat TCP6"
[ "$out" = "hello over tcp6" ] || fail "TCP6 echo: $out"
echo "TCP6 echo (socat): $out"
out=$(printf 'hello over udp6\n' | run socat -t 5 - "UDP6:[$g]:7") || fail "socat UDP6"
[ "$out" = "hello over udp6" ] || fail "UDP6 echo: $out"
echo "UDP6 echo (socat): $out"
run $py "$here/netcheck.py" udp $g 7 20 || fail "UDP6 datagrams"
run $py "$here/netcheck.py" get $g 80 8388608 || fail "GET over IPv6"
run $py "$here/netcheck.py" sink $g 80 8388608 || fail "POST /sink over IPv6"
run $py "$here/netcheck.py" echo-many $g 7 100 80 || fail "100 connections over IPv6"
out=$(run curl -g -sS --max-time 30 "http://[$g]:80/stats") || fail "curl /stats"
echo "/stats: $out"
echo "ipv6-e2e: verified"
