#!/usr/bin/env python3
"""Routers side by side over workers that speak HTTP/2: connections per worker and cost.

    cluster/http2-fleet.py [--secs 15] [--clients 64] [--workers 2] [ROUTER_CMD ...]

Starts --workers smg-sim-worker processes on loopback with --http2 (h2c by prior knowledge
beside HTTP/1.1; 200 ms to the first token, 8 tokens at 200 tokens/s, so requests overlap).
Each ROUTER_CMD (default: this build's release smg with and without --upstream-http2; the
reference gateway is "venv/bin/smg launch --upstream-http2") is started in turn over the same
workers and driven by closed-loop clients for --secs seconds, every second request streamed.
Printed per router: requests answered, errors, p50 and p99 latency, the router's CPU time per
request (user + system, from /proc), and the TCP connections open to each worker (the most
and the mean of samples every 100 ms, counted in /proc/net/tcp, so no router's own account is
trusted) with the HTTP/2 streams the workers saw. Every process is stopped on exit, also on
Ctrl-C.
"""
import argparse, json, os, threading, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from fleetlib import closed_loop, free_port, label, latencies, run, start, stop, wait_ready


def established_to(port):
    """Established TCP connections whose server side is 127.0.0.1:port (one line per connection)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            if state == "01" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


def cpu_seconds(pid):
    """User + system CPU of a process and its threads."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(url):
    with urllib.request.urlopen(url + "/sim/stats", timeout=5) as r:
        return json.load(r)


def drive(port, secs, clients):
    """Rows of (status, seconds), every second request streamed; an answer that is not whole is "cut"."""
    def row(status, text, headers, seconds, i):
        whole = b"[DONE]" in text if i % 2 == 0 else b"chat.completion" in text
        return (status if status != 200 or whole else "cut", seconds)
    return closed_loop(port, secs, clients, lambda n, i: {"model": "sim-model", "stream": i % 2 == 0,
                                                          "messages": [{"role": "user", "content": f"client {n} request {i}"}]}, row)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=int, default=15)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    smg = os.path.join(ROOT, ".build/release/smg")
    ap.add_argument("routers", nargs="*", default=[smg, smg + " --upstream-http2"])
    a = ap.parse_args()
    sim = os.path.join(ROOT, ".build/release/smg-sim-worker")
    ports = [free_port() for _ in range(a.workers)]
    for k, port in enumerate(ports):
        start([sim, "--port", str(port), "--name", f"w{k}", "--http2", "--ttft-ms", "200", "--output-tokens", "8",
               "--tokens-per-second", "200"])
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    for u in urls:
        wait_ready(u + "/health")
    print(f"{a.clients} clients, {a.secs} s, {a.workers} workers speaking HTTP/2 and HTTP/1.1")
    print(f"{'router':<36} {'answered':>8} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'CPU µs/req':>10}  connections per worker (max / mean), h2 streams")
    for cmd in a.routers:
        port, metrics = free_port(), free_port()
        router = start(cmd.split() + ["--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1",
                                      "--prometheus-port", str(metrics), "--worker-urls"] + urls + ["--policy", "round_robin"])
        wait_ready(f"http://127.0.0.1:{port}/readiness")
        time.sleep(2)  # registration: the workers are asked for HTTP/2
        streams0 = [stats(u)["http2_streams"] for u in urls]
        samples, done = [[] for _ in ports], threading.Event()

        def sample():
            while not done.wait(0.1):
                for k, p in enumerate(ports):
                    samples[k].append(established_to(p))
        sampler = threading.Thread(target=sample)
        sampler.start()
        cpu0 = cpu_seconds(router.pid)
        rows = drive(port, a.secs, a.clients)
        cpu = cpu_seconds(router.pid) - cpu0
        done.set()
        sampler.join()
        streams = [stats(u)["http2_streams"] - s for u, s in zip(urls, streams0)]
        answered, errors, pct = latencies(rows)
        conns = ", ".join(f"{max(s or [0])} / {sum(s) / max(1, len(s)):.1f}" for s in samples)
        print(f"{label(cmd)[:36]:<36} {answered:>8} {errors:>6} {pct(0.5):>7.0f} {pct(0.99):>7.0f} {cpu / max(1, len(rows)) * 1e6:>10.0f}  "
              f"{conns}; {sum(streams)}")
        stop(router)


if __name__ == "__main__":
    run(main)
