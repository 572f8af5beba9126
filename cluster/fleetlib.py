"""What the side-by-side fleet scripts (faulty-fleet.py, http2-fleet.py) share: free loopback
ports, processes started in their own session and all killed on the way out, waiting for an
HTTP endpoint to answer 200, and closed-loop clients."""
import json, os, signal, socket, subprocess, threading, time, urllib.error, urllib.request

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    return p


def stop(p):
    """Kills one process started here (and whatever it started)."""
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    procs.remove(p)


def stop_all(*_):
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    procs.clear()


def wait_ready(url, secs=30):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"not ready: {url}")


def closed_loop(port, secs, clients, body, row, timeout=10):
    """`clients` threads, each posting chat completions to the router on `port`, one after
    another, for `secs` seconds. `body(client, i)` is the i-th request's JSON object;
    `row(status, text, headers, seconds, i)` what is kept of its answer (status "timeout" when
    none came). Returns the rows."""
    results, lock, stop_at = [], threading.Lock(), time.time() + secs

    def client(n):
        i = 0
        while time.time() < stop_at:
            i += 1
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", json.dumps(body(n, i)).encode(),
                                         {"content-type": "application/json"})
            t = time.time()
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    kept = row(r.status, r.read(), r.headers, time.time() - t, i)
            except urllib.error.HTTPError as e:
                kept = row(e.code, b"", e.headers, time.time() - t, i)
            except Exception:
                kept = row("timeout", b"", {}, time.time() - t, i)
            with lock:
                results.append(kept)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def label(cmd):
    """A router command as a table row names it: the program's name and its flags."""
    words = cmd.split()
    return " ".join([os.path.basename(words[0])] + words[1:])


def latencies(rows):
    """(answered, errors, pct) of rows whose first field is the status and second the seconds:
    pct(q) is the q-quantile of the answered ones, in ms."""
    ok = sorted(r[1] for r in rows if r[0] == 200)
    return len(ok), len(rows) - len(ok), lambda q: ok[min(len(ok) - 1, int(q * len(ok)))] * 1000 if ok else float("nan")


def run(main):
    """Runs a script's main with every process it started killed on the way out, also on SIGTERM."""
    signal.signal(signal.SIGTERM, stop_all)
    try:
        main()
    finally:
        stop_all()
