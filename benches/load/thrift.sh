#!/usr/bin/env bash
# Load harness, Apache Thrift (THeader, binary protocol): the same closed-loop load against
#   direct      client -> upstream (the limit)
#   tb-prop-on  client -> tracebridge (extract + inject w3c and x-trace-raw, spans sampled, no exporter) -> upstream
#   tb-prop-off client -> tracebridge (no extract, no inject, on_missing = pass) -> upstream
#   nginx       client -> nginx `stream` proxy_pass (Debian nginx, L4 TCP, no Thrift parsing) -> upstream
# and prints one table with requests/s, p50, p99 and the ratios against direct and nginx.
#
# Usage: benches/load/thrift.sh [duration_seconds=10] [connections=64]
# Env:   TRANSPORT=header|framed (default header; framed calls carry no trace headers),
#        TARGETS="direct tb-prop-on tb-prop-off nginx" (a subset runs only those rows).
# Needs: nginx with the stream module (Debian packages nginx-light libnginx-mod-stream). The
# load generator and the echo upstream are `examples/thrift_load.rs`. Everything binds
# 127.0.0.1 port 0 or a port chosen free at start; nothing but loopback is touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-10}"
CONNS="${2:-64}"
TRANSPORT="${TRANSPORT:-header}"
TARGETS="${TARGETS:-direct tb-prop-on tb-prop-off nginx}"
wants() { [[ " $TARGETS " == *" $1 "* ]]; }

NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
LOAD_STREAM=""
if wants nginx; then
  [ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx-light libnginx-mod-stream" >&2; exit 1; }
  # Debian builds the stream module as a dynamic module (--with-stream=dynamic), shipped in
  # libnginx-mod-stream; a config given with -c must load it itself.
  NGINX_V="$("$NGINX" -V 2>&1)"
  if [[ "$NGINX_V" == *"--with-stream=dynamic"* ]]; then
    MOD="$(sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p' <<<"$NGINX_V")"
    MOD="${MOD:-/usr/lib/nginx/modules}/ngx_stream_module.so"
    [ -f "$MOD" ] || { echo "nginx stream module missing ($MOD): apt-get install libnginx-mod-stream" >&2; exit 1; }
    LOAD_STREAM="load_module $MOD;"
  elif [[ "$NGINX_V" != *"--with-stream"* ]]; then
    echo "this nginx has no stream module (nginx -V shows no --with-stream)" >&2; exit 1
  fi
fi

cargo build --release --quiet --bin tracebridge --example thrift_load
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/tracebridge"
LOAD="$TARGET/release/examples/thrift_load"
. benches/load/common.sh   # the working directory is the repository root (cd above)

"$LOAD" upstream 127.0.0.1:0 > "$WORK/up.out" & PIDS+=($!)
wait_line "$WORK/up.out" "^listening " "${PIDS[-1]}"
UP="$(sed -n 's/^listening //p' "$WORK/up.out")"

gateway_config() { # $1 = extract list, $2 = inject list, $3 = on_missing
  cat <<TOML
[admin]
listen = ""
[telemetry]
sampler = { kind = "parent_ratio", ratio = 1.0 }
[propagation]
extract = [$1]
inject = [$2]
on_missing = "$3"
[[listeners]]
name = "rpc"
protocol = "thrift"
address = "127.0.0.1:0"
[[routes]]
listener = "rpc"
upstream = "up"
[[upstreams]]
name = "up"
protocol = "thrift"
transport = "header"
thrift_protocol = "binary"
endpoints = ["$UP"]
TOML
}
GATEWAY_LISTENER="name=rpc protocol=thrift"
declare -A ADDR
ADDR[direct]="$UP"
if wants tb-prop-on; then ADDR[tb-prop-on]="$(start_gateway on '"w3c", "x-trace-raw"' '"w3c", "x-trace-raw"' start)"; fi
if wants tb-prop-off; then ADDR[tb-prop-off]="$(start_gateway off '' '' pass)"; fi

if wants nginx; then
  NGINX_PORT="$(free_port)"
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<NGINX
$LOAD_STREAM
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
stream {
  upstream up { server $UP; }
  server { listen 127.0.0.1:$NGINX_PORT; proxy_pass up; }
}
NGINX
  "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$NGINX_PORT) 2>/dev/null && break; sleep 0.05; done
  ADDR[nginx]="127.0.0.1:$NGINX_PORT"
fi

declare -A RPS P50 P99
run() { # $1 = label
  local args=(client --addr "${ADDR[$1]}" --transport "$TRANSPORT" --connections "$CONNS")
  "$LOAD" "${args[@]}" --duration 1 > /dev/null   # warm-up
  "$LOAD" "${args[@]}" --duration "$DURATION" > "$WORK/$1.load"
  local line; line="$(cat "$WORK/$1.load")"
  RPS[$1]="$(sed -n 's/.*rps=\([^ ]*\).*/\1/p' <<<"$line")"
  P50[$1]="$(sed -n 's/.*p50_ms=\([^ ]*\).*/\1/p' <<<"$line")"
  P99[$1]="$(sed -n 's/.*p99_ms=\([^ ]*\).*/\1/p' <<<"$line")"
  local errors; errors="$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$line")"
  if [ "$errors" != 0 ]; then echo "$1: $errors failed calls: $line" >&2; exit 1; fi
}
ROWS=()
for t in direct tb-prop-on tb-prop-off nginx; do
  if wants "$t"; then run "$t"; ROWS+=("$t"); fi
done

ratio() { # $1 = row, $2 = baseline row
  if [ -n "${RPS[$2]:-}" ]; then awk -v a="${RPS[$1]}" -v b="${RPS[$2]}" 'BEGIN{printf "%.2f", a/b}'; else echo "-"; fi
}
echo
echo "Thrift load: thrift_load client --transport $TRANSPORT --connections $CONNS --duration ${DURATION}s, binary protocol, ~200-byte calls echoed, $(nproc) cores shared by client, proxy and upstream"
printf '%-12s %12s %9s %9s %10s %10s\n' target "req/s" "p50 ms" "p99 ms" "vs direct" "vs nginx"
for t in "${ROWS[@]}"; do
  printf '%-12s %12.0f %9.3f %9.3f %10s %10s\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
    "$(ratio "$t" direct)" "$(ratio "$t" nginx)"
done
if [ -n "${RPS[tb-prop-on]:-}" ] && [ -n "${RPS[tb-prop-off]:-}" ]; then
  echo "propagation on/off throughput ratio: $(awk -v a="${RPS[tb-prop-on]}" -v b="${RPS[tb-prop-off]}" 'BEGIN{printf "%.3f", a/b}')"
fi
