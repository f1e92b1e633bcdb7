#!/usr/bin/env bash
# Load harness, HTTP/1.1: the same wrk load against
#   direct      client -> upstream (the limit)
#   tb-prop-on  client -> tracebridge (extract + inject W3C, spans sampled, no exporter) -> upstream
#   tb-prop-off client -> tracebridge (no extract, no inject, on_missing = pass) -> upstream
#   nginx       client -> nginx proxy_pass (Debian nginx, keepalive upstream) -> upstream
# and prints one table with requests/s, p50, p99 and the ratios against direct and nginx.
#
# Usage: benches/load/http.sh [duration_seconds=10] [connections=64]
# Needs: wrk, nginx (Debian packages nginx-light wrk). Everything binds 127.0.0.1 port 0 or a
# port chosen free at start; nothing but loopback is touched.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-10}"
CONNS="${2:-64}"
THREADS=1
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$NGINX" ] || { echo "nginx not found: apt-get install nginx-light" >&2; exit 1; }

cargo build --release --quiet --bin tracebridge --example bench_upstream
TARGET="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET/release/tracebridge"
UP_BIN="$TARGET/release/examples/bench_upstream"
. benches/load/common.sh   # the working directory is the repository root (cd above)

"$UP_BIN" 127.0.0.1:0 > "$WORK/up.out" & PIDS+=($!)
wait_line "$WORK/up.out" "listening address="
UP="$(sed -n 's/^listening address=//p' "$WORK/up.out")"

. benches/load/http_config.sh   # gateway_config EXTRACT INJECT ON_MISSING
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
  # nginx closes a client connection after 1000 requests by default; the gateway does not.
  keepalive_requests 100000000;
  upstream up { server $UP; keepalive 256; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$NGINX_PORT) 2>/dev/null && break; sleep 0.05; done

TP='traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
declare -A RPS P50 P99
# to_ms "1.23ms" -> 1.23 ; "850.00us" -> 0.85 ; "1.2s" -> 1200
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'; }
run() { # $1 = label, $2 = address
  wrk -t"$THREADS" -c"$CONNS" -d1s -H "$TP" "http://$2/bench" > /dev/null   # warm-up
  wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -H "$TP" "http://$2/bench" > "$WORK/$1.wrk"
  RPS[$1]="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.wrk")"
  P50[$1]="$(to_ms "$(awk '$1=="50%" {print $2}' "$WORK/$1.wrk")")"
  P99[$1]="$(to_ms "$(awk '$1=="99%" {print $2}' "$WORK/$1.wrk")")"
  if grep -q "Non-2xx" "$WORK/$1.wrk"; then echo "$1: non-2xx responses:" >&2; cat "$WORK/$1.wrk" >&2; exit 1; fi
}
run direct "$UP"
run tb-prop-on "$GW_ON"
run tb-prop-off "$GW_OFF"
run nginx "127.0.0.1:$NGINX_PORT"

echo
echo "HTTP/1.1 load: wrk -t$THREADS -c$CONNS -d${DURATION}s, 64-byte responses, $(nproc) cores shared by client, proxy and upstream"
printf '%-12s %12s %9s %9s %10s %10s\n' target "req/s" "p50 ms" "p99 ms" "vs direct" "vs nginx"
for t in direct tb-prop-on tb-prop-off nginx; do
  printf '%-12s %12.0f %9.3f %9.3f %10.2f %10.2f\n' "$t" "${RPS[$t]}" "${P50[$t]}" "${P99[$t]}" \
    "$(awk -v a="${RPS[$t]}" -v b="${RPS[direct]}" 'BEGIN{print a/b}')" \
    "$(awk -v a="${RPS[$t]}" -v b="${RPS[nginx]}" 'BEGIN{print a/b}')"
done
echo "propagation on/off throughput ratio: $(awk -v a="${RPS[tb-prop-on]}" -v b="${RPS[tb-prop-off]}" 'BEGIN{printf "%.3f", a/b}')"
