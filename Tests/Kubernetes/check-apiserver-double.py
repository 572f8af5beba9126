#!/usr/bin/env python3
"""Checks the API server double (apiserver-double.py) with the official Kubernetes Python client:
its lists, label selectors, paging, watches (events, selector transitions, bookmarks, a start
from version 0), 410 on a compacted version and on an expired continue token, and 401 on a wrong
token all read as the client reads a real API server. Exit 0 and "ok" when every check holds.

    check-apiserver-double.py https://127.0.0.1:PORT CA_FILE TOKEN
"""
import json
import ssl
import sys
import threading
import time
import urllib.request

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

server, ca, token = sys.argv[1], sys.argv[2], sys.argv[3]


def api(tok):
    cfg = client.Configuration()
    cfg.host = server
    cfg.ssl_ca_cert = ca
    cfg.api_key = {"authorization": tok}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.CoreV1Api(client.ApiClient(cfg))


CTX = ssl.create_default_context(cafile=ca)


def ctl(method, path, body=None):
    req = urllib.request.Request(server + "/_double/" + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=CTX) as r:
        return json.loads(r.read() or b"null")


def pod(ns, name, labels, ready=True, ip="10.0.0.1"):
    return {"metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": {"sglang.ai/bootstrap-port": "8998"}},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def names(items):
    return sorted(p.metadata.name for p in items)


def expect_status(code, call):
    try:
        call()
    except ApiException as e:
        expect(e.status == code, "expected %d, got %s" % (code, e.status))
        return
    raise AssertionError("expected an ApiException %d" % code)


v1 = api(token)
ctl("POST", "pods", pod("llm", "a", {"app": "w"}))
ctl("POST", "pods", pod("llm", "b", {"app": "w", "tier": "x"}, ready=False, ip="10.0.0.2"))
ctl("POST", "pods", pod("other", "c", {"app": "w"}, ip="10.0.0.3"))
ctl("POST", "pods", pod("llm", "d", {"app": "z"}, ip="10.0.0.4"))

# Lists: typed pods, namespaces, selectors of every kind.
listed = v1.list_namespaced_pod("llm", label_selector="app=w")
expect(names(listed.items) == ["a", "b"], "namespaced list: %s" % names(listed.items))
a = [p for p in listed.items if p.metadata.name == "a"][0]
expect(a.status.pod_ip == "10.0.0.1" and a.status.phase == "Running", "pod status read")
expect([(c.type, c.status) for c in a.status.conditions] == [("Ready", "True")], "conditions read")
expect(a.metadata.annotations["sglang.ai/bootstrap-port"] == "8998" and a.metadata.uid, "metadata read")
expect(listed.metadata.resource_version.isdigit(), "list resourceVersion")
expect(names(v1.list_pod_for_all_namespaces(label_selector="app=w").items) == ["a", "b", "c"], "all namespaces")
expect(names(v1.list_namespaced_pod("llm", label_selector="app in (w,z),tier!=x").items) == ["a", "d"], "set and inequality")
expect(names(v1.list_namespaced_pod("llm", label_selector="tier").items) == ["b"], "existence")
expect(names(v1.list_namespaced_pod("llm", label_selector="!tier").items) == ["a", "d"], "non-existence")
expect_status(400, lambda: v1.list_namespaced_pod("llm", label_selector="app in (w"))

# Paging.
page = v1.list_pod_for_all_namespaces(label_selector="app=w", limit=2)
expect(len(page.items) == 2 and page.metadata._continue, "first page")
rest = v1.list_pod_for_all_namespaces(label_selector="app=w", limit=2, _continue=page.metadata._continue)
expect(len(rest.items) == 1 and not rest.metadata._continue, "last page")
expect(names(page.items + rest.items) == ["a", "b", "c"], "pages cover the list")

# A watch from the list's version: changes in order, a pod leaving the selector is DELETED,
# bookmarks when idle.
seen = []


def follow(rv, seconds):
    for e in watch.Watch().stream(v1.list_namespaced_pod, "llm", label_selector="app=w", resource_version=rv,
                                  allow_watch_bookmarks=True, timeout_seconds=seconds):
        if e["type"] == "BOOKMARK":
            seen.append(("BOOKMARK", e["raw_object"]["metadata"]["resourceVersion"]))
        else:
            seen.append((e["type"], e["object"].metadata.name, e["object"].metadata.deletion_timestamp is not None,
                         e["object"].metadata.resource_version))


t = threading.Thread(target=follow, args=(listed.metadata.resource_version, 4))
t.start()
time.sleep(0.5)
ctl("POST", "pods", pod("llm", "a", {"app": "w"}, ready=False))
ctl("POST", "pods", pod("llm", "b", {"app": "z"}, ip="10.0.0.2"))
ctl("POST", "pods/llm/a/terminate")
ctl("DELETE", "pods/llm/a")
ctl("POST", "pods", pod("llm", "e", {"app": "w"}, ip="10.0.0.5"))
t.join(10)
expect(not t.is_alive(), "the watch ends at its timeoutSeconds")
changes = [s[:3] for s in seen if s[0] != "BOOKMARK"]
expect(changes == [("MODIFIED", "a", False), ("DELETED", "b", False), ("MODIFIED", "a", True), ("DELETED", "a", True), ("ADDED", "e", False)],
       "watch events: %s" % changes)
versions = [int(s[3]) for s in seen if s[0] != "BOOKMARK"]
expect(versions == sorted(versions), "versions grow")
bookmarks = [s for s in seen if s[0] == "BOOKMARK"]
expect(bookmarks and int(bookmarks[-1][1]) >= versions[-1], "bookmarks when idle: %s" % seen)

# A watch with no version starts with the pods there are.
seen.clear()
for e in watch.Watch().stream(v1.list_namespaced_pod, "llm", label_selector="app=w", timeout_seconds=1):
    seen.append((e["type"], e["object"].metadata.name))
expect(seen == [("ADDED", "e")], "a watch from the start: %s" % seen)

# 410 Gone: a compacted version on a watch (an ERROR event), an expired continue token on a list.
old = listed.metadata.resource_version
page = v1.list_pod_for_all_namespaces(label_selector="app=w", limit=1)
ctl("POST", "compact")
expect_status(410, lambda: list(watch.Watch().stream(v1.list_namespaced_pod, "llm", resource_version=old, timeout_seconds=2)))
expect_status(410, lambda: v1.list_pod_for_all_namespaces(label_selector="app=w", limit=1, _continue=page.metadata._continue))

# A wrong token.
expect_status(401, lambda: api("wrong").list_namespaced_pod("llm"))

# A broken watch ends the client's stream.
ended = threading.Event()


def broken():
    try:
        for _ in watch.Watch().stream(v1.list_namespaced_pod, "llm", resource_version=str(ctl("GET", "stats")["resource_version"]), timeout_seconds=30):
            pass
    except Exception:
        pass
    ended.set()


threading.Thread(target=broken, daemon=True).start()
time.sleep(0.5)
expect(ctl("POST", "break")["broken"] >= 1, "an open watch to break")
expect(ended.wait(5), "a broken watch ends the stream")
print("ok")
