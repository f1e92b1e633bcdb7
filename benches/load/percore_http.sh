#!/usr/bin/env bash
# Per-core HTTP/1.1 comparison of tracebridge builds (../shared/perf.md method): each proxy
# pinned to CPU 1 with one worker, wrk and the upstream pinned to CPU 0; warm-up 1 s, then
# DURATION s; the proxy's CPU time (utime + stime from /proc/PID/stat) per request completed.
# The builds are interleaved (A B A B ...) for ROUNDS rounds and averaged, so drift on the box
# hits every row alike. Tracing on: extract + inject W3C, spans sampled (no exporter), metrics.
#
# Usage: benches/load/percore_http.sh [duration=8] [rounds=2] [conns=64] LABEL=BIN [LABEL=BIN ...]
#   e.g. benches/load/percore_http.sh 8 2 64 before=/tmp/old/tracebridge after=target/release/tracebridge
# With no LABEL=BIN, compares the release build of this checkout alone.
# Needs: wrk, taskset (util-linux). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION="${1:-8}"; ROUNDS="${2:-2}"; CONNS="${3:-64}"
shift $(( $# >= 3 ? 3 : $# ))
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "needs 2 cores (proxy on CPU 1, load on CPU 0)" >&2; exit 1; }

cargo build --release --quiet --bin tracebridge --example bench_upstream
TARGET="${CARGO_TARGET_DIR:-target}"
UP_BIN="$TARGET/release/examples/bench_upstream"
. benches/load/common.sh

declare -A BINS
LABELS=()
if [ "$#" -eq 0 ]; then set -- "tracebridge=$TARGET/release/tracebridge"; fi
for arg in "$@"; do LABELS+=("${arg%%=*}"); BINS[${arg%%=*}]="${arg#*=}"; done

taskset -c 0 "$UP_BIN" 127.0.0.1:0 > "$WORK/up.out" & PIDS+=($!)
wait_line "$WORK/up.out" "listening address="
UP="$(sed -n 's/^listening address=//p' "$WORK/up.out")"

. benches/load/http_config.sh   # gateway_config EXTRACT INJECT ON_MISSING

TICK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'; }
TP='traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
declare -A RPS P50 P99 CPU N

for round in $(seq 1 "$ROUNDS"); do
  for label in "${LABELS[@]}"; do
    gateway_config '"w3c", "jaeger", "b3"' '"w3c"' start > "$WORK/$label.toml"
    taskset -c 1 "${BINS[$label]}" run --workers 1 --config "$WORK/$label.toml" > "$WORK/$label.out" 2>&1 &
    pid=$!
    wait_line "$WORK/$label.out" "^ready" "$pid"
    addr="$(sed -n 's/^listening name=edge protocol=http address=//p' "$WORK/$label.out")"
    taskset -c 0 wrk -t1 -c"$CONNS" -d1s -H "$TP" "http://$addr/bench" > /dev/null
    before="$(cpu_ticks "$pid")"
    taskset -c 0 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "$TP" "http://$addr/bench" > "$WORK/$label.wrk"
    after="$(cpu_ticks "$pid")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    if grep -q "Non-2xx\|Socket errors" "$WORK/$label.wrk"; then echo "$label: errors:" >&2; cat "$WORK/$label.wrk" >&2; exit 1; fi
    reqs="$(awk '/requests in/ {print $1}' "$WORK/$label.wrk")"
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$label.wrk")"
    us="$(awk -v t=$((after - before)) -v hz="$TICK" -v n="$reqs" 'BEGIN{print t / hz * 1e6 / n}')"
    printf 'round %d %-10s %10.0f req/s  %6.2f us CPU/req\n' "$round" "$label" "$rps" "$us"
    RPS[$label]="$(awk -v a="${RPS[$label]:-0}" -v b="$rps" 'BEGIN{print a+b}')"
    CPU[$label]="$(awk -v a="${CPU[$label]:-0}" -v b="$us" 'BEGIN{print a+b}')"
    P50[$label]="$(awk -v a="${P50[$label]:-0}" -v b="$(to_ms "$(awk '$1=="50%" {print $2}' "$WORK/$label.wrk")")" 'BEGIN{print a+b}')"
    P99[$label]="$(awk -v a="${P99[$label]:-0}" -v b="$(to_ms "$(awk '$1=="99%" {print $2}' "$WORK/$label.wrk")")" 'BEGIN{print a+b}')"
  done
done

first="${LABELS[0]}"
echo
echo "HTTP/1.1 per core: proxy on CPU 1 (--workers 1), wrk -t1 -c$CONNS and upstream on CPU 0, ${DURATION}s x $ROUNDS rounds interleaved, tracing on"
printf '%-10s %10s %8s %8s %12s %12s %12s\n' build "req/s" "p50 ms" "p99 ms" "CPU us/req" "req/s vs $first" "CPU vs $first"
for label in "${LABELS[@]}"; do
  awk -v l="$label" -v r="${RPS[$label]}" -v p5="${P50[$label]}" -v p9="${P99[$label]}" -v c="${CPU[$label]}" \
      -v r0="${RPS[$first]}" -v c0="${CPU[$first]}" -v n="$ROUNDS" \
      'BEGIN{printf "%-10s %10.0f %8.3f %8.3f %12.2f %12.3f %12.3f\n", l, r/n, p5/n, p9/n, c/n, r/r0, c/c0}'
done
