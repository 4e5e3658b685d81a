#!/usr/bin/env bash
# CPU time per proxied request: ringway vs nginx, one worker each, the seed's
# `/` route over four demo backends, `wrk -t1 -c50`. The proxies run on CPU 0;
# wrk and the backends on CPU 1, so the proxy's core is its own.
#   bench/cpu-vs-nginx.sh [seconds] [rounds]
# Needs: nginx and wrk (apt-get install nginx wrk), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
ROUNDS=${2:-3}
BASE=${BENCH_BASE_PORT:-21000}
BIN=target/release/ringway
WORK=$(mktemp -d /tmp/ringway-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "install nginx and wrk first (apt-get install -y nginx wrk)"; exit 1; }
[ -x "$BIN" ] || cargo build --release

ports=($((BASE+1)) $((BASE+2)) $((BASE+3)) $((BASE+4)))
for p in "${ports[@]}"; do
  taskset -c 1 "$BIN" backend --port "$p" >/dev/null 2>&1 & PIDS+=($!)
done
RW_PORT=$((BASE+80)); NG_PORT=$((BASE+90))
servers=$(printf '"127.0.0.1:%s",' "${ports[@]}")
cat > "$WORK/ringway.toml" <<TOML
[runtime]
threads = 1
pin_cpus = false
[upstreams.allbackend]
servers = [${servers%,}]
[[listeners]]
name = "public"
bind = "127.0.0.1:$RW_PORT"
routes = [ { prefix = "/", upstream = "allbackend" }, { prefix = "/admin", status = 403 } ]
TOML
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  # nginx counts keepalive per upstream block (ringway per server), and its
  # default keepalive_requests 1000 would force reconnects: match ringway.
  keepalive_requests 1000000;
  upstream allbackend { $(for p in "${ports[@]}"; do echo "server 127.0.0.1:$p;"; done) keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_PORT reuseport;
    location / { proxy_pass http://allbackend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /admin { return 403; }
  }
}
NGINX
taskset -c 0 "$BIN" --config "$WORK/ringway.toml" > "$WORK/rw.out" 2>&1 & RW_PID=$!; PIDS+=($RW_PID)
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
for _ in $(seq 100); do grep -q listening "$WORK/rw.out" && [ -f "$WORK/nginx.pid" ] && break; sleep 0.05; done
NG_PIDS="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"

ticks() { local t=0; for p in $1; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
HZ=$(getconf CLK_TCK)
run() { # name pids port
  curl -sf "http://127.0.0.1:$3/" >/dev/null
  taskset -c 1 wrk -t1 -c50 -d1s "http://127.0.0.1:$3/" >/dev/null   # warm pools
  local before; before=$(ticks "$2")
  local out; out=$(taskset -c 1 wrk -t1 -c50 -d"${DUR}s" --latency "http://127.0.0.1:$3/")
  local after; after=$(ticks "$2")
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local p99; p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local errs; errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  local us; us=$(awk -v t=$((after-before)) -v hz="$HZ" -v r="$reqs" 'BEGIN { printf "%.2f", t/hz*1e6/r }')
  printf "%-8s %10s req/s  %8s µs CPU/req  p99 %-8s %s\n" "$1" "$rps" "$us" "$p99" "$errs"
  echo "$1 $us $rps" >> "$WORK/results"
}
echo "wrk -t1 -c50 -d${DUR}s, proxy on CPU 0 (1 worker), wrk + 4 backends on CPU 1"
for r in $(seq "$ROUNDS"); do
  run ringway "$RW_PID" "$RW_PORT"
  run nginx "$NG_PIDS" "$NG_PORT"
done
awk '{n[$1]++; cpu[$1]+=$2; rps[$1]+=$3} END {
  for (k in n) printf "mean %-8s %8.2f µs CPU/req  %10.0f req/s\n", k, cpu[k]/n[k], rps[k]/n[k];
  printf "ratio ringway/nginx CPU per request: %.2f\n", (cpu["ringway"]/n["ringway"])/(cpu["nginx"]/n["nginx"]) }' "$WORK/results"
