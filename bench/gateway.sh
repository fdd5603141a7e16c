#!/usr/bin/env bash
# Benchmark of `weir serve --upstream` (gateway mode) against nginx `proxy_pass`.
#
# One run, on a 2-core machine: the upstream (`weir mock-upstream`, the development
# stand-in) and wrk pinned to core 1, the proxy under test pinned to core 0. The same
# wrk settings and request for all: POST /v1/chat/completions, non-streaming, with the
# benchmark account's key (bench/chat.lua, bench/gateway.yaml). Three targets:
#   a. the mock upstream directly,
#   b. through weir (`weir serve --upstream`, every call allowed and settled),
#   c. through nginx `proxy_pass` (keep-alive pool to the upstream),
# each at two loads: wrk -c$CONNECTIONS (throughput) and -c$MODERATE (moderate load, for
# the latency weir adds). Prints requests/s, p50/p99 and ratios; writes bench/results/.
#
# Installs nginx and wrk from Debian's packages when missing; builds weir in release.
# Usage: bench/gateway.sh [seconds per run, default 10] [connections, default 64] [moderate connections, default 8]
# (WEIR_BINARY=path uses that weir instead of building one.)
set -euo pipefail

DURATION=${1:-10}
CONNECTIONS=${2:-64}
MODERATE=${3:-8}
WARMUP=3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-bench-gateway.XXXXXX)
# Three consecutive ports from WEIR_BENCH_GATEWAY_PORT (default 18190), so that runs of
# other benchmarks on the same machine do not collide with this one.
UPSTREAM_PORT=${WEIR_BENCH_GATEWAY_PORT:-18190}
WEIR_PORT=$((UPSTREAM_PORT + 1))
NGINX_PORT=$((UPSTREAM_PORT + 2))
PROXY_CORE=0
CLIENT_CORE=1
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit

bench_install nginx wrk -- nginx-light wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

bench_weir_binary

# CPU time (user + system) of process PID so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# run_wrk NAME PORT CONNECTIONS PID: warm up, then measure; prints "rps p50 p99 cpu",
# cpu being the CPU time process PID spent per request, in microseconds.
run_wrk() {
  local name=$1 port=$2 connections=$3 pid=$4
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$connections" -d"${WARMUP}s" -s "$ROOT/bench/chat.lua" \
    "http://127.0.0.1:$port" >/dev/null
  local before after
  before=$(cpu_ticks "$pid")
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$connections" -d"${DURATION}s" --latency -s "$ROOT/bench/chat.lua" \
    "http://127.0.0.1:$port" >"$WORK/$name.txt"
  after=$(cpu_ticks "$pid")
  if grep -q "Non-2xx" "$WORK/$name.txt"; then
    echo "$name: some answers were not 2xx:" >&2
    cat "$WORK/$name.txt" >&2
    exit 1
  fi
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.txt")
  local requests
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.txt")
  echo "$rps $p50 $p99 $(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN {printf "%.1f", t * us / n}')"
}

# The upstream, for every run.
taskset -c "$CLIENT_CORE" "$WEIR_BINARY" mock-upstream --port "$UPSTREAM_PORT" --completion-tokens 16 \
  --log-level warning >"$WORK/mock.log" 2>&1 &
mock_pid=$!
pids+=("$mock_pid")
wait_for_port "$UPSTREAM_PORT"

# a. the upstream directly (the "proxy CPU" column is then the mock's own)
read -r direct_rps direct_p50 direct_p99 direct_cpu < <(run_wrk direct "$UPSTREAM_PORT" "$CONNECTIONS" "$mock_pid")
read -r directm_rps directm_p50 directm_p99 directm_cpu < <(run_wrk direct-moderate "$UPSTREAM_PORT" "$MODERATE" "$mock_pid")

# b. weir
taskset -c "$PROXY_CORE" "$WEIR_BINARY" serve --port "$WEIR_PORT" --data "$WORK/data" --log-level warning \
  --config "$ROOT/bench/gateway.yaml" --upstream "http://127.0.0.1:$UPSTREAM_PORT" >"$WORK/weir.log" 2>&1 &
