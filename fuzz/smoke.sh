#!/usr/bin/env bash
# Smoke-run every fuzz target for N seconds each (default 30), one after the
# other, failing on the first crash, panic, leak, timeout or out-of-memory.
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's nightly
# flags (-Zsanitizer=address, sanitizer coverage), and the AddressSanitizer
# runtime ships with the stable rust-std. Installs cargo-fuzz if it is missing.
#
#   bash fuzz/smoke.sh          # 30 s per target
#   bash fuzz/smoke.sh 600      # the 10-minute run of fuzz/README.md
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
export RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never

# A debug build of the wrapper: it only runs cargo and the targets.
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked --debug cargo-fuzz
cargo fuzz build

for t in $(cargo fuzz list); do
  # Sequences need room for dozens of calls from the first run on.
  extra=()
  [ "$t" = sequence ] && extra=(-max_len=1024 -len_control=0)
  echo "== fuzz: $t for ${secs}s"
  log=$(mktemp)
  if ! cargo fuzz run "$t" -- -max_total_time="$secs" -timeout=30 -print_final_stats=1 \
      "${extra[@]}" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t failed; the input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^#[0-9]+[[:space:]]+DONE|^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" || true
  rm -f "$log"
done
