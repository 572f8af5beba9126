#!/usr/bin/env bash
# Reads the metric families off the reference gateway, for smg-1.13.0-metric-families.txt:
#   python3 -m venv /tmp/ref && /tmp/ref/bin/pip install smg==1.13.0
#   swift build --product smg-sim-worker
#   Tests/Reference/drive-reference.sh /tmp/ref/bin/smg
# It starts two simulated workers (one failing half its requests) and the gateway on loopback,
# sends the traffic ReferenceMetricsTests sends smg (chat, streamed chat, completions, generate,
# a stored response, a bad body, an unknown path, more requests at once than
# --max-concurrent-requests), and prints each family as "name type labels" (le left out). The
# list's last column (same, or absent: why) is smg's side, written by hand.
set -euo pipefail
GATEWAY=${1:?usage: drive-reference.sh PATH-TO-REFERENCE-smg}
SIM="$(cd "$(dirname "$0")/../.." && swift build --show-bin-path)/smg-sim-worker"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
W1=$(free_port); W2=$(free_port); API=$(free_port); METRICS=$(free_port)
"$SIM" --port "$W1" --name good >"$work/w1.log" 2>&1 & pids+=($!)
"$SIM" --port "$W2" --name flaky --failure-rate 0.5 --seed 3 >"$work/w2.log" 2>&1 & pids+=($!)
sleep 1
"$GATEWAY" launch --host 127.0.0.1 --port "$API" --prometheus-host 127.0.0.1 --prometheus-port "$METRICS" \
  --worker-urls "http://127.0.0.1:$W1" "http://127.0.0.1:$W2" --policy cache_aware --history-backend memory \
  --max-concurrent-requests 4 >"$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 120); do curl -sf "http://127.0.0.1:$API/readiness" >/dev/null && break; sleep 0.5; done
post() { curl -s "http://127.0.0.1:$API$1" -H 'content-type: application/json' -d "$2" >/dev/null; }
for i in $(seq 20); do
  post /v1/chat/completions "{\"model\":\"sim-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hello $i\"}]}"
  post /v1/chat/completions "{\"model\":\"sim-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hello $i\"}]}"
  post /v1/completions "{\"model\":\"sim-model\",\"prompt\":\"hi $i\"}"
  post /generate "{\"text\":\"hi $i\"}"
done
post /v1/responses '{"model":"sim-model","input":"hello","store":true}'
post /v1/chat/completions '{bad'
curl -s "http://127.0.0.1:$API/nope" >/dev/null
for _ in $(seq 16); do post /v1/chat/completions '{"model":"sim-model","messages":[{"role":"user","content":"x"}],"max_tokens":200}' & done
sleep 3  # the burst ends (its requests run on in the background)
curl -s "http://127.0.0.1:$METRICS/metrics" | python3 -c '
import re, sys, collections
types, labels = {}, collections.defaultdict(set)
for line in sys.stdin:
    m = re.match(r"# TYPE (\S+) (\S+)", line)
    if m: types[m[1]] = m[2]; continue
    if line.startswith("#") or not line.strip(): continue
    m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
    name = m[1]
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram": name = name[: -len(suffix)]
    labels[name] |= {l for l in re.findall(r"([a-zA-Z_]+)=\"", m[3] or "") if l != "le"}
for n in sorted(types): print(n, types[n], ",".join(sorted(labels[n])) or "-")
'
