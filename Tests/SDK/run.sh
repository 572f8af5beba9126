#!/usr/bin/env bash
# The OpenAI Python SDK against two smg routers that share a Redis (./dev sdk runs this after
# building). Starts redis-server, a simulated worker and the routers on free loopback ports,
# runs openai_sdk_check.py in a virtualenv with pip's `openai`, and stops everything on exit,
# also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(swift build --show-bin-path)
venv=.build/sdk-venv
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q openai
fi

. cluster/free-port.sh  # the cd above made this the repository root
wait_for() {  # file, marker
  for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "sdk: '$2' never appeared in $1:" >&2; cat "$1" >&2; exit 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for "$work/redis.log" "Ready to accept connections"

"$bin/smg-sim-worker" --port 0 --name sdk >"$work/worker.log" 2>&1 &
pids+=($!)
wait_for "$work/worker.log" "listening on"
worker=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$work/worker.log" | head -1)

urls=()
for name in a b; do
  "$bin/smg" --host 127.0.0.1 --port 0 --prometheus-port 0 --worker-urls "$worker" \
    --history-backend redis --redis-url "redis://127.0.0.1:$redis_port" >"$work/$name.log" 2>&1 &
  pids+=($!)
  wait_for "$work/$name.log" "smg ready:"
  urls+=("$(grep -o 'api=http://127\.0\.0\.1:[0-9]*' "$work/$name.log" | head -1 | cut -d= -f2)")
done
# The first health check makes the worker usable.
"$venv/bin/python" - "${urls[@]}" <<'PY'
import sys, time, urllib.request
for url in sys.argv[1:]:
    for _ in range(300):
        try:
            if urllib.request.urlopen(url + "/readiness", timeout=2).status == 200: break
        except Exception:
            time.sleep(0.05)
    else:
        sys.exit(f"sdk: {url} never became ready")
PY
"$venv/bin/python" Tests/SDK/openai_sdk_check.py "${urls[@]}"
