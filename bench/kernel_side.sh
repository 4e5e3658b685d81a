#!/usr/bin/env bash
# The kernel side of a proxied request (issue 16, item 3): what io_uring
# work ringway asks for per request, and where the proxy core's cycles go,
# grouped by what each io_uring feature we do not use would remove.
#   bench/kernel_side.sh [RINGWAY_BINARY] [seconds]
#   HEADER='Connection: close' bench/kernel_side.sh ...   (short connections)
# One worker on CPU 0, the seed's `/` route over four `ringway backend`
# instances and `wrk -t1 -c50` on CPU 1, as bench/ab.sh. Prints per request:
# io_uring_enter calls, SQEs submitted, poll arms (a read or accept that
# found no data and waits on an internal poll), file lookups, and the share
# of CPU 0's cycles by group (perf record, kernel and user).
# Needs: wrk, perf (linux-perf), root.
set -euo pipefail
BIN=$(realpath "${1:-target/release/ringway}"); DUR=${2:-5}
WRK_ARGS=(-t1 -c"${CONNS:-50}"); [ -n "${HEADER:-}" ] && WRK_ARGS+=(-H "$HEADER")
BASE=${BENCH_BASE_PORT:-21500}
WORK=$(mktemp -d /tmp/ringway-kside.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
. "$(dirname "$0")/seed_setup.sh"
start_seed_backends "$BIN"
PORT=$((BASE+80))
seed_config "$WORK/r.toml" "$PORT"
taskset -c 0 "$BIN" --config "$WORK/r.toml" > "$WORK/r.out" 2>&1 & PID=$!; PIDS+=($PID)
for _ in $(seq 100); do grep -q listening "$WORK/r.out" && break; sleep 0.05; done
URL="http://127.0.0.1:$PORT/"
taskset -c 1 wrk "${WRK_ARGS[@]}" -d1s "$URL" >/dev/null
taskset -c 1 wrk "${WRK_ARGS[@]}" -d"$((DUR * 2 + 2))s" "$URL" > "$WORK/wrk.out" &
WRK=$!
sleep 1
perf stat -x, -p "$PID" -e syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req,io_uring:io_uring_poll_arm,io_uring:io_uring_file_get,io_uring:io_uring_task_work_run,io_uring:io_uring_local_work_run -o "$WORK/stat" -- sleep "$DUR"
perf record -q -C 0 -o "$WORK/perf.data" -- sleep "$DUR" >/dev/null 2>&1
wait "$WRK"
REQS=$(awk '/requests in/ {print $1}' "$WORK/wrk.out"); SECS=$(awk '/requests in/ {gsub("s,","",$4); print $4}' "$WORK/wrk.out")
perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -q 2>/dev/null > "$WORK/report"
python3 - "$WORK/stat" "$REQS" "$SECS" "$DUR" "$WORK/report" <<'PY'
import re, sys
stat, reqs, secs, dur, report = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
per_s = reqs / secs
print(f"wrk: {per_s:,.0f} req/s")
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].replace(".", "").isdigit():
        print(f"  {f[2]:<40} {float(f[0]) / (per_s * dur):6.2f} per request")
groups = [
    ("fd lookup (registered files would remove)", r"fget|fput|io_file_get|__fdget|fd_install"),
    ("poll arming and wakeups (multishot receive would remove most)", r"io_arm_poll|io_poll|__io_poll|io_pollfree|poll_wait|sock_poll|tcp_poll|__wake_up|ep_poll"),
    ("buffer import/copy to user (registered/provided buffers touch this)", r"import_ubuf|copy_user|copyin|copyout|_copy_to_iter|_copy_from_iter|rep_movs|memcpy_orig"),
    ("io_uring submission and completion", r"io_submit_sqes|io_issue_sqe|io_init_req|io_req_|io_uring_enter|__io_uring|io_cqring|io_fill_cqe|io_run_local_work|io_do_iopoll|io_queue|io_free_batch|io_recv|io_send|io_read|io_write|io_accept|io_close|io_async_cancel|io_cancel"),
    ("syscall entry/exit", r"entry_SYSCALL|syscall_exit|do_syscall|syscall_return|__x64_sys"),
    ("TCP/IP stack and loopback", r"tcp_|ip_|__ip|inet_|sk_|skb|__skb|sock_|__sock|netif|__netif|net_rx|process_backlog|__napi|loopback|dev_|__dev|validate_xmit|nf_|ipv4|__tcp|release_sock|lock_sock|kfree_skb|__kfree_skb|consume_skb|__alloc_skb|kmem_cache|__kmalloc|kmalloc|kfree|__slab|slab_|___slab|page_frag|__page|mod_timer|__mod_timer|raw_local|_raw_spin|security_|apparmor"),
]
shares = {g: 0.0 for g, _ in groups}
user = other = 0.0
others = []
for line in open(report):
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(\S+)", line)
    if not m:
        continue
    pct, kind, sym = float(m.group(1)), m.group(2), m.group(3)
    if kind == ".":
        user += pct
        continue
    for g, rx in groups:
        if re.search(rx, sym):
            shares[g] += pct
            break
    else:
        other += pct
        others.append((pct, sym))
print("CPU 0 cycles by group (perf record -C 0; % of the core's samples):")
print(f"  {'user space (ringway)':<70} {user:5.1f} %")
for g, _ in groups:
    print(f"  {g:<70} {shares[g]:5.1f} %")
print(f"  {'other kernel (scheduler, idle, timers, ...)':<70} {other:5.1f} %")
print("  largest of the other kernel symbols: " + ", ".join(f"{s} {p:.1f}" for p, s in sorted(others, reverse=True)[:10]))
PY
