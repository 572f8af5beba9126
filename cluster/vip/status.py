"""`lab status`: reads "holder=" and "router=NAME ADDRESS PID" lines on stdin and prints JSON
with each router's /ha/status summary (fetched through the bridge, 1 s timeout)."""
import json
import sys
import urllib.request

port = sys.argv[1]
holder = None
routers = []
for line in sys.stdin:
    line = line.strip()
    if line.startswith("holder="):
        holder = line.split("=", 1)[1] or None
    elif line.startswith("router="):
        name, address, pid = line.split("=", 1)[1].split()
        ha = None
        try:
            with urllib.request.urlopen(f"http://{address}:{port}/ha/status", timeout=1) as r:
                s = json.load(r)
            members = s.get("members", [])
            ha = {
                "name": s.get("name"), "alive": s.get("alive"), "advertised": s.get("address"),
                "sealed": s.get("sealed"),
                "members": {m["name"]: m["status"] for m in members},
                "sessions": (s.get("stores") or {}).get("sessions", {}).get("entries"),
            }
        except Exception as error:  # a stopped or cut-off router
            ha = {"error": str(error)}
        routers.append({"name": name, "namespace": f"smg-{name}", "address": address,
                        "pid": int(pid) or None, "ha": ha})
print(json.dumps({"vip_holder": holder, "vip": "198.18.0.100", "routers": routers}, indent=2))
