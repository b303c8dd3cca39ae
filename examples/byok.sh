#!/usr/bin/env bash
# BYOK (bring your own key) into softmhsm with nothing but the openssl command
# line: make a key-exchange key (KEK) in the token, download its public key,
# build a Managed HSM transfer blob for an RSA-2048, a P-256 and an AES-256 key,
# import each with `softmhsm key import --byok-file`, and prove the imported keys
# are the originals: RSA and EC sign through PKCS#11 (pkcs11-tool) and OpenSSL
# verifies with the original public key; AES encrypts through PKCS#11 and
# OpenSSL decrypts with the original key bytes.
#
# Run after `cargo build --release` from the repository root:
#   bash examples/byok.sh
# $SOFTMHSM_BIN (default target/release/softmhsm) and $SOFTMHSM_MODULE (default
# target/release/libsoftmhsm.so) pick the build; a scratch token is made in a
# temporary directory and removed at the end. Needs openssl (3.x) and
# pkcs11-tool (Debian: apt-get install opensc).
set -euo pipefail

BIN=${SOFTMHSM_BIN:-target/release/softmhsm}
MODULE=${SOFTMHSM_MODULE:-target/release/libsoftmhsm.so}
for tool in openssl pkcs11-tool xxd base64; do
    command -v "$tool" >/dev/null || { echo "byok.sh: needs $tool" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "byok.sh: no $BIN (cargo build --release first)" >&2; exit 1; }
[ -f "$MODULE" ] || { echo "byok.sh: no $MODULE (cargo build --release first)" >&2; exit 1; }
BIN=$(realpath "$BIN")
MODULE=$(realpath "$MODULE")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
export SOFTMHSM_DIR="$WORK/store" SOFTMHSM_KDF_ITERATIONS=1000 SOFTMHSM_PIN=1234
unset SOFTMHSM_CONF
p11() { pkcs11-tool --module "$MODULE" --login --pin "$SOFTMHSM_PIN" "$@" 2>/dev/null; }
step() { printf '\n== %s\n' "$*"; }

step "a scratch token and a key-exchange key (RSA-3072, key_ops = import)"
"$BIN" init --label byok-demo --so-pin 12345678 --output table
"$BIN" key create --name KEK --kty RSA-HSM --size 3072 --ops import --output table
KID=$("$BIN" key show --name KEK | sed -n 's/.*"kid": "\(.*\)".*/\1/p')
"$BIN" key download --name KEK --file kek.pem --output table
echo "KEK kid: $KID"

# blob FILE-WITH-KEY-MATERIAL OUT.json: the Managed HSM BYOK transfer blob.
blob() {
    local material=$1 out=$2
    # 1. an ephemeral AES-256 key
    openssl rand 32 > aes.key
    # 2. RFC 5649 (AES-KWP) wrap of the key material under it
    openssl enc -id-aes256-wrap-pad -K "$(xxd -p -c 64 aes.key)" -iv A65959A6 \
        -in "$material" -out wrapped.bin
    # 3. RSA-OAEP (SHA-1, MGF1-SHA-1) of the AES key under the KEK's public key
    openssl pkeyutl -encrypt -pubin -inkey kek.pem -in aes.key -out aes.enc \
        -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1 -pkeyopt rsa_mgf1_md:sha1
    # 4. CKM_RSA_AES_KEY_WRAP = RSA-OAEP(AES key) || KWP(target), base64url
    local ct
    ct=$(cat aes.enc wrapped.bin | base64 -w0 | tr '+/' '-_' | tr -d '=')
    printf '{"schema_version":"1.0.0","header":{"kid":"%s","alg":"dir","enc":"CKM_RSA_AES_KEY_WRAP"},"ciphertext":"%s","generator":"softmhsm examples/byok.sh (openssl)"}\n' \
        "$KID" "$ct" > "$out"
    rm -f aes.key aes.enc wrapped.bin
}

echo "signed by a key that came in a BYOK blob" > msg

step "RSA-2048: blob, import, sign through PKCS#11, verify with OpenSSL"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in rsa.pem -outform DER -out rsa.der   # PKCS#8
blob rsa.der rsa.byok.json
"$BIN" key import --name byok-rsa --byok-file rsa.byok.json --kty RSA-HSM --output table
ID=$("$BIN" key show --name byok-rsa | sed -n 's/.*"kid": ".*\/\([0-9a-f]\{32\}\)".*/\1/p')
p11 --sign -m SHA256-RSA-PKCS --id "$ID" -i msg -o rsa.sig
openssl dgst -sha256 -verify <(openssl pkey -in rsa.pem -pubout) -signature rsa.sig msg

step "P-256: blob, import, sign through PKCS#11, verify with OpenSSL"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem
openssl pkcs8 -topk8 -nocrypt -in ec.pem -outform DER -out ec.der
blob ec.der ec.byok.json
"$BIN" key import --name byok-ec --byok-file ec.byok.json --kty EC-HSM --output table
ID=$("$BIN" key show --name byok-ec | sed -n 's/.*"kid": ".*\/\([0-9a-f]\{32\}\)".*/\1/p')
p11 --sign -m ECDSA-SHA256 --signature-format openssl --id "$ID" -i msg -o ec.sig
openssl dgst -sha256 -verify <(openssl pkey -in ec.pem -pubout) -signature ec.sig msg

step "AES-256: blob, import, encrypt through PKCS#11, decrypt with OpenSSL"
openssl rand 32 > target.aes
blob target.aes aes.byok.json
"$BIN" key import --name byok-aes --byok-file aes.byok.json --kty oct-HSM --output table
ID=$("$BIN" key show --name byok-aes | sed -n 's/.*"kid": ".*\/\([0-9a-f]\{32\}\)".*/\1/p')
IV=000102030405060708090a0b0c0d0e0f
head -c 64 /dev/zero | tr '\0' 'x' > plain.bin
p11 --encrypt -m AES-CBC --iv "$IV" --id "$ID" -i plain.bin -o cipher.bin
openssl enc -d -aes-256-cbc -nopad -K "$(xxd -p -c 64 target.aes)" -iv "$IV" \
    -in cipher.bin -out back.bin
cmp plain.bin back.bin && echo "AES: OpenSSL decrypts with the original key bytes"

step "the KEK only imports: it does not sign"
KEK_ID=${KID##*/}
if out=$(pkcs11-tool --module "$MODULE" --login --pin "$SOFTMHSM_PIN" \
        --sign -m SHA256-RSA-PKCS --id "$KEK_ID" -i msg -o kek.sig 2>&1); then
    echo "byok.sh: the KEK signed" >&2; exit 1
fi
grep -o CKR_KEY_FUNCTION_NOT_PERMITTED <<<"$out" || { echo "$out" >&2; exit 1; }

step "done: three keys brought in under one KEK"
"$BIN" key list --output table
