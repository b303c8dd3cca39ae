#!/usr/bin/env bash
# A C program through the raw function list (c/lifecycle.c): dlopen the module,
# C_GetFunctionList, initialise a fresh token, then the operation lifecycle
# (an error ends digest/encrypt/decrypt/sign/verify), a session RSA public key
# from modulus and exponent verifying a token signature, and
# CKA_ALLOWED_MECHANISMS of a P-256 key. Compiled with `cc` against p11-kit's
# PKCS#11 header (libp11-kit-dev).
source "$(dirname "$0")/common.sh"
need_pkgs gcc libc6-dev libp11-kit-dev
build_lib
fresh_token
cc -std=c99 -Wall -Wextra -Werror -O1 $(pkg-config --cflags p11-kit-1 2>/dev/null || echo -I/usr/include/p11-kit-1) \
    -o "$WORK/lifecycle" "$CONF_DIR/c/lifecycle.c" -ldl \
    && pass "c/lifecycle.c compiles (cc, p11-kit/pkcs11.h)" \
    || { fail "c/lifecycle.c compiles (cc, p11-kit/pkcs11.h)"; finish; exit 1; }
out=$(timeout 120 "$WORK/lifecycle" "$MODULE" 2>&1); rc=$?
printf '%s\n' "$out" | grep -E '^(PASS|FAIL) '
printf '%s\n' "$out" | grep -vE '^(PASS|FAIL) ' | sed 's/^/    | /' >&2
PASSED=$((PASSED + $(printf '%s\n' "$out" | grep -c '^PASS ')))
FAILED=$((FAILED + $(printf '%s\n' "$out" | grep -c '^FAIL ')))
# A crash or a refused setup call ends the program early: count it.
if [ $rc -ne 0 ] && ! printf '%s\n' "$out" | grep -q '^FAIL '; then
    fail "c/lifecycle ran to the end (exit $rc)"
fi
finish
