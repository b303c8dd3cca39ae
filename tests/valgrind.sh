#!/usr/bin/env bash
# Memory safety under the C ABI: integration tests run under valgrind memcheck,
# children included (each test runs in its own child process). Fails on any
# memcheck error (invalid read/write, uninitialised use) and on any block
# "definitely lost". Usage: bash tests/valgrind.sh [test-target ...]
# (default: the C-ABI suites that need no key generation-heavy work).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(token objects bad_input bad_input_matrix sign)
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)"; exit 1; }
args=()
for t in "${targets[@]}"; do args+=(--test "$t"); done
# The test binaries, as cargo builds them for `cargo test`.
mapfile -t bins < <(cargo test "${args[@]}" --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["executable"])')
[ ${#bins[@]} -eq "${#targets[@]}" ] || { echo "expected ${#targets[@]} test binaries, got ${#bins[@]}"; exit 1; }
failed=0
for b in "${bins[@]}"; do
  name=$(basename "$b")
  log=$(mktemp)
  start=$SECONDS
  # --error-exitcode makes a child with a memcheck error exit 99, which fails its test.
  if valgrind -q --trace-children=yes --leak-check=full --errors-for-leak-kinds=definite \
       --show-leak-kinds=definite --error-exitcode=99 "$b" --test-threads=2 >"$log" 2>&1 \
     && ! grep -q '==[0-9]*== ' "$log"; then
    echo "PASS valgrind ${name%-*}: $(grep -o 'test result: ok. [0-9]* passed' "$log" | tail -1) ($((SECONDS - start)) s)"
  else
    echo "FAIL valgrind ${name%-*} ($((SECONDS - start)) s)"
    grep -E '==[0-9]+==|panicked|FAILED' "$log" | head -n 60 | sed 's/^/    | /'
    failed=1
  fi
  rm -f "$log"
done
exit $failed
