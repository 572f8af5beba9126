#!/usr/bin/env bash
# Starts one smg router over N simulated workers on loopback and tears everything down on
# Ctrl-C or exit. cluster/local-cluster.sh runs several meshed routers.
#
#   cluster/local-node.sh [N_WORKERS] [extra smg flags...]
#   e.g. cluster/local-node.sh 4 --policy random --port 30000
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-3}"; shift || true
swift build >/dev/null
bin="$(swift build --show-bin-path)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

urls=()
for i in $(seq 1 "$n"); do
  log="$(mktemp)"
  "$bin/smg-sim-worker" --port 0 --name "sim-$i" --ttft-ms 20 --tokens-per-second 50 >"$log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do grep -q "listening on" "$log" && break; sleep 0.05; done
  url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)"
  [ -n "$url" ] || { echo "worker $i did not start: $(cat "$log")" >&2; exit 1; }
  urls+=("$url")
  rm -f "$log"
done
echo "workers: ${urls[*]}"
"$bin/smg" --host 127.0.0.1 --prometheus-host 127.0.0.1 --policy round_robin --worker-urls "${urls[@]}" "$@" &
pids+=("$!")
wait "${pids[-1]}"
