# Shared by the bench/*.sh scripts; source it after setting ROOT, SCRATCH and WORK.
#
#   bench_cleanup_on_exit     stop every PID in `pids` and remove $WORK when the script ends
#   bench_install CMD... -- PACKAGE...
#                             installs the Debian packages when any command is missing
#   bench_weir_binary         sets WEIR_BINARY (unless given) to a release build in $SCRATCH
#   wait_for_port PORT [TRIES]
#                             waits (50 ms steps, 200 tries by default) until 127.0.0.1:PORT accepts

pids=()

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}

bench_cleanup_on_exit() {
  trap bench_cleanup EXIT
}

bench_install() {
  local commands=() missing=false
  while [ "$1" != "--" ]; do commands+=("$1"); shift; done
  shift
  for command in "${commands[@]}"; do command -v "$command" >/dev/null || missing=true; done
  $missing || return 0
  echo "installing $* from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

bench_weir_binary() {
  if [[ -z "${WEIR_BINARY:-}" ]]; then
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product weir >/dev/null)
    WEIR_BINARY="$SCRATCH/release/weir"
  fi
}

wait_for_port() {
  for _ in $(seq 1 "${2:-200}"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  exit 1
}
