#!/usr/bin/env bash
# The README's admin-CLI transcript, run for real and checked: init, create,
# rotate, list-versions, tag, rotation policy, delete, recover, backup, purge,
# restore, attest (BYOK import has its own script, examples/byok.sh). Each
# step prints PASS or FAIL; the script ends with "N passed, M failed" and
# exits non-zero on any failure. A signature made through PKCS#11 before the
# backup is verified by plain OpenSSL under the restored key.
#
# Run after `cargo build --release` from the repository root:
#   bash examples/cli-transcript.sh
# $SOFTMHSM_BIN / $SOFTMHSM_MODULE pick the build; a scratch token is made in a
# temporary directory and removed at the end. Needs openssl and pkcs11-tool.
set -uo pipefail

BIN=$(realpath "${SOFTMHSM_BIN:-target/release/softmhsm}")
MODULE=$(realpath "${SOFTMHSM_MODULE:-target/release/libsoftmhsm.so}")
[ -x "$BIN" ] && [ -f "$MODULE" ] || { echo "cli-transcript.sh: cargo build --release first" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export SOFTMHSM_DIR="$WORK/store" SOFTMHSM_KDF_ITERATIONS=1000
unset SOFTMHSM_CONF SOFTMHSM_PIN

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
# run NAME CMD...: the command succeeds; its stdout is kept in $out.
run() {
    local name=$1; shift
    if out=$("$@" 2>err.txt); then pass "$name"; else fail "$name"; sed 's/^/    | /' err.txt >&2; fi
}
# refused NAME CODE TEXT CMD...: exits CODE with one line on stderr containing TEXT.
refused() {
    local name=$1 code=$2 text=$3; shift 3
    "$@" >/dev/null 2>err.txt; local rc=$?
    if [ "$rc" -eq "$code" ] && [ "$(wc -l < err.txt)" -eq 1 ] && grep -q -- "$text" err.txt; then pass "$name"
    else fail "$name"; echo "    | exit $rc: $(cat err.txt)" >&2; fi
}
# field JSON PATH: one value of a JSON document (python3, from the standard library).
field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v=v[int(k)] if k.isdigit() else v[k]
print(v if not isinstance(v,(dict,list)) else json.dumps(v))' "$1" "$2"; }
p11() { pkcs11-tool --module "$MODULE" --login --pin 1234 "$@" 2>/dev/null; }

run "init --label demo --retention-days 7" "$BIN" init --label demo --so-pin 12345678 --pin 1234 --retention-days 7
export SOFTMHSM_PIN=1234
run "key create web (RSA-HSM 3072, sign verify, env=prod)" "$BIN" key create --name web --kty RSA-HSM --size 3072 --ops sign verify --tags env=prod
first_kid=$(field "$out" key.kid)
run "key create chain (EC P-256K)" "$BIN" key create --name chain --kty EC --curve P-256K
run "key create tls (EC P-256)" "$BIN" key create --name tls --kty EC --curve P-256
run "key rotate web" "$BIN" key rotate --name web
second_kid=$(field "$out" key.kid)
[ "$first_kid" != "$second_kid" ] && [ "$(field "$out" tags.env)" = prod ] \
    && pass "rotation: a new kid, tags carried over" || fail "rotation: a new kid, tags carried over"
run "key list-versions web" "$BIN" key list-versions --name web
[ "$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])))' "$out")" = 2 ] \
    && pass "web has 2 versions" || fail "web has 2 versions"
run "key update web --tags (tag)" "$BIN" key update --name web --tags env=prod owner=ci
[ "$(field "$out" tags.owner)" = ci ] && pass "tags replaced" || fail "tags replaced"
refused "16 tags are refused" 1 "too many tags" "$BIN" key update --name web --tags $(seq -f 't%g=v' 1 16)
run "key rotation-policy update web" "$BIN" key rotation-policy update --name web \
    --value '{"lifetimeActions":[{"trigger":{"timeAfterCreate":"P90D"},"action":{"type":"Rotate"}}],"attributes":{"expiryTime":"P1Y"}}'
run "key rotate-due (nothing due)" "$BIN" key rotate-due
[ "$out" = "[]" ] && pass "nothing due yet" || fail "nothing due yet"
run "key show chain (public JWK)" "$BIN" key show --name chain
[ "$(field "$out" key.crv)" = P-256K ] && [ -n "$(field "$out" key.x)" ] \
    && pass "JWK has crv, x" || fail "JWK has crv, x"

run "key delete chain" "$BIN" key delete --name chain
refused "a deleted name cannot be reused" 1 "belongs to a deleted key" "$BIN" key create --name chain --kty EC
run "key list-deleted" "$BIN" key list-deleted
grep -q chain <<< "$out" && pass "chain is listed as deleted" || fail "chain is listed as deleted"
run "key recover chain" "$BIN" key recover --name chain

# A signature made through PKCS#11 before the backup.
echo "transcript" > msg.txt
openssl dgst -sha256 -binary msg.txt > msg.sha256
tls_id=$(field "$("$BIN" key show --name tls)" key.kid | sed 's|.*/||')
if p11 --sign -m ECDSA --id "$tls_id" -i msg.sha256 -o before.sig --signature-format openssl \
   && "$BIN" key download --name tls --file tls.pem >/dev/null; then pass "signed with tls before the backup"
else fail "signed with tls before the backup"; fi
run "key backup tls" "$BIN" key backup --name tls --file tls.backup
run "key delete tls" "$BIN" key delete --name tls
run "key purge tls" "$BIN" key purge --name tls
run "key restore tls" "$BIN" key restore --file tls.backup
"$BIN" key download --name tls --file tls-restored.pem >/dev/null 2>&1
if cmp -s tls.pem tls-restored.pem && openssl dgst -sha256 -verify tls-restored.pem -signature before.sig msg.txt >/dev/null; then
    pass "the restored key verifies the pre-backup signature (openssl)"
else fail "the restored key verifies the pre-backup signature (openssl)"; fi
# flip one bit of byte 100 (writing a fixed byte would leave it unchanged one time in 256)
b=$(od -An -tu1 -j100 -N1 tls.backup | tr -d ' ')
printf "\\$(printf '%03o' $((b ^ 1)))" | dd of=tls.backup bs=1 seek=100 conv=notrunc 2>/dev/null
"$BIN" key delete --name tls >/dev/null && "$BIN" key purge --name tls >/dev/null
refused "a tampered backup is refused" 1 "damaged" "$BIN" key restore --file tls.backup

run "key attest chain" "$BIN" key attest --name chain --file chain.att.json
run "attest verify" "$BIN" attest verify --file chain.att.json
sed 's/"local": true/"local": false/' chain.att.json > forged.json
refused "a forged statement is refused" 1 "bad signature" "$BIN" attest verify --file forged.json
refused "a wrong PIN is named" 1 "wrong PIN" "$BIN" key list --pin 0000
refused "a typo is bad usage" 2 "unknown command" "$BIN" key lsit
run "audit --since 1h" "$BIN" audit --since 1h
for op in TokenInit KeyCreate KeyRotate KeyUpdate KeyDelete KeyRecover KeyBackup KeyPurge KeyRestore KeyAttest; do
    grep -q "\"operationName\":\"$op\"" <<< "$out" && pass "audit has $op" || fail "audit has $op"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
