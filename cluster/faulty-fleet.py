#!/usr/bin/env python3
"""Routers side by side over one fleet of simulated workers, one of which is in trouble.

    cluster/faulty-fleet.py [--secs 20] [--clients 16] [--fault queued|mixed] [ROUTER_CMD ...]

Four smg-sim-worker processes on loopback (20 ms to the first token, 8 tokens). With
--fault queued one of them reports 20 waiting requests and 0.95 KV-cache usage in /v1/loads
and is four times slower, as an engine with a full queue is. With --fault mixed, of the four
one is that queued worker, one is four times slower, and one is wedged: it accepts requests
and never answers, while its health and load endpoints answer. Each ROUTER_CMD (default: this
build's release smg; the reference gateway is "venv/bin/smg launch") is started in turn over
the same workers with the same flags, then driven by closed-loop clients for --secs seconds
(each request a chat completion with its own prompt, a 10 s client timeout). Printed per
router: requests answered, errors (timeouts included), p50 and p99 latency, the share of
requests each worker served, and how many requests reached the wedged worker after the first
5 s (its own count). Every process is stopped on exit, also on Ctrl-C.
"""
import argparse, json, os, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from fleetlib import closed_loop, free_port, label, latencies, run, start, stop, wait_ready


def drive(port, secs, clients, timeout):
    """Rows of (status, seconds, the worker that answered)."""
    return closed_loop(port, secs, clients,
                       lambda n, i: {"model": "sim-model", "messages": [{"role": "user", "content": f"client {n} request {i}"}]},
                       lambda status, text, headers, seconds, i: (status, seconds, headers.get("x-sim-worker", "?")), timeout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=20)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--fault", choices=["none", "queued", "mixed"], default="queued")
    ap.add_argument("routers", nargs="*", default=[os.path.join(ROOT, ".build/release/smg")])
    a = ap.parse_args()
    sim = os.path.join(ROOT, ".build/release/smg-sim-worker")
    names = {"none": ["w0", "w1", "w2", "w3"], "queued": ["w0", "w1", "w2", "queued"], "mixed": ["w0", "slow", "queued", "wedged"]}[a.fault]
    flags = {"queued": ["--ttft-ms", "80", "--reported-waiting", "20", "--reported-token-usage", "0.95"],
             "slow": ["--ttft-ms", "80"], "wedged": ["--ttft-ms", "20", "--hang-rate", "1"]}
    urls = []
    for name in names:
        port = free_port()
        start([sim, "--port", str(port), "--name", name] + flags.get(name, ["--ttft-ms", "20"]))
        urls.append(f"http://127.0.0.1:{port}")
    wedged = urls[names.index("wedged")] if "wedged" in names else None

    def wedged_requests():
        with urllib.request.urlopen(wedged + "/sim/stats", timeout=5) as r:
            return json.load(r)["requests"]
    for u in urls:
        wait_ready(u + "/health")
    print(f"{a.clients} clients, {a.secs} s, fault {a.fault}; workers {', '.join(names)}")
    print(f"{'router':<28} {'answered':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7}  share per worker" + ("; to the wedged one after 5 s" if wedged else ""))
    for cmd in a.routers:
        port, metrics = free_port(), free_port()
        router = start(cmd.split() + ["--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1",
                                      "--prometheus-port", str(metrics), "--worker-urls"] + urls)
        wait_ready(f"http://127.0.0.1:{port}/readiness")
        time.sleep(2)  # the first load polls
        late = []
        if wedged:
            timer = threading.Timer(5, lambda: late.append(wedged_requests()))
            timer.start()
        rows = drive(port, a.secs, a.clients, a.timeout)
        after5 = wedged_requests() - late[0] if late else None
        answered, errors, pct = latencies(rows)
        share = {n: sum(1 for r in rows if r[2] == n) / max(1, len(rows)) for n in names}
        print(f"{label(cmd)[:28]:<28} {answered:>8} {errors:>6} {pct(0.5):>7.0f} {pct(0.99):>7.0f}  "
              + " ".join(f"{n} {share[n]:.1%}" for n in names) + (f"; {after5}" if after5 is not None else ""))
        stop(router)


if __name__ == "__main__":
    run(main)
