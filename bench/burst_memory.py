#!/usr/bin/env python3
"""RSS of a ringway process before, during and after a burst of new
connections (issue 16, item 5). Python stdlib only.

    bench/burst_memory.py BINARY [--conns 1000] [--workers 2]

A slow backend (answers after 500 ms) holds every request of the burst in
flight at once, so the proxy needs a connection buffer per side for each;
then every client closes. Prints RSS (KiB) at: start (after a few warm-up
requests), peak during the burst, and 1, 3 and 6 seconds after the last
connection closed.
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Slow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request(port, path):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 4096
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    bport = backend.server_address[1]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tempfile.mkdtemp(prefix="ringway-burst-")
    cfg = os.path.join(work, "ringway.toml")
    with open(cfg, "w") as f:
        f.write(f"""[runtime]
threads = {args.workers}
[timeouts]
client_idle = "60s"
[upstreams.b]
servers = ["127.0.0.1:{bport}"]
keepalive = 64
[[listeners]]
name = "p"
bind = "127.0.0.1:{port}"
routes = [ {{ prefix = "/", upstream = "b" }} ]
""")
    proxy = subprocess.Popen([args.binary, "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("proxy did not start")
                time.sleep(0.05)
        for _ in range(20):
            s = request(port, "/warm")
            s.recv(4096)
            s.close()
        time.sleep(1.5)
        start = rss_kib(proxy.pid)
        socks = []
        for i in range(args.conns):
            socks.append(request(port, f"/slow{i}"))
        peak = rss_kib(proxy.pid)
        for s in socks:
            s.settimeout(15)
            s.recv(4096)
            peak = max(peak, rss_kib(proxy.pid))
        for s in socks:
            s.close()
        closed = time.time()
        after = {}
        for at in (1, 3, 6):
            time.sleep(max(0, closed + at - time.time()))
            after[at] = rss_kib(proxy.pid)
        print(f"binary={args.binary} workers={args.workers} conns={args.conns}")
        print(f"rss_kib start={start} peak={peak} after_1s={after[1]} after_3s={after[3]} after_6s={after[6]}")
        print(f"growth_kib peak={peak - start} after_6s={after[6] - start}")
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)
        backend.shutdown()


if __name__ == "__main__":
    main()
