#!/usr/bin/env python3
"""What each thread of a running process costs while it waits: CPU (cores, from the scheduler's
own nanosecond accounting in /proc/PID/task/*/schedstat, not from clock ticks) and wake-ups a
second (times it was scheduled), over a window. An idle router's CPU is its wake-ups: this is
how they were counted (docs/benchmarks.md, "Wake-ups").

    cluster/thread-cost.py PID [SECONDS=30]

To see what woke a thread, `strace -f -tt -p PID` for a while and look at which fd each
epoll_wait returned (the timerfd, the mesh's UDP socket, a client connection).
"""
import os
import sys
import time


def snapshot(pid):
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run_ns, _wait_ns, slices = map(int, f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # a thread that ended meanwhile
        threads[tid] = (name, run_ns, slices)
    return threads


def main():
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    pid, secs = sys.argv[1], float(sys.argv[2]) if len(sys.argv) == 3 else 30.0
    before = snapshot(pid)
    time.sleep(secs)
    after = snapshot(pid)
    total = 0.0
    print(f"{'thread':>8} {'name':20} {'core':>8} {'wake-ups/s':>10} {'µs/wake-up':>10}")
    for tid, (name, run_ns, slices) in sorted(after.items()):
        if tid not in before:
            continue
        core = (run_ns - before[tid][1]) / 1e9 / secs
        wakes = (slices - before[tid][2]) / secs
        total += core
        if wakes > 0:
            print(f"{tid:>8} {name:20} {core:8.5f} {wakes:10.1f} {core / wakes * 1e6:10.0f}")
    print(f"{'':>8} {'total':20} {total:8.5f}")


if __name__ == "__main__":
    main()
