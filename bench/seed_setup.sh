# Sourced by bench/ab.sh and bench/kernel_side.sh: the seed's four backends
# (`ringway backend`) on CPU 1, and a one-worker ringway config over them
# with the seed's `/` and `/admin` routes. The caller sets WORK (a
# temporary directory), BASE (the base port) and PIDS (an array of
# processes to stop at exit).

# start_seed_backends BINARY: backends on BASE+1..BASE+4; sets `ports` (an
# array) and `servers` (the TOML list's inside).
start_seed_backends() {
  local p
  ports=($((BASE+1)) $((BASE+2)) $((BASE+3)) $((BASE+4)))
  for p in "${ports[@]}"; do
    taskset -c 1 "$1" backend --port "$p" >/dev/null 2>&1 & PIDS+=($!)
  done
  servers=$(printf '"127.0.0.1:%s",' "${ports[@]}")
  servers=${servers%,}
}

# seed_config FILE PORT: the proxy's config, listening on PORT.
seed_config() {
  cat > "$1" <<TOML
[runtime]
threads = 1
pin_cpus = false
[upstreams.allbackend]
servers = [$servers]
[[listeners]]
name = "public"
bind = "127.0.0.1:$2"
routes = [ { prefix = "/", upstream = "allbackend" }, { prefix = "/admin", status = 403 } ]
TOML
}
