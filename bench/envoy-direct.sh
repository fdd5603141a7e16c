#!/usr/bin/env bash
# Weir's Envoy rate limit service measured alone, against the floor: the same
# ShouldRateLimit call (domain `weir`, one descriptor account/api/model, hits_addend 1;
# bench/allowed.yaml, so every call is allowed) sent by h2load straight to
#   (a) `weir serve --grpc-port` (its real work: descriptor mapping, lookup, decision,
#       answer), and
#   (b) the null rate limit service (bench/null-rls: grpc-go answering a pre-encoded OK
#       without decoding the request),
# in turn, at 1, 16 and 256 streams in flight (1 connection x 1, 1 x 16, 4 x 64). Each
# server pinned to core 0, h2load -t1 to core 1. Reported per run: calls/s, mean latency
# and CPU time per call of the server (utime + stime from /proc/PID/stat over the
# measured run, robust to other load on the machine), and Weir's CPU per call as a
# multiple of the null service's (issue 16's goal: at most 1.5x; mean latency at one
# stream at most 2x). Weir's decisions are counted from its /metrics, so a run whose
# calls were not all decided and allowed says so.
#
# Installs golang-go, golang-google-grpc-dev (the null service is built in GOPATH mode
# from Debian's packages: no Go modules fetched) and nghttp2-client (h2load) when
# missing; builds weir in release unless WEIR_BINARY is set.
# Usage: bench/envoy-direct.sh [seconds per run, default 10] [rounds, default 2]
set -euo pipefail

DURATION=${1:-10}
ROUNDS=${2:-2}
WARMUP=2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-envoy-direct.XXXXXX)
WEIR_PORT=18290
WEIR_GRPC=18291
NULL_PORT=18292
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit
bench_install go h2load -- golang-go golang-google-grpc-dev nghttp2-client
if [[ ! -d /usr/share/gocode/src/google.golang.org/grpc ]]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-google-grpc-dev >/dev/null
fi
bench_weir_binary

(cd "$ROOT" && GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$WORK/go-cache" \
  go build -o "$WORK/null-rls" bench/null-rls/main.go)

# The request, gRPC-framed: ShouldRateLimit{domain: "weir", descriptors: [{entries:
# [account=bench-1, api=text, model=MiniMax-M2]}], hits_addend: 1}, encoded by hand.
python3 - "$WORK/request.bin" <<'PY'
import struct, sys
def field(number, payload): return bytes([number << 3 | 2, len(payload)]) + payload
entry = lambda k, v: field(1, field(1, k.encode()) + field(2, v.encode()))
descriptor = entry("account", "bench-1") + entry("api", "text") + entry("model", "MiniMax-M2")
message = field(1, b"weir") + field(2, descriptor) + bytes([3 << 3, 1])
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(message)) + message)
PY

URL_PATH=/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
allowed_decisions() {
  curl -s "http://127.0.0.1:$WEIR_PORT/metrics" \
    | awk '/^weir_decisions_total\{.*outcome="allowed"/ {sum += $NF} END {printf "%d", sum}'
}

TICKS=$(getconf CLK_TCK)
RESULT="$ROOT/bench/results/envoy-direct-$(date -u +%Y%m%dT%H%M%SZ).md"
mkdir -p "$ROOT/bench/results"
{
  echo "# Weir's gRPC rate limit service against the null grpc-go service ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo
  echo "Command: \`bench/envoy-direct.sh $DURATION $ROUNDS\` (server on core 0, h2load -t1 on core 1, ${DURATION}s after ${WARMUP}s warm-up)"
  echo
  echo "| round | server | streams in flight | calls/s | mean latency | CPU per call (us) | not 200 | decided and allowed |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
} | tee "$RESULT"

