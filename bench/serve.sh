#!/usr/bin/env bash
# Benchmark of `weir serve`'s decision path against nginx `return 200`.
#
# One run, on a 2-core machine: each server pinned to core 0, wrk pinned to core 1,
# the same wrk settings and requests for all (bench/acquire.lua: POST /v1/acquire,
# 300 accounts round robin). Three measurements:
#   1. nginx `return 200` (the baseline),
#   2. weir, every call allowed (bench/allowed.yaml: limits no run reaches),
#   3. weir, mostly denied (the built-in catalogue: 20 RPM per account, so after the
#      first 6,000 calls every call is a 429).
# Prints requests/s, p50/p99 latency and the ratio to nginx; writes bench/results/.
#
# Installs nginx and wrk from Debian's packages when missing; builds weir in release.
# Usage: bench/serve.sh [seconds per run, default 10] [connections, default 64]
set -euo pipefail

DURATION=${1:-10}
CONNECTIONS=${2:-64}
WARMUP=3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-bench.XXXXXX)
NGINX_PORT=18090
WEIR_PORT=18091
SERVER_CORE=0
CLIENT_CORE=1
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit

bench_install nginx wrk -- nginx-light wrk
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

bench_weir_binary

# run_wrk NAME PORT: warm up, then measure; prints "rps p50 p99" and keeps wrk's output.
run_wrk() {
  local name=$1 port=$2
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$ROOT/bench/acquire.lua" \
    "http://127.0.0.1:$port" >/dev/null
  taskset -c "$CLIENT_CORE" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/acquire.lua" \
    "http://127.0.0.1:$port" >"$WORK/$name.txt"
  local rps p50 p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.txt")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.txt")
  echo "$rps $p50 $p99"
}

start_weir() {
  local config=$1 data="$WORK/data-$RANDOM"
  local arguments=(serve --port "$WEIR_PORT" --data "$data" --log-level warning)
  [[ -n "$config" ]] && arguments+=(--config "$config")
  taskset -c "$SERVER_CORE" "$WEIR_BINARY" "${arguments[@]}" >"$WORK/weir.log" 2>&1 &
  weir_pid=$!
  pids+=("$weir_pid")
  wait_for_port "$WEIR_PORT"
}

stop_weir() {
  kill "$weir_pid"
  wait "$weir_pid" 2>/dev/null || true
}

decisions() {
  curl -s "http://127.0.0.1:$WEIR_PORT/metrics" | awk -v outcome="$1" \
    '$1 ~ /^weir_decisions_total/ && $1 ~ "outcome=\""outcome"\"" {sum += $2} END {print sum + 0}'
}

# 1. nginx
mkdir -p "$WORK/body"
sed -e "s#@DIR@#$WORK#g" -e "s#@PORT@#$NGINX_PORT#g" "$ROOT/bench/nginx.conf.template" >"$WORK/nginx.conf"
taskset -c "$SERVER_CORE" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" &
nginx_pid=$!
pids+=("$nginx_pid")
wait_for_port "$NGINX_PORT"
read -r nginx_rps nginx_p50 nginx_p99 < <(run_wrk nginx "$NGINX_PORT")
kill "$nginx_pid"; wait "$nginx_pid" 2>/dev/null || true

# 2. weir, all allowed
start_weir "$ROOT/bench/allowed.yaml"
read -r allowed_rps allowed_p50 allowed_p99 < <(run_wrk allowed "$WEIR_PORT")
allowed_denied=$(decisions denied)
allowed_allowed=$(decisions allowed)
stop_weir

# 3. weir, mostly denied (built-in catalogue)
start_weir ""
read -r denied_rps denied_p50 denied_p99 < <(run_wrk denied "$WEIR_PORT")
denied_denied=$(decisions denied)
denied_allowed=$(decisions allowed)
stop_weir

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
report="$ROOT/bench/results/serve-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# weir serve vs nginx return 200 ($stamp)"
  echo
  echo "Command: \`bench/serve.sh $DURATION $CONNECTIONS\` (server on core $SERVER_CORE, wrk -t1 -c$CONNECTIONS on core $CLIENT_CORE, ${DURATION}s after ${WARMUP}s warm-up, 300 accounts)"
  echo
  echo "| target | requests/s | ratio to nginx | p50 | p99 | allowed / denied |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| nginx return 200 | $nginx_rps | 1.000 | $nginx_p50 | $nginx_p99 | |"
  echo "| weir /v1/acquire, all allowed | $allowed_rps | $(ratio "$allowed_rps" "$nginx_rps") | $allowed_p50 | $allowed_p99 | $allowed_allowed / $allowed_denied |"
  echo "| weir /v1/acquire, mostly denied | $denied_rps | $(ratio "$denied_rps" "$nginx_rps") | $denied_p50 | $denied_p99 | $denied_allowed / $denied_denied |"
} | tee "$report"