weir_pid=$!
pids+=("$weir_pid")
wait_for_port "$WEIR_PORT"
read -r weir_rps weir_p50 weir_p99 weir_cpu < <(run_wrk weir "$WEIR_PORT" "$CONNECTIONS" "$weir_pid")
read -r weirm_rps weirm_p50 weirm_p99 weirm_cpu < <(run_wrk weir-moderate "$WEIR_PORT" "$MODERATE" "$weir_pid")
allowed=$(curl -s "http://127.0.0.1:$WEIR_PORT/metrics" | awk '$1 ~ /^weir_decisions_total/ && $1 ~ /outcome="allowed"/ {sum += $2} END {print sum + 0}')
active=$(curl -s "http://127.0.0.1:$WEIR_PORT/metrics" | awk '$1 == "weir_active_leases" {print $2}')
kill "$weir_pid"; wait "$weir_pid" 2>/dev/null || true

# c. nginx proxy_pass
mkdir -p "$WORK/body" "$WORK/proxy"
sed -e "s#@DIR@#$WORK#g" -e "s#@PORT@#$NGINX_PORT#g" -e "s#@UPSTREAM@#$UPSTREAM_PORT#g" \
  "$ROOT/bench/nginx-proxy.conf.template" >"$WORK/nginx.conf"
taskset -c "$PROXY_CORE" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for_port "$NGINX_PORT"
# nginx forks its worker: measure the worker's CPU.
sleep 0.2
nginx_worker=$(pgrep -P "$nginx_pid" | head -1)
read -r nginx_rps nginx_p50 nginx_p99 nginx_cpu < <(run_wrk nginx "$NGINX_PORT" "$CONNECTIONS" "$nginx_worker")
read -r nginxm_rps nginxm_p50 nginxm_p99 nginxm_cpu < <(run_wrk nginx-moderate "$NGINX_PORT" "$MODERATE" "$nginx_worker")
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
# wrk prints latencies as 123.45us, 1.23ms or 1.02s: in milliseconds.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0; else printf "%.3f", v * 1000 }'; }
added() { awk -v a="$(ms "$1")" -v b="$(ms "$2")" 'BEGIN {printf "%+.3f ms", a - b}'; }
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
report="$ROOT/bench/results/gateway-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# weir gateway vs nginx proxy_pass ($stamp)"
  echo
  echo "Command: \`bench/gateway.sh $DURATION $CONNECTIONS $MODERATE\` (proxy on core $PROXY_CORE; mock upstream and wrk -t1 on core $CLIENT_CORE; ${DURATION}s after ${WARMUP}s warm-up; POST /v1/chat/completions, non-streaming; load average at start: $(cut -d' ' -f1-3 /proc/loadavg))"
  echo
  echo "| target | connections | requests/s | ratio to nginx | p50 | p99 | p50 added to direct | CPU per request (proxy; mock when direct) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  echo "| mock upstream directly | $CONNECTIONS | $direct_rps | $(ratio "$direct_rps" "$nginx_rps") | $direct_p50 | $direct_p99 | | ${direct_cpu} us |"
  echo "| through weir | $CONNECTIONS | $weir_rps | $(ratio "$weir_rps" "$nginx_rps") | $weir_p50 | $weir_p99 | $(added "$weir_p50" "$direct_p50") | ${weir_cpu} us |"
  echo "| through nginx proxy_pass | $CONNECTIONS | $nginx_rps | 1.000 | $nginx_p50 | $nginx_p99 | $(added "$nginx_p50" "$direct_p50") | ${nginx_cpu} us |"
  echo "| mock upstream directly | $MODERATE | $directm_rps | $(ratio "$directm_rps" "$nginxm_rps") | $directm_p50 | $directm_p99 | | ${directm_cpu} us |"
  echo "| through weir | $MODERATE | $weirm_rps | $(ratio "$weirm_rps" "$nginxm_rps") | $weirm_p50 | $weirm_p99 | $(added "$weirm_p50" "$directm_p50") | ${weirm_cpu} us |"
  echo "| through nginx proxy_pass | $MODERATE | $nginxm_rps | 1.000 | $nginxm_p50 | $nginxm_p99 | $(added "$nginxm_p50" "$directm_p50") | ${nginxm_cpu} us |"
  echo
  echo "weir: $allowed calls allowed, $active leases left unsettled at the end."
} | tee "$report"
