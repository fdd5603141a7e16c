#!/usr/bin/env bash
# Old and new `weir serve` binaries, run alternately in one go on the same workloads,
# compared by CPU time per request (from /proc, far steadier on a shared machine than
# requests per second) as well as requests per second.
#
# Each round runs, for each binary in turn (old first in odd rounds, new first in even): /v1/acquire with every call allowed
# (bench/allowed.yaml), then mostly denied (the built-in catalogue), and, with --redis,
# both again on `--store redis://` (a redis-server started here, unpinned). Server on
# core 0, wrk -t1 on core 1, bench/acquire.lua (300 accounts round robin).
#
# Usage: bench/compare.sh OLD_BINARY NEW_BINARY [rounds, default 3] [seconds, default 8]
#        [connections, default 64] [--redis]
# Writes bench/results/compare-<time>.md.
set -euo pipefail

OLD=$1
NEW=$2
ROUNDS=${3:-3}
DURATION=${4:-8}
CONNECTIONS=${5:-64}
REDIS=false
[[ "${6:-}" == "--redis" ]] && REDIS=true
WARMUP=2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=$ROOT/.build-bench
WORK=$(mktemp -d /tmp/weir-compare.XXXXXX)
PORT=18095
REDIS_PORT=18096
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit
bench_install wrk -- wrk

if $REDIS; then
  redis-server --port "$REDIS_PORT" --save "" --appendonly no --daemonize no >"$WORK/redis.log" 2>&1 &
  pids+=("$!")
  wait_for_port "$REDIS_PORT"
fi

# cpu_ticks PID: user + system time of the process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)

# measure BINARY CONFIG STORE: prints "requests/s cpu-us-per-request p99".
measure() {
  local binary=$1 config=$2 store=$3 data="$WORK/data-$RANDOM"
  local arguments=(serve --port "$PORT" --data "$data" --log-level warning --store "$store")
  [[ -n "$config" ]] && arguments+=(--config "$config")
  [[ "$store" != memory ]] && arguments+=(--redis-prefix "c$RANDOM:" --store-timeout 1000)
  taskset -c 0 "$binary" "${arguments[@]}" >"$WORK/weir.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  wait_for_port "$PORT"
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s "$ROOT/bench/acquire.lua" "http://127.0.0.1:$PORT" >/dev/null
  local before after
  before=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$ROOT/bench/acquire.lua" \
    "http://127.0.0.1:$PORT" >"$WORK/wrk.txt"
  after=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local requests rps p99
  requests=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/wrk.txt")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/wrk.txt")
  awk -v r="$rps" -v t=$((after - before)) -v hz="$TICKS" -v n="$requests" -v p="$p99" \
    'BEGIN {printf "%.0f %.1f %s\n", r, t / hz * 1e6 / n, p}'
}

stores=(memory)
$REDIS && stores+=("redis://127.0.0.1:$REDIS_PORT")
rows=()
for round in $(seq 1 "$ROUNDS"); do
  for store in "${stores[@]}"; do
    for workload in allowed denied; do
      config=""
      [[ $workload == allowed ]] && config="$ROOT/bench/allowed.yaml"
      # Alternate which binary goes first (old-new, then new-old): the slot a run takes
      # in a pair shows in its figures on this machine, so each binary takes both.
      sides="old new"; (( round % 2 == 0 )) && sides="new old"
      for side in $sides; do
        binary=$OLD; [[ $side == new ]] && binary=$NEW
        read -r rps cpu p99 < <(measure "$binary" "$config" "$store")
        label=memory; [[ $store != memory ]] && label=redis
        rows+=("| $round | $label | $workload | $side | $rps | $cpu | $p99 |")
        echo "round $round $label $workload $side: $rps/s, $cpu us CPU per request, p99 $p99" >&2
      done
    done
  done
done

mkdir -p "$ROOT/bench/results"
report="$ROOT/bench/results/compare-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# old vs new weir serve, alternated ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "Command: \`bench/compare.sh OLD NEW $ROUNDS $DURATION $CONNECTIONS${6:+ $6}\` (server on core 0, wrk -t1 -c$CONNECTIONS on core 1, ${DURATION}s after ${WARMUP}s warm-up)"
  echo
  echo "| round | store | workload | binary | requests/s | CPU per request (us) | p99 |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Means over rounds (CPU per request, us; requests/s):"
  echo
  printf '%s\n' "${rows[@]}" | awk -F'|' '{gsub(/ /,"",$3); gsub(/ /,"",$4); gsub(/ /,"",$5); k=$3" "$4" "$5; c[k]+=$7; r[k]+=$6; n[k]++}
    END {for (k in c) printf "- %s: %.2f us, %.0f/s\n", k, c[k]/n[k], r[k]/n[k]}' | sort
} | tee "$report"
