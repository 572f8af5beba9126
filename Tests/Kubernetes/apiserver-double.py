#!/usr/bin/env python3
"""A Kubernetes API server double: pods only, written from the API conventions
(https://kubernetes.io/docs/reference/using-api/api-concepts/), for testing discovery where no
cluster is reachable. Checked against the official `kubernetes` Python client
(check-apiserver-double.py), so it follows the API rather than what smg happens to do.

Served, as the API server serves them:
  GET /api/v1/pods and /api/v1/namespaces/{ns}/pods
    labelSelector   equality (k=v, k==v, k!=v), existence (k, !k) and set (k in (a,b), k notin (a,b)) terms
    limit, continue paging over a snapshot; a continue token older than the last compaction is 410 Gone
    watch=1|true    a chunked stream of {"type", "object"} lines: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
    resourceVersion watch: unset or "0" starts with an ADDED per existing pod; a version older than
                    the last compaction gets an ERROR event with a Status of code 410 and the stream ends
    allowWatchBookmarks   a BOOKMARK with the current version when the stream is idle (every --bookmark-secs)
    timeoutSeconds  the stream ends cleanly after it
  Authorization: Bearer TOKEN, checked against --token-file (read at every request): 401 Status otherwise.
  A pod whose labels stop matching a watch's selector is DELETED on that watch, one that starts is ADDED.

Controls for the test (no authentication), under /_double/:
  POST   /_double/pods                      a Pod (JSON): created or replaced (ADDED / MODIFIED)
  POST   /_double/pods/{ns}/{name}/terminate  sets metadata.deletionTimestamp (MODIFIED)
  DELETE /_double/pods/{ns}/{name}          removes it (DELETED)
  POST   /_double/compact                   forgets every event so far: older versions get 410
  POST   /_double/break                     cuts every open watch without ending its stream
  POST   /_double/churn                     {"pods": N, "rate": R, "seconds": S, "namespace", "labels"}:
                                            N pods created, then R changes a second for S seconds
  GET    /_double/stats                     counts of lists, watches and refusals, open watches, tokens seen

Prints "listening PORT control PORT" once it serves (the second port: the same on plain HTTP, for
tests to drive it without TLS); runs until SIGTERM.
"""
import argparse
import base64
import copy
import json
import queue
import random
import re
import signal
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Cluster:
    def __init__(self):
        self.lock = threading.Lock()
        self.rv = 100
        self.pods = {}          # (ns, name) -> pod
        self.events = []        # (rv, type, old, new): the history a watch may resume from
        self.compacted = 0      # versions up to this one are forgotten
        self.watchers = []
        self.snapshots = {}     # continue token -> (rv, remaining items)
        self.stats = {"lists": 0, "watches": 0, "unauthorized": 0, "expired": 0, "tokens": {}}

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def publish(self, kind, old, new):
        rv = int((new or old)["metadata"]["resourceVersion"])
        self.events.append((rv, kind, old, new))
        if len(self.events) > 100000:
            self.compacted = self.events[50000][0]
            self.events = self.events[50000:]
        for w in list(self.watchers):
            w.offer(kind, old, new)

    def upsert(self, pod):
        with self.lock:
            meta = pod.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (meta["namespace"], meta["name"])
            old = self.pods.get(key)
            meta["uid"] = old["metadata"]["uid"] if old else meta.get("uid") or str(uuid.uuid4())
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta["resourceVersion"] = self.next_rv()
            pod["kind"], pod["apiVersion"] = "Pod", "v1"
            pod.setdefault("spec", {"containers": [{"name": "worker", "image": "sglang"}]})
            pod.setdefault("status", {"phase": "Pending"})
            self.pods[key] = pod
            self.publish("MODIFIED" if old else "ADDED", old, pod)
            return pod

    def terminate(self, ns, name):
        with self.lock:
            old = self.pods.get((ns, name))
            if old is None:
                return None
            pod = copy.deepcopy(old)
            pod["metadata"]["deletionTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            pod["metadata"]["resourceVersion"] = self.next_rv()
            self.pods[(ns, name)] = pod
            self.publish("MODIFIED", old, pod)
            return pod

    def delete(self, ns, name):
        with self.lock:
            old = self.pods.pop((ns, name), None)
            if old is None:
                return None
            pod = copy.deepcopy(old)
            pod["metadata"]["resourceVersion"] = self.next_rv()
            self.publish("DELETED", old, pod)
            return pod

    def compact(self):
        with self.lock:
            self.compacted = self.rv
            self.events = []
            self.snapshots = {}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Selector:
    """A label selector: comma-separated terms, commas inside (...) belonging to a set."""
    TERM = re.compile(r"^\s*(!?)([A-Za-z0-9][-A-Za-z0-9_./]*)\s*(?:(==|=|!=)\s*([-A-Za-z0-9_.]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")

    def __init__(self, text):
        self.terms = []
        depth, start = 0, 0
        parts = []
        for i, c in enumerate(text or ""):
            depth += c == "("
            depth -= c == ")"
            if c == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        if text:
            parts.append(text[start:])
        for part in parts:
            m = self.TERM.match(part)
            if not m or (m.group(1) and (m.group(3) or m.group(5))):
                raise ValueError("unable to parse requirement: %r" % part)
            neg, key, op, value, setop, values = m.groups()
            if op:
                self.terms.append((key, "!=" if op == "!=" else "=", value))
            elif setop:
                self.terms.append((key, setop, {v.strip() for v in values.split(",") if v.strip()}))
            else:
                self.terms.append((key, "!exists" if neg else "exists", None))

    def matches(self, labels):
        labels = labels or {}
        for key, op, value in self.terms:
            have = labels.get(key)
            if op == "=" and have != value:
                return False
            if op == "!=" and have == value:
                return False
            if op == "in" and have not in value:
                return False
            if op == "notin" and have in value:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!exists" and key in labels:
                return False
        return True


class Watcher:
    def __init__(self, namespace, selector):
        self.namespace, self.selector = namespace, selector
        self.queue = queue.Queue()
        self.broken = False

    def visible(self, pod):
        return pod is not None and (self.namespace is None or pod["metadata"]["namespace"] == self.namespace) \
            and self.selector.matches(pod["metadata"].get("labels"))

    def offer(self, kind, old, new):
        was, now = self.visible(old), self.visible(new)
        if kind == "DELETED":
            if was:
                self.queue.put(("DELETED", new))
        elif was and now:
            self.queue.put(("MODIFIED", new))
        elif now:
            self.queue.put(("ADDED", new))
        elif was:
            self.queue.put(("DELETED", new))


CLUSTER = Cluster()
ARGS = None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    # -- controls --------------------------------------------------------------------------

    def control(self, method, parts):
        if method == "POST" and parts == ["pods"]:
            return self.send_json(201, CLUSTER.upsert(self.body()))
        if method == "POST" and len(parts) == 4 and parts[0] == "pods" and parts[3] == "terminate":
            pod = CLUSTER.terminate(parts[1], parts[2])
            return self.send_json(200 if pod else 404, pod or {})
        if method == "DELETE" and len(parts) == 3 and parts[0] == "pods":
            pod = CLUSTER.delete(parts[1], parts[2])
            return self.send_json(200 if pod else 404, pod or {})
        if method == "POST" and parts == ["compact"]:
            CLUSTER.compact()
            return self.send_json(200, {"compacted": CLUSTER.compacted})
        if method == "POST" and parts == ["break"]:
            with CLUSTER.lock:
                broken = list(CLUSTER.watchers)
                for w in broken:
                    w.broken = True
            # Answered once they are cut: a change made after this is on no broken stream.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with CLUSTER.lock:
                    if not any(w in CLUSTER.watchers for w in broken):
                        break
                time.sleep(0.01)
            return self.send_json(200, {"broken": len(broken)})
        if method == "POST" and parts == ["churn"]:
            spec = self.body()
            threading.Thread(target=churn, args=(spec,), daemon=True).start()
            return self.send_json(202, {})
        if method == "GET" and parts == ["stats"]:
            with CLUSTER.lock:
                out = dict(CLUSTER.stats, open_watches=len(CLUSTER.watchers), resource_version=str(CLUSTER.rv), pods=len(CLUSTER.pods))
                out["tokens"] = dict(CLUSTER.stats["tokens"])
            return self.send_json(200, out)
        return self.send_json(404, {"error": "no such control"})

    # -- the API ---------------------------------------------------------------------------

    def authorized(self):
        try:
            with open(ARGS.token_file) as f:
                tokens = {line.strip() for line in f if line.strip()}
        except OSError:
            tokens = set()
        header = self.headers.get("Authorization") or ""
        token = header[7:] if header.startswith("Bearer ") else None
        with CLUSTER.lock:
            if token is not None:
                CLUSTER.stats["tokens"][token] = CLUSTER.stats["tokens"].get(token, 0) + 1
            if token not in tokens:
                CLUSTER.stats["unauthorized"] += 1
                return False
        return True

    def do_DELETE(self):
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:1] == ["_double"]:
            return self.control("DELETE", parts[1:])
        self.send_json(405, status(405, "MethodNotAllowed", "the double serves GET only"))

    def do_POST(self):
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if parts[:1] == ["_double"]:
            return self.control("POST", parts[1:])
        self.send_json(405, status(405, "MethodNotAllowed", "the double serves GET only"))

    def do_GET(self):
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        if parts[:1] == ["_double"]:
            return self.control("GET", parts[1:])
        if parts == ["api", "v1", "pods"]:
            namespace = None
        elif len(parts) == 5 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            namespace = parts[3]
        else:
            return self.send_json(404, status(404, "NotFound", "the server could not find the requested resource"))
        if not self.authorized():
            return self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            selector = Selector(q.get("labelSelector", ""))
        except ValueError as e:
            return self.send_json(400, status(400, "BadRequest", str(e)))
        if q.get("watch") in ("1", "true"):
            return self.watch(namespace, selector, q)
        return self.list(namespace, selector, q)

    def list(self, namespace, selector, q):
        limit = int(q.get("limit") or 0)
        with CLUSTER.lock:
            CLUSTER.stats["lists"] += 1
            token = q.get("continue")
            if token:
                snap = CLUSTER.snapshots.pop(token, None)
                if snap is None:
                    CLUSTER.stats["expired"] += 1
                    return self.send_json(410, status(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."))
                rv, items = snap
            else:
                rv = str(CLUSTER.rv)
                items = [copy.deepcopy(p) for _, p in sorted(CLUSTER.pods.items())
                         if (namespace is None or p["metadata"]["namespace"] == namespace) and selector.matches(p["metadata"].get("labels"))]
            meta = {"resourceVersion": rv}
            if limit and len(items) > limit:
                token = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
                CLUSTER.snapshots[token] = (rv, items[limit:])
                meta["continue"] = token
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
        for item in items:
            item.pop("kind", None)
            item.pop("apiVersion", None)
        self.send_json(200, {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items})

    def watch(self, namespace, selector, q):
        watcher = Watcher(namespace, selector)
        since = q.get("resourceVersion") or "0"
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        deadline = time.monotonic() + int(q.get("timeoutSeconds") or 1800)
        first = []
        with CLUSTER.lock:
            CLUSTER.stats["watches"] += 1
            if since == "0":
                first = [("ADDED", copy.deepcopy(p)) for _, p in sorted(CLUSTER.pods.items()) if watcher.visible(p)]
            elif not since.isdigit() or int(since) < CLUSTER.compacted:
                CLUSTER.stats["expired"] += 1
                first = [("ERROR", status(410, "Expired", "too old resource version: %s (%d)" % (since, CLUSTER.compacted)))]
            else:
                for rv, kind, old, new in CLUSTER.events:
                    if rv > int(since):
                        watcher.offer(kind, old, new)
            if first[:1] and first[0][0] == "ERROR":
                watcher = None
            else:
                CLUSTER.watchers.append(watcher)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for kind, obj in first:
                self.chunk({"type": kind, "object": obj})
            if watcher is None:
                return self.end_chunks()
            last_write = time.monotonic()
            while time.monotonic() < deadline:
                if watcher.broken:
                    self.connection.shutdown(2)
                    self.close_connection = True
                    return
                try:
                    kind, obj = watcher.queue.get(timeout=0.05)
                    if watcher.broken:
                        continue
                    self.chunk({"type": kind, "object": obj})
                    last_write = time.monotonic()
                except queue.Empty:
                    if bookmarks and time.monotonic() - last_write >= ARGS.bookmark_secs:
                        with CLUSTER.lock:
                            rv = str(CLUSTER.rv) if watcher.queue.empty() else None
                        if rv:
                            self.chunk({"type": "BOOKMARK", "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {
                                "resourceVersion": rv, "annotations": {"k8s.io/initial-events-end": "true"}}}})
                        last_write = time.monotonic()
            self.end_chunks()
        except OSError:
            self.close_connection = True
        finally:
            with CLUSTER.lock:
                if watcher in CLUSTER.watchers:
                    CLUSTER.watchers.remove(watcher)

    def chunk(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def churn(spec):
    """N pods, then `rate` changes a second: a pod flips Ready, is deleted, or comes back. Their
    addresses are on loopback (127.100.0.0/9): a router that discovers them sends nothing off the
    machine."""
    ns, labels = spec.get("namespace", "default"), spec.get("labels", {"app": "churn"})
    n, rate, seconds = spec.get("pods", 1000), spec.get("rate", 100), spec.get("seconds", 10)
    rng = random.Random(spec.get("seed", 1))

    def pod(i, ready):
        return {"metadata": {"name": "churn-%d" % i, "namespace": ns, "labels": dict(labels)},
                "status": {"phase": "Running", "podIP": "127.%d.%d.%d" % (100 + (i >> 16 & 127), i >> 8 & 255, i & 255),
                           "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    ready = {}
    for i in range(n):
        CLUSTER.upsert(pod(i, True))
        ready[i] = True
    end = time.monotonic() + seconds
    step = 1.0 / rate
    nxt = time.monotonic()
    while time.monotonic() < end:
        i = rng.randrange(n)
        roll = rng.random()
        if i not in ready:
            CLUSTER.upsert(pod(i, True))
            ready[i] = True
        elif roll < 0.2:
            CLUSTER.delete(ns, "churn-%d" % i)
            del ready[i]
        else:
            ready[i] = not ready[i]
            CLUSTER.upsert(pod(i, ready[i]))
        nxt += step
        time.sleep(max(0, nxt - time.monotonic()))


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--token-file", required=True)
    p.add_argument("--bookmark-secs", type=float, default=1.0)
    ARGS = p.parse_args()
    server = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    server.daemon_threads = True
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The controls also on plain HTTP, so a test drives the double without a TLS client.
    control = ThreadingHTTPServer((ARGS.host, 0), Handler)
    control.daemon_threads = True
    threading.Thread(target=control.serve_forever, daemon=True).start()
    print("listening %d control %d" % (server.server_address[1], control.server_address[1]), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
