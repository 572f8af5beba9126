#!/usr/bin/env bash
# Measures what Kubernetes discovery costs a router under churn: the API server double
# (Tests/Kubernetes/apiserver-double.py) holds N pods and changes R of them a second (a pod
# turns Ready or NotReady, is deleted, comes back); one release router discovers them. Prints the
# router's CPU (% of one core, and per pod change) and memory over the window, then checks that
# once the churn stops the router's workers are exactly the pods that serve.
#
# The pods' addresses are on loopback (127.100.0.0/16) at a port nothing listens on: the router's
# health checks and model probes to them are refused at once, as part of the cost measured.
#
#   swift build -c release --product smg && cluster/discovery-cost.sh [SECONDS] [PODS] [RATE]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-30}" pods="${2:-1000}" rate="${3:-100}"
bin=.build/release
source cluster/lib.sh
echo t1 > "$work/tokens"
python3 Tests/Kubernetes/apiserver-double.py --token-file "$work/tokens" >"$work/double" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do grep -q listening "$work/double" && break; sleep 0.05; done
api_port=$(awk '{print $2}' "$work/double")
cat >"$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: double, cluster: {server: "http://127.0.0.1:$api_port"}}]
users: [{name: smg, user: {token: t1}}]
contexts: [{name: bench, context: {cluster: double, user: smg}}]
current-context: bench
KC
dead_port=$(free_port)
KUBECONFIG="$work/kubeconfig" "$bin/smg" --host 127.0.0.1 --port 0 --prometheus-host 127.0.0.1 --prometheus-port 0 --log-level warn \
  --service-discovery --selector app=churn --service-discovery-namespace llm --service-discovery-port "$dead_port" >"$work/router" 2>&1 &
router=$!
pids+=("$router")
url=$(wait_ready "$work/router")
control() { curl -sf -X "$1" "http://127.0.0.1:$api_port/_double/$2" -H 'content-type: application/json' ${3:+-d "$3"}; }
control POST churn "{\"pods\": $pods, \"rate\": $rate, \"seconds\": $((secs + 10)), \"namespace\": \"llm\", \"labels\": {\"app\": \"churn\"}}" >/dev/null
workers() { curl -s "$url/workers" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"])'; }
for _ in $(seq 1 200); do [ "$(workers)" -ge $((pods / 2)) ] && break; sleep 0.1; done
sleep 3  # the first list and the initial adds behind us: measure the steady churn
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
version() { control GET stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["resource_version"])'; }
c0=$(cpu "$router"); v0=$(version)
sleep "$secs"
c1=$(cpu "$router"); v1=$(version)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$router/status")
python3 - "$c0" "$c1" "$v0" "$v1" "$ticks" "$secs" "$pods" "$rss" "$(nproc)" <<'PY'
import sys
c0, c1, v0, v1, ticks, secs, pods, rss, cores = (float(x) for x in sys.argv[1:])
changes = v1 - v0
cpu = (c1 - c0) / ticks
print(f"kubernetes discovery, {int(pods)} pods, {changes / secs:.0f} pod changes/s for {secs:.0f} s, {int(cores)} cores:")
print(f"  router CPU {cpu / secs * 100:.1f}% of a core, {cpu / max(changes, 1) * 1e6:.0f} µs per pod change, RSS {rss / 1024:.0f} MiB")
PY
# Once the churn is over, the router's workers must be exactly the serving pods.
sleep 12
python3 - "$url" "$api_port" "$dead_port" <<'PY'
import json, sys, urllib.request
url, api, port = sys.argv[1], sys.argv[2], sys.argv[3]
req = urllib.request.Request(f"http://127.0.0.1:{api}/api/v1/namespaces/llm/pods?labelSelector=app%3Dchurn", headers={"Authorization": "Bearer t1"})
pods = json.load(urllib.request.urlopen(req))["items"]
serving = {f"http://{p['status']['podIP']}:{port}" for p in pods
           if p["status"].get("phase") == "Running" and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
           and not p["metadata"].get("deletionTimestamp")}
workers = {w["url"] for w in json.load(urllib.request.urlopen(url + "/workers"))["workers"]}
print(f"  after the churn: {len(serving)} serving pods, {len(workers)} workers, {'the same' if serving == workers else 'DIFFERENT: %d missing, %d extra' % (len(serving - workers), len(workers - serving))}")
sys.exit(0 if serving == workers else 1)
PY
