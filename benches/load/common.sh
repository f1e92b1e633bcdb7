# Shared by the load harnesses (sourced): a work directory removed at exit, processes killed at
# exit, waiting for a line in a process's output, a free loopback port, and starting a gateway.
# Gateways start inside $(...) subshells, so their pids go to $WORK/*.pid files rather than PIDS.
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}" $(cat "$WORK"/*.pid 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT

# wait_line FILE PATTERN [PID]: waits (bounded, 10 s) until FILE has a line matching PATTERN;
# fails at once if PID has exited.
wait_line() {
  for _ in $(seq 1 200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
      echo "process exited before '$2' appeared in $1:" >&2; cat "$1" >&2; return 1
    fi
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# start_gateway NAME CONFIG_ARGS...: writes `gateway_config CONFIG_ARGS...` (defined by the
# harness) to $WORK/NAME.toml, runs tracebridge ($BIN) on it, waits for `ready`, and prints the
# address of the listener whose `listening` line starts with $GATEWAY_LISTENER
# (e.g. "name=edge protocol=http").
start_gateway() {
  local name="$1"; shift
  gateway_config "$@" > "$WORK/$name.toml"
  "$BIN" run --config "$WORK/$name.toml" > "$WORK/$name.out" 2>&1 & echo $! > "$WORK/$name.pid"
  # Runs inside $(...), where set -e does not reach: fail explicitly.
  wait_line "$WORK/$name.out" "^ready" "$(cat "$WORK/$name.pid")" || return 1
  local addr; addr="$(sed -n "s/^listening $GATEWAY_LISTENER address=//p" "$WORK/$name.out")"
  [ -n "$addr" ] || { echo "$name: no 'listening $GATEWAY_LISTENER' line:" >&2; cat "$WORK/$name.out" >&2; return 1; }
  echo "$addr"
}
