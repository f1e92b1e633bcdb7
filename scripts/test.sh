#!/usr/bin/env bash
# The whole test suite: Rust unit, stack and integration tests, then the interop suite with
# real Python peers (OpenTelemetry SDK clients, grpcio OTLP receiver) against the real binary.
# Creates interop/.venv from the pinned interop/requirements.txt when it is missing or stale.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=interop/.venv
stamp="$venv/.requirements-installed"
if [ ! -x "$venv/bin/python" ] || ! cmp -s interop/requirements.txt "$stamp"; then
  echo "== creating $venv from interop/requirements.txt"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r interop/requirements.txt
  cp interop/requirements.txt "$stamp"
fi

echo "== cargo build"
cargo build --bins --quiet

status=0
echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast || status=1
else
  cargo test --no-fail-fast || status=1
fi

echo "== interop (real peers)"
TRACEBRIDGE_BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/tracebridge" "$venv/bin/python" -m pytest interop -q -p no:cacheprovider || status=1

exit "$status"
