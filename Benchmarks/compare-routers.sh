#!/usr/bin/env bash
# Router CPU per request, side by side, for several routers in one run: saturated and at a fixed
# moderate rate, plain and streaming chat completions, over the same simulated workers.
#   Benchmarks/compare-routers.sh [ROUTER_CMD ...]     (default: this build's release smg)
# A ROUTER_CMD takes the gateway's flags, e.g. ".build/release/smg" or "venv/bin/smg launch"
# (the reference gateway: pip install smg==1.13.0 into a virtualenv). Build first with
# `swift build -c release`, and run it on an otherwise idle machine.
# With PIN=1 (the default on 2+ cores) the router runs alone on CPU 1 and the load generator and
# workers on CPU 0: the figures then repeat within a few percent, where unpinned runs move by
# ±15% with how the four processes happen to share the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=.build/release/smg-bench
[ -x "$bench" ] || { echo "build first: swift build -c release" >&2; exit 2; }
[ $# -gt 0 ] || set -- .build/release/smg
runs=${RUNS:-2}
pin=${PIN:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}
load=(); router=()
if [ "$pin" = 1 ]; then load=(taskset -c 0); router=(taskset -c 1); fi
modes=(
  "plain, saturated|--requests 60000"
  "plain, 1000/s|--requests 15000 --rate 1000"
  "stream, saturated|--requests 20000 --stream"
  "stream, 1000/s|--requests 15000 --rate 1000 --stream"
)
printf '%-24s' "µs of router CPU/request"
for cmd in "$@"; do printf ' | %-28s' "$(basename "${cmd%% *}")${cmd#"${cmd%% *}"}"; done
echo
for mode in "${modes[@]}"; do
  label=${mode%%|*}; args=${mode#*|}
  printf '%-24s' "$label"
  for cmd in "$@"; do
    figures=()
    for _ in $(seq "$runs"); do
      # shellcheck disable=SC2086
      figures+=("$("${load[@]}" "$bench" $args --no-direct --router-cmd "${router[*]} $cmd" | awk '/router CPU/ {print $3}')")
    done
    printf ' | %-28s' "$(IFS=' '; echo "${figures[*]}")"
  done
  echo
done
