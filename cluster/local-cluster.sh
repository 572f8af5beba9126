#!/usr/bin/env bash
# Starts N meshed smg routers on loopback over M simulated workers and tears everything down
# on Ctrl-C or exit. Prints each router's API port and /ha/status URL.
#
#   cluster/local-cluster.sh [N_ROUTERS] [M_WORKERS] [extra smg flags...]
#   BIN=.build/release cluster/local-cluster.sh 3 2      # use release binaries
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"; m="${2:-2}"; shift 2 2>/dev/null || shift $# || true
bin="${BIN:-}"
if [ -z "$bin" ]; then swift build >/dev/null; bin="$(swift build --show-bin-path)"; fi
source cluster/lib.sh
new_key "$bin"

urls=()
for i in $(seq 1 "$m"); do
  "$bin/smg-sim-worker" --port 0 --name "sim-$i" >"$work/w$i" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "listening on" "$work/w$i" && break; sleep 0.05; done
  urls+=("$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/w$i" | head -1)")
done

mesh_ports=()
for i in $(seq 1 "$n"); do mesh_ports+=("$(free_port)"); done
for i in $(seq 1 "$n"); do
  peers=()
  for j in $(seq 1 "$n"); do [ "$j" != "$i" ] && peers+=("127.0.0.1:${mesh_ports[$((j-1))]}"); done
  "$bin/smg" --host 127.0.0.1 --port 0 --prometheus-host 127.0.0.1 --prometheus-port 0 \
    --enable-mesh --mesh-server-name "router-$i" --mesh-host 127.0.0.1 --mesh-port "${mesh_ports[$((i-1))]}" \
    --mesh-key-file "$work/key" --mesh-peer-urls "${peers[@]}" --worker-urls "${urls[@]}" "$@" >"$work/r$i" 2>"$work/r$i.log" &
  pids+=("$!")
  echo "router-$i pid $!" >> "$work/pids"
done
for i in $(seq 1 "$n"); do
  api="$(wait_ready "$work/r$i")"
  echo "router-$i: $api  (status: $api/ha/status, log: $work/r$i.log)"
done
echo "workers: ${urls[*]}"
echo "Ctrl-C stops the cluster."
wait
