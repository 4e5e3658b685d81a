#!/usr/bin/env bash
# One entry point for ringway's benchmarks: ringway vs nginx vs HAProxy.
#
#   bench/run.sh            full run (scenarios a-e, 1 and 2 workers; ~13 min on 2 cores)
#   bench/run.sh --quick    about a minute once built: (a) 1 worker, (c) 4 KiB + Connection: close,
#                           (e) 2000 conns; no oha (the open-loop scenario is full-run only)
#   bench/run.sh --tuning   tuning lab: ringway's [runtime] knobs one at a time -> docs/tuning.md
#   bench/run.sh --tls      TLS listeners (issue 14), ringway vs nginx vs HAProxy (skipped if built
#                           without SSL) over the same plaintext backends: keep-alive (1 and 2 workers),
#                           a new TLS 1.3 connection per request (full handshakes with ECDSA P-256 and
#                           RSA-2048 certificates, resumed ones), 1 GiB download and upload, idle TLS
#                           connections; about 7.5 minutes; rewrites docs/benchmarking.md's TLS block
#   bench/run.sh --tls --quick   the same in about 1.5 minutes (1 worker, 1 round, 256 MiB, 2000 idle)
#   bench/run.sh --tcp      layer 4 (issue 15), ringway vs nginx stream vs HAProxy mode tcp, 1 worker on
#                           CPU 0: 1 GiB through one connection each way (MB/s, proxy CPU s/GiB, RSS growth),
#                           connections/s with a 100-byte exchange each (proxy CPU µs/connection), the same
#                           with a PROXY header to the backend, and ringway's keep-alive HTTP with and without
#                           a PROXY header from the client; 5 rounds, about 4 minutes; rewrites
#                           docs/benchmarking.md's "Layer 4 (issue 15)" block
#   bench/run.sh --tcp --quick   the same in about a minute (1 round, 3 s per row)
#   bench/run.sh --cores    many cores (issue 16), needs 6 cores or more (refuses with a message below
#                           that): for N = 1..max workers (default min(8, cores/2), --max-workers), each
#                           proxy with N workers pinned one per CPU to CPUs 0..N-1 (ringway threads = N,
#                           pin_cpus = true; nginx worker_processes N + worker_cpu_affinity; HAProxy
#                           nbthread N + cpu-map), wrk on half of the CPUs after the max workers' (enough
#                           threads), the four backends on the rest; keep-alive GET /, 50 connections per
#                           worker, 2 rounds of 5 s; req/s, CPU µs/request, per-worker efficiency
#                           ((req/s at N / N) / (req/s at 1)) and ratios to nginx and HAProxy per N; about
#                           40 s per N; rewrites docs/benchmarking.md's "Many cores (issue 16)" block
#   bench/run.sh --cores-dry-run 16   prints the layout --cores would use on 16 cores (any machine,
#                           nothing installed, built or started)
#   bench/run.sh --help     all options (base port, proxies, workers, rounds)
#
# --tls makes its certificates with `openssl req` in the run's temporary directory.
# --tcp drives the load with bench/bigbody's second binary, l4bench (echo, PROXY-reading echo,
# sendfile/MSG_TRUNC stream source and sink, and the clients), and needs nginx's stream
# module (Debian: libnginx-mod-stream, installed here when missing).
#
# On a fresh Debian machine it installs what is missing (nginx, haproxy, wrk,
# curl, openssl, perf via apt-get; oha via cargo install, full non-TLS runs only), builds ringway and the
# bench backend (bench/bigbody) in release, then runs bench/harness.py.
# Needs root (apt-get, clear_refs, perf -a) and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '[bench] %s\n' "$*" >&2; }
for arg in "$@"; do
  case "$arg" in
    # a layout on paper: needs python3 only
    --cores-dry-run|--cores-dry-run=*) exec env PYTHONUTF8=1 python3 bench/harness.py "$@";;
  esac
done
have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk curl:curl openssl:openssl taskset:util-linux python3:python3 ss:iproute2; do
  have "${pair%%:*}" || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}"
  # the distribution's nginx/haproxy services are not used; keep their ports free
  for svc in nginx haproxy; do $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
fi
if ! have perf; then
  # optional: upstream connects for nginx/HAProxy are counted with perf
  log "installing linux-perf (optional)"
  { $SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y linux-perf; } >/dev/null 2>&1 \
    || log "perf unavailable: upstream connects/request will be measured for ringway only"
fi
have cargo || { log "cargo missing: install Rust (https://rustup.rs) first"; exit 1; }
quick=0
tcp=0
for arg in "$@"; do case "$arg" in --quick|--tls|--tuning|--cores) quick=1;; --tcp) quick=1; tcp=1;; esac; done
if [ "$tcp" = 1 ] && ! nginx -V 2>&1 | grep -q -- '--with-stream\( \|$\)' \
   && ! ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1; then
  # Debian builds nginx's stream module as a dynamic module of its own package.
  log "installing libnginx-mod-stream (nginx's stream module, for --tcp)"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y libnginx-mod-stream
  $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true
fi
if [ "$quick" = 0 ] && ! have oha; then
  # Only the full run's open-loop scenario (b) uses oha.
  log "installing oha for the open-loop scenario: cargo install oha --locked (compiles; about 6 minutes on 2 cores)"
  cargo install oha --locked
fi

log "building ringway (release; about 90 s on 2 cores the first time)"
cargo build --release --quiet
log "building the bench backend bench/bigbody and its l4bench (release; about 30 s the first time)"
cargo build --release --quiet --manifest-path bench/bigbody/Cargo.toml --target-dir target/bench-bigbody

exec env PYTHONUTF8=1 python3 bench/harness.py "$@"
