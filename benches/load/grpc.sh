#!/usr/bin/env bash
# Load harness, gRPC over h2c: the same h2load load against
#   direct      client -> upstream (the limit)
#   tb-prop-on  client -> tracebridge (extract + inject W3C, spans sampled, no exporter) -> upstream
#   tb-prop-off client -> tracebridge (no extract, no inject, on_missing = pass) -> upstream
#   nginx       client -> nginx grpc_pass (Debian nginx, keepalive upstream) -> upstream
# for unary calls (one 64-byte message each way) and server-streaming calls (one request
# message, ten 64-byte replies), and prints one table per call type with calls/s, p50, p99
# and the ratios against direct and nginx. Percentiles come from h2load's per-request log.
#
# Usage: benches/load/grpc.sh [duration_seconds=10] [connections=16] [streams_per_connection=16]
# Needs: h2load, nginx (Debian packages nghttp2-client nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-10}"
CONNS="${2:-16}"
STREAMS="${3:-16}"
command -v h2load >/dev/null || { echo "h2load not found: apt-get install nghttp2-client" >&2; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx-light" >&2; exit 1; }

cargo build --release --quiet --bin tracebridge --example grpc_bench_upstream
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/tracebridge"
UP_BIN="$TARGET/release/examples/grpc_bench_upstream"
. benches/load/common.sh   # the working directory is the repository root (cd above)

"$UP_BIN" 127.0.0.1:0 > "$WORK/up.out" & PIDS+=($!)
wait_line "$WORK/up.out" "^listening"
UP="$(sed -n 's/^listening address=//p' "$WORK/up.out")"

gateway_config() { # $1 = extract list, $2 = inject list, $3 = on_missing
  cat <<TOML
[admin]
listen = ""
[propagation]
extract = [$1]
inject = [$2]
on_missing = "$3"
[[listeners]]
name = "edge"
protocol = "http"
address = "127.0.0.1:0"
[[routes]]
listener = "edge"
upstream = "up"
[[upstreams]]
name = "up"
protocol = "grpc"
endpoints = ["$UP"]
TOML
}
GATEWAY_LISTENER="name=edge protocol=http"
GW_ON="$(start_gateway on '"w3c", "jaeger", "b3"' '"w3c"' start)"
GW_OFF="$(start_gateway off '' '' pass)"

NGINX_PORT="$(free_port)"
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # nginx ends a client connection (GOAWAY) after 1000 requests by default; the gateway does not.
  keepalive_requests 100000000;
  # One upstream connection per in-flight call (nginx does not multiplex upstream h2):
  # keep as many alive as the load keeps in flight.
  upstream up { server $UP; keepalive $((CONNS * STREAMS)); keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT http2;
    http2_max_concurrent_streams 1024;
    location / { grpc_pass grpc://up; }
  }
}
NGINX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$NGINX_PORT) 2>/dev/null && break; sleep 0.05; done

# One 64-byte request message, length-prefixed.
python3 -c 'import sys; sys.stdout.buffer.write(b"\x00\x00\x00\x00\x40" + b"y"*64)' > "$WORK/req.bin"
TP='traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
declare -A RPS P50 P99
run() { # $1 = label, $2 = address, $3 = method
  local log="$WORK/$1.log"
  h2load -D "$DURATION" --warm-up-time 1 -t 1 -c "$CONNS" -m "$STREAMS" -d "$WORK/req.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' -H "$TP" --log-file "$log" \
    "http://$2/bench.Svc/$3" > "$WORK/$1.h2load"
  if ! grep -q "status codes: [1-9][0-9]* 2xx, 0 3xx, 0 4xx, 0 5xx" "$WORK/$1.h2load"; then
    echo "$1: failed requests:" >&2; tail -5 "$WORK/$1.h2load" >&2
    [ "$1" != nginx ] || tail -20 "$WORK/nginx/error.log" >&2
    exit 1
  fi
  RPS[$1]="$(awk '/^finished in/ {print $4}' "$WORK/$1.h2load")"
  # log lines: start time (µs since epoch), status, duration (µs)
  read -r p50 p99 < <(awk '{print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {print v[int(NR*0.5)]/1000, v[int(NR*0.99)]/1000}')
  P50[$1]="$p50"; P99[$1]="$p99"
}
table() { # $1 = method
  echo
  echo "gRPC $1: h2load -t1 -c$CONNS -m$STREAMS -D${DURATION}s, 64-byte messages, $(nproc) cores shared by client, proxy and upstream"
  printf '%-12s %12s %9s %9s %10s %10s\n' target "calls/s" "p50 ms" "p99 ms" "vs direct" "vs nginx"
  for t in direct tb-prop-on tb-prop-off nginx; do
    printf '%-12s %12.0f %9.3f %9.3f %10.2f %10.2f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
      "$(awk -v a="${RPS[$t]}" -v b="${RPS[direct]}" 'BEGIN{print a/b}')" \
      "$(awk -v a="${RPS[$t]}" -v b="${RPS[nginx]}" 'BEGIN{print a/b}')"
  done
  echo "propagation on/off throughput ratio: $(awk -v a="${RPS[tb-prop-on]}" -v b="${RPS[tb-prop-off]}" 'BEGIN{printf "%.3f", a/b}')"
}
for method in Unary Stream; do
  run direct "$UP" "$method"
  run tb-prop-on "$GW_ON" "$method"
  run tb-prop-off "$GW_OFF" "$method"
  run nginx "127.0.0.1:$NGINX_PORT" "$method"
  table "$method"
done