declare -A cpu_sum latency_sum
run() {  # run ROUND NAME PID PORT CONNECTIONS STREAMS
  local round=$1 name=$2 pid=$3 port=$4 connections=$5 streams=$6
  local before_allowed=0
  [[ $name == weir ]] && before_allowed=$(allowed_decisions)
  local out="$WORK/h2load.out"
  taskset -c 1 h2load -t1 -c "$connections" -m "$streams" -D "$DURATION" --warm-up-time "$WARMUP" \
    -d "$WORK/request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$port$URL_PATH" > "$out" 2>&1 &
  local load=$!
  # CPU is counted over h2load's measured time only: from the end of its warm-up.
  sleep "$WARMUP"
  local before
  before=$(cpu_ticks "$pid")
  wait "$load"
  local after
  after=$(cpu_ticks "$pid")
  local done_calls succeeded rate mean
  done_calls=$(awk '/^requests:/ {print $8}' "$out")
  succeeded=$(awk '/^status codes:/ {print $3}' "$out")
  rate=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' "$out")
  mean=$(awk '/^time for request:/ {print $6}' "$out")
  local calls
  calls=$(awk -v r="$rate" -v d="$DURATION" 'BEGIN {printf "%d", r * d}')
  local cpu_us
  cpu_us=$(awk -v t=$((after - before)) -v hz="$TICKS" -v n="$calls" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')
  local allowed="n/a"
  if [[ $name == weir ]]; then
    allowed=$(( $(allowed_decisions) - before_allowed ))
  fi
  echo "| $round | $name | $((connections * streams)) | ${rate%.*} | $mean | $cpu_us | $((done_calls - succeeded)) | $allowed |" | tee -a "$RESULT"
  cpu_sum["$name-$((connections * streams))"]=$(awk -v a="${cpu_sum["$name-$((connections * streams))"]:-0}" -v b="$cpu_us" 'BEGIN {print a + b}')
}

taskset -c 0 "$WEIR_BINARY" serve --port "$WEIR_PORT" --grpc-port "$WEIR_GRPC" --data "$WORK/data" \
  --config "$ROOT/bench/allowed.yaml" --log-level warning > "$WORK/weir.log" 2>&1 &
weir_pid=$!
pids+=("$weir_pid")
taskset -c 0 "$WORK/null-rls" "$NULL_PORT" > "$WORK/null.log" 2>&1 &
null_pid=$!
pids+=("$null_pid")
wait_for_port "$WEIR_GRPC"
wait_for_port "$NULL_PORT"
# h2load counts HTTP statuses only, and a failed RPC is HTTP 200 too: check once that
# each server answers this call with grpc-status 0.
for port in "$WEIR_GRPC" "$NULL_PORT"; do
  if ! nghttp -v -d "$WORK/request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      "http://127.0.0.1:$port$URL_PATH" 2>&1 | grep -aq 'grpc-status: 0'; then
    echo "the server on port $port does not answer the call with grpc-status 0" >&2
    exit 1
  fi
done

for round in $(seq 1 "$ROUNDS"); do
  for shape in "1 1" "1 16" "4 64"; do
    read -r connections streams <<< "$shape"
    if (( round % 2 == 1 )); then
      run "$round" weir "$weir_pid" "$WEIR_GRPC" "$connections" "$streams"
      run "$round" null "$null_pid" "$NULL_PORT" "$connections" "$streams"
    else
      run "$round" null "$null_pid" "$NULL_PORT" "$connections" "$streams"
      run "$round" weir "$weir_pid" "$WEIR_GRPC" "$connections" "$streams"
    fi
  done
done

{
  echo
  echo "Weir's CPU per call as a multiple of the null service's (means over rounds; goal: at most 1.5x):"
  echo
  for inflight in 1 16 256; do
    awk -v w="${cpu_sum["weir-$inflight"]}" -v n="${cpu_sum["null-$inflight"]}" -v s="$inflight" \
      'BEGIN {printf "- %s in flight: Weir %.1f us, null %.1f us: %.2fx\n", s, w / '"$ROUNDS"', n / '"$ROUNDS"', w / n}'
  done
} | tee -a "$RESULT"
echo "written to $RESULT"
