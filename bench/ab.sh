#!/usr/bin/env bash
# A/B of two ringway builds against nginx: CPU time per proxied request, in
# interleaved rounds (A, nginx, B, A, nginx, B, ...), so drift on a shared
# machine hits all three alike. Prints every round, then the medians of
# total and of user-space CPU per request and the ratios. One worker each,
# the seed's `/` route over four `ringway backend` instances, `wrk -t1`;
# the proxies run on CPU 0, wrk and the backends on CPU 1.
#   bench/ab.sh OLD_BINARY NEW_BINARY [seconds] [rounds]
#   CONNS=1 TARGET=/ HEADER='Connection: close' bench/ab.sh ...
#     (wrk connections, request path, one extra request header)
# Needs: nginx and wrk (apt-get install nginx wrk), python3.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
A_BIN=$(realpath "$1"); B_BIN=$(realpath "$2")
DUR=${3:-4}; ROUNDS=${4:-6}
CONNS=${CONNS:-50}; TARGET=${TARGET:-/}
WRK_ARGS=(-t1 -c"$CONNS"); [ -n "${HEADER:-}" ] && WRK_ARGS+=(-H "$HEADER")
BASE=${BENCH_BASE_PORT:-21000}
WORK=$(mktemp -d /tmp/ringway-ab.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
command -v nginx >/dev/null && command -v wrk >/dev/null || { echo "install nginx and wrk first (apt-get install -y nginx wrk)"; exit 1; }

. "$(dirname "$0")/seed_setup.sh"
start_seed_backends "$A_BIN"
A_PORT=$((BASE+80)); B_PORT=$((BASE+81)); NG_PORT=$((BASE+90))
seed_config "$WORK/a.toml" "$A_PORT"; seed_config "$WORK/b.toml" "$B_PORT"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream allbackend { $(for p in "${ports[@]}"; do echo "server 127.0.0.1:$p;"; done) keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NG_PORT reuseport;
    location / { proxy_pass http://allbackend; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /admin { return 403; }
  }
}
NGINX
taskset -c 0 "$A_BIN" --config "$WORK/a.toml" > "$WORK/a.out" 2>&1 & A_PID=$!; PIDS+=($A_PID)
taskset -c 0 "$B_BIN" --config "$WORK/b.toml" > "$WORK/b.out" 2>&1 & B_PID=$!; PIDS+=($B_PID)
taskset -c 0 nginx -c "$WORK/nginx.conf" -p "$WORK"
for _ in $(seq 100); do
  grep -q listening "$WORK/a.out" && grep -q listening "$WORK/b.out" && [ -f "$WORK/nginx.pid" ] && break
  sleep 0.05
done
NG_PIDS="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"

# utime and stime (clock ticks) summed over the given processes.
ticks() { local u=0 s=0; for p in $1; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u+a)); s=$((s+b)); done; echo "$u $s"; }
HZ=$(getconf CLK_TCK)
run() { # name pids port
  taskset -c 1 wrk "${WRK_ARGS[@]}" -d1s "http://127.0.0.1:$3$TARGET" >/dev/null
  local u0 s0 u1 s1
  read -r u0 s0 < <(ticks "$2")
  local out; out=$(taskset -c 1 wrk "${WRK_ARGS[@]}" -d"${DUR}s" "http://127.0.0.1:$3$TARGET")
  read -r u1 s1 < <(ticks "$2")
  local reqs; reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  awk -v n="$1" -v u=$((u1-u0)) -v s=$((s1-s0)) -v hz="$HZ" -v r="$reqs" \
    'BEGIN { printf "%s %.2f %.2f %d\n", n, (u+s)/hz*1e6/r, u/hz*1e6/r, r }' | tee -a "$WORK/results"
}
echo "wrk ${WRK_ARGS[*]} -d${DUR}s $TARGET; proxies on CPU 0 (1 worker), wrk + backends on CPU 1"
echo "name  cpu-us/req  user-us/req  requests"
for _ in $(seq "$ROUNDS"); do
  run A "$A_PID" "$A_PORT"
  run nginx "$NG_PIDS" "$NG_PORT"
  run B "$B_PID" "$B_PORT"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
med = lambda name, col: statistics.median(float(r[col]) for r in rows if r[0] == name)
cpu = {n: med(n, 1) for n in ("A", "nginx", "B")}
user = {n: med(n, 2) for n in ("A", "nginx", "B")}
print("medians, µs/request: " + ", ".join(f"{n} {cpu[n]:.2f} (user {user[n]:.2f})" for n in cpu))
print(f"B/A {cpu['B'] / cpu['A']:.3f} (user {user['B'] / user['A']:.3f}); "
      f"A/nginx {cpu['A'] / cpu['nginx']:.3f}; B/nginx {cpu['B'] / cpu['nginx']:.3f}")
PY
