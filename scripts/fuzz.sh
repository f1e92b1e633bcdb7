#!/usr/bin/env bash
# Fuzz every decoder for a bounded time: installs cargo-fuzz (and the nightly toolchain) if
# missing, builds all targets in fuzz/ once, then runs each target for SECONDS (default 20)
# over its seed corpus, up to FUZZ_PARALLEL targets at a time (default: the core count).
# Exits non-zero if any target crashes, leaks, times out or runs out of memory; the input is
# left in fuzz/artifacts/TARGET/ (reproduce: cargo +nightly fuzz run TARGET FILE).
#
# Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

seconds="${1:-20}"
parallel="${FUZZ_PARALLEL:-$(nproc)}"

rustup toolchain list | grep -q '^nightly' ||
  rustup toolchain install nightly --profile minimal
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "== cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Release with debug assertions: overflow checks catch arithmetic on hostile lengths. No
# AddressSanitizer: the crate denies unsafe code, and without ASan the build is shorter and
# each target runs more inputs in its time (override: FUZZ_SANITIZER=address).
flags=(-O --debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}")
echo "== cargo fuzz build"
cargo +nightly fuzz build "${flags[@]}"

# New inputs go to a scratch corpus; the committed seeds in fuzz/corpus/ are only read.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

run() {
  local target="$1"
  mkdir -p "$scratch/$target"
  if cargo +nightly fuzz run "${flags[@]}" "$target" \
      "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 \
      >"$scratch/$target.log" 2>&1; then
    echo "ok   $target: $(grep -m1 'stat::number_of_executed_units' "$scratch/$target.log" |
      awk '{print $2}') executions"
  else
    echo "FAIL $target (artifacts in fuzz/artifacts/$target/):"
    tail -n 40 "$scratch/$target.log"
    return 1
  fi
}

echo "== fuzz ${seconds}s per target, $parallel at a time"
status=0
pids=()
for target in $(cargo +nightly fuzz list); do
  run "$target" &
  pids+=("$!")
  if [ "${#pids[@]}" -ge "$parallel" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid" || status=1
done
exit "$status"
