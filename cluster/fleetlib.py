"""What the side-by-side fleet scripts (faulty-fleet.py, http2-fleet.py) share: free loopback
ports, processes started in their own session and all killed on the way out, and waiting for
an HTTP endpoint to answer 200."""
import os, signal, socket, subprocess, time, urllib.request

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
