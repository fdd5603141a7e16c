#!/usr/bin/env bash
# Benchmark of the Redis store: in one run, against one private redis-server,
#   (b) the ceiling Redis itself sets: redis-benchmark calling the project's own acquire
#       function by FCALL, -c CONCURRENCY connections, random accounts;
#   (a) Weir: RedisStore.acquire through RedisClient (weir-redis-bench), CONCURRENCY
#       concurrent callers, the same limits, units and accounts;
#   (c) the Python `limits` library with its Redis storage (moving-window and
#       fixed-window), CONCURRENCY callers (4 processes of threads);
#   (d) bench/redis_floor.py: Redis's own CPU per decision for the acquire function and for
#       the least a decision on per-account state costs, i.e. what one Redis core allows.
# redis-server is pinned to core 0, every client to core 1. Each run starts on an empty
# Redis (FLUSHALL). Prints decisions/s, the ratio of Weir to the ceiling and to limits;
# writes bench/results/redis-*.md.
#
# Installs redis (Debian) and limits + redis (PyPI) when missing; builds in release.
# Usage: bench/redis.sh [seconds per run, default 10] [concurrency, default 64]
set -euo pipefail

DURATION=${1:-10}
CONCURRENCY=${2:-64}
ACCOUNTS=1000
UNITS=100
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-redis-bench.XXXXXX)
SERVER_CORE=0
CLIENT_CORE=1
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit

bench_install redis-server redis-benchmark -- redis-server redis-tools
if ! python3 -c "import limits, redis" 2>/dev/null; then
  echo "installing limits and redis from PyPI"
  # A Debian system Python refuses pip installs outside a venv (PEP 668) unless told.
  python3 -m pip install --quiet limits redis 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages limits redis
fi

if [[ -z "${WEIR_REDIS_BENCH_BINARY:-}" ]]; then
  (cd "$ROOT" && nice -n 19 swift build -c release --scratch-path "$SCRATCH" --product weir-redis-bench >/dev/null)
  WEIR_REDIS_BENCH_BINARY="$SCRATCH/release/weir-redis-bench"
fi
BENCH=$WEIR_REDIS_BENCH_BINARY

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
taskset -c "$SERVER_CORE" redis-server --port "$PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --protected-mode no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 200); do
  redis-cli -p "$PORT" PING >/dev/null 2>&1 && break
  sleep 0.05
done
cli() { redis-cli -p "$PORT" "$@"; }

# (b) redis-benchmark: the acquire function by FCALL with the arguments RedisStore sends
# (Redis TIME, requests GCRA 6000/min, tokens GCRA 1,000,000/min, no lease). It is
# bounded by count: about DURATION seconds at the first measured rate, at most 2 minutes.
cli FUNCTION LOAD REPLACE "$("$BENCH" --print-library)" >/dev/null
ACQUIRE=$("$BENCH" --print-acquire-function)
KEY='rb:{acct__rand_int__|chat}'
# run_benchmark REQUESTS: prints "requests/s p50_ms" of redis-benchmark's last line.
run_benchmark() {
  timeout 120 taskset -c "$CLIENT_CORE" redis-benchmark -p "$PORT" -c "$CONCURRENCY" -n "$1" \
    -r "$ACCOUNTS" -q FCALL "$ACQUIRE" 5 "$KEY" "$KEY:rlog" "$KEY:tlog" "$KEY:slots" "$KEY:lease:-" \
    "" 1000 "g 6000 60000000000 6000" "g 1000000 60000000000 1000000" "" 0 "$UNITS" "" - \
    | tr '\r' '\n' | grep 'requests per second' | tail -1 \
    | sed -E 's/.*: ([0-9.]+) requests per second, p50=([0-9.]+) msec.*/\1 \2/'
}
cli FLUSHALL >/dev/null
read -r probe _ < <(run_benchmark 20000)
cli FLUSHALL >/dev/null
read -r ceiling_rps ceiling_p50 < <(run_benchmark "$(awk -v r="$probe" -v d="$DURATION" 'BEGIN {printf "%d", r * d}')")

# (a) Weir.
cli FLUSHALL >/dev/null
read -r weir_rps weir_p50 weir_p99 weir_errors < <(taskset -c "$CLIENT_CORE" "$BENCH" --port "$PORT" \
  --concurrency "$CONCURRENCY" --seconds "$DURATION" --accounts "$ACCOUNTS" --units "$UNITS")

# (c) Python limits.
cli FLUSHALL >/dev/null
read -r moving_rps moving_errors < <(taskset -c "$CLIENT_CORE" python3 "$ROOT/bench/redis_limits.py" --port "$PORT" \
  --strategy moving-window --concurrency "$CONCURRENCY" --seconds "$DURATION" --accounts "$ACCOUNTS")
cli FLUSHALL >/dev/null
read -r fixed_rps fixed_errors < <(taskset -c "$CLIENT_CORE" python3 "$ROOT/bench/redis_limits.py" --port "$PORT" \
  --strategy fixed-window --concurrency "$CONCURRENCY" --seconds "$DURATION" --accounts "$ACCOUNTS")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
mkdir -p "$ROOT/bench/results"
stamp=$(date -u +%Y-%m-%dT%H:%M:%SZ)
report="$ROOT/bench/results/redis-$(date -u +%Y%m%dT%H%M%SZ).md"
{
  echo "# Redis store: Weir vs redis-benchmark vs Python limits ($stamp)"
  echo
  echo "Command: \`bench/redis.sh $DURATION $CONCURRENCY\` ($(redis-server --version | awk '{print $3}'), redis-server on core $SERVER_CORE, every client on core $CLIENT_CORE, $CONCURRENCY concurrent callers, $ACCOUNTS accounts, ${DURATION}s per run)"
  echo
  echo "| target | decisions/s | Weir's ratio to it | p50 | errors |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| redis-benchmark FCALL acquire function (ceiling), -c $CONCURRENCY | $ceiling_rps | $(ratio "$weir_rps" "$ceiling_rps") | ${ceiling_p50} ms | |"
  echo "| Weir RedisStore.acquire, $CONCURRENCY callers | $weir_rps | 1.00 | ${weir_p50} us (p99 ${weir_p99} us) | $weir_errors |"
  echo "| Python limits $(python3 -c 'import limits; print(limits.__version__)'), moving-window | $moving_rps | $(ratio "$weir_rps" "$moving_rps") | | $moving_errors |"
  echo "| Python limits, fixed-window | $fixed_rps | $(ratio "$weir_rps" "$fixed_rps") | | $fixed_errors |"
  echo
  echo "What one Redis core allows at most (\`bench/redis_floor.py --reps 1\`: Redis's CPU per decision, all in; the floor"
  echo "script only reads and writes each account's state, see BENCHMARKS.md):"
  echo
  python3 "$ROOT/bench/redis_floor.py" --reps 1
} | tee "$report"
