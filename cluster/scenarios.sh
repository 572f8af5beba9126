#!/usr/bin/env bash
# Failure scenarios against a local 3-router mesh on loopback: kill -9 and restart a router,
# partition one by stopping it (SIGSTOP) and let it back, and a rolling restart. Each step
# polls /ha/status against a deadline and prints how long it took; exits 1 on a missed one.
#
#   cluster/scenarios.sh            (debug build)    BIN=.build/release cluster/scenarios.sh
# Needs curl, bc and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-}"
if [ -z "$bin" ]; then swift build --product smg >/dev/null; bin="$(swift build --show-bin-path)"; fi
source cluster/lib.sh
new_key "$bin"
declare -A pid api port
names=(r1 r2 r3)
for n in "${names[@]}"; do port[$n]=$(free_port); done

start() {
  local n=$1 peers=()
  for m in "${names[@]}"; do [ "$m" != "$n" ] && peers+=("127.0.0.1:${port[$m]}"); done
  "$bin/smg" --host 127.0.0.1 --port 0 --prometheus-host 127.0.0.1 --prometheus-port 0 --log-level warn \
    --enable-mesh --mesh-server-name "$n" --mesh-host 127.0.0.1 --mesh-port "${port[$n]}" --mesh-key-file "$work/key" \
    --mesh-peer-urls "${peers[@]}" >"$work/$n.out" 2>>"$work/$n.log" &
  pid[$n]=$!
  pids+=("$!")
  api[$n]=$(wait_ready "$work/$n.out")
}

# status_of OBSERVER MEMBER -> alive|suspect|dead|left|unknown
status_of() {
  curl -s --max-time 1 "${api[$1]}/ha/status" 2>/dev/null | python3 -c "
import json,sys
try: print(next((m['status'] for m in json.load(sys.stdin)['members'] if m['name']=='$2'), 'unknown'))
except Exception: print('unreachable')"
}

# expect WHAT DEADLINE_S OBSERVER MEMBER STATUS...
expect() {
  local what=$1 deadline=$2 observer=$3 member=$4; shift 4
  local start; start=$(date +%s.%N)
  while true; do
    local s; s=$(status_of "$observer" "$member")
    for want in "$@"; do
      if [ "$s" = "$want" ]; then
        printf '  %-58s %5.2f s\n' "$what" "$(echo "$(date +%s.%N) - $start" | bc)"
        return 0
      fi
    done
    if [ "$(echo "$(date +%s.%N) - $start > $deadline" | bc)" = 1 ]; then
      echo "  $what: MISSED the ${deadline} s deadline ($observer sees $member as $s)"; exit 1
    fi
    sleep 0.05
  done
}

echo "starting r1 r2 r3"
for n in "${names[@]}"; do start "$n"; done
expect "r1 sees r3 alive" 10 r1 r3 alive
expect "r3 sees r1 alive" 10 r3 r1 alive

echo "kill -9 r3, then restart it"
kill -9 "${pid[r3]}"
expect "r1 declares r3 dead" 3 r1 r3 dead
expect "r2 declares r3 dead" 3 r2 r3 dead
start r3
expect "the restarted r3 is alive for r1" 5 r1 r3 alive

echo "partition r2 (SIGSTOP: it sends and answers nothing), then let it back"
kill -STOP "${pid[r2]}"
expect "r1 declares r2 dead" 5 r1 r2 dead
kill -CONT "${pid[r2]}"
expect "r2 refutes and is alive again for r1" 10 r1 r2 alive
expect "r2 sees r1 alive" 10 r2 r1 alive

echo "rolling restart (SIGTERM, restart, wait alive), one router at a time"
for n in "${names[@]}"; do
  other=r1; [ "$n" = r1 ] && other=r2
  kill -TERM "${pid[$n]}"
  expect "$other sees $n leave" 2 "$other" "$n" left
  wait "${pid[$n]}" 2>/dev/null || true
  start "$n"
  expect "$n is back for $other" 5 "$other" "$n" alive
done
echo "all scenarios passed"
