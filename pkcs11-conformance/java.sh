#!/usr/bin/env bash
# Java 17 SunPKCS11 against softmhsm: keytool lists the token as a PKCS11 KeyStore,
# java/SoftmhsmCheck.java signs, decrypts and runs AES-GCM on the token and checks
# every result with the JDK's software providers. Keys are made by pkcs11-tool,
# certificates by OpenSSL through the libp11 engine (signed on the token).
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl libengine-pkcs11-openssl
for t in java javac keytool; do
    command -v $t >/dev/null || need_pkgs openjdk-17-jdk-headless
done
build_lib
fresh_token
cd "$WORK"
SO=12345678; PIN=1234
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }
PL() { P --login --pin "$PIN" "$@"; }
O() { OPENSSL_CONF=/dev/null timeout 60 openssl "$@"; }

P --init-token --label javaconf --so-pin "$SO" >/dev/null 2>&1
P --init-pin --login --login-type so --so-pin "$SO" --pin "$PIN" >/dev/null 2>&1
ok=1
PL --keypairgen --key-type rsa:2048 --label rsa --id 01 >/dev/null 2>&1 || ok=0
PL --keypairgen --key-type EC:prime256v1 --label p256 --id 02 >/dev/null 2>&1 || ok=0
PL --keypairgen --key-type EC:secp384r1 --label p384 --id 03 >/dev/null 2>&1 || ok=0
PL --keygen --key-type AES:32 --label aes --id 04 >/dev/null 2>&1 || ok=0
[ $ok = 1 ] && pass "setup: RSA-2048, P-256, P-384, AES-256 keys (pkcs11-tool)" || fail "setup: RSA-2048, P-256, P-384, AES-256 keys (pkcs11-tool)"

# self-signed certificates, signed on the token (P-384 with SHA-384: the curve's digest)
engine_cnf engine.cnf 0
ok=1
for e in rsa:01:256 p256:02:256 p384:03:384; do
    IFS=: read -r n id h <<< "$e"
    OPENSSL_CONF="$WORK/engine.cnf" timeout 60 openssl req -x509 -new -engine pkcs11 -keyform engine \
        -key "pkcs11:object=$n;type=private" -subj "/CN=softmhsm-java-$n" -days 2 -sha$h -out "$n.pem" >/dev/null 2>&1 || ok=0
    O verify -CAfile "$n.pem" "$n.pem" >/dev/null 2>&1 || ok=0
    O x509 -in "$n.pem" -outform DER -out "$n.cert.der" 2>/dev/null || ok=0
    PL --write-object "$n.cert.der" --type cert --id "$id" --label "$n" >/dev/null 2>&1 || ok=0
done
[ $ok = 1 ] && pass "setup: certificates signed on the token, stored as CKO_CERTIFICATE with the key's CKA_ID" \
    || fail "setup: certificates signed on the token, stored as CKO_CERTIFICATE with the key's CKA_ID"

printf 'name = softmhsm\nlibrary = %s\nslot = 0\n' "$MODULE" > pkcs11.cfg

KT=(timeout 120 keytool -list -storetype PKCS11 -providerclass sun.security.pkcs11.SunPKCS11 -providerarg "$WORK/pkcs11.cfg" -storepass "$PIN")
"${KT[@]}" > keytool.txt 2>&1; rc=$?
for n in rsa p256 p384; do
    # keytool prints "<alias>, PrivateKeyEntry," then "Certificate fingerprint (SHA-256): …"
    fp=$(O x509 -in "$n.pem" -noout -fingerprint -sha256 2>/dev/null | sed 's/.*=//')
    if [ $rc = 0 ] && grep -A1 -E "^$n, PrivateKeyEntry" keytool.txt | grep -qi "$fp"; then
        pass "keytool -list: $n is a PrivateKeyEntry paired with its certificate"
    else fail "keytool -list: $n is a PrivateKeyEntry paired with its certificate"; tail -n 8 keytool.txt | sed 's/^/    | /' >&2; fi
done
if [ $rc = 0 ] && grep -qE "^aes, SecretKeyEntry" keytool.txt; then pass "keytool -list: aes is a SecretKeyEntry"
else fail "keytool -list: aes is a SecretKeyEntry"; tail -n 8 keytool.txt | sed 's/^/    | /' >&2; fi

mkdir -p classes
if timeout 300 javac -d classes "$CONF_DIR/java/SoftmhsmCheck.java" 2> javac.err; then
    timeout 300 java -cp classes SoftmhsmCheck "$WORK/pkcs11.cfg" "$PIN" > java.out 2> java.err
    rc=$?
    cat java.out
    grep -v '^\s*$' java.err >&2
    while read -r verdict _; do
        case "$verdict" in PASS) PASSED=$((PASSED + 1));; FAIL) FAILED=$((FAILED + 1));; esac
    done < java.out
    if [ $rc -ne 0 ] && ! grep -q '^FAIL' java.out; then fail "java SoftmhsmCheck exited $rc"; fi
else
    fail "javac SoftmhsmCheck.java"; tail -n 5 javac.err | sed 's/^/    | /' >&2
fi
finish
