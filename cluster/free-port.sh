# free_port: a loopback port free for TCP and UDP (the mesh uses both), picked below the
# kernel's ephemeral range (32768-60999) so that no `--port 0` bind of a process started
# meanwhile can take it. The Swift tests pick theirs the same way (Tests/TestSupport/FreePort.swift).
free_port() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    port = random.randint(20000, 31999)
    tcp, udp = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind(("127.0.0.1", port)); udp.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        tcp.close(); udp.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
PY
}
