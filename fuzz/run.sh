#!/usr/bin/env bash
# Runs one fuzz target under libFuzzer for a time:
#   fuzz/run.sh TARGET [SECONDS] [libFuzzer options…]     TARGET: json, wire, config, http, jwt, history, worker, redis, mesh, upstream, kube
# Builds `smg-fuzz` with --sanitize=fuzzer (release, in .build-fuzz), starts from the committed
# seeds in fuzz/corpus/TARGET and keeps what it finds in a scratch corpus under /tmp (the
# committed seeds stay small and hand-made). A crash leaves `crash-*` in fuzz/findings/ and the
# script fails; replay one in a normal build with `swift run smg-fuzz TARGET FILE`.
# FUZZ_NO_BUILD=1 skips the build (several targets in a row).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: fuzz/run.sh json|wire|config|http|jwt|history|worker|redis|mesh|upstream|kube [SECONDS] [libFuzzer options]}
seconds=${2:-60}
shift $(( $# < 2 ? $# : 2 ))
case "$target" in json|wire|config|http|jwt|history|worker|redis|mesh|upstream|kube) ;; *) echo "unknown target '$target'" >&2; exit 2 ;; esac
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  swift build -c release --scratch-path .build-fuzz --product smg-fuzz --sanitize=fuzzer \
    -Xswiftc -DFUZZING -Xswiftc -enable-testing -Xswiftc -parse-as-library >&2
fi
binary=.build-fuzz/release/smg-fuzz
scratch=$(mktemp -d "/tmp/smg-fuzz-$target.XXXXXX")
trap 'rm -rf "$scratch"' EXIT INT TERM
mkdir -p fuzz/findings
# Swift's own backtracer is off so libFuzzer's crash handler writes the input.
# -rss_limit_mb: the router's own bounds must keep any single input far below it.
SWIFT_BACKTRACE=enable=no SMG_FUZZ_TARGET=$target "$binary" "$scratch" "fuzz/corpus/$target" \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
  -artifact_prefix=fuzz/findings/ "$@"
