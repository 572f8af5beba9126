# Shared by the cluster/ scripts: a scratch directory and processes cleaned up on exit, a free
# loopback port, a fresh cluster key, and waiting for a router's ready line.
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

. "$(dirname "${BASH_SOURCE[0]}")/free-port.sh"

# new_key BIN: writes a cluster key to $work/key.
new_key() { "$1/smg" mesh-keygen > "$work/key"; }

# wait_ready FILE: waits for a router's ready line in FILE and prints its API URL.
wait_ready() {
  for _ in $(seq 1 200); do grep -q "smg ready" "$1" 2>/dev/null && break; sleep 0.05; done
  grep -o 'api=http://[0-9.:]*' "$1" | cut -d= -f2
}
