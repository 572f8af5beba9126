#!/usr/bin/env bash
# What an idle router without a mesh costs, and what readiness checks add: one release router
# (no workers), its CPU time from /proc over a window, idle, then with 5 `GET /readiness` a
# second on a new connection each (as curl in a loop asks), then with 5 a second on one
# kept-alive connection (as cluster/vip/readiness-watch asks). Prints cores (1 = one core busy).
#
#   swift build -c release --product smg && cluster/readiness-cost.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
bin="${BIN:-.build/release}"
source cluster/lib.sh
"$bin/smg" --host 127.0.0.1 --port 0 --prometheus-host 127.0.0.1 --prometheus-port 0 --log-level warn >"$work/r" 2>&1 &
pid=$!
pids+=("$pid")
api=$(wait_ready "$work/r")
sleep 3
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$pid/stat"; }
measure() {
  local c0 c1
  c0=$(cpu); sleep "$secs"; c1=$(cpu)
  python3 -c "print(f'{($c1 - $c0) / $ticks / $secs:.4f}')"
}
echo "idle router without a mesh, ${secs} s window, cores:"
echo "  idle:                                   $(measure)"
( while true; do curl -sf -m 0.3 -o /dev/null "$api/readiness" || true; sleep 0.2; done ) &
pids+=("$!")
sleep 2
echo "  5 checks/s, a new connection each:      $(measure)"
kill "${pids[-1]}"
python3 - "$api" <<'PY' &
import http.client, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
c = http.client.HTTPConnection(u.hostname, u.port, timeout=0.3)
while True:
    c.request("GET", "/readiness"); c.getresponse().read(); time.sleep(0.2)
PY
pids+=("$!")
sleep 2
echo "  5 checks/s on one kept-alive connection: $(measure)"
