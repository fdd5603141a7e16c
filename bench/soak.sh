#!/usr/bin/env bash
# The soak (issue 17): two `weir serve` instances on one Redis under steady load through
# the decision API and the gateway, while Redis is killed (-9) and restarted, one
# instance is killed (-9) and restarted, and the catalogue is reloaded, several times.
# Reports answers by status, server errors (goal 0), definite over-admission (goal 0),
# leases leaked (goal 0), the time from Redis back to both instances ready (goal under
# 2 s) and memory at the start and the end; exits 1 if a goal is missed. See
# bench/soak.py for what each figure means.
#
# Installs redis-server (Debian) when missing; builds weir in release unless
# WEIR_BINARY is set.
# Usage: bench/soak.sh [seconds, default 600] [seconds between faults, default 40]
set -euo pipefail

DURATION=${1:-600}
FAULT_EVERY=${2:-40}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRATCH=${WEIR_BENCH_SCRATCH:-$ROOT/.build-bench}
WORK=$(mktemp -d /tmp/weir-soak.XXXXXX)
source "$ROOT/bench/lib.sh"
bench_cleanup_on_exit
bench_install redis-server python3 -- redis-server python3
bench_weir_binary

mkdir -p "$ROOT/bench/results"
RESULT="$ROOT/bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ).md"
status=0
python3 "$ROOT/bench/soak.py" "$WEIR_BINARY" --duration "$DURATION" --fault-every "$FAULT_EVERY" \
  | tee "$RESULT" || status=$?
echo "written to $RESULT"
exit "$status"
