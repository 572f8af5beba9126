#!/usr/bin/env bash
# Measures what an idle mesh costs: starts 3 meshed release routers (no traffic), lets them
# settle, then samples each router's CPU time (/proc/PID/stat) and mesh bytes (/ha/status)
# over a window and prints CPU % of one core and bytes/s per node.
#
#   swift build -c release && cluster/idle-cost.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}"
bin=.build/release
source cluster/lib.sh
new_key "$bin"
ports=("$(free_port)" "$(free_port)" "$(free_port)")
apis=()
for i in 0 1 2; do
  peers=()
  for j in 0 1 2; do [ "$j" != "$i" ] && peers+=("127.0.0.1:${ports[$j]}"); done
  "$bin/smg" --host 127.0.0.1 --port 0 --prometheus-host 127.0.0.1 --prometheus-port 0 --log-level warn \
    --enable-mesh --mesh-server-name "r$i" --mesh-host 127.0.0.1 --mesh-port "${ports[$i]}" --mesh-key-file "$work/key" \
    --mesh-peer-urls "${peers[@]}" >"$work/r$i" 2>&1 &
  pids+=("$!")
done
for i in 0 1 2; do apis+=("$(wait_ready "$work/r$i")"); done
sleep 5  # join and settle
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Mesh bytes this node has sent so far.
bytes() { curl -s "$1/ha/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["traffic"]["bytes_out"])'; }
declare -a c0 b0
for i in 0 1 2; do c0[$i]=$(cpu "${pids[$i]}"); b0[$i]=$(bytes "${apis[$i]}"); done
sleep "$secs"
echo "idle 3-node mesh, ${secs} s window, $(nproc) cores:"
for i in 0 1 2; do
  c1=$(cpu "${pids[$i]}"); b1=$(bytes "${apis[$i]}")
  alive=$(curl -s "${apis[$i]}/ha/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["alive"])')
  python3 -c "print(f'r$i: CPU {($c1-${c0[$i]})/$ticks/$secs*100:.2f}% of a core, sent {($b1-${b0[$i]})/$secs:.0f} B/s, members alive: $alive')"
done
