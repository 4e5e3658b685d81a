#!/usr/bin/env python3
"""RSS cost of idle keep-alive client connections.

Opens N connections to a proxy, sends one GET on each (so every connection
has been through a full request and now idles in keep-alive), then reads
the proxy's RSS (all its processes) and prints the growth per connection.
With --tls each connection first completes a TLS handshake (the default
OpenSSL client: TLS 1.3, X25519; no certificate check, no session reuse).

    bench/idle_memory.py --port 8080 --pids 1234[,5678] [--conns 10000] [--tls]
"""
import argparse
import resource
import socket
import ssl
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose RSS is summed")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--tls", action="store_true", help="a TLS handshake on every connection first")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between the last response and the RSS reading")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.conns + 1024), hard))

    request = f"GET {args.path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    def connect():
        s = socket.create_connection((args.host, args.port))
        return ctx.wrap_socket(s, server_hostname="localhost") if ctx else s

    # Warm up: connections through a full request each, so pools and
    # buffers that exist once per worker are counted in the baseline. The
    # kernel spreads connections over the workers' sockets by a hash, so
    # one connection warms one worker; 32 miss one of 2 workers with
    # probability 2^-31 (of 8 workers, about 1 %).
    for _ in range(32):
        w = connect()
        w.sendall(request)
        w.recv(65536)
        w.close()
    time.sleep(0.5)
    before = rss_kib(pids)
    socks = []
    for i in range(args.conns):
        s = connect()
        s.sendall(request)
        socks.append(s)
    got = 0
    for s in socks:
        s.settimeout(10)
        data = s.recv(65536)
        if data.startswith(b"HTTP/1.1 200"):
            got += 1
    time.sleep(args.settle)
    after = rss_kib(pids)
    per = (after - before) * 1024 / args.conns
    print(f"conns={args.conns} ok={got} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={per:.0f}")
    for s in socks:
        s.close()
    return 0 if got == args.conns else 1


if __name__ == "__main__":
    sys.exit(main())
