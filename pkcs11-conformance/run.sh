#!/usr/bin/env bash
# Run every conformance script; sum their "N passed, M failed" lines.
set -u
DIR="$(cd "$(dirname "$0")" && pwd)"
(cd "$DIR/.." && timeout 1800 cargo build --release --quiet) || { echo "cargo build failed"; echo "0 passed, 1 failed"; exit 1; }
export SOFTMHSM_SKIP_BUILD=1   # built once above
total_p=0; total_f=0; bad=0
for s in pkcs11-tool openssl p11-kit python nginx nginx-service nginx-fleet java c; do
    echo "== $s.sh"
    out=$(timeout 1800 bash "$DIR/$s.sh" 2>&1); rc=$?
    printf '%s\n' "$out"
    last=$(printf '%s\n' "$out" | tail -n 1)
    if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        total_p=$((total_p + BASH_REMATCH[1])); total_f=$((total_f + BASH_REMATCH[2]))
        [ $rc -ne 0 ] && [ "${BASH_REMATCH[2]}" = 0 ] && { echo "FAIL $s.sh exited $rc"; total_f=$((total_f + 1)); }
    else
        echo "FAIL $s.sh did not finish (rc=$rc)"; total_f=$((total_f + 1))
    fi
    echo "== $s.sh: $last"
done
echo "$total_p passed, $total_f failed"
[ "$total_f" -eq 0 ]
