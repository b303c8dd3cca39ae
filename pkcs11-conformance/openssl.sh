#!/usr/bin/env bash
# OpenSSL 3 against softmhsm through the libp11 engine and through pkcs11-provider.
# Signatures and certificates are verified by plain OpenSSL (no PKCS#11).
source "$(dirname "$0")/common.sh"
need_pkgs opensc openssl libengine-pkcs11-openssl
if ! dpkg-query -W -f='${Status}' pkcs11-provider 2>/dev/null | grep -q 'install ok installed'; then
    # pkcs11-provider comes from bookworm-backports, on the mirror debian.sources already uses
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    src=/etc/apt/sources.list.d/softmhsm-conform-backports.sources
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "${uri:-http://deb.debian.org/debian}" > "$src"
    timeout 600 apt-get update >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -t bookworm-backports pkcs11-provider >/dev/null 2>&1
    rm -f "$src"
fi
build_lib
fresh_token
cd "$WORK"
SO=12345678; PIN=1234
P() { timeout 120 pkcs11-tool --module "$MODULE" "$@"; }
PL() { P --login --pin "$PIN" "$@"; }
# plain OpenSSL, whatever OPENSSL_CONF the caller has
O() { OPENSSL_CONF=/dev/null timeout 60 openssl "$@"; }

P --init-token --label osslconf --so-pin "$SO" >/dev/null 2>&1
P --init-pin --login --login-type so --so-pin "$SO" --pin "$PIN" >/dev/null 2>&1
ok=1
for k in "rsa2048 rsa:2048 01" "p256 EC:prime256v1 02" "p384 EC:secp384r1 03"; do
    read -r n kt id <<< "$k"
    PL --keypairgen --key-type "$kt" --label "$n" --id "$id" >/dev/null 2>&1 || ok=0
done
[ $ok = 1 ] && pass "setup: token and keys (pkcs11-tool)" || fail "setup: token and keys (pkcs11-tool)"
PL --list-objects > objects.txt 2>&1
# public keys: read-object for RSA/P-256, CKA_EC_POINT for P-384 (OpenSC 0.23 limitation)
P --read-object --type pubkey --id 01 -o rsa2048.der >/dev/null 2>&1 && O pkey -pubin -inform DER -in rsa2048.der -out rsa2048.pub.pem
P --read-object --type pubkey --id 02 -o p256.der >/dev/null 2>&1 && O pkey -pubin -inform DER -in p256.der -out p256.pub.pem
pt=$(awk '/^Public Key Object; EC/{p=1} p&&/EC_POINT:/{pt=$2} p&&/label:/{if($2=="p384"){print pt; exit} p=0}' objects.txt)
case "$pt" in 0481*) pt=${pt:6};; *) pt=${pt:4};; esac   # strip the DER OCTET STRING header
echo "3076301006072a8648ce3d020106052b81040022036200$pt" | xxd -r -p > p384.der
O pkey -pubin -inform DER -in p384.der -out p384.pub.pem 2>/dev/null
if [ -s rsa2048.pub.pem ] && [ -s p256.pub.pem ] && [ -s p384.pub.pem ]; then pass "setup: public keys exported"
else fail "setup: public keys exported"; fi

head -c 1000 /dev/urandom > msg
for h in 256 384; do O dgst -sha$h -binary msg > msg.sha$h; done

engine_cnf engine.cnf 0
cat > provider.cnf <<CNF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
module = /usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so
pkcs11-module-path = $MODULE
pkcs11-module-token-pin = $PIN
activate = 1
CNF

# run_suite NAME KEYARGS-FUNCTION
suite() {
    local via="$1"; shift
    local -a K=("$@")   # extra args to name a pkcs11 key (engine needs -engine/-keyform)
    export OPENSSL_CONF="$WORK/$via.cnf"
    local uri
    # RSA PKCS#1 v1.5 over a SHA-256 digest
    uri="pkcs11:token=osslconf;object=rsa2048;type=private"
    rm -f sig
    check "$via pkeyutl -sign RSA-2048 PKCS#1 SHA-256" timeout 60 openssl pkeyutl -sign "${K[@]}" -inkey "$uri" \
        -in msg.sha256 -out sig -pkeyopt digest:sha256
    check "$via RSA-2048 PKCS#1 signature verifies (plain openssl)" O dgst -sha256 -verify rsa2048.pub.pem -signature sig msg
    rm -f sig
    check "$via pkeyutl -sign RSA-2048 PSS SHA-256" timeout 60 openssl pkeyutl -sign "${K[@]}" -inkey "$uri" \
        -in msg.sha256 -out sig -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest
    check "$via RSA-2048 PSS signature verifies (plain openssl)" O pkeyutl -verify -pubin -inkey rsa2048.pub.pem \
        -in msg.sha256 -sigfile sig -pkeyopt digest:sha256 -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest
    rm -f sig
    check "$via dgst -sha256 -sign RSA-2048" timeout 60 openssl dgst -sha256 -sign "$uri" "${K[@]}" -out sig msg
    check "$via dgst RSA-2048 signature verifies (plain openssl)" O dgst -sha256 -verify rsa2048.pub.pem -signature sig msg
    local e h
    for e in p256:256 p384:384; do
        n=${e%%:*}; h=${e##*:}
        uri="pkcs11:token=osslconf;object=$n;type=private"
        rm -f sig
        check "$via pkeyutl -sign ECDSA $n" timeout 60 openssl pkeyutl -sign "${K[@]}" -inkey "$uri" -in msg.sha$h -out sig
        check "$via ECDSA $n signature verifies (plain openssl)" O pkeyutl -verify -pubin -inkey $n.pub.pem -in msg.sha$h -sigfile sig
    done
    # self-signed certificates
    # (the Managed HSM rule: an EC digest must match the curve, so P-384 signs SHA-384)
    for e in rsa2048:256 p256:256 p384:384; do
        h=${e##*:}; e=${e%%:*}
        uri="pkcs11:token=osslconf;object=$e;type=private"
        rm -f cert.pem
        check "$via req -x509 -new $e (SHA-$h)" timeout 60 openssl req -x509 -new "${K[@]}" -key "$uri" -subj "/CN=softmhsm-$e" -days 2 -sha$h -out cert.pem
        check "$via $e certificate self-signature verifies (plain openssl)" O verify -CAfile cert.pem cert.pem
        check "$via $e certificate carries the token's public key" eval \
            "[ -s cert.pem ] && [ -s $e.pub.pem ] && cmp -s <(O x509 -in cert.pem -noout -pubkey | O pkey -pubin -outform DER) <(O pkey -pubin -in $e.pub.pem -outform DER)"
    done
    unset OPENSSL_CONF
}

suite engine -engine pkcs11 -keyform engine
suite provider
finish
