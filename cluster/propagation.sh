#!/usr/bin/env bash
# Delta propagation latency between meshed routers: adds a worker through r1 and polls r2
# until it knows it (then removes it the same way), 100 times; prints p50/p99 of each.
# Needs python3.   swift build -c release && cluster/propagation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-.build/release}"
source cluster/lib.sh
new_key "$bin"
p1=$(free_port); p2=$(free_port)
"$bin/smg" --host 127.0.0.1 --port 0 --prometheus-port 0 --log-level warn --enable-mesh --mesh-server-name r1 --mesh-host 127.0.0.1 \
  --mesh-port "$p1" --mesh-key-file "$work/key" --mesh-peer-urls "127.0.0.1:$p2" --disable-health-check >"$work/r1" 2>&1 &
pids+=("$!")
"$bin/smg" --host 127.0.0.1 --port 0 --prometheus-port 0 --log-level warn --enable-mesh --mesh-server-name r2 --mesh-host 127.0.0.1 \
  --mesh-port "$p2" --mesh-key-file "$work/key" --mesh-peer-urls "127.0.0.1:$p1" --disable-health-check >"$work/r2" 2>&1 &
pids+=("$!")
a1=$(wait_ready "$work/r1" | sed 's|http://||')
a2=$(wait_ready "$work/r2" | sed 's|http://||')
sleep 2
python3 - "$a1" "$a2" <<'PY'
import http.client, json, sys, time
a1, a2 = sys.argv[1], sys.argv[2]
def req(addr, method, path, body=None):
    h, p = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=5)
    c.request(method, path, body=json.dumps(body) if body else None, headers={"content-type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data
add, remove = [], []
for i in range(100):
    url = f"http://127.0.0.1:{20000 + i}"
    status, data = req(a1, "POST", "/workers", {"url": url})
    wid = json.loads(data)["id"]
    t0 = time.perf_counter()
    while req(a2, "GET", f"/workers/{wid}")[0] != 200: pass
    add.append((time.perf_counter() - t0) * 1000)
    req(a1, "DELETE", f"/workers/{wid}")
    t0 = time.perf_counter()
    while req(a2, "GET", f"/workers/{wid}")[0] == 200: pass
    remove.append((time.perf_counter() - t0) * 1000)
def pct(xs, p): xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * p))]
print(f"worker added on r1, known on r2:   p50 {pct(add, .5):.2f} ms  p99 {pct(add, .99):.2f} ms  (100 trials, polling r2 back to back)")
print(f"worker removed on r1, gone on r2:  p50 {pct(remove, .5):.2f} ms  p99 {pct(remove, .99):.2f} ms")
PY
